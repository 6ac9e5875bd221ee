"""Weight interchange with transformers' Qwen2-VL: ONE mapping table, used in both directions.

Each row of the table names a parameter of ours, the transformers tensor it corresponds to (``{i}`` for a
per-layer tensor of a stacked parameter) and a pair of hooks that convert the value each way (MaxText's
checkpoint-conversion pattern). Import reads one tensor at a time (lazily, with safetensors' ``safe_open``),
so peak memory stays near the size of the model; export writes the layout ``save_pretrained`` writes.
Only safetensors is read or written: pickle checkpoints can run code on load.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import numpy as np

from vlm2geovec_jax.models.config import ModelConfig

Hook = Callable[[np.ndarray], np.ndarray]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class CheckpointError(ValueError):
    """A checkpoint directory that cannot be converted; the message names the file and tensor at fault."""


@dataclasses.dataclass(frozen=True)
class Rule:
    ours: str                 # '/'-joined path in the Encoder's nnx state
    hf: str                   # transformers tensor name; '{i}' marks the layer of a stacked parameter
    to_ours: Hook
    to_hf: Hook
    stacked: bool = False


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _transpose(x: np.ndarray) -> np.ndarray:
    return x.T


def mapping(cfg: ModelConfig) -> list[Rule]:
    """The conversion table for a config (the patch-embedding hook needs the Conv3d kernel shape)."""
    v = cfg.vision
    conv_shape = (v.embed_dim, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)

    def linear(ours: str, hf: str, bias: bool, stacked: bool) -> list[Rule]:
        rules = [Rule(f"{ours}/kernel", f"{hf}.weight", _transpose, _transpose, stacked)]
        if bias:
            rules.append(Rule(f"{ours}/bias", f"{hf}.bias", _identity, _identity, stacked))
        return rules

    def norm(ours: str, hf: str, bias: bool, stacked: bool) -> list[Rule]:
        rules = [Rule(f"{ours}/weight", f"{hf}.weight", _identity, _identity, stacked)]
        if bias:
            rules.append(Rule(f"{ours}/bias", f"{hf}.bias", _identity, _identity, stacked))
        return rules

    text_layer, vision_block = "language/layers", "visual/blocks"
    rules = [
        Rule("language/embed_tokens", "model.embed_tokens.weight", _identity, _identity),
        *norm("language/norm", "model.norm", False, False),
        *norm(f"{text_layer}/input_layernorm", "model.layers.{i}.input_layernorm", False, True),
        *norm(f"{text_layer}/post_attention_layernorm", "model.layers.{i}.post_attention_layernorm", False, True),
        *linear(f"{text_layer}/q_proj", "model.layers.{i}.self_attn.q_proj", True, True),
        *linear(f"{text_layer}/k_proj", "model.layers.{i}.self_attn.k_proj", True, True),
        *linear(f"{text_layer}/v_proj", "model.layers.{i}.self_attn.v_proj", True, True),
        *linear(f"{text_layer}/o_proj", "model.layers.{i}.self_attn.o_proj", False, True),
        *linear(f"{text_layer}/gate_proj", "model.layers.{i}.mlp.gate_proj", False, True),
        *linear(f"{text_layer}/up_proj", "model.layers.{i}.mlp.up_proj", False, True),
        *linear(f"{text_layer}/down_proj", "model.layers.{i}.mlp.down_proj", False, True),
        Rule("visual/patch_embed/kernel", "visual.patch_embed.proj.weight",
             to_ours=lambda w: w.reshape(w.shape[0], -1).T, to_hf=lambda k: k.T.reshape(conv_shape)),
        *norm(f"{vision_block}/norm1", "visual.blocks.{i}.norm1", True, True),
        *norm(f"{vision_block}/norm2", "visual.blocks.{i}.norm2", True, True),
        *linear(f"{vision_block}/qkv", "visual.blocks.{i}.attn.qkv", True, True),
        *linear(f"{vision_block}/proj", "visual.blocks.{i}.attn.proj", True, True),
        *linear(f"{vision_block}/fc1", "visual.blocks.{i}.mlp.fc1", True, True),
        *linear(f"{vision_block}/fc2", "visual.blocks.{i}.mlp.fc2", True, True),
        *norm("visual/merger/ln_q", "visual.merger.ln_q", True, False),
        *linear("visual/merger/fc1", "visual.merger.mlp.0", True, False),
        *linear("visual/merger/fc2", "visual.merger.mlp.2", True, False),
    ]
    if not cfg.tie_word_embeddings:
        rules.append(Rule("lm_head", "lm_head.weight", _identity, _identity))
    return rules


def num_layers(cfg: ModelConfig, rule: Rule) -> int:
    return cfg.vision.depth if rule.ours.startswith("visual/") else cfg.text.num_layers


def canonical_name(name: str) -> str:
    """transformers 5 module paths (model.language_model.*, model.visual.*) -> the hub layout names."""
    for prefix, replacement in (("model.language_model.", "model."), ("model.visual.", "visual.")):
        if name.startswith(prefix):
            return replacement + name[len(prefix):]
    return name


# ---- reading a transformers checkpoint ---------------------------------------------------------------------


class HFCheckpoint:
    """A local transformers Qwen2-VL directory, read lazily one tensor at a time."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"{self.path}: not a directory")
        config_file = self.path / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"{config_file}: missing; a transformers checkpoint directory needs its "
                                  "config.json (save it with model.config.save_pretrained(dir))")
        try:
            self.config = json.loads(config_file.read_text())
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{config_file}: not valid JSON ({e})") from None
        model_type = self.config.get("model_type")
        if model_type != "qwen2_vl":
            raise CheckpointError(f"{config_file}: model_type {model_type!r} (architectures "
                                  f"{self.config.get('architectures')}) is not Qwen2-VL; only 'qwen2_vl' "
                                  "checkpoints can be imported")
        self.files = self._weight_files()
        self._index = self._build_index()
        self._handles: dict[Path, object] = {}

    def _weight_files(self) -> list[Path]:
        index = self.path / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            return sorted({self.path / f for f in weight_map.values()})
        files = sorted(self.path.glob("*.safetensors"))
        if files:
            return files
        pickles = sorted(p.name for p in self.path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"{self.path}: only pickle checkpoint files {pickles}; they are refused because loading a pickle "
                "can execute arbitrary code. Convert them to safetensors first, e.g.\n"
                "  python -c \"from transformers import Qwen2VLForConditionalGeneration as M; "
                f"M.from_pretrained('{self.path}').save_pretrained('OUT_DIR', safe_serialization=True)\"")
        raise CheckpointError(f"{self.path}: no model.safetensors or model.safetensors.index.json")

    def _build_index(self) -> dict[str, Path]:
        from safetensors import safe_open
        index = {}
        for file in self.files:
            if not file.is_file():
                raise CheckpointError(f"{file}: listed in model.safetensors.index.json but missing")
            with safe_open(file, framework="np") as f:
                for name in f.keys():
                    index[canonical_name(name)] = (file, name)
        return index

    def names(self) -> set[str]:
        return set(self._index)

    def _slice(self, name: str):
        if name not in self._index:
            raise CheckpointError(f"{self.path}: tensor {name!r} is missing from "
                                  f"{', '.join(f.name for f in self.files)}")
        file, stored = self._index[name]
        if file not in self._handles:
            from safetensors import safe_open
            self._handles[file] = safe_open(file, framework="np")
        return self._handles[file].get_slice(stored), file

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._slice(name)[0].get_shape())

    def read(self, name: str, expected_shape: tuple[int, ...]) -> np.ndarray:
        """One tensor as numpy, after checking its shape against what the config implies."""
        sl, file = self._slice(name)
        shape = tuple(sl.get_shape())
        if shape != tuple(expected_shape):
            raise CheckpointError(f"{file.name}: tensor {name!r} has shape {shape}, but config.json implies "
                                  f"{tuple(expected_shape)}")
        return sl[:]

    def close(self) -> None:
        self._handles.clear()


def expected_hf_shape(rule: Rule, our_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The transformers shape of one (per-layer) tensor, derived from our parameter's shape."""
    per_layer = our_shape[1:] if rule.stacked else our_shape
    return tuple(jax.eval_shape(rule.to_hf, jax.ShapeDtypeStruct(per_layer, np.float32)).shape)


def iter_hf_tensors(cfg: ModelConfig, params: dict[str, np.ndarray]) -> Iterator[tuple[str, np.ndarray]]:
    """(transformers name, value) for every tensor of an export, in table order, from our numpy params."""
    for rule in mapping(cfg):
        value = params[rule.ours]
        if rule.stacked:
            for i in range(value.shape[0]):
                yield rule.hf.format(i=i), np.ascontiguousarray(rule.to_hf(value[i]))
        else:
            yield rule.hf, np.ascontiguousarray(rule.to_hf(value))
