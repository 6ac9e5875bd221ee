"""The planet's terrain: seeded fractal noise fields over (lat, lon) and the rule that turns them into
land cover, per point or per tile pixel."""
from __future__ import annotations

import numpy as np

from vlm2geovec_jax.geoscenes.geography import footprint
from vlm2geovec_jax.geoscenes.noise import stream_seed, value_noise
from vlm2geovec_jax.geoscenes.vocabulary import DESERT, FARMLAND, FOREST, GRASSLAND, ICE, URBAN, WATER, WATER_SHARE

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
