"""LoRA/DoRA adapters out to PEFT's format, so PyTorch users load base + adapter with ``PeftModel``.

The adapter directory is what ``PeftModel.save_pretrained`` writes: ``adapter_config.json`` and
``adapter_model.safetensors``, tensors named by the module paths of transformers'
``Qwen2VLForConditionalGeneration`` (``base_model.model.model.language_model.layers.0.self_attn.q_proj
.lora_A.weight``). Module names come from the one conversion table (weights/hf.py). Our adapter on a Dense
kernel [in, out] is ``x @ A @ B * alpha / r`` with A [in, r] and B [r, out]; PEFT's Linear weight is
[out, in] with lora_A [r, in] and lora_B [out, r], and the same alpha / r scale, so A and B transpose.
DoRA magnitudes (one per output feature in both) keep their values.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from vlm2geovec_jax.models.encoder import Encoder
from vlm2geovec_jax.models.layers import Dense
from vlm2geovec_jax.models.lora import LoraConfig
from vlm2geovec_jax.weights.hf import mapping

PEFT_PREFIX = "base_model.model."
LIVE_PREFIXES = (("model.", "model.language_model."), ("visual.", "model.visual."))  # hub name -> module path


def module_name(hf_tensor: str) -> str:
    """A hub tensor name's module path in transformers 5 (``model.layers.0.mlp.up_proj``)."""
    stem = hf_tensor.removesuffix(".weight")
    for hub, live in LIVE_PREFIXES:
        if stem.startswith(hub):
            return live + stem[len(hub):]
    return stem


def adapter_tensors(model: Encoder) -> tuple[dict[str, np.ndarray], list[str], bool]:
    """(PEFT tensors, adapted module names, whether DoRA) of a model carrying unmerged adapters."""
    kernel_rule = {r.ours: r for r in mapping(model.cfg)}
    tensors, modules, dora = {}, [], False
    for path, dense in nnx.iter_graph(model):
        if not isinstance(dense, Dense) or dense.lora_a is None:
            continue
        rule = kernel_rule["/".join(map(str, path)) + "/kernel"]
        a, b = _host(dense.lora_a[...]), _host(dense.lora_b[...])
        mag = None if dense.dora_magnitude is None else _host(dense.dora_magnitude[...])
        dora = dora or mag is not None
        layers = range(a.shape[0]) if rule.stacked else [None]
        for i in layers:
            name = module_name(rule.hf.format(i=i))
            pick = (lambda x: x[i]) if i is not None else (lambda x: x)
            tensors[f"{PEFT_PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(pick(a).T)
            tensors[f"{PEFT_PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(pick(b).T)
            if mag is not None:
                tensors[f"{PEFT_PREFIX}{name}.lora_magnitude_vector"] = np.ascontiguousarray(pick(mag))
            modules.append(name)
    if not modules:
        raise ValueError("export adapter: the model carries no LoRA adapter (was it merged already?)")
    return tensors, modules, dora


def _host(x: jax.Array) -> np.ndarray:
    """The whole array on this host (adapters are small; with several processes every one must call this)."""
    if not x.is_fully_addressable:
        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x), np.float32)


def adapter_config(lora: LoraConfig, modules: list[str], *, base: str, dora: bool) -> dict:
    """PEFT's LoraConfig fields; target_modules lists the exact module names adapted."""
    return {"peft_type": "LORA", "task_type": None, "base_model_name_or_path": base, "r": lora.rank,
            "lora_alpha": lora.alpha, "lora_dropout": 0.0, "bias": "none", "target_modules": sorted(modules),
            "use_dora": dora, "use_rslora": False, "fan_in_fan_out": False, "init_lora_weights": True,
            "modules_to_save": None, "inference_mode": True, "revision": None}


def export_adapter(model: Encoder, lora: LoraConfig, out: str | os.PathLike, *, base: str) -> Path:
    """Writes the PEFT adapter directory (staged, then renamed into place); ``base`` names the base model.

    Every process calls this (the adapters are gathered); process 0 writes.
    """
    from safetensors.numpy import save_file  # noqa: PLC0415

    tensors, modules, dora = adapter_tensors(model)
    out = Path(out).absolute()
    if jax.process_index() != 0:
        return out
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(tensors, tmp / "adapter_model.safetensors", metadata={"format": "pt"})
    config = adapter_config(lora, modules, base=base, dora=dora)
    (tmp / "adapter_config.json").write_text(json.dumps(config, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
