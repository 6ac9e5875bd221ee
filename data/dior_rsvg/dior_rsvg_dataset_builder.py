"""DIOR-RSVG: one example per (image, referring expression, box) triplet.

The release is `Annotations/NNNNN.xml` (VOC-like; each `object` holds `name`, `pose`, `bndbox`,
`description` = the expression), `JPEGImages/NNNNN.jpg` and `train.txt` / `val.txt` / `test.txt`. A split
file lists one integer per line, and each is an index into the global sequence of objects counted over all
XML files; the reference loader walks the folder with os.walk, here the files are sorted by name, which is
the intended order. Boxes are VOC pixel xyxy in the original 800x800 image and are kept as they are.
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.errors import RecordError

SPLIT_FILES = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}
BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")


def parse_annotation(path: Path) -> tuple[str, tuple[int, int], list[dict]]:
    """(image file name, (w, h) from `size`, objects [{name, xyxy, description}]) of one VOC-style XML."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise RecordError(f"not valid XML ({e})", file=str(path)) from e
    filename = _text(root, "filename", path, "annotation")
    size = (_int(root, "size/width", path, "annotation"), _int(root, "size/height", path, "annotation"))
    objects = []
    for j, obj in enumerate(root.findall("object")):
        record = f"object[{j}]"
        xyxy = [_int(obj, f"bndbox/{t}", path, record) for t in BOX_TAGS]
        objects.append({"name": _text(obj, "name", path, record), "xyxy": xyxy,
                        "description": _text(obj, "description", path, record)})
    return filename, size, objects


def _text(node: ET.Element, tag: str, path: Path, record: str) -> str:
    text = node.findtext(tag)
    if text is None or not text.strip():
        raise RecordError("missing or empty element", file=str(path), record=record, field=tag)
    return text.strip()


def _int(node: ET.Element, tag: str, path: Path, record: str) -> int:
    text = _text(node, tag, path, record)
    try:
        return int(float(text))
    except ValueError as e:
        raise RecordError(f"expected an integer pixel value, got '{text}'", file=str(path), record=record,
                          field=tag) from e


def read_split(path: Path, num_objects: int) -> list[int]:
    """Global object indices of one split file, each checked against the number of objects."""
    if not path.exists():
        raise RecordError("split file not found", file=str(path))
    indices = []
    for line_no, line in enumerate(path.read_text().split("\n"), start=1):
        if not line.strip():
            continue
        if not line.strip().isdigit() or int(line) >= num_objects:
            raise RecordError(f"expected an object index in [0, {num_objects}), got '{line.strip()}'",
                              file=str(path), record=f"line {line_no}", field="index")
        indices.append(int(line))
    return indices


def check_partition(splits: dict[str, list[int]], num_objects: int, root: Path) -> None:
    """An object in two splits means the object order is not the release's; objects in none are logged."""
    seen: dict[int, str] = {}
    for split, indices in splits.items():
        for k in indices:
            if k in seen:
                raise RecordError(f"object {k} is in both {SPLIT_FILES[seen[k]]} and {SPLIT_FILES[split]}",
                                  file=str(root / SPLIT_FILES[split]), record=f"object {k}", field="index")
            seen[k] = split
    if len(seen) != num_objects:
        logging.warning("DIOR-RSVG: the split files cover %d of the %d objects in %s/Annotations "
                        "(the full release has 38,320 in both)", len(seen), num_objects, root)


class Builder(tfds_common.ManualBuilder):
    """DIOR-RSVG referring expressions (38,320 triplets on 17,402 images)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put DIOR_RSVG/ (Annotations/, JPEGImages/, train.txt, val.txt, test.txt) from the RSVG-pytorch "
        "release in the manual dir, as it unzips. See data/README.md.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "image_id": tfds.features.Text(),
            "object_id": np.int64,
            "image_size": tfds_common.SIZE_FEATURE,
            "boxes": tfds_common.BOX_FEATURE,
            "box_labels": tfds.features.Sequence(tfds.features.Text()),
            "expressions": tfds.features.Sequence(tfds.features.Text()),
        }))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = tfds_common.find_root(Path(dl_manager.manual_dir), "Annotations")
        objects = []
        for xml_path in sorted((root / "Annotations").glob("*.xml")):
            filename, size, objs = parse_annotation(xml_path)
            objects += [(xml_path, filename, size, j, o) for j, o in enumerate(objs)]
        splits = {split: read_split(root / name, len(objects)) for split, name in SPLIT_FILES.items()}
        check_partition(splits, len(objects), root)
        return {split: self._generate_examples(root, objects, indices) for split, indices in splits.items()}

    def _generate_examples(self, root: Path, objects: list, indices: list[int]):
        for k in indices:
            xml_path, filename, (w, h), j, obj = objects[k]
            img = tfds_common.encode_image(root / "JPEGImages" / filename, record=filename)
            if (img.width, img.height) != (w, h):
                raise RecordError(f"size {w}x{h} differs from the image's {img.width}x{img.height}",
                                  file=str(xml_path), record="annotation", field="size")
            boxes = tfds_common.check_boxes([obj["xyxy"]], w, h, file=str(xml_path), record=f"object[{j}]",
                                            field="bndbox")
            yield k, {"image": img.data, "image_id": filename, "object_id": k, "image_size": img.size,
                      "boxes": boxes, "box_labels": [obj["name"]], "expressions": [obj["description"]]}
