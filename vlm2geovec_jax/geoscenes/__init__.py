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

Modules, each importing only those above it:

- vocabulary: land covers, surfaces, scenes, splits, object kinds, colors, phrases and number words.
- noise: integer hashing (stream_seed) and wrapping value noise.
- geography: split cells, tile footprint, climate belt.
- tile: the Tile and SceneObject dataclasses, and rendering a tile to RGB.
- terrain: the noise fields and the land-cover rule (Terrain).
- ground: scene class, roads, airfields and the textured background.
- shapes: object masks and shading; objects: placement and population.
- text: captions, region captions, referring expressions, VQA, place description.
- edits: composed-retrieval changes (compose).
- world: World (tiles and TFDS examples from (seed, split, index)) and the command line:

    python -m vlm2geovec_jax.geoscenes.world --bench 300 --preview grid.png

prints tiles per minute (one core) and writes a preview grid.
"""
