"""Background market makers: quote with inventory skew, widen under stress, withdraw, return.

What the seeds describe of 10 Oct 2025: makers keep quoting through the first news with
wider spreads ("defence"), then pull their quotes entirely when volatility, one-sided
flow and the long/short skew of open interest keep rising, and come back only after a
spell of calm. Each maker has its own thresholds (spread by `heterogeneity`), capital
and inventory, pays or earns the maker fee, and stops quoting for good once its equity
is gone.

Obligations (MARKET_MECHANICS section 4): a maker bound by the market's obligation
(``MarketParams.maker_obligation``; the first ``round(obliged_fraction * n)`` makers) may not
withdraw or defend below the rule: on a step that is not exempt (the rule's ``exempt_when``
conditions: volatility, halt, recent move) it posts the cheapest compliant two-sided quote
(its own quote, tightened to the spread / distance caps and raised to the minimum size; a
maker that would withdraw posts its defence quote made compliant), on both sides even at its
inventory limit. Only a bankrupt maker (equity <= 0) is released. On an exempt step it is free
again, so the obligation lapses exactly when its exemption says so.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crashgym.obligations import ObligationParams, compliant_quote, is_exempt, maker_must_quote, presence_rule, quote_caps, quote_checks
from crashgym.params import MakerParams

Array = jax.Array

QUOTING, DEFENCE, WITHDRAWN = 0, 1, 2


def thresholds(n: int, makers: MakerParams) -> tuple[Array, Array, Array]:
    """Per-maker (defence, withdraw, return) stress thresholds."""
    spread = jnp.linspace(-1.0, 1.0, n) if n > 1 else jnp.zeros(1)
    scale = 1.0 + makers.heterogeneity * spread
    return makers.defence_stress * scale, makers.withdraw_stress * scale, makers.return_stress * scale


def stress(realized_vol: Array, flow_imbalance: Array, oi_skew: Array, risk_off: Array, inventory: Array, makers: MakerParams) -> Array:
    """Stress per maker (dimensionless; see MakerParams)."""
    market = (
        makers.vol_weight * realized_vol / makers.vol_ref
        + makers.flow_weight * jnp.abs(flow_imbalance)
        + makers.skew_weight * jnp.abs(oi_skew)
        + makers.news_weight * risk_off.astype(jnp.float32)
    )
    return market + makers.inventory_weight * jnp.abs(inventory) / makers.max_inventory_lots


def next_mode(mode: Array, calm_steps: Array, level: Array, bankrupt: Array, makers: MakerParams) -> tuple[Array, Array]:
    """Quoting -> defence -> withdrawn, and back after return_lag_steps of calm."""
    defence, withdraw, ret = thresholds(mode.shape[0], makers)
    calm_steps = jnp.where((mode == WITHDRAWN) & (level < ret), calm_steps + 1, 0)
    stays_out = (mode == WITHDRAWN) & (calm_steps < makers.return_lag_steps)
    active = jnp.where(level >= defence, DEFENCE, QUOTING)
    # Strong int32: the Python-int branches would make the state weak-typed and retrace jit(step).
    mode = jnp.where((level >= withdraw) | stays_out | bankrupt, WITHDRAWN, active).astype(jnp.int32)
    return mode, jnp.where(mode == WITHDRAWN, calm_steps, 0).astype(jnp.int32)


def obligation_status(bankrupt: Array, realized_vol: Array, halted: Array, recent_move: Array, makers: MakerParams,
                      obligation: ObligationParams) -> tuple[Array, Array]:
    """(must_quote bool (n,), exempt bool ()) for this step.

    must_quote: bound (first round(obliged_fraction * n) makers), the rule active with a
    presence target, not exempt, and not bankrupt. Exemption inputs as for the agent's
    obligation (crashgym.obligations.is_exempt): per-step realized vol of the mark, whether
    trading is halted, and recent_move = mark / circuit-breaker reference - 1.
    """
    n = bankrupt.shape[0]
    bound = jnp.arange(n) < jnp.round(makers.obliged_fraction * n)
    exempt = is_exempt(obligation, realized_vol, halted, recent_move)
    must = bound & maker_must_quote(obligation, exempt) & ~bankrupt
    return must, exempt


def quotes(mode: Array, inventory: Array, mid_tick: Array, realized_vol: Array, tick_rel: Array, makers: MakerParams,
           must_quote: Array | None = None, obligation: ObligationParams | None = None, tick_size: Array | None = None,
           risk_off: Array | None = None):
    """(bid_tick, bid_size, ask_tick, ask_size) per maker, absolute ticks, lots.

    mid_tick: the mid in (fractional) ticks. tick_rel: tick size / price.
    must_quote (bool (n,), from :func:`obligation_status`), obligation and tick_size (USD):
    makers that must quote post the cheapest compliant quote (module docstring).
    risk_off (bool, optional): the news is out; every maker's half-spread is widened by
    `news_widen` (the defence multiplier applies on top).
    """
    defence = mode == DEFENCE
    out = mode == WITHDRAWN
    base_half = makers.half_spread_ticks + makers.vol_spread_coef * realized_vol / tick_rel
    if risk_off is not None:
        base_half = base_half * jnp.where(risk_off, makers.news_widen, 1.0)
    half = base_half * jnp.where(defence, makers.defence_widen, 1.0)
    size = makers.quote_size_lots * jnp.where(defence, makers.defence_size, 1.0) * (~out)
    skew = -makers.inventory_skew * jnp.clip(inventory / makers.max_inventory_lots, -1.0, 1.0) * half
    bid_open = inventory < makers.max_inventory_lots
    ask_open = inventory > -makers.max_inventory_lots
    if must_quote is not None:
        if obligation is None or tick_size is None:
            raise ValueError("quotes: must_quote needs obligation and tick_size")
        tick = jnp.asarray(tick_size, jnp.float32)
        mid = mid_tick * tick
        # A maker that would withdraw starts from its defence quote with no size of its own.
        base_h = base_half * jnp.where(defence | out, makers.defence_widen, 1.0)
        h_c, size_c = compliant_quote(obligation, mid, tick, base_h, jnp.where(out, 0.0, size))
        # The inventory skew moves the quote: keep each side within the distance rule, and size
        # the (lower) skewed bid so it still carries the minimum notional.
        _, dist_cap = quote_caps(obligation, mid, tick)
        max_skew = jnp.maximum(dist_cap - h_c, 0.0)
        skew_c = jnp.clip(-makers.inventory_skew * jnp.clip(inventory / makers.max_inventory_lots, -1.0, 1.0) * h_c,
                          -max_skew, max_skew)
        low_bid = jnp.maximum((mid_tick + skew_c - h_c - 0.5) * tick, tick)
        size_c = jnp.maximum(jnp.maximum(size_c, jnp.ceil(obligation.min_size_notional / low_bid)), 1.0)
        half = jnp.where(must_quote, h_c, half)
        size = jnp.where(must_quote, size_c, size)
        skew = jnp.where(must_quote, skew_c, skew)
        bid_open = bid_open | must_quote
        ask_open = ask_open | must_quote
    centre = mid_tick + skew
    bid_tick = jnp.floor(centre - half + 0.5).astype(jnp.int32)
    ask_tick = jnp.maximum(jnp.ceil(centre + half - 0.5).astype(jnp.int32), bid_tick + 1)
    size = jnp.floor(size).astype(jnp.int32)
    bid_size = jnp.where(bid_open, size, 0)
    ask_size = jnp.where(ask_open, size, 0)
    return bid_tick, bid_size, ask_tick, ask_size


def meets_obligation(bid_tick: Array, bid_size: Array, ask_tick: Array, ask_size: Array, mid: Array, tick_size: Array,
                     obligation: ObligationParams) -> Array:
    """Whether each maker's posted quote (ticks, lots) is a compliant two-sided quote around
    ``mid`` under the obligation in force, or under the ``strict`` reference rule
    (crashgym.obligations.PRESENCE_REFERENCE) when none is: the mm_presence test (bool (n,))."""
    rule = presence_rule(obligation)
    tick = jnp.asarray(tick_size, jnp.float32)
    bid = bid_tick.astype(jnp.float32) * tick
    ask = ask_tick.astype(jnp.float32) * tick
    bid_on, ask_on = bid_size > 0, ask_size > 0
    checks = quote_checks(rule, jnp.where(bid_on, bid, jnp.nan), bid_size * bid, jnp.where(ask_on, ask, jnp.nan),
                          ask_size * ask, mid)
    return checks["two_sided"] & checks["spread"] & checks["size"] & checks["distance"]
