"""The encoder's input contract, and its construction on the host from transformers-style arrays.

transformers feeds Qwen2-VL a flat ``pixel_values [sum of patches, 1176]`` plus ``image_grid_thw``, and finds
positions and image slots inside the forward pass with data-dependent shapes. Here all of that is resolved on
the host once: images are padded to a common patch count (a few buckets bound the number of compilations),
each row gets a fixed number of image slots, and every sequence position knows which merged image token of
its row, if any, it takes.
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
    """One batch for ``Encoder``; EVERY array has the batch as its leading axis.

    Images are laid out per row (``M`` image slots of ``P`` patches each), so a batch can be sharded, chunked
    (GradCache) or sliced along its first axis without renumbering anything. A text-only batch carries one
    empty slot of ``merge**2`` patches per row (frame id 0), which costs next to nothing.
    """

    input_ids: np.ndarray          # [B, L] int32
    attention_mask: np.ndarray     # [B, L] int32, 1 = real token
    position_ids: np.ndarray       # [B, 3, L] int32, M-RoPE (temporal, height, width)
    image_token_index: np.ndarray  # [B, L] int32, index into the row's M * P / merge**2 merged tokens, -1 = text
    pixel_values: np.ndarray       # [B, M, P, patch_dim] float
    vision_rotary_ids: np.ndarray  # [B, M, P, 2] int32, (row, column) of each patch
    vision_frame_ids: np.ndarray   # [B, M, P] int32, frame number + 1 of each patch, 0 = padding

    @property
    def has_images(self) -> bool:
        return bool(np.any(np.asarray(self.vision_frame_ids) > 0))


def bucket(n: int, minimum: int = 16, *, steps_per_octave: int = 1) -> int:
    """The smallest bucket >= max(n, minimum): powers of two, each octave cut into ``steps_per_octave`` equal
    steps (1: 64, 128, 256, ...; 4: 64, 80, 96, 112, 128, 160, ...). Few distinct shapes, and at most
    1 + 1/steps_per_octave times the padding-free work."""
    n = max(n, minimum, 1)
    step = max(1, (1 << math.ceil(math.log2(n))) // (2 * steps_per_octave))  # the octave (power/2, power]
    return -(-n // step) * step


def prepare_inputs(cfg: ModelConfig, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
                   pixel_values: np.ndarray | None = None, image_grid_thw: np.ndarray | None = None, *,
                   patches_per_image: int | None = None, images_per_row: int | None = None,
                   num_images: int | None = None) -> EncoderInputs:
    """EncoderInputs from the arrays transformers' Qwen2VLModel takes (processor output).

    Images belong to rows in order, as in transformers. ``patches_per_image`` / ``images_per_row`` pad the
    image axes to fixed sizes (defaults: the largest image's patch count, the most images in one row); a
    fixed-resolution pipeline passes constants here. ``num_images`` is accepted for compatibility and unused.
    """
    del num_images
    input_ids = np.asarray(input_ids, np.int32)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {input_ids.shape}")
    mask = np.ones_like(input_ids) if attention_mask is None else np.asarray(attention_mask, np.int32)
    if mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {mask.shape} != input_ids shape {input_ids.shape}")
    v = cfg.vision
    window = v.spatial_merge_size ** 2
    grids = np.zeros((0, 3), np.int64) if image_grid_thw is None else np.asarray(image_grid_thw).reshape(-1, 3)
    counts = [int(np.prod(g)) for g in grids]
    flat = np.zeros((0, v.patch_dim), np.float32) if pixel_values is None else np.asarray(pixel_values)
    if flat.shape[0] != sum(counts) or (counts and flat.shape[1] != v.patch_dim):
        raise ValueError(f"pixel_values shape {flat.shape} does not match image_grid_thw "
                         f"(expected [{sum(counts)}, {v.patch_dim}])")
    rows = _images_of_rows(cfg, input_ids, mask, counts, window)

    p_max = patches_per_image or max(counts + [window])
    m_max = images_per_row or max([len(r) for r in rows] + [1])
    if p_max < max(counts + [0]) or p_max % window or m_max < max(len(r) for r in rows):
        raise ValueError(f"padding sizes ({m_max} images per row x {p_max} patches) cannot hold the images "
                         f"(patch counts {counts}, must be multiples of {window})")
    batch = input_ids.shape[0]
    pixels = np.zeros((batch, m_max, p_max, v.patch_dim), np.float32)
    rotary = np.zeros((batch, m_max, p_max, 2), np.int32)
    frames = np.zeros((batch, m_max, p_max), np.int32)
    token_index = np.full(input_ids.shape, -1, np.int32)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    for b, images in enumerate(rows):
        slots = []
        for m, i in enumerate(images):
            n = counts[i]
            pixels[b, m, :n] = flat[starts[i]:starts[i] + n]
            rotary[b, m, :n] = vision_rotary_ids(grids[i], v.spatial_merge_size)
            frames[b, m, :n] = np.repeat(np.arange(1, grids[i][0] + 1), grids[i][1] * grids[i][2])
            slots.append(m * (p_max // window) + np.arange(n // window))
        if slots:
            token_index[b][(input_ids[b] == cfg.image_token_id) & (mask[b] > 0)] = np.concatenate(slots)
    positions = mrope_position_ids(input_ids, mask, grids if counts else None,
                                   image_token_id=cfg.image_token_id, merge_size=v.spatial_merge_size)
    return EncoderInputs(input_ids=input_ids, attention_mask=mask, position_ids=positions.transpose(1, 0, 2),
                         image_token_index=token_index, pixel_values=pixels, vision_rotary_ids=rotary,
                         vision_frame_ids=frames)


def _images_of_rows(cfg: ModelConfig, input_ids: np.ndarray, mask: np.ndarray, counts: Sequence[int],
                    window: int) -> list[list[int]]:
    """Which images (indices into image_grid_thw) each row holds, from its count of image tokens."""
    rows, next_image = [], 0
    for b in range(input_ids.shape[0]):
        need = int(np.sum((input_ids[b] == cfg.image_token_id) & (mask[b] > 0)))
        images = []
        while need > 0 and next_image < len(counts):
            need -= counts[next_image] // window
            images.append(next_image)
            next_image += 1
        if need != 0:
            raise ValueError(f"row {b}: its image tokens (id {cfg.image_token_id}) do not match the merged token "
                             f"counts of the images in image_grid_thw")
        rows.append(images)
    if next_image != len(counts):
        raise ValueError(f"image_grid_thw describes {len(counts)} images but the input_ids hold image tokens "
                         f"for {next_image}")
    return rows


def pad_batch_rows(inputs: EncoderInputs, batch: int, length: int) -> EncoderInputs:
    """Pads to [batch, length] with fully masked rows and positions (for fixed jit shapes)."""
    b, l = inputs.input_ids.shape
    if batch < b or length < l:
        raise ValueError(f"cannot pad a [{b}, {l}] batch down to [{batch}, {length}]")

    def pad(x, value, length_axis=None):
        widths = [(0, 0)] * x.ndim
        widths[0] = (0, batch - b)
        if length_axis is not None:
            widths[length_axis] = (0, length - l)
        return np.pad(x, widths, constant_values=value) if any(w for _, w in widths) else x  # pixels: no copy

    return EncoderInputs(input_ids=pad(inputs.input_ids, 0, 1), attention_mask=pad(inputs.attention_mask, 0, 1),
                         position_ids=pad(inputs.position_ids, 0, 2),
                         image_token_index=pad(inputs.image_token_index, -1, 1),
                         pixel_values=pad(inputs.pixel_values, 0), vision_rotary_ids=pad(inputs.vision_rotary_ids, 0),
                         vision_frame_ids=pad(inputs.vision_frame_ids, 0))
