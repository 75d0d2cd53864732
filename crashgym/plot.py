"""Multi-panel plot of an episode batch: price, depth, liquidations and ADL, fund, OI, makers.

Median over seeds with a 5-95% band. The event timeline (crashgym.stylized.timeline) is
marked on every panel at its median time over seeds: the shock (T+0), makers withdraw,
the price bottom, makers return, depth recovered to 90% of pre-shock. Matplotlib (Agg) only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


_EVENTS = (  # (timeline key, label, colour, line style)
    ("makers_withdraw", "makers withdraw", "C3", ":"),
    ("bottom", "price bottom", "k", "-."),
    ("makers_return", "makers return", "C2", ":"),
    ("recovery", "depth recovered", "C2", "-."),
)


def event_minutes(info: Mapping[str, np.ndarray], *, step_seconds: float, shock_step: int, n_makers: int
                  ) -> dict[str, float]:
    """Median over seeds of each timeline event, in minutes from the episode's start (NaN when the
    event happens in fewer than half the seeds). Empty when there is no shock to measure from."""
    from crashgym.stylized import timeline

    if shock_step < 0:
        return {}
    ev = timeline(info, shock_step=shock_step, n_makers=n_makers)
    out = {"shock": shock_step * step_seconds / 60.0}
    for key, *_ in _EVENTS:
        v = ev[key]
        out[key] = float(np.median(v[v >= 0])) * step_seconds / 60.0 if (v >= 0).mean() >= 0.5 else float("nan")
    return out


def plot_episode(info: Mapping[str, np.ndarray], path: str, *, title: str, step_seconds: float, shock_step: int,
                 n_makers: int) -> None:
    """Save the panels to `path`. shock_step: T+0 of the event timeline (-1: none; for a
    scenario driven by a holder rather than news pass its start step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = info["mark_price"].shape[0]
    minutes = np.arange(steps) * step_seconds / 60.0
    per_min = max(int(round(60.0 / step_seconds)), 1)

    def band(ax, x, y, label, color):
        q = np.nanquantile(y, [0.05, 0.5, 0.95], axis=1)
        ax.plot(x, q[1], color=color, label=label, lw=1.2)
        ax.fill_between(x, q[0], q[2], color=color, alpha=0.2, lw=0)

    def per_minute(y):
        n = (y.shape[0] // per_min) * per_min
        return y[:n].reshape(-1, per_min, y.shape[1]).sum(axis=1)

    fig, axes = plt.subplots(3, 2, figsize=(12, 9), sharex=True)
    ax = axes[0, 0]
    band(ax, minutes, info["mark_price"], "mark", "C0")
    band(ax, minutes, info["index_price"], "index", "C1")
    ax.set_ylabel("price (USD)")
    ax.legend(loc="lower left")
    ax = axes[0, 1]
    band(ax, minutes, info["depth_2pct"] / 1e6, "depth +-2%", "C2")
    ax.set_ylabel("depth within +-2% (M USD)")
    ax = axes[1, 0]
    mins = np.arange(per_minute(info["liquidated_notional"]).shape[0])
    band(ax, mins, per_minute(info["liquidated_notional"]) / 1e6, "liquidated", "C3")
    band(ax, mins, per_minute(info["adl_notional"]) / 1e6, "ADL", "C4")
    ax.set_ylabel("per minute (M USD)")
    ax.legend(loc="upper right")
    ax = axes[1, 1]
    band(ax, minutes, info["insurance_fund"] / 1e3, "insurance fund", "C5")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("insurance fund (k USD)")
    ax = axes[2, 0]
    band(ax, minutes, info["open_interest_long"] / 1e6, "long", "C0")
    band(ax, minutes, info["open_interest_short"] / 1e6, "short", "C3")
    ax.set_ylabel("leveraged open interest (M USD)")
    ax.legend(loc="upper right")
    ax.set_xlabel("minutes")
    ax = axes[2, 1]
    band(ax, minutes, info["mm_two_sided"] / max(n_makers, 1), "two-sided", "C2")
    band(ax, minutes, info["mm_withdrawn"] / max(n_makers, 1), "withdrawn", "C3")
    ax.set_ylabel("background makers (fraction)")
    ax.legend(loc="upper right")
    ax.set_xlabel("minutes")
    events = event_minutes(info, step_seconds=step_seconds, shock_step=shock_step, n_makers=n_makers)
    styles = {"shock": ("shock (T+0)", "k", "--")} | {k: (lab, c, ls) for k, lab, c, ls in _EVENTS}
    for key, t in events.items():
        if not np.isfinite(t):
            continue
        label, color, ls = styles[key]
        for a in axes.flat:
            a.axvline(t, color=color, ls=ls, lw=0.8, label=label if a is axes[0, 1] else None)
    if events:
        axes[0, 1].legend(loc="lower right", fontsize=7)
    import textwrap

    fig.suptitle(textwrap.fill(title, 110), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
