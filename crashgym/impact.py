"""Metaorder price impact: how far the mid moves when the agent trades Q lots over K steps.

Experiment (Toth et al. 2011 measure impact of metaorders executed over time):
1. run a batch of markets for `warmup_steps` with no agent (independent seeds);
2. from those same states, run K steps twice with the same keys: once with the agent
   trading Q / K lots per step at market, once idle (common random numbers, so the
   background noise cancels in the difference);
3. impact(Q) = mean over seeds of log(mid with the metaorder / mid without) at step K,
   signed so that a move in the metaorder's direction is positive.

The exponent of impact against Q is fitted by `crashgym.stylized.impact_exponent`;
square-root impact is ~0.5. Its prefactor Y in impact = Y sigma sqrt(Q / V) comes from
`crashgym.stylized.sqrt_law_prefactor`, with sigma and V (the traded volume) measured on the
idle runs. The experiment is JAX (it steps the market); the statistics are numpy.

`crashgym impact` (``add_arguments`` / ``run`` below) runs it on any scenario, with rule
files and obligations laid over it, and prints the curve beside the square-root law.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crashgym.market import Market, no_orders
from crashgym.params import MarketParams
from crashgym.scenarios import parse_sweep, short_setting
from crashgym.types import MarketShape

SIDES = {"buy": 1, "sell": -1}


def metaorder_impact(shape: MarketShape, params: MarketParams, sizes_lots: Sequence[int], *, seeds: int = 64,
                     warmup_steps: int = 120, horizon_steps: int = 30, seed: int = 0, side: str = "buy"
                     ) -> dict[str, Any]:
    """Mean log impact of metaorders of each size (lots, spread evenly over horizon_steps).

    side: "buy" or "sell"; impacts are signed so that a move in the metaorder's direction is > 0.
    Returns {"sizes": (k,) lots actually sent (Q rounded down to a multiple of horizon_steps),
    "impact": (k,) mean log mid change vs the idle twin, "impact_se": (k,) its standard error
    over seeds, "impact_per_seed": (k, seeds) the log mid changes themselves (the same seeds
    for every size: for a bootstrap over seeds), "agent_liquidated": (k,) seeds in which the
    agent's position was liquidated during the metaorder (its margin is the env's; such a
    metaorder stopped early),
    "step_sigma": per-step log-return std of the idle runs' mark, "volume_per_step": mean
    taker lots traded per step in the idle runs (every taker: background, arbitrage,
    traders, liquidations); both over the idle horizon and the last min(warmup_steps // 2,
    4 * horizon_steps) warm-up steps before it}.
    """
    sizes = np.asarray(sizes_lots, np.int64)
    if side not in SIDES:
        raise ValueError(f"side must be one of {sorted(SIDES)}, got {side!r}")
    if seeds < 2:
        raise ValueError(f"seeds must be >= 2 (a standard error needs two), got {seeds}")
    if horizon_steps < 1 or warmup_steps < 0:
        raise ValueError(f"horizon_steps must be >= 1 and warmup_steps >= 0, got {horizon_steps} and {warmup_steps}")
    if sizes.size == 0 or (sizes < horizon_steps).any():
        raise ValueError(f"metaorder sizes must be at least horizon_steps = {horizon_steps} lots (one lot a step), "
                         f"got {sizes.tolist()}")
    if warmup_steps + horizon_steps > shape.episode_steps:
        raise ValueError(f"warmup_steps + horizon_steps = {warmup_steps + horizon_steps} is past the episode "
                         f"({shape.episode_steps} steps)")
    market = Market(shape)
    k_init, k_warm, k_meta = jax.random.split(jax.random.key(seed), 3)

    @jax.jit
    def warm(keys):
        states = jax.vmap(market.init, in_axes=(0, None))(keys, params)

        def body(s, k):
            s, info = market.step_batch(jax.random.split(k, seeds), s,
                                        jax.vmap(lambda _: no_orders())(jnp.arange(seeds)), params)
            return s, (info["mark_price"], info["taker_volume_lots"])

        states, (mark, volume) = jax.lax.scan(body, states, jax.random.split(k_warm, warmup_steps))
        return states, mark, volume

    @jax.jit
    def run(states, per_step_lots):
        """Mid after horizon_steps with the agent trading per_step_lots (signed) each step (batch),
        the mark path, the taker lots traded per step and whether the agent was liquidated."""
        keys = jax.random.split(k_meta, horizon_steps)

        def body(s, k):
            orders = jax.vmap(lambda q: no_orders().replace(market_lots=q))(per_step_lots)
            s, info = market.step_batch(jax.random.split(k, seeds), s, orders, params)
            return s, (info["mid_price"], info["mark_price"], info["taker_volume_lots"], info["agent_liquidated"])

        _, (mid, mark, volume, liquidated) = jax.lax.scan(body, states, keys)
        return mid[-1], mark, volume, jnp.any(liquidated, axis=0)

    states, warm_mark, warm_volume = warm(jax.random.split(k_init, seeds))
    base_mid, base_mark, base_volume, _ = run(states, jnp.zeros(seeds, jnp.int32))
    sign = SIDES[side]
    per_seed, liquidated = [], []
    for q in sizes:
        per_step = int(q // horizon_steps)  # Q spread evenly; the size reported is per_step * horizon
        mid, _, _, liq = run(states, jnp.full(seeds, sign * per_step, jnp.int32))
        per_seed.append(sign * (np.log(np.asarray(mid, float)) - np.log(np.asarray(base_mid, float))))
        liquidated.append(int(np.asarray(liq).sum()))
    per_seed = np.stack(per_seed)
    executed = (sizes // horizon_steps) * horizon_steps
    # sigma and V over the idle path's horizon and the warm-up steps just before it: a longer
    # window than the horizon alone steadies them. At most half the warm-up (the reset's
    # transient stays out) and 4 horizons (they describe the market the metaorder meets).
    start = warmup_steps - min(warmup_steps // 2, 4 * horizon_steps)
    mark = np.concatenate([np.asarray(warm_mark, float)[start:], np.asarray(base_mark, float)])
    volume = np.concatenate([np.asarray(warm_volume, float)[start:], np.asarray(base_volume, float)])
    returns = np.diff(np.log(mark), axis=0)
    return {"sizes": executed.astype(float), "impact": per_seed.mean(axis=1),
            "impact_se": per_seed.std(axis=1, ddof=1) / np.sqrt(seeds), "impact_per_seed": per_seed,
            "agent_liquidated": np.asarray(liquidated), "step_sigma": float(returns.std()),
            "volume_per_step": float(volume.mean())}


def impact_report(result: dict[str, Any], *, horizon_steps: int, step_seconds: float) -> dict[str, Any]:
    """Per-size rows (JSON-ready) and the power-law fit of a `metaorder_impact` result.

    Each row: size in lots, the fraction of a day's traded volume it is, its participation rate
    (its lots over its own plus the idle twin's taker lots: the flow it excites is not counted),
    impact and standard error in basis points, and Y of the square-root law
    (crashgym.stylized.sqrt_law_prefactor). The fit carries the exponent's 90% bootstrap interval
    over seeds (crashgym.stylized.impact_exponent_interval; None when the seeds cannot bound it).
    "local_exponents": the slope between each pair of neighbouring sizes with its 90% interval
    (crashgym.stylized.local_impact_exponents), where a crossover from linear (1) to square-root
    (0.5) impact shows; the exponent is None where an impact is not positive.
    """
    from crashgym import stylized

    sizes, v = result["sizes"], result["volume_per_step"]
    y = stylized.sqrt_law_prefactor(sizes, result["impact"], result["step_sigma"], v)
    per_step = sizes / horizon_steps
    day_volume = v * 86400.0 / step_seconds
    rows = [{"size_lots": float(q), "fraction_of_day_volume": float(q / day_volume),
             "participation": float(r / (r + v)), "impact_bps": float(i * 1e4), "impact_se_bps": float(se * 1e4),
             "sqrt_law_y": float(yy), "agent_liquidated_seeds": int(liq)}
            for q, r, i, se, yy, liq in zip(sizes, per_step, result["impact"], result["impact_se"], y,
                                            result["agent_liquidated"])]
    positive = int((result["impact"] > 0).sum())  # a power law is fitted to the positive impacts only
    fit = None
    if positive >= 2:
        lo, hi = stylized.impact_exponent_interval(sizes, result["impact_per_seed"], level=0.9)
        fit = {**stylized.impact_exponent(sizes, result["impact"]), "sizes_fitted": positive,
               "exponent_interval_90": _bounded(lo, hi)}
    local = []
    unique, first = np.unique(sizes, return_index=True)  # sizes equal after rounding have no slope between them
    if unique.size >= 2:
        le = stylized.local_impact_exponents(unique, result["impact_per_seed"][first], level=0.9)
        local = [{"from_lots": float(a), "to_lots": float(b), "exponent": None if np.isnan(e) else float(e),
                  "interval_90": _bounded(*band)}
                 for a, b, e, band in zip(le["from_lots"], le["to_lots"], le["exponent"], le["interval"])]
    return {"rows": rows, "fit": fit, "local_exponents": local, "step_sigma": result["step_sigma"],
            "volume_per_step": v}


def _bounded(lo: float, hi: float) -> list[float] | None:
    """An interval for JSON: None when the seeds cannot bound it."""
    return [float(lo), float(hi)] if np.isfinite(lo) and np.isfinite(hi) else None


def _curve(report: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sizes (lots), impacts and their standard errors (bp) of a report's rows."""
    rows = report["rows"]
    return tuple(np.array([r[k] for r in rows]) for k in ("size_lots", "impact_bps", "impact_se_bps"))


def _loglog(title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("metaorder size Q (lots)")
    ax.set_ylabel("impact (bp)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    return fig, ax


def _save(fig: Any, ax: Any, path: str, legend_size: int) -> None:
    import matplotlib.pyplot as plt

    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_impact(report: dict[str, Any], path: str, *, title: str) -> None:
    """Impact against size (log-log, with standard errors) beside the square-root law with Y
    from 0.5 to 1 (the real range, MARKET_MECHANICS.md section 7). Matplotlib (Agg) only."""
    q, i, se = _curve(report)
    law = 1e4 * report["step_sigma"] * np.sqrt(q / report["volume_per_step"])
    fig, ax = _loglog(title)
    ax.fill_between(q, 0.5 * law, law, color="C2", alpha=0.2, label="square-root law, Y 0.5-1 (real)")
    ax.errorbar(q, np.maximum(i, 1e-3), yerr=se, fmt="o-", color="C0", capsize=3, label="simulated (mean, se)")
    if report["fit"] is not None:
        f = report["fit"]
        ax.plot(q, 1e4 * f["prefactor"] * q ** f["exponent"], "--", color="C0", alpha=0.6,
                label=f"fit: exponent {f['exponent']:.2f}, R^2 {f['r2']:.2f}")
    _save(fig, ax, path, 8)


def plot_impact_sweep(runs: Sequence[tuple[str, dict[str, Any]]], path: str, *, title: str) -> None:
    """One impact curve per swept value (log-log, with standard errors and each run's fitted
    exponent in its label), beside a square-root guide through the first curve's largest size."""
    fig, ax = _loglog(title)
    for n, (label, report) in enumerate(runs):
        q, i, se = _curve(report)
        fit = report["fit"]
        text = f"{label}: exponent {fit['exponent']:.2f}" if fit else f"{label}: no fit"
        ax.errorbar(q, np.maximum(i, 1e-3), yerr=se, fmt="o-", color=f"C{n % 10}", capsize=3, label=text)
    q0, i0, _ = _curve(runs[0][1])
    ax.plot(q0, max(i0[-1], 1e-3) * np.sqrt(q0 / q0[-1]), ":", color="k", alpha=0.6, label="square root (slope 0.5)")
    _save(fig, ax, path, 7)


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from crashgym.cli import add_set_argument

    parser.add_argument("--scenario", default="calm", help="scenario name (configs/scenarios) or TOML path")
    parser.add_argument("--rules", default=None, help="comma-separated rule files laid over the scenario")
    parser.add_argument("--obligations", default="none", help="obligation set binding the background makers")
    parser.add_argument("--sizes", default="60,120,240,480,960,1920,3840", help="comma-separated metaorder sizes (lots)")
    parser.add_argument("--side", default="buy", choices=sorted(SIDES))
    parser.add_argument("--horizon-steps", type=int, default=30, help="steps the metaorder is spread over")
    parser.add_argument("--warmup-steps", type=int, default=120,
                        help="steps before it starts (past the scenario's shock_step to trade into a crash)")
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None)
    add_set_argument(parser)
    parser.add_argument("--sweep", default=None, metavar="KEY=V1,V2,...",
                        help="measure the curve once per value of one market key (in turn) and compare the fits, "
                             "e.g. market.flow.market_rate_lots=7.5,15,30")


def _sizes(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: --sizes must be comma-separated whole lots, got {text!r}") from None


def _measure(sc: Any, args: argparse.Namespace, sizes: list[int]) -> dict[str, Any]:
    try:
        result = metaorder_impact(sc.shape, sc.params, sizes, seeds=args.seeds, warmup_steps=args.warmup_steps,
                                  horizon_steps=args.horizon_steps, seed=args.seed, side=args.side)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return impact_report(result, horizon_steps=args.horizon_steps, step_seconds=float(sc.params.step_seconds))


def _fit_text(fit: dict[str, Any] | None, n_sizes: int) -> str:
    if not fit:
        return "fewer than two positive impacts, no fit"
    band = fit["exponent_interval_90"]
    band_text = f"90% interval {band[0]:.2f}-{band[1]:.2f} over seeds" if band else "too few seeds to bound it"
    return (f"impact ~ Q^{fit['exponent']:.2f} ({band_text}; R^2 {fit['r2']:.2f}, {fit['sizes_fitted']} of "
            f"{n_sizes} sizes: those with impact > 0); square root 0.5")


def _print_report(console: Any, report: dict[str, Any], title: str, n_sizes: int) -> None:
    from rich.table import Table

    table = Table(title=f"crashgym impact: {title}, common random numbers")
    for col in ("size (lots)", "of a day's volume", "participation", "impact (bp)", "se (bp)", "Y"):
        table.add_column(col, justify="right")
    for r in report["rows"]:
        table.add_row(f"{r['size_lots']:.0f}", f"{r['fraction_of_day_volume']:.1e}", f"{r['participation']:.1%}",
                      f"{r['impact_bps']:.2f}", f"{r['impact_se_bps']:.2f}", f"{r['sqrt_law_y']:.2f}")
    console.print(table)
    console.print(f"fit: {_fit_text(report['fit'], n_sizes)}; Y in impact = Y sigma sqrt(Q/V), real 0.5-1 "
                  "(sigma, V: the idle runs')")
    if report["local_exponents"]:
        local = Table(title="local exponent between neighbouring sizes (1: linear, 0.5: square root)")
        for col in ("from (lots)", "to (lots)", "exponent", "90% interval over seeds"):
            local.add_column(col, justify="right")
        for le in report["local_exponents"]:
            band = le["interval_90"]
            local.add_row(f"{le['from_lots']:.0f}", f"{le['to_lots']:.0f}",
                          "-" if le["exponent"] is None else f"{le['exponent']:.2f}",
                          f"{band[0]:.2f} to {band[1]:.2f}" if band else "unbounded")
        console.print(local)
    liquidated = sum(r["agent_liquidated_seeds"] for r in report["rows"])
    if liquidated:
        console.print(f"warning: the agent was liquidated in {liquidated} metaorder runs (its margin is the env's); "
                      "those metaorders stopped early")


def _print_sweep(console: Any, runs: list[dict[str, Any]], title: str) -> None:
    from rich.table import Table

    table = Table(title=f"crashgym impact sweep: {title}")
    for col in ("setting", "exponent", "90% interval", "R^2", "local exponents, smallest sizes first"):
        table.add_column(col, justify="left" if col in ("setting", "local exponents, smallest sizes first") else "right")
    for run in runs:
        fit, band = run["fit"], (run["fit"] or {}).get("exponent_interval_90")
        local = ", ".join("-" if le["exponent"] is None else f"{le['exponent']:.2f}" for le in run["local_exponents"])
        table.add_row(short_setting(run["setting"]), f"{fit['exponent']:.2f}" if fit else "-",
                      f"{band[0]:.2f}-{band[1]:.2f}" if band else "-", f"{fit['r2']:.2f}" if fit else "-", local)
    console.print(table)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """`crashgym impact`: one curve, or with `--sweep` one curve per value of a market key."""
    from rich.console import Console

    from crashgym.cli import load_cli_scenario, output_path
    from crashgym.config import ConfigError

    sizes = _sizes(args.sizes)
    try:
        swept = parse_sweep(args.sweep)[1] if args.sweep else []
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    # Every swept scenario is loaded (and checked) before the first, slow, measurement.
    scenarios = [load_cli_scenario(args.scenario, args.rules, args.obligations, [*args.settings, setting])
                 for setting in swept] or [load_cli_scenario(args.scenario, args.rules, args.obligations, args.settings)]
    sc = scenarios[0]
    minutes = args.horizon_steps * float(sc.params.step_seconds) / 60
    title = f"{sc.name}: {args.side} metaorders over {minutes:g} min from step {args.warmup_steps} ({args.seeds} seeds)"
    console = Console()
    head = {"scenario": sc.name, "rules": args.rules, "settings": args.settings, "obligations": args.obligations,
            "side": args.side, "seeds": args.seeds, "seed": args.seed, "warmup_steps": args.warmup_steps,
            "horizon_steps": args.horizon_steps}
    if swept:
        runs = []
        for setting, one in zip(swept, scenarios):
            report = _measure(one, args, sizes)
            _print_report(console, report, f"{title}, {setting}", len(sizes))
            runs.append({"setting": setting, **report})
        _print_sweep(console, runs, title)
        out = {**head, "sweep": args.sweep, "runs": runs}
    else:
        report = _measure(sc, args, sizes)
        _print_report(console, report, title, len(sizes))
        out = {**head, **report}
    if args.json:
        with open(output_path(args.json), "w") as fh:
            json.dump(out, fh, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        if swept:
            plot_impact_sweep([(short_setting(r["setting"]), r) for r in out["runs"]], output_path(args.plot), title=title)
        else:
            plot_impact(out, output_path(args.plot), title=title)
        print(f"wrote {args.plot}")
    return out
