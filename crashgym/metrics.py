"""Episode metrics (DESIGN section 4) from per-step diagnostics, per batch member.

Input: a dict of numpy arrays shaped (steps, batch) as returned by stacking the core's
`info` over an episode. Output: one value per batch member per metric, then mean and
5/50/95% quantiles over seeds. Pure numpy (no JAX computation), no plotting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from crashgym.obligations import COMPONENTS

METRICS = (
    "max_drawdown", "min_depth_ratio", "depth_recovery_steps", "mean_spread_bps", "realized_vol",
    "liquidated_notional", "liquidated_long_share", "adl_notional", "adl_count", "insurance_fund_min",
    "bad_debt", "open_interest_change", "mm_presence", "mm_pnl", "agent_return",
    "mm_two_sided", "mm_exempt_share", "mm_bankrupt", "agent_presence", "cost_per_step",
    *(f"violation_rate/{c}" for c in COMPONENTS),
)


def baseline_steps(shock_step: int, steps: int) -> slice:
    """Steps that count as 'before the shock' (the first 10% of a shock-free episode)."""
    end = shock_step if shock_step > 0 else max(steps // 10, 1)
    return slice(0, max(min(end, steps), 1))


def episode_metrics(info: Mapping[str, np.ndarray], *, shock_step: int, n_makers: int, agent_capital: float,
                    maker_capital: float | None = None) -> dict[str, np.ndarray]:
    """One value per batch member for each name in METRICS.

    depth_recovery_steps is censored at the episode's end when depth never recovers to
    90% of its pre-shock mean.
    Background makers (DESIGN section 4):
    - mm_presence: mean over makers of the fraction of steps whose posted two-sided quote met
      the obligation in force, or the ``strict`` rule's spread and size when none is (the
      core's ``mm_compliant`` count, crashgym.makers.meets_obligation); exempt steps count
      like any other (this is what the market got, not the rule's own presence ratio).
    - mm_two_sided: the same fraction for any two-sided quote, whatever its spread or size.
    - mm_exempt_share: fraction of steps on which the makers' obligation was exempt.
    - mm_bankrupt: makers out of capital at the episode's end (count).
    - mm_pnl: the makers' summed equity change over the episode (USD), from
      ``n_makers * maker_capital`` when given, else from the equity after the first step.
    The agent, held to the same rule in force (crashgym.rollout.agent_ledger; MarketMaker-v0's
    accounting, its window counted from reset, over every step of the episode, after a
    liquidation too):
    - agent_presence: the fraction of steps whose shown quote passed the mm_presence test.
    - cost_per_step: the mean over steps of the obligation's summed costs.
    - violation_rate/<component>: the fraction of steps with that component's cost > 0.
    An agent that never quotes (none, a trader) has presence 0 and, under an active rule,
    fails it on every non-exempt step. Info without the agent's ledger gives 0 for these.
    """
    mark = info["mark_price"]
    zeros = np.zeros_like(mark)
    agent_costs = np.stack([np.asarray(info.get(f"agent_cost_{c}", zeros), float) for c in COMPONENTS])
    steps = mark.shape[0]
    peak = np.maximum.accumulate(mark, axis=0)
    depth = info["depth_2pct"]
    base = baseline_steps(shock_step, steps)
    pre = np.maximum(depth[base].mean(axis=0), 1e-9)
    t_min = depth.argmin(axis=0)
    recovered = (depth >= 0.9 * pre) & (np.arange(steps)[:, None] > t_min[None, :])
    first = np.where(recovered.any(axis=0), recovered.argmax(axis=0), steps)
    liq = info["liquidated_notional"].sum(axis=0)
    oi = info["open_interest_long"] + info["open_interest_short"]
    returns = np.diff(np.log(mark), axis=0)
    return {
        "max_drawdown": (1.0 - mark / peak).max(axis=0),
        "min_depth_ratio": depth.min(axis=0) / pre,
        "depth_recovery_steps": (first - t_min).astype(float),
        "mean_spread_bps": np.nanmean(np.where(np.isfinite(info["spread_bps"]), info["spread_bps"], np.nan), axis=0),
        "realized_vol": returns.std(axis=0),
        "liquidated_notional": liq,
        "liquidated_long_share": info["liquidated_long_notional"].sum(axis=0) / np.maximum(liq, 1e-9),
        "adl_notional": info["adl_notional"].sum(axis=0),
        "adl_count": info["adl_count"].sum(axis=0).astype(float),
        "insurance_fund_min": info["insurance_fund"].min(axis=0),
        "bad_debt": info["bad_debt"].max(axis=0),
        "open_interest_change": oi[-1] / np.maximum(oi[0], 1e-9) - 1.0,
        "mm_presence": info.get("mm_compliant", info["mm_two_sided"]).mean(axis=0) / max(n_makers, 1),
        "mm_pnl": info["mm_equity"][-1] - (n_makers * maker_capital if maker_capital is not None else info["mm_equity"][0]),
        "agent_return": (info["agent_equity"][-1] - agent_capital) / agent_capital,
        "mm_two_sided": info["mm_two_sided"].mean(axis=0) / max(n_makers, 1),
        "mm_exempt_share": np.asarray(info.get("mm_exempt", zeros), float).mean(axis=0),
        "mm_bankrupt": np.asarray(info.get("mm_bankrupt", zeros), float)[-1],
        "agent_presence": np.asarray(info.get("agent_compliant", zeros), float).mean(axis=0),
        "cost_per_step": agent_costs.sum(axis=0).mean(axis=0),
        **{f"violation_rate/{c}": (agent_costs[i] > 0).mean(axis=0) for i, c in enumerate(COMPONENTS)},
    }


def scenario_metrics(info: Mapping[str, np.ndarray], shape: Any, params: Any) -> dict[str, np.ndarray]:
    """`episode_metrics` with the shock step, maker count and capitals read from a scenario's
    shape and (shared) params."""
    return episode_metrics(info, shock_step=int(params.flow.shock_step), n_makers=shape.n_makers,
                           agent_capital=float(params.agent.capital), maker_capital=float(params.makers.capital))


def summarize(values: Mapping[str, np.ndarray], *, ci: bool = False) -> dict[str, dict[str, float]]:
    """Mean and 5/50/95% quantiles over batch members (NaNs ignored).

    With ``ci``, also ``ci95_low`` / ``ci95_high``: a 95% confidence interval of the mean,
    mean +- 1.96 * std / sqrt(n) (normal approximation over seeds; rough below ~20 seeds).
    """
    out = {}
    for name, v in values.items():
        v = np.asarray(v, float)
        finite = v[np.isfinite(v)]
        if finite.size == 0:
            nan = float("nan")
            out[name] = {"mean": nan, "p05": nan, "p50": nan, "p95": nan}
            if ci:
                out[name].update(ci95_low=nan, ci95_high=nan)
            continue
        q = np.quantile(finite, [0.05, 0.5, 0.95])
        out[name] = {"mean": float(finite.mean()), "p05": float(q[0]), "p50": float(q[1]), "p95": float(q[2])}
        if ci:
            half = 1.96 * finite.std(ddof=1) / np.sqrt(finite.size) if finite.size > 1 else float("nan")
            out[name].update(ci95_low=float(finite.mean() - half), ci95_high=float(finite.mean() + half))
    return out
