"""The held-out evaluation hook: fixed batches, InfoNCE and P@1 equal a numpy brute force on the final model."""
from __future__ import annotations

import numpy as np

from vlm2geovec_jax.models.presets import model_config
from vlm2geovec_jax.train import data as data_lib
from vlm2geovec_jax.train import trainer
from vlm2geovec_jax.train.config import load_config
from vlm2geovec_jax.train.eval_hook import eval_source_config
from vlm2geovec_jax.train.metrics_log import read_metrics
from vlm2geovec_jax.weights.checkpoint import load_model

TINY = "configs/tiny.py"


def _numpy_info_nce(q, t, ids, temperature):
    """Cross-entropy of each query over every target (false negatives, equal ids, removed) and top-1 hits."""
    group = len(t) // len(q)
    logits = q.astype(np.float64) @ t.T.astype(np.float64) / temperature
    losses, hits = [], []
    for i, row in enumerate(logits):
        pos = i * group
        keep = (ids != ids[pos]) | (np.arange(len(t)) == pos)
        kept = np.where(keep, row, -np.inf)
        losses.append(np.log(np.exp(kept - kept.max()).sum()) + kept.max() - row[pos])
        hits.append(np.argmax(kept) == pos)
    return float(np.mean(losses)), float(np.mean(hits))


def test_eval_hook_logs_the_held_out_loss_of_the_fixed_set(tmp_path):
    config = load_config(TINY, ["num_steps=4", "eval.every=3", "eval.num_batches=2", "eval.temperature=0.1",
                                "trainable=full", "optimizer.lr=3e-3"])
    trainer.train(config, tmp_path, progress=False)
    evals = [m for m in read_metrics(tmp_path) if "eval_loss" in m]
    assert [m["step"] for m in evals] == [3, 4]  # every 3 steps and at the end
    assert evals[0]["eval_loss"] != evals[1]["eval_loss"]

    # Brute force on the exported model over the same fixed batches, drawn independently of the trainer.
    model = load_model(tmp_path / "model")
    source = iter(data_lib.make_source(model.cfg, eval_source_config(config), process_index=0, process_count=1))
    batches = [next(source) for _ in range(2)]
    q = np.concatenate([np.asarray(model(b["query"])) for b in batches])
    t = np.concatenate([np.asarray(model(b["target"])) for b in batches])
    ids = np.concatenate([b["target_ids"] for b in batches])
    loss, p_at_1 = _numpy_info_nce(q, t, ids, 0.1)
    np.testing.assert_allclose(evals[1]["eval_loss"], loss, rtol=1e-4)
    np.testing.assert_allclose(evals[1]["eval_p_at_1"], p_at_1)
    assert evals[1]["eval_queries"] == len(q) == 2 * config.batch_size


def test_evaluation_batches_do_not_depend_on_the_model_size():
    config = load_config(TINY, ["eval.every=1"])
    small = model_config("tiny")
    wide = small.replace(text=small.text.__class__(**{**small.text.__dict__, "hidden_size": 128,
                                                    "mrope_section": (4, 6, 6)}))
    a = next(iter(data_lib.make_source(small, eval_source_config(config), process_index=0, process_count=1)))
    b = next(iter(data_lib.make_source(wide, eval_source_config(config), process_index=0, process_count=1)))
    train = next(iter(data_lib.make_source(small, config, process_index=0, process_count=1)))
    np.testing.assert_array_equal(a["query"].input_ids, b["query"].input_ids)
    np.testing.assert_array_equal(a["target_ids"], b["target_ids"])
    assert not np.array_equal(a["query"].input_ids, train["query"].input_ids)  # held out from training
