"""The encoder's input contract, and its construction on the host from transformers-style arrays.

transformers feeds Qwen2-VL a flat ``pixel_values [sum of patches, 1176]`` plus ``image_grid_thw``, and finds
positions and image slots inside the forward pass with data-dependent shapes. Here all of that is resolved on
the host once: images are padded to a common patch count (a few buckets bound the number of compilations),
and every sequence position knows which merged image token, if any, it takes.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from flax import struct

from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.rope import mrope_position_ids, vision_rotary_ids


@struct.dataclass
class EncoderInputs:
    """One batch for ``Encoder``. Image arrays may have zero images (I = 0 is not allowed by XLA; use 1 pad)."""

    input_ids: np.ndarray          # [B, L] int32
    attention_mask: np.ndarray     # [B, L] int32, 1 = real token
    position_ids: np.ndarray       # [3, B, L] int32, M-RoPE (temporal, height, width)
    image_token_index: np.ndarray  # [B, L] int32, index into the flattened merged image tokens, -1 = text
    pixel_values: np.ndarray       # [I, P, patch_dim] float
    vision_rotary_ids: np.ndarray  # [I, P, 2] int32, (row, column) of each patch
    vision_frame_ids: np.ndarray   # [I, P] int32, frame number + 1 of each patch, 0 = padding

    @property
    def has_images(self) -> bool:
        return bool(np.any(np.asarray(self.vision_frame_ids) > 0))


def bucket(n: int, minimum: int = 16) -> int:
    """The smallest power of two >= max(n, minimum): few distinct shapes, at most 2x padding."""
    return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def prepare_inputs(cfg: ModelConfig, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                   pixel_values: np.ndarray | None = None, image_grid_thw: np.ndarray | None = None, *,
                   patches_per_image: int | None = None, num_images: int | None = None) -> EncoderInputs:
    """EncoderInputs from the arrays transformers' Qwen2VLModel takes (processor output).

    ``patches_per_image`` / ``num_images`` pad the image axis to fixed sizes (defaults: the largest image's
    patch count and the number of images); a fixed-resolution pipeline passes constants here.
    """
    input_ids = np.asarray(input_ids, np.int32)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
    mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, np.int32)
    if mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {mask.shape} != input_ids shape {input_ids.shape}")
    v = cfg.vision
    grids = np.zeros((0, 3), np.int64) if image_grid_thw is None else np.asarray(image_grid_thw).reshape(-1, 3)
    counts = [int(np.prod(g)) for g in grids]
    window = v.spatial_merge_size ** 2
    _check_image_tokens(cfg, input_ids, mask, counts, window)

    p_max = patches_per_image or max(counts + [window])
    n_img = max(num_images or len(counts), 1)
    if p_max < max(counts + [0]) or p_max % window or n_img < len(counts):
        raise ValueError(f"padding sizes ({n_img} images x {p_max} patches) cannot hold images of {counts} "
                         f"patches (patch counts must be multiples of {window})")
    pixels = np.zeros((n_img, p_max, v.patch_dim), np.float32)
    rotary = np.zeros((n_img, p_max, 2), np.int32)
    frames = np.zeros((n_img, p_max), np.int32)
    flat = np.zeros((0, v.patch_dim), np.float32) if pixel_values is None else np.asarray(pixel_values)
    if flat.shape[0] != sum(counts) or (counts and flat.shape[1] != v.patch_dim):
        raise ValueError(f"pixel_values shape {flat.shape} does not match image_grid_thw "
                         f"(expected [{sum(counts)}, {v.patch_dim}])")
    start = 0
    for i, (grid, n) in enumerate(zip(grids, counts)):
        pixels[i, :n] = flat[start:start + n]
        rotary[i, :n] = vision_rotary_ids(grid, v.spatial_merge_size)
        frames[i, :n] = np.repeat(np.arange(1, grid[0] + 1), grid[1] * grid[2])
        start += n

    # Merged image token j of image i sits at flat index i * (p_max / window) + j.
    slots = np.concatenate([i * (p_max // window) + np.arange(n // window) for i, n in enumerate(counts)]
                           or [np.zeros(0, np.int64)])
    token_index = np.full(input_ids.shape, -1, np.int32)
    token_index[(input_ids == cfg.image_token_id) & (mask > 0)] = slots
    positions = mrope_position_ids(input_ids, mask, grids if counts else None,
                                   image_token_id=cfg.image_token_id, merge_size=v.spatial_merge_size)
    return EncoderInputs(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                         image_token_index=token_index, pixel_values=pixels, vision_rotary_ids=rotary,
                         vision_frame_ids=frames)


def _check_image_tokens(cfg: ModelConfig, input_ids: np.ndarray, mask: np.ndarray, counts: Sequence[int],
                        window: int) -> None:
    n_tokens = int(np.sum((input_ids == cfg.image_token_id) & (mask > 0)))
    expected = sum(counts) // window
    if n_tokens != expected:
        raise ValueError(f"input_ids hold {n_tokens} image tokens (id {cfg.image_token_id}) but image_grid_thw "
                         f"describes {expected} merged image tokens")


def pad_batch_rows(inputs: EncoderInputs, batch: int, length: int) -> EncoderInputs:
    """Pads the text axes to [batch, length] with masked rows/positions (for fixed jit shapes)."""
    b, l = inputs.input_ids.shape
    if batch < b or length < l:
        raise ValueError(f"cannot pad a [{b}, {l}] batch down to [{batch}, {length}]")

    def pad(x, value, axis_offset=0):
        widths = [(0, 0)] * x.ndim
        widths[axis_offset] = (0, batch - b)
        widths[axis_offset + 1] = (0, length - l)
        return np.pad(x, widths, constant_values=value)

    return inputs.replace(input_ids=pad(inputs.input_ids, 0), attention_mask=pad(inputs.attention_mask, 0),
                          position_ids=pad(inputs.position_ids, 0, axis_offset=1),
                          image_token_index=pad(inputs.image_token_index, -1))
