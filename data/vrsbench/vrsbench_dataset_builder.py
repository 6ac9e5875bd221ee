"""VRSBench: one example per image with its caption, objects (box, class, referring sentence) and QA pairs.

The release has `Images_{train,val}/<image>.png` and `Annotations_{train,val}/<image>.json`, where each
annotation JSON holds `image`, `caption`, `objects` (`obj_id`, `obj_cls`, `obj_corner` = 8 numbers, the
4 corners normalised to [0, 1], `referring_sentence`, `is_unique`, ...) and `qa_pairs` (`question`,
`answer`, `type`). Corners become pixels (x * W, y * H) in `polygons`; `boxes` is their min/max.
The evaluation files (VRSBench_EVAL_*.json) are not read: they re-package the same val annotations.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.errors import RecordError

SPLITS = {"train": "train", "validation": "val"}


def corners_to_pixels(corner, width: int, height: int) -> np.ndarray:
    """[4, 2] pixel corners from 8 numbers normalised to [0, 1]; ValueError if not 8 numbers in [0, 1]."""
    arr = np.asarray(corner, np.float64).reshape(-1)
    if arr.shape != (8,):
        raise ValueError(f"expected 8 numbers (4 normalised corners), got {arr.size}")
    if arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"corner values {arr.tolist()} must be normalised to [0, 1]")
    return arr.reshape(4, 2) * np.array([width, height], np.float64)


class Builder(tfds_common.ManualBuilder):
    """VRSBench (29,614 images; 52,472 referring expressions; ~123k QA pairs)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Unzip Images_{train,val}.zip and Annotations_{train,val}.zip from HF xiang709/VRSBench into the "
        "manual dir (Images_train/, Annotations_train/, ...). See data/README.md.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "image_id": tfds.features.Text(),
            "image_size": tfds_common.SIZE_FEATURE,
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "boxes": tfds_common.BOX_FEATURE,
            "polygons": tfds.features.Tensor(shape=(None, 4, 2), dtype=np.float32),
            "box_labels": tfds.features.Sequence(tfds.features.Text()),
            "expressions": tfds.features.Sequence(tfds.features.Text()),
            "object_ids": tfds.features.Sequence(tfds.features.Text()),
            "is_unique": tfds.features.Sequence(np.bool_),
            "qa": tfds.features.Sequence({
                "question": tfds.features.Text(),
                "answer": tfds.features.Text(),
                "question_type": tfds.features.Text(),
            }),
        }))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = Path(dl_manager.manual_dir)
        tfds_common.find_dir(manual_dir, [f"Annotations_{name}" for name in SPLITS.values()])
        splits = {}
        for split, name in SPLITS.items():
            try:
                annotations = tfds_common.find_dir(manual_dir, (f"Annotations_{name}",))
            except RecordError:
                continue  # a split whose archive was not downloaded
            images = tfds_common.find_dir(manual_dir, (f"Images_{name}",))
            splits[split] = self._generate_examples(annotations, images)
        return splits

    def _generate_examples(self, annotations: Path, images: Path):
        for json_path in sorted(annotations.glob("*.json")):
            ann = tfds_common.read_json(json_path)
            image_name = str(ann.get("image", f"{json_path.stem}.png"))
            img = tfds_common.encode_image(images / image_name, record=image_name)
            yield image_name, self._example(ann, img, image_name, str(json_path))

    @staticmethod
    def _example(ann: dict, img: tfds_common.EncodedImage, image_name: str, file: str) -> dict:
        objects = ann.get("objects", [])
        polygons = []
        for j, obj in enumerate(objects):
            try:
                polygons.append(corners_to_pixels(tfds_common.require_key(obj, "obj_corner", file=file,
                                                                          record=image_name),
                                                  img.width, img.height))
            except (ValueError, TypeError) as e:
                raise RecordError(str(e), file=file, record=image_name, field=f"objects[{j}].obj_corner") from e
        polys = np.array(polygons, np.float64).reshape(-1, 4, 2)
        boxes = tfds_common.check_boxes(np.concatenate([polys.min(1), polys.max(1)], -1), img.width, img.height,
                                        file=file, record=image_name, field="objects.obj_corner")
        caption = str(ann.get("caption", "")).strip()
        return {
            "image": img.data, "image_id": image_name, "image_size": img.size,
            "captions": [caption] if caption else [],
            "boxes": boxes, "polygons": polys.astype(np.float32),
            "box_labels": [str(o.get("obj_cls", "")) for o in objects],
            "expressions": [str(o.get("referring_sentence", "")) for o in objects],
            "object_ids": [str(o.get("obj_id", j)) for j, o in enumerate(objects)],
            "is_unique": [bool(o.get("is_unique", False)) for o in objects],
            "qa": [{"question": str(q.get("question", "")), "answer": str(q.get("answer", "")),
                    "question_type": str(q.get("type", ""))} for q in ann.get("qa_pairs", [])],
        }
