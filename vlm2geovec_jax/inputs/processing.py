"""How a model turns an Item into arrays: image processing, prompt format and bucket policy, as one record.

A model embeds correctly only with the processing it was trained with: a different max_pixels changes the
number of image tokens, a different box format or templates version changes every character of a region
prompt. So the processing is part of the model artifact (``CKPT/processing.json``, next to the weights and
the tokenizer); training writes the settings its data pipeline used, import-hf the transformers directory's
``preprocessor_config.json``, and every consumer (embed, eval, the demo, studies) reads it back through the
Embedder instead of choosing its own.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vlm2geovec_jax.inputs.image import ImageConfig
from vlm2geovec_jax.inputs.serialize import box_format as check_box_format
from vlm2geovec_jax.inputs.templates import TEMPLATES, TEMPLATES_VERSION
from vlm2geovec_jax.inputs.tokenizer import DEFAULT_BUCKETS
from vlm2geovec_jax.models.model_inputs import bucket

FILE = "processing.json"
FORMAT = "vlm2geovec-processing/1"
PADDING_SIDES = ("right", "left")


@dataclasses.dataclass(frozen=True)
class Processing:
    """Everything between an Item and the encoder's arrays that must match training.

    ``length_buckets``: prompts are padded to the smallest bucket that holds them (a bounded number of
    compiled shapes); a longer prompt (training skips those) is padded to four buckets per octave above the
    largest, so evaluation never drops an item for its length. ``box_format`` and
    ``templates_version`` fix the prompt text (inputs/serialize.py, inputs/templates.py).
    """

    image: ImageConfig = ImageConfig()
    box_format: str = "qwen"
    templates_version: str = TEMPLATES_VERSION
    length_buckets: tuple[int, ...] = DEFAULT_BUCKETS
    padding_side: str = "right"

    def __post_init__(self):
        check_box_format(self.box_format)
        if self.templates_version not in TEMPLATES:
            raise ValueError(f"processing: unknown templates_version {self.templates_version!r}; expected one of "
                             f"{', '.join(TEMPLATES)}")
        buckets = tuple(int(b) for b in self.length_buckets)
        if not buckets or any(b < 1 for b in buckets) or list(buckets) != sorted(set(buckets)):
            raise ValueError(f"processing: length_buckets must be increasing positive lengths, got {buckets}")
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"processing: padding_side must be one of {PADDING_SIDES}, got {self.padding_side!r}")
        object.__setattr__(self, "length_buckets", buckets)

    def padded_length(self, length: int) -> int:
        """The length a prompt of ``length`` tokens is padded to."""
        fits = [b for b in self.length_buckets if b >= length]
        return fits[0] if fits else bucket(length, self.length_buckets[-1], steps_per_octave=4)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["length_buckets"] = list(self.length_buckets)
        d["image"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["image"].items()}
        return {"format": FORMAT, **d}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "processing") -> "Processing":
        if d.get("format") != FORMAT:
            raise ValueError(f"{where}: format {d.get('format')!r}, expected {FORMAT!r}")
        fields = {k: v for k, v in d.items() if k != "format"}
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}")
        image = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(fields.pop("image", {})).items()}
        return cls(image=ImageConfig(**image), **fields)

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, directory: str | os.PathLike) -> "Processing":
        path = Path(directory) / FILE
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), where=str(path))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: processing settings not found") from None
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{path}: cannot parse processing settings ({err})") from None

    @classmethod
    def from_hf_dir(cls, directory: str | os.PathLike) -> "Processing":
        """A transformers directory's processing: its preprocessor_config.json (else the processor defaults)."""
        file = Path(directory) / "preprocessor_config.json"
        return cls(image=ImageConfig.from_preprocessor_config(file) if file.is_file() else ImageConfig())

    def preprocessor_config(self) -> dict[str, Any]:
        """transformers' Qwen2VLImageProcessor settings for these images (carried into exports).

        A fixed H x W resize has no equivalent there: it is written as min_pixels = max_pixels = H * W, which
        gives the same patches for square images (the remote-sensing tiles it is meant for).
        """
        img = self.image
        pixels = (img.fixed_size[0] * img.fixed_size[1]) if img.fixed_size else None
        return {"image_processor_type": "Qwen2VLImageProcessor", "do_resize": True, "do_rescale": True,
                "do_normalize": True, "do_convert_rgb": True, "resample": 3, "rescale_factor": 1 / 255,
                "min_pixels": pixels or img.min_pixels, "max_pixels": pixels or img.max_pixels,
                "patch_size": img.patch_size, "temporal_patch_size": img.temporal_patch_size,
                "merge_size": img.merge_size, "image_mean": list(img.image_mean), "image_std": list(img.image_std)}


def from_pipeline_config(p: Mapping[str, Any], *, box_format: str = "qwen") -> Processing:
    """The processing a training run's ``data.pipeline`` settings describe (train/data.py builds from this)."""
    image = {k: (tuple(p[k]) if k == "fixed_size" and p[k] else p[k])
             for k in ("fixed_size", "min_pixels", "max_pixels") if k in p}
    buckets: Sequence[int] = tuple(p.get("length_buckets", DEFAULT_BUCKETS))
    return Processing(image=ImageConfig(**image), box_format=box_format, length_buckets=tuple(buckets))
