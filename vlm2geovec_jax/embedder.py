"""The Python API: ``vlm2geovec_jax.load(path)`` returns an Embedder.

``Embedder.embed_tokens`` takes exactly the arrays transformers' Qwen2-VL takes (processor output) and returns
numpy embeddings. Text lengths are padded to buckets of four steps per octave (at most 25% padding) and image
patch counts to powers of two, so a stream of batches compiles a bounded number of programs.

The model is split into its graph and its parameters once, when the Embedder is made, and the jitted function
takes the parameters as a pytree: a call costs no NNX graph traversal (on small models that traversal costs
more than the forward pass). Make a new Embedder after changing the model's parameters.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.encoder import Encoder
from vlm2geovec_jax.models.model_inputs import EncoderInputs, bucket, pad_batch_rows, prepare_inputs


@functools.partial(jax.jit, static_argnums=0)
def _embed(graphdef: nnx.GraphDef, state: nnx.State, batch: EncoderInputs) -> jax.Array:
    return nnx.merge(graphdef, state)(batch)


class Embedder:
    """A loaded encoder with a jitted embedding function."""

    def __init__(self, model: Encoder, *, path: str | os.PathLike | None = None):
        self.model = model
        self.path = Path(path) if path is not None else None
        self._graphdef, self._state = nnx.split(model)

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    def embed_inputs(self, batch: EncoderInputs) -> np.ndarray:
        return np.asarray(_embed(self._graphdef, self._state, batch))

    def embed_tokens(self, input_ids, attention_mask=None, pixel_values=None, image_grid_thw=None) -> np.ndarray:
        """[batch, dim] L2-normalised float32 embeddings for transformers-style Qwen2-VL inputs."""
        input_ids = np.asarray(input_ids)
        patches = None  # images: pad every image to a power-of-two patch count (few compiled shapes)
        if image_grid_thw is not None and len(image_grid_thw):
            patches = bucket(int(np.max(np.prod(np.asarray(image_grid_thw), axis=-1))), 64)
        batch = prepare_inputs(self.config, input_ids, attention_mask, pixel_values, image_grid_thw,
                               patches_per_image=patches)
        rows, length = input_ids.shape
        batch = pad_batch_rows(batch, bucket(rows, 1), bucket(length, steps_per_octave=4))
        return self.embed_inputs(batch)[:rows]


def load(path: str | os.PathLike, **config_overrides) -> Embedder:
    """An Embedder from a vlm2geovec model checkpoint or a transformers Qwen2-VL directory.

    ``config_overrides`` set runtime fields of the model config, e.g. ``attention="splash"`` (the kernel:
    auto | xla | cudnn | splash; one this machine cannot run is a ValueError here) or ``remat_policy``.
    """
    from vlm2geovec_jax.weights import checkpoint, convert

    if checkpoint.is_model_checkpoint(path):
        return Embedder(checkpoint.load_model(path, **config_overrides), path=path)
    if (Path(path) / "config.json").is_file():
        model, _ = convert.load_hf_model(path, progress=False, **config_overrides)
        return Embedder(model, path=path)
    raise FileNotFoundError(f"{path}: neither a vlm2geovec model checkpoint (model_config.json + params/) "
                            "nor a transformers checkpoint directory (config.json)")
