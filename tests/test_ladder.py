"""The ladder: its top rungs are the released presets, counted independently with nnx.eval_shape."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from vlm2geovec_jax.models.encoder import Encoder
from vlm2geovec_jax.models.presets import model_config
from vlm2geovec_jax.scaling import ladder as ladder_lib
from vlm2geovec_jax.train import flops


def _abstract_count(cfg) -> tuple[int, int]:
    """(total, embedding) parameters of the encoder as built, without allocating it."""
    state = nnx.state(nnx.eval_shape(lambda: Encoder(cfg, rngs=nnx.Rngs(0))), nnx.Param)
    total = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state))
    embedding = int(np.prod(state["language"]["embed_tokens"].shape))
    if "lm_head" in state:
        embedding += int(np.prod(state["lm_head"].shape))
    return total, embedding


@pytest.mark.parametrize("name", ["qwen2vl_2b", "qwen2vl_7b"])
def test_top_rungs_have_the_presets_exact_parameter_counts(name):
    rung = ladder_lib.get_rung(name)
    total, embedding = _abstract_count(model_config(name))
    assert rung.params == total and rung.non_embedding_params == total - embedding
    assert rung.config == model_config(name)
    # The released checkpoints' sizes (Qwen2-VL-2B-Instruct 2,208,985,600; -7B 8,291,375,616 parameters).
    assert total == {"qwen2vl_2b": 2_208_985_600, "qwen2vl_7b": 8_291_375_616}[name]


def test_ladder_spans_a_tenth_of_a_million_to_seven_billion_and_grows_monotonically():
    rungs = ladder_lib.ladder()
    assert [r.name for r in rungs[-2:]] == ["qwen2vl_2b", "qwen2vl_7b"]
    sizes = [r.non_embedding_params for r in rungs]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert 5e4 < sizes[0] < 2e5 and rungs[-1].params > 7e9
    for rung in rungs[::5]:  # the closed form agrees with the built model on small rungs too
        cfg = ladder_lib.with_tokens(rung.config, "tiny")
        assert ladder_lib.count_params(cfg) == _abstract_count(cfg)[0]


def test_example_flops_count_patches_and_image_tokens():
    cfg = model_config("qwen2vl_2b")
    assert flops.image_patches(cfg, 112) == 64
    expected = 2 * flops.train_flops(cfg, 48 + 16, [64])
    assert flops.example_train_flops(cfg, 48, 112) == expected
    # Ignoring the image would undercount by the vision tower's 64 patches and the 16 image tokens.
    assert expected > 2 * flops.train_flops(cfg, 48) * 1.2
