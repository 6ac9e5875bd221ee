"""The dual-encoder mode: every item as a CLIP-style model takes it, image-only or text-only, never both.

VLM2GeoVec's claim is that one encoder reading images, text, boxes and coordinates interleaved beats dual
encoders on region tasks. The controlled baseline is the same architecture, data, seed and compute with
interleaving taken away (``data.pipeline.interleave = False`` for training; rsmeb's dual rows for
evaluation), by one rule applied to every Item:

- an item without an image is already text-side: its text, coordinates (written as text) and instruction
  are kept;
- an item with an image AND text or coordinates is a text-side item: the text, coordinates and instruction
  are kept and the image is dropped (a composed edit becomes its change text, a referring expression or a
  VQA question its text alone);
- any other image item is image-side: the image alone, with no instruction; a region (boxes) is cut out as
  its own image (inputs/regions.py, the crop baseline's pixels), and a box's label, which only box tokens
  can carry beside an image, is dropped with the box.
"""
from __future__ import annotations

import dataclasses

from vlm2geovec_jax.inputs.records import Item, Pair
from vlm2geovec_jax.inputs.regions import cut_out


def dual_item(item: Item) -> Item:
    """The item image-only or text-only (module docstring)."""
    if item.image is None:
        return item
    if (item.text and item.text.strip()) or item.geo is not None:
        return Item(text=item.text, geo=item.geo, instruction=item.instruction)
    region = cut_out(item)
    return Item(image=region.image, image_size=region.image_size)


def dual_pair(pair: Pair) -> Pair:
    """The pair with its query, positive and negatives as dual items; task and source unchanged."""
    return dataclasses.replace(pair, query=dual_item(pair.query), positive=dual_item(pair.positive),
                               negatives=tuple(dual_item(n) for n in pair.negatives))


def is_dual(item: Item) -> bool:
    """True when the item is image-only (no text, boxes, coordinates or instruction) or has no image."""
    if item.image is None:
        return not item.boxes
    return not (item.text or item.boxes or item.geo is not None or item.instruction)
