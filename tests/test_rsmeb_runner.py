"""RSMEB rows and runner: deterministic split-safe rows, tie-safe shuffling, cached resumable runs, exact metrics."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import numpy as np
import pytest
from PIL import Image

from vlm2geovec_jax.inputs.adapters import SourceInfo
from vlm2geovec_jax.inputs.records import EvalRow, Item
from vlm2geovec_jax.rsmeb import rows as rows_lib
from vlm2geovec_jax.inputs.identity import item_key
from vlm2geovec_jax.rsmeb.cache import EmbeddingCache
from vlm2geovec_jax.rsmeb.rows import SplitSource, build_rows, build_task_rows, held_out_positions
from vlm2geovec_jax.rsmeb.runner import run_suite
from vlm2geovec_jax.rsmeb.suite import suite_from_config

CLASSES = tuple(f"class_{i}" for i in range(10))
DIM = 8


def png(seed: int, size=(8, 6)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def scene_source(split: str, n: int, offset: int = 0) -> SplitSource:
    examples = [{"image": png(offset + i), "image_id": f"{split}_{i}.png".encode(), "image_size": np.array([8, 6]),
                 "label": (i * 7) % len(CLASSES)} for i in range(n)]
    return SplitSource(examples, SourceInfo("rs_scenes/toy", split, CLASSES))


def caption_source(split: str, n: int, offset: int = 1000) -> SplitSource:
    examples = [{"image": png(offset + i), "image_id": f"{split}_{i}".encode(), "image_size": np.array([8, 6]),
                 "captions": [f"caption {i} a".encode(), f"caption {i} b".encode()]} for i in range(n)]
    return SplitSource(examples, SourceInfo("rs_captions/toy", split))


def region_source(split: str, n: int) -> SplitSource:
    examples = [{"image": png(2000 + i, (32, 32)), "image_id": f"img{i}".encode(), "image_size": np.array([32, 32]),
                 "boxes": np.array([[1, 1, 9, 9], [12, 12, 30, 28], [2, 20, 10, 31]], np.float32),
                 "expressions": [f"the left thing {i}".encode(), f"the big thing {i}".encode(),
                                 f"the low thing {i}".encode()]} for i in range(n)]
    return SplitSource(examples, SourceInfo("vrsbench", split))


def suite_config(**overrides):
    tasks = {
        "toy_cls": dict(group="scene_classification", dataset="rs_scenes/toy", split="test",
                        kind="scene_classification", candidate_policy="all_classes", num_queries=200),
        "toy_t2i": dict(group="cross_modal_search", dataset="rs_captions/toy", split="test", kind="text_to_image",
                        candidate_policy="gallery", num_queries=30),
        "toy_i2t": dict(group="cross_modal_search", dataset="rs_captions/toy", split="test", kind="image_to_text",
                        candidate_policy="sampled", num_candidates=12, num_queries=20),
        "toy_ref": dict(group="grounding_region", dataset="vrsbench", split="validation",
                        kind="referring_expression", candidate_policy="sampled", num_candidates=10,
                        hard_negatives=True, num_queries=20, paper_p1=32.5),
    }
    for name, extra in overrides.items():
        tasks[name].update(extra)
    return {"name": "toy", "templates_version": "v1", "paper": {"toy_ref": 32.5}, "tasks": tasks}


SOURCES = {("rs_scenes/toy", "test"): scene_source("test", 200),
           ("rs_captions/toy", "test"): caption_source("test", 25),
           ("vrsbench", "validation"): region_source("validation", 8)}


def loader(dataset, split):
    return SOURCES[(dataset, split)]


@pytest.fixture(scope="module")
def suite():
    return suite_from_config(suite_config())


@pytest.fixture(scope="module")
def rows(suite):
    return build_rows(suite, loader=loader)


def fake_embed(items):
    """Deterministic pseudo-random unit vectors from content, plus a shared 'topic' so metrics are not 0."""
    out = []
    for item in items:
        seed = int(hashlib.sha256(item_key(item).encode()).hexdigest()[:8], 16)
        out.append(np.random.default_rng(seed).normal(size=DIM))
    out = np.asarray(out, np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


class Counting:
    def __init__(self, fn=fake_embed, fail_after=None):
        self.fn, self.fail_after, self.count = fn, fail_after, 0

    def __call__(self, items):
        if self.fail_after is not None and self.count + len(items) > self.fail_after:
            raise KeyboardInterrupt("killed")
        self.count += len(items)
        return self.fn(items)


def unique_items(rows_by_task):
    keys = set()
    for rows in rows_by_task.values():
        for r in rows:
            keys.add(item_key(r.query))
            keys.update(item_key(c) for c in r.candidates)
    return keys


# ----------------------------------------------------------------------------------------------------- rows
def test_rows_are_deterministic_and_seeded(suite, rows):
    again = build_rows(suite, loader=loader)
    assert again == rows
    reseeded = build_rows(suite_from_config(suite_config(toy_cls={"seed": 1})), loader=loader)
    assert [r.positives for r in reseeded["toy_cls"]] != [r.positives for r in rows["toy_cls"]]


def test_policies_shapes_and_gold_positions(rows):
    cls = rows["toy_cls"]
    assert len(cls) == 200 and {len(r.candidates) for r in cls} == {10}
    assert {c.text for c in cls[0].candidates} == {f"class {i}" for i in range(10)}
    assert all(r.candidates[r.positives[0]].text == f"class {(int(r.qid.split('_')[-1].split('.')[0]) * 7) % 10}"
               for r in cls)
    # gold is moved off index 0: spread over the positions
    assert len({r.positives[0] for r in cls}) == 10
    assert sum(r.positives[0] == 0 for r in cls) < 40
    t2i = rows["toy_t2i"]
    assert len(t2i) == 30 and all(r.candidates is t2i[0].candidates for r in t2i) and len(t2i[0].candidates) == 25
    i2t = rows["toy_i2t"]  # one row per image, both captions gold; 10 others, never the image's own
    assert len(i2t) == 20 and all(len(r.positives) == 2 and len(r.candidates) == 12 for r in i2t)
    for r in i2t:
        gold = {r.candidates[p].text for p in r.positives}
        stem = next(iter(gold)).rsplit(" ", 1)[0]
        assert gold == {f"{stem} a", f"{stem} b"}
        assert not any(c.text.startswith(stem + " ") for j, c in enumerate(r.candidates) if j not in r.positives)
        assert len({item_key(c) for c in r.candidates}) == 12
    assert all(r.query.instruction.startswith("Find a caption") and r.candidates[0].instruction is None for r in i2t)


def test_hard_negatives_first(rows):
    for r in rows["toy_ref"]:
        image = r.query.image
        same = [c for c in r.candidates if c.image == image]
        assert len(same) == 3  # the gold and the two other boxes of the query's image
        assert len(r.candidates) == 10 and r.candidates[r.positives[0]].image == image


def test_split_safety():
    suite = suite_from_config(suite_config())
    asked = []
    train = {("rs_scenes/toy", "train"): scene_source("train", 50, offset=5000)}

    def spy(dataset, split):
        asked.append(split)
        return train.get((dataset, split)) or SOURCES[(dataset, split)]

    built = build_rows(suite, loader=spy)
    assert "train" not in asked
    train_images = {ex["image"] for ex in train[("rs_scenes/toy", "train")].examples}
    used = {i.image for rs in built.values() for r in rs for i in (r.query, *r.candidates) if i.image}
    assert not used & train_images
    task = suite.task("toy_cls")
    with pytest.raises(ValueError, match=r"task 'toy_cls': source split 'train' for task split 'test'"):
        build_task_rows(task, train[("rs_scenes/toy", "train")])
    with pytest.raises(ValueError, match="training split"):
        rows_lib.load_source("rs_scenes/toy", "train", None)


def test_held_out_positions_are_the_last_fifth_per_class_by_hash():
    names = [f"f{i}.jpg" for i in range(10)]
    labels = [0] * 5 + [1] * 5
    got = held_out_positions(names, labels, ["a", "b"])
    expect = []
    for lab, cls in ((0, "a"), (1, "b")):
        members = sorted((hashlib.sha256(f"{cls}/{names[p]}".encode()).hexdigest(), p) for p in range(10)
                         if labels[p] == lab)
        expect += [p for _, p in members[4:]]
    assert got == sorted(expect) and len(got) == 2


def test_official_mmeb_file_read_unchanged_but_shuffled(tmp_path):
    lines = [{"qry_text": f"<|image_1|>\nquery {i}", "qry_img_path": f"q{i}.png",
              "tgt_text": [f"gold {i}"] + [f"neg {i} {j}" for j in range(9)], "tgt_img_path": [""] * 10}
             for i in range(40)]
    (tmp_path / "task.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    task = dict(group="vqa", kind="vqa", candidate_policy="all_classes", official_file="task.jsonl")
    suite = suite_from_config({"name": "o", "tasks": {"off": task}})
    got = build_rows(suite, tmp_path)["off"]
    assert len(got) == 40
    for i, r in enumerate(got):
        assert r.query.text == f"query {i}" and r.query.image == str(tmp_path / f"q{i}.png")
        assert r.candidates[r.positives[0]].text == f"gold {i}"
        assert sorted(c.text for c in r.candidates) == sorted(lines[i]["tgt_text"])
    assert len({r.positives[0] for r in got}) > 5


# --------------------------------------------------------------------------------------------------- runner
def test_rerun_embeds_nothing_and_every_item_once(suite, rows, tmp_path):
    counting = Counting()
    report = run_suite(counting, suite, rows, tmp_path, model_key="toy-model", chunk_size=64, progress=False)
    assert counting.count == len(unique_items(rows))
    again = Counting()
    assert run_suite(again, suite, rows, tmp_path, model_key="toy-model", progress=False) == report
    assert again.count == 0
    for name in ("report.json", "report.md", "report.png"):
        assert (tmp_path / name).is_file()
    other = Counting()  # another model key: nothing reused
    run_suite(other, suite, rows, tmp_path / "other", model_key="other-model", progress=False)
    assert other.count == counting.count


def test_killed_run_resumes_to_the_same_report(suite, rows, tmp_path):
    clean = run_suite(fake_embed, suite, rows, tmp_path / "clean", model_key="m", chunk_size=50, progress=False)
    total = len(unique_items(rows))
    killer = Counting(fail_after=total // 2 + 7)
    with pytest.raises(KeyboardInterrupt):
        run_suite(killer, suite, rows, tmp_path / "run", model_key="m", chunk_size=50, progress=False)
    saved = len(EmbeddingCache(tmp_path / "run" / "embeddings" / next(
        p.name for p in (tmp_path / "run" / "embeddings").iterdir()), "m"))
    assert saved == killer.count > 0  # every finished chunk is on disk
    resumed = Counting()
    assert run_suite(resumed, suite, rows, tmp_path / "run", model_key="m", chunk_size=50, progress=False) == clean
    assert killer.count + resumed.count == total


def test_metrics_match_brute_force(suite, rows, tmp_path):
    report = run_suite(fake_embed, suite, rows, tmp_path, model_key="m", progress=False)
    by_task = {t["task"]: t for t in report["tasks"]}
    for name, task_rows in rows.items():
        hits = []
        for r in task_rows:
            q = fake_embed([r.query])[0]
            scores = fake_embed(list(r.candidates)) @ q
            hits.append(int(np.argmax(scores)) in r.positives)
        assert by_task[name]["metrics"]["p@1"] == pytest.approx(100 * np.mean(hits), abs=1e-9), name
    p1 = [by_task[n]["metrics"]["p@1"] for n in ("toy_cls", "toy_t2i", "toy_i2t", "toy_ref")]
    assert report["overall"]["p@1"] == pytest.approx(np.mean(p1))
    assert report["groups"]["cross_modal_search"]["p@1"] == pytest.approx(np.mean(p1[1:3]))


def test_constant_embeddings_score_chance(suite, rows, tmp_path):
    report = run_suite(lambda items: np.ones((len(items), DIM), np.float32), suite, rows, tmp_path,
                       model_key="collapsed", progress=False)
    by_task = {t["task"]: t for t in report["tasks"]}
    cls = by_task["toy_cls"]
    assert cls["chance_p@1"] == pytest.approx(10.0) and cls["top1_tie_rate"] == 100.0
    assert abs(cls["metrics"]["p@1"] - 10.0) < 6.5  # 200 queries: 3 sigma of a 10% binomial
    assert by_task["toy_t2i"]["chance_p@1"] == pytest.approx(4.0)
    assert by_task["toy_t2i"]["metrics"]["p@1"] < 20.0
    assert by_task["toy_i2t"]["chance_p@1"] == pytest.approx(100 * 2 / 12)
    assert all(t["metrics"]["p@1"] < 50 for t in report["tasks"])  # never the 100% of an unshuffled gold


def test_embed_fn_bad_output_is_named(suite, rows, tmp_path):
    with pytest.raises(ValueError, match=r"embed_fn: expected \[\d+, D\] embeddings"):
        run_suite(lambda items: np.ones((1, DIM)), suite, rows, tmp_path, model_key="bad", progress=False)
    broken = list(rows["toy_t2i"])
    broken[1] = dataclasses.replace(broken[1], candidates=broken[1].candidates[::-1])
    with pytest.raises(ValueError, match=r"task 'toy_t2i', row toy_t2i/\S+: gallery tasks need one shared"):
        run_suite(fake_embed, suite, {**rows, "toy_t2i": broken}, tmp_path, model_key="m", progress=False)
    with pytest.raises(ValueError, match="not in suite"):
        run_suite(fake_embed, suite, {**rows, "extra": rows["toy_cls"]}, tmp_path, model_key="m", progress=False)
    with pytest.raises(ValueError, match="embedding cache of model key 'a', not 'b'"):
        EmbeddingCache(tmp_path / "c", "a")
        EmbeddingCache(tmp_path / "c", "b")


def test_evalrow_inputs_unchanged(rows):
    assert all(isinstance(r, EvalRow) and isinstance(r.query, Item) for rs in rows.values() for r in rs)


def test_end_to_end_with_the_tiny_encoder(tmp_path):
    """The real embedding path (Embedder.embed, tiny random encoder): runs, resumes, and beats nothing."""
    from flax import nnx

    from vlm2geovec_jax.embedder import Embedder
    from vlm2geovec_jax.inputs.image import ImageConfig
    from vlm2geovec_jax.inputs.processing import Processing
    from vlm2geovec_jax.inputs.tokenizer import Tokenizer, build_demo_tokenizer
    from vlm2geovec_jax.models.encoder import Encoder
    from vlm2geovec_jax.models.presets import model_config
    from vlm2geovec_jax.rsmeb.crop import with_crop_baseline

    small = suite_from_config(suite_config(toy_cls={"num_queries": 6}, toy_ref={"num_queries": 3, "num_candidates": 4}))
    small = small.subset(["toy_cls", "toy_ref"])
    small = dataclasses.replace(small, crop_baseline=True)
    rows = build_rows(small, loader=loader)
    small, rows = with_crop_baseline(small, rows)
    tokenizer = Tokenizer.from_dir(build_demo_tokenizer(tmp_path / "tok"))
    processing = Processing(image=ImageConfig(min_pixels=28 * 28, max_pixels=56 * 56))
    embedder = Embedder(Encoder(model_config("tiny"), rngs=nnx.Rngs(0)), tokenizer=tokenizer, processing=processing)
    embed_fn = Counting(lambda items: embedder.embed(items, batch_size=8))
    report = run_suite(embed_fn, small, rows, tmp_path / "out", model_key="tiny-random", progress=False)
    assert embed_fn.count == len(unique_items(rows))
    assert [t["task"] for t in report["tasks"]] == ["toy_cls", "toy_ref"]
    assert report["baselines"][0]["task"] == "toy_ref_crop"
    assert all(0 <= t["metrics"]["p@1"] <= 100 for t in report["tasks"])
    assert run_suite(embed_fn, small, rows, tmp_path / "out", model_key="tiny-random", progress=False) == report
    assert embed_fn.count == len(unique_items(rows))


def test_rows_from_built_tfds_fixtures(tmp_path):
    """load_source reads the builders' ArrayRecord output (data/ fixtures) with images left encoded."""
    from pathlib import Path

    from vlm2geovec_jax.inputs import tfds_common

    data = Path(__file__).resolve().parents[1] / "data"
    tfds_common.build(data / "rs_scenes", manual_dir=data / "rs_scenes" / "dummy_data" / "aid", data_dir=tmp_path,
                      config="aid")
    tfds_common.build(data / "dior_rsvg", manual_dir=data / "dior_rsvg" / "dummy_data", data_dir=tmp_path)
    suite = suite_from_config({"name": "fx", "tasks": {
        "aid": dict(group="scene_classification", dataset="rs_scenes/aid", split="test", kind="scene_classification",
                    candidate_policy="all_classes"),
        "ref": dict(group="grounding_region", dataset="dior_rsvg", split="test", kind="referring_expression",
                    candidate_policy="sampled")}})
    built = build_rows(suite, tmp_path)
    assert [sorted(c.text for c in r.candidates) for r in built["aid"]] == [["airport", "bare land"]] * 2
    ref = built["ref"][0]
    assert ref.query.text == "the airplane in the top left corner" and isinstance(ref.query.image, bytes)
    assert len(ref.candidates[0].boxes) == 1


def test_catalog_view_adds_shared_features():
    examples = [{"image": png(i), "filename": f"F{i}.jpg".encode(), "label": i % 2} for i in range(10)]
    positions = held_out_positions([e["filename"].decode() for e in examples], [e["label"] for e in examples],
                                   ["a", "b"])
    view = rows_lib._CatalogView(examples, positions)
    assert len(view) == 2
    ex = view[0]
    assert ex["image_id"] == examples[positions[0]]["filename"] and ex["image_size"].tolist() == [8, 6]


def test_same_image_regions_are_hard_negatives():
    """DIOR-RSVG stores one object per example: the other objects of the query's image still come first."""
    images = [png(3000 + i, (32, 32)) for i in range(6)]
    boxes = [[1, 1, 9, 9], [12, 12, 30, 28], [2, 20, 10, 31]]
    examples = [{"image": bytes(bytearray(images[i // 3])), "image_id": f"{i // 3}.jpg".encode(),
                 "image_size": np.array([32, 32]), "object_id": str(i).encode(),
                 "boxes": np.array([boxes[i % 3]], np.float32), "expressions": [f"object {i}".encode()]}
                for i in range(18)]
    source = SplitSource(examples, SourceInfo("dior_rsvg", "test"))
    task = suite_from_config({"name": "d", "tasks": {"ref": dict(
        group="grounding_region", dataset="dior_rsvg", split="test", kind="referring_expression",
        candidate_policy="sampled", num_candidates=4, hard_negatives=True)}}).task("ref")
    built = build_task_rows(task, source)
    assert len(built) == 18
    for r in built:
        same = [c for c in r.candidates if c.image == r.query.image]
        assert len(same) == 3 and len(r.candidates) == 4  # gold + the image's 2 other boxes + 1 random
        assert {c.boxes[0].xyxy for c in same} == {tuple(map(float, b)) for b in boxes}


def test_eval_command_end_to_end(tmp_path, monkeypatch, capsys):
    """The CLI entry: suite file by path, rows from built TFDS data, checkpoint identity as the cache key."""
    from pathlib import Path

    from types import SimpleNamespace

    from vlm2geovec_jax import embedder as embedder_lib
    from vlm2geovec_jax.inputs import tfds_common
    from vlm2geovec_jax.inputs.processing import Processing
    from vlm2geovec_jax.rsmeb import runner
    from vlm2geovec_jax.weights.checkpoint import checkpoint_key

    data = Path(__file__).resolve().parents[1] / "data"
    tfds_common.build(data / "dior_rsvg", manual_dir=data / "dior_rsvg" / "dummy_data", data_dir=tmp_path / "tfds")
    (tmp_path / "suite.py").write_text(
        "import ml_collections\n"
        "def get_config():\n"
        "    return ml_collections.ConfigDict(dict(name='mini', crop_baseline=True, paper={'ref': 32.5}, tasks=dict(\n"
        "        ref=dict(group='grounding_region', dataset='dior_rsvg', split='test', kind='referring_expression',\n"
        "                 candidate_policy='sampled', hard_negatives=True, paper_p1=32.5))))\n")
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model_config.json").write_text("{}")
    counting = Counting()

    fake = lambda path, **kw: SimpleNamespace(processing=Processing(), key=checkpoint_key(path),  # what eval uses
                                              embed=lambda items, **kw: counting(list(items)))
    monkeypatch.setattr(embedder_lib, "load", fake)
    path = runner.eval_command(ckpt, tmp_path / "suite.py", tmp_path / "tfds", tmp_path / "out", progress=False)
    assert path == tmp_path / "out" / "report.md" and "ref_crop" in path.read_text()
    assert f"RSMEB report written to {path}" in capsys.readouterr().out
    first = counting.count
    runner.eval_command(ckpt, tmp_path / "suite.py", tmp_path / "tfds", tmp_path / "out", progress=False)
    assert counting.count == first > 0  # same checkpoint: all cached
    (ckpt / "model_config.json").write_text('{"changed": 1}')
    runner.eval_command(ckpt, tmp_path / "suite.py", tmp_path / "tfds", tmp_path / "out", progress=False)
    assert counting.count == 2 * first  # another checkpoint identity: embedded again
