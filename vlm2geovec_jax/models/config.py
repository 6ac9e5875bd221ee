"""The encoder's configuration: typed, frozen, and convertible to and from transformers' Qwen2-VL config.

Presets (``presets.py``) are ml_collections ConfigDicts so experiment configs can override single fields on the
command line; the model itself takes the frozen dataclass built from them, which validates every key once.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

DTYPES = ("float32", "bfloat16")
REMAT_POLICIES = ("none", "full", "save_dots", "save_dots_no_batch", "save_attn_out")
ATTENTION = ("auto", "xla", "cudnn", "splash")  # see models/attention.py


def _check_keys(cls, d: Mapping[str, Any], where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    depth: int = 32
    embed_dim: int = 1280
    num_heads: int = 16
    mlp_ratio: int = 4
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    in_channels: int = 3
    hidden_act: str = "quick_gelu"
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

    @property
    def mlp_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)


@dataclasses.dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 151936
    hidden_size: int = 1536
    intermediate_size: int = 8960
    num_layers: int = 28
    num_heads: int = 12
    num_kv_heads: int = 2
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    mrope_section: tuple[int, ...] = (16, 24, 24)
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    text: TextConfig = TextConfig()
    vision: VisionConfig = VisionConfig()
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    tie_word_embeddings: bool = True
    dtype: str = "float32"          # compute dtype of activations and matmuls
    param_dtype: str = "float32"    # storage dtype of the weights
    remat_policy: str = "none"      # see models/layers.py REMAT_POLICIES
    attention: str = "auto"         # kernel: auto | xla | cudnn | splash (models/attention.py)

    def __post_init__(self):
        t, v = self.text, self.vision
        problems = []
        if t.hidden_size % t.num_heads:
            problems.append(f"text.hidden_size {t.hidden_size} not divisible by num_heads {t.num_heads}")
        if t.num_heads % t.num_kv_heads:
            problems.append(f"text.num_heads {t.num_heads} not divisible by num_kv_heads {t.num_kv_heads}")
        if 2 * sum(t.mrope_section) != t.head_dim:
            problems.append(f"2 * sum(mrope_section {list(t.mrope_section)}) must equal head_dim {t.head_dim}")
        if v.embed_dim % v.num_heads or v.head_dim % 4:
            problems.append(f"vision head_dim {v.embed_dim}/{v.num_heads} must be an integer divisible by 4")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                problems.append(f"{name} {getattr(self, name)!r} not in {DTYPES}")
        if self.remat_policy not in REMAT_POLICIES:
            problems.append(f"remat_policy {self.remat_policy!r} not in {REMAT_POLICIES}")
        if self.attention not in ATTENTION:
            problems.append(f"attention {self.attention!r} not in {ATTENTION}")
        if t.hidden_act != "silu" or v.hidden_act != "quick_gelu":
            problems.append("only hidden_act silu (text) and quick_gelu (vision) are supported, as in Qwen2-VL")
        if problems:
            raise ValueError("invalid model config: " + "; ".join(problems))

    @property
    def hidden_size(self) -> int:
        return self.text.hidden_size

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    # ---- plain dicts (ml_collections presets, our checkpoint's model_config.json) ----

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["text"]["mrope_section"] = list(self.text.mrope_section)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        d = dict(d)
        _check_keys(cls, d, "model config")
        text = dict(d.pop("text", {}))
        vision = dict(d.pop("vision", {}))
        _check_keys(TextConfig, text, "model config 'text'")
        _check_keys(VisionConfig, vision, "model config 'vision'")
        if "mrope_section" in text:
            text["mrope_section"] = tuple(text["mrope_section"])
        return cls(text=TextConfig(**text), vision=VisionConfig(**vision), **d)

    # ---- transformers' Qwen2VLConfig ----

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "ModelConfig":
        """From a transformers Qwen2-VL config.json: the nested (transformers 5) or flat (hub) layout."""
        text = dict(hf.get("text_config") or hf)
        vis = dict(hf.get("vision_config") or {})
        rope = dict(text.get("rope_parameters") or text.get("rope_scaling") or hf.get("rope_scaling") or {})
        vrope = dict(vis.get("rope_parameters") or {})
        if text.get("use_sliding_window"):
            raise ValueError("config.json: use_sliding_window=true is not supported (Qwen2-VL never uses it)")
        tie = hf.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
        n_heads = text["num_attention_heads"]
        out = cls(
            text=TextConfig(
                vocab_size=text["vocab_size"], hidden_size=text["hidden_size"],
                intermediate_size=text["intermediate_size"], num_layers=text["num_hidden_layers"],
                num_heads=n_heads, num_kv_heads=text.get("num_key_value_heads") or n_heads,
                rms_norm_eps=text.get("rms_norm_eps", 1e-6),
                rope_theta=float(rope.get("rope_theta", text.get("rope_theta", hf.get("rope_theta", 1e6)))),
                mrope_section=tuple(rope.get("mrope_section", (16, 24, 24))),
                hidden_act=text.get("hidden_act", "silu"),
                max_position_embeddings=text.get("max_position_embeddings", 32768)),
            vision=VisionConfig(
                depth=vis.get("depth", 32), embed_dim=vis.get("embed_dim", 1280),
                num_heads=vis.get("num_heads", 16), mlp_ratio=vis.get("mlp_ratio", 4),
                patch_size=vis.get("patch_size", 14), temporal_patch_size=vis.get("temporal_patch_size", 2),
                spatial_merge_size=vis.get("spatial_merge_size", 2), in_channels=vis.get("in_channels", 3),
                hidden_act=vis.get("hidden_act", "quick_gelu"),
                rope_theta=float(vrope.get("rope_theta", 10000.0))),
            image_token_id=hf.get("image_token_id", 151655), video_token_id=hf.get("video_token_id", 151656),
            vision_start_token_id=hf.get("vision_start_token_id", 151652),
            vision_end_token_id=hf.get("vision_end_token_id", 151653),
            tie_word_embeddings=bool(tie))
        if vis.get("hidden_size", out.text.hidden_size) != out.text.hidden_size:
            raise ValueError(f"config.json: vision_config.hidden_size {vis['hidden_size']} must equal the language "
                             f"model's hidden_size {out.text.hidden_size}")
        return out.replace(**overrides) if overrides else out

    def to_hf(self, torch_dtype: str | None = None) -> dict[str, Any]:
        """A config.json in the layout transformers 5 writes, loadable by Qwen2VLForConditionalGeneration."""
        t, v = self.text, self.vision
        return {
            "architectures": ["Qwen2VLForConditionalGeneration"],
            "model_type": "qwen2_vl",
            "dtype": torch_dtype or self.param_dtype,
            "image_token_id": self.image_token_id,
            "video_token_id": self.video_token_id,
            "vision_start_token_id": self.vision_start_token_id,
            "vision_end_token_id": self.vision_end_token_id,
            "tie_word_embeddings": self.tie_word_embeddings,
            "text_config": {
                "model_type": "qwen2_vl_text", "vocab_size": t.vocab_size, "hidden_size": t.hidden_size,
                "intermediate_size": t.intermediate_size, "num_hidden_layers": t.num_layers,
                "num_attention_heads": t.num_heads, "num_key_value_heads": t.num_kv_heads,
                "hidden_act": t.hidden_act, "rms_norm_eps": t.rms_norm_eps,
                "max_position_embeddings": t.max_position_embeddings, "use_sliding_window": False,
                "rope_parameters": {"rope_type": "default", "rope_theta": t.rope_theta,
                                    "mrope_section": list(t.mrope_section)},
                "tie_word_embeddings": self.tie_word_embeddings,
            },
            "vision_config": {
                "model_type": "qwen2_vl_vision", "depth": v.depth, "embed_dim": v.embed_dim,
                "hidden_size": t.hidden_size, "num_heads": v.num_heads, "mlp_ratio": v.mlp_ratio,
                "patch_size": v.patch_size, "temporal_patch_size": v.temporal_patch_size,
                "spatial_merge_size": v.spatial_merge_size, "in_channels": v.in_channels,
                "hidden_act": v.hidden_act, "rope_parameters": {"rope_type": "axial", "rope_theta": v.rope_theta},
            },
        }
