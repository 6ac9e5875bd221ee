"""GradCache: exactly the dense gradient, on one device and on 8, with chunks that stay sharded."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vlm2geovec_jax.train.grad_cache import grad_cache_value_and_grad
from vlm2geovec_jax.train.loss import content_id_words, info_nce

SEQ, FEAT, HID, DIM, CHUNKS, H = 3, 5, 16, 8, 4, 1  # SEQ x FEAT marks input-shaped tensors in HLO
SEEN_SHARDINGS = []


def embed(params, inputs, key=None):
    """The toy encoder, recording the sharding each chunk gets at compile time."""
    if isinstance(inputs["x"], jax.core.Tracer):
        jax.debug.inspect_array_sharding(inputs["x"], callback=SEEN_SHARDINGS.append)
    return encode(params, inputs, key)


def encode(params, inputs, key=None):
    """Toy encoder: token MLP, weighted mean pool, projection, dropout when keyed, L2 norm."""
    h = jnp.tanh(inputs["x"] @ params["w1"] + params["b1"])
    pooled = (h * inputs["w"][..., None]).sum(1) / inputs["w"].sum(1, keepdims=True)
    if key is not None:  # dropout from a cheap integer hash of the key (threefry compiles slowly on CPU)
        idx = jnp.arange(pooled.size, dtype=jnp.uint32).reshape(pooled.shape)
        words = jax.random.key_data(key).astype(jnp.uint32)
        keep = (((idx * jnp.uint32(2654435761)) ^ words[0]) * jnp.uint32(2246822519) + words[1]) >> 28 < 11
        pooled = jnp.where(keep, pooled / (11 / 16), 0.0)
    e = pooled @ params["w2"]
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True)


def make_loss(nq):
    """Bidirectional InfoNCE with hard negatives, a learnable temperature, false negatives and padding."""
    ids = np.arange(nq * (1 + H), dtype=np.int64)
    ids[2 * (1 + H)] = ids[0]
    t_valid = np.ones(nq * (1 + H), bool)
    t_valid[-1] = False
    q_valid = np.arange(nq) != 3

    def loss_fn(params, q, t):
        return info_nce(q, t, log_temperature=params["log_t"], direction="bidirectional",
                        query_valid=q_valid, target_valid=t_valid, target_ids=content_id_words(ids))
    return loss_fn


def make_data(nq=32, seed=0):
    rng = np.random.default_rng(seed)
    f32 = lambda *s: rng.normal(size=s).astype(np.float32)
    params = {"w1": f32(FEAT, HID), "b1": f32(HID), "w2": f32(HID, DIM) * 0.5,
              "log_t": np.float32(np.log(0.05))}
    inputs = lambda b: {"x": f32(b, SEQ, FEAT), "w": rng.uniform(0.5, 1.0, (b, SEQ)).astype(np.float32)}
    return params, inputs(nq), inputs(nq * (1 + H))


def dense(loss_fn, params, q_in, t_in, embed_fn=embed):
    (loss, metrics), grads = jax.jit(jax.value_and_grad(
        lambda p: loss_fn(p, embed_fn(p, q_in), embed_fn(p, t_in)), has_aux=True))(params)
    return loss, metrics, grads


def assert_same(got, want):
    loss, metrics, grads = got
    np.testing.assert_allclose(loss, want[0], rtol=1e-5)
    for k in want[1]:
        np.testing.assert_allclose(metrics[k], want[1][k], rtol=1e-5)
    for k in want[2]:
        np.testing.assert_allclose(grads[k], want[2][k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.fixture(scope="module")
def mesh():
    return Mesh(np.array(jax.devices()), ("data",))


@pytest.fixture(scope="module")
def data():
    params, q_in, t_in = make_data()
    loss_fn = make_loss(32)
    return params, q_in, t_in, loss_fn, jax.device_get(dense(loss_fn, params, q_in, t_in))


def test_single_device_equals_dense(data):
    params, q_in, t_in, loss_fn, want = data
    gc = jax.jit(functools.partial(grad_cache_value_and_grad, embed, loss_fn, num_chunks=CHUNKS))
    got = gc(params, q_in, t_in)
    assert_same(got, want)
    assert abs(float(got[2]["log_t"])) > 1e-3  # the temperature really gets a gradient


@pytest.fixture(scope="module")
def sharded_run(data, mesh):
    params, q_in, t_in, loss_fn, _ = data
    batch = NamedSharding(mesh, P("data"))
    args = (jax.device_put(params, NamedSharding(mesh, P())), jax.device_put(q_in, batch),
            jax.device_put(t_in, batch))
    gc = jax.jit(functools.partial(grad_cache_value_and_grad, embed, loss_fn, num_chunks=CHUNKS,
                                   mesh=mesh))
    SEEN_SHARDINGS.clear()
    compiled = gc.lower(*args).compile()
    seen = list(SEEN_SHARDINGS)
    return compiled(*args), compiled.as_text(), seen


def test_mesh_of_8_equals_dense(data, sharded_run):
    got, _, _ = sharded_run
    assert_same(got, data[-1])


def input_collectives(hlo: str) -> list[str]:
    """Collective ops whose result is input-shaped ([..., SEQ, FEAT] or [n, SEQ]) in compiled HLO."""
    op = re.compile(r"=\s*(.*?)\s(all-gather|all-gather-start|all-to-all|collective-permute|all-reduce|"
                    r"reduce-scatter)\(")
    shape = re.compile(rf"\[(\d+,)*{SEQ},{FEAT}\]|\[\d+,{SEQ}\]")
    return [line for line in hlo.splitlines() if (m := op.search(line)) and shape.search(m.group(1))]


def test_chunks_stay_sharded_over_all_devices(sharded_run):
    """Every chunk, in both passes and on both sides, is split over all 8 devices, and no collective
    moves input-shaped data: only embeddings, logit statistics and parameter gradients travel."""
    _, hlo, seen = sharded_run
    assert len(seen) == 4  # pass 1 and pass 3, queries and targets
    for sharding in seen:
        assert sharding.spec == P("data") and len(sharding.device_set) == 8
    assert input_collectives(hlo) == []
    assert re.search(r"all-gather\(", hlo)  # the global loss does gather embeddings


def test_collective_check_detects_contiguous_chunks(data, mesh):
    """The check above has teeth: contiguous chunks put each chunk on a subset of devices."""
    params, q_in, _, _, _ = data

    def contiguous(p, inputs):
        chunks = jax.tree.map(lambda x: x.reshape(CHUNKS, -1, *x.shape[1:]), inputs)
        return jax.lax.map(lambda c: encode(p, c), chunks)
    q_sharded = jax.device_put(q_in, NamedSharding(mesh, P("data")))
    hlo = jax.jit(contiguous).lower(params, q_sharded).compile().as_text()
    assert input_collectives(hlo) != []


def test_remat_with_policy_equals_dense(data):
    params, q_in, t_in, loss_fn, want = data
    gc = jax.jit(functools.partial(grad_cache_value_and_grad, embed, loss_fn, num_chunks=CHUNKS,
                                   remat=True, remat_policy=jax.checkpoint_policies.nothing_saveable))
    assert_same(gc(params, q_in, t_in), want)


def test_dropout_keys_replay_in_both_passes(data):
    """With rng, chunk c of each side uses one key in passes 1 and 3: the gradient is that of the
    dense loss over the same per-chunk dropout masks."""
    params, q_in, t_in, loss_fn, _ = data
    rng = jax.random.key(3, impl="unsafe_rbg")  # any key type works; this one compiles fastest on CPU
    keys = [jax.random.split(k, CHUNKS) for k in jax.random.split(rng)]

    def chunked_embed(p, inputs, side_keys):  # differentiated directly, no gradient caching
        chunks = jax.tree.map(lambda x: x.reshape(-1, CHUNKS, *x.shape[1:]).swapaxes(0, 1), inputs)
        outs = jax.lax.map(lambda a: encode(p, *a), (chunks, side_keys))
        return outs.swapaxes(0, 1).reshape(-1, DIM)  # row c + n*j came from chunk c, position j

    want = jax.jit(jax.value_and_grad(
        lambda p: loss_fn(p, chunked_embed(p, q_in, keys[0]), chunked_embed(p, t_in, keys[1])),
        has_aux=True))(params)
    gc = jax.jit(functools.partial(grad_cache_value_and_grad, embed, loss_fn, num_chunks=CHUNKS))
    got = gc(params, q_in, t_in, rng=rng)
    assert_same(got, (want[0][0], want[0][1], want[1]))
    assert abs(float(got[0]) - float(data[-1][0])) > 1e-3  # dropout was really applied


@pytest.mark.parametrize("change,message", [
    (dict(num_chunks=0), "num_chunks=0; expected a positive int"),
    (dict(num_chunks=3), "query_inputs has batch 32; expected a multiple of num_chunks (3)"),
    (dict(q_in={"x": np.zeros((32, SEQ, FEAT)), "w": np.zeros((16, SEQ))}),
     "query_inputs['x'] has shape (32, 3, 5); expected the leading batch axis 16 of query_inputs['w'] "
     "(16, 3)"),
    (dict(mesh=True, num_chunks=8), "query_inputs has batch 32; expected a multiple of num_chunks (8) x "
                                    "devices on 'data' (8)"),
    (dict(mesh=True, batch_axis="fsdp"), "batch_axis 'fsdp' is not an axis of the mesh"),
    (dict(embed_fn=lambda p, x: embed(p, x)[0]), "embed_fn returned shape (8,); expected [chunk, D]"),
])
def test_bad_arguments_are_named(data, mesh, change, message):
    params, q_in, t_in, loss_fn, _ = data
    kwargs = dict(num_chunks=change.get("num_chunks", CHUNKS), batch_axis=change.get("batch_axis", "data"),
                  mesh=mesh if change.get("mesh") else None)
    with pytest.raises(ValueError) as err:
        grad_cache_value_and_grad(change.get("embed_fn", embed), loss_fn, params, change.get("q_in", q_in),
                                  t_in, **kwargs)
    assert message in str(err.value)
