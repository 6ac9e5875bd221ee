"""Instruction templates for every task kind, and the exact text layout of an item's prompt.

One versioned registry: a change of wording is a new version, never an edit, because the embedding of an
item depends on every character of its prompt (VLM2Vec's scores moved with whitespace). A trained model is
evaluated with the version it was trained with.

Layout of ``render_prompt`` (VLM2Vec style, see docs/prompt_layout.md):

    [<|vision_start|><|image_pad|><|vision_end|>\\n]{instruction} {text} {boxes} {coordinates}

The image block comes first when the item has an image, with ONE ``<|image_pad|>`` (the tokenizer expands it
to the image's patch count) and a newline after it. The other parts follow in that order, each stripped of
outer whitespace, empty ones dropped, joined by single spaces. Nothing is appended at the end: end-of-text
tokens are the tokenizer's business.
"""
from __future__ import annotations

import dataclasses

from vlm2geovec_jax.inputs.records import Item
from vlm2geovec_jax.inputs.serialize import format_boxes, format_geo

TEMPLATES_VERSION = "v1"
IMAGE_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"
SIDES = ("query", "candidate")

_RS_IMAGE = "Represent the given remote sensing image."

# task kind -> (query instruction, candidate instruction); "" means no instruction (plain-text candidates,
# as in VLM2Vec). An instruction ends with ":" where the item's own text, boxes or coordinates follow it.
TEMPLATES: dict[str, dict[str, tuple[str, str]]] = {
    "v1": {
        "scene_classification": ("Identify the land-use scene shown in the remote sensing image.", ""),
        "text_to_image": ("Find a remote sensing image that matches the given caption:", _RS_IMAGE),
        "image_to_text": ("Find a caption describing the given remote sensing image.", ""),
        "composed_retrieval": ("Given a remote sensing image, find a similar image with the described change:",
                               _RS_IMAGE),
        "vqa": ("Represent the given remote sensing image with the following question:", ""),
        "region_caption": ("Describe the object in the given region of the remote sensing image:", ""),
        "referring_expression": ("Select the region of the remote sensing image that matches the description:",
                                 "Represent the given region of the remote sensing image:"),
        "semantic_geo_localization": ("Identify the geographic location of the given remote sensing image.", ""),
        "geo_image_retrieval": ("Find the remote sensing image of the given location that matches the "
                                "description:", _RS_IMAGE),
    },
}
TASK_KINDS = tuple(TEMPLATES[TEMPLATES_VERSION])


def instruction(task_kind: str, side: str, *, version: str = TEMPLATES_VERSION) -> str:
    """The instruction of ``task_kind`` for the ``query`` or ``candidate`` side ("" when there is none)."""
    if version not in TEMPLATES:
        raise ValueError(f"unknown templates version {version!r}; expected one of {', '.join(TEMPLATES)}")
    kinds = TEMPLATES[version]
    if task_kind not in kinds:
        raise ValueError(f"unknown task kind {task_kind!r}; expected one of {', '.join(kinds)}")
    if side not in SIDES:
        raise ValueError(f"unknown side {side!r}; expected one of {', '.join(SIDES)}")
    return kinds[task_kind][SIDES.index(side)]


def with_instruction(item: Item, task_kind: str, side: str, *, version: str = TEMPLATES_VERSION) -> Item:
    """The item carrying the template instruction of its task and side (None where the template has none)."""
    return dataclasses.replace(item, instruction=instruction(task_kind, side, version=version) or None)


def render_prompt(item: Item, *, box_format: str = "qwen") -> str:
    """The exact prompt text of an item (layout in the module docstring), boxes written in ``box_format``."""
    parts = [item.instruction, item.text]
    if item.boxes:
        parts.append(format_boxes(item.boxes, item.image_size, box_format))
    if item.geo is not None:
        parts.append(format_geo(item.geo))
    body = " ".join(p.strip() for p in parts if p and p.strip())
    if item.image is None:
        return body
    return f"{IMAGE_BLOCK}\n{body}" if body else IMAGE_BLOCK
