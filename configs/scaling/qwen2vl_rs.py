"""A pod study: ladder rungs r09..r15 and Qwen2-VL-2B trained from scratch on the RS mixture, at four compute
budgets (isoFLOP: each rung's steps solved from its FLOPs per example), scored on the same held-out batches.

    vlm2geovec scale run --study configs/scaling/qwen2vl_rs.py --workdir gs://BUCKET/scaling --emit emitted/
    sh emitted/commands.sh   # one `vlm2geovec train` per run, each with --distributed on a pod;
                             # pass --config.data.pipeline.data_dir=... --config.data.pipeline.tokenizer=...
    vlm2geovec scale fit --workdir gs://BUCKET/scaling   # after copying each run's result.json (see run.py)
"""
from pathlib import Path

import ml_collections

from vlm2geovec_jax.train.config import load_config

IMAGE_SIZE = 448
PROMPT_TOKENS = 256


def base():
    c = load_config(Path(__file__).resolve().parents[1] / "qwen2vl_2b_lora.py")
    c.trainable = "full"  # from scratch: every weight, vision included
    c.optimizer.schedule = "cosine"
    c.optimizer.end_lr_fraction = 0.1
    c.optimizer.weight_decay = 0.1
    c.loss.temperature = 0.02
    c.checkpoint.every = 500
    return c


def get_config():
    return ml_collections.ConfigDict(dict(
        name="qwen2vl_rs",
        base=base(),
        rungs=[f"r{k:02d}" for k in range(9, 16)] + ["qwen2vl_2b"],
        tokens="",
        dtype="bfloat16",
        budgets=dict(kind="flops", amounts=[1e18, 3e18, 1e19, 3e19]),
        lr=dict(base=3e-4, base_width=1024, exponent=1.0),
        warmup_fraction=0.05,
        seeds=[0],
        eval=dict(every=500, num_batches=4, batch_size=256, split="test", seed=1234, temperature=0.02),
        flops=dict(prompt_tokens=PROMPT_TOKENS, image_size=IMAGE_SIZE),
        checkpoint_every=500,
    ))
