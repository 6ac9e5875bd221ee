"""Class-per-folder scene classification sets: one builder, one config per dataset.

These sets ship as `<class>/<image>` folders (under a wrapper such as `PatternNet/images/`, or grouped in
category folders as in RSI-CB) with no annotation file and no official split, so the label is the image's
parent folder name, wherever the archive put it, and the split is made here, deterministically: within each
class the files are ordered by the SHA-256 of their path below the class folders' parent and the first 60%
go to train, the next 20% to validation, the rest to test (floor of n*0.6 and n*0.8). The split does not depend on the file system's listing order and keeps
each class's proportions, like the 60/20/20 splits torchgeo and google-research use for UCM and RESISC45.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import tensorflow_datasets as tfds

from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.errors import RecordError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
SPLIT_FRACTIONS = (("train", 0.6), ("validation", 0.8), ("test", 1.0))


def split_of(index_in_class: int, class_size: int) -> str:
    """Split of the file at `index_in_class` in its class's hash order (see the module docstring)."""
    for split, upper in SPLIT_FRACTIONS:
        if index_in_class < int(class_size * upper):
            return split
    return "test"


def hash_order(names: list[str]) -> list[str]:
    """Deterministic, listing-independent order of file names."""
    return sorted(names, key=lambda n: (hashlib.sha256(n.encode()).hexdigest(), n))


def files_by_class(manual_dir: Path) -> dict[str, list[Path]]:
    """Images by the name of the folder that holds them, anywhere under manual_dir (not in it directly).

    Hidden files and folders and macOS's __MACOSX copies (`._airport_1.jpg`, which end in .jpg but are not
    images) are what zip tools add beside the data; they are skipped.
    """
    by_class: dict[str, list[Path]] = {}
    for folder, dirs, files in os.walk(manual_dir):
        dirs[:] = sorted(d for d in dirs if not (d.startswith(".") or d == "__MACOSX"))
        if Path(folder) == Path(manual_dir):
            continue
        images = sorted(f for f in files if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES)
        if images:
            by_class.setdefault(Path(folder).name, []).extend(Path(folder) / f for f in images)
    if not by_class:
        raise RecordError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in class folders <class>/<image> under "
                          "the manual directory", file=str(manual_dir))
    return by_class


def class_root(by_class: dict[str, list[Path]]) -> Path:
    """The folder the class folders are in (their common parent); image ids are relative to it."""
    parents = {f.parent.parent for files in by_class.values() for f in files}
    return Path(os.path.commonpath(sorted(parents)))


class Builder(tfds_common.ManualBuilder):
    """PatternNet, AID, WHU-RS19, SIRI-WHU, Optimal-31 and RSI-CB as (image, label) with a made split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="patternnet", description="PatternNet: 38 classes x 800 JPG, 256x256."),
        tfds.core.BuilderConfig(name="aid", description="AID: 30 classes, 10,000 JPG, 600x600."),
        tfds.core.BuilderConfig(name="whu_rs19", description="WHU-RS19: 19 classes, ~1,005 JPG, 600x600."),
        tfds.core.BuilderConfig(name="siri_whu", description="SIRI-WHU: 12 classes x 200 TIF, 200x200."),
        tfds.core.BuilderConfig(name="optimal31", description="Optimal-31: 31 classes x 60 JPG, 256x256."),
        tfds.core.BuilderConfig(name="rsicb256", description="RSI-CB256: 35 leaf classes in 6 category "
                                                             "folders, 256x256."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Unzip the dataset's archive in the manual dir, as it unzips: the class folders may sit at any depth "
        "(PatternNet/images/<class>/, AID/<class>/, RSI-CB256/<category>/<class>/). See data/README.md.")

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
        by_class = files_by_class(Path(dl_manager.manual_dir))
        root = class_root(by_class)
        self.info.features["label"].names = sorted(by_class)
        splits: dict[str, list[tuple[str, Path]]] = {s: [] for s, _ in SPLIT_FRACTIONS}
        for label, files in sorted(by_class.items()):
            ordered = hash_order([f.relative_to(root).as_posix() for f in files])
            for i, rel in enumerate(ordered):
                splits[split_of(i, len(ordered))].append((label, root / rel))
        # A set whose classes are all tiny has no validation (or train) image: that split is not written.
        return {s: self._generate_examples(root, items) for s, items in splits.items() if items}

    def _generate_examples(self, root: Path, items: list[tuple[str, Path]]):
        for label, path in items:
            rel = path.relative_to(root).as_posix()
            img = tfds_common.encode_image(path, record=rel)
            yield rel, {"image": img.data, "image_id": rel, "label": label, "image_size": img.size}
