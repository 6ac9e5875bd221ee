"""SkyScript: one example per caption-CSV row, with the image's lon/lat box and its centre.

Captions come from the split CSVs (`filepath`, `title`, `title_multi_objects`, optional `similarity_*`);
`filepath` is `images<k>/<name>.jpg`; each `images<k>/` and `meta<k>/` folder is found wherever its archive
was unzipped under the manual dir. The coordinates are not in the CSV: each image
has `meta<k>/<name>.pickle`, a dict whose `box` is (west lon, south lat, east lon, north lat). The pickle is
read with an unpickler that only builds plain containers and numbers, so a file cannot run code. lat/lon is
the box centre; `bbox_lonlat` keeps the box. The split CSVs are picked by glob, one per split and config
(several matches are an error, so a train variant is never chosen silently).
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.errors import RecordError

CAPTION_COLUMNS = ("title", "title_multi_objects")
_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "int", "float", "bool",
                  "complex"}


class _PlainUnpickler(pickle.Unpickler):
    """Unpickler that refuses every class outside plain builtins (no code runs while reading metadata)."""

    def find_class(self, module: str, name: str):
        if module == "builtins" and name in _SAFE_BUILTINS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain containers and numbers")


def read_meta(path: Path, record: str) -> dict:
    """The per-image metadata dict, read without executing anything."""
    try:
        meta = _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise RecordError(f"unreadable metadata pickle ({e})", file=str(path), record=record) from e
    if not isinstance(meta, dict):
        raise RecordError(f"expected a dict, got {type(meta).__name__}", file=str(path), record=record)
    return meta


def box_centre(box, *, file: str, record: str) -> tuple[float, float, np.ndarray]:
    """(lat, lon, [W, S, E, N]) of a lon/lat box; a box across the antimeridian (W > E) is centred across it."""
    try:
        west, south, east, north = (float(v) for v in box)
    except (TypeError, ValueError) as e:
        raise RecordError(f"expected (west, south, east, north), got {box!r}", file=file, record=record,
                          field="box") from e
    lon = (west + east + (360.0 if west > east else 0.0)) / 2
    lon = lon - 360.0 if lon >= 180.0 else lon
    bbox = np.array([west, south, east, north], np.float64)
    lat, lon = tfds_common.check_geo((south + north) / 2, lon, file=file, record=record, field="box",
                                     bbox_lonlat=bbox.tolist())
    return lat, lon, bbox


@dataclasses.dataclass
class SkyScriptConfig(tfds.core.BuilderConfig):
    """csv_globs: {split: glob of its caption CSV}."""

    csv_globs: tuple[tuple[str, str], ...] = ()


def _config(name: str, train_glob: str, description: str) -> SkyScriptConfig:
    return SkyScriptConfig(name=name, description=description, csv_globs=(
        ("train", train_glob), ("validation", "SkyScript_val_*.csv"), ("test", "SkyScript_test_*.csv")))


class Builder(tfds_common.ManualBuilder):
    """SkyScript image-caption pairs (5.2M unfiltered; CLIP-filtered train subsets as configs)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        _config("top30pct", "SkyScript_train_top30pct_*.csv", "Train = the top 30% CLIP-filtered CSV."),
        _config("top50pct", "SkyScript_train_top50pct_*.csv", "Train = the top 50% CLIP-filtered CSV."),
        _config("unfiltered", "SkyScript_train_unfiltered_*.csv", "Train = the unfiltered 5M CSV."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put the SkyScript caption CSVs, images{2..7}/ and meta{2..7}/ in the manual dir, keeping one train "
        "CSV per config (and one val, one test CSV). See data/README.md.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "image_id": tfds.features.Text(),
            "image_size": tfds_common.SIZE_FEATURE,
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "lat": tfds_common.DEGREES_FEATURE,
            "lon": tfds_common.DEGREES_FEATURE,
            "bbox_lonlat": tfds.features.Tensor(shape=(4,), dtype=np.float64, encoding="bytes"),
        }))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        manual_dir = Path(dl_manager.manual_dir)
        return {split: self._generate_examples(manual_dir, self._csv(manual_dir, pattern))
                for split, pattern in self.builder_config.csv_globs}

    @staticmethod
    def _csv(manual_dir: Path, pattern: str) -> Path:
        root = tfds_common.find_root(manual_dir, pattern)
        matches = sorted(root.glob(pattern))
        if len(matches) != 1:
            found = ", ".join(p.name for p in matches) or "none"
            raise RecordError(f"expected exactly one CSV matching '{pattern}', found {found}", file=str(root))
        return matches[0]

    def _generate_examples(self, manual_dir: Path, csv_path: Path):
        folders = functools.cache(lambda name: tfds_common.find_dir(manual_dir, (name,)))
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "filepath" not in (reader.fieldnames or []):
                raise RecordError("missing column", file=str(csv_path), record="header", field="filepath")
            for row_no, row in enumerate(reader, start=2):
                yield row["filepath"], self._example(folders, csv_path, row_no, row)

    @staticmethod
    def _example(folders: Callable[[str], Path], csv_path: Path, row_no: int, row: dict) -> dict:
        """`folders` finds an archive's folder (images4, meta4) wherever it was unzipped."""
        rel = Path(row["filepath"])
        captions = [row[c].strip() for c in CAPTION_COLUMNS if (row.get(c) or "").strip()]
        if not captions:
            raise RecordError("no caption: expected a non-empty title", file=str(csv_path), record=f"row {row_no}",
                              field="title")
        meta_path = folders(rel.parent.name.replace("images", "meta", 1)) / f"{rel.stem}.pickle"
        meta = read_meta(meta_path, record=rel.stem)
        lat, lon, box = box_centre(tfds_common.require_key(meta, "box", file=str(meta_path), record=rel.stem),
                                   file=str(meta_path), record=rel.stem)
        img = tfds_common.encode_image(folders(rel.parent.name) / rel.name, record=row["filepath"])
        return {"image": img.data, "image_id": row["filepath"], "image_size": img.size, "captions": captions,
                "lat": lat, "lon": lon, "bbox_lonlat": box}
