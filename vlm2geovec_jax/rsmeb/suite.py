"""A benchmark suite as typed objects: Suite (groups, headline figures) of Tasks (source, kind, policy).

Suites are config files (eval/rsmeb.py), loaded by path like big_vision configs: the file defines
``get_config(arg=None)`` returning an ml_collections ConfigDict, and ``path:arg`` passes ``arg``. The config
is checked here once, so a typo in a group, kind or policy fails at load time with the task's name instead
of hours into a run.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
from collections.abc import Mapping
from typing import Any

from vlm2geovec_jax.inputs.templates import TEMPLATES

GROUPS = ("scene_classification", "cross_modal_search", "compositional_retrieval", "vqa",
          "grounding_region", "semantic_geospatial")
POLICIES = ("all_classes", "sampled", "gallery")
TRAIN_SPLITS = ("train", "restval")  # Karpathy's restval is training data too
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_TASK_KEYS = ("group", "dataset", "split", "kind", "query_instruction", "candidate_instruction",
              "candidate_policy", "num_candidates", "hard_negatives", "num_queries", "metrics", "seed",
              "filters", "official_file", "paper_p1", "description")
_SUITE_KEYS = ("name", "templates_version", "seed", "paper", "crop_baseline", "tasks")


class SuiteError(ValueError):
    """A suite definition that cannot be run; the message names the suite file and the task."""


@dataclasses.dataclass(frozen=True)
class Task:
    """One ranking task: where its queries come from, how they are phrased, and what they are ranked against.

    ``candidate_policy``: "all_classes" ranks every class name (or, without class names, every distinct gold
    of the split: VQA's answer vocabulary); "sampled" ranks the gold among ``num_candidates - 1`` others
    drawn with the seed (the row's hard negatives first when ``hard_negatives``); "gallery" ranks the whole
    gallery of distinct golds. ``filters`` keeps pairs whose ``{field: allowed values}`` match
    (nested fields as ``outer/inner``).
    (e.g. composed change types). ``official_file`` replaces building with an MMEB-format file, read as is.
    """

    name: str
    group: str
    dataset: str
    split: str
    kind: str
    query_instruction: str
    candidate_instruction: str
    candidate_policy: str
    num_candidates: int = 1000
    hard_negatives: bool = False
    num_queries: int = 1000
    metrics: tuple[str, ...] = ("p@1",)
    seed: int = 0
    filters: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    official_file: str = ""
    paper_p1: float | None = None
    description: str = ""
    baseline_of: str = ""  # set on derived baseline tasks (crop.py): the task they are a baseline for

    @property
    def builder(self) -> str:
        """The TFDS builder name ("rs_scenes" for "rs_scenes/aid")."""
        return self.dataset.split("/", 1)[0]


@dataclasses.dataclass(frozen=True)
class Suite:
    """Tasks in report order (group order, then name), the suite's seed and the paper's headline figures."""

    name: str
    tasks: tuple[Task, ...]
    templates_version: str
    paper: Mapping[str, float]
    crop_baseline: bool = False
    source: str = ""

    @property
    def main_tasks(self) -> tuple[Task, ...]:
        """The benchmark's own tasks, without derived baselines (those are reported beside, not averaged)."""
        return tuple(t for t in self.tasks if not t.baseline_of)

    @property
    def groups(self) -> dict[str, list[str]]:
        """group -> main task names, for metrics.aggregate; groups without tasks are left out."""
        out: dict[str, list[str]] = {}
        for task in self.main_tasks:
            out.setdefault(task.group, []).append(task.name)
        return out

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise SuiteError(f"suite {self.name!r} has no task {name!r}; tasks: {', '.join(t.name for t in self.tasks)}")

    def subset(self, names: list[str] | tuple[str, ...]) -> Suite:
        """The same suite restricted to ``names`` (for a quick run); unknown names are an error."""
        keep = [self.task(n) for n in names]
        return dataclasses.replace(self, tasks=tuple(t for t in self.tasks if t in keep))


# ----------------------------------------------------------------------------------------------- checks
def _fail(where: str, task: str | None, message: str) -> SuiteError:
    at = f"{where}: " if where else ""
    return SuiteError(f"{at}task {task!r}: {message}" if task else f"{at}{message}")


def _check_task(task: Task, version: str, where: str) -> None:
    def fail(message: str) -> SuiteError:
        return _fail(where, task.name, message)

    if not _NAME.match(task.name):
        raise fail("expected a name of lower-case letters, digits and underscores")
    if task.group not in GROUPS:
        raise fail(f"unknown group {task.group!r}; expected one of {', '.join(GROUPS)}")
    kinds = TEMPLATES[version]
    if task.kind not in kinds:
        raise fail(f"unknown task kind {task.kind!r}; expected one of {', '.join(kinds)}")
    if task.candidate_policy not in POLICIES:
        raise fail(f"unknown candidate policy {task.candidate_policy!r}; expected one of {', '.join(POLICIES)}")
    if not task.official_file and (not task.dataset or not task.split):
        raise fail("expected a source dataset and split (or an official_file)")
    if task.split in TRAIN_SPLITS:
        raise fail(f"split {task.split!r} is a training split; RSMEB is zero-shot, expected an evaluation split")
    if task.candidate_policy == "sampled" and task.num_candidates < 2:
        raise fail(f"num_candidates {task.num_candidates}: expected at least 2 (the gold and one other)")
    for key in ("num_candidates", "num_queries", "seed"):
        value = getattr(task, key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(f"{key} {value!r}: expected an integer")
    if task.num_queries < 1:
        raise fail(f"num_queries {task.num_queries}: expected at least 1")
    from vlm2geovec_jax.rsmeb.metrics import METRICS  # noqa: PLC0415 (imports jax)
    for metric in task.metrics:
        if metric not in METRICS:
            raise fail(f"unknown metric {metric!r}; expected some of {', '.join(METRICS)}")


def validate(suite: Suite) -> Suite:
    """The suite, after checking every task (errors name the suite file and the task); returns it for chaining."""
    where = suite.source or suite.name
    if suite.templates_version not in TEMPLATES:
        raise _fail(where, None, f"unknown templates_version {suite.templates_version!r}; "
                                 f"expected one of {', '.join(TEMPLATES)}")
    if not suite.tasks:
        raise _fail(where, None, "expected at least one task")
    seen: set[str] = set()
    for task in suite.tasks:
        if task.name in seen:
            raise _fail(where, task.name, "defined twice")
        seen.add(task.name)
        _check_task(task, suite.templates_version, where)
    names = {t.name for t in suite.tasks}
    for task in suite.tasks:
        if task.baseline_of and task.baseline_of not in names:
            raise _fail(where, task.name, f"baseline of {task.baseline_of!r}, which is not a task of the suite")
    for key in suite.paper:
        if key not in names:
            raise _fail(where, None, f"paper figure for {key!r}, which is not a task of the suite")
    return suite


# ---------------------------------------------------------------------------------------------- loading
def _plain(value: Any) -> Any:
    return value.to_dict() if hasattr(value, "to_dict") else value


def task_from_config(name: str, cfg: Any, *, where: str = "", seed: int = 0) -> Task:
    """A Task from one entry of ``config.tasks`` (unknown keys are an error naming the task); ``seed`` is the
    suite's, used where the entry sets none."""
    d = dict(_plain(cfg))
    d.setdefault("seed", seed)
    unknown = sorted(set(d) - set(_TASK_KEYS))
    if unknown:
        raise _fail(where, name, f"unknown key {unknown[0]!r}; expected keys among {', '.join(_TASK_KEYS)}")
    missing = [k for k in ("group", "kind", "candidate_policy") if k not in d]
    if missing:
        raise _fail(where, name, f"missing key {missing[0]!r}")
    filters = {str(k): tuple(v) for k, v in dict(d.pop("filters", None) or {}).items()}
    paper = d.pop("paper_p1", None)
    metrics = tuple(d.pop("metrics", ("p@1",)))
    d.setdefault("query_instruction", "")  # "" = the template of the kind, filled in by suite_from_config
    d.setdefault("candidate_instruction", "")
    d.setdefault("dataset", "")  # an official_file task needs neither
    d.setdefault("split", "")
    return Task(name=name, filters=filters, paper_p1=None if paper is None else float(paper), metrics=metrics,
                **d)


def suite_from_config(cfg: Any, *, source: str = "") -> Suite:
    """A validated Suite from a suite ConfigDict (see eval/rsmeb.py for the fields)."""
    where = source or str(_plain(cfg).get("name", "suite"))
    d = dict(_plain(cfg))
    unknown = sorted(set(d) - set(_SUITE_KEYS))
    if unknown:
        raise _fail(where, None, f"unknown suite key {unknown[0]!r}; expected keys among {', '.join(_SUITE_KEYS)}")
    version = d.get("templates_version", "v1")
    tasks = []
    for name, entry in dict(d.get("tasks") or {}).items():
        task = task_from_config(name, entry, where=where, seed=d.get("seed", 0))
        if version in TEMPLATES and task.kind in TEMPLATES[version]:
            q, c = TEMPLATES[version][task.kind]
            task = dataclasses.replace(task, query_instruction=task.query_instruction or q,
                                       candidate_instruction=task.candidate_instruction or c)
        tasks.append(task)
    order = {g: i for i, g in enumerate(GROUPS)}
    tasks.sort(key=lambda t: (order.get(t.group, len(GROUPS)), t.name))
    suite = Suite(name=str(d.get("name", "suite")), tasks=tuple(tasks), templates_version=version,
                  paper={str(k): float(v) for k, v in dict(d.get("paper") or {}).items()},
                  crop_baseline=bool(d.get("crop_baseline", False)), source=source)
    return validate(suite)


def load_config(path: str | os.PathLike) -> Any:
    """``get_config(arg)`` of a config file; ``file.py:arg`` passes ``arg`` (big_vision convention)."""
    path = os.fspath(path)
    arg = None
    if ":" in os.path.basename(path):
        path, arg = path.rsplit(":", 1)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: suite config not found; expected a Python file defining get_config()")
    spec = importlib.util.spec_from_file_location(f"_suite_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise SuiteError(f"{path}: expected a function get_config() returning the suite ConfigDict")
    return module.get_config(arg) if arg is not None else module.get_config()


def load_suite(path: str | os.PathLike) -> Suite:
    """The validated Suite defined by a config file (``eval/rsmeb.py`` or ``eval/rsmeb.py:arg``)."""
    return suite_from_config(load_config(path), source=os.fspath(path))
