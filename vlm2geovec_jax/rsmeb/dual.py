"""Evaluation rows for the dual-encoder baseline: the same rows, every item image-only or text-only.

The dual model (trained with ``data.pipeline.interleave = False``) is evaluated on the same suite and rows as
the single encoder, with inputs/dual.py's rule applied to every query and candidate, so both are scored on
the same queries, golds and candidate sets. The crop-baseline tasks are dropped: a dual row already gives
every region as a crop, so they would repeat their region task.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from vlm2geovec_jax.inputs.dual import dual_item
from vlm2geovec_jax.inputs.records import EvalRow
from vlm2geovec_jax.rsmeb.crop import map_rows
from vlm2geovec_jax.rsmeb.suite import Suite


def dual_suite(suite: Suite, rows_by_task: Mapping[str, Sequence[EvalRow]]
               ) -> tuple[Suite, dict[str, list[EvalRow]]]:
    """The suite without baseline tasks, and every main task's rows with dual items (shared items once)."""
    main = suite.main_tasks
    return (dataclasses.replace(suite, tasks=tuple(main), crop_baseline=False),
            {t.name: map_rows(rows_by_task[t.name], dual_item) for t in main if t.name in rows_by_task})
