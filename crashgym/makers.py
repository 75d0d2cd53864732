"""Background market makers: quote with inventory skew, widen under stress, withdraw, return.

What the seeds describe of 10 Oct 2025: makers keep quoting through the first news with
wider spreads ("defence"), then pull their quotes entirely when volatility, one-sided
flow and the long/short skew of open interest keep rising, and come back only after a
spell of calm. Each maker has its own thresholds (spread by `heterogeneity`), capital
and inventory, pays or earns the maker fee, and stops quoting for good once its equity
is gone.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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


def quotes(mode: Array, inventory: Array, mid_tick: Array, realized_vol: Array, tick_rel: Array, makers: MakerParams):
    """(bid_tick, bid_size, ask_tick, ask_size) per maker, absolute ticks, lots.

    mid_tick: the mid in (fractional) ticks. tick_rel: tick size / price.
    """
    defence = mode == DEFENCE
    half = makers.half_spread_ticks + makers.vol_spread_coef * realized_vol / tick_rel
    half = half * jnp.where(defence, makers.defence_widen, 1.0)
    skew = -makers.inventory_skew * jnp.clip(inventory / makers.max_inventory_lots, -1.0, 1.0) * half
    centre = mid_tick + skew
    bid_tick = jnp.floor(centre - half + 0.5).astype(jnp.int32)
    ask_tick = jnp.maximum(jnp.ceil(centre + half - 0.5).astype(jnp.int32), bid_tick + 1)
    size = makers.quote_size_lots * jnp.where(defence, makers.defence_size, 1.0) * (mode != WITHDRAWN)
    size = jnp.floor(size).astype(jnp.int32)
    bid_size = jnp.where(inventory < makers.max_inventory_lots, size, 0)
    ask_size = jnp.where(inventory > -makers.max_inventory_lots, size, 0)
    return bid_tick, bid_size, ask_tick, ask_size
