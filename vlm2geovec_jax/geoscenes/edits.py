"""Composed-retrieval edits: add, remove, remove one, recolor; each gives the change in words and the
objects of the edited tile, which is rendered over the same ground."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from vlm2geovec_jax.geoscenes.objects import contrasting_color, place
from vlm2geovec_jax.geoscenes.text import expression_text, referring_expression
from vlm2geovec_jax.geoscenes.tile import SceneObject, Tile
from vlm2geovec_jax.geoscenes.vocabulary import KIND_BY_NAME, KINDS, counted


@dataclasses.dataclass(frozen=True)
class Change:
    """A composed-retrieval edit: the words and the objects of the edited tile."""

    text: str
    kind: str  # add | remove | remove_one | recolor | none
    objects: list[SceneObject]


def compose(tile: Tile, kinds: Sequence[str], rng: np.random.Generator) -> Change:
    """One edit the tile allows, tried in a random order of edit kinds; 'none' only if nothing applies."""
    for edit in [("add", "remove", "remove_one", "recolor")[i] for i in rng.permutation(4)]:
        change = _EDITS[edit](tile, kinds, rng)
        if change is not None:
            return change
    return Change("keep the scene unchanged", "none", list(tile.objects))


def _add(tile: Tile, kinds: Sequence[str], rng: np.random.Generator) -> Change | None:
    for name in [kinds[i] for i in rng.permutation(len(kinds))]:
        kind, n, color = KIND_BY_NAME[name], int(rng.integers(1, 4)), None
        objects = list(tile.objects)
        for _ in range(n):
            obj = place(tile, kind, rng, [o.xyxy for o in objects], color=color)  # the first picks the color
            if obj is None:
                break
            objects.append(obj)
            color = obj.color
        else:
            what = f"a {color} {kind.name}" if n == 1 else counted(n, kind, color)
            return Change(f"add {what}", "add", objects)
    return None


def _remove(tile: Tile, kinds: Sequence[str], rng: np.random.Generator) -> Change | None:
    present = sorted({o.kind.name for o in tile.objects}, key=[k.name for k in KINDS].index)
    if not present:
        return None
    kind = KIND_BY_NAME[present[int(rng.integers(len(present)))]]
    n = sum(o.kind is kind for o in tile.objects)
    return Change(f"remove the {kind.name if n == 1 else kind.plural}", "remove",
                  [o for o in tile.objects if o.kind is not kind])


def _referable(tile: Tile, rng: np.random.Generator) -> tuple[SceneObject, str] | None:
    for i in rng.permutation(len(tile.objects)).tolist():
        expr = referring_expression(tile.objects[i], tile.objects)
        if expr is not None and sum(o.kind is tile.objects[i].kind for o in tile.objects) > 1:
            return tile.objects[i], expr
    return None


def _remove_one(tile: Tile, kinds: Sequence[str], rng: np.random.Generator) -> Change | None:
    found = _referable(tile, rng)
    if found is None:
        return None
    obj, expr = found
    return Change(f"remove {expr}", "remove_one", [o for o in tile.objects if o is not obj])


def _recolor(tile: Tile, kinds: Sequence[str], rng: np.random.Generator) -> Change | None:
    found = _referable(tile, rng) or next(((o, expression_text(o.kind, None, None)) for o in tile.objects
                                           if sum(x.kind is o.kind for x in tile.objects) == 1), None)
    if found is None:
        return None
    obj, expr = found
    x1, y1, x2, y2 = obj.xyxy
    ground = tile.background[y1:y2, x1:x2][obj.mask]
    for color in (c for c in obj.kind.colors if c != obj.color):
        if contrasting_color(obj.kind, ground, rng, color):
            new = dataclasses.replace(obj, color=color)
            return Change(f"paint {expr} {color}", "recolor", [new if o is obj else o for o in tile.objects])
    return None


_EDITS = {"add": _add, "remove": _remove, "remove_one": _remove_one, "recolor": _recolor}
