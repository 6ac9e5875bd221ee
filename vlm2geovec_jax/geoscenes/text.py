"""The words of one tile: captions, region captions, referring expressions, VQA pairs and the place
description."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from vlm2geovec_jax.geoscenes.geography import climate_belt
from vlm2geovec_jax.geoscenes.tile import SceneObject, Tile
from vlm2geovec_jax.geoscenes.vocabulary import (KIND_BY_NAME, KINDS, LAND_COVERS, POSITION_PHRASES, ROAD,
                                                 SURFACE_PHRASES, WATER, Kind, counted, join_words)

COVER_NOUNS = ("water", "ice", "desert", "forest", "farmland", "grassland", "urban blocks")
COVER_ADJECTIVES = ("open-water", "ice-covered", "desert", "forested", "farmland", "grassland", "urban")
SCENE_NOUNS = {"airport": "an airport", "harbor": "a harbor", "industrial_area": "an industrial area",
               "city": "a city", "ice_field": "an ice field", "sea": "an open-sea area"}


def expression_text(kind: Kind, color: str | None, position: str | None) -> str:
    """'the red ship in the top-left' (color and position only when given)."""
    words = ["the", color, kind.name] if color else ["the", kind.name]
    return " ".join(words + ([POSITION_PHRASES[position]] if position else []))


def referring_expression(obj: SceneObject, objects: Sequence[SceneObject]) -> str | None:
    """The shortest of kind / color+kind / kind+position / color+kind+position that fits ONLY `obj`."""
    for use_color, use_position in ((False, False), (True, False), (False, True), (True, True)):
        color, position = obj.color if use_color else None, obj.position if use_position else None
        hits = [o for o in objects if o.kind is obj.kind and (color is None or o.color == color)
                and (position is None or o.position == position)]
        if len(hits) == 1 and hits[0] is obj:
            return expression_text(obj.kind, color, position)
    return None


def region_caption(obj: SceneObject) -> str:
    """'a large red ship on the water in the top-left of the image'."""
    words = " ".join(w for w in ("a", obj.size, obj.color, obj.kind.name) if w)
    return f"{words} {SURFACE_PHRASES[obj.surface]} {POSITION_PHRASES[obj.position]} of the image"


def count_phrase(objects: Sequence[SceneObject]) -> str:
    """'three buildings, one vehicle and two swimming pools' in KINDS order."""
    counts = Counter(o.kind.name for o in objects)
    return join_words([counted(counts[k.name], k) for k in KINDS if counts[k.name]])


def covers_phrase(fractions: np.ndarray) -> str:
    """'farmland and forest': the one or two land covers over 15% of the tile, largest first."""
    order = [int(i) for i in np.argsort(-fractions, kind="stable") if fractions[i] >= 0.15][:2]
    return join_words([COVER_NOUNS[i] for i in order])


def objects_tail(objects: Sequence[SceneObject]) -> str:
    """' with two buildings and one vehicle', or ', with no objects in sight'."""
    return f" with {count_phrase(objects)}" if objects else ", with no objects in sight"


def overview_caption(fractions: np.ndarray, objects: Sequence[SceneObject]) -> str:
    """'An aerial image of farmland and forest with two buildings and one vehicle.' (covers >= 15%)."""
    return f"An aerial image of {covers_phrase(fractions)}{objects_tail(objects)}."


def captions(tile: Tile, rng: np.random.Generator) -> list[str]:
    """2-5 captions: the overview first, then a random subset of the other templates that apply.

    Every caption names what the tile shows (its land cover and its objects), so that a caption singles out
    few tiles: a caption that fits half the planet ('a sea scene') makes text-image search a lottery.
    """
    objects, fractions = tile.objects, tile.fractions()
    top = int(np.argmax(fractions))
    tail = objects_tail(objects)
    others = [f"A {tile.scene.replace('_', ' ')} scene seen from above{tail}.",
              f"About {int(round(fractions[top] * 10)) * 10}% of the area is {COVER_NOUNS[top]}{tail}."]
    if objects:
        counts = Counter(o.kind.name for o in objects)
        kind = KIND_BY_NAME[max(counts, key=lambda k: (counts[k], -[x.name for x in KINDS].index(k)))]
        colors = Counter(o.color for o in objects if o.kind is kind)
        parts = join_words([counted(n, kind, c) for c, n in sorted(colors.items(), key=lambda cn: (-cn[1], cn[0]))])
        verb = "is" if counts[kind.name] == 1 else "are"
        others.append(f"There {verb} {counted(counts[kind.name], kind)} {SURFACE_PHRASES[top]}: {parts}.")
        obj = objects[int(rng.integers(len(objects)))]
        others.append(f"A {obj.color} {obj.kind.name} can be seen {SURFACE_PHRASES[obj.surface]} "
                      f"{POSITION_PHRASES[obj.position]} of the image.")
    if (tile.surface == ROAD).any():
        others.append(f"A road runs through {covers_phrase(fractions)}{tail}.")
    n_more = int(rng.integers(1, min(4, len(others)) + 1))
    picked = sorted(rng.choice(len(others), n_more, replace=False).tolist())
    return [overview_caption(fractions, objects)] + [others[i] for i in picked]


def vqa(tile: Tile, kinds: Sequence[str], rng: np.random.Generator) -> list[dict[str, str]]:
    """Count, presence, color, position, land-cover and scene questions with their answers."""
    objects, qa = tile.objects, []
    counts = Counter(o.kind.name for o in objects)
    absent = [k for k in kinds if not counts[k]]
    asked = [k for k in kinds if counts[k]] + absent[:1]
    for name in asked:
        qa.append(("count", f"How many {KIND_BY_NAME[name].plural} are there in the image?", str(counts[name])))
    for name in ([k for k in kinds if counts[k]][:1] + absent[-1:]):
        qa.append(("presence", f"Is there a {name} in the image?", "yes" if counts[name] else "no"))
    order = rng.permutation(len(objects)).tolist()
    by_place = [o for o in (objects[i] for i in order)
                if sum(x.kind is o.kind and x.position == o.position for x in objects) == 1][:2]
    for o in by_place:
        qa.append(("color", f"What color is {expression_text(o.kind, None, o.position)}?", o.color))
    by_color = [o for o in (objects[i] for i in order)
                if sum(x.kind is o.kind and x.color == o.color for x in objects) == 1][:2]
    for o in by_color:
        qa.append(("position", f"Where is {expression_text(o.kind, o.color, None)}?", o.position))
    qa.append(("land_cover", "What is the main land cover in this image?",
               LAND_COVERS[int(np.argmax(tile.fractions()))]))
    qa.append(("scene", "What kind of scene is this?", tile.scene.replace("_", " ")))
    return [{"question": q, "answer": a, "question_type": t} for t, q, a in qa]


def place_description(tile: Tile) -> str:
    """'a coastal farmland region in the northern temperate belt': what the place is, not where (the
    coordinates travel as the example's lat/lon, so a prompt never carries them twice)."""
    fractions = tile.fractions()
    coastal = tile.scene != "sea" and 0.05 <= fractions[WATER] <= 0.7
    if tile.scene == "sea" and fractions[WATER] < 0.9:
        noun = "coastal waters"
    elif tile.scene in SCENE_NOUNS:
        noun = SCENE_NOUNS[tile.scene]
        if coastal and tile.scene in ("city", "industrial_area", "ice_field"):
            noun = f"a coastal {noun.split(' ', 1)[1]}"
    else:
        noun = f"a {'coastal ' if coastal else ''}{COVER_ADJECTIVES[LAND_COVERS.index(tile.scene)]} region"
    return f"{noun} in the {climate_belt(tile.lat)}"
