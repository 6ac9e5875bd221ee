"""``vlm2geovec demo``: the whole system on a laptop CPU in minutes, with nothing downloaded.

Stages, all into one work directory: build the synthetic GeoScenes world (data/geoscenes) and the demo
tokenizer, train configs/demo.py from scratch (the trained checkpoint carries its tokenizer and image
settings, so ``vlm2geovec embed`` / ``eval`` need nothing else), evaluate eval/geoscenes.py (RSMEB's 21 tasks
on GeoScenes, with the crop baseline) through the model's Embedder, and write a report:

    WORKDIR/report/summary.md      what ran, wall times, P@1 per task and group beside chance, crop baseline
    WORKDIR/report/loss.png        training loss and in-batch accuracy per logged step
    WORKDIR/report/p_at_1.png      P@1 per task with chance marked (rsmeb/report.py's chart)
    WORKDIR/report/retrievals.png  top-5 retrievals of a few queries of different kinds (gold outlined green)

configs/, data/ and eval/ are definitions outside the package (DESIGN.md), so the demo runs from a source
checkout (``pip install -e .``), where they sit beside the package.
"""
from __future__ import annotations

import dataclasses
import logging
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.py"
DEMO_SUITE = REPO / "eval" / "geoscenes.py"
GEOSCENES_BUILDER = REPO / "data" / "geoscenes"
# The world the demo builds: its name is the builder config that configs/demo.py and the suite read.
# Validation tiles (regions of the planet apart from both train and test) are where choices are made.
DEMO_WORLD = dict(name="demo", seed=0, tile_size=112, num_train=2000, num_validation=200, num_test=400)
SHEET_TASKS = ("text_to_image", "image_to_text", "composed_attribute_edits", "referring_expression_retrieval",
               "region_caption_retrieval", "geo_image_retrieval")
CELL = 128


@dataclasses.dataclass
class DemoResult:
    """Where everything went, and how long each stage took (seconds)."""

    workdir: Path
    report_dir: Path
    summary: Path
    timings: dict[str, float]
    report: dict[str, Any]


# ------------------------------------------------------------------------------------------------ stages
def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; the demo runs from a source checkout of vlm2geovec-jax "
                                "(configs/, data/ and eval/ beside the package)")
    return path


def build_geoscenes(data_dir: str | Path, world: Mapping[str, Any] = DEMO_WORLD) -> str:
    """Builds (or finds already built) GeoScenes with ``world``'s settings into ``data_dir``; returns its name."""
    from vlm2geovec_jax.inputs import tfds_common  # noqa: PLC0415

    cls = tfds_common.builder_cls_from_path(_require(GEOSCENES_BUILDER))
    config = type(cls.BUILDER_CONFIGS[0])(description="vlm2geovec demo world", **dict(world))
    cls(data_dir=str(data_dir), config=config).download_and_prepare()
    return f"geoscenes/{config.name}"


def evaluate(model_dir: Path, suite_path: str, data_dir: Path, out: Path, *, tasks: Sequence[str] | None = None,
             transform: Callable | None = None, progress: bool = True) -> tuple[dict, dict, Any]:
    """``vlm2geovec eval`` through the model's Embedder, keeping the rows and the cache: (report, rows by task,
    embedding cache). ``transform(suite, rows) -> (suite, rows)`` changes the rows before they are embedded
    (the dual model's image-only / text-only rows, rsmeb/dual.py)."""
    from vlm2geovec_jax.embedder import load  # noqa: PLC0415
    from vlm2geovec_jax.rsmeb import runner  # noqa: PLC0415

    suite, rows = runner.prepare_suite(suite_path, data_dir, tasks)
    if transform is not None:
        suite, rows = transform(suite, rows)
    report, cache = runner.evaluate(load(model_dir), suite, rows, out, progress=progress)
    return report, rows, cache


def build_inputs(workdir: Path, world: Mapping[str, Any]) -> tuple[str, Path]:
    """GeoScenes and the demo tokenizer in ``workdir`` (reused when already built): (dataset name, tokenizer)."""
    from vlm2geovec_jax.inputs.tokenizer import build_demo_tokenizer  # noqa: PLC0415

    return build_geoscenes(workdir / "data", world), build_demo_tokenizer(workdir / "tokenizer")


def configure(config, data_dir: Path, tokenizer: Path, dataset: str):
    """``config`` (default configs/demo.py) reading the built world and tokenizer, validated."""
    from vlm2geovec_jax.train.config import load_config, validate  # noqa: PLC0415

    config = config if config is not None else load_config(_require(DEMO_CONFIG))
    config.data.pipeline.data_dir = str(data_dir)
    config.data.pipeline.tokenizer = str(tokenizer)
    validate(config)
    _check_datasets(config, dataset)
    return config


def train_model(config, train_dir: Path, *, progress: bool = True):
    """Trains (or resumes) ``config`` into ``train_dir``: (state, the run's self-contained model directory)."""
    from vlm2geovec_jax.train.trainer import train  # noqa: PLC0415

    state = train(config, train_dir, progress=progress)
    return state, train_dir / "model"


def default_suite(dataset: str, *, split: str = "test") -> str:
    """eval/geoscenes.py over the built world's ``split`` (test, or validation for any choice to be made)."""
    options = dataset.split("/", 1)[1] + ("" if split == "test" else f",{split}")
    return f"{_require(DEMO_SUITE)}:{options}"


# ------------------------------------------------------------------------------------------------- report
def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the bitmap font only
        return ImageFont.load_default()


def loss_curve_png(metrics: Sequence[Mapping[str, float]], path: Path, *, width: int = 720,
                   height: int = 360) -> Path:
    """Training loss (blue, left axis) and in-batch accuracy (orange, right axis, 0-1) per logged step."""
    if not metrics:
        raise ValueError("loss curve: metrics.jsonl has no logged step; expected at least one")
    image = Image.new("RGB", (width, height), "white")
    draw, font = ImageDraw.Draw(image), _font()
    left, right, top, bottom = 60, width - 50, 30, height - 40
    steps = np.array([m["step"] for m in metrics], float)
    loss = np.array([m["loss"] for m in metrics], float)
    acc = np.array([m.get("accuracy", np.nan) for m in metrics], float)
    s0, s1 = steps.min(), max(steps.max(), steps.min() + 1)
    hi = float(np.nanmax(loss)) * 1.05 or 1.0

    def xy(s, v, vmax):
        return left + (s - s0) / (s1 - s0) * (right - left), bottom - v / vmax * (bottom - top)

    draw.rectangle([left, top, right, bottom], outline="black")
    for frac in (0, 0.25, 0.5, 0.75, 1):
        y = bottom - frac * (bottom - top)
        draw.line([left, y, right, y], fill=(225, 225, 225))
        draw.text((8, y - 6), f"{frac * hi:.2f}", fill=(31, 119, 180), font=font)
        draw.text((right + 6, y - 6), f"{frac:.2f}", fill=(230, 120, 20), font=font)
    for values, vmax, colour in ((loss, hi, (31, 119, 180)), (acc, 1.0, (230, 120, 20))):
        points = [xy(s, v, vmax) for s, v in zip(steps, values) if np.isfinite(v)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        elif points:
            x, y = points[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    draw.text((left, 8), f"training loss (blue) and in-batch accuracy (orange), steps {int(s0)}-{int(steps.max())}",
              fill="black", font=font)
    draw.text(((left + right) // 2 - 15, bottom + 12), "step", fill="black", font=font)
    image.save(path, format="PNG")
    return path


def _draw_boxes(image: Image.Image, item, scale: float) -> None:
    draw = ImageDraw.Draw(image)
    for box in item.boxes:
        x1, y1, x2, y2 = (v * scale for v in box.xyxy)
        draw.rectangle([x1 - 1, y1 - 1, x2 + 1, y2 + 1], outline=(255, 0, 255), width=2)


def _item_text(item) -> str:
    parts = [item.text or ""]
    if item.geo is not None:
        parts.append(f"({item.geo.lat:.2f}, {item.geo.lon:.2f})")
    return " ".join(p for p in parts if p)


def render_item(item, *, size: int = CELL, caption_lines: int = 4) -> Image.Image:
    """One cell: the image (boxes in magenta) above its text, or the text alone on grey."""
    font = _font(11)
    cell = Image.new("RGB", (size, size + caption_lines * 13 + 4), (240, 240, 240))
    text = _item_text(item)
    if item.image is not None:
        from vlm2geovec_jax.inputs.image import load_image  # noqa: PLC0415

        picture = load_image(item.image, where="contact sheet").resize((size, size), Image.NEAREST)
        _draw_boxes(picture, item, size / picture.size[0] if item.image_size is None else size / item.image_size[0])
        cell.paste(picture, (0, 0))
        lines, y = textwrap.wrap(text, 22)[:caption_lines], size + 2
    else:
        lines, y = textwrap.wrap(text, 22)[:caption_lines + 8], 4
    draw = ImageDraw.Draw(cell)
    for line in lines:
        draw.text((3, y), line, fill="black", font=font)
        y += 13
    return cell


def contact_sheet_png(rows_by_task: Mapping[str, Sequence[Any]], cache, path: Path, *,
                      tasks: Sequence[str] = SHEET_TASKS, per_task: int = 1, k: int = 5,
                      box_format: str = "qwen") -> Path:
    """Top-``k`` candidates of the first ``per_task`` queries of each task: query | ranks 1..k (green: gold).

    ``box_format`` is the model's (its items were embedded, and cached, under keys with boxes written so)."""
    from vlm2geovec_jax.inputs.identity import item_key  # noqa: PLC0415

    lines = []
    for task in (t for t in tasks if t in rows_by_task):
        for row in list(rows_by_task[task])[:per_task]:
            q = cache.get([item_key(row.query, box_format=box_format)])[0]
            c = cache.get([item_key(x, box_format=box_format) for x in row.candidates])
            order = np.argsort(-(c @ q), kind="stable")[:k]
            lines.append((task, row, [int(i) for i in order]))
    if not lines:
        raise ValueError(f"contact sheet: none of the tasks {list(tasks)} was evaluated")
    font, label_h, gap = _font(12), 16, 6
    cells = [[render_item(row.query)] + [render_item(row.candidates[i]) for i in order] for _, row, order in lines]
    cell_h = max(c.size[1] for line in cells for c in line)
    sheet = Image.new("RGB", (gap + (k + 1) * (CELL + gap) + 10, len(lines) * (cell_h + label_h + gap) + gap),
                      "white")
    draw = ImageDraw.Draw(sheet)
    for r, ((task, row, order), line) in enumerate(zip(lines, cells)):
        y = gap + r * (cell_h + label_h + gap)
        draw.text((gap, y), f"{task}: query, then ranks 1-{k}", fill="black", font=font)
        for j, cell in enumerate(line):
            x = gap + j * (CELL + gap) + (10 if j else 0)
            sheet.paste(cell, (x, y + label_h))
            if j:
                gold = order[j - 1] in row.positives
                draw.rectangle([x - 2, y + label_h - 2, x + CELL + 1, y + label_h + cell.size[1] + 1],
                               outline=(0, 170, 0) if gold else (200, 200, 200), width=3 if gold else 1)
    sheet.save(path, format="PNG")
    return path


def _f(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


def summary_markdown(report: Mapping[str, Any], *, timings: Mapping[str, float], facts: Mapping[str, Any]) -> str:
    """The report's front page: what ran and how long, P@1 per group and task beside chance, crop baseline."""
    tasks = report["tasks"]
    chance = {}
    for t in tasks:
        chance.setdefault(t["group"], []).append(t["chance_p@1"])
    lines = ["# vlm2geovec demo", "",
             f"A {facts['params'] / 1e6:.2f}M-parameter Qwen2-VL-shaped encoder trained from scratch for "
             f"{facts['steps']} steps (batch {facts['batch_size']}) on the synthetic GeoScenes world "
             f"({facts['train_tiles']} training tiles), then evaluated on {len(tasks)} RSMEB-style tasks on "
             f"{facts['test_tiles']} test tiles from regions of the planet that training never saw.", "",
             "| stage | wall time (s) |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in timings.items()]
    lines += ["", "## P@1 per group", "", "| group | P@1 | chance P@1 | tasks |", "|---|---:|---:|---:|"]
    for group, m in report["groups"].items():
        lines.append(f"| {group} | {_f(m['p@1'])} | {_f(float(np.mean(chance[group])))} | {len(chance[group])} |")
    lines.append(f"| **overall** | {_f(report['overall']['p@1'])} | "
                 f"{_f(float(np.mean([t['chance_p@1'] for t in tasks])))} | {len(tasks)} |")
    lines += ["", "## P@1 per task", "", "| task | group | queries | candidates | P@1 | chance P@1 | R@5 |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for t in tasks:
        lines.append(f"| {t['task']} | {t['group']} | {t['num_queries']} | {t['num_candidates']} | "
                     f"{_f(t['metrics']['p@1'])} | {_f(t['chance_p@1'])} | {_f(t['metrics']['recall@5'])} |")
    if report["baselines"]:
        lines += ["", "## Region tasks: box tokens vs the crop baseline", "",
                  "The same rows, once with the whole tile and the box as text (VLM2GeoVec), once with the box's "
                  "pixels cropped out as the image (VLM2Vec's way).", "",
                  "| task | P@1 with box tokens | P@1 with crops | gain |", "|---|---:|---:|---:|"]
        lines += [f"| {b['baseline_of']} | {_f(b['p@1_of_task'])} | {_f(b['p@1'])} | {b['gain_of_task']:+.1f} |"
                  for b in report["baselines"]]
    lines += ["", "Chance P@1 is that of a random ranking of each row's candidates; group figures are means over "
              "tasks. GeoScenes is synthetic: these figures show that the system learns, not how it does on "
              "real imagery.", "", "- loss curve: [loss.png](loss.png)", "- P@1 per task: [p_at_1.png](p_at_1.png)",
              "- top-5 retrievals: [retrievals.png](retrievals.png)",
              f"- full evaluation report: {facts['eval_dir']}/report.md", f"- model checkpoint: {facts['model']}", ""]
    return "\n".join(lines)


def write_report(report: Mapping[str, Any], rows_by_task, cache, *, metrics, out: Path,
                 timings: Mapping[str, float], facts: Mapping[str, Any], box_format: str = "qwen") -> Path:
    """summary.md, loss.png, p_at_1.png and retrievals.png in ``out``; returns summary.md."""
    from vlm2geovec_jax.rsmeb.report import draw_chart  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    loss_curve_png(metrics, out / "loss.png")
    draw_chart(report).save(out / "p_at_1.png", format="PNG")
    contact_sheet_png(rows_by_task, cache, out / "retrievals.png", box_format=box_format)
    summary = out / "summary.md"
    summary.write_text(summary_markdown(report, timings=timings, facts=facts), encoding="utf-8")
    return summary


# -------------------------------------------------------------------------------------------------- main
def _stage(timings: dict, name: str, number: int, start: float) -> float:
    now = time.perf_counter()
    timings[name] = now - start
    print(f"[{number}/5] {name}: {timings[name]:.0f} s", flush=True)
    return now


def quiet_pipeline() -> None:
    """Tiles without objects give no region pair: the pipeline skips them (counted); a warning each is noise."""
    logging.getLogger("vlm2geovec_jax.inputs.pipeline").setLevel(logging.ERROR)


def _check_datasets(config, dataset: str) -> None:
    """The config must train on the world just built (a mismatch would surface as a TFDS lookup error)."""
    for i, task in enumerate(config.data.pipeline.tasks):
        if task["dataset"] != dataset:
            raise ValueError(f"training config: data.pipeline.tasks[{i}].dataset is {task['dataset']!r}; expected "
                             f"{dataset!r}, the GeoScenes world the demo builds")


def run_demo(workdir: str | Path, *, config=None, suite: str | None = None, tasks: Sequence[str] | None = None,
             world: Mapping[str, Any] = DEMO_WORLD, progress: bool = True) -> DemoResult:
    """Builds, trains, evaluates and reports into ``workdir``; ``config`` / ``suite`` (``tasks``: a subset of
    it) / ``world`` replace the demo's own (tests pass smaller ones through the same code path)."""
    import jax  # noqa: PLC0415

    from vlm2geovec_jax.train.metrics_log import read_metrics  # noqa: PLC0415

    workdir = Path(workdir).absolute()
    if workdir.exists() and not workdir.is_dir():
        raise FileExistsError(f"--workdir {workdir}: a file, not a directory; expected a work directory")
    workdir.mkdir(parents=True, exist_ok=True)
    quiet_pipeline()
    timings: dict[str, float] = {}
    begin = t = time.perf_counter()
    print(f"[1/5] building GeoScenes ({world['num_train']} train / {world.get('num_validation', 0)} validation / "
          f"{world['num_test']} test tiles) and the demo tokenizer in {workdir}", flush=True)
    dataset, tokenizer = build_inputs(workdir, world)
    t = _stage(timings, "build data and tokenizer", 1, t)

    config = configure(config, workdir / "data", tokenizer, dataset)
    print(f"[2/5] training {config.num_steps} steps from scratch (batch {config.batch_size})", flush=True)
    state, model = train_model(config, workdir / "train", progress=progress)
    t = _stage(timings, "train", 2, t)

    suite = suite or default_suite(dataset)
    print(f"[3/5] evaluating {suite}", flush=True)
    report, rows, cache = evaluate(model, suite, workdir / "data", workdir / "eval", tasks=tasks,
                                   progress=progress)
    t = _stage(timings, "evaluate", 3, t)

    print("[4/5] writing the report", flush=True)
    facts = dict(params=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params["model"])),
                 steps=config.num_steps, batch_size=config.batch_size, train_tiles=world["num_train"],
                 test_tiles=world["num_test"], eval_dir=workdir / "eval", model=model)
    timings["report"] = 0.0
    timings["total"] = time.perf_counter() - begin
    summary = write_report(report, rows, cache, metrics=read_metrics(workdir / "train"), out=workdir / "report",
                           timings=timings, facts=facts, box_format=config.data.pipeline.get("box_format", "qwen"))
    t = _stage(timings, "report", 4, t)
    timings["total"] = time.perf_counter() - begin
    summary.write_text(summary_markdown(report, timings=timings, facts=facts), encoding="utf-8")
    print(f"[5/5] done in {timings['total']:.0f} s; overall P@1 {report['overall']['p@1']:.1f}", flush=True)
    print(f"model checkpoint (self-contained): {model}")
    print(f"demo report written to {summary} (loss.png, p_at_1.png, retrievals.png beside it)")
    return DemoResult(workdir, workdir / "report", summary, timings, report)
