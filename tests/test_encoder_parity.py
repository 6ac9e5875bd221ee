"""The encoder equals transformers' PyTorch Qwen2-VL on tiny random configs (the proof that it is right)."""
from __future__ import annotations

import numpy as np
import pytest

from hf_utils import hf_embed, hf_model, torch
from parity_cases import CASES, CONFIGS, GPU_MARKS, batch as _batch
from vlm2geovec_jax import load


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


def test_splash_attention_float32_parity(pair):
    """The Pallas splash kernel (interpret mode on CPU) in both towers, against transformers, same bounds
    (left padding here; tests/test_attention.py compares splash with XLA on both sides)."""
    cfg, hf, xla = pair
    ours = load(xla.path, attention="splash")
    assert ours.config.attention == "splash"
    ids, mask, pixels, grids = _batch(np.random.default_rng(5), cfg, CASES["mixed_lengths"], "left")
    expected = hf_embed(hf, ids, mask, pixels, grids)
    got = ours.embed_tokens(ids, mask, pixels, grids)
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


@pytest.mark.parametrize("attention", ["xla", pytest.param("cudnn", marks=GPU_MARKS)])
def test_bfloat16_within_stated_tolerance(tmp_path, attention):
    """bf16 weights and compute on both sides; rounding differs (fused vs unfused ops), so a stated bound.
    On a GPU, the same bound holds with cuDNN flash attention in both towers."""
    cfg = CONFIGS["tiny_gqa"]
    model = hf_model(cfg, seed=7)
    model.save_pretrained(tmp_path)
    hf16 = model.to(torch.bfloat16)
    ours = load(tmp_path, param_dtype="bfloat16", dtype="bfloat16", attention=attention)
    assert ours.config.param_dtype == "bfloat16" and ours.config.attention == attention
    for side in ("right", "left"):
        ids, mask, pixels, grids = _batch(np.random.default_rng(11), cfg, CASES["mixed_lengths"], side)
        expected = hf_embed(hf16, ids, mask, pixels, grids)
        got = ours.embed_tokens(ids, mask, pixels, grids)
        cos = np.sum(got * expected, axis=-1)
        assert np.max(np.abs(got - expected)) <= BF16_MAX_ABS, (side, np.max(np.abs(got - expected)))
        assert np.min(cos) >= BF16_MIN_COS, (side, cos)


def test_length_buckets_bound_padding_and_shapes():
    from vlm2geovec_jax.models.model_inputs import bucket

    assert [bucket(n) for n in (1, 16, 17, 98, 128, 129)] == [16, 16, 32, 128, 128, 256]
    assert [bucket(n, steps_per_octave=4) for n in (17, 65, 98, 112, 113, 129)] == [20, 80, 112, 112, 128, 160]
    for steps in (1, 2, 4, 8):
        sizes = [bucket(n, steps_per_octave=steps) for n in range(1, 1025)]
        assert all(n <= b <= max(16, n * (1 + 1 / steps)) for n, b in zip(range(1, 1025), sizes))
        assert len(set(s for s in sizes if s > 64)) == 4 * steps  # (64, 1024]: four octaves
