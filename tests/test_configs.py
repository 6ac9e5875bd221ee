"""Every shipped experiment config loads and validates, and its model builds abstractly (no weights)."""
from __future__ import annotations

from pathlib import Path

import pytest
from flax import nnx

from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.train.config import load_config
from vlm2geovec_jax.weights.checkpoint import abstract_model

CONFIGS = sorted(str(p) for p in Path("configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS)
def test_config_loads_and_validates(path):
    config = load_config(path)
    model = abstract_model(ModelConfig.from_dict(config.model.to_dict()))
    assert sum(v.size for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param))) > 0


def test_paper_recipe_is_the_vlm2vec_one():
    c = load_config("configs/qwen2vl_2b_lora.py")
    assert (c.batch_size, c.loss.temperature, c.trainable, c.lora.rank) == (1024, 0.02, "lora", 8)
    assert c.batch_size % c.grad_cache.num_chunks == 0
