"""GeoScenes: a synthetic planet of aerial tiles with everything every RSMEB task kind needs, from a seed.

Nothing is downloaded and there is no manual directory: `vlm2geovec_jax.geoscenes` renders
each tile from (seed, split, index), so the same config always writes byte-identical ArrayRecord shards.
One example holds the tile and its scene class, captions, object boxes with region captions, referring
expressions (each unique in its tile), VQA pairs, the tile centre's lat/lon with a place description, and a
composed-retrieval edit with its target tile rendered over the same ground. Train, validation and test
tiles come from disjoint 15-degree cells of the planet (see the generator's package docstring).

    python -m vlm2geovec_jax.inputs.tfds_common data/geoscenes --data_dir OUT --config tiny

Any size: pass `config=GeoScenesConfig(name=..., seed=..., tile_size=..., num_object_kinds=...,
num_train=..., num_validation=..., num_test=...)` to the Builder.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from vlm2geovec_jax.geoscenes.vocabulary import KINDS, SCENES
from vlm2geovec_jax.geoscenes.world import World
from vlm2geovec_jax.inputs import tfds_common

_TEXTS = tfds.features.Sequence(tfds.features.Text())


@dataclasses.dataclass
class GeoScenesConfig(tfds.core.BuilderConfig):
    """World seed, tile size in pixels, the first `num_object_kinds` of KINDS, tiles per split."""

    seed: int = 0
    tile_size: int = 112
    num_object_kinds: int = len(KINDS)
    num_train: int = 0
    num_validation: int = 0
    num_test: int = 0

    def split_sizes(self) -> dict[str, int]:
        """Tiles per split; splits of size 0 are not written."""
        sizes = {"train": self.num_train, "validation": self.num_validation, "test": self.num_test}
        return {split: n for split, n in sizes.items() if n > 0}


def _config(name: str, tile_size: int, train: int, validation: int, test: int, description: str) -> GeoScenesConfig:
    return GeoScenesConfig(name=name, description=description, tile_size=tile_size, num_train=train,
                           num_validation=validation, num_test=test)


class Builder(tfds_common.ManualBuilder):
    """GeoScenes: synthetic aerial tiles (scene class, captions, boxes, expressions, VQA, geo, composed edits)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = None  # generated, nothing to download
    BUILDER_CONFIGS = [
        _config("tiny", 112, 24, 8, 8, "Seed 0, 112 px, 24/8/8 tiles: builds in seconds (tests, demo)."),
        _config("small", 112, 2_000, 250, 500, "Seed 0, 112 px, 2,000/250/500 tiles."),
        _config("base", 112, 20_000, 2_000, 5_000, "Seed 0, 112 px, 20,000/2,000/5,000 tiles."),
        _config("base_224", 224, 20_000, 2_000, 5_000, "Seed 0, 224 px, 20,000/2,000/5,000 tiles."),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.tile_size
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3)),
            "image_id": tfds.features.Text(),
            "image_size": tfds_common.SIZE_FEATURE,
            "label": tfds.features.ClassLabel(names=SCENES),
            "land_cover": tfds.features.Text(),
            "captions": _TEXTS,
            "boxes": tfds_common.BOX_FEATURE,
            "box_labels": _TEXTS,
            "box_colors": _TEXTS,
            "region_captions": _TEXTS,
            "expressions": _TEXTS,
            "expression_box_index": tfds.features.Tensor(shape=(None,), dtype=np.int32),
            "qa": tfds.features.Sequence({
                "question": tfds.features.Text(),
                "answer": tfds.features.Text(),
                "question_type": tfds.features.Text(),
            }),
            "lat": tfds_common.DEGREES_FEATURE,
            "lon": tfds_common.DEGREES_FEATURE,
            "bbox_lonlat": tfds.features.Tensor(shape=(4,), dtype=np.float64, encoding="bytes"),
            "place_description": tfds.features.Text(),
            "composed": tfds.features.FeaturesDict({
                "change": tfds.features.Text(),
                "change_type": tfds.features.Text(),
                "target_image": tfds.features.Image(shape=(size, size, 3)),
                "target_boxes": tfds_common.BOX_FEATURE,
                "target_box_labels": _TEXTS,
                "target_box_colors": _TEXTS,
                "target_caption": tfds.features.Text(),
            }),
        }), supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        config = self.builder_config
        world = World(config.seed, config.tile_size, config.num_object_kinds)
        return {split: self._generate_examples(world, split, n) for split, n in config.split_sizes().items()}

    def _generate_examples(self, world: World, split: str, num_tiles: int):
        for index in range(num_tiles):
            example = world.example(split, index)
            yield example["image_id"], example
