"""The largest batch a config admits, as the shapes plan compiles for (and states in its report).

Train: the synthetic source's exact shapes, or for the grain pipeline the worst step it can produce: both sides
with an image at the full patch budget (inputs/pipeline.py: fixed_size exactly, else max_pixels rounded down to
merge windows) and the longest sequence, which is the largest length bucket but at least the image's tokens plus
a prompt. Eval: the Embedder's padding of the same items (power-of-two patches, the length buckets of the
processing the run's model artifact will carry: inputs/processing.py) at the eval batch size.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from vlm2geovec_jax.models.config import ModelConfig
from vlm2geovec_jax.models.model_inputs import bucket

PROMPT_TOKENS = 128   # instruction, template and text around the image; sequences are padded to 128s


@dataclasses.dataclass(frozen=True)
class Shapes:
    """Rows, tokens and image patches per row of each side; ``notes`` say how they were chosen."""

    query_rows: int
    target_rows: int
    length: int
    patches: int           # per row (one image slot); merge**2 for text only
    eval_rows: int
    eval_length: int
    eval_patches: int
    notes: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        return [f"train: query [{self.query_rows}, {self.length}] and target [{self.target_rows}, {self.length}] "
                f"tokens, one image of {self.patches} patches a row",
                f"eval: [{self.eval_rows}, {self.eval_length}] tokens, one image of {self.eval_patches} patches a row",
                *self.notes]


def config_shapes(config: ml_collections.ConfigDict, eval_rows: int) -> Shapes:
    """The shapes of the largest train step and eval batch ``config`` admits."""
    cfg = ModelConfig.from_dict(config.model.to_dict())
    window = cfg.vision.spatial_merge_size ** 2
    if config.data.kind == "synthetic":
        d = config.data
        length = max(d.query_length, d.target_length)
        notes = (f"synthetic data: text only, query {d.query_length} and target {d.target_length} tokens "
                 f"(the longer side taken for both)",)
        return Shapes(config.batch_size, config.batch_size, length, window, eval_rows,
                      _processing(config).padded_length(length), window, notes)
    p = config.data.pipeline
    patches = _patch_budget(p)
    image_tokens = patches // window
    needed = -(-(image_tokens + PROMPT_TOKENS) // 128) * 128
    buckets = tuple(p.get("length_buckets", ())) or (needed,)
    length = max(buckets[-1], needed)
    notes = [f"pipeline: every row an image of {patches} patches ({image_tokens} tokens), both sides, "
             f"padded to {length} tokens"]
    if length > buckets[-1]:
        notes.append(f"the config's largest length bucket {buckets[-1]} cannot hold {image_tokens} image tokens "
                     f"+ {PROMPT_TOKENS} of prompt: train would skip such items; planned for {length} "
                     f"(set --config.data.pipeline.length_buckets to include it)")
    rows = config.batch_size * (1 + p.get("num_negatives", 0))
    return Shapes(config.batch_size, rows, length, patches, eval_rows, _processing(config).padded_length(length),
                  bucket(patches, 64), tuple(notes))


def _processing(config: ml_collections.ConfigDict):
    """The processing the run's model artifact will carry (train/data.py writes the same from the config)."""
    from vlm2geovec_jax.inputs.processing import Processing, from_pipeline_config
    return from_pipeline_config(config.data.pipeline) if config.data.kind == "pipeline" else Processing()


def _patch_budget(p: ml_collections.ConfigDict) -> int:
    from vlm2geovec_jax.inputs.pipeline import patch_budget
    from vlm2geovec_jax.inputs.processing import from_pipeline_config
    return patch_budget(from_pipeline_config(p).image)
