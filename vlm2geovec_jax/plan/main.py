"""Behind ``vlm2geovec plan``: exit 0 when the train step fits, 3 when it does not, 2 on bad input."""
from __future__ import annotations

import argparse
import sys

FITS, DOES_NOT_FIT = 0, 3


def plan_command(args: argparse.Namespace) -> int:
    from vlm2geovec_jax.plan import report
    from vlm2geovec_jax.plan.planner import make_plan
    from vlm2geovec_jax.plan.topology import get_topology
    from vlm2geovec_jax.train.config import load_config

    if not 0 <= args.headroom < 1:
        raise ValueError(f"--headroom {args.headroom}: expected a fraction in [0, 1)")
    if args.eval_batch_size < 1:
        raise ValueError(f"--eval-batch-size {args.eval_batch_size}: expected a positive integer")
    config = load_config(args.config, args.overrides)
    topology = get_topology(args.topology)
    log = lambda line: print(line, file=sys.stderr, flush=True)
    plan = make_plan(config, topology, eval_batch_size=args.eval_batch_size, fit=args.fit, with_eval=not args.skip_eval,
                     headroom=args.headroom, log=log)
    plan["config"], plan["config_overrides"] = str(args.config), list(args.overrides)
    plan["command"] = " ".join(["vlm2geovec plan --config", str(args.config), "--topology", args.topology,
                                *args.overrides, *(["--fit"] if args.fit else []),
                                *([f"--headroom {args.headroom}"] if args.headroom != 0.1 else []),
                                *(["--skip-eval"] if args.skip_eval else [])])
    print(report.text(plan))
    if args.json:
        report.write_json(plan, args.json)
        print(f"plan written to {args.json}")
    return FITS if plan["fits"] in (True, None) else DOES_NOT_FIT
