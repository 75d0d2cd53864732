"""Mark price and funding (MARKET_MECHANICS section 3, Binance's rules).

Mark = median(P1, P2, last), P1 = index * (1 + funding_rate * time to funding / interval),
P2 = index + moving average of (mid - index). Liquidations trigger on the mark.
Premium index P = [max(0, bid - index) - max(0, index - ask)] / index, averaged over the
interval (top of book stands in for the impact prices); funding
F = P_avg + clamp(I - P_avg, -clamp, +clamp), capped; longs pay shorts F * notional.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crashgym.params import FundingParams

Array = jax.Array


def median3(a: Array, b: Array, c: Array) -> Array:
    return jnp.maximum(jnp.minimum(a, b), jnp.minimum(jnp.maximum(a, b), c))


def mark_price(index: Array, basis_ema: Array, last: Array, funding_rate: Array, step: Array, funding: FundingParams) -> Array:
    to_funding = (funding.interval_steps - step % funding.interval_steps).astype(jnp.float32)
    p1 = index * (1.0 + funding_rate * to_funding / funding.interval_steps)
    p2 = index + basis_ema
    return median3(p1, p2, jnp.where(jnp.isfinite(last), last, p2))


def premium(best_bid: Array, best_ask: Array, index: Array) -> Array:
    """Premium index from the top of book; an empty side contributes nothing."""
    bid = jnp.where(jnp.isfinite(best_bid), best_bid, 0.0)
    ask = jnp.where(jnp.isfinite(best_ask), best_ask, jnp.inf)
    return (jnp.maximum(0.0, bid - index) - jnp.maximum(0.0, index - ask)) / index


def funding_rate(premium_avg: Array, funding: FundingParams) -> Array:
    rate = premium_avg + jnp.clip(funding.interest_per_interval - premium_avg, -funding.clamp, funding.clamp)
    return jnp.clip(rate, -funding.cap, funding.cap)


def is_funding_step(step: Array, funding: FundingParams) -> Array:
    return step % funding.interval_steps == funding.interval_steps - 1
