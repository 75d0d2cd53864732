"""Heuristic baselines: market makers and leveraged traders.

Two forms of every heuristic:

* a **market policy** ``(MarketState, MarketParams) -> AgentOrders`` of ONE market, what
  ``crashgym run --agent NAME`` and :func:`crashgym.rollout.run_batch` vmap over a batch
  (``obliged`` is a :class:`crashgym.rollout.StatefulPolicy`: it carries the env's
  presence counters, see :func:`obliged`);
* an **env policy** ``(EnvState, EnvParams) -> action`` for the functional envs
  (``crashgym.make``), built by :func:`env_policy`, so that heuristics and learned
  agents are evaluated through exactly the same env (reward, costs, presence).

Makers (MarketMaker-v0): ``fixed-spread``, ``avellaneda-stoikov``, ``withdraw-on-vol``,
``obliged`` (meets the obligation in force as cheaply as it can). Traders
(LeveragedTrader-v0): ``fixed-leverage-long``, ``de-risk-on-vol``.

They read the market state directly (the information a maker or trader watches: mid,
realized vol, own inventory and equity), never the future.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from agents.in_market import env_policy_in_market
from crashgym.envs import MarketMaker
from crashgym.envs.common import EnvParams
from crashgym.obligations import ObligationParams, load_obligations
from crashgym.params import MarketParams
from crashgym.rollout import StatefulPolicy
from crashgym.state import AgentOrders, MarketState

Array = jax.Array
Policy = Callable[[MarketState, MarketParams], AgentOrders]

# ----------------------------------------------------------------------------- makers


def _mid_ticks(state: MarketState, params: MarketParams) -> Array:
    """The mid in ticks, rounded to a half tick (as MarketMaker-v0 places quotes)."""
    return jnp.round(state.signals.mid / params.book.tick_size * 2.0) / 2.0


def _quote(state: MarketState, params: MarketParams, half_spread_ticks, size_lots, skew_ticks=0.0) -> AgentOrders:
    """A symmetric quote around mid + skew: each side rounded to the nearest tick at least
    ``half_spread_ticks - 0.5`` away (the rounding compliant_quote assumes)."""
    centre = _mid_ticks(state, params) + skew_ticks
    h = jnp.asarray(half_spread_ticks, jnp.float32)
    size = jnp.clip(jnp.floor(size_lots), 0, params.agent.max_quote_lots).astype(jnp.int32)
    return AgentOrders(
        bid_tick=jnp.floor(centre - h + 0.5).astype(jnp.int32),
        bid_size=size,
        ask_tick=jnp.ceil(centre + h - 0.5).astype(jnp.int32),
        ask_size=size,
        market_lots=jnp.int32(0),
    )


def fixed_spread(state: MarketState, params: MarketParams) -> AgentOrders:
    """Always quote 2 ticks either side of the mid, half the maximum size."""
    return _quote(state, params, 2.0, 0.5 * params.agent.max_quote_lots)


def avellaneda_stoikov(state: MarketState, params: MarketParams, risk_aversion: float = 0.1,
                       horizon_steps: float = 360.0) -> AgentOrders:
    """Avellaneda-Stoikov (2008): reservation price r = s - q * gamma * sigma^2 * T, half
    spread gamma * sigma^2 * T / 2 + log(1 + gamma / k) / gamma, in ticks with sigma the
    per-step realized vol in ticks, q the inventory in units of max quote size and an
    order-arrival decay k of 1.5 per tick. T is a fixed horizon (a rolling version of the
    paper's finite horizon)."""
    tick_rel = params.book.tick_size / state.signals.mid
    sigma_ticks = jnp.sqrt(jnp.maximum(state.signals.realized_var, 0.0)) / tick_rel
    q = state.agent.position / params.agent.max_quote_lots
    var_t = risk_aversion * sigma_ticks**2 * horizon_steps
    half = jnp.clip(0.5 * var_t + jnp.log1p(risk_aversion / 1.5) / risk_aversion, 1.0, params.agent.max_offset_ticks)
    return _quote(state, params, half, 0.5 * params.agent.max_quote_lots, skew_ticks=-q * var_t)


def withdraw_on_vol(state: MarketState, params: MarketParams, vol_multiple: float = 3.0) -> AgentOrders:
    """What the seeds describe real makers doing: quote normally, widen when realized vol
    rises, pull both quotes when it exceeds `vol_multiple` times the calm level (and quote
    again as soon as it falls back: the EWMA of realized variance gives the lag)."""
    calm = params.flow.vol_per_step
    rv = jnp.sqrt(jnp.maximum(state.signals.realized_var, 0.0))
    stress = rv / (calm * vol_multiple)
    half = 2.0 * jnp.where(stress > 0.5, 3.0, 1.0)
    size = jnp.where(stress > 1.0, 0.0, 0.5 * params.agent.max_quote_lots)
    return _quote(state, params, half, size)


def obliged_quote(state: MarketState, params: MarketParams, obligation: ObligationParams, due: Array) -> AgentOrders:
    """The cheapest quote the rule allows, shown only when ``due``: the widest spread the
    spread and distance rules allow (whole ticks around the half-tick mid; the agent's own
    max_offset_ticks where no rule caps it) and the smallest size the size rule allows
    (at least one lot). Exact ticks rather than crashgym.obligations.compliant_quote, whose
    caps keep up to a tick a side of margin for makers that round differently. With no obligation in force
    (``active == 0`` or a zero presence target) it never quotes: nothing requires it."""
    tick = params.book.tick_size
    mid = state.signals.mid
    m = _mid_ticks(state, params)
    ticks_per_bps = mid * 1e-4 / tick
    widest = 2.0 * params.agent.max_offset_ticks + 2.0
    spread = jnp.where(obligation.max_spread_bps > 0,
                       jnp.floor(obligation.max_spread_bps * ticks_per_bps + 1e-3), widest)
    spread = jnp.maximum(jnp.minimum(spread, widest), 2.0)
    dist = jnp.where(obligation.max_distance_bps > 0,
                     jnp.floor(obligation.max_distance_bps * ticks_per_bps + 1e-3), widest)
    bid = jnp.maximum(jnp.floor(m - spread / 2.0), jnp.ceil(m - dist))
    ask = jnp.minimum(bid + spread, jnp.floor(m + dist))
    bid, ask = jnp.minimum(bid, jnp.ceil(m) - 1.0), jnp.maximum(ask, jnp.floor(m) + 1.0)  # strictly around the mid
    # priced at the bid (the lower side)
    lots = jnp.ceil(obligation.min_size_notional / jnp.maximum(bid * tick, tick) - 1e-4)
    lots = jnp.maximum(lots, 1.0)
    binding = (jnp.asarray(obligation.active) == 1) & (jnp.asarray(obligation.presence_target) > 0)
    size = jnp.where(binding & due & ~state.agent.liquidated, jnp.minimum(lots, params.agent.max_quote_lots), 0.0)
    size = size.astype(jnp.int32)
    return AgentOrders(bid_tick=bid.astype(jnp.int32), bid_size=size, ask_tick=ask.astype(jnp.int32), ask_size=size,
                       market_lots=jnp.int32(0))


# ----------------------------------------------------------------------------- traders


def target_leverage_orders(state: MarketState, params: MarketParams, leverage: Array, max_order_fraction: float = 0.1
                           ) -> AgentOrders:
    """A market order toward ``leverage`` x equity / mark lots (signed), at most
    ``max_order_fraction`` of the target's size per step (so a whale-sized account does not
    sweep the book in one step). The LeveragedTrader env form sends the whole difference."""
    equity = jnp.maximum(state.agent.cash + state.agent.position * state.signals.mark, 0.0)
    target = jnp.round(leverage * equity / state.signals.mark)
    cap = jnp.maximum(jnp.abs(target) * max_order_fraction, 1.0)
    lots = jnp.clip(target - state.agent.position, -cap, cap)
    lots = jnp.where(state.agent.liquidated, 0.0, lots)
    z = jnp.int32(0)
    return AgentOrders(bid_tick=z, bid_size=z, ask_tick=z, ask_size=z, market_lots=lots.astype(jnp.int32))


def fixed_leverage_long_target(state: MarketState, params: MarketParams, leverage: float = 3.0) -> Array:
    """Hold a long position of `leverage` x equity, whatever happens (a retail long)."""
    return jnp.float32(leverage)


def de_risk_on_vol_target(state: MarketState, params: MarketParams, leverage: float = 3.0, vol_multiple: float = 2.0
                          ) -> Array:
    """Long `leverage` x equity in calm; cut leverage in proportion as realized vol rises
    above `vol_multiple` x the calm level, flat above twice that (a risk-managed long)."""
    rv = jnp.sqrt(jnp.maximum(state.signals.realized_var, 0.0))
    stress = rv / (params.flow.vol_per_step * vol_multiple)
    scale = jnp.clip(2.0 - stress, 0.0, 1.0)  # 1 below stress 1, 0 above stress 2
    return (leverage * scale).astype(jnp.float32)


def fixed_leverage_long(state: MarketState, params: MarketParams) -> AgentOrders:
    return target_leverage_orders(state, params, fixed_leverage_long_target(state, params))


def de_risk_on_vol(state: MarketState, params: MarketParams) -> AgentOrders:
    return target_leverage_orders(state, params, de_risk_on_vol_target(state, params))


# ----------------------------------------------------------------------------- registry

MARKET_MAKERS: dict[str, Policy] = {
    "fixed-spread": fixed_spread,
    "avellaneda-stoikov": avellaneda_stoikov,
    "withdraw-on-vol": withdraw_on_vol,
}
TRADERS: dict[str, Policy] = {
    "fixed-leverage-long": fixed_leverage_long,
    "de-risk-on-vol": de_risk_on_vol,
}
TRADER_TARGETS = {
    "fixed-leverage-long": fixed_leverage_long_target,
    "de-risk-on-vol": de_risk_on_vol_target,
}
OBLIGED = "obliged"  # "obliged" (mifid) or "obliged:<obligations name or path>"
NAMES: tuple[str, ...] = (*MARKET_MAKERS, OBLIGED, *TRADERS)


def market_policy(name: str) -> Policy | StatefulPolicy:
    """The market policy called `name` (see NAMES). ``obliged`` meets ``mifid``;
    ``obliged:strict`` (any obligations name or path after the colon) meets that rule. It
    is the env form (:func:`obliged_env_action`) carried with MarketMaker-v0's presence
    counters (agents/in_market.py), so it quotes exactly when the env's count needs it."""
    if name in MARKET_MAKERS:
        return MARKET_MAKERS[name]
    if name in TRADERS:
        return TRADERS[name]
    if name == OBLIGED or name.startswith(OBLIGED + ":"):
        return obliged(load_obligations(name.partition(":")[2] or "mifid"))
    raise KeyError(f"unknown agent '{name}' (available: none, {', '.join(NAMES)}, obliged:<obligations>)")


# ----------------------------------------------------------------------------- env form


def orders_to_maker_action(orders: AgentOrders, state: MarketState, params: MarketParams) -> Array:
    """The MarketMaker-v0 action that places `orders` (inverse of MarketMaker.orders):
    offsets in ticks from the half-tick mid, sizes in lots; exact for quotes inside the
    action's range, clipped to it otherwise (offset 0..max_offset_ticks, 0..max_quote_lots)."""
    ap = params.agent
    mid_tick = _mid_ticks(state, params)
    bid_off = jnp.ceil(mid_tick) - 1.0 - orders.bid_tick
    ask_off = orders.ask_tick - jnp.floor(mid_tick) - 1.0
    off = jnp.clip(jnp.stack([bid_off, ask_off]).astype(jnp.float32), 0.0, ap.max_offset_ticks)
    lots = jnp.clip(jnp.stack([orders.bid_size, orders.ask_size]).astype(jnp.float32), 0.0, ap.max_quote_lots)
    size_action = jnp.where(lots > 0, 2.0 * lots / ap.max_quote_lots - 1.0, -1.0)
    return jnp.concatenate([2.0 * off / ap.max_offset_ticks - 1.0, size_action]).astype(jnp.float32)


def obliged_env_action(env_state, env_params, margin: float = 0.02) -> Array:
    """The obliged maker in MarketMaker-v0, reading the env's presence counters: quote this
    step iff skipping it would leave the window's compliant fraction below target + margin
    (exempt steps are out of the count, as in crashgym.obligations)."""
    ob, rule = env_state.ob, env_params.obligations
    window = jnp.maximum(jnp.asarray(rule.window_steps, jnp.int32), 1)
    full = ob.steps_in_window >= window  # the window restarts on this step
    good = jnp.where(full, 0, ob.compliant_in_window).astype(jnp.float32)
    counted = jnp.where(full, 0, ob.steps_in_window - ob.exempt_in_window).astype(jnp.float32)
    due = good / (counted + 1.0) < jnp.clip(rule.presence_target + margin, 0.0, 1.0)
    ms, mp = env_state.market, env_params.market
    return orders_to_maker_action(obliged_quote(ms, mp, rule, due), ms, mp)


def obliged(obligation: ObligationParams, margin: float = 0.02) -> StatefulPolicy:
    """The ``obliged`` maker meeting ``obligation``, as a policy of one market for
    crashgym.rollout.run_batch: :func:`obliged_env_action` with MarketMaker-v0's
    obligation counters carried beside the market."""
    return env_policy_in_market(MarketMaker, lambda mp: EnvParams(market=mp, obligations=obligation),
                                lambda env, state, params: obliged_env_action(state, params, margin))


def env_policy(name: str) -> Callable:
    """`name` as an env policy ``(EnvState, EnvParams) -> action`` for the env it fits
    (makers: MarketMaker-v0, traders: LeveragedTrader-v0). ``obliged`` reads the
    obligation in force from the env's params."""
    if name in MARKET_MAKERS:
        fn = MARKET_MAKERS[name]
        return lambda s, p: orders_to_maker_action(fn(s.market, p.market), s.market, p.market)
    if name == OBLIGED:
        return obliged_env_action
    if name in TRADER_TARGETS:
        target = TRADER_TARGETS[name]
        return lambda s, p: jnp.clip(target(s.market, p.market) / p.market.agent.max_leverage, -1.0, 1.0)[None]
    raise KeyError(f"unknown heuristic '{name}' (available: {', '.join(NAMES)})")


def role(name: str) -> str:
    """The env a heuristic is for: 'MarketMaker-v0' or 'LeveragedTrader-v0'."""
    return "LeveragedTrader-v0" if name in TRADERS else "MarketMaker-v0"
