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
from crashgym.scenarios import short_setting
from crashgym.metrics import METRICS, episode_metrics
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


def test_compare_with_an_agent_holds_it_to_each_sets_rule(tmp_path: Path):
    """`--agent` trades in every set; its obligation metrics are each set's run alone with that
    agent, and the rule it is held to is the set's: the obliged:strict maker misses no presence
    under strict and costs nothing under none."""
    from agents import heuristics

    j = tmp_path / "agent.json"
    main(["compare", "--scenario", "oct10", "--obligations", "none,strict", "--rules", "none", "--seeds", "2",
          "--steps", "40", "--chunk", "20", "--agent", "obliged:strict", "--json", str(j)])
    result = json.loads(j.read_text())
    assert result["agent"] == "obliged:strict"
    shape, params, sets, _, _ = build_batch("oct10", ["none", "strict"], ["none"], 2, 40)
    names = ("agent_presence", "cost_per_step", "violation_rate/presence", "violation_rate/size", "mm_presence")
    for i, row in enumerate(result["rows"]):
        one = jax.tree.map(lambda x: x[i * 2], params)
        alone, _ = run_batch(shape, one, 2, policy=heuristics.market_policy("obliged:strict"), chunk=20)
        want = episode_metrics(alone, shock_step=int(one.flow.shock_step), n_makers=shape.n_makers,
                               agent_capital=float(one.agent.capital), maker_capital=float(one.makers.capital))
        for name in names:
            assert row["metrics"][name]["mean"] == pytest.approx(float(np.mean(want[name])), abs=1e-6), (sets[i], name)
    by_rule = {row["obligations"]: row["metrics"] for row in result["rows"]}
    assert by_rule["strict"]["agent_presence"]["mean"] >= 0.95
    assert by_rule["strict"]["violation_rate/presence"]["mean"] == 0.0
    assert by_rule["none"]["cost_per_step"]["mean"] == 0.0
    with pytest.raises(SystemExit, match="unknown agent 'nosuch'"):
        main(["compare", "--scenario", "oct10", "--steps", "5", "--agent", "nosuch"])


@pytest.mark.parametrize("argv, message", [
    (["--obligations", "nope"], "unknown obligations config 'nope'"),
    (["--rules", "none,nope"], "unknown rules config 'nope'"),
    (["--seeds", "0"], "--seeds must be >= 1"),
])
def test_compare_cli_bad_input(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(["compare", "--scenario", "oct10", "--steps", "5"] + argv)
    assert message in str(e.value)


def test_sweep_repeats_each_rules_set_per_value_in_one_batch():
    shape, params, sets, ids, _ = build_batch("oct10", ["none", "strict"], ["none", "luld_like"], 2,
                                              sweep="market.makers.withdraw_stress=2.2,3.8")
    assert [rule for _, rule in sets[::2]] == ["none + withdraw_stress=2.2", "none + withdraw_stress=3.8",
                                              "luld_like + withdraw_stress=2.2", "luld_like + withdraw_stress=3.8"]
    assert len(ids) == 16
    stress = np.asarray(params.makers.withdraw_stress)[::2]  # one member per set (2 seeds each)
    np.testing.assert_allclose(stress, [2.2, 2.2, 3.8, 3.8] * 2, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(params.rules.halt_move)[::2], [0] * 4 + [0.05] * 4, rtol=1e-6)


def test_short_setting_keeps_a_decimal_value_whole():
    assert short_setting("market.flow.market_rate_lots=7.5") == "market_rate_lots=7.5"
    assert short_setting("market.liquidation.adl_rule=pro_rata") == "adl_rule=pro_rata"


def test_sweep_metrics_use_each_sets_own_parameters(tmp_path: Path):
    """A swept shock step moves the pre-shock baseline of the depth metrics: each set's metrics
    are computed with its own, and the CLI records the sweep per row."""
    j = tmp_path / "sweep.json"
    main(["compare", "--scenario", "oct10", "--obligations", "none", "--rules", "none", "--seeds", "2",
          "--steps", "40", "--chunk", "20", "--sweep", "market.flow.shock_step=5,30", "--json", str(j)])
    result = json.loads(j.read_text())
    assert result["sweep"] == "market.flow.shock_step=5,30"
    assert [(r["rules"], r["setting"]) for r in result["rows"]] == [
        ("none + shock_step=5", "market.flow.shock_step=5"), ("none + shock_step=30", "market.flow.shock_step=30")]
    shape, params, sets, ids, _ = build_batch("oct10", ["none"], ["none"], 2, steps=40,
                                              sweep="market.flow.shock_step=5,30")
    info, _ = run_batch(shape, params, len(ids), params_axis=0, seed_ids=ids, chunk=20)
    kw = dict(n_makers=shape.n_makers, agent_capital=float(params.agent.capital[0]),
              maker_capital=float(params.makers.capital[0]))
    for i, (row, own, other) in enumerate(zip(result["rows"], (5, 30), (30, 5))):
        part = {k: v[:, 2 * i:2 * i + 2] for k, v in info.items()}
        mine = episode_metrics(part, shock_step=own, **kw)["min_depth_ratio"]
        theirs = episode_metrics(part, shock_step=other, **kw)["min_depth_ratio"]
        assert row["metrics"]["min_depth_ratio"]["mean"] == pytest.approx(float(np.mean(mine)))
        assert not np.allclose(mine, theirs)  # the baseline matters, so the check above can fail


@pytest.mark.parametrize("sweep, message", [
    ("market.makers.withdraw_stress", "expected KEY=V1,V2"),
    ("market.makers.withdraw_stress=", "expected KEY=V1,V2"),
    ("shape.n_levels=32,64", "only market.<table>.<field> keys can vary inside one batch"),
    ("market.makers.withdraw_stres=2,3", "unknown key 'market.makers.withdraw_stres'"),
    ("market.makers.withdraw_stress=2,high", "'market.makers.withdraw_stress' must be float, got 'high'"),
])
def test_compare_cli_bad_sweep(sweep, message):
    with pytest.raises(SystemExit) as e:
        main(["compare", "--scenario", "oct10", "--steps", "5", "--sweep", sweep])
    assert message in str(e.value)
