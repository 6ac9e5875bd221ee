"""Plans (``vlm2geovec plan --json``) as one markdown table: ``python -m vlm2geovec_jax.plan.table A.json ...``."""
from __future__ import annotations

import json
import sys
from collections.abc import Sequence

HEADER = ("| config | topology | images | per-chip HBM (of usable) | fits | GradCache chunks | remat | "
          "est. step | est. MFU | command |\n|---|---|---|---|---|---|---|---|---|---|")


def row(plan: dict) -> str:
    """One table row; the command that produced the plan in the last column."""
    images = next((a.split("one image of ")[1].split(" patches")[0] + " patches"
                   for a in plan["assumptions"] if "one image of" in a), "?")
    fits = {True: "yes", False: "**no**", None: "not compiled"}[plan["fits"]]
    if plan.get("fit_trials") is not None and not plan.get("overrides"):
        fits = "**no** (no chunks/remat fit)"
    return (f"| {plan['config'].split('/')[-1]} | {plan['topology']} | {images} | "
            f"{plan['hbm_per_chip_gib']:.2f} GiB (of {plan['hbm_capacity_gib']:.2f}) | {fits} | "
            f"{plan['grad_cache_chunks']} | {plan['remat_policy']} | {plan['est_step_s']:.2f} s | "
            f"{plan['est_mfu']:.0%} | `{plan.get('command', '')}` |")


def main(paths: Sequence[str]) -> None:
    print(HEADER)
    for path in paths:
        with open(path) as f:
            print(row(json.load(f)))


if __name__ == "__main__":
    main(sys.argv[1:])
