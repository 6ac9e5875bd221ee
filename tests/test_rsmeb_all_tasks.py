"""RSMEB end to end on every task: each dataset of eval/rsmeb.py is built from its fixture, the rows of all 21
tasks (and the crop baselines) are built, and the suite runs through `vlm2geovec eval` with a tiny random
transformers Qwen2-VL and the demo tokenizer.

Most sources are the committed fixtures under data/*/dummy_data. Three are made here, in their real layout:
- eurosat/rgb and resisc45 (TFDS catalog sets, no fixture in data/): a few JPEGs in EuroSAT's
  ``2750/<Class>/<Class>_<n>.jpg`` and NWPU-RESISC45's ``<class>/<class>_<nnn>.jpg`` layout, written by the
  catalog builder itself with only its file reading replaced (the catalog code reads through tf.io.gfile,
  i.e. TensorFlow), then read back by the unmodified registered builder, as in a real run;
- geoscenes/small: the suite's config (seed 0, 112 px) with 9 test tiles instead of 2,750 tiles in all, so it
  builds in a second (the 9th is the third add/remove edit); it keeps the name "small" so the suite file is
  used unchanged.

Caps: the suite's own ``quick`` variant (100 queries a task; the fixtures hold fewer), and the checkpoint's
preprocessor_config.json limits images to 56x56 pixels (4 image tokens), which keeps the run short.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from hf_utils import hf_model
from vlm2geovec_jax import cli
from vlm2geovec_jax.inputs import tfds_common
from vlm2geovec_jax.inputs.tokenizer import build_demo_tokenizer
from vlm2geovec_jax.models.presets import model_config
from vlm2geovec_jax.rsmeb import crop
from vlm2geovec_jax.rsmeb import rows as rows_lib
from vlm2geovec_jax.embedder import Embedder
from vlm2geovec_jax.inputs.identity import item_key
from vlm2geovec_jax.rsmeb.cache import EmbeddingCache, model_slug
from vlm2geovec_jax.rsmeb.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
SUITE = f"{REPO / 'eval' / 'rsmeb.py'}:quick"

# dataset (as the suite names it) -> (builder folder under data/, config, manual dir under its dummy_data/)
FIXTURES = {
    "rs_scenes/aid": ("rs_scenes", "aid", "aid"),
    "rs_scenes/patternnet": ("rs_scenes", "patternnet", "patternnet"),
    "rs_scenes/whu_rs19": ("rs_scenes", "whu_rs19", "whu_rs19"),
    "rs_captions/rsicd": ("rs_captions", "rsicd", "rsicd"),
    "rs_captions/rsitmd": ("rs_captions", "rsitmd", "rsitmd"),
    "rsvqa/lr": ("rsvqa", "lr", "lr"),
    "rsvqa/hr": ("rsvqa", "hr", "hr"),
    "vrsbench": ("vrsbench", None, ""),
    "geochat_bench/region_captioning": ("geochat_bench", "region_captioning", ""),
    "dior_rsvg": ("dior_rsvg", None, ""),
    "fmow": ("fmow", None, ""),
    "skyscript/top30pct": ("skyscript", "top30pct", ""),
}
# catalog set -> (config, folder of the release, image side, classes written); 5 images a class, so the held-out
# 20% (rows.held_out_positions) is one image a class
CATALOG = {
    "eurosat/rgb": ("rgb", "2750", 64, ("AnnualCrop", "Forest")),
    "resisc45": (None, "NWPU-RESISC45", 256, ("airplane", "beach")),
}
GEOSCENES_TEST_TILES = 9
CROPS = ("referring_expression_retrieval_crop", "region_caption_retrieval_crop", "vrsbench_referring_crop",
         "vrsbench_region_caption_crop")
# (rows, most candidates in a row) each task gets from the fixtures: a changed fixture or a lost example shows
# here first. Every evaluation split the suite reads, except AID's, holds at least 3 distinct golds, so every
# other task ranks at least 3 candidates (chance P@1 at most a third) and a random model's P@1 is a real
# number, not 100% by construction.
EXPECTED_ROWS = {
    "aid_classification": (2, 2), "patternnet_classification": (3, 3), "whu_rs19_classification": (3, 3),
    "resisc45_classification": (2, 45), "eurosat_classification": (2, 10),
    "rsicd_text_to_image": (5, 3), "rsicd_image_to_text": (3, 5), "rsitmd_text_to_image": (4, 3),
    "rsitmd_image_to_text": (3, 4), "composed_object_edits": (3, 3), "composed_attribute_edits": (6, 6),
    "rsvqa_lr": (3, 3), "rsvqa_hr": (3, 3), "vrsbench_vqa": (3, 3),
    "region_caption_retrieval": (3, 3), "referring_expression_retrieval": (3, 3), "vrsbench_region_caption": (3, 3),
    "vrsbench_referring": (3, 3), "semantic_geo_localization_retrieval": (3, 3), "skyscript_geo_localization": (3, 3),
    "skyscript_geo_image_retrieval": (4, 3),
}
# The one exception: the AID fixture keeps its 2 classes because test_rsmeb_runner.py pins them
# (["airport", "bare land"] for each of its 2 test images); a third AID class would change that test's rows.
FEWER_THAN_3_CANDIDATES = {"aid_classification": 2}
MIN_CANDIDATES = 3


# ------------------------------------------------------------------------------------------------- datasets
def _smooth_jpeg(path: Path, seed: int, side: int) -> None:
    """A small-file JPEG: a colour ramp, distinct per seed (random noise would make 256 px files large)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 80, side)[None, :, None] + np.zeros((side, side, 3))
    pixels = np.clip(rng.integers(0, 176, 3)[None, None, :] + ramp, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format="JPEG", quality=70)


def _catalog_builder(catalog: str) -> type:
    """The registered TFDS catalog builder, writing ArrayRecord from a local folder of its release layout."""
    base = tfds.builder_cls(catalog)

    class FromFolder(base, skip_registration=True):
        name = catalog
        MANUAL_DOWNLOAD_INSTRUCTIONS = "the release's class folders"
        code_path = epath.Path(inspect.getfile(base))  # TFDS would resolve it through importlib_resources
        pkg_dir_path = code_path.parent

        def __init__(self, **kwargs):
            super().__init__(file_format="array_record", **kwargs)

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(Path(dl_manager.manual_dir))}

        def _generate_examples(self, root: Path):
            for f in sorted(root.glob("*/*.jpg")):
                yield f"{f.parent.name}_{f.name}", {"image": f.read_bytes(), "label": f.parent.name,
                                                     "filename": f.name}
    return FromFolder


def _build_catalog(dataset: str, work: Path, data_dir: Path) -> None:
    config, folder, side, classes = CATALOG[dataset]
    root = work / dataset.replace("/", "_") / folder
    seed = 0
    for cls in classes:
        for n in range(1, 6):
            seed += 1
            name = f"{cls}_{n}.jpg" if dataset.startswith("eurosat") else f"{cls}_{n:03d}.jpg"
            _smooth_jpeg(root / cls / name, seed, side)
    builder = _catalog_builder(dataset.split("/", 1)[0])(data_dir=str(data_dir), config=config)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(root)))


def _build_geoscenes_small(data_dir: Path) -> None:
    base = tfds_common.builder_cls_from_path(DATA / "geoscenes")
    module = sys.modules[base.__module__]
    small = next(c for c in base.BUILDER_CONFIGS if c.name == "small")

    class Shrunk(base, skip_registration=True):
        name = "geoscenes"
        pkg_dir_path = base.code_path.parent
        BUILDER_CONFIGS = [module.GeoScenesConfig(name="small", description="small, 9 test tiles (tests)",
                                                  seed=small.seed, tile_size=small.tile_size,
                                                  num_test=GEOSCENES_TEST_TILES)]

    Shrunk(data_dir=str(data_dir), config="small").download_and_prepare()


@pytest.fixture(scope="module")
def suite():
    return load_suite(SUITE)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, suite):
    """One TFDS data_dir holding every dataset the suite reads."""
    needed = {t.dataset for t in suite.tasks}
    covered = set(FIXTURES) | set(CATALOG) | {"geoscenes/small"}
    assert needed == covered, f"suite datasets without a fixture here: {sorted(needed - covered)}"
    out = tmp_path_factory.mktemp("tfds")
    for builder, config, manual in FIXTURES.values():
        tfds_common.build(DATA / builder, manual_dir=DATA / builder / "dummy_data" / manual, data_dir=out,
                          config=config)
    work = tmp_path_factory.mktemp("catalog_release")
    for name in CATALOG:
        _build_catalog(name, work, out)
    _build_geoscenes_small(out)
    return out


@pytest.fixture(scope="module")
def rows(suite, data_dir):
    """Rows of every task, crop baselines included, as `vlm2geovec eval` builds them."""
    built = rows_lib.build_rows(suite, data_dir)
    return crop.with_crop_baseline(suite, built)


# --------------------------------------------------------------------------------------------------- model
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A transformers directory: tiny random Qwen2-VL, the demo tokenizer, a 56x56-pixel image processor."""
    ckpt = tmp_path_factory.mktemp("tiny_qwen2vl")
    hf_model(model_config("tiny")).save_pretrained(ckpt)
    build_demo_tokenizer(ckpt)
    (ckpt / "preprocessor_config.json").write_text(json.dumps(
        {"min_pixels": 56 * 56, "max_pixels": 56 * 56, "patch_size": 14, "temporal_patch_size": 2,
         "merge_size": 2}))
    return ckpt


class CountingEmbeds:
    """Wraps Embedder.embed so every item handed to the model is counted."""

    def __init__(self):
        self.items = 0
        self._real = Embedder.embed

    def __call__(self, embedder, items, **kwargs):
        items = list(items)
        self.items += len(items)
        return self._real(embedder, items, **kwargs)


def _eval(ckpt: Path, data_dir: Path, out: Path) -> str:
    """Runs the command; returns what it printed (it must end by saying where the report is)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["eval", "--ckpt", str(ckpt), "--suite", SUITE, "--data-dir", str(data_dir),
                         "--out", str(out), "--batch-size", "16"])
    assert code == 0, printed.getvalue()
    return printed.getvalue()


@pytest.fixture(scope="module")
def run(checkpoint, data_dir, tmp_path_factory):
    """`vlm2geovec eval` twice into one output directory: (report, items embedded by each run, out dir)."""
    out = tmp_path_factory.mktemp("eval")
    counting = CountingEmbeds()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Embedder, "embed", lambda self, items, **kw: counting(self, items, **kw))
        printed = _eval(checkpoint, data_dir, out)
        assert f"report written to {out / 'report.md'}" in printed
        first = counting.items
        report = json.loads((out / "report.json").read_text())
        _eval(checkpoint, data_dir, out)
    return report, (first, counting.items - first), out


# ---------------------------------------------------------------------------------------------------- tests
def test_every_task_builds_rows_from_the_fixtures(suite, rows):
    full, built = rows
    assert len(suite.main_tasks) == 21 and [t.name for t in full.main_tasks] == [t.name for t in suite.tasks]
    assert {t.name: t.baseline_of for t in full.tasks if t.baseline_of} == {c: c[:-len("_crop")] for c in CROPS}
    shapes = {name: (len(r), max(len(row.candidates) for row in r)) for name, r in built.items()}
    assert {name: shapes[name] for name in EXPECTED_ROWS} == EXPECTED_ROWS
    assert all(shapes[c] == shapes[c[:-len("_crop")]] for c in CROPS)
    for name, task_rows in built.items():
        for row in task_rows:
            assert row.positives and all(0 <= p < len(row.candidates) for p in row.positives), row.qid
            assert row.qid.startswith(f"{name.removesuffix('_crop')}/"), row.qid
    eurosat = {c.text for c in built["eurosat_classification"][0].candidates}
    assert len(eurosat) == 10 and {"annual crop", "herbaceous vegetation", "sea lake"} <= eurosat
    assert len(built["resisc45_classification"][0].candidates) == 45
    assert {c.text for c in built["whu_rs19_classification"][0].candidates} == {"airport", "beach", "football field"}


def test_every_task_ranks_at_least_3_candidates(rows):
    """A task whose rows rank fewer than 3 candidates says little: with 1 its P@1 is 100% by construction.
    Each task needs a row of at least 3 candidates, of which the gold is at most a third, and its golds must
    differ between rows, or the ranking is one gold against the same negatives over and over."""
    full, built = rows
    widest = {t.name: max(len(r.candidates) for r in built[t.name]) for t in full.main_tasks}
    assert {name: n for name, n in widest.items() if n < MIN_CANDIDATES} == FEWER_THAN_3_CANDIDATES
    for name, task_rows in built.items():
        if name in FEWER_THAN_3_CANDIDATES:
            continue
        assert any(len(r.candidates) >= MIN_CANDIDATES and 3 * len(r.positives) <= len(r.candidates)
                   for r in task_rows), name
        golds = {item_key(r.candidates[p]) for r in task_rows for p in r.positives}
        assert len(golds) >= min(len(task_rows), MIN_CANDIDATES), name


def test_eval_reports_every_task_with_finite_metrics(run, rows):
    report, _, out = run
    full, built = rows
    assert [t["task"] for t in report["tasks"]] == [t.name for t in full.main_tasks]
    assert sorted(b["task"] for b in report["baselines"]) == sorted(CROPS)
    for task in report["tasks"]:
        assert task["num_queries"] == len(built[task["task"]]), task["task"]
        for metric, value in task["metrics"].items():
            assert math.isfinite(value) and 0.0 <= value <= 100.0, (task["task"], metric, value)
    for group in report["groups"].values():
        assert all(math.isfinite(v) and 0 <= v <= 100 for v in group.values())
    assert len(report["groups"]) == 6 and 0 <= report["overall"]["p@1"] <= 100
    assert sorted(p.stem for p in (out / "tasks").glob("*.json")) == sorted(t.name for t in full.tasks)


def test_chance_levels_match_the_rows(run, rows):
    """Chance P@1 = mean over rows of positives / candidates, recomputed here from the rows."""
    report, _, out = run
    _, built = rows
    for task in report["tasks"]:
        expect = 100 * np.mean([len(r.positives) / len(r.candidates) for r in built[task["task"]]])
        assert task["chance_p@1"] == pytest.approx(expect), task["task"]
        assert 0 < task["chance_p@1"] <= 100
    markdown = (out / "report.md").read_text()
    assert "chance P@1" in markdown
    for task in report["tasks"]:
        line = next(ln for ln in markdown.splitlines() if ln.startswith(f"| {task['task']} |"))
        assert f"| {task['chance_p@1']:.1f} |" in line
    with Image.open(out / "report.png") as chart:
        assert chart.format == "PNG" and chart.size[1] > 24 * len(report["tasks"])  # one bar a task


def test_p1_matches_brute_force_over_the_cached_embeddings(run, rows):
    """The report's P@1 of every task, recomputed with numpy from the embeddings the run cached."""
    report, _, out = run
    full, built = rows
    model_key = report["model_key"]
    cache = EmbeddingCache(out / "embeddings" / model_slug(model_key), model_key)
    results = {t["task"]: t for t in report["tasks"]}
    results.update({b["task"]: {"metrics": {"p@1": b["p@1"]}} for b in report["baselines"]})
    for name, task_rows in built.items():
        hits = []
        for row in task_rows:
            q = cache.get([item_key(row.query)])[0]
            c = cache.get([item_key(x) for x in row.candidates])
            scores = (c / np.linalg.norm(c, axis=1, keepdims=True)) @ (q / np.linalg.norm(q))
            hits.append(int(np.argmax(scores)) in row.positives)
        assert results[name]["metrics"]["p@1"] == pytest.approx(100 * np.mean(hits), abs=1e-6), name


def test_rerun_embeds_nothing(run, rows):
    report, (first, second), out = run
    _, built = rows
    unique = {item_key(i) for rs in built.values() for r in rs for i in (r.query, *r.candidates)}
    assert first == len(unique)  # every distinct item once, across tasks
    assert second == 0
    model_key = report["model_key"]
    assert len(EmbeddingCache(out / "embeddings" / model_slug(model_key), model_key)) == first
    assert json.loads((out / "report.json").read_text()) == report
