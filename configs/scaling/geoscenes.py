"""The embedded default study: six ladder rungs x three data budgets on GeoScenes, on 2 CPU cores.

Rungs r00..r05 of the ladder (0.1M to 1.7M non-embedding parameters) with the demo tokenizer's 512-token
vocabulary, trained from scratch on configs/demo.py's task mixture at three budgets of training examples
(1:2:4), each scored at its end on the same 128 held-out queries from validation tiles against the same 256
candidates (the study's world has no test split: nothing here is a reported model figure). The learning rate
falls as width^-1.4, 1e-3 at r00 to 2.4e-4 at r05: the best of three rates tried at r00 and at r05 (1,280
examples, scored on the validation set), joined by a power of the width (docs/scaling.md).

    vlm2geovec scale run --study configs/scaling/geoscenes.py --workdir runs/scaling
    vlm2geovec scale fit --workdir runs/scaling
"""
from pathlib import Path

import ml_collections

from vlm2geovec_jax.train.config import load_config

IMAGE_SIZE = 56
PROMPT_TOKENS = 96  # the length bucket: FLOPs are counted for padded sequences, as the steps compute them


def base():
    c = load_config(Path(__file__).resolve().parents[1] / "demo.py")
    c.batch_size = 16
    c.loss.learn_temperature = False  # the held-out loss is read at one fixed temperature: train at it too
    c.loss.temperature = 0.05
    c.optimizer.schedule = "cosine"
    c.data.pipeline.sub_batch_size = 4
    c.data.pipeline.length_buckets = (PROMPT_TOKENS,)
    c.data.pipeline.fixed_size = (IMAGE_SIZE, IMAGE_SIZE)
    c.data.pipeline.min_pixels = IMAGE_SIZE * IMAGE_SIZE
    c.data.pipeline.max_pixels = IMAGE_SIZE * IMAGE_SIZE
    c.log_every = 20
    return c


def get_config():
    return ml_collections.ConfigDict(dict(
        name="geoscenes",
        base=base(),
        rungs=[f"r{k:02d}" for k in range(6)],
        tokens="tiny",
        dtype="float32",
        budgets=dict(kind="examples", amounts=[640, 1280, 2560]),
        lr=dict(base=3.8e-4, base_width=128, exponent=1.4),
        warmup_fraction=0.1,
        seeds=[0],
        eval=dict(every=1000, num_batches=8, batch_size=16, split="validation", seed=1234, temperature=0.05),
        flops=dict(prompt_tokens=PROMPT_TOKENS, image_size=IMAGE_SIZE),
        checkpoint_every=40,
        geoscenes=dict(name="scaling", seed=0, tile_size=112, num_train=1500, num_validation=300, num_test=0),
    ))
