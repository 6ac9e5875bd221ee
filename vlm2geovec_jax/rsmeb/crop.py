"""The crop baseline for region-level tasks: each region cut out as its own image, no box tokens.

VLM2Vec encodes a region by cropping it; VLM2GeoVec feeds the whole image with the box as tokens. Running
the same rows both ways, in the same harness and with the same encoder, measures what the interleaved box
tokens add. The crop is inputs/regions.py's (the box's pixels in the original image, rounded outward).

Fairness: a crop row differs from its box row ONLY in how the region is given. Text, instruction and
location are kept, and a box's label (the ``<|object_ref_start|>ship<|object_ref_end|>`` part of the box
tokens, which a pairs file may give) becomes plain text after the item's own text, so every word of the box
row is in the crop row; only the coordinates and the special tokens are gone. (An earlier release's crop
rows dropped the label of referring-expression candidates, which made box tokens look far better than they
are; the built-in adapters now give no labels at all, inputs/adapters.py.)
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from vlm2geovec_jax.inputs.records import EvalRow, Item
from vlm2geovec_jax.inputs.regions import cut_out
from vlm2geovec_jax.rsmeb.suite import Suite

REGION_KINDS = ("region_caption", "referring_expression")
SUFFIX = "_crop"


def crop_item(item: Item) -> Item:
    """The item with its boxes' region as the image and no boxes; the box labels move into the text (after
    the item's own text, in box order, as the box tokens put them after it), so the crop row carries every
    word its box row carries. Items without boxes are unchanged."""
    if not item.boxes:
        return item
    labels = [b.label for b in item.boxes if b.label]
    text = " ".join(t.strip() for t in (item.text, *labels) if t and t.strip()) or None
    return dataclasses.replace(cut_out(item), text=text)


def map_rows(rows: Sequence[EvalRow], fn: Callable[[Item], Item], *, task: str | None = None) -> list[EvalRow]:
    """The rows with ``fn`` applied to query and candidates (same order, same positives), renamed to ``task``
    if given. Items and candidate tuples shared between rows (a gallery, a class list) are mapped once and
    stay shared."""
    items: dict[int, Item] = {}
    tuples: dict[int, tuple[Item, ...]] = {}

    def one(item: Item) -> Item:
        if id(item) not in items:
            items[id(item)] = fn(item)
        return items[id(item)]

    out = []
    for row in rows:
        if id(row.candidates) not in tuples:
            tuples[id(row.candidates)] = tuple(one(c) for c in row.candidates)
        out.append(EvalRow(row.qid, task or row.task, one(row.query), tuples[id(row.candidates)], row.positives))
    return out


def crop_rows(rows: Sequence[EvalRow], *, task: str | None = None) -> list[EvalRow]:
    """The rows with query and candidates cropped (crop_item), shared items cropped once (map_rows)."""
    return map_rows(rows, crop_item, task=task)


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
