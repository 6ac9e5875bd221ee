"""`vlm2geovec plan`: the tiny config compiled for a real TPU topology (v5e:2x2) with libtpu, no TPU attached.

Expected values come from the compiler itself (memory_analysis of the same compile) and from brute force (the
fit search against trying every configuration).
"""
import itertools
import json
from pathlib import Path

import jax
import pytest

pytest.importorskip("libtpu", reason='needs the tpu extra: pip install -e ".[tpu]"')

from vlm2geovec_jax import cli  # noqa: E402
from vlm2geovec_jax.plan import fit as fit_lib  # noqa: E402
from vlm2geovec_jax.plan.memory import Measure  # noqa: E402
from vlm2geovec_jax.plan.planner import measure_train  # noqa: E402
from vlm2geovec_jax.plan.shapes import config_shapes  # noqa: E402
from vlm2geovec_jax.plan.topology import get_topology  # noqa: E402
from vlm2geovec_jax.train.config import load_config  # noqa: E402

CONFIG = str(Path(__file__).parent.parent / "configs" / "tiny.py")
TOPOLOGY = "v5e:2x2"
# Long enough sequences that activations, not fixed buffers, decide the temporaries.
BIG = ["--config.batch_size=64", "--config.data.query_length=256", "--config.data.target_length=256"]


@pytest.fixture(scope="module")
def by_chunks():
    topology = get_topology(TOPOLOGY)
    out = {}
    for chunks in (1, 2, 4):
        config = load_config(CONFIG, BIG + [f"--config.grad_cache.num_chunks={chunks}"])
        out[chunks] = measure_train(config, topology, config_shapes(config, 8))[0]
    return out


def test_cpu_backend_unchanged_by_libtpu():
    get_topology(TOPOLOGY)
    assert jax.default_backend() == "cpu" and len(jax.devices()) == 8


def test_breakdown_adds_up_to_the_compilers_total(by_chunks):
    for m in by_chunks.values():
        a = m.analysis
        assert m.compiled
        assert m.total == a["argument"] + a["output"] - a["alias"] + a["temp"]
        assert sum(m.breakdown.values()) == m.total
        # The arguments, read from the dumped buffer assignment by what each parameter holds, are exactly the
        # compiler's own argument size.
        assert m.breakdown["params"] + m.breakdown["optimizer"] + m.breakdown["batch"] == a["argument"]
        assert min(m.breakdown["params"], m.breakdown["optimizer"], m.breakdown["batch"]) > 0


def test_more_chunks_never_need_more_temporaries(by_chunks):
    temps = [by_chunks[c].breakdown["temp"] for c in sorted(by_chunks)]
    assert temps == sorted(temps, reverse=True), temps
    assert temps[0] > temps[-1]


def test_largest_buffers_are_the_compilers(by_chunks):
    m = by_chunks[1]
    assert sum(b["bytes"] for b in m.largest) <= m.total
    shapes = [b["shape"] for b in m.largest]
    assert all(s.split("[")[0] in ("f32", "bf16", "s32", "u32", "pred") for s in shapes), shapes
    assert any("batch['query'].pixel_values" in b["what"] for b in by_chunks[4].largest)


def _fake_measure(table):
    def measure(chunks, policy):
        total = table[(chunks, policy)]
        return Measure(total is not None, total or 10 ** 12, {}, [], {}, 0.0)
    return measure


@pytest.mark.parametrize("seed", range(6))
def test_fit_search_matches_brute_force(seed):
    import numpy as np
    rng = np.random.default_rng(seed)
    counts = [1, 2, 4, 8, 16, 32, 64]
    table = {}
    for k, policy in enumerate(fit_lib.POLICIES):  # memory falls with chunks; None = the compiler refused it
        need = np.sort(rng.uniform(0, 100, len(counts)))[::-1] + 20 * (len(fit_lib.POLICIES) - k)
        for c, n in zip(counts, need):
            table[(c, policy)] = None if n > 140 else int(n)
    limit = int(rng.uniform(20, 160))
    chosen, trials = fit_lib.fit_train(_fake_measure(table), counts, limit, log=lambda _: None)
    brute = next(((c, p) for p, c in itertools.product(fit_lib.POLICIES, counts)
                  if table[(c, p)] is not None and table[(c, p)] <= limit), None)
    assert (chosen[:2] if chosen else None) == brute
    assert len(trials) <= len(fit_lib.POLICIES) * (1 + int(np.ceil(np.log2(len(counts) + 1))))


def test_chunk_counts_keep_every_device_on_every_chunk():
    assert fit_lib.chunk_counts((64, 128), 4) == [1, 2, 4, 8, 16]


def _plan(tmp_path, *extra):
    out = tmp_path / "plan.json"
    with pytest.raises(SystemExit) as e:
        cli.main(["plan", "--config", CONFIG, "--topology", TOPOLOGY, "--json", str(out), *extra])
    return e.value.code, (json.loads(out.read_text()) if out.exists() else None)


def test_cli_fits_exit_0_and_json_keys(tmp_path, capsys):
    code, plan = _plan(tmp_path, "--config.grad_cache.num_chunks=2")
    assert code == 0
    keys = {"topology", "chips", "device_kind", "hbm_capacity_gib", "hbm_per_chip_gib", "breakdown",
            "largest_buffers", "fits", "grad_cache_chunks", "remat_policy", "step_flops", "est_step_s",
            "est_mfu", "compile_s", "assumptions"}
    assert keys <= set(plan), keys - set(plan)
    assert {"params", "optimizer", "batch", "temp"} <= set(plan["breakdown"])
    assert plan["chips"] == 4 and plan["device_kind"] == "TPU v5 lite" and plan["fits"] is True
    assert plan["grad_cache_chunks"] == 2 and plan["eval"]["fits"] is True
    assert abs(plan["hbm_capacity_gib"] - 15.75) < 1e-6  # what XLA:TPU says a v5e chip may use
    assert "fits" in capsys.readouterr().out


def test_cli_does_not_fit_exit_3_with_parts(tmp_path, capsys):
    # 1024 sequences of 4096 tokens at once: the float32 attention logits alone are far beyond a v5e chip.
    code, plan = _plan(tmp_path, "--config.batch_size=1024", "--config.data.query_length=4096",
                       "--config.data.target_length=4096", "--skip-eval")
    assert code == 3
    assert plan["fits"] is False and plan["hbm_per_chip_gib"] > plan["hbm_capacity_gib"]
    assert "RESOURCE_EXHAUSTED" in plan["train"]["compiler_error"]
    assert plan["largest_buffers"] and "DOES NOT FIT" in capsys.readouterr().out


def test_cli_bad_input_exit_2(tmp_path, capsys):
    assert cli.main(["plan", "--config", CONFIG, "--topology", "v9x:2x2"]) == 2
    err = capsys.readouterr().err
    assert "unknown topology" in err and "v5e:4x4" in err and "v5p:2x2x1" in err
    assert cli.main(["plan", "--config", CONFIG, "--topology", TOPOLOGY, "--config.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
