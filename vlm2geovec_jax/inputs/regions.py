"""A region of an image cut out as its own image: how a model that cannot read box tokens sees a region.

Both the crop baseline (rsmeb/crop.py) and the dual-encoder training mode (inputs/dual.py) give a region this
way, so the two cut the same pixels. The crop is the box's pixels in the ORIGINAL image (a rotated box: the
axis-aligned envelope of its corners; several boxes: the envelope of all), rounded outward to whole pixels
and clipped to the image, stored as PNG.
"""
from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence

import numpy as np

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.image import load_image
from vlm2geovec_jax.inputs.records import Box, Item


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


def cut_out(item: Item) -> Item:
    """The item with its boxes' region as the image (PNG bytes) and no boxes; everything else unchanged.

    Items without boxes are returned as they are.
    """
    if not item.boxes:
        return item
    image = load_image(item.image, where="region crop")
    size = item.image_size
    if image.size != size:  # boxes are in the original image; a resized file would put the crop elsewhere
        raise RecordError(f"image is {image.size[0]}x{image.size[1]} but the item says image_size {size}; "
                          "expected the original image the boxes refer to", field="image_size")
    region = image.crop(box_envelope(item.boxes, size))
    buf = io.BytesIO()
    region.save(buf, format="PNG", compress_level=1)
    return dataclasses.replace(item, image=buf.getvalue(), image_size=region.size, boxes=())
