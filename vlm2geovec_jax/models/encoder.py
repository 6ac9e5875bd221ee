"""The VLM2GeoVec encoder: Qwen2-VL used as an embedder.

ViT -> 2x2 merger -> merged image tokens scattered into the ``<|image_pad|>`` slots -> Qwen2 decoder ->
final hidden state of the last non-pad token -> L2 normalisation (VLM2Vec's ``pooling='last'``,
``normalize=True``). Left and right padding both work: the pooled token is the last position whose mask is 1.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vlm2geovec_jax.models import attention
from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.language import LanguageModel
from vlm2geovec_jax.models.layers import INIT_STD
from vlm2geovec_jax.models.model_inputs import EncoderInputs
from vlm2geovec_jax.models.vision import VisionTower


def last_token_index(attention_mask: jax.Array) -> jax.Array:
    """Index of the last position with mask 1 in each row (works for left, right or no padding)."""
    length = attention_mask.shape[-1]
    return length - 1 - jnp.argmax(jnp.flip(attention_mask, axis=-1) > 0, axis=-1)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


class Encoder(nnx.Module):
    """Qwen2-VL (vision tower + language model) returning one unit vector per sequence."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        attention.check(cfg)  # an attention kernel this platform cannot run fails here, not inside jit
        self.cfg = cfg
        self.visual = VisionTower(cfg, rngs=rngs)
        self.language = LanguageModel(cfg, rngs=rngs)
        # Never used to embed; kept so an untied checkpoint (Qwen2-VL-7B) round-trips to PyTorch unchanged.
        self.lm_head = None if cfg.tie_word_embeddings else nnx.Param(
            jax.random.normal(rngs.params(), (cfg.text.vocab_size, cfg.hidden_size),
                              jnp.dtype(cfg.param_dtype)) * INIT_STD, logical_axes=("vocab", "embed"))

    def input_embeddings(self, batch: EncoderInputs) -> jax.Array:
        """Token embeddings with every image-pad slot replaced by its merged image token."""
        embeds = self.language.embed(batch.input_ids)
        rows, slots, patches, _ = batch.pixel_values.shape
        image_tokens = self.visual(batch.pixel_values.reshape(rows * slots, patches, -1),
                                   batch.vision_rotary_ids.reshape(rows * slots, patches, 2),
                                   batch.vision_frame_ids.reshape(rows * slots, patches))
        image_tokens = image_tokens.reshape(rows, -1, image_tokens.shape[-1]).astype(embeds.dtype)
        index = batch.image_token_index
        gathered = jnp.take_along_axis(image_tokens, jnp.maximum(index, 0)[..., None], axis=1)
        return jnp.where((index >= 0)[..., None], gathered, embeds)

    def hidden_states(self, batch: EncoderInputs) -> jax.Array:
        """Final-layer (normed) hidden states [B, L, D]."""
        return self.language(self.input_embeddings(batch), batch.position_ids, batch.attention_mask)

    def __call__(self, batch: EncoderInputs) -> jax.Array:
        """L2-normalised float32 embeddings [B, D]."""
        hidden = self.hidden_states(batch)
        last = last_token_index(batch.attention_mask)
        pooled = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
        return l2_normalize(pooled)

