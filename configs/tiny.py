"""The tiny random encoder on synthetic pairs: for tests and smoke runs (CPU, seconds).

    vlm2geovec train --config configs/tiny.py --workdir runs/tiny
"""
from vlm2geovec_jax.models.presets import get_preset
from vlm2geovec_jax.train.config import default_config


def get_config():
    c = default_config()
    c.model = get_preset("tiny")
    c.trainable = "lora"
    c.lora.rank = 4
    c.lora.alpha = 8.0
    c.batch_size = 16
    c.num_steps = 4
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 1
    c.data.num_concepts = 64
    c.checkpoint.every = 2
    c.log_every = 1
    return c
