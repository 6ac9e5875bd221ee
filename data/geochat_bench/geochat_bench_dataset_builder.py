"""GeoChat-Bench `referring.jsonl` and `region_captioning.jsonl`: one example per line.

Lines carry `question_id`, `image_id` (the image is `<image_id>.png`), `question`, `ground_truth`, `type`,
`dataset`, `obj_ids`, `size_group`. Referring: `question` is the expression and `ground_truth` the target
box(es), either pixel polygons (4 corners) / pixel xyxy lists, or GeoChat box strings. Region captioning:
`question` holds the box string and `ground_truth` is the caption. A GeoChat box string is
`{<x1><y1><x2><y2>|<angle>}` (several may follow each other) with integers in percent of the image width and
height and the rotation in degrees. `boxes` is the pixel xyxy (for a box string: before rotation, with the
angle in `angles`); `polygons` are the 4 corners in pixels (a box string's corners turned by the angle about
the box centre, as GeoChat's evaluation does).
"""
from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.errors import RecordError

_BOX_STRING = re.compile(r"\{\s*<(-?\d+(?:\.\d+)?)>\s*<(-?\d+(?:\.\d+)?)>\s*<(-?\d+(?:\.\d+)?)>\s*"
                         r"<(-?\d+(?:\.\d+)?)>\s*(?:\|\s*<(-?\d+(?:\.\d+)?)>\s*)?\}")


def parse_box_string(text: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyxy [n,4], angles [n], polygons [n,4,2]) in pixels from GeoChat `{<x1><y1><x2><y2>|<a>}` strings.

    Raises ValueError for no box, a value outside [0, 100] or an angle outside [0, 360] (360 is stored as 0).
    """
    matches = _BOX_STRING.findall(text)
    if not matches:
        raise ValueError(f"expected GeoChat boxes '{{<x1><y1><x2><y2>|<angle>}}', got '{text[:80]}'")
    boxes, angles, polys = [], [], []
    for m in matches:
        vals = [float(v) for v in m[:4]]
        angle = float(m[4]) if m[4] else 0.0
        if any(not 0 <= v <= 100 for v in vals):
            raise ValueError(f"box values {vals} must be percentages in [0, 100]")
        if not 0 <= angle <= 360:
            raise ValueError(f"angle {angle:g} must be in [0, 360] degrees")
        angle = 0.0 if angle == 360 else angle  # records.Box keeps angles in [0, 360)
        x1, x2 = vals[0] * width / 100, vals[2] * width / 100
        y1, y2 = vals[1] * height / 100, vals[3] * height / 100
        boxes.append([x1, y1, x2, y2])
        angles.append(angle)
        polys.append(rotate_rectangle(x1, y1, x2, y2, angle))
    return np.array(boxes, np.float64), np.array(angles, np.float32), np.array(polys, np.float32)


def rotate_rectangle(x1: float, y1: float, x2: float, y2: float, angle_deg: float) -> list[list[float]]:
    """Corners (x1,y1), (x2,y1), (x2,y2), (x1,y2) turned by angle_deg about the centre (image axes, y down)."""
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return [[(x - cx) * c - (y - cy) * s + cx, (x - cx) * s + (y - cy) * c + cy]
            for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]


def parse_pixel_boxes(gt) -> np.ndarray:
    """Referring ground truth as pixel polygons [n, 4, 2]: accepts xyxy lists, 8 numbers or 4 (x, y) corners."""
    if isinstance(gt, str):
        try:
            gt = json.loads(gt)
        except json.JSONDecodeError:
            gt = ast.literal_eval(gt)
    arr = np.asarray(gt, np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim == 2 and arr.shape[-1] == 4:
        x1, y1, x2, y2 = arr.T
        return np.stack([np.stack([x1, y1], -1), np.stack([x2, y1], -1), np.stack([x2, y2], -1),
                         np.stack([x1, y2], -1)], 1)
    if arr.ndim == 2 and arr.shape[-1] == 8:
        return arr.reshape(-1, 4, 2)
    if arr.ndim == 2 and arr.shape == (4, 2):
        return arr[None]
    if arr.ndim == 3 and arr.shape[1:] == (4, 2):
        return arr
    raise ValueError(f"expected pixel boxes as [x1,y1,x2,y2], 8 numbers or 4 (x, y) corners, got shape {arr.shape}")


@dataclasses.dataclass
class GeoChatConfig(tfds.core.BuilderConfig):
    """jsonl: the benchmark file of this task."""

    jsonl: str = ""


class Builder(tfds_common.ManualBuilder):
    """GeoChat-Bench referring-expression and region-captioning test sets (single `test` split)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        GeoChatConfig(name="referring", description="Referring expressions with their target boxes.",
                      jsonl="referring.jsonl"),
        GeoChatConfig(name="region_captioning", description="Box-string regions with their captions.",
                      jsonl="region_captioning.jsonl"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put referring.jsonl / region_captioning.jsonl from HF MBZUAI/GeoChat-Bench in the manual dir and "
        "the images as images/<image_id>.png (or <image_id>.png next to the jsonl). See data/README.md.")

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "image_id": tfds.features.Text(),
            "question_id": tfds.features.Text(),
            "image_size": tfds_common.SIZE_FEATURE,
            "boxes": tfds_common.BOX_FEATURE,
            "polygons": tfds.features.Tensor(shape=(None, 4, 2), dtype=np.float32),
            "type": tfds.features.Text(),
            "source": tfds.features.Text(),
            "size_group": tfds.features.Text(),
            "obj_ids": tfds.features.Sequence(tfds.features.Text()),
        }
        if self.builder_config.name == "referring":
            features["expressions"] = tfds.features.Sequence(tfds.features.Text())
        else:
            features["captions"] = tfds.features.Sequence(tfds.features.Text())
            features["angles"] = tfds.features.Tensor(shape=(None,), dtype=np.float32)
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = tfds_common.find_root(Path(dl_manager.manual_dir), self.builder_config.jsonl, ("GeoChat-Bench",))
        return {"test": self._generate_examples(root, root / self.builder_config.jsonl)}

    def _generate_examples(self, root: Path, jsonl: Path):
        with open(jsonl, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if line.strip():
                    key, example = self._example(root, jsonl, line_no, line)
                    yield key, example

    def _example(self, root: Path, jsonl: Path, line_no: int, line: str) -> tuple[str, dict]:
        file, record = str(jsonl), f"line {line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordError(f"not valid JSON ({e})", file=file, record=record) from e
        image_id = str(tfds_common.require_key(row, "image_id", file=file, record=record))
        qid = str(row.get("question_id", line_no))
        record = f"line {line_no} (question_id {qid})"
        img_path = next((p for p in (root / "images" / f"{image_id}.png", root / f"{image_id}.png") if p.exists()),
                        root / "images" / f"{image_id}.png")
        img = tfds_common.encode_image(img_path, record=record)
        question = str(tfds_common.require_key(row, "question", file=file, record=record))
        truth = tfds_common.require_key(row, "ground_truth", file=file, record=record)
        example = {"image": img.data, "image_id": image_id, "question_id": qid, "image_size": img.size,
                   "type": str(row.get("type", "")), "source": str(row.get("dataset", "")),
                   "size_group": str(row.get("size_group", "")),
                   "obj_ids": [str(o) for o in np.atleast_1d(row.get("obj_ids", []))]}
        if self.builder_config.name == "referring":
            polygons, boxes = self._referring_boxes(truth, img, file, record)
            example.update(expressions=[question], polygons=polygons, boxes=boxes)
        else:
            try:
                boxes, angles, polygons = parse_box_string(question, img.width, img.height)
            except ValueError as e:
                raise RecordError(str(e), file=file, record=record, field="question") from e
            example.update(captions=[str(truth)], angles=angles, polygons=polygons,
                           boxes=tfds_common.check_boxes(boxes, img.width, img.height, file=file, record=record,
                                                         field="question"))
        return f"{line_no}", example

    @staticmethod
    def _referring_boxes(truth, img, file: str, record: str) -> tuple[np.ndarray, np.ndarray]:
        try:
            if isinstance(truth, str) and "{" in truth and "<" in truth:
                xyxy, _, polygons = parse_box_string(truth, img.width, img.height)
            else:
                polygons = parse_pixel_boxes(truth)
                xyxy = np.concatenate([polygons.min(1), polygons.max(1)], -1)
        except (ValueError, SyntaxError, TypeError) as e:
            raise RecordError(str(e), file=file, record=record, field="ground_truth") from e
        boxes = tfds_common.check_boxes(xyxy, img.width, img.height, file=file, record=record,
                                        field="ground_truth")
        return polygons.astype(np.float32), boxes
