"""Rotary position embeddings: Qwen2-VL's multimodal RoPE (text) and 2-D RoPE (vision).

Position ids are computed on the host with numpy, exactly as transformers' ``get_rope_index`` and
``get_vision_position_ids`` do, because they depend on data-dependent image layouts; keeping them out of the
jitted function keeps its shapes static. The cos/sin tables and the rotation run on device.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# ---- host side ---------------------------------------------------------------------------------------------


def vision_rotary_ids(grid_thw: Sequence[int], merge_size: int) -> np.ndarray:
    """(h, w) patch coordinates [t*h*w, 2] in the processor's patch order (merge windows contiguous)."""
    t, h, w = (int(x) for x in grid_thw)
    hpos, wpos = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    block = (h // merge_size, merge_size, w // merge_size, merge_size)
    hpos = hpos.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
    wpos = wpos.reshape(block).transpose(0, 2, 1, 3).reshape(-1)
    return np.tile(np.stack([hpos, wpos], axis=-1), (t, 1)).astype(np.int32)


def mrope_position_ids(input_ids: np.ndarray, attention_mask: np.ndarray, image_grid_thw: np.ndarray | None,
                       *, image_token_id: int, merge_size: int) -> np.ndarray:
    """3-D (temporal, height, width) positions [3, B, L] for a batch, as transformers' ``get_rope_index``.

    Text tokens advance all three components together; the tokens of one image take (t, row, column) offsets
    from the position where the image starts, and the text after it resumes at start + max(h, w) / merge.
    Padding positions get 0 (they are masked out). Images are consumed in batch order, row by row.
    """
    batch, length = input_ids.shape
    positions = np.zeros((3, batch, length), np.int32)
    grids = iter([] if image_grid_thw is None else np.asarray(image_grid_thw).reshape(-1, 3))
    for b in range(batch):
        valid = np.flatnonzero(attention_mask[b])
        is_image = input_ids[b, valid] == image_token_id
        pos = np.zeros((3, len(valid)), np.int32)
        i, current = 0, 0
        while i < len(valid):
            if not is_image[i]:
                pos[:, i] = current
                current += 1
                i += 1
                continue
            try:
                t, h, w = (int(x) for x in next(grids))
            except StopIteration:
                raise ValueError(f"row {b}: more image token runs than images in image_grid_thw") from None
            gh, gw = h // merge_size, w // merge_size
            n = t * gh * gw
            if not np.all(is_image[i:i + n]) or len(is_image[i:i + n]) != n:
                raise ValueError(f"row {b}: image of grid {(t, h, w)} needs {n} consecutive image tokens")
            tt, hh, ww = np.meshgrid(np.arange(t), np.arange(gh), np.arange(gw), indexing="ij")
            pos[:, i:i + n] = np.stack([tt.ravel(), hh.ravel(), ww.ravel()]) + current
            current += max(h, w) // merge_size
            i += n
        positions[:, b, valid] = pos
    if next(grids, None) is not None:
        raise ValueError("image_grid_thw has more images than the input_ids have image token runs")
    return positions


# ---- device side -------------------------------------------------------------------------------------------


def inv_frequencies(dim: int, theta: float) -> jax.Array:
    return 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))


def text_cos_sin(position_ids: jax.Array, head_dim: int, theta: float,
                 mrope_section: Sequence[int]) -> tuple[jax.Array, jax.Array]:
    """cos, sin [B, L, head_dim] in float32 from 3-D positions [3, B, L].

    The frequency axis is cut into ``mrope_section`` chunks; chunk i takes its angle from the temporal, height
    or width component (i mod 3), then the table is duplicated for rotate-half.
    """
    freqs = position_ids[..., None].astype(jnp.float32) * inv_frequencies(head_dim, theta)  # [3, B, L, hd/2]
    bounds = np.cumsum([0, *mrope_section])
    freqs = jnp.concatenate([freqs[i % 3, ..., bounds[i]:bounds[i + 1]] for i in range(len(mrope_section))], -1)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def vision_cos_sin(rotary_ids: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """cos, sin [..., head_dim] in float32 from patch coordinates [..., 2]: half the dims per axis (h, w)."""
    freqs = rotary_ids[..., None].astype(jnp.float32) * inv_frequencies(head_dim // 2, theta)  # [..., 2, hd/4]
    freqs = freqs.reshape(*freqs.shape[:-2], -1)  # [h freqs, w freqs]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def rotate_half(x: jax.Array) -> jax.Array:
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, L, heads, head_dim] rotated by cos/sin [B, L, head_dim]."""
    cos, sin = cos[..., None, :], sin[..., None, :]
    return x * cos + rotate_half(x) * sin
