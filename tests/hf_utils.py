"""Shared helpers for tests that compare against transformers' PyTorch Qwen2-VL (skipped without torch)."""
from __future__ import annotations

import numpy as np
import pytest

from vlm2geovec_jax.models.config import ModelConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def hf_model(cfg: ModelConfig, seed: int = 0, dtype=None):
    """A randomly initialised transformers Qwen2VLForConditionalGeneration with our config's shapes."""
    torch.manual_seed(seed)
    hf_cfg = transformers.Qwen2VLConfig(**cfg.to_hf(torch_dtype="float32"))
    model = transformers.Qwen2VLForConditionalGeneration(hf_cfg).eval()
    with torch.no_grad():  # non-trivial norms, so a swapped weight/bias cannot hide
        for name, p in model.named_parameters():
            if "norm" in name or "ln_q" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model.to(dtype) if dtype is not None else model


def hf_embed(model, input_ids, attention_mask, pixel_values=None, image_grid_thw=None) -> np.ndarray:
    """VLM2Vec's embedding in PyTorch: last non-pad token of the final layer, L2-normalised."""
    ids = torch.as_tensor(np.asarray(input_ids), dtype=torch.long)
    mask = torch.as_tensor(np.asarray(attention_mask), dtype=torch.long)
    kwargs = {}
    if pixel_values is not None:
        kwargs = dict(pixel_values=torch.as_tensor(np.asarray(pixel_values)).to(model.dtype),
                      image_grid_thw=torch.as_tensor(np.asarray(image_grid_thw), dtype=torch.long),
                      mm_token_type_ids=(ids == model.config.image_token_id).long())
    with torch.no_grad():
        hidden = model.model(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
    last = mask.shape[1] - 1 - mask.flip(-1).argmax(-1)
    pooled = hidden[torch.arange(len(last)), last].float()
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()
