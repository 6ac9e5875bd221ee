"""GeoChat-Bench `referring.jsonl` and `region_captioning.jsonl`: one example per line.

Lines carry `question_id`, `image_id` (the image is `<image_id>.png` in GeoChat_Instruct's image folder,
`final_images_llava/`, found wherever images.zip was unzipped under the manual dir), `question`, `ground_truth`, `type`,
`dataset`, `obj_ids`, `size_group`. Referring: `question` is the expression and `ground_truth` the target
box(es), either pixel polygons (4 corners) / pixel xyxy lists, or GeoChat box strings. Region captioning:
`question` holds the box string and `ground_truth` is the caption. A GeoChat box string is
`{<x1><y1><x2><y2>|<angle>}` (several may follow each other) with integers in percent of the image width and
height and the rotation in degrees, read with the prompts' own grammar (inputs/serialize.py). `boxes` is the pixel xyxy (for a box string: before rotation, with the
angle in `angles`); `polygons` are the 4 corners in pixels (a box string's corners turned by the angle about
the box centre, as GeoChat's evaluation does).
"""
from __future__ import annotations

import ast
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.records import located
from vlm2geovec_jax.inputs.serialize import parse_geochat_boxes

IMAGE_DIR = "final_images_llava"  # GeoChat_Instruct's images.zip: share/softwares/kartik/GeoChat_finetuning/<this>


def parse_box_string(text: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(xyxy [n,4], angles [n], polygons [n,4,2]) in pixels from GeoChat `{<x1><y1><x2><y2>|<a>}` strings.

    The grammar is the prompts' own (serialize.parse_geochat_boxes), so a box reads here exactly as the
    model is shown it. A value over 100, an angle outside [0, 360] or no box at all raises RecordError.
    """
    found = parse_geochat_boxes(text, (width, height))
    if not found:
        raise RecordError(f"expected GeoChat boxes '{{<x1><y1><x2><y2>|<angle>}}', got '{text[:80]}'")
    boxes = np.array([b.xyxy for b in found], np.float64)
    angles = np.array([b.angle or 0.0 for b in found], np.float32)
    polys = np.array([rotate_rectangle(*b.xyxy, b.angle or 0.0) for b in found], np.float32)
    return boxes, angles, polys


def rotate_rectangle(x1: float, y1: float, x2: float, y2: float, angle_deg: float) -> list[list[float]]:
    """Corners (x1,y1), (x2,y1), (x2,y2), (x1,y2) turned by angle_deg about the centre (image axes, y down)."""
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return [[(x - cx) * c - (y - cy) * s + cx, (x - cx) * s + (y - cy) * c + cy]
            for x, y in ((x1, y1), (x2, y1), (x2, y2), (x1, y2))]


def pixel_polygons(gt) -> np.ndarray:
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
        "Download HF MBZUAI/GeoChat-Bench (referring.jsonl, region_captioning.jsonl) and GeoChat_Instruct's "
        "images.zip (cat images_parta* > images.zip) into the manual dir and unzip images.zip there, as it "
        "unzips (share/softwares/kartik/GeoChat_finetuning/final_images_llava/). See data/README.md.")

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
        manual_dir = Path(dl_manager.manual_dir)
        root = tfds_common.find_root(manual_dir, self.builder_config.jsonl)
        images = tfds_common.find_dir(manual_dir, (IMAGE_DIR,))
        return {"test": self._generate_examples(images, root / self.builder_config.jsonl)}

    def _generate_examples(self, images: Path, jsonl: Path):
        with open(jsonl, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if line.strip():
                    key, example = self._example(images, jsonl, line_no, line)
                    yield key, example

    def _example(self, images: Path, jsonl: Path, line_no: int, line: str) -> tuple[str, dict]:
        file, record = str(jsonl), f"line {line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordError(f"not valid JSON ({e})", file=file, record=record) from e
        image_id = str(tfds_common.require_key(row, "image_id", file=file, record=record))
        qid = str(row.get("question_id", line_no))
        record = f"line {line_no} (question_id {qid})"
        img = tfds_common.encode_image(images / f"{image_id}.png", record=record)
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
            except RecordError as e:
                raise located(e, file=file, record=record, prefix="question") from None
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
                polygons = pixel_polygons(truth)
                xyxy = np.concatenate([polygons.min(1), polygons.max(1)], -1)
        except RecordError as e:
            raise located(e, file=file, record=record, prefix="ground_truth") from None
        except (ValueError, SyntaxError, TypeError) as e:
            raise RecordError(str(e), file=file, record=record, field="ground_truth") from e
        boxes = tfds_common.check_boxes(xyxy, img.width, img.height, file=file, record=record,
                                        field="ground_truth")
        return polygons.astype(np.float32), boxes
