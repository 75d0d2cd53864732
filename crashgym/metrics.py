"""Episode metrics (DESIGN section 4) from per-step diagnostics, per batch member.

Input: a dict of numpy arrays shaped (steps, batch) as returned by stacking the core's
`info` over an episode. Output: one value per batch member per metric, then mean and
5/50/95% quantiles over seeds. Pure numpy: no JAX, no plotting.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

METRICS = (
    "max_drawdown", "min_depth_ratio", "depth_recovery_steps", "mean_spread_bps", "realized_vol",
    "liquidated_notional", "liquidated_long_share", "adl_notional", "adl_count", "insurance_fund_min",
    "bad_debt", "open_interest_change", "mm_presence", "mm_pnl", "agent_return",
)


def baseline_steps(shock_step: int, steps: int) -> slice:
    """Steps that count as 'before the shock' (the first 10% of a shock-free episode)."""
    end = shock_step if shock_step > 0 else max(steps // 10, 1)
    return slice(0, max(min(end, steps), 1))


def episode_metrics(info: Mapping[str, np.ndarray], *, shock_step: int, n_makers: int, agent_capital: float
                    ) -> dict[str, np.ndarray]:
    """One value per batch member for each name in METRICS.

    depth_recovery_steps is censored at the episode's end when depth never recovers to
    90% of its pre-shock mean. mm_presence is the mean fraction of background makers
    with a two-sided quote (the obligation's spread/size test where one is in force is
    applied by crashgym.obligations, not here).
    """
    mark = info["mark_price"]
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
        "mm_presence": info["mm_two_sided"].mean(axis=0) / max(n_makers, 1),
        "mm_pnl": info["mm_equity"][-1] - info["mm_equity"][0],
        "agent_return": (info["agent_equity"][-1] - agent_capital) / agent_capital,
    }


def summarize(values: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Mean and 5/50/95% quantiles over batch members (NaNs ignored)."""
    out = {}
    for name, v in values.items():
        v = np.asarray(v, float)
        finite = v[np.isfinite(v)]
        if finite.size == 0:
            out[name] = {"mean": float("nan"), "p05": float("nan"), "p50": float("nan"), "p95": float("nan")}
            continue
        q = np.quantile(finite, [0.05, 0.5, 0.95])
        out[name] = {"mean": float(finite.mean()), "p05": float(q[0]), "p50": float(q[1]), "p95": float(q[2])}
    return out
