"""LoRA (and DoRA) adapters on the encoder's Dense layers, chosen by regex, mergeable for export.

VLM2Vec trains LoRA on the language model's q, k, v, o, gate, up and down projections with the vision tower
frozen (paper.md, note 1); that is the default target regex here. An adapter adds ``scale * (x @ A) @ B``
to a Dense layer's output, with A Gaussian-initialised and B zero-initialised (the adapted model starts equal
to the base one) and scale = alpha / rank. DoRA (Liu et al. 2024) re-normalises each output column of the
adapted weight and multiplies it by a learned magnitude initialised to the base column norms.

Adapter weights are ``LoRAParam`` variables, so ``nnx.state(model, LoRAParam)`` is exactly the trainable set
of a LoRA run. Inside stacked (scanned) layers, adapters are stacked on the same leading 'layers' axis.
"""
from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
from flax import nnx

from vlm2geovec_jax.models.layers import Dense

DEFAULT_TARGETS = r"^language/layers/(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"


class LoRAParam(nnx.Param):
    """A trainable adapter weight (the base weights stay plain ``nnx.Param``)."""


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int = 8
    alpha: float = 64.0
    targets: str = DEFAULT_TARGETS   # regex over '/'-joined module paths, e.g. 'language/layers/q_proj'
    dora: bool = False
    init_std: float = 1.0            # A ~ N(0, init_std / rank), as PEFT's "gaussian" init

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"lora rank must be >= 1, got {self.rank}")
        re.compile(self.targets)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def _dense_modules(model: nnx.Module):
    for path, module in nnx.iter_graph(model):
        if isinstance(module, Dense):
            yield "/".join(map(str, path)), module


def apply_lora(model: nnx.Module, cfg: LoraConfig, *, rngs: nnx.Rngs) -> list[str]:
    """Attaches adapters to every Dense whose path matches ``cfg.targets``; returns the paths adapted."""
    pattern = re.compile(cfg.targets)
    adapted = []
    for path, dense in list(_dense_modules(model)):
        if not pattern.search(path):
            continue
        kernel = dense.kernel.get_value()
        *lead, d_in, d_out = kernel.shape
        axes = dense.kernel.get_metadata()["logical_axes"]
        lead_axes, in_axis, out_axis = axes[:-2], axes[-2], axes[-1]
        a = jax.random.normal(rngs.params(), (*lead, d_in, cfg.rank), jnp.float32) * (cfg.init_std / cfg.rank)
        dense.lora_a = LoRAParam(a, logical_axes=(*lead_axes, in_axis, "lora_rank"))
        dense.lora_b = LoRAParam(jnp.zeros((*lead, cfg.rank, d_out), jnp.float32),
                                 logical_axes=(*lead_axes, "lora_rank", out_axis))
        dense.lora_scale = cfg.scale
        if cfg.dora:
            norms = jnp.linalg.norm(kernel.astype(jnp.float32), axis=-2)
            dense.dora_magnitude = LoRAParam(norms, logical_axes=(*lead_axes, out_axis))
        adapted.append(path)
    if not adapted:
        raise ValueError(f"lora targets {cfg.targets!r} match no Dense layer of the model")
    return adapted


def merge_lora(model: nnx.Module) -> list[str]:
    """Folds every adapter into its base kernel (in place) and removes it; returns the paths merged."""
    merged = []
    for path, dense in list(_dense_modules(model)):
        if dense.lora_a is None:
            continue
        dense.kernel.set_value(dense.effective_kernel().astype(dense.kernel.get_value().dtype))
        dense.lora_a = dense.lora_b = dense.dora_magnitude = None
        dense.lora_scale = 0.0
        merged.append(path)
    return merged
