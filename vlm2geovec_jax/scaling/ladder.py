"""The model ladder: one rule that makes Qwen2-VL-shaped encoders of any size, ending at the released presets.

Every shape dimension (text width, depth and MLP ratio; vision width and depth) is interpolated
geometrically between anchor shapes, then rounded to what the architecture needs: text heads of 16..128
(a power of two near width/12, Qwen2's 128 at the top), kv heads the largest divisor of the heads not above
heads/6 (Qwen2-VL's 12/2 and 28/4), vision heads of about 80 channels, MLP widths a multiple of the head
size. The anchors are a ~0.1M floor and the qwen2vl_2b and qwen2vl_7b presets themselves, so the ladder's
top rungs ARE the presets (interpolating at an anchor returns it), whatever their irregular ratios.

Rungs carry the presets' vocabulary; ``with_tokens`` swaps in another preset's (the demo tokenizer's
512 for GeoScenes studies). Parameter counts are closed-form here and checked against nnx.eval_shape in tests.
"""
from __future__ import annotations

import dataclasses
import math

from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.presets import model_config
from vlm2geovec_jax.train import flops as flops_lib

FLOOR = dict(hidden=64, intermediate_ratio=2.0, layers=1, vision_width=32, vision_depth=1)
STEPS_BELOW_2B = 16  # rungs r00..r15 between the floor and qwen2vl_2b: about 1.8x parameters apart
TOKEN_FIELDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


@dataclasses.dataclass(frozen=True)
class Rung:
    name: str
    config: ModelConfig

    @property
    def params(self) -> int:
        return count_params(self.config)

    @property
    def non_embedding_params(self) -> int:
        return count_params(self.config) - embedding_params(self.config)


def _anchor(cfg: ModelConfig) -> dict:
    t, v = cfg.text, cfg.vision
    return dict(hidden=t.hidden_size, intermediate_ratio=t.intermediate_size / t.hidden_size, layers=t.num_layers,
                vision_width=v.embed_dim, vision_depth=v.depth)


def _geo(a: float, b: float, t: float) -> float:
    return a if t == 0 else b if t == 1 else math.exp((1 - t) * math.log(a) + t * math.log(b))


def _largest_divisor_at_most(n: int, bound: int) -> int:
    return max(d for d in range(1, max(1, bound) + 1) if n % d == 0)


def shape_at(lower: dict, upper: ModelConfig, t: float) -> ModelConfig:
    """The rung a fraction ``t`` (0..1, in log space) of the way from ``lower`` to the preset ``upper``.

    Vocabulary, special tokens, tying, dtypes and RoPE settings come from ``upper``."""
    hi = _anchor(upper)
    x = {k: _geo(lower[k], hi[k], t) for k in hi}
    head_dim = min(128, max(16, 2 ** round(math.log2(x["hidden"] / 12))))
    heads = max(1, round(x["hidden"] / head_dim))
    hidden = heads * head_dim
    intermediate = max(head_dim, head_dim * round(x["intermediate_ratio"] * hidden / head_dim))
    v_heads = max(1, round(x["vision_width"] / 80))
    v_width = v_heads * 4 * max(1, round(x["vision_width"] / v_heads / 4))
    text = dataclasses.replace(
        upper.text, hidden_size=hidden, intermediate_size=intermediate, num_layers=max(1, round(x["layers"])),
        num_heads=heads, num_kv_heads=_largest_divisor_at_most(heads, heads // 6),
        mrope_section=(head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16))
    vision = dataclasses.replace(upper.vision, embed_dim=v_width, num_heads=v_heads,
                                 depth=max(1, round(x["vision_depth"])))
    return upper.replace(text=text, vision=vision)


def ladder() -> list[Rung]:
    """r00 (the floor, ~0.1M) .. r15, then qwen2vl_2b and qwen2vl_7b exactly."""
    b2, b7 = model_config("qwen2vl_2b"), model_config("qwen2vl_7b")
    rungs = [Rung(f"r{k:02d}", shape_at(FLOOR, b2, k / STEPS_BELOW_2B)) for k in range(STEPS_BELOW_2B)]
    return rungs + [Rung("qwen2vl_2b", shape_at(_anchor(b2), b2, 1.0)),
                    Rung("qwen2vl_7b", shape_at(_anchor(b2), b7, 1.0))]


def get_rung(name: str) -> Rung:
    rungs = {r.name: r for r in ladder()}
    if name not in rungs:
        raise ValueError(f"unknown ladder rung {name!r}; known: {', '.join(rungs)}")
    return rungs[name]


def with_tokens(cfg: ModelConfig, preset: str) -> ModelConfig:
    """``cfg`` with the vocabulary and special-token ids of ``preset`` (e.g. ``tiny``: the demo tokenizer's)."""
    try:
        src = model_config(preset)
    except KeyError as e:
        raise ValueError(f"token preset: {e.args[0]}") from None
    return cfg.replace(text=dataclasses.replace(cfg.text, vocab_size=src.text.vocab_size),
                       **{k: getattr(src, k) for k in TOKEN_FIELDS})


# ---- parameter counts (closed form; tests check them against nnx.eval_shape) ---------------------------------


def embedding_params(cfg: ModelConfig) -> int:
    """The token table, and the untied output head when there is one."""
    table = cfg.text.vocab_size * cfg.hidden_size
    return table if cfg.tie_word_embeddings else 2 * table


def count_params(cfg: ModelConfig) -> int:
    t, v = cfg.text, cfg.vision
    d, kv = t.hidden_size, t.num_kv_heads * t.head_dim
    layer = 2 * d + (d * d + d) + 2 * (d * kv + kv) + d * d + 3 * d * t.intermediate_size
    text = t.num_layers * layer + d
    w, m, window = v.embed_dim, v.mlp_dim, v.embed_dim * v.spatial_merge_size ** 2
    block = 4 * w + (3 * w * w + 3 * w) + (w * w + w) + (w * m + m) + (m * w + w)
    merger = 2 * w + (window * window + window) + (window * d + d)
    vision = v.patch_dim * w + v.depth * block + merger
    return text + vision + embedding_params(cfg)


def describe(rungs: list[Rung], *, prompt_tokens: int, image_size: int) -> str:
    """The ladder as a table: shapes, parameters and training FLOPs per example."""
    head = (f"{'rung':<11} {'width':>5} {'layers':>6} {'heads':>5} {'kv':>3} {'mlp':>6} {'v.width':>7} "
            f"{'v.depth':>7} {'params':>10} {'non-emb':>10} {'FLOPs/ex':>9}")
    lines = [f"FLOPs per training example: query + positive, each {prompt_tokens} text tokens and one "
             f"{image_size}x{image_size} image (forward + backward)", head]
    for r in rungs:
        t, v = r.config.text, r.config.vision
        f = flops_lib.example_train_flops(r.config, prompt_tokens, image_size)
        lines.append(f"{r.name:<11} {t.hidden_size:>5} {t.num_layers:>6} {t.num_heads:>5} {t.num_kv_heads:>3} "
                     f"{t.intermediate_size:>6} {v.embed_dim:>7} {v.depth:>7} {_si(r.params):>10} "
                     f"{_si(r.non_embedding_params):>10} {f:>9.3g}")
    return "\n".join(lines)


def _si(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n))
