"""`crashgym compare`: obligation sets x market-rule sets x seeds, in ONE vectorized batch.

    crashgym compare --scenario oct10 --obligations none,mifid,strict --rules none,luld_like --seeds 64

Every (obligation, rules) pair becomes one parameter set: the scenario with the rule files laid
over it (crashgym.scenarios.load_scenario) and the obligation binding the background makers
(``MarketParams.maker_obligation``, crashgym.makers). The sets are stacked along axis 0, each
repeated ``seeds`` times, and run as one batch with ``run_batch(..., params_axis=0)``: rules are
traced numbers, so there is one compile however many sets are compared, and the batch is
sharded over all local devices. Member j of every set uses the same random stream (seed_id j):
the sets are compared on common random numbers, so differences between them come from the
rules, not from luck of the draw.

`--sweep KEY=V1,V2,...` repeats every rules set once per value of one market key (a
threshold, a fund size, a fee), still in the one batch; such a set's rules label reads
``"<rules> + <field>=<value>"`` and its JSON row carries the assignment as ``"setting"``.

Output: a table per set (DESIGN section 4 metrics, mean and a 95% interval of the mean over
seeds), ``--json`` (``{"scenario", "step_seconds", "seeds", "rows": [{"obligations", "rules",
"metrics"}]}``, metrics as ``crashgym run`` plus ``ci95_low`` / ``ci95_high``), ``--csv`` (one line
per set and metric) and ``--plot`` (market quality in the crash against the makers' cost).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crashgym.config import ConfigError
from crashgym.metrics import episode_metrics, summarize
from crashgym.obligations import load_obligations
from crashgym.params import MarketParams
from crashgym.rollout import Policy, StatefulPolicy, idle_policy, run_batch
from crashgym.scenarios import Scenario, load_scenario, parse_sweep, short_setting
from crashgym.types import MarketShape

__all__ = ["QUALITY", "COST", "add_arguments", "build_batch", "compare", "plot_tradeoff", "run", "write_csv"]

# Market quality in the crash (lower is better for all but min_depth_ratio) and the makers' cost.
QUALITY = ("max_drawdown", "min_depth_ratio", "liquidated_notional", "bad_debt", "adl_notional")
COST = ("mm_pnl", "mm_presence")


def _names(text: str | Sequence[str]) -> list[str]:
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else [str(n) for n in text]
    names = [n for n in names if n]
    if not names:
        raise ConfigError("need at least one name")
    return names


def _variants(rules: Sequence[str], sweep: str | None) -> list[tuple[str, str | None]]:
    """(rules file, swept assignment or None) of every rules set, in batch order."""
    swept: list[str | None] = [None] if sweep is None else list(parse_sweep(sweep)[1])
    return [(rule, setting) for rule in rules for setting in swept]


def _load_variant(scenario: str, rule: str, setting: str | None, settings: Sequence[str]) -> Scenario:
    """The scenario with one rules file, the `--set` settings and the swept assignment laid over it."""
    return load_scenario(scenario, rules=[rule], settings=[*settings, *([setting] if setting else [])])


def _variant_label(rule: str, setting: str | None) -> str:
    """A set's rules label: the rules file, and the swept value when there is one."""
    return rule if setting is None else f"{rule} + {short_setting(setting)}"


def build_batch(scenario: str, obligations: Sequence[str], rules: Sequence[str], seeds: int, steps: int | None = None,
                settings: Sequence[str] = (), sweep: str | None = None
                ) -> tuple[MarketShape, MarketParams, list[tuple[str, str]], np.ndarray, Any]:
    """(shape, params stacked along axis 0, [(obligation, rules label)] per set, seed_ids, first scenario).

    The batch is sets x seeds, set-major: member ``i * seeds + j`` is set i, seed j. With a
    `sweep` every rules set is repeated once per swept value, labelled ``"<rules> + <field>=<value>"``.
    """
    if seeds < 1:
        raise ValueError("seeds must be >= 1")
    sets, members, shape, first = [], [], None, None
    for rule, setting in _variants(rules, sweep):
        sc = _load_variant(scenario, rule, setting, settings)
        if shape is None:
            shape, first = sc.shape, sc
        for ob in obligations:
            members.append(sc.params.replace(maker_obligation=load_obligations(ob)))
            sets.append((ob, _variant_label(rule, setting)))
    assert shape is not None and first is not None
    if steps:
        shape = dataclasses.replace(shape, episode_steps=int(steps))
    try:
        stacked = jax.tree.map(lambda *x: jnp.repeat(jnp.stack([jnp.asarray(v) for v in x]), seeds, axis=0), *members)
    except ValueError as e:  # e.g. a rules file with a tier table of another length
        raise ConfigError(f"rule sets {list(rules)} cannot share one batch (tables of different lengths?): {e}") from e
    seed_ids = np.tile(np.arange(seeds), len(sets))
    return shape, stacked, sets, seed_ids, first


def compare(scenario: str, obligations: str | Sequence[str], rules: str | Sequence[str] = ("none",), seeds: int = 16, *,
            seed: int = 0, steps: int | None = None, chunk: int = 60, settings: Sequence[str] = (),
            sweep: str | None = None, on_chunk: Callable[[int, int], None] | None = None,
            policy: Policy | StatefulPolicy = idle_policy, agent: str = "none",
            ) -> tuple[dict[str, Any], dict[tuple[str, str], dict[str, np.ndarray]]]:
    """Run the comparison; returns (the JSON result, per-set per-seed metric values).

    `settings` (`--set KEY=VALUE`) are laid over every set's scenario; `sweep`
    (`KEY=V1,V2,...`, `parse_sweep`) repeats every rules set once per value, in the same batch.
    `policy` (named `agent` in the result) trades in every set and is held to each set's
    obligations (agent_presence, cost_per_step, violation_rate/<component>).
    """
    obs_names, rule_names = _names(obligations), _names(rules)
    shape, params, sets, seed_ids, sc = build_batch(scenario, obs_names, rule_names, seeds, steps, settings, sweep)
    t0 = time.perf_counter()
    info, step_seconds = run_batch(shape, params, len(seed_ids), policy=policy, params_axis=0, seed_ids=seed_ids,
                                   seed=seed, chunk=chunk, on_chunk=on_chunk)
    wall = time.perf_counter() - t0
    setting_of = {_variant_label(r, st): st for r, st in _variants(rule_names, sweep) if st}
    values: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    rows = []
    for i, (ob, rule) in enumerate(sets):
        part = {k: v[:, i * seeds:(i + 1) * seeds] for k, v in info.items()}
        p = jax.tree.map(lambda x: x[i * seeds], params)  # this set's own (a sweep may move these)
        vals = episode_metrics(part, shock_step=int(p.flow.shock_step), n_makers=shape.n_makers,
                               agent_capital=float(p.agent.capital), maker_capital=float(p.makers.capital))
        values[(ob, rule)] = vals
        row = {"obligations": ob, "rules": rule, "metrics": summarize(vals, ci=True)}
        if rule in setting_of:
            row["setting"] = setting_of[rule]
        rows.append(row)
    result = {
        "scenario": sc.name, "step_seconds": step_seconds, "seeds": seeds, "rows": rows,
        "episode_steps": shape.episode_steps, "batch": len(seed_ids), "wall_seconds": wall,
        "devices": jax.local_device_count(), "platform": jax.devices()[0].platform,
    }
    if agent != "none":  # only then: the shape without it is DESIGN section 3's
        result["agent"] = agent
    if settings:
        result["settings"] = list(settings)
    if sweep:
        result["sweep"] = sweep
    return result, values


# ----------------------------------------------------------------------------- output


def _fmt(x: float) -> str:
    return f"{x:.4g}" if np.isfinite(x) else "nan"


def print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for row in result["rows"]:
        agent = f", agent {result['agent']}" if "agent" in result else ""
        table = Table(title=f"{result['scenario']}: obligations {row['obligations']}, rules {row['rules']} "
                            f"({result['seeds']} seeds{agent})")
        for col in ("metric", "mean", "95% interval", "p05", "p95"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for name, s in row["metrics"].items():
            table.add_row(name, _fmt(s["mean"]), f"[{_fmt(s['ci95_low'])}, {_fmt(s['ci95_high'])}]",
                          _fmt(s["p05"]), _fmt(s["p95"]))
        console.print(table)


def write_csv(result: dict[str, Any], path: str) -> None:
    """One line per (obligations, rules, metric): mean, 95% interval, quantiles."""
    cols = ("mean", "ci95_low", "ci95_high", "p05", "p50", "p95")
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("scenario", "obligations", "rules", "metric") + cols)
        for row in result["rows"]:
            for name, s in row["metrics"].items():
                w.writerow((result["scenario"], row["obligations"], row["rules"], name) + tuple(s[c] for c in cols))


def plot_tradeoff(result: dict[str, Any], path: str | None = None):
    """Market quality in the crash (rows: QUALITY) against the makers' cost (columns: COST),
    one point per (obligations, rules) set with its 95% interval. Returns the figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(QUALITY), len(COST), figsize=(4.2 * len(COST), 2.6 * len(QUALITY)), squeeze=False)
    rule_sets = sorted({r["rules"] for r in result["rows"]})
    markers = {r: "osD^vP*Xhp<>"[i % 12] for i, r in enumerate(rule_sets)}
    obligation_sets = list(dict.fromkeys(r["obligations"] for r in result["rows"]))
    colours = {o: f"C{i % 10}" for i, o in enumerate(obligation_sets)}
    for i, q in enumerate(QUALITY):
        for j, c in enumerate(COST):
            ax = axes[i][j]
            for row in result["rows"]:
                mx, my = row["metrics"][c], row["metrics"][q]
                ax.errorbar(mx["mean"], my["mean"],
                            xerr=[[mx["mean"] - mx["ci95_low"]], [mx["ci95_high"] - mx["mean"]]],
                            yerr=[[my["mean"] - my["ci95_low"]], [my["ci95_high"] - my["mean"]]],
                            fmt=markers[row["rules"]], color=colours[row["obligations"]], capsize=2,
                            label=f"{row['obligations']} / {row['rules']}")
            ax.set_xlabel(c + (" (USD)" if c == "mm_pnl" else " (fraction of steps)"))
            ax.set_ylabel(q)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(f"{result['scenario']}: market quality in the crash vs the makers' cost ({result['seeds']} seeds)")
    fig.tight_layout(rect=(0, 0, 1, 0.91))
    # The legend sits between the title and the panels (rows of 4), not over the title.
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.965), ncol=min(len(labels), 4), fontsize=8,
               title="obligations / rules")
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
    return fig


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from crashgym.cli import add_set_argument

    parser.add_argument("--scenario", default="oct10", help="scenario name (configs/scenarios) or TOML path")
    parser.add_argument("--obligations", default="none,mifid,strict",
                        help="comma-separated obligation sets (configs/obligations) binding the background makers")
    parser.add_argument("--rules", default="none", help="comma-separated market-rule sets (configs/rules)")
    parser.add_argument("--seeds", type=int, default=16, help="seeds per (obligations, rules) set")
    parser.add_argument("--seed", type=int, default=0, help="base PRNG seed")
    parser.add_argument("--steps", type=int, default=None, help="episode length override (steps)")
    parser.add_argument("--chunk", type=int, default=60, help="steps per jitted call (progress granularity)")
    parser.add_argument("--json", default=None, help="write the result as JSON here")
    parser.add_argument("--csv", default=None, help="write one line per set and metric here")
    parser.add_argument("--plot", default=None, help="write the trade-off plot (PNG) here")
    add_set_argument(parser)
    parser.add_argument("--agent", default="none",
                        help="the agent trading in every set (a heuristic's name, a checkpoint written by train, or "
                             "'none'), held to each set's obligations")
    parser.add_argument("--sweep", default=None, metavar="KEY=V1,V2,...",
                        help="repeat every rules set once per value of one market key, in the same batch "
                             "(e.g. market.makers.withdraw_stress=2.2,3.0,3.8)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from crashgym.cli import agent_policy, output_path

    if args.seeds < 1:
        raise SystemExit("error: --seeds must be >= 1")
    if args.steps is not None and args.steps < 1:
        raise SystemExit("error: --steps must be >= 1")
    try:
        obs, rules = _names(args.obligations), _names(args.rules)
        for name in obs:
            load_obligations(name)
        variants = _variants(rules, args.sweep)
        for rule, setting in variants:
            _load_variant(args.scenario, rule, setting, args.settings)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    policy = agent_policy(args.agent)
    sets = len(obs) * len(variants)
    desc = f"{args.scenario}: {sets} sets x {args.seeds} seeds = {sets * args.seeds} markets"
    with Progress(TextColumn(desc), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                  TimeElapsedColumn()) as bar:
        task = bar.add_task("compare", total=None)

        def on_chunk(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            result, _ = compare(args.scenario, obs, rules, args.seeds, seed=args.seed, steps=args.steps,
                                chunk=args.chunk, settings=args.settings, sweep=args.sweep, on_chunk=on_chunk,
                                policy=policy, agent=args.agent)
        except ConfigError as e:
            raise SystemExit(f"error: {e}") from None
    print_tables(result)
    print(f"{result['batch']} markets x {result['episode_steps']} steps in {result['wall_seconds']:.1f} s wall "
          f"(compile included) on {result['devices']} {result['platform']} device(s); "
          f"{result['step_seconds'] * 1e3:.2f} ms per batched step after compile")
    if args.json:
        with open(output_path(args.json), "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.json}")
    if args.csv:
        write_csv(result, output_path(args.csv))
        print(f"wrote {args.csv}")
    if args.plot:
        plot_tradeoff(result, output_path(args.plot))
        print(f"wrote {args.plot}")
    return result
