"""The one content identity of an item: what the model sees, hashed.

Two items with the same rendered prompt and the same image bytes embed identically under one model, so
they are one item: the evaluation cache embeds them once and the contrastive loss masks them as false
negatives of each other. ``item_key`` is that identity (sha256 hex of the prompt and of the image's encoded
bytes, so the same picture under two paths is one item and an edited file is a new one); ``content_id`` is
its 63-bit integer form for the loss, which carries ids as int64 arrays.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable

from vlm2geovec_jax.inputs.records import Item
from vlm2geovec_jax.inputs.templates import render_prompt

CONTENT_ID_BITS = 63
Digest = Callable[[str | bytes], str]


def image_digest(image: str | bytes) -> str:
    """sha256 hex of an image's encoded bytes (a path is read); an unreadable path is keyed by the path."""
    if isinstance(image, bytes):
        return hashlib.sha256(image).hexdigest()
    try:
        h = hashlib.sha256()
        with open(image, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:  # unreadable: key by path, so the embedder reports the file when it tries
        return "path:" + image


class ImageDigests:
    """image_digest memoised per image object: the items of one example share one bytes object (an RSVQA-HR
    image carries ~100 questions), so each picture is hashed once, not once per item."""

    def __init__(self):
        self._memo: dict[int, tuple[str | bytes, str]] = {}

    def __call__(self, image: str | bytes) -> str:
        hit = self._memo.get(id(image))
        if hit is None or hit[0] is not image:  # the held reference keeps the id from being reused
            hit = (image, image_digest(image))
            self._memo[id(image)] = hit
        return hit[1]


def item_key(item: Item, *, box_format: str = "qwen", digest: Digest = image_digest) -> str:
    """sha256 hex of the item's rendered prompt and its image bytes: equal keys embed identically."""
    h = hashlib.sha256(render_prompt(item, box_format=box_format).encode("utf-8"))
    h.update(b"\x00text" if item.image is None else b"\x00image\x00" + digest(item.image).encode("ascii"))
    return h.hexdigest()


def content_id(key: str) -> int:
    """The 63-bit integer form of an item key (never 0: the loss reserves 0 for filler rows)."""
    return int(key[:16], 16) % ((1 << CONTENT_ID_BITS) - 1) + 1
