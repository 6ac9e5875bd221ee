"""The splash program for a TPU holds no float32 [..., L, L] attention logits; XLA's does (lowered, not run)."""
from __future__ import annotations

import re
from pathlib import Path

import jax
import pytest

pytest.importorskip("libtpu", reason='needs the tpu extra: pip install -e ".[tpu]"')

from vlm2geovec_jax.models.attention import splash_block  # noqa: E402
from vlm2geovec_jax.plan import steps  # noqa: E402
from vlm2geovec_jax.plan.shapes import config_shapes  # noqa: E402
from vlm2geovec_jax.plan.topology import get_topology  # noqa: E402
from vlm2geovec_jax.train.config import load_config  # noqa: E402

TINY = Path(__file__).resolve().parents[1] / "configs" / "tiny.py"


def square_float32_tensors(text: str, lengths: set[int]) -> list[str]:
    """float32 tensor types in a StableHLO text whose last two dims are both one of ``lengths``."""
    found = []
    for m in re.finditer(r"tensor<((?:\d+x)+)f32>", text):
        dims = [int(d) for d in m.group(1).rstrip("x").split("x")]
        if len(dims) >= 2 and dims[-1] == dims[-2] and dims[-1] in lengths:
            found.append(m.group(0))
    return found


@pytest.mark.parametrize("attention", ["splash", "xla"])
def test_only_xla_materialises_float32_logits(attention):
    config = load_config(TINY, [f"--config.model.attention={attention}", "--config.data.query_length=256",
                                "--config.data.target_length=256"])
    shapes = config_shapes(config, 8)
    step = steps.train_step(config, get_topology("v5e:2x2").devices, shapes)
    with jax.set_mesh(step.mesh):
        text = step.fn.lower(*step.args).as_text()
    logits = square_float32_tensors(text, {shapes.length, splash_block(shapes.length)[1]})
    if attention == "splash":
        assert not logits and "tpu_custom_call" in text
    else:
        assert logits and "tpu_custom_call" not in text
