"""The ``vlm2geovec`` command: one subcommand per job; each ends by printing where its outputs are."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], None]]] = {}


def command(name: str, help_text: str):
    """Registers ``run(args)`` under ``name``; the decorated function's ``add_args`` declares its flags."""
    def register(run):
        COMMANDS[name] = (help_text, getattr(run, "add_args", lambda p: None), run)
        return run
    return register


def _args(**flags):
    def attach(run):
        def add_args(parser: argparse.ArgumentParser) -> None:
            for flag, kwargs in flags.items():
                parser.add_argument("--" + flag.replace("_", "-"), **kwargs)
        run.add_args = add_args
        return run
    return attach


def _with_args(add_args: Callable[[argparse.ArgumentParser], None]):
    """Attaches a hand-written ``add_args`` (a command with its own sub-actions)."""
    def attach(run):
        run.add_args = add_args
        return run
    return attach


# ---- weights -----------------------------------------------------------------------------------------------


@command("import-hf", "a transformers Qwen2-VL directory (safetensors) into a model checkpoint")
@_args(hf_dir=dict(required=True, help="directory with config.json and model.safetensors[.index.json]"),
       out=dict(required=True, help="output model checkpoint directory"),
       param_dtype=dict(choices=["float32", "bfloat16"], help="storage dtype (default: the checkpoint's)"),
       mesh=dict(help="place parameters on a mesh as they are read, e.g. data=1,fsdp=-1,tensor=1"),
       overwrite=dict(action="store_true", help="replace an existing output directory"))
def _import_hf(args: argparse.Namespace) -> None:
    from vlm2geovec_jax.weights.convert import import_hf
    mesh = _parse_mesh(args.mesh) if args.mesh else None
    out = import_hf(args.hf_dir, args.out, mesh=mesh, param_dtype=args.param_dtype, overwrite=args.overwrite)
    print(f"model checkpoint written to {out}")


@command("export-hf", "a model checkpoint into a directory transformers' Qwen2VLForConditionalGeneration loads")
@_args(ckpt=dict(required=True, help="model checkpoint directory (from import-hf or train)"),
       out=dict(required=True, help="output directory"),
       dtype=dict(choices=["float32", "bfloat16"], help="tensor dtype (default: the checkpoint's)"),
       max_shard_gb=dict(type=float, default=5.0, help="largest safetensors shard"),
       overwrite=dict(action="store_true", help="replace an existing output directory"))
def _export_hf(args: argparse.Namespace) -> None:
    from vlm2geovec_jax.weights.convert import export_checkpoint
    out = export_checkpoint(args.ckpt, args.out, dtype=args.dtype, overwrite=args.overwrite,
                            max_shard_bytes=int(args.max_shard_gb * 2 ** 30))
    print(f"transformers checkpoint written to {out}")


def _parse_mesh(text: str):
    from vlm2geovec_jax.sharding import MESH_AXES, make_mesh
    try:
        shape = {k.strip(): int(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise ValueError(f"--mesh {text!r}: expected axis=size pairs, e.g. data=1,fsdp=-1,tensor=1") from None
    unknown = sorted(set(shape) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"--mesh {text!r}: unknown axis {unknown[0]!r}; axes are {', '.join(MESH_AXES)}")
    try:
        return make_mesh(shape)
    except ValueError as err:
        raise ValueError(f"--mesh {text!r}: {err}") from None


_ATTENTION = dict(choices=["auto", "xla", "cudnn", "splash"], default="auto",
                  help="attention kernel: splash on TPU, cuDNN on GPU, XLA otherwise (auto)")


# ---- embeddings --------------------------------------------------------------------------------------------


@command("embed", "embed a JSONL file of items into one L2-normalised row per item (.npy)")
@_args(ckpt=dict(required=True, help="model checkpoint directory, or a transformers Qwen2-VL directory"),
       items=dict(required=True, help="JSONL file, one item a line (text, image, image_size, boxes, geo, "
                                      "instruction)"),
       out=dict(required=True, help="output .npy file: float32 [items, dim], rows in input order"),
       batch_size=dict(type=int, default=32, help="items per forward pass"),
       attention=_ATTENTION,
       on_bad_record=dict(choices=["raise", "skip"], default="raise",
                          help="stop at the first bad item, or skip it (logged, counted, its row is NaN)"))
def _embed(args: argparse.Namespace) -> None:
    from vlm2geovec_jax.embedder import embed_jsonl, load
    if not os.path.isfile(args.items):
        raise FileNotFoundError(f"--items {args.items}: items file not found; expected a JSONL file of Items")
    out, rows, bad = embed_jsonl(load(args.ckpt, attention=args.attention), args.items, args.out,
                                 batch_size=args.batch_size, on_bad_record=args.on_bad_record)
    if bad.total:
        print(bad.summary())
    print(f"embeddings of {rows - bad.total} of {rows} items written to {out}")


# ---- training and evaluation -------------------------------------------------------------------------------


@command("train", "contrastive training from a config file (configs/*.py), resuming from --workdir")
@_args(config=dict(required=True, help="experiment config file; override keys with --config.KEY=VALUE"),
       workdir=dict(required=True, help="checkpoints, metrics.jsonl, tensorboard/ and the final model/"),
       distributed=dict(action="store_true", help="call jax.distributed.initialize() first (multi-host)"))
def _train(args: argparse.Namespace) -> int | None:
    import jax
    from vlm2geovec_jax.train.config import load_config
    from vlm2geovec_jax.train.preemption import EXIT_PREEMPTED, Preempted
    from vlm2geovec_jax.train.trainer import train
    if args.distributed:
        jax.distributed.initialize()
    try:
        train(load_config(args.config, args.overrides), args.workdir)
    except Preempted as e:
        print(f"vlm2geovec train: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    return None


_train.epilog = ("Pre-emption: on SIGTERM (a TPU VM's notice) training finishes the step in flight, saves a "
                 "checkpoint with the data iterator's position (with several processes, all at the same step) and "
                 "exits 75 within about one step and one checkpoint write; rerunning the same command resumes "
                 "exactly there. Profiling: --config.profile.start_step=S --config.profile.num_steps=N trace steps "
                 "S..S+N-1 into WORKDIR/tensorboard (TensorBoard's profile tab, xprof); metrics.jsonl splits each "
                 "logged window into data_wait_s (waiting for the next batch) and step_s.")


@command("eval", "run a benchmark suite (eval/rsmeb.py, eval/geoscenes.py) and write its report")
@_args(ckpt=dict(required=True, help="model checkpoint directory, or a transformers Qwen2-VL directory"),
       suite=dict(required=True, help="suite config file, e.g. eval/rsmeb.py or eval/rsmeb.py:quick"),
       data_dir=dict(help="TFDS data_dir holding the prepared datasets"),
       out=dict(required=True, help="output directory (embedding cache, per-task results, report)"),
       batch_size=dict(type=int, default=32, help="items per forward pass"),
       tasks=dict(help="comma-separated task names (default: all)"),
       attention=_ATTENTION)
def _eval(args: argparse.Namespace) -> None:
    from vlm2geovec_jax.rsmeb.runner import eval_command
    report = eval_command(args.ckpt, args.suite, args.data_dir, args.out, batch_size=args.batch_size,
                          tasks=args.tasks.split(",") if args.tasks else None, attention=args.attention)
    print(f"report written to {report}")


@command("build-tokenizer", "build the small offline BPE tokenizer with Qwen2-VL's special tokens (demo, tests)")
@_args(out=dict(required=True, help="output directory (tokenizer.json, tokenizer_config.json)"),
       vocab_size=dict(type=int, default=512, help="vocabulary size, special tokens included"),
       seed=dict(type=int, default=0, help="corpus seed; the same seed gives byte-identical files"))
def _build_tokenizer(args: argparse.Namespace) -> None:
    from vlm2geovec_jax.inputs.tokenizer import build_demo_tokenizer
    print(f"tokenizer written to {build_demo_tokenizer(args.out, vocab_size=args.vocab_size, seed=args.seed)}")


@command("demo", "build GeoScenes, train a tiny encoder from scratch, evaluate on GeoScenes, report (CPU, minutes)")
@_args(workdir=dict(default="vlm2geovec_demo", help="where the data, tokenizer, model, evaluation and report go"))
def _demo(args: argparse.Namespace) -> None:
    from vlm2geovec_jax.demo import run_demo
    run_demo(args.workdir)


@command("plan", "compile the train and eval steps for a TPU topology (no TPU needed): per-chip HBM, fit, roofline")
@_args(config=dict(required=True, help="experiment config file; override keys with --config.KEY=VALUE"),
       topology=dict(required=True, help="e.g. v5e:4x4, v5p:2x2x1, v6e:2x4 (h100:8, h200:8: analytic only)"),
       fit=dict(action="store_true", help="find the fewest GradCache chunks and least remat that fit (compiles)"),
       headroom=dict(type=float, default=0.1, help="--fit leaves this fraction of HBM free"),
       eval_batch_size=dict(type=int, default=32, help="items per eval forward (what eval --batch-size takes)"),
       skip_eval=dict(action="store_true", help="plan the train step only (fewer compiles)"),
       json=dict(help="also write the plan as JSON to this file"))
def _plan(args: argparse.Namespace) -> None:
    from vlm2geovec_jax.plan.main import plan_command
    raise SystemExit(plan_command(args))


# ---- scaling studies ---------------------------------------------------------------------------------------


def _scale_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="scale_command", required=True, metavar="ACTION")
    ladder = sub.add_parser("ladder", help="print the model ladder: shapes, parameters, FLOPs per example")
    ladder.add_argument("--prompt-tokens", type=int, default=64, help="text tokens per sequence (FLOPs)")
    ladder.add_argument("--image-size", type=int, default=448, help="square image side in pixels (FLOPs)")
    ladder.add_argument("--tokens", default="", help="preset whose vocabulary to use (e.g. tiny); default: Qwen2-VL's")
    run = sub.add_parser("run", help="train every (rung, budget, seed) of a study; a rerun resumes")
    run.add_argument("--study", required=True, help="study file, e.g. configs/scaling/geoscenes.py")
    run.add_argument("--workdir", required=True, help="runs/NAME/ (checkpoints, metrics, result.json) per run")
    run.add_argument("--emit", help="write one config file per run and commands.sh here instead of training")
    run.add_argument("--topology", help="with --emit: compile each run's train step for this TPU topology "
                                        "(vlm2geovec plan) and say whether it fits")
    fit = sub.add_parser("fit", help="fit L(N, D) to a study's results: fit.json, report.md and figures")
    fit.add_argument("--workdir", required=True, help="a study's workdir (scale run --workdir)")


@command("scale", "scaling studies: `scale ladder | run | fit` (the ladder, running a study, fitting it)")
@_with_args(_scale_args)
def _scale(args: argparse.Namespace) -> None:
    from vlm2geovec_jax.scaling import ladder as ladder_lib
    if args.scale_command == "ladder":
        rungs = ladder_lib.ladder()
        if args.tokens:
            rungs = [ladder_lib.Rung(r.name, ladder_lib.with_tokens(r.config, args.tokens)) for r in rungs]
        print(ladder_lib.describe(rungs, prompt_tokens=args.prompt_tokens, image_size=args.image_size))
    elif args.scale_command == "run":
        from vlm2geovec_jax.scaling import run as run_lib
        if args.emit:
            run_lib.emit(args.study, args.emit, args.workdir, topology=args.topology)
        else:
            run_lib.run_study(args.study, args.workdir)
    else:
        from vlm2geovec_jax.scaling.report import fit_command
        fit_command(args.workdir)


@command("ablate", "train the interleaved single encoder and the dual-encoder baseline at matched FLOPs, compare")
@_args(workdir=dict(default="vlm2geovec_ablation", help="where the data, both models, evaluations and ablation.* go"),
       steps=dict(type=int, help="single-encoder training steps (default: 1000; the demo trains 800)"))
def _ablate(args: argparse.Namespace) -> None:
    from vlm2geovec_jax.ablation import DEFAULT_STEPS, run_ablation
    run_ablation(args.workdir, steps=DEFAULT_STEPS if args.steps is None else args.steps)


# ---- entry point -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlm2geovec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, run) in sorted(COMMANDS.items()):
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=getattr(run, "epilog", None))
        add_args(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.overrides = [e for e in extra if e.startswith("--config.")]
    unknown = [e for e in extra if not e.startswith("--config.")]
    if unknown or (args.overrides and args.command not in ("train", "plan")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or args.overrides)}")
    try:
        code = args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"vlm2geovec {args.command}: error: {e}", file=sys.stderr)
        return 2
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
