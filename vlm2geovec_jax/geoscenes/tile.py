"""The Tile (ground of one tile and its objects) and the SceneObject: what ground, objects, text and
edits all read, and what renders to RGB."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from vlm2geovec_jax.geoscenes.geography import footprint
from vlm2geovec_jax.geoscenes.vocabulary import COLORS, LAND_COVERS, Kind


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
