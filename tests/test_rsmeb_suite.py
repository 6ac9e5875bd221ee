"""The RSMEB suite definition (eval/rsmeb.py) and suite validation errors."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from vlm2geovec_jax.inputs.templates import TASK_KINDS, instruction
from vlm2geovec_jax.rsmeb.suite import GROUPS, SuiteError, load_suite, suite_from_config

RSMEB = Path(__file__).resolve().parents[1] / "eval" / "rsmeb.py"


def test_rsmeb_has_21_tasks_in_six_groups():
    suite = load_suite(RSMEB)
    assert len(suite.tasks) == 21 and suite.source == str(RSMEB)
    assert Counter(t.group for t in suite.tasks) == {
        "scene_classification": 5, "cross_modal_search": 4, "compositional_retrieval": 2, "vqa": 3,
        "grounding_region": 4, "semantic_geospatial": 3}
    assert list(suite.groups) == list(GROUPS)
    assert dict(suite.paper) == {"region_caption_retrieval": 26.6, "referring_expression_retrieval": 32.5,
                                 "semantic_geo_localization_retrieval": 17.8}
    by_name = {t.name: t for t in suite.tasks}
    assert by_name["referring_expression_retrieval"].paper_p1 == 32.5
    assert by_name["referring_expression_retrieval"].kind == "referring_expression"
    for t in suite.tasks:
        assert t.kind in TASK_KINDS and t.split not in ("train", "restval") and t.seed == 0
        assert t.query_instruction == instruction(t.kind, "query")
        assert t.candidate_instruction == instruction(t.kind, "candidate")
        assert t.num_candidates == 1000 and "p@1" in t.metrics
    assert {t.candidate_policy for t in suite.tasks if t.group == "scene_classification"} == {"all_classes"}
    assert by_name["composed_object_edits"].filters == {"composed/change_type": ("add", "remove")}
    assert suite.crop_baseline


def test_config_argument_like_big_vision():
    quick = load_suite(f"{RSMEB}:quick")
    assert {t.num_queries for t in quick.tasks} == {100}
    with pytest.raises(ValueError, match="unknown argument 'fast'"):
        load_suite(f"{RSMEB}:fast")
    with pytest.raises(FileNotFoundError, match="suite config not found"):
        load_suite(RSMEB.with_name("nope.py"))


def _cfg(**task):
    base = dict(group="vqa", dataset="rsvqa/lr", split="test", kind="vqa", candidate_policy="all_classes")
    base.update(task)
    return {"name": "s", "tasks": {"my_task": base}}


@pytest.mark.parametrize("task, message", [
    (dict(group="vision"), "task 'my_task': unknown group 'vision'; expected one of scene_classification, "),
    (dict(kind="captioning"), "task 'my_task': unknown task kind 'captioning'; expected one of "),
    (dict(candidate_policy="random"), "task 'my_task': unknown candidate policy 'random'; expected one of "
                                      "all_classes, sampled, gallery"),
    (dict(split="train"), "task 'my_task': split 'train' is a training split"),
    (dict(candidate_policy="sampled", num_candidates=1), "task 'my_task': num_candidates 1: expected at least 2"),
    (dict(metrics=("p@2",)), "task 'my_task': unknown metric 'p@2'"),
    (dict(colour="red"), "task 'my_task': unknown key 'colour'"),
    (dict(num_queries="10"), "task 'my_task': num_queries '10': expected an integer"),
])
def test_validation_errors_name_the_task(task, message):
    with pytest.raises(SuiteError) as err:
        suite_from_config(_cfg(**task), source="suites/mine.py")
    assert str(err.value).startswith("suites/mine.py: " + message)


def test_suite_level_errors():
    with pytest.raises(SuiteError, match="paper figure for 'other', which is not a task"):
        suite_from_config({**_cfg(), "paper": {"other": 1.0}})
    with pytest.raises(SuiteError, match="unknown templates_version 'v9'"):
        suite_from_config({**_cfg(), "templates_version": "v9"})
    with pytest.raises(SuiteError, match="expected at least one task"):
        suite_from_config({"name": "empty", "tasks": {}})


def test_suite_seed_is_the_task_default_and_unknown_suite_keys_fail():
    suite = suite_from_config({**_cfg(), "seed": 7})
    assert suite.task("my_task").seed == 7
    assert suite_from_config({**_cfg(seed=3), "seed": 7}).task("my_task").seed == 3
    with pytest.raises(SuiteError, match="unknown suite key 'taks'"):
        suite_from_config({**_cfg(), "taks": {}})
