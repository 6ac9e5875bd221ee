"""Report: aggregation, golden Markdown, the matplotlib chart; zero-shot prompt ensembles against a numpy reference."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from vlm2geovec_jax.inputs.records import Item
from vlm2geovec_jax.rsmeb.report import build_report, chart_figure, draw_chart, to_markdown, write_report
from vlm2geovec_jax.rsmeb.suite import suite_from_config
from vlm2geovec_jax.rsmeb.zeroshot import DEFAULT_TEMPLATES, ZeroShotClassifier, class_embeddings, class_items


def _suite():
    return suite_from_config({"name": "mini", "paper": {"ref": 32.5}, "tasks": {
        "cls": dict(group="scene_classification", dataset="rs_scenes/aid", split="test",
                    kind="scene_classification", candidate_policy="all_classes"),
        "ref": dict(group="grounding_region", dataset="vrsbench", split="validation", kind="referring_expression",
                    candidate_policy="sampled", paper_p1=32.5),
        "vqa": dict(group="vqa", dataset="rsvqa/lr", split="test", kind="vqa", candidate_policy="all_classes")}})


def _result(task, group, p1, chance, paper=None):
    m = {"p@1": p1, "recall@1": p1, "recall@5": p1 + 10, "recall@10": p1 + 20, "mrr": p1 + 5, "ndcg@10": p1 + 6}
    return {"task": task, "group": group, "kind": "k", "dataset": "d", "split": "test", "policy": "sampled",
            "num_queries": 100, "num_candidates": 10, "ranked_k": 10, "metrics": m, "chance_p@1": chance,
            "top1_tie_rate": 0.0, "paper_p1": paper}


def _report():
    base = _suite()
    crop_task = dataclasses.replace(base.task("ref"), name="ref_crop", baseline_of="ref", paper_p1=None)
    suite = dataclasses.replace(base, tasks=base.tasks + (crop_task,))
    results = {"cls": _result("cls", "scene_classification", 80.0, 10.0),
               "ref": _result("ref", "grounding_region", 30.0, 0.1, 32.5),
               "vqa": _result("vqa", "vqa", 41.0, 50.0),
               "ref_crop": _result("ref_crop", "grounding_region", 21.5, 0.1)}
    return build_report(suite, results, model_key="ckpt@abc")


def test_aggregates_exclude_baselines():
    report = _report()
    assert [t["task"] for t in report["tasks"]] == ["cls", "vqa", "ref"]
    assert report["overall"]["p@1"] == pytest.approx((80 + 30 + 41) / 3)
    assert report["groups"]["grounding_region"]["p@1"] == 30.0
    assert report["baselines"] == [{"task": "ref_crop", "baseline_of": "ref", "p@1": 21.5, "p@1_of_task": 30.0,
                                    "gain_of_task": 8.5}]


def test_markdown_golden():
    md = to_markdown(_report())
    assert md.splitlines()[:16] == [
        "# mini results", "",
        "| task | group | queries | candidates | P@1 | R@5 | MRR | chance P@1 | paper P@1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        "| cls | scene_classification | 100 | 10 | 80.0 | 90.0 | 85.0 | 10.0 |  |",
        "| vqa | vqa | 100 | 10 | 41.0 | 51.0 | 46.0 | 50.0 |  |",
        "| ref | grounding_region | 100 | 10 | 30.0 | 40.0 | 35.0 | 0.1 | 32.5 |",
        "",
        "| group | P@1 | R@5 | MRR |", "|---|---:|---:|---:|",
        "| scene_classification | 80.0 | 90.0 | 85.0 |",
        "| vqa | 41.0 | 51.0 | 46.0 |",
        "| grounding_region | 30.0 | 40.0 | 35.0 |",
        "| **overall** | 50.3 | 60.3 | 55.3 |",
        "",
        "| baseline | of task | baseline P@1 | task P@1 | gain |"]
    assert "| ref_crop | ref | 21.5 | 30.0 | +8.5 |" in md


def test_chart_and_files(tmp_path):
    report = _report()
    fig = chart_figure(report, width=600)
    [ax] = fig.axes
    assert [b.get_width() for b in ax.patches[:3]] == [80.0, 41.0, 30.0]  # P@1 per task, in report order
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cls  80.0", "vqa  41.0", "ref  30.0"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "20", "40", "60", "80", "100"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("P@1 (%)", "task  P@1")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "scene_classification", "vqa", "grounding_region", "chance", "paper"]
    # the rendered pixels: the group colour inside the first bar (cls, 80%), white past its end
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    h = pixels.shape[0]

    def pixel(x, y):
        px, py = ax.transData.transform((x, y))
        return tuple(pixels[int(h - py), int(px)])

    assert pixel(50, 0) == (0x42, 0x85, 0xf4) and pixel(90, 0) == (255, 255, 255)
    vqa = tuple(round(255 * c) for c in ax.patches[1].get_facecolor()[:3])
    assert pixel(20, 1) == vqa != pixel(50, 0)  # the vqa bar at its row, in another group's colour
    image = draw_chart(report, width=600)
    assert image.mode == "RGB" and image.size == (600, h)
    paths = write_report(report, tmp_path)
    assert json.loads(paths["json"].read_text())["overall"]["p@1"] == pytest.approx(report["overall"]["p@1"])
    assert Image.open(paths["chart"]).size[0] == 1000
    assert paths["markdown"].read_text().startswith("# mini")


# ------------------------------------------------------------------------------------------------ zero-shot
def _vec(seed):
    v = np.random.default_rng(seed).normal(size=6)
    return v / np.linalg.norm(v)


def _fake(items):
    out = []
    for it in items:
        seed = sum(map(ord, it.text or "")) if it.image is None else int(it.image.decode())
        out.append(3.0 * _vec(seed))  # not unit length: the ensemble normalises
    return np.asarray(out)


def test_class_embeddings_are_renormalised_template_means():
    names = ["forest", "harbor", "desert"]
    templates = ("{}", "an aerial image of {}")
    got = class_embeddings(_fake, names, templates)
    for c, name in enumerate(names):
        mean = np.mean([_vec(sum(map(ord, t.format(name)))) for t in templates], axis=0)
        np.testing.assert_allclose(got[c], mean / np.linalg.norm(mean), rtol=1e-5)
    items = class_items(names, templates)
    assert [i.text for i in items[:3]] == ["forest", "an aerial image of forest", "harbor"]
    assert all(i.instruction is None for i in items)  # classification candidates carry no instruction


def test_classify_picks_the_nearest_class():
    names = ["forest", "harbor", "desert"]
    clf = ZeroShotClassifier(_fake, names)
    weights = class_embeddings(_fake, names, DEFAULT_TEMPLATES)
    images = [str(s).encode() for s in range(20)]
    expect = [names[int(np.argmax(weights @ _vec(int(b.decode()))))] for b in images]
    assert clf.classify(images) == expect
    assert clf.image_items([Item(image=b"1")])[0].instruction.startswith("Identify the land-use scene")
    with pytest.raises(ValueError, match=r"templates: expected strings with one '\{\}'"):
        class_items(names, ("no slot",))
