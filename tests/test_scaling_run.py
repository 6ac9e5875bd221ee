"""scale run: a study killed mid-run resumes and ends with the same results as one never interrupted."""
from __future__ import annotations

import json

import pytest

from vlm2geovec_jax import cli
from vlm2geovec_jax.scaling import run as run_lib
from vlm2geovec_jax.train import trainer

TOY_STUDY = '''
import ml_collections
from vlm2geovec_jax.train.config import load_config

def get_config():
    base = load_config("configs/tiny.py", ["trainable=full", "checkpoint.keep=5"])
    return ml_collections.ConfigDict(dict(
        name="toy", base=base, rungs=["r00"], tokens="tiny", dtype="float32",
        budgets=dict(kind="steps", amounts=[4, 8]), lr=dict(base=3e-3, base_width=64, exponent=1.0),
        warmup_fraction=0.25, seeds=[0], checkpoint_every=2, flops=dict(prompt_tokens=12, image_size=56),
        eval=dict(every=4, num_batches=1, batch_size=0, split="test", seed=7, temperature=0.1)))
'''


class Killed(Exception):
    pass


def _results(workdir):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in run_lib.read_results(workdir)]


def test_killed_study_resumes_to_the_same_results(tmp_path, monkeypatch):
    study = tmp_path / "toy.py"
    study.write_text(TOY_STUDY)
    assert cli.main(["scale", "run", "--study", str(study), "--workdir", str(tmp_path / "whole")]) == 0
    whole = _results(tmp_path / "whole")
    assert [r["steps"] for r in whole] == [4, 8]  # name order: r00_steps4_seed0, r00_steps8_seed0
    assert all(r["eval_loss"] > 0 for r in whole)

    real_train = trainer.train

    def killed_at_step_5_of_the_8_step_run(config, workdir, **kwargs):
        def kill(step, state):
            if config.num_steps == 8 and step == 5:
                raise Killed
        return real_train(config, workdir, hooks=[kill], **kwargs)

    monkeypatch.setattr(trainer, "train", killed_at_step_5_of_the_8_step_run)
    with pytest.raises(Killed):
        run_lib.run_study(str(study), str(tmp_path / "killed"), progress=False)
    assert len(run_lib.read_results(tmp_path / "killed")) == 1  # the 4-step run ran first and finished
    monkeypatch.setattr(trainer, "train", real_train)
    run_lib.run_study(str(study), str(tmp_path / "killed"), progress=False)
    assert _results(tmp_path / "killed") == whole


def test_emit_writes_one_loadable_config_and_one_train_command_per_run(tmp_path):
    from vlm2geovec_jax.train.config import load_config
    study = tmp_path / "toy.py"
    study.write_text(TOY_STUDY)
    assert cli.main(["scale", "run", "--study", str(study), "--workdir", "gs://bucket/toy",
                     "--emit", str(tmp_path / "emit")]) == 0
    commands = (tmp_path / "emit" / "commands.sh").read_text().splitlines()
    trains = [line for line in commands if line.startswith("vlm2geovec train")]
    assert len(trains) == 2 and trains[1].endswith("--workdir gs://bucket/toy/runs/r00_steps8_seed0")
    config = load_config(tmp_path / "emit" / "r00_steps8_seed0.py")
    assert config.num_steps == 8 and config.model.text.hidden_size == 64 and config.eval.every == 4


def test_emit_with_a_topology_plans_every_run(tmp_path, capsys):
    study = tmp_path / "toy.py"
    study.write_text(TOY_STUDY)
    assert cli.main(["scale", "run", "--study", str(study), "--workdir", str(tmp_path / "w"),
                     "--emit", str(tmp_path / "emit"), "--topology", "v5e:2x2"]) == 0
    printed = capsys.readouterr().out
    for name in ("r00_steps4_seed0", "r00_steps8_seed0"):
        plan = json.loads((tmp_path / "emit" / f"{name}.plan.json").read_text())
        assert plan["topology"] == "v5e:2x2" and plan["fits"] is True and plan["hbm_per_chip_gib"] > 0
        assert f"{name}: fits on v5e:2x2" in printed


@pytest.mark.parametrize("edit, message", [
    ('rungs=["r00"]', "unknown ladder rung 'r99'"),
    ("seeds=[0], checkpoint_every=2", "study is missing ['checkpoint_every']"),
])
def test_bad_study_file_is_one_line_naming_the_problem(tmp_path, capsys, edit, message):
    study = tmp_path / "bad.py"
    study.write_text(TOY_STUDY.replace(edit, {'rungs=["r00"]': 'rungs=["r99"]'}.get(edit, "seeds=[0]")))
    assert cli.main(["scale", "run", "--study", str(study), "--workdir", str(tmp_path / "w")]) == 2
    assert message in capsys.readouterr().err
