"""The demo: the GeoScenes suite mirrors RSMEB, the report pieces draw what they claim, and a tiny end-to-end
run (build, train 2 steps, evaluate a region task and its crop baseline, report) goes through the same code
path as ``vlm2geovec demo``."""
from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm2geovec_jax import cli, demo
from vlm2geovec_jax.inputs.records import Box, EvalRow, Geo, Item
from vlm2geovec_jax.models.presets import get_preset
from vlm2geovec_jax.inputs.identity import item_key
from vlm2geovec_jax.rsmeb.suite import load_suite
from vlm2geovec_jax.train.config import load_config

REPO = Path(__file__).resolve().parents[1]
GREEN = (0, 170, 0)


# ------------------------------------------------------------------------------------------------- suite
def test_geoscenes_suite_has_rsmebs_tasks_groups_and_kinds():
    ours, rsmeb = load_suite(REPO / "eval" / "geoscenes.py"), load_suite(REPO / "eval" / "rsmeb.py")
    shape = lambda s: collections.Counter((t.group, t.kind, t.candidate_policy != "all_classes") for t in s.tasks)
    assert len(ours.tasks) == 21 and shape(ours) == shape(rsmeb)
    assert {n: len(v) for n, v in ours.groups.items()} == {n: len(v) for n, v in rsmeb.groups.items()}
    assert {t.dataset for t in ours.tasks} == {"geoscenes/small"} and {t.split for t in ours.tasks} == {"test"}
    assert ours.crop_baseline and not ours.paper
    region = [t for t in ours.tasks if t.group == "grounding_region"]
    assert all(t.hard_negatives for t in region)
    assert ours.task("scene_classification_urban").filters == {"land_cover": ("urban",)}


def test_geoscenes_suite_arguments():
    quick = load_suite(f"{REPO / 'eval' / 'geoscenes.py'}:tiny,quick")
    assert {t.dataset for t in quick.tasks} == {"geoscenes/tiny"} and {t.num_queries for t in quick.tasks} == {16}
    assert {t.split for t in quick.tasks} == {"test"}
    validation = load_suite(f"{REPO / 'eval' / 'geoscenes.py'}:demo,validation")
    assert {t.split for t in validation.tasks} == {"validation"} and {t.num_queries for t in validation.tasks} == {200}
    with pytest.raises(ValueError, match=r"^eval/geoscenes.py: argument 'a-b': expected a builder config name, "
                                         r"'validation' or 'quick'$"):
        load_suite(f"{REPO / 'eval' / 'geoscenes.py'}:tiny,a-b")


def test_demo_config_trains_from_scratch_on_every_geoscenes_task_kind():
    from vlm2geovec_jax.inputs.templates import TASK_KINDS

    c = load_config(REPO / "configs" / "demo.py")
    assert c.trainable == "full" and not c.init.checkpoint and c.data.kind == "pipeline"
    assert sorted(t["task"] for t in c.data.pipeline.tasks) == sorted(TASK_KINDS)
    assert {t["dataset"] for t in c.data.pipeline.tasks} == {f"geoscenes/{demo.DEMO_WORLD['name']}"}
    tiny = get_preset("tiny")  # special-token ids must stay those of the demo tokenizer
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"):
        assert c.model[key] == tiny[key]
    assert c.model.text.vocab_size == 512


def test_cli_registers_demo_with_a_workdir():
    args = cli.build_parser().parse_args(["demo", "--workdir", "somewhere"])
    assert args.workdir == "somewhere" and args.run is cli.COMMANDS["demo"][2]


# ------------------------------------------------------------------------------------------------ pieces
def _png(color) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (112, 112), color).save(buf, format="PNG")
    return buf.getvalue()


class _Cache:
    """EmbeddingCache's get() over fixed vectors by item key."""

    def __init__(self, vectors: dict[str, np.ndarray]):
        self.vectors = vectors

    def get(self, keys):
        return np.stack([self.vectors[k] for k in keys]).astype(np.float32)


def test_contact_sheet_ranks_by_cosine_and_outlines_the_gold_in_green(tmp_path):
    query = Item(text="a red tile")
    cands = [Item(image=_png((200, 0, 0)), image_size=(112, 112), boxes=(Box((10, 10, 40, 40)),)),
             Item(image=_png((0, 0, 200)), image_size=(112, 112)), Item(text="latitude", geo=Geo(lat=10, lon=20))]
    # the gold (index 0) ranks SECOND: candidate 2 is closest to the query
    vectors = {item_key(query): np.array([1.0, 0.0]), item_key(cands[0]): np.array([0.8, 0.6]),
               item_key(cands[1]): np.array([-1.0, 0.0]), item_key(cands[2]): np.array([1.0, 0.1])}
    row = EvalRow("q0", "text_to_image", query, tuple(cands), (0,))
    path = demo.contact_sheet_png({"text_to_image": [row]}, _Cache(vectors), tmp_path / "s.png", k=3)
    sheet = np.asarray(Image.open(path).convert("RGB"))
    gap, label_h = 6, 16
    x_of = lambda j: gap + j * (demo.CELL + gap) + 10  # ranked cells j = 1..k
    border = lambda j: tuple(sheet[gap + label_h + 20, x_of(j) - 2])
    assert border(2) == GREEN and border(1) != GREEN and border(3) != GREEN
    # rank 2 shows the red image (the gold), rank 3 the blue one, rank 1 the text-only geo item (grey cell)
    inside = lambda j: tuple(sheet[gap + label_h + 90, x_of(j) + 90])
    assert inside(2) == (200, 0, 0) and inside(3) == (0, 0, 200) and inside(1) == (240, 240, 240)


def test_contact_sheet_reads_the_cache_under_the_models_box_format(tmp_path):
    query = Item(image=_png((200, 0, 0)), image_size=(112, 112), boxes=(Box((10, 10, 40, 40)),))
    cands = [Item(text="a red tile"), Item(text="a blue tile")]
    vectors = {item_key(query, box_format="geochat"): np.array([1.0, 0.0]),
               item_key(cands[0], box_format="geochat"): np.array([1.0, 0.0]),
               item_key(cands[1], box_format="geochat"): np.array([0.0, 1.0])}
    row = EvalRow("q0", "region_caption_retrieval", query, tuple(cands), (0,))
    rows = {"region_caption_retrieval": [row]}
    with pytest.raises(KeyError):  # the query's qwen key was never embedded
        demo.contact_sheet_png(rows, _Cache(vectors), tmp_path / "q.png", k=2)
    assert demo.contact_sheet_png(rows, _Cache(vectors), tmp_path / "g.png", k=2, box_format="geochat").is_file()


def test_a_config_for_another_world_is_refused():
    config = load_config(REPO / "configs" / "demo.py")
    with pytest.raises(ValueError, match=r"^training config: data.pipeline.tasks\[0\].dataset is 'geoscenes/demo'; "
                                         r"expected 'geoscenes/other', the GeoScenes world the demo builds$"):
        demo._check_datasets(config, "geoscenes/other")


def test_loss_curve_needs_a_logged_step(tmp_path):
    with pytest.raises(ValueError, match="^loss curve: metrics.jsonl has no logged step; expected at least one$"):
        demo.loss_curve_png([], tmp_path / "l.png")
    path = demo.loss_curve_png([{"step": 1, "loss": 4.0, "accuracy": 0.1}, {"step": 2, "loss": 2.0,
                                                                             "accuracy": 0.5}], tmp_path / "l.png")
    assert Image.open(path).size == (720, 360)


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = load_config(REPO / "configs" / "demo.py")
    config.model = get_preset("tiny")
    config.num_steps, config.batch_size, config.log_every = 2, 8, 1
    config.data.pipeline.sub_batch_size = 8
    config.optimizer.warmup_steps = 1
    world = dict(demo.DEMO_WORLD, num_train=8, num_validation=4, num_test=10)
    suite = f"{REPO / 'eval' / 'geoscenes.py'}:demo,quick"
    return demo.run_demo(tmp_path_factory.mktemp("demo"), config=config, suite=suite, world=world,
                         tasks=["region_caption_retrieval"], progress=False)


def test_end_to_end_writes_a_well_formed_report(tiny_run):
    out = tiny_run.report_dir
    summary = tiny_run.summary.read_text()
    assert summary.startswith("# vlm2geovec demo\n")
    for line in ("| group | P@1 | chance P@1 | tasks |", "| task | P@1 with box tokens | P@1 with crops | gain |"):
        assert line in summary
    report = json.loads((tiny_run.workdir / "eval" / "report.json").read_text())
    assert [t["task"] for t in report["tasks"]] == ["region_caption_retrieval"]
    for t in report["tasks"]:
        row = next(line for line in summary.splitlines() if line.startswith(f"| {t['task']} | "))
        assert f"| {t['metrics']['p@1']:.1f} | {t['chance_p@1']:.1f} |" in row
    assert [b["task"] for b in report["baselines"]] == ["region_caption_retrieval_crop"]
    assert set(tiny_run.timings) == {"build data and tokenizer", "train", "evaluate", "report", "total"}
    for name in ("loss.png", "p_at_1.png", "retrievals.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] >= 700 and im.size[1] >= 80
    metrics = [json.loads(line) for line in (tiny_run.workdir / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]


def test_end_to_end_checkpoint_is_self_contained(tiny_run):
    from vlm2geovec_jax.inputs.image import ImageConfig
    from vlm2geovec_jax.inputs.processing import Processing

    model = tiny_run.workdir / "train" / "model"
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (model / "assets" / name).read_bytes() == (tiny_run.workdir / "tokenizer" / name).read_bytes()
    processing = Processing.read(model)  # what training used: configs/demo.py's data.pipeline
    assert processing.image.fixed_size == (112, 112) and processing.length_buckets == (112,)
    transformers_view = ImageConfig.from_preprocessor_config(model / "assets" / "preprocessor_config.json")
    assert (transformers_view.min_pixels, transformers_view.max_pixels) == (112 * 112, 112 * 112)
