"""`crashgym impact` end to end on a small batch: table, JSON shape, plot, signs, clear errors.

The calibrated impact curve itself (256 seeds) is checked in test_stylized_facts.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from crashgym.cli import main
from crashgym.impact import metaorder_impact
from crashgym.scenarios import load_scenario


def test_impact_cli_writes_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "impact.json", tmp_path / "impact.png"
    argv = ["impact", "--scenario", "calm", "--side", "sell", "--sizes", "60,600,3000", "--horizon-steps", "6",
            "--warmup-steps", "12", "--seeds", "8", "--json", str(out), "--plot", str(png)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["scenario"] == "calm" and data["side"] == "sell" and data["seeds"] == 8
    assert [r["size_lots"] for r in data["rows"]] == [60.0, 600.0, 3000.0]  # multiples of the 6 steps
    big = data["rows"][2]
    # 500 lots a step sold into calm's book: the mid falls, reported as a positive impact.
    assert big["impact_bps"] > 3 * big["impact_se_bps"] > 0
    sigma, volume = data["step_sigma"], data["volume_per_step"]
    assert big["sqrt_law_y"] == pytest.approx(big["impact_bps"] / 1e4 / (sigma * np.sqrt(3000.0 / volume)))
    assert 0 < data["rows"][0]["participation"] < big["participation"] < 1
    assert big["fraction_of_day_volume"] == pytest.approx(3000.0 / (volume * 8640))  # 10 s steps
    # The fit covers the positive impacts and carries the exponent's bootstrap interval over seeds.
    fit = data["fit"]
    assert fit["sizes_fitted"] == sum(r["impact_bps"] > 0 for r in data["rows"]) >= 2
    lo, hi = fit["exponent_interval_90"]
    assert lo < fit["exponent"] < hi
    # The slope between neighbouring sizes: two pairs, each with its interval (or None, unbounded).
    local = data["local_exponents"]
    assert [(p["from_lots"], p["to_lots"]) for p in local] == [(60.0, 600.0), (600.0, 3000.0)]
    top = local[1]
    assert top["interval_90"][0] < top["exponent"] < top["interval_90"][1]
    assert png.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "participation" in printed and "90% interval" in printed and "local exponent" in printed


def test_buy_and_sell_metaorders_move_the_mid_their_way():
    sc = load_scenario("calm")
    kw = dict(seeds=8, warmup_steps=12, horizon_steps=6, seed=3)
    buy = metaorder_impact(sc.shape, sc.params, [3000], side="buy", **kw)
    sell = metaorder_impact(sc.shape, sc.params, [3000], side="sell", **kw)
    for r in (buy, sell):  # signed in the metaorder's direction
        assert r["impact"][0] > 3 * r["impact_se"][0]
        assert r["agent_liquidated"][0] == 0
    assert buy["step_sigma"] == sell["step_sigma"] and buy["volume_per_step"] == sell["volume_per_step"]


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "10,60"], "at least horizon_steps = 30 lots"),
    (["--sizes", "60,lots"], "--sizes must be comma-separated whole lots"),
    (["--seeds", "1"], "seeds must be >= 2"),
    (["--warmup-steps", "1070"], "past the episode (1080 steps)"),
    (["--scenario", "nosuch"], "unknown scenarios config 'nosuch'"),
    (["--obligations", "nosuch"], "unknown obligations config 'nosuch'"),
    (["--sweep", "shape.n_levels=32,64"], "only market.<table>.<field> keys"),
    (["--sweep", "market.flow.market_rate_lots=7.5,-1"], "'market.flow.market_rate_lots' must be >= 0"),
])
def test_impact_cli_errors_name_the_problem(argv, message):
    with pytest.raises(SystemExit) as e:
        main(["impact"] + argv)
    assert message in str(e.value)


def test_unknown_side_is_refused():
    sc = load_scenario("calm")
    with pytest.raises(ValueError, match="side must be one of"):
        metaorder_impact(sc.shape, sc.params, [60], side="short")


def test_report_gives_no_slope_between_sizes_equal_after_rounding():
    """61 and 60 lots over 30 steps both send 60 (2 a step): one size, so one pair of slopes."""
    from crashgym.impact import impact_report

    rng = np.random.default_rng(0)
    per_seed = np.array([1e-4, 1e-4, 2e-4])[:, None] + 1e-6 * rng.standard_normal((3, 16))
    result = {"sizes": np.array([60.0, 60.0, 120.0]), "impact": per_seed.mean(axis=1),
              "impact_se": per_seed.std(axis=1) / 4, "impact_per_seed": per_seed,
              "agent_liquidated": np.zeros(3, int), "step_sigma": 4e-4, "volume_per_step": 250.0}
    local = impact_report(result, horizon_steps=30, step_seconds=10.0)["local_exponents"]
    assert [(p["from_lots"], p["to_lots"]) for p in local] == [(60.0, 120.0)]
    assert local[0]["exponent"] == pytest.approx(1.0, abs=0.02)


def test_impact_sweep_runs_one_curve_per_value(tmp_path, capsys):
    """`--sweep`: one curve per value, each the curve `--set` gives for that value alone."""
    out, one, png = tmp_path / "sweep.json", tmp_path / "one.json", tmp_path / "sweep.png"
    argv = ["impact", "--scenario", "calm", "--sizes", "60,600,3000", "--horizon-steps", "6", "--warmup-steps", "12",
            "--seeds", "8"]
    assert main(argv + ["--sweep", "market.flow.market_rate_lots=7.5,30", "--json", str(out), "--plot", str(png)]) == 0
    data = json.loads(out.read_text())
    assert data["sweep"] == "market.flow.market_rate_lots=7.5,30"
    assert [r["setting"] for r in data["runs"]] == ["market.flow.market_rate_lots=7.5", "market.flow.market_rate_lots=30"]
    quiet, busy = (r["rows"][-1]["impact_bps"] for r in data["runs"])
    assert quiet != busy
    assert main(argv + ["--set", "market.flow.market_rate_lots=30", "--json", str(one)]) == 0
    alone = json.loads(one.read_text())
    assert [r["impact_bps"] for r in alone["rows"]] == [r["impact_bps"] for r in data["runs"][1]["rows"]]
    assert png.stat().st_size > 10_000
    assert "crashgym impact sweep" in capsys.readouterr().out
