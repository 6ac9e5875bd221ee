"""Qwen2-VL's vision tower: 2x14x14 patch embedding, 2-D RoPE blocks, and the 2x2 merger into the LM width.

Images arrive padded to a common patch count, ``pixel_values [I, P, 1176]``, so shapes are static; attention
is restricted to patches of the same frame of the same image (``frame_ids`` are the segment ids; 0 marks
padding), which equals transformers' per-image ``cu_seqlens`` attention.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vlm2geovec_jax.models import rope
from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.attention import attention
from vlm2geovec_jax.models.layers import Dense, LayerNorm, gelu_exact, quick_gelu, scan_layers, stacked
from vlm2geovec_jax.sharding import constrain


class VisionBlock(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        v = cfg.vision
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.num_heads, self.head_dim, self.theta = v.num_heads, v.head_dim, v.rope_theta
        self.attention = cfg.attention
        self.norm1 = LayerNorm(v.embed_dim, param_dtype=pdt)
        self.norm2 = LayerNorm(v.embed_dim, param_dtype=pdt)
        self.qkv = Dense(v.embed_dim, 3 * v.embed_dim, axes=("vision_embed", "vision_heads"), use_bias=True,
                         dtype=dt, param_dtype=pdt, rngs=rngs)
        self.proj = Dense(v.embed_dim, v.embed_dim, axes=("vision_heads", "vision_embed"), use_bias=True,
                          dtype=dt, param_dtype=pdt, rngs=rngs)
        self.fc1 = Dense(v.embed_dim, v.mlp_dim, axes=("vision_embed", "vision_mlp"), use_bias=True,
                         dtype=dt, param_dtype=pdt, rngs=rngs)
        self.fc2 = Dense(v.mlp_dim, v.embed_dim, axes=("vision_mlp", "vision_embed"), use_bias=True,
                         dtype=dt, param_dtype=pdt, rngs=rngs)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, frame_ids: jax.Array) -> jax.Array:
        images, patches, _ = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(images, patches, 3, self.num_heads, self.head_dim)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        # transformers rotates vision q/k in float32, then casts back.
        q = rope.apply_rotary(q.astype(jnp.float32), cos, sin).astype(x.dtype)
        k = rope.apply_rotary(k.astype(jnp.float32), cos, sin).astype(x.dtype)
        out = attention(q, k, v, frame_ids, causal=False, implementation=self.attention).reshape(images, patches, -1)
        x = x + self.proj(out)
        x = x + self.fc2(quick_gelu(self.fc1(self.norm2(x))))
        return constrain(x, ("act_images", "act_patches", "act_embed"))


class PatchMerger(nnx.Module):
    """LayerNorm, then each 2x2 window of patch features (contiguous in patch order) through a 2-layer MLP."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        v = cfg.vision
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.window = v.spatial_merge_size ** 2
        width = v.embed_dim * self.window
        self.ln_q = LayerNorm(v.embed_dim, param_dtype=pdt)
        self.fc1 = Dense(width, width, axes=("vision_embed", "vision_mlp"), use_bias=True, dtype=dt,
                         param_dtype=pdt, rngs=rngs)
        self.fc2 = Dense(width, cfg.hidden_size, axes=("vision_mlp", "embed"), use_bias=True, dtype=dt,
                         param_dtype=pdt, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        images, patches, dim = x.shape
        x = self.ln_q(x).reshape(images, patches // self.window, dim * self.window)
        return self.fc2(gelu_exact(self.fc1(x)))


class VisionTower(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        v = cfg.vision
        self.cfg = cfg
        self.patch_embed = Dense(v.patch_dim, v.embed_dim, axes=("patch", "vision_embed"), use_bias=False,
                                 dtype=jnp.dtype(cfg.dtype), param_dtype=jnp.dtype(cfg.param_dtype), rngs=rngs)
        self.blocks = stacked(lambda r: VisionBlock(cfg, rngs=r), v.depth, rngs)
        self.merger = PatchMerger(cfg, rngs=rngs)

    def __call__(self, pixel_values: jax.Array, rotary_ids: jax.Array, frame_ids: jax.Array) -> jax.Array:
        """pixel_values [I, P, patch_dim], rotary_ids [I, P, 2], frame_ids [I, P] -> [I, P / 4, hidden]."""
        v = self.cfg.vision
        x = self.patch_embed(pixel_values)
        x = constrain(x, ("act_images", "act_patches", "act_embed"))
        cos, sin = rope.vision_cos_sin(rotary_ids, v.head_dim, v.rope_theta)
        x = scan_layers(self.blocks, x, cos, sin, frame_ids, remat_policy=self.cfg.remat_policy)
        return self.merger(x)
