"""The trainer on 8 fake CPU devices: sharding-invariant gradients, exact GradCache, learning, configs."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from vlm2geovec_jax import sharding
from vlm2geovec_jax.train import data as data_lib
from vlm2geovec_jax.train import trainer
from vlm2geovec_jax.train.config import apply_override, load_config, validate
from vlm2geovec_jax.train.metrics_log import read_metrics
from vlm2geovec_jax.weights.checkpoint import load_model

TINY = "configs/tiny.py"


def _loss_and_grads(config, mesh, tasks=None):
    with jax.set_mesh(mesh):
        model = trainer.build_model(config, mesh)
        graphdef, params, frozen = trainer.split_trainable(model, config)
        source = data_lib.make_source(model.cfg, config, process_index=0, process_count=1)
        host = source.batch(0)
        if tasks is not None:
            host["tasks"] = np.asarray(tasks)  # the task of each sub-batch, as the pipeline gives it
        batch = trainer.to_global(host, mesh)
        loss, metrics, grads = jax.jit(trainer.make_grad_fn(graphdef, config, mesh))(params, frozen, batch)
        return float(loss), jax.tree.map(np.asarray, grads)


@pytest.mark.parametrize("trainable", ["lora", "full"])
def test_loss_and_gradients_do_not_depend_on_the_mesh(trainable):
    config = load_config(TINY, [f"trainable={trainable}", "loss.learn_temperature=true"])
    single = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    loss0, grads0 = _loss_and_grads(config, single)
    assert np.isfinite(loss0) and max(np.abs(g).max() for g in jax.tree.leaves(grads0)) > 0
    for shape in [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 2, 4)]:
        loss, grads = _loss_and_grads(config, sharding.make_mesh(shape))
        np.testing.assert_allclose(loss, loss0, rtol=1e-5, err_msg=str(shape))
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads0)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max(), err_msg=str(shape))


def test_same_task_negatives_reach_the_loss():
    """Flag on: two tasks in one batch mask each other's targets (a lower loss); one task changes nothing."""
    mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    off = _loss_and_grads(load_config(TINY, []), mesh, tasks=["caption", "vqa"])[0]
    on = load_config(TINY, ["loss.same_task_negatives=true"])
    assert _loss_and_grads(on, mesh, tasks=["caption", "caption"])[0] == pytest.approx(off, rel=1e-6)
    assert _loss_and_grads(on, mesh, tasks=["caption", "vqa"])[0] < off - 1e-3


def test_grad_cache_with_four_chunks_equals_the_dense_gradient():
    mesh = sharding.make_mesh((2, 2, 2))
    dense = load_config(TINY, ["trainable=full"])
    cached = load_config(TINY, ["trainable=full", "grad_cache.num_chunks=4"])
    loss0, grads0 = _loss_and_grads(dense, mesh)
    loss, grads = _loss_and_grads(cached, mesh)
    np.testing.assert_allclose(loss, loss0, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads0)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * np.abs(b).max())


def test_loss_falls_and_accuracy_rises_on_learnable_pairs(tmp_path):
    config = load_config(TINY, ["num_steps=40", "checkpoint.every=40", "optimizer.lr=1e-3",
                                "loss.temperature=0.05", "trainable=full", "mesh.data=2", "mesh.fsdp=2",
                                "mesh.tensor=2"])
    trainer.train(config, tmp_path, progress=False)
    log = read_metrics(tmp_path)
    assert [m["step"] for m in log] == list(range(1, 41))
    mean = lambda rows, key: float(np.mean([m[key] for m in rows]))
    first, last = log[:5], log[-5:]
    assert mean(last, "loss") < 0.25 * mean(first, "loss"), (mean(first, "loss"), mean(last, "loss"))
    assert mean(first, "accuracy") < 0.4 and mean(last, "accuracy") > 0.8, (mean(first, "accuracy"),
                                                                            mean(last, "accuracy"))
    last = log[-1]
    for key in ("grad_norm", "param_norm", "learning_rate", "examples_per_s", "tokens_per_s"):
        assert key in last
    assert (tmp_path / "model" / "model_config.json").is_file()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_config_overrides_are_typed_and_unknown_keys_fail():
    config = load_config(TINY, ["optimizer.lr=0.5", "grad_cache.num_chunks=2", "loss.learn_temperature=1"])
    assert config.optimizer.lr == 0.5 and config.grad_cache.num_chunks == 2 and config.loss.learn_temperature
    with pytest.raises(ValueError, match=r"unknown key 'optimizer\.lrr'"):
        apply_override(config, "optimizer.lrr=1")
    with pytest.raises(ValueError, match=r"'batch_size': 'many' is not a valid int"):
        apply_override(config, "batch_size=many")
    config.trainable = "everything"
    with pytest.raises(ValueError, match=r"trainable='everything' not in"):
        validate(config)


def test_bfloat16_model_trains_float32_master_weights(tmp_path):
    config = load_config(TINY, ["trainable=full", "num_steps=2", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2",
                                "model.param_dtype=bfloat16", "model.dtype=bfloat16"])
    state = trainer.train(config, tmp_path, progress=False)
    dtypes = {x.dtype for x in jax.tree.leaves(state.params)}
    assert dtypes == {np.dtype("float32")}, dtypes
    assert np.isfinite(read_metrics(tmp_path)[-1]["loss"])
    exported = nnx.state(load_model(tmp_path / "model"), nnx.Param)
    assert {x.dtype for x in jax.tree.leaves(exported)} == {np.dtype(jnp.bfloat16)}


def test_non_finite_steps_are_skipped_counted_and_stop_the_run():
    from vlm2geovec_jax.train.optimizer import make_optimizer

    config = load_config(TINY, ["trainable=full", "loss.learn_temperature=true"])
    mesh = sharding.make_mesh((1, 1, 1), devices=jax.devices()[:1])
    with jax.set_mesh(mesh):
        model = trainer.build_model(config, mesh)
        graphdef, params, frozen = trainer.split_trainable(model, config)
        tx, schedule = make_optimizer(config.optimizer, config.num_steps)
        step = jax.jit(trainer.make_train_step(trainer.make_grad_fn(graphdef, config, mesh), tx, schedule))
        source = data_lib.make_source(model.cfg, config, process_index=0, process_count=1)
        batch = trainer.to_global(source.batch(0), mesh)
        opt_state = tx.init(params)
        poisoned = {**params, "log_temperature": jnp.float32(jnp.nan)}  # NaN loss, NaN gradients
        skipped, opt_state, metrics = step(poisoned, opt_state, frozen, batch, jnp.int32(0))
        assert (int(metrics["nonfinite_in_a_row"]), int(metrics["nonfinite_total"])) == (1, 1)
        for got, was in zip(jax.tree.leaves(skipped["model"]), jax.tree.leaves(params["model"])):
            np.testing.assert_array_equal(got, was)  # no update was applied
        updated = params
        for i in (1, 2):  # the first applied update runs at the warm-up's learning rate 0
            updated, opt_state, metrics = step(updated, opt_state, frozen, batch, jnp.int32(i))
        assert (int(metrics["nonfinite_in_a_row"]), int(metrics["nonfinite_total"])) == (0, 1)
        assert any(not np.array_equal(got, was)
                   for got, was in zip(jax.tree.leaves(updated["model"]), jax.tree.leaves(params["model"])))
    trainer._check_finite({"nonfinite_in_a_row": 2}, 6, 3)  # under the limit: the run goes on
    with pytest.raises(FloatingPointError, match="step 7: 3 steps in a row had a non-finite loss"):
        trainer._check_finite({"nonfinite_in_a_row": 3}, 7, 3)


def test_train_bench_steps_both_sides_from_the_same_weights():
    """bench.train compares like with like: on the same weights and batch the first InfoNCE loss of our jitted
    step equals the PyTorch step's (transformers' Qwen2-VL), so its speed ratio times the same computation."""
    pytest.importorskip("torch")
    from vlm2geovec_jax.bench.train import bench

    row = bench("tiny", batch=4, steps=1, peak=1e9, peak_label="test")
    assert abs(row["first_loss_jax"] - row["first_loss_torch"]) <= 1e-4 * abs(row["first_loss_torch"])
    assert row["jax_ex_per_s"] > 0 and row["torch_ex_per_s"] > 0
