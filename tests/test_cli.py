"""`crashgym run` end to end on a tiny episode: table, JSON shape, plot, clear errors."""

from __future__ import annotations

import json

import pytest

from crashgym.cli import main


def test_run_writes_json_and_plot(tmp_path, capsys):
    out, png = tmp_path / "run.json", tmp_path / "run.png"
    assert main(["run", "--scenario", "calm", "--seeds", "2", "--steps", "40", "--json", str(out), "--plot", str(png)]) == 0
    data = json.loads(out.read_text())
    assert set(data) == {"scenario", "step_seconds", "seeds", "metrics"}
    assert data["scenario"] == "calm" and data["seeds"] == 2
    for name in ("max_drawdown", "min_depth_ratio", "liquidated_notional", "adl_notional", "insurance_fund_min"):
        assert set(data["metrics"][name]) == {"mean", "p05", "p50", "p95"}
    assert png.stat().st_size > 10_000
    assert "max_drawdown" in capsys.readouterr().out


def test_run_with_heuristic_agent(tmp_path):
    out = tmp_path / "run.json"
    assert main(["run", "--scenario", "calm", "--seeds", "2", "--steps", "40", "--agent", "fixed-spread", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["metrics"]["agent_return"]["mean"] != 0.0


@pytest.mark.parametrize("argv, message", [
    (["run", "--scenario", "nosuch"], "unknown scenarios config 'nosuch'"),
    (["run", "--agent", "nosuch"], "unknown agent 'nosuch'"),
])
def test_run_errors_name_the_problem(argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert message in str(e.value)
