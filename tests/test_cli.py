"""`crashgym run` end to end on a tiny episode: table, JSON shape, plot, clear errors."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from crashgym.cli import build_parser, main
from crashgym.scenarios import load_scenario, parse_sweep


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


def test_run_set_lays_a_key_over_the_scenario(tmp_path):
    """`--set` reaches the market (makers that quote nothing never quote two-sided) and is recorded."""
    out = tmp_path / "run.json"
    argv = ["run", "--scenario", "calm", "--seeds", "2", "--steps", "40", "--json", str(out)]
    assert main(argv + ["--set", "market.makers.quote_size_lots=0"]) == 0
    data = json.loads(out.read_text())
    assert data["settings"] == ["market.makers.quote_size_lots=0"]
    assert data["metrics"]["mm_two_sided"]["p95"] == 0.0
    assert main(argv) == 0
    assert json.loads(out.read_text())["metrics"]["mm_two_sided"]["p05"] > 0.5


@pytest.mark.parametrize("argv, message", [
    (["run", "--scenario", "nosuch"], "unknown scenarios config 'nosuch'"),
    (["run", "--agent", "nosuch"], "unknown agent 'nosuch'"),
    (["run", "--set", "market.flow.nosuch=1"], "unknown key 'market.flow.nosuch'"),
    (["run", "--set", "n_levels"], "expected KEY=VALUE"),
    (["impact", "--set", "shape.n_levels=x"], "'shape.n_levels' must be int"),
    (["compare", "--set", "market.makers.quote_size_lots=-1"], "'market.makers.quote_size_lots' must be >= 0"),
])
def test_run_errors_name_the_problem(argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert message in str(e.value)


def _documented_commands() -> list[str]:
    """Every `crashgym ...` command line in the code blocks of the README, docs/ and benchmarks/
    (continuations joined)."""
    root = Path(__file__).resolve().parent.parent
    lines = []
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "benchmarks").glob("*.md"))]
    for page in pages:
        for block in re.findall(r"```[a-z]*\n(.*?)```", page.read_text(), re.S):
            block = re.sub(r"\\\n\s*", " ", block)
            lines += [ln.strip() for ln in block.splitlines() if ln.strip().startswith("crashgym ")]
    return lines


def test_the_docs_have_commands_to_check():
    assert len(_documented_commands()) >= 15


@pytest.mark.parametrize("line", _documented_commands())
def test_documented_command_parses_and_its_scenario_loads(line):
    """The docs' commands cannot drift from the CLI: each parses, and its scenario (with any
    `--set`) loads under the strict schema. Nothing is run."""
    argv = shlex.split(line, comments=True)[1:]
    args = build_parser().parse_args(argv)
    if hasattr(args, "scenario"):
        rules = [r for r in (getattr(args, "rules", None) or "").split(",") if r]
        swept = parse_sweep(args.sweep)[1] if getattr(args, "sweep", None) else []
        for rule in rules or [None]:
            for setting in swept or [None]:
                load_scenario(args.scenario, rules=rule,
                              settings=[*getattr(args, "settings", ()), *([setting] if setting else [])])
