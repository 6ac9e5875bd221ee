"""GeoScenes: a deterministic synthetic planet of aerial tiles, so the whole system runs with no download.

Everything follows from one integer seed. The terrain is a pure hash of (seed, position); each tile draws
from its own random streams seeded by a hash of (seed, split, index), so a tile does not depend on the tiles
before it, and two builds of the same world are byte-identical (with the same numpy, Pillow and zlib; on
another CPU family numpy's vectorised sin/exp may round a last bit differently).

- Terrain: four seeded value-noise fields over (lat, lon), wrapping at the antimeridian (elevation,
  moisture, urban density, temperature jitter), classified per pixel into land cover that follows latitude:
  sea below sea level, ice towards the poles, a dry belt around 25 degrees, forest / farmland / grassland by
  moisture, and towns where the urban field peaks. Roads and airfields are drawn on top.
- Objects: buildings, ships (on water), planes (on airfields), vehicles (on roads), storage tanks and
  swimming pools, each with a named color that contrasts with the ground under it. Boxes are the exact
  pixel extent of what is drawn (xyxy, exclusive right/bottom), and boxes never touch one another.
- Text: scene class, 2-5 captions, one region caption per object, referring expressions that match exactly
  one object, VQA pairs, a composed-retrieval change ("add two white planes") whose target tile is rendered
  by the same generator over the same ground, and a description of the place
  (what it is and its climate belt; the coordinates are the example's lat/lon).
- Splits come from disjoint regions: the planet is cut into 15x15 degree cells, cell (i, j) with
  (i + 2j) mod 5 == 0 is test, == 1 validation, else train, and a tile's whole footprint lies in one cell.

    python -m vlm2geovec_jax.inputs.geoscenes_world --bench 300 --preview grid.png

prints tiles per minute (one core) and writes a preview grid.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import math
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

# ------------------------------------------------------------------------------------------- vocabulary
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

_LAND = frozenset({DESERT, FOREST, FARMLAND, GRASSLAND, URBAN})


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
_ALLOWED = {k.name: np.isin(np.arange(len(SURFACES)), sorted(k.surfaces)) for k in KINDS}  # surface lookup

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


# -------------------------------------------------------------------------------------------- hashing
_U64 = np.uint64
_MASK = (1 << 64) - 1


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-mixed 64-bit hash of each element."""
    h = (h ^ (h >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> _U64(27))) * _U64(0x94D049BB133111EB)
    return h ^ (h >> _U64(31))


def stream_seed(*parts: int) -> int:
    """One 64-bit seed from integers (world seed, field or split, index), stable across platforms."""
    h = np.zeros(1, np.uint64)
    for p in parts:
        h = _mix(h ^ np.array([p & _MASK], np.uint64))
    return int(h[0])


def _lattice(ix: np.ndarray, iy: np.ndarray, salt: np.ndarray) -> np.ndarray:
    """A uniform [0, 1) value per integer lattice point, a pure function of (ix, iy, salt)."""
    h = ix.view(np.uint64) * _U64(0x9E3779B97F4A7C15)
    h = _mix(h ^ (iy.view(np.uint64) * _U64(0xD1B54A32D192ED03)) ^ salt)
    return (h >> _U64(11)).astype(np.float64) * 2.0 ** -53


def value_noise(lat: np.ndarray, lon: np.ndarray, wavelength: np.ndarray, salt: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0, 1]: one row per (wavelength in degrees, uint64 salt), one column per point.

    Wavelengths must divide 360 so the noise wraps at the antimeridian.
    """
    wl, salt = np.asarray(wavelength, np.float64)[:, None], np.asarray(salt, np.uint64)[:, None]
    period = np.rint(360.0 / wl).astype(np.int64)
    x, y = (lon.ravel()[None] + 180.0) / wl, (lat.ravel()[None] + 90.0) / wl
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    ix0, iy0 = x0.astype(np.int64) % period, y0.astype(np.int64)
    ix1, iy1 = (ix0 + 1) % period, iy0 + 1
    top = _lattice(ix0, iy0, salt) * (1 - fx) + _lattice(ix1, iy0, salt) * fx
    bottom = _lattice(ix0, iy1, salt) * (1 - fx) + _lattice(ix1, iy1, salt) * fx
    return top * (1 - fy) + bottom * fy


# -------------------------------------------------------------------------------------- geography
def cell_of(lat: float, lon: float) -> tuple[int, int]:
    """(i, j) of the 15-degree split cell holding a point."""
    return (min(int((lon + 180.0) // CELL_DEG), int(360 / CELL_DEG) - 1),
            min(int((lat + 90.0) // CELL_DEG), int(180 / CELL_DEG) - 1))


def region_split(lat: float, lon: float) -> str:
    """The split a location belongs to: a fixed lattice of cells, the same for every seed."""
    i, j = cell_of(lat, lon)
    r = (i + 2 * j) % 5
    return "test" if r == 0 else "validation" if r == 1 else "train"


def footprint(lat: float, lon: float) -> tuple[float, float, float, float]:
    """(west, south, east, north) of the tile centred at (lat, lon): square on the ground."""
    half_lat = TILE_DEG / 2
    half_lon = half_lat / max(math.cos(math.radians(lat)), 0.1)
    return lon - half_lon, lat - half_lat, lon + half_lon, lat + half_lat


def climate_belt(lat: float) -> str:
    """'northern temperate belt', 'southern polar region', ..."""
    a, hemi = abs(lat), "northern" if lat >= 0 else "southern"
    belt = ("equatorial belt" if a < 10 else "tropical belt" if a < 23.5 else "subtropical belt" if a < 35
            else "temperate belt" if a < 55 else "subpolar belt" if a < 66.5 else "polar region")
    return f"{hemi} {belt}"


@dataclasses.dataclass(frozen=True, eq=False)  # identity: two objects may share every attribute
class SceneObject:
    """One drawn object: exact pixel box, its mask and shading inside the box, and its attributes."""

    kind: Kind
    color: str
    xyxy: tuple[int, int, int, int]
    mask: np.ndarray  # bool [y2-y1, x2-x1]
    shade: np.ndarray  # float32, same shape: brightness factor of the color
    surface: int
    size: str
    position: str


@dataclasses.dataclass
class Tile:
    """The ground of one tile (land cover, surface with roads and airfields, rendered background) and the
    objects on it."""

    split: str
    index: int
    lat: float
    lon: float
    land: np.ndarray  # uint8 [H, W] codes into LAND_COVERS, before roads and airfields
    surface: np.ndarray  # uint8 [H, W] codes into SURFACES
    background: np.ndarray  # uint8 [H, W, 3]
    scene: str
    objects: list[SceneObject]

    @property
    def size(self) -> int:
        return self.surface.shape[0]

    @property
    def image_id(self) -> str:
        return f"{self.split}_{self.index:06d}"

    @property
    def bbox_lonlat(self) -> tuple[float, float, float, float]:
        return footprint(self.lat, self.lon)

    def fractions(self) -> np.ndarray:
        """Share of each land cover (under roads and airfields, the land they were drawn on)."""
        return np.bincount(self.land.ravel(), minlength=len(LAND_COVERS)) / self.land.size

    def render(self, objects: Sequence[SceneObject] | None = None) -> np.ndarray:
        """The RGB tile with `objects` (default: the tile's own) painted over the background."""
        img = self.background.copy()
        for obj in self.objects if objects is None else objects:
            x1, y1, x2, y2 = obj.xyxy
            rgb = np.asarray(COLORS[obj.color], np.float32) * obj.shade[..., None]
            patch = img[y1:y2, x1:x2]
            patch[obj.mask] = np.clip(rgb[obj.mask], 0, 255).astype(np.uint8)
        return img


# -------------------------------------------------------------------------------------------- terrain
# Fractal noise fields: (octaves k, wavelength 360 / 2**k degrees; amplitude persistence per octave).
FIELDS = {"elevation": (range(2, 15), 0.8), "moisture": (range(3, 15), 0.62), "urban": (range(7, 15), 0.7),
          "temperature": (range(3, 9), 0.5)}


class Terrain:
    """The planet's noise fields and land-cover rule; a pure function of the seed."""

    def __init__(self, seed: int):
        wavelengths, salts, rows = [], [], []
        for f, (octaves, persistence) in enumerate(FIELDS.values()):
            amps = persistence ** np.arange(len(octaves))
            for k, amp in zip(octaves, amps / amps.sum()):
                wavelengths.append(360.0 / 2 ** k)
                salts.append(stream_seed(seed, f, k))
                rows.append((f, amp))
        self.wavelengths, self.salts = np.array(wavelengths), np.array(salts, np.uint64)
        self.weights = np.zeros((len(FIELDS), len(rows)))
        for r, (f, amp) in enumerate(rows):
            self.weights[f, r] = amp
        probe = np.random.default_rng(stream_seed(seed, 99)).uniform(-1, 1, (2, 4096))
        lat, lon = np.degrees(np.arcsin(probe[0])), probe[1] * 180.0
        self.sea_level = float(np.quantile(self.fields(lat, lon)["elevation"], WATER_SHARE))

    def fields(self, lat: np.ndarray, lon: np.ndarray) -> dict[str, np.ndarray]:
        """Each field (mean 0.5, in [0, 1]) at the given points, shaped like lat."""
        values = self.weights @ value_noise(lat, lon, self.wavelengths, self.salts)
        return {name: v.reshape(lat.shape) for name, v in zip(FIELDS, values)}

    def classify(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(land-cover codes, height above sea level) at the given points."""
        return self.land_cover(lat, self.fields(lat, lon))

    def land_cover(self, lat: np.ndarray, f: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The rule: sea below sea level, ice where cold, desert in the dry belt, then moisture and towns."""
        alat = np.abs(lat)
        temp = 1.0 - alat / 70.0 + 0.6 * (f["temperature"] - 0.5)
        moist = f["moisture"] - 0.2 * np.exp(-((alat - 25.0) / 9.0) ** 2) + 0.08 * np.exp(-(alat / 12.0) ** 2)
        codes = np.full(lat.shape, GRASSLAND, np.uint8)
        codes[(moist > 0.47) & (temp > 0.3)] = FARMLAND
        codes[moist > 0.53] = FOREST
        codes[moist < 0.36] = DESERT
        codes[(f["urban"] > 0.62) & (temp > 0.15)] = URBAN
        codes[temp < 0.1] = ICE
        height = f["elevation"] - self.sea_level
        codes[(height < 0) & (temp >= 0.0)] = WATER
        return codes, height

    def tile_surface(self, lat: float, lon: float, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-pixel land cover and height of a tile: fields sampled every 4 pixels, bilinear in between."""
        west, south, east, north = footprint(lat, lon)
        n = size // 4 + 1
        la = np.linspace(north, south, n)[:, None] * np.ones((1, n))
        lo = np.ones((n, 1)) * np.linspace(west, east, n)[None, :]
        coarse = self.fields(la, (lo + 180.0) % 360.0 - 180.0)
        up = np.linspace(0, n - 1, size)
        fine = {name: _bilinear(v, up) for name, v in coarse.items()}
        pixel_lat = np.linspace(north, south, size)[:, None] * np.ones((1, size))
        return self.land_cover(pixel_lat, fine)


def _bilinear(grid: np.ndarray, up: np.ndarray) -> np.ndarray:
    """A square grid sampled at fractional indices `up` along both axes."""
    i0 = np.minimum(np.floor(up).astype(int), grid.shape[0] - 2)
    f = up - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


# --------------------------------------------------------------------------------------- tile layout
def choose_scene(fractions: np.ndarray, r: float, kinds: Sequence[str]) -> str:
    """Scene class from the land-cover shares and one uniform draw."""
    if fractions[URBAN] >= 0.35:
        return "industrial_area" if r < 0.4 and "storage tank" in kinds else "city"
    if 0.15 <= fractions[WATER] <= 0.85 and r < 0.6 and "ship" in kinds:
        return "harbor"
    flat = fractions[DESERT] + fractions[GRASSLAND] + fractions[FARMLAND]
    if fractions[WATER] + fractions[ICE] < 0.02 and flat > 0.7 and r < 0.25 and "plane" in kinds:
        return "airport"
    dominant = LAND_COVERS[int(np.argmax(fractions))]
    return {"water": "sea", "ice": "ice_field", "urban": "city"}.get(dominant, dominant)


def draw_roads(surface: np.ndarray, rng: np.random.Generator, scene: str) -> None:
    """Streets on urban ground and, sometimes, one straight road across the land, in place."""
    size, s = surface.shape[0], surface.shape[0] / 112
    if (surface == URBAN).mean() > 0.2:
        width, spacing = max(4, round(4 * s)), round(28 * s)
        off = rng.integers(0, spacing)
        lines = np.zeros(size, bool)
        for start in range(off, size, spacing):
            lines[start:start + width] = True
        urban = surface == URBAN
        surface[urban & (lines[:, None] | lines[None, :])] = ROAD
    land = np.isin(surface, list(_LAND))
    if land.mean() > 0.4 and rng.random() < (0.9 if scene == "airport" else 0.5):
        width = max(5, round(6 * s))
        start = rng.integers(0, size - width)
        band = np.zeros_like(land)
        if rng.random() < 0.5:
            band[start:start + width] = True
        else:
            band[:, start:start + width] = True
        surface[band & land] = ROAD


def draw_airfield(surface: np.ndarray, rng: np.random.Generator) -> None:
    """A runway across the tile and an apron beside it, in place."""
    size, s = surface.shape[0], surface.shape[0] / 112
    runway, apron_h, apron_w = round(10 * s), round(30 * s), round(64 * s)
    y = int(rng.integers(round(8 * s), size - runway - apron_h - round(4 * s)))
    x = int(rng.integers(0, size - apron_w))
    field = np.zeros(surface.shape, bool)
    field[y:y + runway] = True
    field[y + runway:y + runway + apron_h, x:x + apron_w] = True
    if rng.random() < 0.5:  # mirrored: the apron lies above the runway as often as below
        field = field[::-1]
    surface[field] = AIRFIELD


def render_ground(surface: np.ndarray, height: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Aerial RGB of the ground: palette color times a texture per land cover (parcels, blocks, dunes...)."""
    size = surface.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    s = size / 112
    blotch = _blotches(rng, size)
    grain = rng.standard_normal((size, size)).astype(np.float32)
    tex = np.zeros((len(SURFACES), size, size), np.float32)
    tex[WATER] = 0.03 * np.sin((xx + yy) / (2.5 * s)) - 6.0 * np.clip(-height, 0, 0.05)  # deeper is darker
    tex[ICE] = 0.03 * grain + 0.05 * blotch
    angle = rng.uniform(0, np.pi)
    dunes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / (3.0 * s) + 6 * blotch)
    tex[DESERT] = 0.07 * dunes + 0.02 * grain
    tex[FOREST] = 0.14 * grain + 0.25 * blotch
    tex[FARMLAND] = _parcels(rng, xx, yy, s) + 0.03 * grain
    tex[GRASSLAND] = 0.05 * grain + 0.15 * blotch
    blocks = rng.uniform(-0.12, 0.12, 64).astype(np.float32)
    block_id = ((xx // (14 * s)).astype(int) * 7 + (yy // (14 * s)).astype(int)) % 64
    tex[URBAN] = blocks[block_id] + 0.06 * grain
    tex[ROAD] = 0.03 * grain
    tex[AIRFIELD] = 0.02 * grain
    mult = np.take_along_axis(tex, surface[None].astype(np.int64), 0)[0]
    rgb = PALETTE[surface] * (1.0 + mult)[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _blotches(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth per-tile noise in about [-0.5, 0.5]: 8x8 random values, bicubic up-sampled."""
    small = Image.fromarray(rng.random((8, 8)).astype(np.float32) - 0.5, mode="F")
    return np.asarray(small.resize((size, size), Image.BICUBIC), np.float32)


def _parcels(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray, s: float) -> np.ndarray:
    """Field parcels: a jittered grid of rectangles, each with its own tint and furrow direction."""
    pw, ph = rng.uniform(18, 34) * s, rng.uniform(14, 28) * s
    ox, oy = rng.uniform(0, pw), rng.uniform(0, ph)
    pid = ((xx + ox) // pw).astype(int) * 13 + ((yy + oy) // ph).astype(int)
    tint = rng.uniform(-0.22, 0.18, 97).astype(np.float32)[pid % 97]
    furrow = np.where(pid % 2 == 0, np.sin(xx * 2.1 / s), np.sin(yy * 2.1 / s)).astype(np.float32)
    return tint + 0.05 * furrow


# -------------------------------------------------------------------------------------------- objects
def shape_mask(kind: Kind, length: int, width: int, orient: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask, shade) of one object, its mask touching all four sides of the returned array."""
    if kind.shape == "plane":
        mask, shade = _plane(length)
    elif kind.shape == "ship":
        mask, shade = _ship(length, width)
    elif kind.shape == "tank":
        mask, shade = _tank(length)
    else:
        mask = np.ones((width, length), bool)
        shade = np.ones(mask.shape, np.float32)
        if kind.shape == "building":
            shade[width // 2, 1:-1] = 0.8  # roof ridge
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]  # crop to the drawn pixels
    crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return np.rot90(mask[crop], orient).copy(), np.rot90(shade[crop], orient).copy()


def _draw(size: tuple[int, int], draw) -> np.ndarray:
    """Boolean mask of what `draw(ImageDraw)` paints on a blank (w, h) canvas."""
    img = Image.new("L", size, 0)
    draw(ImageDraw.Draw(img))
    return np.asarray(img) > 0


def _plane(span: int) -> tuple[np.ndarray, np.ndarray]:
    body = max(2, span // 6)
    c0 = (span - body) // 2

    def draw(d: ImageDraw.ImageDraw) -> None:
        d.rectangle([0, c0, span - 1, c0 + body - 1], fill=1)  # fuselage, nose at the right
        wing_x = int(span * 0.45)
        d.polygon([(wing_x, 0), (wing_x + body, 0), (wing_x + 2 * body, span - 1), (wing_x, span - 1)], fill=1)
        d.rectangle([0, c0 - body, body, c0 + 2 * body - 1], fill=1)  # tail
    mask = _draw((span, span), draw)
    return mask, np.ones(mask.shape, np.float32)


def _ship(length: int, beam: int) -> tuple[np.ndarray, np.ndarray]:
    bow = max(2, beam)

    def draw(d: ImageDraw.ImageDraw) -> None:
        d.polygon([(0, 0), (length - 1 - bow, 0), (length - 1, (beam - 1) / 2), (length - 1 - bow, beam - 1),
                   (0, beam - 1)], fill=1)
    mask = _draw((length, beam), draw)
    shade = np.ones(mask.shape, np.float32)
    shade[:, 1:max(2, length // 4)] = 0.85  # bridge
    return mask, shade


def _tank(diameter: int) -> tuple[np.ndarray, np.ndarray]:
    mask = _draw((diameter, diameter), lambda d: d.ellipse([0, 0, diameter - 1, diameter - 1], fill=1))
    inner = max(1, diameter // 5)
    rim = _draw((diameter, diameter), lambda d: d.ellipse([inner, inner, diameter - 1 - inner,
                                                             diameter - 1 - inner], outline=1, width=1))
    return mask, np.where(rim, 0.8, 1.0).astype(np.float32)  # the floating roof's rim


def position_name(xyxy: Sequence[float], size: int) -> str:
    """Which third of the tile (rows x columns) holds the box centre."""
    cx, cy = (xyxy[0] + xyxy[2]) / 2, (xyxy[1] + xyxy[3]) / 2
    return POSITIONS[min(2, int(3 * cy / size))][min(2, int(3 * cx / size))]


def _contrasting(kind: Kind, ground: np.ndarray, rng: np.random.Generator, color: str | None) -> str | None:
    """A color of the kind (or the one asked for) far enough from the mean ground color, else None."""
    mean = ground.reshape(-1, 3).mean(0)
    options = [color] if color else [kind.colors[i] for i in rng.permutation(len(kind.colors))]
    for c in options:
        if np.linalg.norm(np.asarray(COLORS[c], np.float32) - mean) >= MIN_CONTRAST:
            return c
    return None


def place(tile: Tile, kind: Kind, rng: np.random.Generator, taken: list[tuple[int, int, int, int]],
          color: str | None = None, tries: int = 30) -> SceneObject | None:
    """One object of `kind` on its own surface, clear of `taken` boxes by 2 px, or None if none fits."""
    size, s = tile.size, tile.size / 112
    allowed = _ALLOWED[kind.name]
    ys, xs = np.nonzero(allowed[tile.surface])
    if not len(ys):
        return None
    for _ in range(tries):
        length = max(2, round(rng.integers(kind.length[0], kind.length[1] + 1) * s))
        width = max(2, round(rng.integers(kind.width[0], kind.width[1] + 1) * s))
        if kind.shape in ("plane", "tank"):  # square footprints: one size
            width = length
        orient = int(rng.integers(0, 4 if kind.shape == "plane" else 2))
        mask, shade = shape_mask(kind, length, width, orient)
        h, w = mask.shape
        k = rng.integers(len(ys))
        x1, y1 = int(xs[k]) - w // 2, int(ys[k]) - h // 2
        if not (0 <= x1 and 0 <= y1 and x1 + w <= size and y1 + h <= size):
            continue
        box = (x1, y1, x1 + w, y1 + h)
        if any(box[0] < b[2] + 2 and b[0] < box[2] + 2 and box[1] < b[3] + 2 and b[1] < box[3] + 2
               for b in taken):
            continue
        under = tile.surface[y1:y1 + h, x1:x1 + w][mask]
        if not allowed[under].all():
            continue
        picked = _contrasting(kind, tile.background[y1:y1 + h, x1:x1 + w][mask], rng, color)
        if picked is None:
            continue
        size_word = _size_word(kind, length * width / (s * s))
        surface = int(np.bincount(under, minlength=len(SURFACES)).argmax())
        return SceneObject(kind, picked, box, mask, shade, surface, size_word, position_name(box, size))
    return None


def _size_word(kind: Kind, area: float) -> str:
    """'small' / 'large' for the lower / upper third of the kind's size range, else ''."""
    lo, hi = kind.length[0] * kind.width[0], kind.length[1] * kind.width[1]
    t = (area - lo) / max(hi - lo, 1)
    return "small" if t < 1 / 3 else "large" if t > 2 / 3 else ""


def populate(tile: Tile, kinds: Sequence[str], rng: np.random.Generator) -> list[SceneObject]:
    """The scene's objects, placed in a fixed kind order with counts drawn from SCENE_OBJECTS."""
    objects: list[SceneObject] = []
    for name, lo, hi in SCENE_OBJECTS[tile.scene]:
        want = int(rng.integers(lo, hi + 1))
        if name not in kinds:
            continue
        for _ in range(want):
            obj = place(tile, KIND_BY_NAME[name], rng, [o.xyxy for o in objects])
            if obj is not None:
                objects.append(obj)
    return objects


# ----------------------------------------------------------------------------------------------- text
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
        if _contrasting(obj.kind, ground, rng, color):
            new = dataclasses.replace(obj, color=color)
            return Change(f"paint {expr} {color}", "recolor", [new if o is obj else o for o in tile.objects])
    return None


_EDITS = {"add": _add, "remove": _remove, "remove_one": _remove_one, "recolor": _recolor}


# ---------------------------------------------------------------------------------------------- world
def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG with fixed settings, so the same pixels always give the same bytes."""
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


class World:
    """A seeded synthetic planet. `tile(split, i)` and `example(split, i)` depend only on (seed, split, i)."""

    def __init__(self, seed: int = 0, tile_size: int = 112, num_object_kinds: int = len(KINDS)):
        if not isinstance(tile_size, int) or tile_size < 64:
            raise ValueError(f"tile_size: expected an integer number of pixels >= 64, got {tile_size!r}")
        if not 1 <= num_object_kinds <= len(KINDS):
            raise ValueError(f"num_object_kinds: expected 1..{len(KINDS)} (kinds in order: "
                             f"{', '.join(k.name for k in KINDS)}), got {num_object_kinds!r}")
        self.seed, self.tile_size = int(seed), tile_size
        self.kinds = tuple(k.name for k in KINDS[:num_object_kinds])
        self.terrain = Terrain(self.seed)

    def _rng(self, split: str, index: int, stream: int) -> np.random.Generator:
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
        return np.random.default_rng(stream_seed(self.seed, SPLITS.index(split), index, stream))

    def _centre(self, split: str, rng: np.random.Generator) -> tuple[float, float]:
        """A tile centre in the split's region, its footprint inside one cell. Tiles whose 5x5 probe shows
        one land cover only are thinned (open sea most), so coasts and mixed ground are common."""
        top = math.sin(math.radians(MAX_ABS_LAT))
        while True:
            lat = math.degrees(math.asin(rng.uniform(-top, top)))
            lon = rng.uniform(-180.0, 180.0)
            west, south, east, north = footprint(lat, lon)
            if region_split(lat, lon) != split or cell_of(south, west) != cell_of(north, east):
                continue
            la, lo = np.meshgrid(np.linspace(north, south, 5), np.linspace(west, east, 5), indexing="ij")
            codes, _ = self.terrain.classify(la, (lo + 180.0) % 360.0 - 180.0)
            if (codes != codes[0, 0]).any() or rng.random() < (0.15 if codes[0, 0] == WATER else 0.35):
                return lat, lon

    def tile(self, split: str, index: int) -> Tile:
        """The ground, scene and objects of tile `index` of `split`."""
        lat, lon = self._centre(split, self._rng(split, index, 0))
        land, height = self.terrain.tile_surface(lat, lon, self.tile_size)
        rng = self._rng(split, index, 1)
        scene = choose_scene(np.bincount(land.ravel(), minlength=len(LAND_COVERS)) / land.size, rng.random(),
                             self.kinds)
        surface = land.copy()
        if scene == "airport":
            draw_airfield(surface, rng)
        draw_roads(surface, rng, scene)
        tile = Tile(split, index, lat, lon, land, surface, render_ground(surface, height, rng), scene, [])
        tile.objects = populate(tile, self.kinds, rng)
        return tile

    def example(self, split: str, index: int) -> dict:
        """Everything one TFDS example holds (feature names as in data/README.md), images as PNG bytes."""
        tile = self.tile(split, index)
        text_rng, change = self._rng(split, index, 2), compose(tile, self.kinds, self._rng(split, index, 3))
        expressions = [(referring_expression(o, tile.objects), i) for i, o in enumerate(tile.objects)]
        expressions = [(e, i) for e, i in expressions if e is not None]
        return {
            "image": png_bytes(tile.render()), "image_id": tile.image_id,
            "image_size": np.array([tile.size, tile.size], np.int32), "label": tile.scene,
            "land_cover": LAND_COVERS[int(np.argmax(tile.fractions()))],
            "captions": captions(tile, text_rng),
            **_boxes(tile.objects, ""),
            "region_captions": [region_caption(o) for o in tile.objects],
            "expressions": [e for e, _ in expressions],
            "expression_box_index": np.array([i for _, i in expressions], np.int32),
            "qa": vqa(tile, self.kinds, text_rng),
            "lat": tile.lat, "lon": tile.lon, "bbox_lonlat": np.array(tile.bbox_lonlat, np.float64),
            "place_description": place_description(tile),
            "composed": {"change": change.text, "change_type": change.kind,
                         "target_image": png_bytes(tile.render(change.objects)),
                         **_boxes(change.objects, "target_"),
                         "target_caption": overview_caption(tile.fractions(), change.objects)},
        }


def _boxes(objects: Sequence[SceneObject], prefix: str) -> dict:
    """boxes / box_labels / box_colors features of a list of objects."""
    return {f"{prefix}boxes": np.array([o.xyxy for o in objects], np.float32).reshape(-1, 4),
            f"{prefix}box_labels": [o.kind.name for o in objects],
            f"{prefix}box_colors": [o.color for o in objects]}


# ------------------------------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> None:
    """Benchmark (tiles per minute on one core) and a preview grid of train tiles."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tile_size", type=int, default=112)
    parser.add_argument("--bench", type=int, default=0, help="time this many full examples")
    parser.add_argument("--preview", default="", help="write an 8x8 grid of train tiles to this PNG")
    args = parser.parse_args(argv)
    world = World(args.seed, args.tile_size)
    if args.bench:
        start = time.perf_counter()
        scenes = Counter(world.example("train", i)["label"] for i in range(args.bench))
        secs = time.perf_counter() - start
        print(f"{args.bench} examples of {args.tile_size}x{args.tile_size} (tile + target tile, 2 PNGs) in "
              f"{secs:.2f} s: {args.bench / secs * 60:.0f} examples/min on one core")
        print("scenes:", dict(sorted(scenes.items())))
    if args.preview:
        size = args.tile_size
        grid = np.zeros((8 * size, 8 * size, 3), np.uint8)
        for i in range(64):
            grid[i // 8 * size:(i // 8 + 1) * size, i % 8 * size:(i % 8 + 1) * size] = world.tile("train", i).render()
        Image.fromarray(grid).save(args.preview)
        print(f"preview written to {args.preview}")


if __name__ == "__main__":
    main()
