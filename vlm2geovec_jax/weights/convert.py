"""transformers Qwen2-VL directory <-> our model checkpoint, through the one table in ``hf.py``."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from vlm2geovec_jax import sharding as shard_lib
from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.encoder import Encoder
from vlm2geovec_jax.weights import checkpoint as ckpt_lib
from vlm2geovec_jax.weights.hf import (ALIGNMENT, CheckpointError, HFCheckpoint, Rule, empty_aligned,
                                       expected_hf_shape, iter_hf_tensors, mapping)

MODEL_CARD = """# {name}

A VLM2GeoVec-style embedding model (Qwen2-VL architecture) exported from vlm2geovec-jax.
It loads with `transformers.Qwen2VLForConditionalGeneration.from_pretrained(this_dir)`.

## The embedding in PyTorch

The embedding is the final-layer hidden state of the last non-padding token, L2-normalised
(no projection head; the language-model head is unused):

```python
import torch
from transformers import Qwen2VLForConditionalGeneration

model = Qwen2VLForConditionalGeneration.from_pretrained("{name}").eval()
# input_ids, attention_mask (and pixel_values, image_grid_thw for images) as vlm2geovec-jax builds them;
# with images also pass mm_token_type_ids = (input_ids == model.config.image_token_id).long()
with torch.no_grad():
    hidden = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
last = attention_mask.shape[1] - 1 - attention_mask.flip(-1).argmax(-1)   # left or right padding
emb = torch.nn.functional.normalize(hidden[torch.arange(len(last)), last].float(), dim=-1)
```

Prompts follow vlm2geovec-jax's documented layout (see its README): images as
`<|vision_start|><|image_pad|><|vision_end|>` blocks, then the instruction, text, boxes and coordinates.
"""


def _dtype_from_hf(hf_config: dict) -> str:
    name = str(hf_config.get("dtype") or hf_config.get("torch_dtype") or "float32").replace("torch.", "")
    return name if name in ("float32", "bfloat16") else "float32"


def _read_param(reader: HFCheckpoint, rule: Rule, shape: tuple[int, ...], dtype, index) -> np.ndarray:
    """The part ``index`` of one of our parameters, read from the transformers tensors it comes from.

    The result is a fresh 64-byte-aligned buffer, which jax on CPU adopts without a copy; a stacked parameter
    is filled layer by layer, so besides it only one layer's tensor is alive at a time.
    """
    hf_shape = expected_hf_shape(rule, shape)
    if not rule.stacked:
        tensor = rule.to_ours(reader.read(rule.hf, hf_shape))
        part = tensor[index]
        return _adoptable(part, dtype, whole=part.size == tensor.size)
    layers = range(shape[0])[index[0]] if index else range(shape[0])
    rest = index[1:] if index else ()
    out = None
    for j, i in enumerate(layers):
        layer = rule.to_ours(reader.read(rule.hf.format(i=i), hf_shape))[rest]
        if out is None:
            out = empty_aligned((len(layers), *layer.shape), dtype)
        _copy_tiled(out[j], layer)
    return out if out is not None else np.empty((0, *shape[1:]), dtype)


def _copy_tiled(dst: np.ndarray, src: np.ndarray, tile: int = 256) -> None:
    """``dst[...] = src``, in square tiles when ``src`` is a transposed 2-D view: an element-wise strided copy
    misses the cache on every read and takes about twice as long (most of an import's time)."""
    if src.ndim != 2 or src.flags.c_contiguous:
        dst[...] = src
        return
    for i in range(0, src.shape[0], tile):
        for j in range(0, src.shape[1], tile):
            dst[i:i + tile, j:j + tile] = src[i:i + tile, j:j + tile]


def _adoptable(value: np.ndarray, dtype, whole: bool) -> np.ndarray:
    """``value`` as ``dtype`` in an aligned C-contiguous buffer of its own: itself (no copy) when it already is
    one and spans the ``whole`` buffer it views, since jax would keep that buffer alive for a slice of it."""
    if whole and value.dtype == dtype and value.flags.c_contiguous and value.ctypes.data % ALIGNMENT == 0:
        return value
    out = empty_aligned(value.shape, dtype)
    _copy_tiled(out, value)
    return out


def load_hf_model(hf_dir: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None,
                  param_dtype: str | None = None, dtype: str | None = None,
                  progress: bool = True, **config_overrides) -> tuple[Encoder, dict]:
    """An Encoder from a transformers checkpoint directory, one tensor at a time.

    ``config_overrides`` set runtime fields of the model config (remat_policy, attention).

    With a mesh, each parameter is placed straight onto its sharding (``jax.make_array_from_callback`` asks
    only for the slices this process holds), so a 7B model never sits whole on one device.
    """
    reader = HFCheckpoint(hf_dir)
    param_dtype = param_dtype or _dtype_from_hf(reader.config)
    cfg = ModelConfig.from_hf(reader.config, param_dtype=param_dtype, dtype=dtype or param_dtype, **config_overrides)
    rules = mapping(cfg)
    _check_names(reader, cfg, rules)
    graphdef, state = nnx.split(ckpt_lib.abstract_model(cfg))
    flat = dict(nnx.to_flat_state(state))
    placements = (dict(nnx.to_flat_state(shard_lib.state_shardings(state, mesh))) if mesh is not None else None)
    single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    try:
        for rule in tqdm(rules, desc="import", disable=not progress):
            key = tuple(rule.ours.split("/"))
            var = flat[key]
            sharding = placements[key].get_value() if placements is not None else single
            value = jax.make_array_from_callback(
                var.shape, sharding, lambda index, r=rule, v=var: _read_param(reader, r, v.shape, v.dtype, index))
            var.set_value(value)
    finally:
        reader.close()
    return nnx.merge(graphdef, state), reader.config


def _check_names(reader: HFCheckpoint, cfg: ModelConfig, rules: list[Rule]) -> None:
    expected = set()
    for rule in rules:
        n = cfg.vision.depth if rule.ours.startswith("visual/") else cfg.text.num_layers
        expected |= {rule.hf.format(i=i) for i in range(n)} if rule.stacked else {rule.hf}
    missing = sorted(expected - reader.names())
    if missing:
        raise CheckpointError(f"{reader.path}: tensor(s) missing from the checkpoint: {missing[:5]}"
                              + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    unexpected = sorted(reader.names() - expected - ({"lm_head.weight"} if cfg.tie_word_embeddings else set()))
    if unexpected:
        raise CheckpointError(f"{reader.path}: tensor(s) this Qwen2-VL config does not have: {unexpected[:5]}"
                              + (f" and {len(unexpected) - 5} more" if len(unexpected) > 5 else ""))


def import_hf(hf_dir: str | os.PathLike, out: str | os.PathLike, *, mesh: jax.sharding.Mesh | None = None,
              param_dtype: str | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """``vlm2geovec import-hf``: a transformers Qwen2-VL directory into a model checkpoint that carries the
    directory's tokenizer and image processing too (checked before any weight is read)."""
    if (Path(hf_dir) / "config.json").is_file() and not (Path(hf_dir) / "tokenizer.json").is_file():
        raise CheckpointError(f"{hf_dir}: tokenizer.json missing; a model checkpoint carries its tokenizer, so "
                              "import a transformers directory that has one")
    model, hf_config = load_hf_model(hf_dir, mesh=mesh, param_dtype=param_dtype, progress=progress)
    return ckpt_lib.save_model(out, model, assets_from=hf_dir, hf_config=hf_config,
                               source=str(Path(hf_dir).absolute()), overwrite=overwrite)


def _host_params(model: Encoder) -> dict[str, np.ndarray]:
    return {"/".join(map(str, k)): np.asarray(jax.device_get(v.get_value()))
            for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def _shard_plan(cfg: ModelConfig, params: dict[str, np.ndarray], itemsize: int,
                max_shard_bytes: int) -> list[list[str]]:
    shards, current, size = [], [], 0
    for rule in mapping(cfg):
        count = params[rule.ours].shape[0] if rule.stacked else 1
        nbytes = params[rule.ours].size // count * itemsize
        for i in range(count):
            if current and size + nbytes > max_shard_bytes:
                shards.append(current)
                current, size = [], 0
            current.append(rule.hf.format(i=i))
            size += nbytes
    return shards + [current]


def export_hf(model: Encoder, out: str | os.PathLike, *, dtype: str | None = None,
              assets_from: str | os.PathLike | None = None, max_shard_bytes: int = 5 * 2 ** 30,
              overwrite: bool = False, progress: bool = True) -> Path:
    """A directory that ``Qwen2VLForConditionalGeneration.from_pretrained`` loads with no missing keys."""
    from safetensors.numpy import save_file

    out = Path(out).absolute()
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: already exists (pass --overwrite to replace it)")
    cfg = model.cfg
    dtype = dtype or cfg.param_dtype
    np_dtype = np.dtype(jnp.dtype(dtype))
    params = _host_params(model)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    plan = _shard_plan(cfg, params, np_dtype.itemsize, max_shard_bytes)
    names = [f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors" for i in range(len(plan))]
    if len(plan) == 1:
        names = ["model.safetensors"]
    shard_of = {t: names[i] for i, shard in enumerate(plan) for t in shard}
    pending: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    sizes = {n: len(shard) for n, shard in zip(names, plan)}
    total = 0
    for name, value in tqdm(iter_hf_tensors(cfg, params), desc="export", disable=not progress,
                            total=sum(len(s) for s in plan)):
        file = shard_of[name]
        pending[file][name] = value.astype(np_dtype)
        total += pending[file][name].nbytes
        if len(pending[file]) == sizes[file]:
            save_file(pending.pop(file), tmp / file, metadata={"format": "pt"})
    if len(names) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": shard_of}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))

    (tmp / "config.json").write_text(json.dumps(_hf_config(cfg, dtype, assets_from), indent=2))
    if assets_from is not None:
        for asset in ckpt_lib.ASSET_FILES:
            if (Path(assets_from) / asset).is_file():
                shutil.copy2(Path(assets_from) / asset, tmp / asset)
    (tmp / "README.md").write_text(MODEL_CARD.format(name=out.name))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _hf_config(cfg: ModelConfig, dtype: str, assets_from: str | os.PathLike | None) -> dict:
    """The original config.json when it describes this model (keeps token ids etc.), else a generated one."""
    generated = cfg.to_hf(torch_dtype=dtype)
    original = Path(assets_from) / ckpt_lib.HF_CONFIG_ASSET if assets_from is not None else None
    if original is not None and original.is_file():
        hf = json.loads(original.read_text())
        same = ModelConfig.from_hf(hf, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                                   remat_policy=cfg.remat_policy) == cfg
        if same:
            hf.pop("torch_dtype", None)
            return {**hf, "dtype": dtype}
    return generated


def export_checkpoint(ckpt: str | os.PathLike, out: str | os.PathLike, **kwargs) -> Path:
    """``vlm2geovec export-hf``: a model checkpoint into a transformers directory (tokenizer and processor
    files carried along)."""
    ckpt_lib.check_complete(ckpt)
    model = ckpt_lib.load_model(ckpt)
    return export_hf(model, out, assets_from=ckpt_lib.assets_dir(ckpt), **kwargs)
