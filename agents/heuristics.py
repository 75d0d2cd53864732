"""Heuristic market-maker agents for `crashgym run --agent NAME`.

Each is a pure function (state, params) -> AgentOrders of ONE market, vmapped by the
runner. They read the market state directly (the same information a maker sees).
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from crashgym.params import MarketParams
from crashgym.state import AgentOrders, MarketState

Policy = Callable[[MarketState, MarketParams], AgentOrders]


def _quote(state: MarketState, params: MarketParams, half_spread_ticks, size_lots, skew_ticks=0.0) -> AgentOrders:
    mid_tick = state.signals.mid / params.book.tick_size + skew_ticks
    size = jnp.floor(size_lots).astype(jnp.int32)
    return AgentOrders(
        bid_tick=jnp.floor(mid_tick - half_spread_ticks).astype(jnp.int32),
        bid_size=size,
        ask_tick=jnp.ceil(mid_tick + half_spread_ticks).astype(jnp.int32),
        ask_size=size,
        market_lots=jnp.int32(0),
    )


def fixed_spread(state: MarketState, params: MarketParams) -> AgentOrders:
    """Always quote 2 ticks either side of the mid, half the maximum size."""
    return _quote(state, params, 2.0, 0.5 * params.agent.max_quote_lots)


def avellaneda_stoikov(state: MarketState, params: MarketParams, risk_aversion: float = 0.1, horizon_steps: float = 360.0
                       ) -> AgentOrders:
    """Avellaneda-Stoikov (2008): reservation price r = s - q * gamma * sigma^2 * T, half
    spread gamma * sigma^2 * T / 2 + log(1 + gamma / k) / gamma, in ticks with sigma the
    per-step realized vol in ticks, q the inventory in units of max quote size and an
    order-arrival decay k of 1.5 per tick."""
    tick_rel = params.book.tick_size / state.signals.mid
    sigma_ticks = jnp.sqrt(state.signals.realized_var) / tick_rel
    q = state.agent.position / params.agent.max_quote_lots
    var_t = risk_aversion * sigma_ticks**2 * horizon_steps
    half = jnp.clip(0.5 * var_t + jnp.log1p(risk_aversion / 1.5) / risk_aversion, 1.0, params.agent.max_offset_ticks)
    return _quote(state, params, half, 0.5 * params.agent.max_quote_lots, skew_ticks=-q * var_t)


def withdraw_on_vol(state: MarketState, params: MarketParams, vol_multiple: float = 3.0) -> AgentOrders:
    """What the seeds describe real makers doing: quote normally, widen when realized vol
    rises, pull both quotes when it exceeds `vol_multiple` times the calm level."""
    calm = params.flow.vol_per_step
    rv = jnp.sqrt(state.signals.realized_var)
    stress = rv / (calm * vol_multiple)
    half = 2.0 * jnp.where(stress > 0.5, 3.0, 1.0)
    size = jnp.where(stress > 1.0, 0.0, 0.5 * params.agent.max_quote_lots)
    return _quote(state, params, half, size)


MARKET_MAKERS: dict[str, Policy] = {
    "fixed-spread": fixed_spread,
    "avellaneda-stoikov": avellaneda_stoikov,
    "withdraw-on-vol": withdraw_on_vol,
}


def market_policy(name: str) -> Policy:
    if name not in MARKET_MAKERS:
        raise KeyError(f"unknown agent '{name}' (available: none, {', '.join(MARKET_MAKERS)})")
    return MARKET_MAKERS[name]
