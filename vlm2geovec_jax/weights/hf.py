"""Weight interchange with transformers' Qwen2-VL: ONE mapping table, used in both directions.

Each row of the table names a parameter of ours, the transformers tensor it corresponds to (``{i}`` for a
per-layer tensor of a stacked parameter) and a pair of hooks that convert the value each way (MaxText's
checkpoint-conversion pattern). Import reads one tensor at a time with plain ``pread`` calls at the offsets
the safetensors header gives, into a fresh buffer: not through a memory map, whose pages would all stay in the
process's RSS (a second copy of the checkpoint). So peak memory stays near the size of the model; export
writes the layout ``save_pretrained`` writes. Only safetensors is read or written: pickle checkpoints can run
code on load.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import jax
import ml_dtypes
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


# safetensors dtype names -> numpy (bfloat16 and float8 through ml_dtypes, as jax uses them).
SAFETENSORS_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U64": np.dtype(np.uint64), "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
ALIGNMENT = 64  # jax on CPU adopts a numpy buffer aligned like this without copying it


def empty_aligned(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous array at a 64-byte boundary, so ``jax.device_put`` on CPU need not copy it."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes lie in a safetensors file (offset from the start of the file)."""
    file: Path
    stored: str                # the name in the file (before ``canonical_name``)
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def read_safetensors_header(file: Path) -> list[TensorEntry]:
    """The tensors of one safetensors file: an 8-byte little-endian header length, a JSON header
    ``{name: {dtype, shape, data_offsets}}``, then the data. Every entry is checked against the file's size, so
    a truncated or malformed file fails here, naming the file and the tensor."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{file}: {size} bytes, too short for a safetensors file (8-byte header length)")
        header_len = int.from_bytes(prefix, "little")
        if header_len > size - 8:
            raise CheckpointError(f"{file}: header length {header_len} exceeds the file's {size} bytes "
                                  "(truncated, or not a safetensors file)")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{file}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: header is a JSON {type(header).__name__}, expected an object")
    data_start, data_size = 8 + header_len, size - 8 - header_len
    entries = [_entry(file, name, meta, data_start) for name, meta in header.items() if name != "__metadata__"]
    for entry in sorted(entries, key=lambda e: e.offset):
        end = entry.offset - data_start + entry.nbytes
        if end > data_size:
            raise CheckpointError(f"{file}: tensor {entry.stored!r} needs bytes {entry.offset - data_start}..{end} "
                                  f"of the data, but the file holds only {data_size} bytes after its header "
                                  "(truncated?)")
    return entries


def _entry(file: Path, name: str, meta, data_start: int) -> TensorEntry:
    """One header entry, validated: a known dtype, a shape of non-negative ints, offsets spanning its bytes."""
    where = f"{file}: tensor {name!r}"
    if not isinstance(meta, dict) or not {"dtype", "shape", "data_offsets"} <= meta.keys():
        raise CheckpointError(f"{where}: header entry {meta!r}, expected {{dtype, shape, data_offsets}}")
    dtype = SAFETENSORS_DTYPES.get(meta["dtype"])
    if dtype is None:
        raise CheckpointError(f"{where}: dtype {meta['dtype']!r}, expected one of {sorted(SAFETENSORS_DTYPES)}")
    shape, offsets = meta["shape"], meta["data_offsets"]
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise CheckpointError(f"{where}: shape {shape!r}, expected a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where}: data_offsets {offsets!r}, expected [begin, end] with 0 <= begin <= end")
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise CheckpointError(f"{where}: data_offsets {offsets} span {offsets[1] - offsets[0]} bytes, but "
                              f"{meta['dtype']} {tuple(shape)} needs {nbytes}")
    return TensorEntry(file, name, dtype, tuple(shape), data_start + offsets[0], nbytes)


class HFCheckpoint:
    """A local transformers Qwen2-VL directory, read one tensor at a time into fresh buffers."""

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
        self._fds: dict[Path, int] = {}

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

    def _build_index(self) -> dict[str, TensorEntry]:
        index = {}
        for file in self.files:
            if not file.is_file():
                raise CheckpointError(f"{file}: listed in model.safetensors.index.json but missing")
            for entry in read_safetensors_header(file):
                index[canonical_name(entry.stored)] = entry
        return index

    def names(self) -> set[str]:
        return set(self._index)

    def _entry(self, name: str) -> TensorEntry:
        if name not in self._index:
            raise CheckpointError(f"{self.path}: tensor {name!r} is missing from "
                                  f"{', '.join(f.name for f in self.files)}")
        return self._index[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def read(self, name: str, expected_shape: tuple[int, ...]) -> np.ndarray:
        """One tensor as a fresh, 64-byte-aligned numpy array, after checking its shape against the config."""
        entry = self._entry(name)
        if entry.shape != tuple(expected_shape):
            raise CheckpointError(f"{entry.file.name}: tensor {name!r} has shape {entry.shape}, but config.json "
                                  f"implies {tuple(expected_shape)}")
        out = empty_aligned(entry.shape, entry.dtype)
        self._pread_into(entry, memoryview(out.reshape(-1).view(np.uint8)))
        return out

    def _pread_into(self, entry: TensorEntry, buf: memoryview) -> None:
        """``pread`` until ``buf`` is full (one call returns at most ~2 GiB on Linux)."""
        if entry.file not in self._fds:
            self._fds[entry.file] = os.open(entry.file, os.O_RDONLY)
        fd, done = self._fds[entry.file], 0
        while done < entry.nbytes:
            n = os.preadv(fd, [buf[done:]], entry.offset + done)
            if n == 0:
                raise CheckpointError(f"{entry.file}: tensor {entry.stored!r}: the file ended after {done} of its "
                                      f"{entry.nbytes} bytes (truncated while reading?)")
            done += n

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


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
