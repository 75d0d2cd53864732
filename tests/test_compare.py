"""`crashgym compare`: one batch of obligation x rule sets x seeds; per-member results equal
separate runs; the sharded batch equals the unsharded one; JSON / CSV / plot."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from crashgym.cli import main
from crashgym.compare import build_batch, compare
from crashgym.metrics import METRICS
from crashgym.rollout import run_batch

from hangs import SUBPROCESS_TIMEOUT_S  # tests/hangs.py

ROOT = Path(__file__).resolve().parent.parent
ARGS = dict(scenario="oct10", obligations=["none", "strict"], rules=["none", "luld_like"], seeds=2, steps=40)


@pytest.fixture(scope="module")
def mixed():
    shape, params, sets, ids, _ = build_batch(ARGS["scenario"], ARGS["obligations"], ARGS["rules"], ARGS["seeds"],
                                              ARGS["steps"])
    info, _ = run_batch(shape, params, len(ids), params_axis=0, seed_ids=ids, chunk=20)
    return shape, params, sets, info


def test_batch_layout(mixed):
    shape, params, sets, info = mixed
    assert sets == [("none", "none"), ("strict", "none"), ("none", "luld_like"), ("strict", "luld_like")]
    assert info["mark_price"].shape == (40, 8)
    # One params entry per member, set-major, with the rules and the obligation in it.
    np.testing.assert_allclose(np.asarray(params.rules.halt_move), [0, 0, 0, 0, 0.05, 0.05, 0.05, 0.05], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(params.maker_obligation.active), [0, 0, 1, 1, 0, 0, 1, 1])


def test_mixed_batch_equals_each_rule_set_alone(mixed):
    shape, params, sets, info = mixed
    s = ARGS["seeds"]
    for i in range(len(sets)):
        one = jax.tree.map(lambda x: x[i * s], params)  # this set's params, shared by its seeds
        alone, _ = run_batch(shape, one, s, chunk=20)
        for k, v in alone.items():
            np.testing.assert_array_equal(info[k][:, i * s:(i + 1) * s], v, err_msg=f"{sets[i]} {k}")
    # The rule sets really differ (otherwise the check above would prove little).
    assert not np.array_equal(info["mm_compliant"][:, :s], info["mm_compliant"][:, s:2 * s])


def test_sharded_batch_equals_unsharded(mixed, tmp_path: Path):
    """Two forced CPU devices: an odd batch (7, padded to 8) sharded over both equals the one-device run."""
    shape, params, sets, info = mixed
    out = tmp_path / "sharded.npz"
    script = textwrap.dedent(f"""
        import jax, numpy as np
        assert jax.local_device_count() == 2, jax.devices()
        from crashgym.compare import build_batch
        from crashgym.rollout import run_batch
        shape, params, sets, ids, _ = build_batch({ARGS['scenario']!r}, {ARGS['obligations']!r}, {ARGS['rules']!r},
                                                  {ARGS['seeds']}, {ARGS['steps']})
        params = jax.tree.map(lambda x: x[:7], params)
        info, _ = run_batch(shape, params, 7, params_axis=0, seed_ids=ids[:7], chunk=20)
        np.savez({str(out)!r}, **info)
    """)
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(ROOT / ".jax_cache"))
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=SUBPROCESS_TIMEOUT_S)
    sharded = np.load(out)
    assert set(sharded.files) == set(info)
    for k in info:
        np.testing.assert_array_equal(sharded[k], info[k][:, :7], err_msg=k)


def test_compare_cli_outputs(tmp_path: Path):
    j, c, p = tmp_path / "out.json", tmp_path / "out.csv", tmp_path / "plot.png"
    main(["compare", "--scenario", "oct10", "--obligations", "none,strict", "--rules", "none,luld_like",
          "--seeds", "2", "--steps", "40", "--chunk", "20", "--json", str(j), "--csv", str(c), "--plot", str(p)])
    result = json.loads(j.read_text())
    assert {"scenario", "step_seconds", "seeds", "rows"} <= set(result)
    assert result["scenario"] == "oct10" and result["seeds"] == 2 and len(result["rows"]) == 4
    for row in result["rows"]:
        assert set(row) == {"obligations", "rules", "metrics"}
        assert set(METRICS) <= set(row["metrics"])
        for s in row["metrics"].values():
            assert {"mean", "p05", "p50", "p95", "ci95_low", "ci95_high"} <= set(s)
    rows = list(csv.DictReader(c.open()))
    assert len(rows) == 4 * len(METRICS) and rows[0]["scenario"] == "oct10"
    assert p.stat().st_size > 10_000
    # The same numbers as the Python API on the same arguments (same seeds, same batch).
    api, values = compare("oct10", "none,strict", "none,luld_like", 2, steps=40, chunk=20)
    for a, b in zip(api["rows"], result["rows"]):
        assert (a["obligations"], a["rules"]) == (b["obligations"], b["rules"])
        assert a["metrics"]["mm_presence"]["mean"] == pytest.approx(b["metrics"]["mm_presence"]["mean"])
        assert a["metrics"]["max_drawdown"]["mean"] == pytest.approx(b["metrics"]["max_drawdown"]["mean"])
    assert values[("strict", "none")]["mm_presence"].shape == (2,)


@pytest.mark.parametrize("argv, message", [
    (["--obligations", "nope"], "unknown obligations config 'nope'"),
    (["--rules", "none,nope"], "unknown rules config 'nope'"),
    (["--seeds", "0"], "--seeds must be >= 1"),
])
def test_compare_cli_bad_input(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["compare", "--scenario", "oct10", "--steps", "5"] + argv)
    assert message in str(e.value)
