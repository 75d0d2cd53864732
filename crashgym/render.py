"""Rendering for the Gymnasium adapters: an RGB frame (matplotlib, Agg) and a text view.

rgb_array: a 480x360 frame with, on the left, the book's resting volume around the mid
(bids green, asks red, the agent's own quotes outlined) and, on the right, the recent
mid price with liquidation (orange) and ADL (purple) markers.
ansi: one block of text with mid, spread, depth, insurance fund, open interest and the
agent's inventory.

Matplotlib is imported lazily (only when a frame is drawn); the core never imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crashgym.envs.common import CrashEnv, EnvParams, EnvState

WIDTH, HEIGHT, DPI = 480, 360, 80
LEVELS_SHOWN = 20


def _book(env: CrashEnv, state: EnvState, params: EnvParams):
    ms = state.market
    L = env.shape.n_levels
    tick = float(params.market.book.tick_size)
    center = int(ms.book.center_tick)
    first = center - L
    bid = np.asarray(ms.book.bid_depth, np.int64).copy()
    ask = np.asarray(ms.book.ask_depth, np.int64).copy()
    mk = ms.makers
    for t, s, arr in ((mk.bid_tick, mk.bid_size, bid), (mk.ask_tick, mk.ask_size, ask)):
        for tt, ss in zip(np.atleast_1d(t), np.atleast_1d(s)):
            j = int(tt) - first
            if 0 <= j < 2 * L and ss > 0:
                arr[j] += int(ss)
    ag = ms.agent
    for t, s, arr in ((ag.bid_tick, ag.bid_size, bid), (ag.ask_tick, ag.ask_size, ask)):
        j = int(t) - first
        if 0 <= j < 2 * L and s > 0:
            arr[j] += int(s)
    prices = (first + np.arange(2 * L)) * tick
    return prices, bid, ask


def _summary(env: CrashEnv, state: EnvState, params: EnvParams, info: dict[str, Any]) -> dict[str, float]:
    ms = state.market
    prices, bid, ask = _book(env, state, params)
    bids = np.flatnonzero(bid > 0)
    asks = np.flatnonzero(ask > 0)
    best_bid = prices[bids.max()] if bids.size else float("nan")
    best_ask = prices[asks.min()] if asks.size else float("nan")
    mid = float(ms.signals.mid)
    near = np.abs(prices - mid) <= 0.02 * mid
    depth = float(np.sum((bid + ask)[near] * prices[near]))
    oi = np.asarray(ms.ladder.total, np.float64) * float(ms.signals.mark)
    return {
        "step": int(state.time),
        "mid": mid,
        "mark": float(ms.signals.mark),
        "index": float(ms.signals.index),
        "best_bid": float(best_bid),
        "best_ask": float(best_ask),
        "spread_bps": float((best_ask - best_bid) / mid * 1e4),
        "depth_2pct": depth,
        "insurance_fund": float(ms.ledger.insurance_fund),
        "oi_long": float(oi[0]),
        "oi_short": float(oi[1]),
        "position": int(ms.agent.position),
        "equity": float(ms.agent.cash + ms.agent.position * ms.signals.mark),
        "halted": bool(ms.signals.halt_left > 0),
        "cost": float(info.get("cost", 0.0)),
    }


def ansi(env: CrashEnv, state: EnvState, params: EnvParams, info: dict[str, Any] | None = None) -> str:
    s = _summary(env, state, params, info or {})
    return (
        f"{env.name} step {s['step']}{'  HALTED' if s['halted'] else ''}\n"
        f"mid {s['mid']:.4f}  mark {s['mark']:.4f}  index {s['index']:.4f}\n"
        f"bid {s['best_bid']:.4f}  ask {s['best_ask']:.4f}  spread {s['spread_bps']:.1f} bps  "
        f"depth(2%) {s['depth_2pct']:,.0f} USD\n"
        f"insurance fund {s['insurance_fund']:,.0f} USD  OI long {s['oi_long']:,.0f}  short {s['oi_short']:,.0f} USD\n"
        f"inventory {s['position']} lots  equity {s['equity']:,.0f} USD  cost {s['cost']:.3f}\n"
    )


def rgb_array(env: CrashEnv, state: EnvState, params: EnvParams, history: Any = None,
              info: dict[str, Any] | None = None) -> np.ndarray:
    """A (360, 480, 3) uint8 frame."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    s = _summary(env, state, params, info or {})
    prices, bid, ask = _book(env, state, params)
    tick = float(params.market.book.tick_size)
    mid = s["mid"]
    near = np.abs(prices - mid) <= LEVELS_SHOWN * tick
    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    canvas = FigureCanvasAgg(fig)
    ax_book, ax_price = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
    ax_book.barh(prices[near], bid[near], height=tick * 0.9, color="tab:green", label="bids")
    ax_book.barh(prices[near], -ask[near], height=tick * 0.9, color="tab:red", label="asks")
    ag = state.market.agent
    for t, sz, sign in ((ag.bid_tick, ag.bid_size, 1), (ag.ask_tick, ag.ask_size, -1)):
        if int(sz) > 0:
            ax_book.barh(int(t) * tick, sign * int(sz), height=tick * 0.9, fill=False, edgecolor="black", lw=1.2)
    ax_book.axhline(mid, color="gray", lw=0.8, ls="--")
    ax_book.set_title("book (lots)", fontsize=8)
    ax_book.tick_params(labelsize=6)
    if history is not None and len(history.mid) > 0:
        mids = np.asarray(history.mid, np.float64)
        x = np.arange(mids.size)
        ax_price.plot(x, mids, color="tab:blue", lw=1)
        liq = np.asarray(history.liq) > 0
        adl = np.asarray(history.adl) > 0
        ax_price.scatter(x[liq], mids[liq], color="tab:orange", s=10, label="liquidations", zorder=3)
        ax_price.scatter(x[adl], mids[adl], color="tab:purple", marker="x", s=16, label="ADL", zorder=4)
        if liq.any() or adl.any():
            ax_price.legend(fontsize=6, loc="best")
    else:
        ax_price.axhline(mid, color="tab:blue", lw=1)
    ax_price.set_title(f"mid {mid:.2f}  spread {s['spread_bps']:.0f}bps  fund {s['insurance_fund'] / 1e3:.0f}k", fontsize=8)
    ax_price.tick_params(labelsize=6)
    fig.tight_layout()
    canvas.draw()
    frame = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    return frame
