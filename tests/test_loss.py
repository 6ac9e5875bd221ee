"""InfoNCE: parity with a brute-force numpy loop, sharding invariance, and masks that really mask."""
import itertools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vlm2geovec_jax.train.loss import content_id_words, info_nce, query_task_ids


def _unit(rng, n, d):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _batch(seed=0, nq=8, h=0, d=16, padded=False, dup_ids=False):
    """Random unit embeddings plus masks and ids that exercise every option."""
    rng = np.random.default_rng(seed)
    nt = nq * (1 + h)
    q, t = _unit(rng, nq, d), _unit(rng, nt, d)
    q_valid, t_valid = np.ones(nq, bool), np.ones(nt, bool)
    if padded:
        q_valid[[1, 5]] = False  # two padded pairs...
        t_valid[[1 * (1 + h), 5 * (1 + h)]] = False
        t_valid[-1] = False  # ...and one padded target (a padded hard negative when h > 0)
        q_valid[2] = False  # a query whose positive stays a valid column for the others
    ids = np.arange(nt, dtype=np.int64) * 7919 + (1 << 40)  # int64 hashes above 2**32
    if dup_ids:
        ids[3 * (1 + h)] = ids[0]  # two queries share one class name
        ids[6 * (1 + h)] = ids[0]
        ids[-2] = ids[4 * (1 + h)]  # a hard negative (or positive) with the same content as a positive
    return q, t, q_valid, t_valid, ids


def _reference(q, t, temp, direction, q_valid, t_valid, ids, tasks=None):
    """Loop over rows in float64; excluded columns (padding, false negatives, other tasks' targets) are simply
    left out of the softmax."""
    q, t = q.astype(np.float64), t.astype(np.float64)
    nq, nt = len(q), len(t)
    group = nt // nq
    pos = [i * group for i in range(nq)]
    tasks = np.zeros(nq, int) if tasks is None else tasks

    def row(sims, keep, label):
        cols = [j for j in range(len(sims)) if keep(j)]
        z = sims[cols] / temp
        p = np.exp(z - z.max())
        p /= p.sum()
        loss = np.log(np.exp(z - z.max()).sum()) + z.max() - sims[label] / temp
        dlog_t = (sims[label] - (p * sims[cols]).sum()) / temp  # d loss / d log(temperature)
        hit = cols[int(np.argmax(z))] == label
        return loss, dlog_t, hit

    rows = [i for i in range(nq) if q_valid[i] and t_valid[pos[i]]]
    out = {}
    for name in ("q2t", "t2q"):
        losses, grads, hits = [], [], []
        for i in rows:
            if name == "q2t":
                sims = t @ q[i]
                keep = lambda j, i=i: (t_valid[j] and (j == pos[i] or ids[j] != ids[pos[i]])
                                       and tasks[j // group] == tasks[i])
                r = row(sims, keep, pos[i])
            else:
                sims = q @ t[pos[i]]
                keep = lambda j, i=i: (q_valid[j] and (j == i or ids[pos[j]] != ids[pos[i]])
                                       and tasks[j] == tasks[i])
                r = row(sims, keep, i)
            losses.append(r[0]), grads.append(r[1]), hits.append(r[2])
        n = max(len(rows), 1)
        out[name] = (sum(losses) / n, sum(grads) / n, sum(hits) / n)
    if direction == "q2t":
        return out["q2t"][0], out["q2t"][1], out["q2t"][2], len(rows)
    mean = lambda k: 0.5 * (out["q2t"][k] + out["t2q"][k])
    return mean(0), mean(1), out["q2t"][2], len(rows)


COMBOS = list(itertools.product(["q2t", "bidirectional"], [0, 2], [False, True], [False, True],
                                [False, True]))


@pytest.mark.parametrize("direction,h,dup_ids,padded,learnable", COMBOS)
def test_matches_numpy_loop(direction, h, dup_ids, padded, learnable):
    q, t, q_valid, t_valid, ids = _batch(seed=h + 2 * dup_ids + 4 * padded, h=h, padded=padded,
                                         dup_ids=dup_ids)
    temp = 0.05 if learnable else 0.02
    want_loss, want_dlogt, want_acc, n = _reference(q, t, temp, direction, q_valid, t_valid, ids)
    kwargs = dict(direction=direction, query_valid=q_valid if padded else None,
                  target_valid=t_valid if padded else None,
                  target_ids=content_id_words(ids) if dup_ids else None)
    if learnable:
        fn = lambda lt: info_nce(q, t, log_temperature=lt, **kwargs)
        (loss, metrics), dlogt = jax.value_and_grad(fn, has_aux=True)(jnp.log(jnp.float32(temp)))
        np.testing.assert_allclose(dlogt, want_dlogt, rtol=1e-4, atol=1e-5)
    else:
        loss, metrics = info_nce(q, t, **kwargs)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], want_acc, rtol=1e-6)
    assert int(metrics["num_valid"]) == n
    np.testing.assert_allclose(metrics["temperature"], temp, rtol=1e-6)


@pytest.mark.parametrize("direction,h", list(itertools.product(["q2t", "bidirectional"], [0, 2])))
def test_task_mask_matches_numpy_loop(direction, h):
    """Sub-batches of 2 queries from 3 tasks (two sub-batches of task 1): negatives only from the own task."""
    q, t, q_valid, t_valid, ids = _batch(seed=20 + h, h=h, padded=True, dup_ids=True)
    tasks = np.array([0, 0, 1, 1, 2, 2, 1, 1], np.int32)
    want_loss, _, want_acc, n = _reference(q, t, 0.02, direction, q_valid, t_valid, ids, tasks)
    loss, metrics = info_nce(q, t, direction=direction, query_valid=q_valid, target_valid=t_valid,
                             target_ids=content_id_words(ids), query_tasks=tasks)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], want_acc, rtol=1e-6)
    assert int(metrics["num_valid"]) == n
    unmasked, _ = info_nce(q, t, direction=direction, query_valid=q_valid, target_valid=t_valid,
                           target_ids=content_id_words(ids))
    assert float(loss) < float(unmasked)  # fewer negatives in every row: the mask really removes columns


def test_other_tasks_targets_have_no_influence():
    """Row 0 is task 0; every target of the task-1 queries (positives and hard negatives) is not its negative."""
    q, t, *_ = _batch(seed=12, nq=6, h=1, d=8)
    tasks = np.array([0, 0, 0, 1, 1, 1], np.int32)
    q_valid = np.arange(6) == 0
    fn = jax.jit(lambda tt: info_nce(q, tt, query_valid=q_valid, query_tasks=tasks)[0])
    base = fn(t)
    moved = t.copy()
    moved[6:] = q[0]  # targets 6..11 belong to queries 3..5 (task 1)
    np.testing.assert_array_equal(fn(moved), base)
    moved[2] = q[0]  # query 1's positive, same task: it does matter
    assert float(fn(moved)) > float(base) + 1.0


def test_query_task_ids_repeat_each_sub_batch_task():
    ids = query_task_ids(np.array([b"vqa", b"caption", b"vqa"]), 6)
    vqa, cap = zlib.crc32(b"vqa") & 0x7FFFFFFF, zlib.crc32(b"caption") & 0x7FFFFFFF
    np.testing.assert_array_equal(ids, [vqa, vqa, cap, cap, vqa, vqa])
    np.testing.assert_array_equal(query_task_ids(None, 3), [0, 0, 0])
    with pytest.raises(ValueError, match="5 query rows do not split into 3 sub-batches"):
        query_task_ids(["a", "b", "c"], 5)


def test_default_is_vlm2vec_q2t_cross_entropy():
    """No options: mean over rows of CE(q @ t.T / 0.02, diagonal), as in VLM2Vec."""
    q, t, *_ = _batch(seed=3, nq=6, d=8)
    logits = q.astype(np.float64) @ t.T.astype(np.float64) / 0.02
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    loss, metrics = info_nce(q, t)
    np.testing.assert_allclose(loss, np.mean(lse - np.diag(logits)), rtol=1e-5)
    assert set(metrics) == {"accuracy", "num_valid", "temperature"}


def test_sharded_global_batch_equals_single_device():
    q, t, q_valid, t_valid, ids = _batch(seed=7, nq=16, h=1, padded=True, dup_ids=True)
    words = content_id_words(ids)
    fn = jax.jit(lambda *a: info_nce(a[0], a[1], direction="bidirectional", query_valid=a[2],
                                     target_valid=a[3], target_ids=a[4]))
    args = (q, t, q_valid, t_valid, words)
    want = jax.device_get(fn(*(jax.device_put(a, jax.devices()[0]) for a in args)))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded = [jax.device_put(a, NamedSharding(mesh, P("data"))) for a in args]
    assert len(sharded[0].sharding.device_set) == 8
    got = jax.device_get(fn(*sharded))
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    for key in want[1]:
        np.testing.assert_allclose(got[1][key], want[1][key], rtol=1e-6)


def test_masked_false_negative_has_no_influence():
    """Only row 0 counts; target 3 shares row 0's content id, so its embedding must not matter."""
    q, t, _, _, ids = _batch(seed=11, nq=6, d=8)
    ids[3] = ids[0]
    q_valid = np.arange(6) == 0
    fn = jax.jit(lambda tt: info_nce(q, tt, query_valid=q_valid, target_ids=content_id_words(ids))[0])
    base = fn(t)
    moved = t.copy()
    moved[3] = q[0]  # the most confusable negative possible
    np.testing.assert_array_equal(fn(moved), base)
    moved[2] = q[0]  # an unmasked negative does matter
    assert float(fn(moved)) > float(base) + 1.0


def test_padded_examples_do_not_matter():
    """Changing padded rows and columns leaves the loss unchanged, and equals the compacted batch."""
    q, t, q_valid, t_valid, _ = _batch(seed=5, nq=8, h=1, padded=True)
    pair_pad = [1, 5]  # pairs 1 and 5 are padding: their queries, positives and negatives
    t_valid[[3, 11]] = False
    kw = dict(direction="bidirectional", query_valid=q_valid, target_valid=t_valid)
    base, _ = info_nce(q, t, **kw)
    rng = np.random.default_rng(0)
    q2, t2 = q.copy(), t.copy()
    q2[~q_valid] = rng.normal(size=((~q_valid).sum(), 16)) * 1e3
    t2[~t_valid] = rng.normal(size=((~t_valid).sum(), 16)) * 1e3
    np.testing.assert_array_equal(info_nce(q2, t2, **kw)[0], base)

    keep_q = np.setdiff1d(np.arange(8), pair_pad)
    keep_t = np.concatenate([[2 * i, 2 * i + 1] for i in keep_q])
    compact, _ = info_nce(q[keep_q], t[keep_t], direction="bidirectional",
                          query_valid=q_valid[keep_q], target_valid=t_valid[keep_t])
    np.testing.assert_allclose(compact, base, rtol=1e-6)


def test_all_rows_padded_gives_zero_not_nan():
    q, t, *_ = _batch(nq=4, d=8)
    loss, grad = jax.value_and_grad(lambda qq: info_nce(qq, t, query_valid=np.zeros(4, bool))[0])(q)
    assert float(loss) == 0.0 and np.all(np.asarray(grad) == 0.0)


def test_content_id_words_keeps_64_bit_hashes_apart():
    ids = np.array([5, 5 + (1 << 32), 5], np.int64)  # equal low words, different high words
    words = content_id_words(ids)
    assert words.shape == (3, 2) and words.dtype == np.uint32
    assert (words[0] != words[1]).any() and (words[0] == words[2]).all()


@pytest.mark.parametrize("kwargs,message", [
    (dict(target=np.zeros((7, 4))), "target has 7 rows; expected a multiple of the 4 query rows"),
    (dict(target=np.zeros((4, 3))), "query has shape (4, 4) and target (4, 3)"),
    (dict(direction="t2q"), "direction='t2q'; expected one of ('q2t', 'bidirectional')"),
    (dict(query_valid=np.ones(3, bool)), "query_valid has shape (3,); expected (4,)"),
    (dict(target_ids=np.zeros(4, np.float32)), "target_ids has shape (4,) and dtype float32"),
    (dict(query_tasks=np.zeros(3, np.int32)), "query_tasks has shape (3,) and dtype int32; expected integers of "
                                              "shape (4,)"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    args = dict(query=np.zeros((4, 4)), target=np.zeros((4, 4)))
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        info_nce(args.pop("query"), args.pop("target"), **args)
    assert message in str(err.value)
