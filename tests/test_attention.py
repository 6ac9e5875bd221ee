"""Attention kernels: XLA and Pallas splash (interpret mode on CPU) against a numpy brute force, against each
other inside the encoder and its LoRA gradients, sharded under a mesh, and impossible choices refused early."""
from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from parity_cases import CASES, CONFIGS, batch, requires_gpu
from vlm2geovec_jax.models.attention import SPLASH_BLOCKS, attention, lengths_masked, resolve, splash_block
from vlm2geovec_jax.models.encoder import Encoder
from vlm2geovec_jax.models.lora import LoraConfig, LoRAParam, apply_lora
from vlm2geovec_jax.models.model_inputs import prepare_inputs
from vlm2geovec_jax.models.presets import model_config
from vlm2geovec_jax.sharding import make_mesh


def reference(q, k, v, segment_ids, causal):
    """float64 softmax attention with the mask written out as its definition, pair by pair."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, length, heads, head_dim = q.shape
    mask = np.array([[[segment_ids[r, i] == segment_ids[r, j] and (j <= i or not causal) for j in range(length)]
                      for i in range(length)] for r in range(b)])
    group = heads // k.shape[2]
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)  # query head n reads kv head n // group
    logits = np.einsum("bind,bjnd->bnij", q, k) / np.sqrt(head_dim)
    logits = np.where(mask[:, None], logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    return np.einsum("bnij,bjnd->bind", p / p.sum(-1, keepdims=True), v)


def qkv(rng, b, length, heads, kv_heads, head_dim=16):
    def draw(h):
        return jnp.asarray(rng.standard_normal((b, length, h, head_dim)), jnp.float32)
    return draw(heads), draw(kv_heads), draw(kv_heads)


# Row 0 left-padded, row 1 right-padded (text); as vision frame ids: two frames, then padding.
TEXT_IDS = np.array([[0] * 6 + [1] * 34, [1] * 29 + [0] * 11], np.int32)
FRAME_IDS = np.array([[1] * 16 + [2] * 16 + [0] * 8, [1] * 24 + [0] * 16], np.int32)


@pytest.mark.parametrize("impl", ["xla", "splash"])
@pytest.mark.parametrize("causal,heads,kv_heads", [(True, 4, 2), (True, 4, 1), (False, 2, 2)])
def test_kernels_match_the_definition(impl, causal, heads, kv_heads):
    q, k, v = qkv(np.random.default_rng(heads + kv_heads), 2, 40, heads, kv_heads)
    ids = TEXT_IDS if causal else FRAME_IDS
    got = np.asarray(attention(q, k, v, jnp.asarray(ids), causal=causal, implementation=impl))
    valid = ids > 0  # padding rows attend padding: finite, never read
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got[valid], reference(q, k, v, ids, causal)[valid], atol=2e-6)


@pytest.mark.parametrize("causal", [True, False])
def test_cudnn_masking_by_lengths_matches_the_definition(causal):
    """The cuDNN path's masking (sequence lengths, left padding rotated away), run by XLA's implementation of
    the same lengths mask: no GPU here, so the kernel itself is left to a device."""
    q, k, v = qkv(np.random.default_rng(3), 3, 40, 4, 2)
    prefixes = np.array([[1] * 24 + [0] * 16, [1] * 40, [1] * 5 + [0] * 35])  # image slots: patches, then padding
    ids = np.concatenate([TEXT_IDS, np.zeros((1, 40), np.int32)]) if causal else prefixes
    got = np.asarray(lengths_masked(q, k, v, jnp.asarray(ids), causal, implementation="xla"))
    valid = ids > 0
    np.testing.assert_allclose(got[valid], reference(q, k, v, ids, causal)[valid], atol=2e-6)
    assert np.all(got[~valid] == 0)


def _bf16(x):
    return jnp.asarray(x, jnp.bfloat16)


# cuDNN on a GPU, bf16: GQA, MQA and MHA; the language model's head size (128) and the vision tower's (80)
@requires_gpu
@pytest.mark.parametrize("causal,heads,kv_heads,head_dim", [(True, 4, 2, 16), (True, 8, 1, 128),
                                                            (True, 12, 2, 128), (False, 4, 4, 80)])
def test_cudnn_kernel_matches_the_definition(causal, heads, kv_heads, head_dim):
    """The kernel itself on bf16 inputs, against float64 on the same (rounded) inputs: left and right padded
    text rows, an all-padding row; image slots of different lengths. bf16 output and probabilities: relative
    error <= 1e-2 and no entry off by more than 5e-2 (the same masking by XLA in bf16 on a CPU: 2.3e-3 and 1.3e-2)."""
    rng = np.random.default_rng(head_dim + heads)
    q, k, v = (_bf16(x) for x in qkv(rng, 3, 40, heads, kv_heads, head_dim))
    prefixes = np.array([[1] * 24 + [0] * 16, [1] * 40, [1] * 5 + [0] * 35])
    ids = np.concatenate([TEXT_IDS, np.zeros((1, 40), np.int32)]) if causal else prefixes
    got = jax.jit(functools.partial(attention, causal=causal, implementation="cudnn"))(q, k, v, jnp.asarray(ids))
    got = np.asarray(got.astype(jnp.float32))
    valid = ids > 0
    expected = reference(q, k, v, ids, causal)[valid]
    assert np.linalg.norm(got[valid] - expected) <= 1e-2 * np.linalg.norm(expected)
    assert np.abs(got[valid] - expected).max() <= 5e-2
    assert np.all(got[~valid] == 0)


@requires_gpu
@pytest.mark.parametrize("causal", [True, False])
def test_cudnn_gradients_match_xla(causal):
    """The backward pass (what training runs): cuDNN's gradients of q, k and v equal the float32 xla kernel's
    on the same bf16 inputs within bf16 rounding: 2e-2 of each gradient's largest entry (XLA's bf16 path on a
    CPU: 5.5e-3)."""
    rng = np.random.default_rng(11)
    q, k, v = (_bf16(x) for x in qkv(rng, 2, 40, 8, 2, 128))
    ids = jnp.asarray(TEXT_IDS if causal else np.array([[1] * 40, [1] * 17 + [0] * 23], np.int32))
    weight = jnp.asarray(rng.standard_normal(q.shape), jnp.float32) * (ids > 0)[:, :, None, None]

    def grads(impl, dtype):
        def loss(q, k, v):
            out = attention(q.astype(dtype), k.astype(dtype), v.astype(dtype), ids, causal=causal,
                            implementation=impl)
            return jnp.sum(out.astype(jnp.float32) * weight)
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)

    for got, expected in zip(grads("cudnn", jnp.bfloat16), grads("xla", jnp.float32)):
        got, expected = np.asarray(got.astype(jnp.float32)), np.asarray(expected.astype(jnp.float32))
        scale = np.abs(expected).max()
        assert scale > 0 and np.abs(got - expected).max() <= 2e-2 * scale


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (4, 1)])
def test_splash_under_a_mesh_equals_xla(heads, kv_heads):
    """Batch over (data, fsdp), heads over tensor (shard_map); one kv head is repeated to split over tensor."""
    q, k, v = qkv(np.random.default_rng(7), 4, 40, heads, kv_heads)
    ids = jnp.asarray(np.concatenate([TEXT_IDS, TEXT_IDS[::-1]]))
    expected = attention(q, k, v, ids, causal=True, implementation="xla")
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    with jax.set_mesh(mesh):
        fn = jax.jit(lambda *a: attention(*a, causal=True, implementation="splash"))
        text = fn.lower(q, k, v, ids).as_text()
        got = fn(q, k, v, ids)
    assert "shard_map" in text or "manual" in text.lower()
    valid = np.asarray(ids) > 0
    assert np.max(np.abs(np.asarray(got) - np.asarray(expected))[valid]) <= 1e-5


def test_splash_blocks_divide_the_padded_length():
    for length in (1, 16, 127, 128, 300, 1536, 5184, 8191):
        block, padded = splash_block(length)
        assert block in SPLASH_BLOCKS and padded % block == 0 and padded >= length
        assert padded - (-(-length // 128) * 128) <= max(length // 16, 0) or block == 128
    assert splash_block(1536) == (512, 1536)
    assert splash_block(5184) == (256, 5376)  # 72 x 72 patches: 512 would add 8.6%


# ---- the encoder -------------------------------------------------------------------------------------------


def _pair(cfg):
    """The same random weights (scaled up, so attention is far from uniform) built with xla and splash."""
    xla = Encoder(cfg.replace(attention="xla"), rngs=nnx.Rngs(0))
    state = jax.tree.map(lambda x: x * 3 if x.ndim >= 2 else x, nnx.state(xla))
    nnx.update(xla, state)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: Encoder(cfg.replace(attention="splash"), rngs=nnx.Rngs(0))))
    return xla, nnx.merge(graphdef, state)


def _inputs(cfg, rows, side, seed=0):
    ids, mask, pixels, grids = batch(np.random.default_rng(seed), cfg, rows, side)
    return prepare_inputs(cfg, ids, mask, pixels, grids)


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, inputs):
    model = nnx.merge(graphdef, state)
    return model.hidden_states(inputs), model(inputs)


PARITY_ROWS = [CASES["text_only"][0], CASES["one_image"][0], CASES["two_images"][0], *CASES["non_square_grid"]]


@pytest.mark.parametrize("name,batches", [("tiny_gqa", (("mixed", "left"), ("text_only", "right"))),
                                          ("mqa", (("mixed", "right"),))])
def test_encoder_splash_equals_xla(name, batches):
    """Text only, one image, two images, non-square grids; left and right padding; GQA (4/2) and MQA (8/1).
    A text-only batch leaves the vision tower all padding."""
    cfg = CONFIGS[name]
    xla, splash = _pair(cfg)
    for kind, side in batches:
        rows = PARITY_ROWS if kind == "mixed" else CASES["text_only"]
        inputs = _inputs(cfg, rows, side)
        (got, got_emb), (expected, expected_emb) = (_forward(*nnx.split(m), inputs) for m in (splash, xla))
        valid = inputs.attention_mask > 0
        assert np.max(np.abs(np.asarray(got - expected))[valid]) <= 1e-5, (rows, side)
        assert np.max(np.abs(got_emb - expected_emb)) <= 1e-5, (rows, side)


def test_lora_gradients_through_splash_equal_xla():
    cfg = CONFIGS["tiny_gqa"]
    models = _pair(cfg)
    for m in models:
        apply_lora(m, LoraConfig(rank=4, alpha=8.0), rngs=nnx.Rngs(1))
    rng = np.random.default_rng(2)  # B random too, else every gradient of A is zero
    lora = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype) * 0.3,
                        nnx.state(models[0], LoRAParam))
    inputs = _inputs(cfg, PARITY_ROWS[:3], "left", seed=4)
    direction = jnp.asarray(rng.standard_normal((len(PARITY_ROWS[:3]), cfg.hidden_size)), jnp.float32)

    def grads(model):
        graphdef, _, rest = nnx.split(model, LoRAParam, ...)

        def loss(params):
            return jnp.sum(nnx.merge(graphdef, params, rest)(inputs) * direction)
        return jax.jit(jax.grad(loss))(lora)

    got, expected = (jax.tree.leaves(grads(m)) for m in (models[1], models[0]))
    assert len(expected) == 14  # A and B of q, k, v, o, gate, up, down
    for g, e in zip(got, expected):
        scale = np.abs(np.asarray(e)).max()
        assert scale > 0
        assert np.abs(np.asarray(g) - np.asarray(e)).max() <= 1e-4 * scale


# ---- choosing ----------------------------------------------------------------------------------------------


def test_impossible_choices_fail_when_the_model_is_built():
    cfg = model_config("tiny")
    with pytest.raises(ValueError, match="model.attention='cudnn' cannot run on this cpu: cuDNN needs a GPU"):
        Encoder(cfg.replace(attention="cudnn"), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"attention 'flash' not in \('auto', 'xla', 'cudnn', 'splash'\)"):
        cfg.replace(attention="flash")
    with pytest.raises(ValueError, match="splash is a TPU kernel"):
        resolve("splash", head_dims=(128,), dtype="bfloat16", where="gpu")
    with pytest.raises(ValueError, match="cannot run on this tpu: splash takes head sizes up to 1024, not 2048"):
        resolve("splash", head_dims=(2048, 80), dtype="bfloat16", where="tpu")
    with pytest.raises(ValueError, match="cuDNN flash attention takes bfloat16, not float32"):
        resolve("cudnn", head_dims=(128,), dtype="float32", where="gpu")


def test_auto_picks_the_platform_kernel():
    assert resolve("auto", head_dims=(16, 8), dtype="float32") == "xla"  # this CPU
    assert resolve("auto", head_dims=(128, 80), dtype="bfloat16", where="tpu") == "splash"
    assert resolve("auto", head_dims=(2048, 80), dtype="bfloat16", where="tpu") == "xla"
    assert resolve("auto", head_dims=(128, 80), dtype="float32", where="gpu") == "xla"  # cuDNN: bf16 only


def test_training_configs_take_the_choice():
    from vlm2geovec_jax.train.config import load_config

    path = Path(__file__).parents[1] / "configs" / "tiny.py"
    config = load_config(path, ["--config.model.attention=splash"])
    assert model_config(config.model).attention == "splash"
    with pytest.raises(ValueError, match=r"model: invalid model config: attention 'flash' not in"):
        load_config(path, ["--config.model.attention=flash"])


def test_attention_bench_compares_the_xla_kernel_with_the_library():
    """bench.attention's two kernels agree (so its speed ratio compares like with like) on both towers' masks."""
    from vlm2geovec_jax.bench.attention import attention_cases, bench_case

    for case in attention_cases("tiny", batch=2):
        row = bench_case(*case, iters=1, repeats=1)
        assert row["forward"]["max_abs_diff"] < 1e-5 and row["backward"]["max_abs_diff"] < 1e-4
        assert row["forward"]["ours_ms"] > 0 and row["forward"]["library_ms"] > 0
