"""The crop baseline for region-level tasks: each region cut out as its own image, no box tokens.

VLM2Vec encodes a region by cropping it; VLM2GeoVec feeds the whole image with the box as tokens. Running
the same rows both ways, in the same harness and with the same encoder, measures what the interleaved box
tokens add. A crop is the box's pixels in the ORIGINAL image (a rotated box: the axis-aligned envelope of
its corners; several boxes: the envelope of all), rounded outward to whole pixels and clipped to the image,
stored as PNG; text, instruction and location are kept, so the box tokens are the only difference.
"""
from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np

from vlm2geovec_jax.inputs.image import load_image
from vlm2geovec_jax.inputs.records import Box, EvalRow, Item
from vlm2geovec_jax.rsmeb.suite import Suite

REGION_KINDS = ("region_caption", "referring_expression")
SUFFIX = "_crop"


def box_envelope(boxes: Sequence[Box], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Whole-pixel (left, top, right, bottom) covering every box (rotated ones by their corners), clipped."""
    xs, ys = [], []
    for box in boxes:
        x1, y1, x2, y2 = box.xyxy
        corners = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], np.float64)
        if box.angle:
            c = corners.mean(axis=0)
            t = math.radians(box.angle)
            rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
            corners = (corners - c) @ rot.T + c
        xs += corners[:, 0].tolist()
        ys += corners[:, 1].tolist()
    w, h = image_size
    left, top = max(0, math.floor(min(xs))), max(0, math.floor(min(ys)))
    right, bottom = min(w, math.ceil(max(xs))), min(h, math.ceil(max(ys)))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def crop_item(item: Item) -> Item:
    """The item with its boxes' region as the image (PNG bytes) and no boxes; items without boxes unchanged."""
    if not item.boxes:
        return item
    image = load_image(item.image, where="crop baseline")
    size = item.image_size
    if image.size != size:  # boxes are in the original image; a resized file would put the crop elsewhere
        raise ValueError(f"image is {image.size[0]}x{image.size[1]} but the item says image_size {size}; "
                         "expected the original image the boxes refer to")
    region = image.crop(box_envelope(item.boxes, size))
    buf = io.BytesIO()
    region.save(buf, format="PNG", compress_level=1)
    return dataclasses.replace(item, image=buf.getvalue(), image_size=region.size, boxes=())


def crop_rows(rows: Sequence[EvalRow], *, task: str | None = None) -> list[EvalRow]:
    """The rows with query and candidates cropped (same order, same positives), renamed to ``task`` if given.

    Items and candidate tuples shared between rows (a gallery, a class list) are cropped once and stay shared.
    """
    items: dict[int, Item] = {}
    tuples: dict[int, tuple[Item, ...]] = {}

    def crop(item: Item) -> Item:
        if id(item) not in items:
            items[id(item)] = crop_item(item)
        return items[id(item)]

    out = []
    for row in rows:
        if id(row.candidates) not in tuples:
            tuples[id(row.candidates)] = tuple(crop(c) for c in row.candidates)
        out.append(EvalRow(row.qid, task or row.task, crop(row.query), tuples[id(row.candidates)], row.positives))
    return out


def crop_row(row: EvalRow, *, task: str | None = None) -> EvalRow:
    """One row's crop-baseline row (see crop_rows)."""
    return crop_rows([row], task=task)[0]


def with_crop_baseline(suite: Suite, rows_by_task: Mapping[str, Sequence[EvalRow]]
                       ) -> tuple[Suite, dict[str, list[EvalRow]]]:
    """The suite plus ``<task>_crop`` for every region task (``baseline_of`` set), and their cropped rows."""
    tasks, rows = list(suite.tasks), dict(rows_by_task)
    for task in suite.main_tasks:
        if task.kind in REGION_KINDS and task.name in rows_by_task:
            name = task.name + SUFFIX
            tasks.append(dataclasses.replace(task, name=name, baseline_of=task.name, paper_p1=None,
                                             description=f"crop baseline of {task.name}"))
            rows[name] = crop_rows(rows_by_task[task.name], task=name)
    return dataclasses.replace(suite, tasks=tuple(tasks)), rows
