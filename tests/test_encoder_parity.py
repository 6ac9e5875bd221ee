"""The encoder equals transformers' PyTorch Qwen2-VL on tiny random configs (the proof that it is right)."""
from __future__ import annotations

import numpy as np
import pytest

from hf_utils import hf_embed, hf_model, torch
from vlm2geovec_jax import load
from vlm2geovec_jax.models.config import ModelConfig, TextConfig, VisionConfig
from vlm2geovec_jax.models.presets import model_config

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


def _sequence(rng, cfg: ModelConfig, text_lengths, grids):
    """Text runs interleaved with images: len(text_lengths) == len(grids) + 1."""
    ids = list(rng.integers(0, TEXT_VOCAB, text_lengths[0]))
    for grid, n_text in zip(grids, text_lengths[1:]):
        n_tokens = int(np.prod(grid)) // cfg.vision.spatial_merge_size ** 2
        ids += [cfg.vision_start_token_id] + [cfg.image_token_id] * n_tokens + [cfg.vision_end_token_id]
        ids += list(rng.integers(0, TEXT_VOCAB, n_text))
    return ids


def _batch(rng, cfg: ModelConfig, rows, side: str):
    """rows: list of (text_lengths, grids). Returns input_ids, attention_mask, pixel_values, image_grid_thw."""
    seqs = [_sequence(rng, cfg, t, g) for t, g in rows]
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


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    cfg = CONFIGS[request.param]
    model = hf_model(cfg, seed=len(request.param))
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return cfg, model, load(path)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_parity(pair, case, side):
    cfg, hf, ours = pair
    rng = np.random.default_rng(abs(hash((case, side))) % 2 ** 32)
    ids, mask, pixels, grids = _batch(rng, cfg, CASES[case], side)
    expected = hf_embed(hf, ids, mask, pixels, grids)
    got = ours.embed_tokens(ids, mask, pixels, grids)
    assert got.shape == expected.shape == (len(ids), cfg.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5)
    assert np.max(np.abs(got - expected)) <= 1e-4
    assert np.min(np.sum(got * expected, axis=-1)) >= 0.99999


def test_padding_side_does_not_change_embeddings(pair):
    cfg, _, ours = pair
    rows = CASES["mixed_lengths"]
    right = ours.embed_tokens(*_batch(np.random.default_rng(3), cfg, rows, "right"))
    left = ours.embed_tokens(*_batch(np.random.default_rng(3), cfg, rows, "left"))
    np.testing.assert_allclose(right, left, atol=2e-5)


BF16_MAX_ABS = 0.05
BF16_MIN_COS = 0.995


def test_bfloat16_within_stated_tolerance(tmp_path):
    """bf16 weights and compute on both sides; rounding differs (fused vs unfused ops), so a stated bound."""
    cfg = CONFIGS["tiny_gqa"]
    model = hf_model(cfg, seed=7)
    model.save_pretrained(tmp_path)
    hf16 = model.to(torch.bfloat16)
    ours = load(tmp_path, param_dtype="bfloat16", dtype="bfloat16")
    assert ours.config.param_dtype == "bfloat16"
    ids, mask, pixels, grids = _batch(np.random.default_rng(11), cfg, CASES["mixed_lengths"], "right")
    expected = hf_embed(hf16, ids, mask, pixels, grids)
    got = ours.embed_tokens(ids, mask, pixels, grids)
    cos = np.sum(got * expected, axis=-1)
    assert np.max(np.abs(got - expected)) <= BF16_MAX_ABS, np.max(np.abs(got - expected))
    assert np.min(cos) >= BF16_MIN_COS, cos


def test_length_buckets_bound_padding_and_shapes():
    from vlm2geovec_jax.models.model_inputs import bucket

    assert [bucket(n) for n in (1, 16, 17, 98, 128, 129)] == [16, 16, 32, 128, 128, 256]
    assert [bucket(n, steps_per_octave=4) for n in (17, 65, 98, 112, 113, 129)] == [20, 80, 112, 112, 128, 160]
    for steps in (1, 2, 4, 8):
        sizes = [bucket(n, steps_per_octave=steps) for n in range(1, 1025)]
        assert all(n <= b <= max(16, n * (1 + 1 / steps)) for n, b in zip(range(1, 1025), sizes))
        assert len(set(s for s in sizes if s > 64)) == 4 * steps  # (64, 1024]: four octaves
