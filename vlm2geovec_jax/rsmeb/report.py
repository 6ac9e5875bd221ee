"""The suite report: per-task, per-group and overall scores as JSON, a Markdown table and a PNG bar chart.

Group and overall figures are plain means of task P@1 (metrics.aggregate) over the suite's own tasks;
derived baselines (the crop baseline) are listed beside their task with the difference, never averaged.
Every task shows its chance level (expected P@1 of a random ranking of its candidates), because policies
differ by orders of magnitude (10 classes vs 1000 candidates), and the paper's figure where one exists.
The chart is drawn with PIL (no matplotlib): one bar per task, a tick at chance, a diamond at the paper.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from vlm2geovec_jax.rsmeb import metrics
from vlm2geovec_jax.rsmeb.cache import atomic_write_text
from vlm2geovec_jax.rsmeb.suite import GROUPS, Suite

SUMMARY_METRICS = ("p@1", "recall@5", "mrr")
_TASK_FIELDS = ("task", "group", "kind", "dataset", "split", "policy", "num_queries", "num_candidates",
                "ranked_k", "metrics", "headline", "chance_p@1", "top1_tie_rate", "paper_p1")


def build_report(suite: Suite, results: Mapping[str, Mapping[str, Any]], *, model_key: str = "") -> dict[str, Any]:
    """The report dict from per-task results (runner.score_task output), in suite order."""
    missing = [t.name for t in suite.tasks if t.name not in results]
    if missing:
        raise ValueError(f"results: no result for task(s) {missing} of suite {suite.name!r}")
    main = {t.name: results[t.name]["metrics"] for t in suite.main_tasks}
    summary = {m: metrics.aggregate(main, suite.groups, m) for m in SUMMARY_METRICS}
    baselines = [{"task": t.name, "baseline_of": t.baseline_of,
                  "p@1": results[t.name]["metrics"]["p@1"],
                  "p@1_of_task": results[t.baseline_of]["metrics"]["p@1"],
                  "gain_of_task": results[t.baseline_of]["metrics"]["p@1"] - results[t.name]["metrics"]["p@1"]}
                 for t in suite.tasks if t.baseline_of]
    return {
        "suite": suite.name, "source": suite.source, "templates_version": suite.templates_version,
        "model_key": model_key,
        "tasks": [{k: results[t.name].get(k) for k in _TASK_FIELDS} for t in suite.main_tasks],
        "groups": {g: {m: summary[m]["groups"][g] for m in SUMMARY_METRICS} for g in summary["p@1"]["groups"]},
        "overall": {m: summary[m]["overall"] for m in SUMMARY_METRICS},
        "baselines": baselines,
        "paper_p1": dict(suite.paper),
    }


def _f(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def to_markdown(report: Mapping[str, Any]) -> str:
    """A Markdown table per task (ours, chance, paper), then groups, overall and baselines."""
    lines = [f"# {report['suite']} results", "",
             "| task | group | queries | candidates | P@1 | R@5 | MRR | chance P@1 | paper P@1 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for t in report["tasks"]:
        m = t["metrics"]
        lines.append(f"| {t['task']} | {t['group']} | {t['num_queries']} | {t['num_candidates']} | {_f(m['p@1'])} "
                     f"| {_f(m['recall@5'])} | {_f(m['mrr'])} | {_f(t['chance_p@1'])} | {_f(t['paper_p1'])} |")
    lines += ["", "| group | P@1 | R@5 | MRR |", "|---|---:|---:|---:|"]
    for g, m in report["groups"].items():
        lines.append(f"| {g} | {_f(m['p@1'])} | {_f(m['recall@5'])} | {_f(m['mrr'])} |")
    o = report["overall"]
    lines.append(f"| **overall** | {_f(o['p@1'])} | {_f(o['recall@5'])} | {_f(o['mrr'])} |")
    if report["baselines"]:
        lines += ["", "| baseline | of task | baseline P@1 | task P@1 | gain |", "|---|---|---:|---:|---:|"]
        for b in report["baselines"]:
            lines.append(f"| {b['task']} | {b['baseline_of']} | {_f(b['p@1'])} | {_f(b['p@1_of_task'])} "
                         f"| {b['gain_of_task']:+.1f} |")
    lines += ["", "Group and overall figures are means of task scores. Chance P@1 is that of a random ranking. "
              "Paper figures are from the VLM2GeoVec abstract; the task set is a reconstruction, so they are a "
              "reference, not a like-for-like comparison. MRR over a gallery is MRR@10.", ""]
    return "\n".join(lines)


_COLORS = {g: c for g, c in zip(GROUPS, ((66, 133, 244), (219, 68, 55), (244, 180, 0), (15, 157, 88),
                                         (171, 71, 188), (0, 172, 193)))}


def draw_chart(report: Mapping[str, Any], *, width: int = 1000, bar_height: int = 18) -> Image.Image:
    """Horizontal P@1 bars per task (colour = group), a black tick at chance, a diamond at the paper's figure."""
    font = ImageFont.load_default()
    tasks = report["tasks"]
    label_w, top, pad = 290, 30, 6
    height = top + len(tasks) * (bar_height + pad) + 30
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    plot_w = width - label_w - 60
    draw.text((10, 8), f"{report['suite']}: P@1 per task, overall {report['overall']['p@1']:.1f} "
              "(bar: ours, | chance, <> paper)", fill="black",
              font=font)
    for i, t in enumerate(tasks):
        y = top + i * (bar_height + pad)
        p1 = t["metrics"]["p@1"]
        draw.text((10, y + 3), t["task"][:44], fill="black", font=font)
        x0 = label_w
        draw.rectangle([x0, y, x0 + max(1, round(plot_w * p1 / 100)), y + bar_height],
                       fill=_COLORS.get(t["group"], (120, 120, 120)))
        draw.text((x0 + round(plot_w * p1 / 100) + 4, y + 3), f"{p1:.1f}", fill="black", font=font)
        xc = x0 + round(plot_w * t["chance_p@1"] / 100)
        draw.line([xc, y - 2, xc, y + bar_height + 2], fill="black", width=2)
        if t.get("paper_p1") is not None:
            xp, yc, r = x0 + round(plot_w * t["paper_p1"] / 100), y + bar_height // 2, bar_height // 2
            draw.polygon([(xp, yc - r), (xp + r, yc), (xp, yc + r), (xp - r, yc)], outline="black",
                         fill=(255, 255, 255))
    axis_y = height - 24
    draw.line([label_w, axis_y, label_w + plot_w, axis_y], fill="black")
    for v in range(0, 101, 20):
        x = label_w + round(plot_w * v / 100)
        draw.line([x, axis_y, x, axis_y + 4], fill="black")
        draw.text((x - 6, axis_y + 6), str(v), fill="black", font=font)
    return image


def write_report(report: Mapping[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """report.json, report.md and report.png in ``out_dir`` (each written atomically); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "chart": out / "report.png"}
    atomic_write_text(paths["json"], json.dumps(report, indent=1, sort_keys=True))
    atomic_write_text(paths["markdown"], to_markdown(report))
    tmp = out / "report.tmp.png"
    draw_chart(report).save(tmp, format="PNG")
    os.replace(tmp, paths["chart"])
    return paths
