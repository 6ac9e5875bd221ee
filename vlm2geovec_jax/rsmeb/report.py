"""The suite report: per-task, per-group and overall scores as JSON, a Markdown table and a PNG bar chart.

Group and overall figures are plain means of task P@1 (metrics.aggregate) over the suite's own tasks;
derived baselines (the crop baseline) are listed beside their task with the difference, never averaged.
Every task shows its chance level (expected P@1 of a random ranking of its candidates), because policies
differ by orders of magnitude (10 classes vs 1000 candidates), and the paper's figure where one exists.
The chart is drawn with matplotlib's object API (a Figure on the Agg canvas: no pyplot, no global state,
no display): one bar per task coloured by group, a tick at chance, a diamond at the paper's figure.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from PIL import Image

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


_COLORS = dict(zip(GROUPS, ("#4285f4", "#db4437", "#f4b400", "#0f9d58", "#ab47bc", "#00acc1")))
_DPI = 100


def chart_figure(report: Mapping[str, Any], *, width: int = 1000) -> Figure:
    """Horizontal P@1 bars per task (colour = group, value in the tick label), a black tick at chance, a
    diamond at the paper's figure.

    ``width`` is in pixels; the height grows with the number of tasks, so labels never overlap.
    """
    tasks = report["tasks"]
    fig = Figure(figsize=(width / _DPI, 1.6 + 0.3 * len(tasks)), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    y = list(range(len(tasks)))
    ax.barh(y, [t["metrics"]["p@1"] for t in tasks], height=0.7,
            color=[_COLORS.get(t["group"], "#787878") for t in tasks])
    ax.scatter([t["chance_p@1"] for t in tasks], y, marker="|", s=250, color="black", zorder=3)
    paper = [(t["paper_p1"], i) for i, t in enumerate(tasks) if t.get("paper_p1") is not None]
    if paper:
        ax.scatter(*zip(*paper), marker="D", s=40, facecolor="white", edgecolor="black", zorder=4)
    ax.set_yticks(y, [f"{t['task']}  {t['metrics']['p@1']:.1f}" for t in tasks], fontsize=8)
    ax.invert_yaxis()  # suite order, top to bottom
    ax.set_xlim(0, 100)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("P@1 (%)")
    ax.set_ylabel("task  P@1")
    ax.grid(axis="x", color="#e0e0e0")
    ax.set_axisbelow(True)
    ax.set_title(f"{report['suite']}: P@1 per task, overall {report['overall']['p@1']:.1f}", fontsize=10)
    groups = [g for g in _COLORS if any(t["group"] == g for t in tasks)]
    ax.legend(handles=[Patch(color=_COLORS[g], label=g) for g in groups]
              + [Line2D([], [], color="black", marker="|", linestyle="", markersize=12, label="chance"),
                 Line2D([], [], marker="D", markerfacecolor="white", markeredgecolor="black", linestyle="",
                        label="paper")],
              loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
    return fig


def draw_chart(report: Mapping[str, Any], *, width: int = 1000) -> Image.Image:
    """The chart of ``chart_figure`` rendered to an RGB image ``width`` pixels wide."""
    buf = io.BytesIO()
    chart_figure(report, width=width).savefig(buf, format="png", dpi=_DPI)
    buf.seek(0)
    with Image.open(buf) as im:
        return im.convert("RGB")


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
