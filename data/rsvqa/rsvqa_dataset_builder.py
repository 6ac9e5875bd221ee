"""RSVQA-LR and RSVQA-HR: one example per image, holding all of its active questions and answers.

Each split ships three JSON files, `<prefix>_<split>_{images,questions,answers}.json`, each a top-level
list (`images`, `questions`, `answers`) of entries with an `id`. An image lists its `questions_ids`, a
question its `answers_ids` (the first is the answer) and its `type`; entries with `active: false` are
dropped, as the official loader does. Images are `<image_dir>/<id>.tif`, re-encoded as PNG.
Why one example per image: RSVQA-HR has ~100 questions per image (1M on 10,659), so an example per
question would store every image about a hundred times; adapters flatten `qa` into single questions.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.errors import RecordError


@dataclasses.dataclass
class RsvqaConfig(tfds.core.BuilderConfig):
    """prefix: JSON name prefix; image_dir: the image archive's folder; splits: {file split: TFDS split}."""

    prefix: str = ""
    image_dir: str = ""
    splits: tuple[tuple[str, str], ...] = ()


class Builder(tfds_common.ManualBuilder):
    """RSVQA-LR (Sentinel-2, 772 images) and RSVQA-HR (USGS 15 cm, 10,659 images)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        RsvqaConfig(name="lr", description="RSVQA-LR: 256x256 Sentinel-2 RGB, Netherlands.",
                    prefix="LR_split", image_dir="Images_LR",
                    splits=(("train", "train"), ("val", "validation"), ("test", "test"))),
        RsvqaConfig(name="hr", description="RSVQA-HR: 512x512 USGS orthophotos; test_phili = Philadelphia.",
                    prefix="USGS_split", image_dir="Data",
                    splits=(("train", "train"), ("val", "validation"), ("test", "test"),
                            ("test_phili", "test_phili"))),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Unzip the Zenodo archive (LR: record 6344334, HR: 6344367) so the manual dir holds the "
        "<prefix>_<split>_{images,questions,answers}.json files and Images_LR/ (LR) or Data/ (HR).")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "image_id": tfds.features.Text(),
            "image_size": tfds_common.SIZE_FEATURE,
            "qa": tfds.features.Sequence({
                "question_id": np.int64,
                "question": tfds.features.Text(),
                "answer": tfds.features.Text(),
                "question_type": tfds.features.Text(),
            }),
        }))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg = self.builder_config
        first = f"{cfg.prefix}_{cfg.splits[0][0]}_images.json"
        manual_dir = Path(dl_manager.manual_dir)
        root = tfds_common.find_root(manual_dir, first)
        images = root / cfg.image_dir
        images = images if images.is_dir() else tfds_common.find_dir(manual_dir, (cfg.image_dir,))
        return {tfds_split: self._generate_examples(root, images, split) for split, tfds_split in cfg.splits}

    def _load(self, root: Path, split: str, kind: str) -> tuple[Path, dict[int, dict]]:
        path = root / f"{self.builder_config.prefix}_{split}_{kind}.json"
        entries = tfds_common.require_key(tfds_common.read_json(path), kind, file=str(path), record="top level")
        by_id = {}
        for i, entry in enumerate(entries):
            by_id[int(tfds_common.require_key(entry, "id", file=str(path), record=i))] = entry
        return path, by_id

    def _generate_examples(self, root: Path, image_dir: Path, split: str):
        images_path, images = self._load(root, split, "images")
        questions_path, questions = self._load(root, split, "questions")
        answers_path, answers = self._load(root, split, "answers")
        for image_id, image in sorted(images.items()):
            if not image.get("active", True):
                continue
            qa = []
            for qid in tfds_common.require_key(image, "questions_ids", file=str(images_path), record=image_id):
                q = _lookup(questions, qid, questions_path, file=images_path, record=image_id,
                            field="questions_ids")
                if not q.get("active", True):
                    continue
                aids = tfds_common.require_key(q, "answers_ids", file=str(questions_path), record=qid)
                if not aids:
                    raise RecordError("no answer", file=str(questions_path), record=qid, field="answers_ids")
                a = _lookup(answers, aids[0], answers_path, file=questions_path, record=qid, field="answers_ids")
                qa.append({"question_id": int(qid),
                           "question": tfds_common.require_key(q, "question", file=str(questions_path), record=qid),
                           "answer": str(tfds_common.require_key(a, "answer", file=str(answers_path), record=aids[0])),
                           "question_type": str(q.get("type", ""))})
            if not qa:
                continue
            img = tfds_common.encode_image(image_dir / f"{image_id}.tif", record=image_id)
            yield image_id, {"image": img.data, "image_id": str(image_id), "image_size": img.size, "qa": qa}


def _lookup(table: dict[int, dict], key, target: Path, *, file: Path, record, field: str) -> dict:
    """table[key]; a dangling id is reported at the entry that refers to it."""
    try:
        return table[int(key)]
    except (KeyError, ValueError, TypeError) as e:
        raise RecordError(f"id {key} not found in {target.name}", file=str(file), record=record,
                          field=field) from e
