"""The grain pipeline: mixture, homogeneous sub-batches, determinism, exact resume, shards, budgets, bad records."""
from __future__ import annotations

import io
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from vlm2geovec_jax.inputs.adapters import SourceInfo, pair_json
from vlm2geovec_jax.inputs.identity import content_id, item_key
from vlm2geovec_jax.inputs.errors import RecordError
from vlm2geovec_jax.inputs.image import ImageConfig
from vlm2geovec_jax.inputs.pipeline import Pipeline, PipelineConfig, Task, TaskPlan, patch_budget, shard_bounds
from vlm2geovec_jax.inputs.records import Item
from vlm2geovec_jax.inputs.tokenizer import Tokenizer, build_demo_tokenizer
from vlm2geovec_jax.models.presets import model_config

CFG = model_config("tiny")
IMAGES = ImageConfig(min_pixels=28 * 28, max_pixels=56 * 56)  # budget: 16 patches, 4 image tokens
BUCKETS = (32, 64, 128)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return Tokenizer.from_dir(build_demo_tokenizer(tmp_path_factory.mktemp("tok")))


def record(dataset: str, i: int, *, query=None, positive=None, negatives=(), task="vqa") -> bytes:
    pair = {"query": query or {"text": f"{dataset} question {i}"}, "positive": positive or {"text": f"answer {i}"},
            "task": task, "source": {"dataset": dataset, "split": "train", "id": str(i)}}
    if negatives:
        pair["negatives"] = list(negatives)
    return json.dumps(pair).encode()


def text_task(name: str, n: int, weight: float = 1.0, negatives: int = 0) -> Task:
    negs = [{"text": f"{name} wrong {j}"} for j in range(negatives)]
    return Task(name, [record(name, i, negatives=negs) for i in range(n)], pair_json, SourceInfo(name, "train"),
                weight)


def pipeline(tok, tasks, **config) -> Pipeline:
    config.setdefault("length_buckets", BUCKETS)
    return Pipeline(tasks, tokenizer=tok, image_config=config.pop("image_config", IMAGES), model_cfg=CFG,
                    config=PipelineConfig(**config))


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key], b[key]
        if hasattr(x, "input_ids"):
            for field in ("input_ids", "attention_mask", "position_ids", "image_token_index", "pixel_values"):
                np.testing.assert_array_equal(getattr(x, field), getattr(y, field), err_msg=f"{key}.{field}")
        else:
            np.testing.assert_array_equal(x, y, err_msg=key)


def test_step_layout_with_hard_negatives(tok):
    tasks = [text_task("a", 12, negatives=3), text_task("b", 12)]
    p = pipeline(tok, tasks, sub_batch_size=2, sub_batches=3, num_negatives=2)
    step = p[0]
    assert step["query"].input_ids.shape == (6, 32) and step["target"].input_ids.shape == (18, 32)
    assert list(step["tasks"]) == p.tasks_of(0)
    for j, task in enumerate(step["tasks"]):
        rows = range(2 * j, 2 * j + 2)
        assert all(step["sources"][r].startswith(f"{task}/train/") for r in rows)
        for r in rows:
            group = step["target_valid"][3 * r:3 * r + 3]
            # task a: positive + 2 of its 3 negatives; task b has none: positive + 2 invalid fillers
            assert list(group) == ([True, True, True] if task == "a" else [True, False, False])
            text = tok.decode(step["target"].input_ids[3 * r][step["target"].attention_mask[3 * r] > 0])
            assert text == f"answer {step['sources'][r].rsplit('/', 1)[1]}"
    assert step["query_valid"].all() and step["query_ids"].dtype == np.int64
    # the positive's content id is the hash of its prompt; fillers get 0
    ids = step["target_ids"]
    assert set(ids[~step["target_valid"]].tolist()) <= {0}
    assert ids[0] == content_id(item_key(Item(text=f"answer {step['sources'][0].rsplit('/', 1)[1]}")))
    assert step["target"].pixel_values.shape == (18, 1, 4, 1176)  # no image on this side: one empty merge window


def test_content_ids_mark_duplicate_targets(tok):
    same = [record("d", i, positive={"text": "yes"}) for i in range(4)]
    p = pipeline(tok, [Task("d", same, pair_json, SourceInfo("d", "train"))], sub_batch_size=4, sub_batches=1)
    ids = p[0]["target_ids"]
    assert len(set(ids.tolist())) == 1 and ids[0] == content_id(item_key(Item(text="yes")))


def test_every_sub_batch_is_homogeneous_and_follows_the_plan(tok):
    p = pipeline(tok, [text_task("a", 9, 3), text_task("b", 7, 2), text_task("c", 5, 1)], sub_batch_size=3,
                 sub_batches=4)
    for step in range(8):
        batch = p[step]
        assert list(batch["tasks"]) == p.tasks_of(step)
        for j, task in enumerate(batch["tasks"]):
            assert {s.split("/")[0] for s in batch["sources"][3 * j:3 * j + 3]} == {task}


def test_mixture_proportions_within_two_percent_over_10000_examples(tok):
    p = pipeline(tok, [text_task("a", 50, 0.5), text_task("b", 50, 0.3), text_task("c", 50, 0.2)],
                 sub_batch_size=2, sub_batches=10)
    counts = Counter(t for step in range(500) for t in p.tasks_of(step) for _ in range(2))  # 10,000 examples
    assert sum(counts.values()) == 10_000
    for name, weight in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert abs(counts[name] / 10_000 - weight) < 0.02, counts


def test_task_plan_counts_match_brute_force():
    plan = TaskPlan([1, 2], seed=3)
    slots = [plan.slot(q) for q in range(9000)]  # crosses two plan blocks
    seen = Counter()
    for k, c in slots:
        assert c == seen[k]
        seen[k] += 1
    assert TaskPlan([1, 2], seed=3).slot(8999) == slots[-1]  # random access equals sequential
    with pytest.raises(ValueError, match="task weights must be finite, >= 0 and not all 0"):
        TaskPlan([0, 0], seed=0)


def test_deterministic_for_a_seed(tok):
    tasks = [text_task("a", 20), text_task("b", 20)]
    one, two = pipeline(tok, tasks, seed=5, sub_batch_size=2, sub_batches=2), pipeline(tok, tasks, seed=5,
                                                                                       sub_batch_size=2, sub_batches=2)
    for a, b in zip([one[i] for i in range(3)], iter(two)):
        assert_same(a, b)
    other = pipeline(tok, tasks, seed=6, sub_batch_size=2, sub_batches=2)
    assert [list(one[i]["sources"]) for i in range(3)] != [list(other[i]["sources"]) for i in range(3)]


def test_restored_iterator_continues_exactly(tok):
    tasks = [text_task("a", 7), text_task("b", 5, negatives=1)]
    kwargs = dict(seed=1, sub_batch_size=2, sub_batches=2, num_negatives=1)
    it = iter(pipeline(tok, tasks, **kwargs))
    for _ in range(3):
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # JSON-able, as the trainer checkpoints it
    expected = [next(it) for _ in range(4)]
    resumed = iter(pipeline(tok, tasks, **kwargs))
    resumed.set_state(state)
    for a in expected:
        assert_same(a, next(resumed))


def test_two_processes_read_disjoint_shards(tok):
    tasks = [text_task("a", 21), text_task("b", 10)]
    seen, plans = [], []
    for index in (0, 1):
        p = pipeline(tok, tasks, sub_batch_size=2, sub_batches=2, process_index=index, process_count=2)
        steps = [p[i] for i in range(12)]
        seen.append({s for b in steps for s in b["sources"]})
        plans.append([list(b["tasks"]) for b in steps])
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"a/train/{i}" for i in range(21)} | {f"b/train/{i}" for i in range(10)}
    assert plans[0] == plans[1]  # sub-batch j is one task across the global batch
    assert [shard_bounds(21, i, 2) for i in (0, 1)] == [(0, 10), (10, 21)]


def png(w: int, h: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def image_task(n: int) -> Task:
    import base64
    records = [record("img", i, query={"text": f"scene {i}"},
                      positive={"image": {"bytes_b64": base64.b64encode(png(30 + 9 * i, 40, i)).decode()}})
               for i in range(n)]
    return Task("img", records, pair_json, SourceInfo("img", "train"))


@pytest.mark.parametrize("image_config,patches", [(IMAGES, 16), (ImageConfig(fixed_size=(28, 56)), 8)])
def test_fixed_image_budget(tok, image_config, patches):
    assert patch_budget(image_config) == patches
    p = pipeline(tok, [image_task(4)], sub_batch_size=2, sub_batches=2, num_negatives=1, image_config=image_config)
    target = p[0]["target"]
    assert target.pixel_values.shape == (8, 1, patches, 1176)  # one image slot per row, fixed patch count
    assert target.input_ids.shape == (8, 32)
    used = (target.vision_frame_ids > 0).any((1, 2))
    assert list(used) == [True, False] * 4  # positives hold images, filler negatives do not
    assert list((target.image_token_index >= 0).any(1)) == [True, False] * 4


def test_two_worker_processes_give_the_same_steps(tok):
    tasks = [text_task("a", 9), text_task("b", 9)]
    kwargs = dict(seed=2, sub_batch_size=2, sub_batches=2)
    it = iter(pipeline(tok, tasks, worker_count=2, **kwargs))
    reference = pipeline(tok, tasks, **kwargs)
    for step in range(4):
        assert_same(next(it), reference[step])


def test_array_record_files_of_pairs(tok, tmp_path):
    from array_record.python.array_record_module import ArrayRecordWriter

    from vlm2geovec_jax.inputs.pipeline import array_record_task

    paths = []
    for shard in range(2):  # two files, read as one source
        paths.append(tmp_path / f"pairs-{shard}.array_record")
        writer = ArrayRecordWriter(str(paths[-1]), "group_size:1")
        for i in range(3):
            writer.write(record("geo", 3 * shard + i, task="composed_retrieval"))
        writer.close()
    task = array_record_task(paths, "composed_retrieval", weight=2.0)
    assert (task.name, len(task.source), task.weight) == ("pairs:composed_retrieval", 6, 2.0)
    p = pipeline(tok, [task], sub_batch_size=6, sub_batches=1)
    assert sorted(p[0]["sources"]) == [f"geo/train/{i}" for i in range(6)]  # one epoch: every record once


# ---------------------------------------------------------------------------------------------- bad records


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    """Seven bad records, each with the error it must give, and five good ones."""
    root = tmp_path_factory.mktemp("bad")
    good = png(20, 20)
    (root / "ok.png").write_bytes(good)
    (root / "truncated.png").write_bytes(good[:len(good) // 2])
    bad = {
        "truncated": (record("x", 0, query={"image": str(root / "truncated.png")}),
                      f"file {root / 'truncated.png'}, record {{i}}, field query.image: cannot decode image file, "
                      "it is truncated"),
        "missing": (record("x", 0, positive={"image": str(root / "nope.png")}),
                    f"file {root / 'nope.png'}, record {{i}}, field positive.image: image file not found"),
        "box": (record("x", 0, query={"image": str(root / "ok.png"), "image_size": [20, 20],
                                      "boxes": [{"xyxy": [2, 2, 25, 8]}]}),
                "file bad[train], record {i}, field query.boxes[0].xyxy: box [2, 2, 25, 8] lies outside the 20x20 "
                "image"),
        "lat": (record("x", 0, query={"geo": {"lat": 91, "lon": 0}}),
                "file bad[train], record {i}, field query.geo.lat: latitude 91 outside [-90, 90] degrees"),
        "nan": (record("x", 0, query={"geo": {"lat": 0, "lon": float("nan")}}),
                "file bad[train], record {i}, field query.geo.lon: expected a finite number, got nan"),
        "empty": (record("x", 0, query={"text": "  "}),
                  "file bad[train], record {i}, field query: empty item: expected text, an image or a location"),
        "utf8": (record("x", 0).replace(b"question", b"qu\xffstion"),
                 "file bad[train], record {i}: invalid UTF-8 (byte 0xff at offset 24)"),
    }
    goods = [record("x", i, query={"image": str(root / "ok.png"), "text": f"q {i}"}) for i in range(5)]
    return bad, goods


@pytest.mark.parametrize("kind", ["truncated", "missing", "box", "lat", "nan", "empty", "utf8"])
def test_bad_record_raises_the_documented_error(tok, bad_corpus, kind):
    bad, goods = bad_corpus
    raw, message = bad[kind]
    p = pipeline(tok, [Task("bad", [goods[0], raw], pair_json, SourceInfo("bad", "train"))], sub_batch_size=2,
                 sub_batches=1)
    with pytest.raises(RecordError) as err:
        p[0]
    assert str(err.value).startswith(message.format(i=1))


def test_bad_records_are_skipped_counted_and_the_pipeline_keeps_running(tok, bad_corpus):
    bad, goods = bad_corpus
    source = [raw for raw, _ in bad.values()] + goods  # 12 records: 3 steps of 4 are one epoch
    p = pipeline(tok, [Task("bad", source, pair_json, SourceInfo("bad", "train"))], sub_batch_size=4,
                 sub_batches=1, on_bad_record="skip")
    it = iter(p)
    epoch = [next(it) for _ in range(3)]
    assert sum(int(b["query_valid"].sum()) for b in epoch) == 5
    assert p.bad.counts == Counter({"field query.image": 1, "field positive.image": 1, "field query.boxes[].xyxy": 1,
                                    "field query.geo.lat": 1, "field query.geo.lon": 1, "field query": 1,
                                    "invalid UTF-8": 1})
    for b in epoch:  # invalid rows keep the shapes, and their targets are invalid too
        assert b["query"].input_ids.shape[0] == 4 and b["target"].pixel_values.shape == (4, 1, 4, 1176)
        assert b["query"].pixel_values.shape == (4, 1, 16 if b["query_valid"].any() else 4, 1176)
        assert list(b["target_valid"]) == list(b["query_valid"])
        assert all(s == "" for s, v in zip(b["sources"], b["query_valid"]) if not v)
    next(it), next(it), next(it)  # a second epoch: still running, every bad record counted again
    assert p.bad.total == 14 and "14 bad records skipped" in p.bad.summary()
