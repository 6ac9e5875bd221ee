"""Integer hashing and value noise: pure functions of their inputs, so a tile depends only on
(seed, split, index) and the planet wraps at the antimeridian."""
from __future__ import annotations

import numpy as np

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
