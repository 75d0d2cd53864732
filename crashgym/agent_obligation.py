"""The agent's quote held to an obligation, as the exchange checks a designated maker's.

One definition serves both places that account for it: ``MarketMaker-v0``'s costs (the
rule the env was made with) and ``crashgym run`` / ``compare``'s ``agent_presence``,
``cost_per_step`` and ``violation_rate/<component>`` (the rule in force in the run's market,
``MarketParams.maker_obligation``), so the two agree step for step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crashgym.makers import meets_obligation
from crashgym.obligations import ObligationParams, ObligationState, obligation_step
from crashgym.state import AgentOrders, MarketState

Array = jax.Array


def shown_quote(old: MarketState, orders: AgentOrders, new: MarketState, tick_size: Array
                ) -> tuple[Array, Array, Array, Array]:
    """(bid price, bid notional, ask price, ask notional) in USD of the quote the agent showed
    this step: its sizes as sent, its ticks as placed (after the post-only clamp); a side
    with no size, or an agent already liquidated, has price nan and notional 0."""
    tick = jnp.asarray(tick_size, jnp.float32)
    live = ~old.agent.liquidated
    bid_on = (orders.bid_size > 0) & live
    ask_on = (orders.ask_size > 0) & live
    bid_price = jnp.where(bid_on, new.agent.bid_tick.astype(jnp.float32) * tick, jnp.nan)
    ask_price = jnp.where(ask_on, new.agent.ask_tick.astype(jnp.float32) * tick, jnp.nan)
    return (bid_price, jnp.where(bid_on, orders.bid_size * bid_price, 0.0),
            ask_price, jnp.where(ask_on, orders.ask_size * ask_price, 0.0))


def agent_obligation_step(ob_state: ObligationState, rule: ObligationParams, old: MarketState, orders: AgentOrders,
                          new: MarketState, tick_size: Array):
    """:func:`crashgym.obligations.obligation_step` on the agent's shown quote, around the mid
    it quoted against (the state before the step), with that state's vol, halt and move for
    the exemptions. Returns obligation_step's ``(ob_state, costs, compliant, exempt,
    presence_so_far, window_left)``."""
    bid_price, bid_notional, ask_price, ask_notional = shown_quote(old, orders, new, tick_size)
    s = old.signals
    return obligation_step(ob_state, rule, bid_price, bid_notional, ask_price, ask_notional, s.mid,
                           jnp.sqrt(jnp.maximum(s.realized_var, 0.0)), s.halt_left > 0, s.mark / s.mark_ref - 1.0)


def agent_meets_presence_rule(rule: ObligationParams, old: MarketState, orders: AgentOrders, new: MarketState,
                              tick_size: Array) -> Array:
    """Whether the agent's shown quote is a compliant two-sided quote under ``rule`` when it is
    active, else under the ``strict`` reference: the test ``mm_presence`` applies to the
    background makers (crashgym.makers.meets_obligation), applied to the agent (bool)."""
    live = ~old.agent.liquidated
    bid_size = jnp.where(live, orders.bid_size, 0)
    ask_size = jnp.where(live, orders.ask_size, 0)
    met = meets_obligation(new.agent.bid_tick[None], bid_size[None], new.agent.ask_tick[None], ask_size[None],
                           old.signals.mid, tick_size, rule)
    return met[0]
