"""Stylized facts and event-timeline statistics of simulated episodes (pure numpy).

Inputs are the per-step diagnostics of `crashgym.rollout.run_batch`: {name: array
(steps, seeds)}. Outputs are one value per seed (or per seed and lag), so tests and
notebooks can take medians and quantiles over seeds.

What is measured, and the real figure it is compared with
(../shared/MARKET_MECHANICS.md sections 6 and 7):
- heavy tails: excess kurtosis of short-horizon log returns (> 0; Cont 2001);
- no linear autocorrelation of returns, slowly decaying positive autocorrelation of
  absolute returns (volatility clustering);
- square-root impact: the exponent of impact against metaorder size (Toth et al. 2011),
  over the whole range and between neighbouring sizes (a linear-to-square-root crossover,
  Bucci et al. 2019); the metaorder experiment itself runs in `crashgym.impact`, the fits
  are here;
- the 10 Oct 2025 timeline: spread widening, depth collapse, makers withdraw, price
  bottom, depth minimum, makers return, depth recovery, in minutes from the shock;
- liquidation concentration: the busiest minute's share of the busiest 40-minute
  window (Amberdata: $3.21B of $6.93B, 46%);
- ADL only once the insurance fund is exhausted or past its drawdown threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Real figures (MARKET_MECHANICS.md section 6), minutes from T+0 unless stated.
OCT10_REAL = {
    "spread_widening_min": 0.0,  # T+0: news, spreads widen, makers still quote
    "depth_collapse_min": 40.0,  # T+40: depth of a major token starts collapsing from $1.2M
    "makers_withdraw_min": 60.0,  # T+60: makers move from defence to full withdrawal
    "depth_minimum_min": 80.0,  # T+80: depth $27k (-98%)
    "makers_return_min": 95.0,  # T+95: makers start to return
    "recovery_after_return_min": 35.0,  # depth back above 90% within 35 min of the return
    "min_depth_ratio": 27e3 / 1.2e6,
    "long_share": 0.839,  # Amberdata, 40 minutes from 20:50 UTC
    "peak_minute_share": 3.21 / 6.93,  # $3.21B in the 21:15 minute of $6.93B in 40 minutes
    "open_interest_change": -0.22,  # BTC, < 12 h (market-wide ~ -50%)
}
OM_REAL = {"drawdown": 1.0 - 0.50 / 6.30, "minutes": 90.0}  # $6.30 -> < $0.50 in ~90 minutes


# ------------------------------------------------------------------ returns
def log_returns(price: np.ndarray, every: int = 1) -> np.ndarray:
    """Log returns over `every` steps, per column: (steps // every - 1, seeds)."""
    p = np.asarray(price, float)[::every]
    return np.diff(np.log(p), axis=0)


def excess_kurtosis(x: np.ndarray) -> np.ndarray:
    """Sample excess kurtosis per column (0 for a Gaussian)."""
    x = np.asarray(x, float)
    d = x - x.mean(axis=0)
    m2 = (d**2).mean(axis=0)
    return (d**4).mean(axis=0) / np.maximum(m2**2, 1e-300) - 3.0


def acf(x: np.ndarray, lags: Sequence[int]) -> np.ndarray:
    """Sample autocorrelation per column at each lag: (len(lags), seeds)."""
    x = np.asarray(x, float)
    d = x - x.mean(axis=0)
    var = (d**2).sum(axis=0)
    out = [(d[lag:] * d[:-lag]).sum(axis=0) / np.maximum(var, 1e-300) for lag in lags]
    return np.asarray(out)


# ------------------------------------------------------------------- impact
def impact_exponent(sizes: np.ndarray, impacts: np.ndarray) -> dict[str, float]:
    """Least-squares fit of log(impact) = log(Y) + delta * log(size).

    sizes: (k,) metaorder sizes; impacts: (k,) mean impacts (same sign, > 0).
    Returns {"exponent": delta, "prefactor": Y, "r2": coefficient of determination}.
    Square-root impact is delta ~ 0.5 (Toth et al. 2011; Donier & Bonart 2015).
    """
    s = np.asarray(sizes, float)
    y = np.asarray(impacts, float)
    ok = (s > 0) & (y > 0) & np.isfinite(y)
    if ok.sum() < 2:
        raise ValueError("impact_exponent needs at least two positive (size, impact) pairs")
    lx, ly = np.log(s[ok]), np.log(y[ok])
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (intercept + slope * lx)
    ss = ((ly - ly.mean()) ** 2).sum()
    return {"exponent": float(slope), "prefactor": float(np.exp(intercept)),
            "r2": float(1.0 - (resid**2).sum() / ss) if ss > 0 else float("nan")}


def _seed_bootstrap_means(sizes: np.ndarray, impact_per_seed: np.ndarray, level: float, resamples: int,
                          seed: int) -> np.ndarray:
    """(resamples, k) mean impacts of whole seeds drawn with replacement, after checking the
    inputs of the interval functions below. Whole seeds keep the sizes' shared noise together
    (common random numbers)."""
    per_seed = np.asarray(impact_per_seed, float)
    if per_seed.ndim != 2 or per_seed.shape[0] != np.size(sizes) or per_seed.shape[1] < 2:
        raise ValueError(f"impact_per_seed must be (sizes, seeds >= 2), got shape {per_seed.shape} for "
                         f"{np.size(sizes)} sizes")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = per_seed.shape[1]
    draws = np.random.default_rng(seed).integers(0, n, (resamples, n))
    return per_seed[:, draws].mean(axis=2).T


def _central_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval of bootstrap estimates (NaN: no estimate in that resample);
    (-inf, inf) when more than 1 - level of the resamples have none."""
    if np.isnan(samples).mean() > 1 - level:
        return -np.inf, np.inf
    tail = 100 * (1 - level) / 2
    lo, hi = np.nanpercentile(samples, [tail, 100 - tail])
    return float(lo), float(hi)


def impact_exponent_interval(sizes: np.ndarray, impact_per_seed: np.ndarray, *, level: float = 0.9,
                             resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of the impact exponent over seeds (percentile method).

    impact_per_seed: (k, seeds) impacts of each size in each seed, the same seeds for every
    size (common random numbers), so whole seeds are resampled and the sizes' correlation is
    kept. Each resample refits `impact_exponent` to its mean impacts. A resample with fewer
    than two positive means has no fit: if more than 1 - level of them have none, the data
    cannot bound the exponent and the interval is (-inf, inf); otherwise they are left out.
    Returns the (lower, upper) bounds of the central `level` interval.
    """
    means = _seed_bootstrap_means(sizes, impact_per_seed, level, resamples, seed)
    exps = np.array([impact_exponent(sizes, m)["exponent"] if (m > 0).sum() >= 2 else np.nan for m in means])
    return _central_interval(exps, level)


def local_impact_exponents(sizes: np.ndarray, impact_per_seed: np.ndarray, *, level: float = 0.9,
                           resamples: int = 2000, seed: int = 0) -> dict[str, np.ndarray]:
    """The impact curve's slope in log-log between each pair of neighbouring sizes, with a
    bootstrap interval over seeds (as `impact_exponent_interval`).

    One power law over the whole range hides a crossover: Bucci, Benzaquen, Lillo & Bouchaud
    (2019) find impact linear (slope 1) for small metaorders and a square root (0.5) above.
    sizes: (k,) distinct metaorder sizes in any order; impact_per_seed: (k, seeds).
    Returns, for the k - 1 pairs in ascending size: "from_lots", "to_lots", "exponent"
    (log(I_to / I_from) / log(Q_to / Q_from) of the mean impacts; NaN unless both are > 0)
    and "interval" ((k - 1, 2); a pair whose means are not both positive in more than
    1 - level of the resamples reads (-inf, inf)).
    """
    s = np.asarray(sizes, float)
    if s.ndim != 1 or s.size < 2 or (s <= 0).any() or np.unique(s).size != s.size:
        raise ValueError(f"local_impact_exponents needs at least two distinct positive sizes, got {s.tolist()}")
    order = np.argsort(s)
    means = _seed_bootstrap_means(s, impact_per_seed, level, resamples, seed)[:, order]
    point = np.asarray(impact_per_seed, float)[order].mean(axis=1)
    log_q = np.log(s[order])

    def slopes(m: np.ndarray) -> np.ndarray:
        log_i = np.where(m > 0, np.log(np.where(m > 0, m, 1.0)), np.nan)  # no log of an impact <= 0
        return np.diff(log_i, axis=-1) / np.diff(log_q)

    boot = slopes(means)
    return {"from_lots": s[order][:-1], "to_lots": s[order][1:], "exponent": slopes(point),
            "interval": np.array([_central_interval(boot[:, j], level) for j in range(boot.shape[1])])}


def sqrt_law_prefactor(sizes: np.ndarray, impacts: np.ndarray, step_sigma: float, volume_per_step: float) -> np.ndarray:
    """Y in impact = Y * sigma * sqrt(Q / V) for each metaorder (Toth et al. 2011: Y ~ 0.5-1).

    sigma and V are the volatility and the traded volume over one period; any period gives the
    same Y if returns scale diffusively (sigma_day = sigma_step * sqrt(steps), V_day = V_step *
    steps), so per-step figures are used as they are measured. sizes in lots, impacts in log
    return, step_sigma: log-return std per step, volume_per_step: lots traded per step.
    """
    if step_sigma <= 0 or volume_per_step <= 0:
        raise ValueError("sqrt_law_prefactor needs step_sigma > 0 and volume_per_step > 0")
    s = np.asarray(sizes, float)
    return np.asarray(impacts, float) / (step_sigma * np.sqrt(s / volume_per_step))


# ------------------------------------------------------------ liquidations
def per_minute(x: np.ndarray, steps_per_minute: int) -> np.ndarray:
    """Sum of a per-step flow over whole minutes: (minutes, seeds)."""
    x = np.asarray(x, float)
    n = (x.shape[0] // steps_per_minute) * steps_per_minute
    return x[:n].reshape(-1, steps_per_minute, *x.shape[1:]).sum(axis=1)


def peak_minute_share(liquidated: np.ndarray, steps_per_minute: int, window_minutes: int = 40) -> np.ndarray:
    """Per seed: the busiest minute's liquidations / the busiest `window_minutes` window's.

    The window is the one with the largest total (Amberdata's 40 minutes from 20:50 UTC);
    NaN where nothing was liquidated.
    """
    m = per_minute(liquidated, steps_per_minute)
    w = min(window_minutes, m.shape[0])
    c = np.concatenate([np.zeros((1, m.shape[1])), np.cumsum(m, axis=0)])
    window = c[w:] - c[:-w]  # (minutes - w + 1, seeds)
    start = window.argmax(axis=0)
    total = window.max(axis=0)
    peak = np.array([m[s:s + w, j].max() for j, s in enumerate(start)])
    return np.where(total > 0, peak / np.maximum(total, 1e-300), np.nan)


# --------------------------------------------------------------------- ADL
def adl_after_fund_tier(adl_count: np.ndarray, insurance_fund: np.ndarray, initial_fund: float,
                        adl_drawdown: float) -> np.ndarray:
    """Per seed: True when no ADL ran, or every step with ADL follows a step at whose end the
    fund was exhausted (<= 0) or past its drawdown threshold (<= (1 - adl_drawdown) * peak).

    The engine decides ADL inside a step from the fund after that step's liquidations, so
    the test reads the fund at the end of the previous step or of the ADL step itself.
    """
    fund = np.asarray(insurance_fund, float)
    peak = np.maximum.accumulate(np.maximum(fund, initial_fund), axis=0)
    low = (fund <= 0) | (fund <= (1.0 - adl_drawdown) * peak)
    low_prev = np.concatenate([np.zeros((1, fund.shape[1]), bool), low[:-1]])
    adl = np.asarray(adl_count) > 0
    return ~(adl & ~(low | low_prev)).any(axis=0)


# ---------------------------------------------------------------- timeline
def _first(mask: np.ndarray, start: np.ndarray | int = 0) -> np.ndarray:
    """First index >= start where mask (steps, seeds) holds; -1 where never."""
    steps = mask.shape[0]
    start = np.broadcast_to(np.asarray(start), (mask.shape[1],))
    after = mask & (np.arange(steps)[:, None] >= start[None, :])
    return np.where(after.any(axis=0), after.argmax(axis=0), -1)


def timeline(info: Mapping[str, np.ndarray], *, shock_step: int, n_makers: int) -> dict[str, np.ndarray]:
    """Event steps per seed (-1 where the event never happens), from the shock on:

    - spread_widening: spread (5-step median) first above twice its pre-shock median;
    - depth_collapse: depth within +-2% first below half its pre-shock mean;
    - makers_withdraw: first step with at least half the background makers withdrawn;
    - bottom: the mark's minimum;
    - depth_minimum: the depth's minimum after the shock;
    - makers_return: after the withdrawal, the first step with fewer than half withdrawn;
    - recovery: after the makers' return, depth first back to 90% of pre-shock.
    """
    depth = np.asarray(info["depth_2pct"], float)
    steps, seeds = depth.shape
    t0 = max(shock_step, 1)
    base = slice(0, t0)
    pre_depth = np.maximum(depth[base].mean(axis=0), 1e-9)
    spread = np.asarray(info["spread_bps"], float)
    spread = np.where(np.isfinite(spread), spread, 1e6)  # a one-sided book: widest possible
    pre_spread = np.median(spread[base], axis=0)
    k = 5
    pad = np.concatenate([np.repeat(spread[:1], k - 1, axis=0), spread])
    smooth = np.median(np.stack([pad[i:i + steps] for i in range(k)]), axis=0)
    withdrawn = np.asarray(info["mm_withdrawn"], float) >= 0.5 * n_makers
    out = {
        "spread_widening": _first(smooth > 2.0 * pre_spread, t0),
        "depth_collapse": _first(depth < 0.5 * pre_depth, t0),
        "makers_withdraw": _first(withdrawn, t0),
        "bottom": t0 + np.asarray(info["mark_price"])[t0:].argmin(axis=0),
        "depth_minimum": t0 + depth[t0:].argmin(axis=0),
    }
    w = out["makers_withdraw"]
    ret = _first(~withdrawn, np.where(w >= 0, w, steps))
    out["makers_return"] = np.where(w >= 0, ret, -1)
    r = out["makers_return"]
    rec = _first(depth >= 0.9 * pre_depth[None, :], np.where(r >= 0, r, steps))
    out["recovery"] = np.where(r >= 0, rec, -1)
    return out


def timeline_minutes(events: Mapping[str, np.ndarray], *, shock_step: int, step_seconds: float
                     ) -> dict[str, np.ndarray]:
    """Event steps -> minutes from the shock (NaN where the event never happens)."""
    return {k: np.where(v >= 0, (v - shock_step) * step_seconds / 60.0, np.nan) for k, v in events.items()}


def recovery_after_return_minutes(events: Mapping[str, np.ndarray], step_seconds: float) -> np.ndarray:
    """Minutes from the makers' return to depth back at 90% of pre-shock (NaN if either never happens)."""
    r, rec = events["makers_return"], events["recovery"]
    return np.where((r >= 0) & (rec >= 0), (rec - r) * step_seconds / 60.0, np.nan)


def minutes_to_drawdown(mark: np.ndarray, level: float, start_step: int, step_seconds: float) -> np.ndarray:
    """Minutes from start_step until the mark's drawdown from its running peak first reaches
    `level` (NaN where it never does)."""
    mark = np.asarray(mark, float)
    dd = 1.0 - mark / np.maximum.accumulate(mark, axis=0)
    hit = _first(dd >= level, start_step)
    return np.where(hit >= 0, (hit - start_step) * step_seconds / 60.0, np.nan)
