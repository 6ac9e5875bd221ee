"""Compile a step for its devices and read back, from the compiler itself, where the HBM goes.

Per chip: ``compiled.memory_analysis()`` gives arguments, outputs, donated (aliased) bytes and temporaries;
total = arguments + outputs - aliased + temporaries. The buffer assignment that XLA dumps for the same compile
(``xla_dump_to``, written even when the program does not fit) says which argument each parameter buffer holds
(parameters, optimizer state, batch) and how the rest of HBM is laid out (the largest buffers). A program that
does not fit fails in ``compile()`` with RESOURCE_EXHAUSTED; its report is the bytes the compiler asked for and
the same parts, read from the dump.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import glob
import os
import re
import tempfile
import time

import jax

from vlm2geovec_jax.plan.steps import Step

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
PARTS = ("params", "optimizer", "batch", "outputs", "temp")


@dataclasses.dataclass
class Measure:
    """What one compile says about one step on one chip (bytes)."""

    compiled: bool                  # False: the compiler refused it (RESOURCE_EXHAUSTED)
    total: int                      # per chip: what the program needs (or asked for, when refused)
    breakdown: dict[str, int]       # PARTS; sums to total
    largest: list[dict]             # the largest HBM regions, grouped by shape and kind
    collectives: dict[str, int]     # op kind -> count in the optimised program (a loop body counted once)
    compile_s: float
    error: str = ""
    analysis: dict[str, int] = dataclasses.field(default_factory=dict)  # memory_analysis() of the same compile


def compile_step(step: Step, describe) -> Measure:
    """Lowers and compiles ``step``; ``describe(shape, op_name)`` names a buffer that is not an argument."""
    with tempfile.TemporaryDirectory(prefix="vlm2geovec_plan_") as dump:
        start = time.perf_counter()
        with jax.set_mesh(step.mesh) if step.mesh is not None else contextlib.nullcontext():
            lowered = step.fn.lower(*step.args)
        try:
            compiled = lowered.compile(compiler_options={"xla_dump_to": dump})
            error = ""
        except jax.errors.JaxRuntimeError as e:
            if "RESOURCE_EXHAUSTED" not in str(e):
                raise
            compiled, error = None, str(e).strip().splitlines()[0]
        seconds = time.perf_counter() - start
        dumped = _Dump(dump)
        params = dumped.parameter_bytes(step.kinds)
        largest = dumped.largest_regions(step.kinds, describe)
        collectives = dumped.collectives()
    if compiled is not None:
        m = compiled.memory_analysis()
        breakdown = {**params, "outputs": m.output_size_in_bytes - m.alias_size_in_bytes,
                     "temp": m.temp_size_in_bytes}
        total = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
        analysis = {k: getattr(m, f"{k}_size_in_bytes") for k in ("argument", "output", "alias", "temp")}
    else:
        asked = _asked_bytes(error)
        arguments = sum(params.values())
        breakdown = {**params, "outputs": 0, "temp": max(asked - arguments, 0) if asked else dumped.other_bytes}
        total, analysis = arguments + breakdown["temp"], {}
    return Measure(compiled is not None, total, {k: breakdown.get(k, 0) for k in PARTS}, largest, collectives,
                   seconds, error, analysis)


def _asked_bytes(error: str) -> int | None:
    """'... required for HLO temporaries (18.48G) exceeds available HBM (15.75G)' -> bytes of the first figure.

    The compiler counts the program's arguments in that figure (it is what the program asked for in all)."""
    found = re.search(r"required for [\w ]+\(([\d.]+)([KMGT])\)", error)
    return int(float(found.group(1)) * 1024 ** ("KMGT".index(found.group(2)) + 1)) if found else None


def _kind(kinds: dict[str, str], path: str) -> str:
    """What an argument is, from its path ("params['model']..." -> kinds["params"])."""
    return kinds.get(re.split(r"[\[.]", path)[0], "batch")


def _regions(values: list[tuple[str, int, int]]) -> list[tuple[int, str]]:
    """(size, name of the largest value) of each maximal run of overlapping [offset, offset + size) intervals."""
    out, end, best = [], -1, None
    start = 0
    for name, size, offset in sorted(values, key=lambda v: v[2]):
        if offset >= end:
            if best is not None:
                out.append((end - start, best[0]))
            start, end, best = offset, offset + size, (name, size)
        else:
            end = max(end, offset + size)
            best = best if best[1] >= size else (name, size)
    if best is not None:
        out.append((end - start, best[0]))
    return out


class _Dump:
    """The buffer assignment, values and live ranges XLA dumped for one compiled module."""

    def __init__(self, directory: str):
        files = glob.glob(os.path.join(directory, "*after_optimizations-buffer-assignment.txt"))
        if len(files) != 1:
            raise RuntimeError(f"expected one buffer assignment in the compiler's dump, found {len(files)}")
        self.prefix = files[0][:-len("-buffer-assignment.txt")]
        self.instructions = self._instructions(self.prefix + "-buffer-assignment-values.txt")
        self.allocations, self.shapes = self._allocations(files[0])

    @staticmethod
    def _instructions(path: str) -> dict[str, tuple[str, str]]:
        """instruction name -> (its text after '=', op_name metadata)."""
        out = {}
        with open(path) as f:
            for line in f:
                m = re.match(r"\s*from instruction: %(\S+) = (.*)$", line)
                if m:
                    op = re.search(r'op_name="((?:[^"\\]|\\.)*)"', m.group(2))
                    out[m.group(1)] = (m.group(2), op.group(1).replace("\\'", "'") if op else "")
        return out

    @staticmethod
    def _allocations(path: str) -> tuple[list[dict], dict[str, str]]:
        allocations, shapes, current = [], {}, None
        with open(path) as f:
            for line in f:
                m = re.match(r"allocation \d+: size (\d+), (.*):$", line)
                if m:
                    color = re.search(r"color (\d+)", m.group(2))
                    param = re.match(r"parameter (\d+)", m.group(2))
                    current = dict(size=int(m.group(1)), hbm=not color or color.group(1) == "0",
                                   parameter=int(param.group(1)) if param else None, values=[])
                    allocations.append(current)
                    continue
                m = re.match(r"\s*value: <\d+ (\S+)(?: \(phi\))? @\d+> \(size=(\d+),offset=(\d+)\): (\S+)", line)
                if m and current is not None:
                    current["values"].append((m.group(1), int(m.group(2)), int(m.group(3))))
                    shapes[m.group(1)] = re.sub(r"\{[^}]*\}$", "", m.group(4))
        return allocations, shapes

    def _argument(self, value: str) -> str | None:
        """The op_name (argument path, e.g. "params['model']...") of an entry parameter value, else None."""
        text, op = self.instructions.get(value.split("{")[0], ("", ""))
        return op if re.search(r"\bparameter\(\d+\)", text) and not op.startswith("jit(") else None

    def parameter_bytes(self, kinds: dict[str, str]) -> dict[str, int]:
        """Bytes of the program's parameter buffers, summed by what their argument is (Step.kinds)."""
        out = collections.Counter()
        for a in self.allocations:
            if a["parameter"] is None or not a["hbm"]:
                continue
            paths = [p for p in (self._argument(v[0]) for v in a["values"]) if p]
            out[_kind(kinds, paths[0]) if paths else "batch"] += a["size"]
        return dict(out)

    @property
    def other_bytes(self) -> int:
        return sum(a["size"] for a in self.allocations if a["hbm"] and a["parameter"] is None)

    def largest_regions(self, kinds: dict[str, str], describe, top: int = 8) -> list[dict]:
        """The largest HBM regions the compiler laid out, grouped by (shape, kind), largest total first.

        A region is a stretch of one allocation whose values overlap (values live at different times share it);
        it is named by its largest value. Regions of all allocations, parameters included, tile the program's
        HBM (the memory-usage report shows the same regions)."""
        groups: dict[tuple[str, str], list[int]] = {}
        for a in self.allocations:
            if not a["hbm"]:
                continue
            for size, name in _regions(a["values"]):
                shape = self.shapes.get(name, "?")
                path = self._argument(name)
                what = (f"{_kind(kinds, path)}: {path.removesuffix('.value')}" if path else
                        describe(shape, self.instructions.get(name.split("{")[0], ("", ""))[1]))
                groups.setdefault((shape, what), []).append(size)
        rows = [dict(shape=s, what=w, count=len(v), bytes=sum(v)) for (s, w), v in groups.items()]
        return sorted(rows, key=lambda r: -r["bytes"])[:top]

    def collectives(self) -> dict[str, int]:
        counts = collections.Counter()
        with open(self.prefix + ".txt") as f:
            for line in f:
                m = re.search(r"\s=\s.*?\b(" + "|".join(COLLECTIVES) + r")(-start)?\(", line)
                if m:
                    counts[m.group(1)] += 1
        return dict(sorted(counts.items()))
