"""Model presets by name, as ml_collections ConfigDicts (override any field, then ``ModelConfig.from_dict``).

``tiny`` is for tests and the demo; its special-token ids match the demo tokenizer, whose Qwen2-VL special
tokens are the last 14 ids of a 512-token vocabulary. ``qwen2vl_2b`` and ``qwen2vl_7b`` carry the released
checkpoints' shapes (Qwen/Qwen2-VL-2B-Instruct and -7B-Instruct config.json).
"""
from __future__ import annotations

import ml_collections

from vlm2geovec_jax.models.config import ModelConfig


def _tiny() -> dict:
    return dict(
        text=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                  rope_theta=10000.0, mrope_section=(2, 3, 3), max_position_embeddings=4096),
        vision=dict(depth=2, embed_dim=32, num_heads=4, mlp_ratio=2),
        image_token_id=510, video_token_id=511, vision_start_token_id=507, vision_end_token_id=508,
        tie_word_embeddings=True)


def _small_100m() -> dict:
    """~100M parameters: the size the benchmarks use to compare against PyTorch on a CPU."""
    return dict(
        text=dict(vocab_size=8192, hidden_size=640, intermediate_size=2816, num_layers=12, num_heads=8,
                  num_kv_heads=2, rope_theta=1000000.0, mrope_section=(8, 16, 16)),
        vision=dict(depth=8, embed_dim=384, num_heads=6, mlp_ratio=4),
        image_token_id=8190, video_token_id=8191, vision_start_token_id=8187, vision_end_token_id=8188,
        tie_word_embeddings=True)


def _qwen2vl_2b() -> dict:
    return dict(
        text=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_layers=28, num_heads=12,
                  num_kv_heads=2, rope_theta=1000000.0, mrope_section=(16, 24, 24)),
        vision=dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4),
        tie_word_embeddings=True, param_dtype="bfloat16", dtype="bfloat16")


def _qwen2vl_7b() -> dict:
    return dict(
        text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28, num_heads=28,
                  num_kv_heads=4, rope_theta=1000000.0, mrope_section=(16, 24, 24)),
        vision=dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4),
        tie_word_embeddings=False, param_dtype="bfloat16", dtype="bfloat16")


PRESETS = {"tiny": _tiny, "small_100m": _small_100m, "qwen2vl_2b": _qwen2vl_2b, "qwen2vl_7b": _qwen2vl_7b}


def get_preset(name: str) -> ml_collections.ConfigDict:
    """The preset as a ConfigDict with every ModelConfig field present (so overrides are type-checked)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    full = ModelConfig.from_dict(PRESETS[name]()).to_dict()
    return ml_collections.ConfigDict(full)


def model_config(preset_or_dict: str | ml_collections.ConfigDict | dict) -> ModelConfig:
    """A validated ModelConfig from a preset name, a ConfigDict or a plain dict."""
    if isinstance(preset_or_dict, str):
        preset_or_dict = get_preset(preset_or_dict)
    if isinstance(preset_or_dict, ml_collections.ConfigDict):
        preset_or_dict = preset_or_dict.to_dict()
    return ModelConfig.from_dict(preset_or_dict)
