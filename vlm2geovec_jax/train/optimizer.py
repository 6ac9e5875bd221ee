"""optax AdamW with warmup and decay, global-norm clipping, a weight-decay mask and a non-finite guard."""
from __future__ import annotations

import jax
import ml_collections
import optax

DECAYED = ("kernel", "lora_a", "lora_b", "embed_tokens", "lm_head")  # matrices; never biases, norms, scalars


def learning_rate(cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warmup to ``lr``, then linear or cosine decay to ``lr * end_lr_fraction`` (or constant)."""
    warmup = min(cfg.warmup_steps, num_steps)
    decay_steps = max(num_steps - warmup, 1)
    end = cfg.lr * cfg.end_lr_fraction
    if cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=cfg.end_lr_fraction)
    elif cfg.schedule == "linear":
        after = optax.linear_schedule(cfg.lr, end, decay_steps)
    else:
        after = optax.constant_schedule(cfg.lr)
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), after], [warmup])


def _decay_mask(params):
    def decayed(path, leaf):
        names = [getattr(p, "key", getattr(p, "name", "")) for p in path]
        return any(str(n) in DECAYED for n in names) and getattr(leaf, "ndim", 0) >= 2
    return jax.tree_util.tree_map_with_path(decayed, params)


def make_optimizer(cfg: ml_collections.ConfigDict, num_steps: int) -> tuple[optax.GradientTransformation,
                                                                             optax.Schedule]:
    """The transformation and its schedule.

    Non-finite gradients skip the update (``optax.apply_if_finite``) and are counted in the state; the
    trainer stops after ``max_nonfinite_steps`` in a row (``nonfinite_count``).
    """
    schedule = learning_rate(cfg, num_steps)
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip > 0 else optax.identity(),
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                    mask=_decay_mask),
    )
    # A large cap: apply_if_finite would otherwise apply a non-finite update after that many skips.
    return optax.apply_if_finite(tx, max_consecutive_errors=10 ** 9), schedule


def nonfinite_count(opt_state) -> jax.Array:
    """Consecutive skipped (non-finite) steps so far."""
    return opt_state.notfinite_count


def total_nonfinite(opt_state) -> jax.Array:
    return opt_state.total_notfinite
