"""Where a tile lies: its 15-degree split cell (which decides its split), its footprint, its climate
belt."""
from __future__ import annotations

import math

from vlm2geovec_jax.geoscenes.vocabulary import CELL_DEG, TILE_DEG


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
