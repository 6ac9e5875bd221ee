"""The words and numbers of GeoScenes: land covers, surfaces, scenes, object kinds, colors, phrases.

Every other module of the world reads these tables, so this one imports none of them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

LAND_COVERS = ("water", "ice", "desert", "forest", "farmland", "grassland", "urban")
WATER, ICE, DESERT, FOREST, FARMLAND, GRASSLAND, URBAN, ROAD, AIRFIELD = range(9)
SURFACES = LAND_COVERS + ("road", "airfield")
SCENES = ("airport", "city", "desert", "farmland", "forest", "grassland", "harbor", "ice_field",
          "industrial_area", "sea")
SPLITS = ("train", "validation", "test")
CELL_DEG = 15.0  # split cells
TILE_DEG = 0.1  # latitude extent of one tile
MAX_ABS_LAT = 80.0
WATER_SHARE = 0.4  # sea level is set so that this share of the planet is below it

COLORS = {"red": (196, 36, 36), "white": (246, 246, 246), "black": (22, 22, 24), "blue": (36, 84, 206),
          "yellow": (236, 204, 40), "orange": (236, 128, 28), "grey": (136, 136, 140),
          "brown": (120, 72, 40), "turquoise": (64, 208, 208)}
PALETTE = np.array([(28, 66, 110), (232, 238, 244), (214, 188, 138), (34, 82, 42), (146, 158, 82),
                    (118, 148, 78), (150, 146, 140), (70, 70, 72), (105, 105, 108)], np.float32)
MIN_CONTRAST = 90.0  # RGB distance between an object's color and the mean ground under it


@dataclasses.dataclass(frozen=True)
class Kind:
    """An object kind: where it may stand, its colors and its size range (pixels at 112 px per tile)."""

    name: str
    plural: str
    shape: str
    colors: tuple[str, ...]
    surfaces: frozenset[int]
    length: tuple[int, int]
    width: tuple[int, int]


KINDS = (
    Kind("building", "buildings", "building", ("red", "white", "blue", "orange", "grey", "brown"),
         frozenset({URBAN, FARMLAND, GRASSLAND, DESERT, FOREST, ICE}), (6, 14), (6, 14)),
    Kind("ship", "ships", "ship", ("white", "red", "black", "yellow", "orange", "grey"), frozenset({WATER}),
         (10, 20), (3, 5)),
    Kind("plane", "planes", "plane", ("white", "red", "yellow", "blue"), frozenset({AIRFIELD}), (12, 18),
         (12, 18)),
    Kind("vehicle", "vehicles", "box", ("red", "blue", "white", "black", "yellow"), frozenset({ROAD}), (5, 7),
         (3, 3)),
    Kind("storage tank", "storage tanks", "tank", ("white", "grey", "blue"),
         frozenset({URBAN, DESERT, GRASSLAND, FARMLAND}), (7, 13), (7, 13)),
    Kind("swimming pool", "swimming pools", "box", ("turquoise", "blue"), frozenset({URBAN}), (5, 9), (4, 7)),
)
KIND_BY_NAME = {k.name: k for k in KINDS}

# (kind, min, max) objects wanted per scene; what does not fit is dropped.
SCENE_OBJECTS = {
    "city": (("building", 3, 8), ("vehicle", 0, 4), ("swimming pool", 0, 2)),
    "industrial_area": (("storage tank", 2, 6), ("building", 1, 3), ("vehicle", 0, 3)),
    "harbor": (("ship", 1, 5), ("building", 0, 3), ("vehicle", 0, 2)),
    "airport": (("plane", 1, 4), ("vehicle", 0, 3), ("building", 0, 2)),
    "farmland": (("building", 0, 3), ("vehicle", 0, 3)),
    "grassland": (("building", 0, 2), ("vehicle", 0, 2), ("storage tank", 0, 1)),
    "desert": (("storage tank", 0, 2), ("vehicle", 0, 2), ("building", 0, 1)),
    "forest": (("vehicle", 0, 2), ("building", 0, 1)),
    "sea": (("ship", 0, 3),),
    "ice_field": (("ship", 0, 1), ("building", 0, 1)),
}
POSITIONS = (("top-left", "top", "top-right"), ("left", "center", "right"),
             ("bottom-left", "bottom", "bottom-right"))
POSITION_PHRASES = {"top-left": "in the top-left", "top": "at the top", "top-right": "in the top-right",
                    "left": "on the left", "center": "in the center", "right": "on the right",
                    "bottom-left": "in the bottom-left", "bottom": "at the bottom",
                    "bottom-right": "in the bottom-right"}
SURFACE_PHRASES = ("on the water", "on the ice", "in the desert", "in the forest", "among fields",
                   "on grassland", "in a built-up area", "on the road", "on the airfield")
NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve")


def number_word(n: int) -> str:
    """'no', 'one', ... 'twelve', then digits."""
    return NUMBERS[n] if n < len(NUMBERS) else str(n)


def counted(n: int, kind: Kind, color: str = "") -> str:
    """'two red ships', 'one plane'."""
    noun = kind.name if n == 1 else kind.plural
    return " ".join(w for w in (number_word(n), color, noun) if w)


def join_words(parts: Sequence[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
