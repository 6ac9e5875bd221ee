"""Qwen2-VL's language model: a Qwen2 decoder (GQA with q/k/v bias, RMSNorm, SwiGLU, M-RoPE, causal)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from vlm2geovec_jax.models import rope
from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.attention import attention
from vlm2geovec_jax.models.layers import INIT_STD, Dense, RMSNorm, scan_layers, stacked
from vlm2geovec_jax.sharding import constrain


class DecoderLayer(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        t = cfg.text
        dt, pdt = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.num_heads, self.num_kv_heads, self.head_dim = t.num_heads, t.num_kv_heads, t.head_dim
        self.attention = cfg.attention
        kv_dim = t.num_kv_heads * t.head_dim

        def dense(i, o, axes, bias):
            return Dense(i, o, axes=axes, use_bias=bias, dtype=dt, param_dtype=pdt, rngs=rngs)

        self.input_layernorm = RMSNorm(t.hidden_size, eps=t.rms_norm_eps, param_dtype=pdt)
        self.q_proj = dense(t.hidden_size, t.hidden_size, ("embed", "heads"), True)
        self.k_proj = dense(t.hidden_size, kv_dim, ("embed", "kv_heads"), True)
        self.v_proj = dense(t.hidden_size, kv_dim, ("embed", "kv_heads"), True)
        self.o_proj = dense(t.hidden_size, t.hidden_size, ("heads", "embed"), False)
        self.post_attention_layernorm = RMSNorm(t.hidden_size, eps=t.rms_norm_eps, param_dtype=pdt)
        self.gate_proj = dense(t.hidden_size, t.intermediate_size, ("embed", "mlp"), False)
        self.up_proj = dense(t.hidden_size, t.intermediate_size, ("embed", "mlp"), False)
        self.down_proj = dense(t.intermediate_size, t.hidden_size, ("mlp", "embed"), False)

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, segment_ids: jax.Array) -> jax.Array:
        b, length, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).reshape(b, length, self.num_heads, self.head_dim)
        k = self.k_proj(h).reshape(b, length, self.num_kv_heads, self.head_dim)
        v = self.v_proj(h).reshape(b, length, self.num_kv_heads, self.head_dim)
        q = constrain(q, ("act_batch", "act_len", "act_heads", None))
        k = constrain(k, ("act_batch", "act_len", "act_kv_heads", None))
        cos, sin = cos.astype(q.dtype), sin.astype(q.dtype)  # transformers casts the table to the compute dtype
        q, k = rope.apply_rotary(q, cos, sin), rope.apply_rotary(k, cos, sin)
        out = attention(q, k, v, segment_ids, causal=True, implementation=self.attention).reshape(b, length, -1)
        out = checkpoint_name(out, "attn_out")
        x = x + self.o_proj(out)
        h = self.post_attention_layernorm(x)
        gate = constrain(self.gate_proj(h), ("act_batch", "act_len", "act_mlp"))
        x = x + self.down_proj(jax.nn.silu(gate) * self.up_proj(h))
        return constrain(x, ("act_batch", "act_len", "act_embed"))


class LanguageModel(nnx.Module):
    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        t = cfg.text
        self.cfg = cfg
        pdt = jnp.dtype(cfg.param_dtype)
        self.embed_tokens = nnx.Param(
            jax.random.normal(rngs.params(), (t.vocab_size, t.hidden_size), pdt) * INIT_STD,
            logical_axes=("vocab", "embed"))
        self.layers = stacked(lambda r: DecoderLayer(cfg, rngs=r), t.num_layers, rngs)
        self.norm = RMSNorm(t.hidden_size, eps=t.rms_norm_eps, param_dtype=pdt)

    def embed(self, input_ids: jax.Array) -> jax.Array:
        # Gather from a table sharded on the vocabulary only: a gather cannot keep the embedding dimension
        # sharded over fsdp while its output is batch-sharded over fsdp too.
        table = constrain(self.embed_tokens[...].astype(jnp.dtype(self.cfg.dtype)), ("vocab", None))
        return constrain(jnp.take(table, input_ids, axis=0), ("act_batch", "act_len", "act_embed"))

    def __call__(self, inputs_embeds: jax.Array, position_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """inputs_embeds [B, L, D], position_ids [B, 3, L], attention_mask [B, L] -> final hidden [B, L, D]."""
        t = self.cfg.text
        cos, sin = rope.text_cos_sin(jnp.swapaxes(position_ids, 0, 1), t.head_dim, t.rope_theta, t.mrope_section)
        # Causal within the real tokens (segment 1); padding, on either side, is segment 0.
        segment_ids = (attention_mask > 0).astype(jnp.int32)
        x = scan_layers(self.layers, inputs_embeds, cos, sin, segment_ids, remat_policy=self.cfg.remat_policy)
        return self.norm(x)
