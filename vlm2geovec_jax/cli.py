"""The ``vlm2geovec`` command: one subcommand per job; each ends by printing where its outputs are."""
from __future__ import annotations

import argparse
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
    from vlm2geovec_jax.sharding import make_mesh
    try:
        shape = {k.strip(): int(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise SystemExit(f"--mesh {text!r}: expected axis=size pairs, e.g. data=1,fsdp=-1,tensor=1") from None
    return make_mesh(shape)


# ---- embeddings --------------------------------------------------------------------------------------------


@command("embed", "embed a JSONL file of items into one L2-normalised row per item (.npy)")
@_args(ckpt=dict(required=True, help="model checkpoint directory, or a transformers Qwen2-VL directory"),
       items=dict(required=True, help="JSONL file, one item a line (text, image, image_size, boxes, geo, "
                                      "instruction)"),
       out=dict(required=True, help="output .npy file: float32 [items, dim], rows in input order"),
       batch_size=dict(type=int, default=32, help="items per forward pass"),
       on_bad_record=dict(choices=["raise", "skip"], default="raise",
                          help="stop at the first bad item, or skip it (logged, counted, its row is NaN)"))
def _embed(args: argparse.Namespace) -> None:
    from vlm2geovec_jax.inputs.embed_items import embed_jsonl
    out, rows, bad = embed_jsonl(args.ckpt, args.items, args.out, batch_size=args.batch_size,
                                 on_bad_record=args.on_bad_record)
    if bad.total:
        print(bad.summary())
    print(f"embeddings of {rows - bad.total} of {rows} items written to {out}")


# ---- training and evaluation -------------------------------------------------------------------------------


@command("train", "contrastive training from a config file (configs/*.py), resuming from --workdir")
@_args(config=dict(required=True, help="experiment config file; override keys with --config.KEY=VALUE"),
       workdir=dict(required=True, help="checkpoints, metrics.jsonl, tensorboard/ and the final model/"),
       distributed=dict(action="store_true", help="call jax.distributed.initialize() first (multi-host)"))
def _train(args: argparse.Namespace) -> None:
    import jax
    from vlm2geovec_jax.train.config import load_config
    from vlm2geovec_jax.train.trainer import train
    if args.distributed:
        jax.distributed.initialize()
    train(load_config(args.config, args.overrides), args.workdir)


@command("eval", "run a benchmark suite (eval/rsmeb.py, eval/geoscenes.py) and write its report")
@_args(ckpt=dict(required=True, help="model checkpoint directory, or a transformers Qwen2-VL directory"),
       suite=dict(required=True, help="suite config file, e.g. eval/rsmeb.py or eval/rsmeb.py:quick"),
       data_dir=dict(help="TFDS data_dir holding the prepared datasets"),
       out=dict(required=True, help="output directory (embedding cache, per-task results, report)"),
       batch_size=dict(type=int, default=32, help="items per forward pass"),
       tasks=dict(help="comma-separated task names (default: all)"))
def _eval(args: argparse.Namespace) -> None:
    from vlm2geovec_jax.rsmeb.runner import eval_command
    report = eval_command(args.ckpt, args.suite, args.data_dir, args.out, batch_size=args.batch_size,
                          tasks=args.tasks.split(",") if args.tasks else None)
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


@command("ablate", "train the interleaved single encoder and the dual-encoder baseline at matched FLOPs, compare")
@_args(workdir=dict(default="vlm2geovec_ablation", help="where the data, both models, evaluations and ablation.* go"),
       steps=dict(type=int, help="single-encoder training steps (default: configs/demo.py's)"))
def _ablate(args: argparse.Namespace) -> None:
    from vlm2geovec_jax.ablation import run_ablation
    run_ablation(args.workdir, steps=args.steps)


# ---- entry point -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlm2geovec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, run) in sorted(COMMANDS.items()):
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.overrides = [e for e in extra if e.startswith("--config.")]
    unknown = [e for e in extra if not e.startswith("--config.")]
    if unknown or (args.overrides and args.command != "train"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or args.overrides)}")
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"vlm2geovec {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
