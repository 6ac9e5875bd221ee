"""Model FLOPs per example, counted from the config, and the peak FLOP/s of known accelerators (for MFU).

MFU counts model FLOPs only: 3 x the forward pass (forward + a backward of twice its cost), whatever remat or
GradCache recompute on top (those are hardware FLOPs, not model FLOPs), as PaLM and MaxText define it.
"""
from __future__ import annotations

import jax

from vlm2geovec_jax.models.config import ModelConfig

# Dense bf16 peak per chip (vendor figures).
PEAK_BF16_FLOPS = (
    ("H200", 989.4e12), ("H100", 989.4e12), ("A100", 312e12), ("L4", 121e12),
    ("TPU v6", 918e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12), ("TPU v5", 459e12), ("TPU v4", 275e12),
)


def text_forward_flops(cfg: ModelConfig, tokens: int) -> float:
    """Matmul FLOPs of the decoder on one sequence of ``tokens`` tokens (attention scores included)."""
    t = cfg.text
    kv = t.num_kv_heads * t.head_dim
    per_token = 2 * (t.hidden_size * (2 * t.hidden_size + 2 * kv) + 3 * t.hidden_size * t.intermediate_size)
    attention = 2 * 2 * tokens * t.hidden_size  # q.k and p.v against every key (causality ignored)
    return t.num_layers * tokens * (per_token + attention)


def vision_forward_flops(cfg: ModelConfig, patches: int) -> float:
    """Matmul FLOPs of the vision tower and merger on one image of ``patches`` patches."""
    v = cfg.vision
    per_patch = 2 * (v.embed_dim * 4 * v.embed_dim + 2 * v.embed_dim * v.mlp_dim)
    attention = 2 * 2 * patches * v.embed_dim
    window = v.spatial_merge_size ** 2
    merger = 2 * (patches // window) * (v.embed_dim * window) * (v.embed_dim * window + cfg.hidden_size)
    return 2 * v.patch_dim * v.embed_dim * patches + v.depth * patches * (per_patch + attention) + merger


def text_attention_flops(cfg: ModelConfig, tokens: int) -> float:
    """The attention products (q.k and p.v) of the decoder alone: what remat recomputes under
    ``save_dots_no_batch`` (they are the dots with batch dimensions)."""
    return cfg.text.num_layers * tokens * 2 * 2 * tokens * cfg.text.hidden_size


def vision_attention_flops(cfg: ModelConfig, patches: int) -> float:
    return cfg.vision.depth * patches * 2 * 2 * patches * cfg.vision.embed_dim


def recompute_flops(cfg: ModelConfig, policy: str, text_tokens: int,
                    image_patches: list[int] | tuple[int, ...] = ()) -> float:
    """Forward FLOPs that the backward pass recomputes under a remat policy (models/layers.py), per example.

    none and save_dots keep every matmul output; save_dots_no_batch recomputes the attention products; full and
    save_attn_out recompute the whole layer (the backward of attention needs q, k and v, which neither keeps).
    Patch embedding and merger are outside the scanned layers and never recomputed."""
    if policy in ("none", "save_dots"):
        return 0.0
    if policy == "save_dots_no_batch":
        return text_attention_flops(cfg, text_tokens) + sum(vision_attention_flops(cfg, p) for p in image_patches)
    v = cfg.vision
    window = v.spatial_merge_size ** 2
    layers = sum(vision_forward_flops(cfg, p) - 2 * v.patch_dim * v.embed_dim * p
                 - 2 * (p // window) * (v.embed_dim * window) * (v.embed_dim * window + cfg.hidden_size)
                 for p in image_patches)
    return text_forward_flops(cfg, text_tokens) + layers


def train_flops(cfg: ModelConfig, text_tokens: int, image_patches: list[int] | tuple[int, ...] = ()) -> float:
    """Model FLOPs of one training example (forward + backward = 3 x forward)."""
    forward = text_forward_flops(cfg, text_tokens) + sum(vision_forward_flops(cfg, p) for p in image_patches)
    return 3.0 * forward


def peak_flops_per_device(device: jax.Device | None = None, override: float = 0.0) -> float | None:
    """bf16 peak of the device kind, ``override`` when set, None when unknown (CPU)."""
    if override > 0:
        return override
    kind = (device or jax.devices()[0]).device_kind
    for name, peak in PEAK_BF16_FLOPS:
        if name.lower() in kind.lower():
            return peak
    return None


def image_patches(cfg: ModelConfig, image_size: int) -> int:
    """Vision patches of one square ``image_size`` image (one temporal patch: a still image)."""
    side = image_size // cfg.vision.patch_size
    return side * side


def example_train_flops(cfg: ModelConfig, prompt_tokens: int, image_size: int, *, sides: int = 2) -> float:
    """Model FLOPs of one contrastive training example: ``sides`` sequences (query and positive), each of
    ``prompt_tokens`` text tokens and one image (its patches through the vision tower, its merged image tokens
    through the decoder)."""
    patches = image_patches(cfg, image_size)
    image_tokens = patches // cfg.vision.spatial_merge_size ** 2
    return sides * train_flops(cfg, prompt_tokens + image_tokens, [patches])
