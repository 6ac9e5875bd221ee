"""LoRA / DoRA adapters: start equal to the base model, train only adapters, merge exactly for export."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from vlm2geovec_jax.models.encoder import Encoder
from vlm2geovec_jax.models.lora import LoRAParam, LoraConfig, apply_lora, merge_lora
from vlm2geovec_jax.models.model_inputs import prepare_inputs
from vlm2geovec_jax.models.presets import model_config

CFG = model_config("tiny")
IDS = np.array([[3, 17, 42, 99, 7, 250, 11], [5, 6, 7, 8, 0, 0, 0]])
MASK = (np.arange(7) < np.array([[7], [4]])).astype(np.int32)


def _embed(model):
    return np.asarray(model(prepare_inputs(CFG, IDS, MASK)))


def _randomize_adapters(model, seed=0):
    state = nnx.state(model, LoRAParam)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(tree, noisy))


@pytest.mark.parametrize("dora", [False, True])
def test_adapters_start_at_the_base_model_and_merge_exactly(dora):
    model = Encoder(CFG, rngs=nnx.Rngs(0))
    base = _embed(model)
    apply_lora(model, LoraConfig(rank=4, alpha=8.0, dora=dora), rngs=nnx.Rngs(1))
    np.testing.assert_allclose(_embed(model), base, atol=2e-6)
    _randomize_adapters(model)
    adapted = _embed(model)
    assert np.max(np.abs(adapted - base)) > 1e-3  # the adapters do something
    merged = merge_lora(model)
    assert len(merged) == 7 and not jax.tree.leaves(nnx.state(model, LoRAParam))
    np.testing.assert_allclose(_embed(model), adapted, atol=2e-5)


def test_default_targets_are_the_language_projections_only():
    model = Encoder(CFG, rngs=nnx.Rngs(0))
    paths = apply_lora(model, LoraConfig(), rngs=nnx.Rngs(1))
    assert sorted(paths) == sorted(f"language/layers/{p}" for p in
                                   ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    lora = nnx.to_flat_state(nnx.state(model, LoRAParam))
    assert all(path[0] == "language" for path, _ in lora)
    a = model.language.layers.q_proj.lora_a
    assert a.shape == (CFG.text.num_layers, CFG.text.hidden_size, 8)
    assert a.get_metadata()["logical_axes"] == ("layers", "embed", "lora_rank")


def test_vision_targets_by_regex_and_no_match_is_an_error():
    model = Encoder(CFG, rngs=nnx.Rngs(0))
    paths = apply_lora(model, LoraConfig(targets=r"^visual/blocks/(qkv|proj)$"), rngs=nnx.Rngs(1))
    assert sorted(paths) == ["visual/blocks/proj", "visual/blocks/qkv"]
    assert model.visual.blocks.qkv.lora_b.shape == (CFG.vision.depth, 8, 3 * CFG.vision.embed_dim)
    with pytest.raises(ValueError, match="match no Dense layer"):
        apply_lora(model, LoraConfig(targets=r"^nothing$"), rngs=nnx.Rngs(1))
