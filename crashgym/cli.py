"""The `crashgym` command: run a scenario; compare rule sets, train, bench, measure impact."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports JAX-heavy modules only when a command runs
    from crashgym.scenarios import Scenario


def _progress(description: str):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(description), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                    TimeElapsedColumn(), transient=False)


def agent_policy(name: str):
    """'none' (an idle agent), a heuristic's name, or a checkpoint path written by `crashgym
    train`. Both come from the `agents` package, which the library never imports unless asked."""
    from crashgym.rollout import idle_policy

    if name == "none":
        return idle_policy
    if os.path.exists(name):
        try:
            checkpoint = importlib.import_module("agents.checkpoint")
        except ImportError as e:
            raise SystemExit(f"--agent {name}: the agents package is not importable ({e})") from None
        return checkpoint.load_policy(name)
    try:
        heuristics = importlib.import_module("agents.heuristics")
    except ImportError as e:
        raise SystemExit(f"--agent {name}: the agents package is not importable ({e})") from None
    try:
        return heuristics.market_policy(name)
    except KeyError as e:
        raise SystemExit(f"--agent: {e.args[0]}") from None


def _table(title: str, summary: dict[str, dict[str, float]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("metric", "mean", "p05", "p50", "p95"):
        table.add_column(col, justify="right" if col != "metric" else "left")
    for name, s in summary.items():
        table.add_row(name, *(f"{s[c]:.4g}" for c in ("mean", "p05", "p50", "p95")))
    Console().print(table)


def output_path(path: str) -> str:
    """`path`, its folder created if missing (the commands' --json / --plot / --csv)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


SET_HELP = ("KEY=VALUE laid over the scenario, repeatable: shape.<field> or market.<table>.<field>, "
            "e.g. --set market.flow.cancel_rate=0.01 --set shape.n_levels=128 (keys: docs/scenarios.md)")


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """The `--set KEY=VALUE` option of the commands that load a scenario."""
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)


def load_cli_scenario(scenario: str, rules: str | None, obligations: str, settings: list[str] | None = None
                      ) -> Scenario:
    """The scenario with comma-separated rule files and `--set` settings laid over it and the
    obligation set binding its background makers ('none': none), as `run` and `impact` take
    them; a config error exits with its message."""
    import dataclasses

    from crashgym.config import ConfigError
    from crashgym.scenarios import load_scenario

    try:
        sc = load_scenario(scenario, rules=rules.split(",") if rules else None, settings=settings or ())
        if obligations != "none":
            from crashgym.obligations import load_obligations

            sc = dataclasses.replace(sc, params=sc.params.replace(maker_obligation=load_obligations(obligations)))
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    return sc


def cmd_run(args: argparse.Namespace) -> dict[str, Any]:
    import dataclasses

    import jax

    from crashgym.metrics import scenario_metrics, summarize
    from crashgym.rollout import run_batch

    sc = load_cli_scenario(args.scenario, args.rules, args.obligations, args.settings)
    if args.steps:
        sc = dataclasses.replace(sc, shape=dataclasses.replace(sc.shape, episode_steps=args.steps))
    policy = agent_policy(args.agent)
    with _progress(f"{sc.name} x {args.seeds} seeds") as bar:
        task = bar.add_task("run", total=sc.shape.episode_steps)
        info, step_seconds = run_batch(sc.shape, sc.params, args.seeds, policy=policy, seed=args.seed,
                                       on_chunk=lambda done, total: bar.update(task, completed=done))
    p = sc.params
    values = scenario_metrics(info, sc.shape, p)
    summary = summarize(values)
    _table(f"crashgym run: {sc.name} ({args.seeds} seeds, agent {args.agent}, device {jax.devices()[0].platform})", summary)
    result = {"scenario": sc.name, "step_seconds": step_seconds, "seeds": args.seeds, "metrics": summary}
    if args.settings:  # only then: the shape without it is DESIGN section 3's
        result["settings"] = args.settings
    if args.json:
        with open(output_path(args.json), "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        from crashgym.plot import plot_episode

        plot_episode(info, output_path(args.plot), title=f"{sc.name}: {sc.description}", step_seconds=float(p.step_seconds),
                     shock_step=int(p.flow.shock_step), n_makers=sc.shape.n_makers)
        print(f"wrote {args.plot}")
    return result


_COMMANDS = (
    ("compare", "crashgym.compare", "rule sets x seeds in one batch: market quality against the makers' cost"),
    ("train", "crashgym.train", "train an agent (JAX PPO, PPO-Lagrangian or SB3 PPO) and write a checkpoint"),
    ("bench", "crashgym.bench", "throughput of the market step and the Gymnasium envs, peers side by side"),
    ("impact", "crashgym.impact", "metaorder price impact against size, beside the square-root law"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crashgym", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario for many seeds in one batch; print metrics, save a plot")
    run.add_argument("--scenario", default="oct10", help="scenario name (configs/scenarios) or TOML path")
    run.add_argument("--rules", default=None, help="comma-separated rule files laid over the scenario")
    run.add_argument("--agent", default="none", help="a heuristic's name, a checkpoint written by train, or 'none'")
    run.add_argument("--obligations", default="none", help="obligation set (configs/obligations) binding the background makers")
    run.add_argument("--seeds", type=int, default=16)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--steps", type=int, default=None, help="episode length override (steps)")
    run.add_argument("--json", default=None)
    run.add_argument("--plot", default=None)
    add_set_argument(run)
    run.set_defaults(func=cmd_run)
    # Further commands live in their own modules, each with add_arguments(parser) and run(args).
    for name, module, help_text in _COMMANDS:
        if importlib.util.find_spec(module) is None:
            continue
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_text)
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "seeds", 1) < 1:
        raise SystemExit("error: --seeds must be >= 1")
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
