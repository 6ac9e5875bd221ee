"""Class-per-folder scene classification sets: one builder, one config per dataset.

These sets ship as `<root>/<class>/<image>` with no annotation file and no official split, so the label is
the image's parent folder name and the split is made here, deterministically: within each class the files
are ordered by the SHA-256 of their name and the first 60% go to train, the next 20% to validation, the rest
to test (floor of n*0.6 and n*0.8). The split does not depend on the file system's listing order and keeps
each class's proportions, like the 60/20/20 splits torchgeo and google-research use for UCM and RESISC45.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import tensorflow_datasets as tfds

from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.errors import RecordError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
SPLIT_FRACTIONS = (("train", 0.6), ("validation", 0.8), ("test", 1.0))


@dataclasses.dataclass
class SceneConfig(tfds.core.BuilderConfig):
    """roots: folders under the manual dir that may hold the class folders, tried in order."""

    roots: tuple[str, ...] = ()


def _config(name: str, description: str, *roots: str) -> SceneConfig:
    return SceneConfig(name=name, description=description, roots=roots)


def split_of(index_in_class: int, class_size: int) -> str:
    """Split of the file at `index_in_class` in its class's hash order (see the module docstring)."""
    for split, upper in SPLIT_FRACTIONS:
        if index_in_class < int(class_size * upper):
            return split
    return "test"


def hash_order(names: list[str]) -> list[str]:
    """Deterministic, listing-independent order of file names."""
    return sorted(names, key=lambda n: (hashlib.sha256(n.encode()).hexdigest(), n))


class Builder(tfds_common.ManualBuilder):
    """PatternNet, AID, WHU-RS19, SIRI-WHU, Optimal-31 and RSI-CB as (image, label) with a made split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        _config("patternnet", "PatternNet: 38 classes x 800 JPG, 256x256.", "PatternNet/images", "images",
                "PatternNet"),
        _config("aid", "AID: 30 classes, 10,000 JPG, 600x600.", "AID"),
        _config("whu_rs19", "WHU-RS19: 19 classes, ~1,005 JPG, 600x600.", "WHU-RS19", "RSDataset"),
        _config("siri_whu", "SIRI-WHU: 12 classes x 200 TIF, 200x200.", "SIRI-WHU/12class_tif", "SIRI-WHU"),
        _config("optimal31", "Optimal-31: 31 classes x 60 JPG, 256x256.", "Optimal-31/Images", "Images"),
        _config("rsicb256", "RSI-CB256: 35 leaf classes in 6 category folders, 256x256.", "RSI-CB256"),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Extract the dataset so that the manual dir holds <root>/<class>/<image> (PatternNet: PatternNet/images, "
        "AID: AID, ...; the manual dir itself may be the root). See data/README.md.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "image_id": tfds.features.Text(),
                "label": tfds.features.ClassLabel(),
                "image_size": tfds_common.SIZE_FEATURE,
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = self._root(Path(dl_manager.manual_dir))
        by_class = self._files_by_class(root)
        self.info.features["label"].names = sorted(by_class)
        splits: dict[str, list[tuple[str, Path]]] = {s: [] for s, _ in SPLIT_FRACTIONS}
        for label, files in sorted(by_class.items()):
            ordered = hash_order([f.relative_to(root).as_posix() for f in files])
            for i, rel in enumerate(ordered):
                splits[split_of(i, len(ordered))].append((label, root / rel))
        return {s: self._generate_examples(root, items) for s, items in splits.items()}

    def _root(self, manual_dir: Path) -> Path:
        for sub in self.builder_config.roots:
            if (manual_dir / sub).is_dir():
                return manual_dir / sub
        return manual_dir

    @staticmethod
    def _files_by_class(root: Path) -> dict[str, list[Path]]:
        by_class: dict[str, list[Path]] = {}
        for f in sorted(root.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and f.parent != root:
                by_class.setdefault(f.parent.name, []).append(f)
        if not by_class:
            raise RecordError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class folders <root>/<class>/",
                              file=str(root))
        return by_class

    def _generate_examples(self, root: Path, items: list[tuple[str, Path]]):
        for label, path in items:
            rel = path.relative_to(root).as_posix()
            img = tfds_common.encode_image(path, record=rel)
            yield rel, {"image": img.data, "image_id": rel, "label": label, "image_size": img.size}
