"""The tiny configs and batches the parity tests share (transformers parity, splash against XLA)."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from vlm2geovec_jax.models.config import ModelConfig, TextConfig, VisionConfig
from vlm2geovec_jax.models.presets import model_config

# cuDNN runs on a GPU only: `JAX_PLATFORMS=cuda python -m pytest -n 0 -m gpu` (tests/conftest.py defaults to CPU)
GPU_MARKS = (pytest.mark.gpu, pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU"))


def requires_gpu(test):
    for mark in GPU_MARKS:
        test = mark(test)
    return test

CONFIGS = {
    # grouped-query attention (4 heads, 2 kv heads), as Qwen2-VL-2B
    "tiny_gqa": model_config("tiny"),
    # multi-head attention, untied lm_head, 3 layers, deeper vision tower
    "mha_untied": model_config("tiny").replace(
        tie_word_embeddings=False,
        text=TextConfig(vocab_size=512, hidden_size=48, intermediate_size=96, num_layers=3, num_heads=2,
                        num_kv_heads=2, rope_theta=1e6, mrope_section=(4, 6, 2)),
        vision=VisionConfig(depth=3, embed_dim=48, num_heads=2, mlp_ratio=3)),
    # 8 heads sharing 1 kv head (multi-query), vision with 6 heads
    "mqa": model_config("tiny").replace(
        text=TextConfig(vocab_size=512, hidden_size=64, intermediate_size=80, num_layers=2, num_heads=8,
                        num_kv_heads=1, rope_theta=1e4, mrope_section=(1, 2, 1)),
        vision=VisionConfig(depth=1, embed_dim=48, num_heads=6, mlp_ratio=2)),
}

TEXT_VOCAB = 490  # ordinary token ids stay below the special ids of the tiny vocabulary


def sequence(rng, cfg: ModelConfig, text_lengths, grids):
    """Text runs interleaved with images: len(text_lengths) == len(grids) + 1."""
    ids = list(rng.integers(0, TEXT_VOCAB, text_lengths[0]))
    for grid, n_text in zip(grids, text_lengths[1:]):
        n_tokens = int(np.prod(grid)) // cfg.vision.spatial_merge_size ** 2
        ids += [cfg.vision_start_token_id] + [cfg.image_token_id] * n_tokens + [cfg.vision_end_token_id]
        ids += list(rng.integers(0, TEXT_VOCAB, n_text))
    return ids


def batch(rng, cfg: ModelConfig, rows, side: str):
    """rows: list of (text_lengths, grids). Returns input_ids, attention_mask, pixel_values, image_grid_thw."""
    seqs = [sequence(rng, cfg, t, g) for t, g in rows]
    length = max(map(len, seqs))
    ids = np.zeros((len(seqs), length), np.int64)
    mask = np.zeros_like(ids)
    for i, s in enumerate(seqs):
        sl = slice(length - len(s), length) if side == "left" else slice(0, len(s))
        ids[i, sl], mask[i, sl] = s, 1
    grids = np.array([g for _, gs in rows for g in gs], np.int64).reshape(-1, 3)
    n_patches = int(grids.prod(-1).sum()) if len(grids) else 0
    pixels = rng.standard_normal((n_patches, cfg.vision.patch_dim)).astype(np.float32) if n_patches else None
    return ids, mask, pixels, (grids if n_patches else None)


CASES = {
    "text_only": [((7,), ()), ((12,), ()), ((3,), ())],
    "one_image": [((4, 5), ((1, 4, 4),))],
    "two_images": [((3, 2, 4), ((1, 4, 6), (1, 2, 2)))],
    "non_square_grid": [((2, 3), ((1, 6, 2),)), ((5, 1), ((1, 2, 8),))],
    "mixed_lengths": [((9,), ()), ((2, 6), ((1, 4, 4),)), ((1, 1, 1), ((1, 2, 4), (1, 4, 2)))],
}
