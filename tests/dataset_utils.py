"""Helpers for the dataset builder tests: build a builder from a manual dir and read every split back."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from vlm2geovec_jax.inputs import tfds_common

DATA = Path(__file__).resolve().parents[1] / "data"


def build(name: str, config: str | None, manual_dir: Path, data_dir: Path) -> dict[str, list[dict]]:
    """Builds one config and returns every split as a list of decoded examples (text as str)."""
    builder = tfds_common.build(DATA / name, manual_dir=manual_dir, data_dir=data_dir, config=config)
    return {split: [_decode(ex) for ex in builder.as_data_source(split=split)] for split in builder.info.splits}


def _decode(value):
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, np.ndarray) and value.dtype == object:
        return [_decode(v) for v in value.tolist()]
    return value


def fixture(name: str, config: str | None = None) -> Path:
    return DATA / name / "dummy_data" / (config or "")


def copy_fixture(name: str, config: str | None, tmp_path: Path) -> Path:
    dst = tmp_path / "manual"
    shutil.copytree(fixture(name, config), dst, ignore=shutil.ignore_patterns("*.py"))
    return dst


def builder_module(name: str):
    """The imported module of data/<name>, for its pure helper functions."""
    return sys.modules[tfds_common.builder_cls_from_path(DATA / name).__module__]


def by_id(examples: list[dict], key: str = "image_id") -> dict[str, dict]:
    return {ex[key]: ex for ex in examples}
