"""The plan as text (what ``vlm2geovec plan`` prints) and as JSON (``--json``)."""
from __future__ import annotations

import json
import os


def _gib(x: float) -> str:
    return f"{x:.2f} GiB"


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _step_lines(title: str, s: dict, capacity: float) -> list[str]:
    lines = [title]
    if "hbm_per_chip_gib" in s:
        verdict = "fits" if s["fits"] else "DOES NOT FIT"
        asked = "needs" if not s.get("compiler_error") else "asked the compiler for"
        lines.append(f"  {verdict}: {asked} {_gib(s['hbm_per_chip_gib'])} a chip of {_gib(capacity)}"
                     + (f"  [{s['compiler_error']}]" if s.get("compiler_error") else ""))
        lines.append("  " + "  ".join(f"{k} {v:.2f}" for k, v in s["breakdown"].items()) + " (GiB a chip)")
        lines.append("  largest buffers in HBM (the compiler's layout):")
        lines += [f"    {b['count']:>3} x {b['shape']:<32} {_size(b['bytes']):>10}  {b['what']}"
                  for b in s["largest_buffers"]]
        lines.append("  collectives in the program (a loop body counted once): "
                     + (", ".join(f"{k} {v}" for k, v in s["collectives"].items()) or "none"))
        lines.append(f"  compile {s['compile_s']:.1f} s")
    return lines


def text(plan: dict) -> str:
    """The human-readable report."""
    cap = plan["hbm_capacity_gib"]
    lines = [f"{plan['topology']}: {plan['chips']} x {plan['device_kind']}, {_gib(cap)} usable HBM a chip "
             f"(published {plan['published_hbm_gib']:.2f}), bf16 peak {plan['peak_bf16_tflops']:.0f} TFLOP/s, "
             f"HBM {plan['hbm_tb_per_s']:.2f} TB/s ({plan['chip_source']})", "assumed shapes:"]
    lines += [f"  {a}" for a in plan["assumptions"]]
    t = plan["train"]
    lines += _step_lines(f"train step: GradCache {t['grad_cache_chunks']} chunks, remat {t['remat_policy']}", t, cap)
    lines.append(f"  model FLOPs {t['step_flops']:.3g} a step (hardware {t['hardware_flops']:.3g}, of which "
                 f"{t['recompute_flops_vs_none']:.3g} recomputation beyond remat none); roofline estimate "
                 f"{t['est_step_s']:.3g} s a step ({t['est_bound']}-bound), MFU {t['est_mfu']:.1%}")
    if "eval" in plan:
        e = plan["eval"]
        lines += _step_lines(f"eval embed step: {e['batch_size']} items on one chip", e, cap)
        lines.append(f"  model FLOPs {e['step_flops']:.3g} a batch; roofline estimate {e['est_step_s']:.3g} s "
                     f"({e['est_bound']}-bound), {e['est_items_per_s']:.3g} items/s")
    if "fit_trials" in plan:
        if plan.get("overrides"):
            extra = t["recompute_flops_vs_none"] / (t["hardware_flops"] - t["recompute_flops_vs_none"])
            lines.append(f"--fit chose GradCache {t['grad_cache_chunks']} chunks and remat {t['remat_policy']} "
                         f"(within {plan['headroom']:.0%} headroom; it recomputes {t['recompute_flops_vs_none']:.3g} "
                         f"FLOPs a step, {extra:.1%} more than remat none); pass to train: "
                         f"{' '.join(plan['overrides'])}")
        else:
            lines.append(f"--fit: no chunk count and remat policy fits within {plan['headroom']:.0%} headroom")
        if "eval" in plan:
            lines.append(f"--fit eval: largest batch on one chip {plan['eval']['batch_size']} "
                         f"(vlm2geovec eval --batch-size {plan['eval']['batch_size']})")
    if not plan["compiled"]:
        lines.append("no compile for GPUs without a GPU: the FLOPs and roofline above are analytic only")
    return "\n".join(lines)


def write_json(plan: dict, path: str | os.PathLike) -> None:
    with open(path, "w") as f:
        json.dump(plan, f, indent=1)
