"""Shared pieces of the TFDS builders under data/: a TF-free base builder, image encoding, strict checks.

The builders read the official files from the manual directory and write ArrayRecord. TensorFlow is not
installed, so images are encoded with PIL before they reach `tfds.features.Image`, and `tfds build` (whose
CLI module imports TensorFlow at start-up) is replaced by `python -m vlm2geovec_jax.inputs.tfds_common`.

    python -m vlm2geovec_jax.inputs.tfds_common data/<name> --manual_dir DIR --data_dir OUT [--config C]

takes the same flags as `tfds build` (it runs TFDS's own build command, only without the CLI module).
"""
from __future__ import annotations

import dataclasses
import inspect
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image as PILImage

from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.image import load_image
from vlm2geovec_jax.inputs.records import Geo

BOX_FEATURE = tfds.features.Tensor(shape=(None, 4), dtype=np.float32)
SIZE_FEATURE = tfds.features.Tensor(shape=(2,), dtype=np.int32)
# A plain float64 feature goes through tf.train.Example's float_list and comes back with float32 precision
# (~0.4 m at 50 deg lat); raw bytes keep all 64 bits.
DEGREES_FEATURE = tfds.features.Tensor(shape=(), dtype=np.float64, encoding="bytes")
_PASS_THROUGH = {"JPEG", "PNG"}


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base for builders that read manually downloaded files and write ArrayRecord.

    It fixes two things that stop a plain GeneratorBasedBuilder here: the default file format (TFRecord needs
    TF to be read back) and `code_path`, which TFDS resolves through the `importlib_resources` backport.
    """

    MANUAL_DOWNLOAD_INSTRUCTIONS = "Place the official files in the manual directory; see data/README.md."

    def __init__(self, *, file_format: str | None = None, **kwargs: Any):
        super().__init__(file_format=file_format or "array_record", **kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path | None:  # noqa: D102 - same meaning as in TFDS
        try:
            return epath.Path(inspect.getfile(cls))
        except (TypeError, OSError):
            return None


@dataclasses.dataclass(frozen=True)
class EncodedImage:
    """Image bytes ready for tfds.features.Image, with the ORIGINAL size that boxes refer to."""

    data: bytes
    width: int
    height: int

    @property
    def size(self) -> np.ndarray:
        """(w, h) as the `image_size` feature stores it."""
        return np.array([self.width, self.height], np.int32)


def encode_image(path: Path, *, record: str | int) -> EncodedImage:
    """Reads an image file: RGB JPEG/PNG bytes pass through unchanged; anything else (TIFF, 16-bit, grey,
    alpha) is converted by inputs/image.py's load_image, the model's own RGB rule, and stored as PNG."""
    try:
        raw = Path(path).read_bytes()
        with PILImage.open(io.BytesIO(raw)) as im:
            im.load()
            if im.format in _PASS_THROUGH and im.mode == "RGB":
                return EncodedImage(raw, *im.size)
        rgb = load_image(raw)
    except RecordError as e:
        raise RecordError(e.reason, file=str(path), record=record, field="image") from e
    except (OSError, ValueError, SyntaxError, PILImage.DecompressionBombError) as e:
        raise RecordError(f"unreadable image: expected a readable image file ({e})", file=str(path),
                          record=record, field="image") from e
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return EncodedImage(buf.getvalue(), rgb.width, rgb.height)


def check_boxes(xyxy: Sequence[Sequence[float]] | np.ndarray, width: int, height: int, *, file: str,
                record: str | int, field: str = "boxes") -> np.ndarray:
    """Returns float32 [n, 4] pixel xyxy; a box outside the image or with x2 <= x1 / y2 <= y1 is an error."""
    boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        if not (0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height):
            raise RecordError(f"box {i} = ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is not inside the {width}x{height} "
                              "image with x1 < x2 and y1 < y2", file=file, record=record, field=field)
    return boxes.astype(np.float32)


def check_geo(lat: float, lon: float, *, file: str, record: str | int, field: str | None = None,
              bbox_lonlat: Sequence[float] | None = None) -> tuple[float, float]:
    """(lat, lon) checked by records.Geo (WGS84 ranges, point inside bbox_lonlat); `field` names the source
    field the values came from (e.g. fMoW's raw_location), else Geo's own field name is kept."""
    try:
        geo = Geo(lat, lon, None if bbox_lonlat is None else tuple(bbox_lonlat))
    except RecordError as e:
        raise RecordError(e.reason, file=file, record=record, field=field or e.field) from e
    return geo.lat, geo.lon


def read_json(path: Path) -> Any:
    """json.load with the file named in the error."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise RecordError("file not found: expected it in the manual directory", file=str(path)) from e
    except json.JSONDecodeError as e:
        raise RecordError(f"not valid JSON ({e})", file=str(path)) from e


def require_key(obj: dict, key: str, *, file: str, record: str | int) -> Any:
    """obj[key], or a RecordError naming the missing field."""
    if not isinstance(obj, dict) or key not in obj:
        raise RecordError("missing field", file=file, record=record, field=key)
    return obj[key]


def _skipped(name: str) -> bool:
    """Folders an archive tool adds beside the data (macOS resource forks, hidden folders)."""
    return name.startswith(".") or name == "__MACOSX"


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not _skipped(p.name))
    except OSError:
        return []


def find_root(manual_dir: Path, marker: str, max_depth: int = 4) -> Path:
    """The shallowest folder under manual_dir (itself included) that holds `marker` (a name or a glob).

    Archives unpack with or without a wrapper folder (`RSICD/`, `fmow-rgb/`), and users unzip them in place
    or into a folder of their own, so the builders look for what the release contains, not for a path.
    Breadth-first, sorted, so the answer does not depend on the file system's listing order.
    """
    level = [Path(manual_dir)]
    for _ in range(max_depth + 1):
        for folder in level:
            if next(folder.glob(marker), None) is not None:
                return folder
        level = [sub for folder in level for sub in _subdirs(folder)]
    raise RecordError(f"expected '{marker}' in the manual directory or a folder under it (up to {max_depth} "
                      "levels); see data/README.md for the layout", file=str(manual_dir))


def find_dir(manual_dir: Path, names: Sequence[str], max_depth: int = 8) -> Path:
    """The shallowest folder under manual_dir named one of `names` (an image archive's own folder)."""
    level = [Path(manual_dir)]
    for _ in range(max_depth + 1):
        for name in names:
            hit = next((folder for folder in level if folder.name == name), None)
            if hit is not None:
                return hit
        level = [sub for folder in level for sub in _subdirs(folder)]
    raise RecordError(f"expected a folder named {' or '.join(repr(n) for n in names)} in the manual directory "
                      f"or under it (up to {max_depth} levels); see data/README.md for the layout",
                      file=str(manual_dir))


def builder_cls_from_path(path: str | Path) -> type[tfds.core.DatasetBuilder]:
    """The builder class in data/<name>/<name>_dataset_builder.py, imported without registering it globally."""
    path = Path(path).resolve()
    module_file = path if path.is_file() else path / f"{path.name}_dataset_builder.py"
    if not module_file.exists():
        raise FileNotFoundError(f"{module_file}: expected a TFDS builder module <name>_dataset_builder.py")
    package = module_file.parent
    sys.path.insert(0, str(package.parent))
    try:
        return tfds.core.community.builder_cls_from_module(f"{package.name}.{module_file.stem}")
    finally:
        sys.path.remove(str(package.parent))


def build(path: str | Path, *, manual_dir: str | Path, data_dir: str | Path, config: str | None = None,
          ) -> tfds.core.DatasetBuilder:
    """download_and_prepare one builder config from the manual directory into data_dir (ArrayRecord)."""
    cls = builder_cls_from_path(path)
    builder = cls(data_dir=str(data_dir), config=config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return builder


def main(argv: Sequence[str] | None = None) -> None:
    """`tfds build` without TensorFlow: TFDS's own build command, parsed and run without the CLI module."""
    from absl import app  # pylint: disable=g-import-not-at-top
    from tensorflow_datasets.scripts.cli import build as tfds_build  # pylint: disable=g-import-not-at-top
    from tensorflow_datasets.scripts.cli import cli_utils  # pylint: disable=g-import-not-at-top

    argv = list(sys.argv if argv is None else argv)
    if not any(a.startswith("--file_format") for a in argv):
        argv += ["--file_format", "array_record"]
    parse = cli_utils.make_flags_parser(tfds_build.Args, description="tfds build, without TensorFlow")
    app.run(lambda args: args.execute(), argv=argv, flags_parser=parse)


if __name__ == "__main__":
    main()
