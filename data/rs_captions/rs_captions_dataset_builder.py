"""RSICD, RSITMD, UCM-Captions and Sydney-Captions: one image with its (usually 5) captions per example.

All four ship a Karpathy-style JSON, `{"images": [{"filename", "split", "sentences": [{"raw", ...}]}]}`, plus
an image folder. File names are read from the JSON (UCM's are bare numbers), the split is the JSON's `split`
field ("val" becomes TFDS's "validation"), and captions keep their order and duplicates (RSICD repeats many).
RSITMD adds per-image `keywords`, kept as a feature of that config only.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import tensorflow_datasets as tfds

from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.errors import RecordError

SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test", "restval": "restval"}


@dataclasses.dataclass
class CaptionConfig(tfds.core.BuilderConfig):
    """json_name: the caption file; image_dirs: the names its image folder has (next to the JSON, or
    anywhere under the manual dir when the images come in an archive of their own)."""

    json_name: str = ""
    image_dirs: tuple[str, ...] = ()
    has_keywords: bool = False


class Builder(tfds_common.ManualBuilder):
    """Karpathy-JSON caption sets; one example per image."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        CaptionConfig(name="rsicd", description="RSICD: 10,921 images, 5 captions each, 224x224 JPG.",
                      json_name="dataset_rsicd.json", image_dirs=("RSICD_images", "images")),
        CaptionConfig(name="rsitmd", description="RSITMD: 4,743 images, 5 captions and keywords each.",
                      json_name="dataset_RSITMD.json", image_dirs=("images",),
                      has_keywords=True),
        CaptionConfig(name="ucm_captions", description="UCM-Captions: 2,100 UCM TIFs, 5 captions each.",
                      json_name="dataset.json", image_dirs=("imgs", "images")),
        CaptionConfig(name="sydney_captions", description="Sydney-Captions: 613 images, 5 captions each.",
                      json_name="dataset.json", image_dirs=("imgs", "images")),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Unzip the caption JSON (dataset_rsicd.json / dataset_RSITMD.json / dataset.json) and its images "
        "(RSICD_images/, images/, imgs/) in the manual dir, as they unzip. See data/README.md.")

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "image_id": tfds.features.Text(),
            "captions": tfds.features.Sequence(tfds.features.Text()),
            "image_size": tfds_common.SIZE_FEATURE,
        }
        if self.builder_config.has_keywords:
            features["keywords"] = tfds.features.Sequence(tfds.features.Text())
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        cfg = self.builder_config
        manual_dir = Path(dl_manager.manual_dir)
        root = tfds_common.find_root(manual_dir, cfg.json_name)
        json_path = root / cfg.json_name
        images = tfds_common.require_key(tfds_common.read_json(json_path), "images", file=str(json_path),
                                         record="top level")
        image_dir = next((root / d for d in cfg.image_dirs if (root / d).is_dir()), None)
        image_dir = image_dir or tfds_common.find_dir(manual_dir, cfg.image_dirs)
        by_split: dict[str, list[tuple[int, dict]]] = {}
        for i, entry in enumerate(images):
            split = tfds_common.require_key(entry, "split", file=str(json_path), record=i)
            if split not in SPLIT_NAMES:
                raise RecordError(f"split '{split}' is not one of {sorted(SPLIT_NAMES)}", file=str(json_path),
                                  record=i, field="split")
            by_split.setdefault(SPLIT_NAMES[split], []).append((i, entry))
        return {s: self._generate_examples(json_path, image_dir, items) for s, items in by_split.items()}

    def _generate_examples(self, json_path: Path, image_dir: Path, items: list[tuple[int, dict]]):
        for i, entry in items:
            name = tfds_common.require_key(entry, "filename", file=str(json_path), record=i)
            captions = self._captions(entry, json_path, name)
            img = tfds_common.encode_image(image_dir / name, record=name)
            example = {"image": img.data, "image_id": name, "captions": captions, "image_size": img.size}
            if self.builder_config.has_keywords:
                example["keywords"] = [str(k) for k in entry.get("keywords", [])]
            yield name, example

    @staticmethod
    def _captions(entry: dict, json_path: Path, name: str) -> list[str]:
        sentences = tfds_common.require_key(entry, "sentences", file=str(json_path), record=name)
        if not sentences:
            raise RecordError("no captions: expected at least one sentence", file=str(json_path), record=name,
                              field="sentences")
        out = []
        for j, sent in enumerate(sentences):
            raw = sent.get("raw") if isinstance(sent, dict) else None
            if not isinstance(raw, str) or not raw.strip():
                raise RecordError("expected a non-empty string", file=str(json_path), record=name,
                                  field=f"sentences[{j}].raw")
            out.append(raw.strip())
        return out
