"""GeoScenes world: one seeded planet whose tiles and TFDS examples depend only on (seed, split, index).

    python -m vlm2geovec_jax.geoscenes.world --bench 300 --preview grid.png

prints examples per minute (one core) and writes an 8x8 preview grid of train tiles.
"""
from __future__ import annotations

import argparse
import io
import math
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np
from PIL import Image

from vlm2geovec_jax.geoscenes.edits import compose
from vlm2geovec_jax.geoscenes.geography import cell_of, footprint, region_split
from vlm2geovec_jax.geoscenes.ground import choose_scene, draw_airfield, draw_roads, render_ground
from vlm2geovec_jax.geoscenes.noise import stream_seed
from vlm2geovec_jax.geoscenes.objects import populate
from vlm2geovec_jax.geoscenes.terrain import Terrain
from vlm2geovec_jax.geoscenes.text import (captions, overview_caption, place_description, referring_expression,
                                           region_caption, vqa)
from vlm2geovec_jax.geoscenes.tile import SceneObject, Tile
from vlm2geovec_jax.geoscenes.vocabulary import KINDS, LAND_COVERS, MAX_ABS_LAT, SPLITS, WATER


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
