"""Every command answers bad input with one line on stderr naming what is wrong, and exit code 2."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from flax import nnx

from vlm2geovec_jax import cli
from vlm2geovec_jax.inputs.tokenizer import build_demo_tokenizer
from vlm2geovec_jax.models.encoder import Encoder
from vlm2geovec_jax.models.presets import model_config
from vlm2geovec_jax.weights.checkpoint import save_model

REPO = Path(__file__).resolve().parents[1]
SUITE = f"{REPO / 'eval' / 'geoscenes.py'}:demo,quick"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A complete tiny model checkpoint (random weights, the demo tokenizer)."""
    root = tmp_path_factory.mktemp("ckpt")
    return save_model(root / "model", Encoder(model_config("tiny"), rngs=nnx.Rngs(0)),
                      assets_from=build_demo_tokenizer(root / "tok"))


def one_line_error(capsys, argv: list[str], *expected: str) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, err
    return err


def test_import_hf_without_a_tokenizer(tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text("{}")
    one_line_error(capsys, ["import-hf", "--hf-dir", str(tmp_path / "hf"), "--out", str(tmp_path / "out")],
                   "vlm2geovec import-hf: error:", "tokenizer.json missing")
    one_line_error(capsys, ["import-hf", "--hf-dir", str(tmp_path / "hf"), "--out", str(tmp_path / "out"),
                            "--mesh", "data=1,pipeline=2"], "--mesh", "unknown axis 'pipeline'")
    assert not (tmp_path / "out").exists()


def test_export_hf_of_a_path_that_is_not_a_checkpoint(tmp_path, capsys):
    one_line_error(capsys, ["export-hf", "--ckpt", str(tmp_path), "--out", str(tmp_path / "out")],
                   "not a vlm2geovec model checkpoint")


def test_embed_with_a_checkpoint_missing_a_part(ckpt, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    (broken / "processing.json").unlink()
    (tmp_path / "items.jsonl").write_text(json.dumps({"text": "a harbour"}) + "\n")
    one_line_error(capsys, ["embed", "--ckpt", str(broken), "--items", str(tmp_path / "items.jsonl"),
                            "--out", str(tmp_path / "e.npy")], "the processing (processing.json")
    one_line_error(capsys, ["embed", "--ckpt", str(ckpt), "--items", str(tmp_path / "none.jsonl"),
                            "--out", str(tmp_path / "e.npy")], "--items", "items file not found")
    assert not (tmp_path / "e.npy").exists()


def test_eval_unknown_task_and_a_data_dir_without_the_datasets(ckpt, tmp_path, capsys):
    base = ["eval", "--ckpt", str(ckpt), "--suite", SUITE, "--data-dir", str(tmp_path), "--out", str(tmp_path / "o")]
    one_line_error(capsys, base + ["--tasks", "region_caption_retreival"], "has no task 'region_caption_retreival'")
    one_line_error(capsys, base + ["--tasks", "region_caption_retrieval"], f"data dir {tmp_path}",
                   "is not prepared there")


def test_train_unknown_config_key_and_a_mesh_that_does_not_fit(tmp_path, capsys):
    base = ["train", "--config", str(REPO / "configs" / "tiny.py"), "--workdir", str(tmp_path / "run")]
    one_line_error(capsys, base + ["--config.optimizer.learning_rate=1"], "unknown key 'optimizer.learning_rate'")
    one_line_error(capsys, base + ["--config.mesh.data=3"], "needs 3 devices")
    assert not (tmp_path / "run" / "model").exists()


def test_build_tokenizer_too_small_a_vocabulary(tmp_path, capsys):
    one_line_error(capsys, ["build-tokenizer", "--out", str(tmp_path / "tok"), "--vocab-size", "3"], "vocab")


def test_demo_work_directory_that_is_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("not a directory")
    one_line_error(capsys, ["demo", "--workdir", str(tmp_path / "taken")], "--workdir", "not a directory")
