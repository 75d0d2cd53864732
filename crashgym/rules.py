"""Market rules: circuit breaker (volatility interruption), price band, liquidation throttle.

- Circuit breaker, LULD-like: the reference is a moving average of the mark over
  `halt_window_steps`; a move of more than `halt_move` from it halts trading (market
  orders and liquidation orders) for `halt_steps`. Crypto venues have none: 0 disables.
- Price band: market orders (background, traders, liquidations) walk at most
  `price_band` from the mark (Binance's order price caps).
- Liquidation throttle (the seeds' "buffer period"): at most `throttle_notional` USD of
  liquidation orders per step; the rest waits in the engine's queue. 0 disables.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crashgym.params import RuleParams

Array = jax.Array

_UNLIMITED = float(2**30)


def circuit_breaker(halt_left: Array, mark_ref: Array, mark: Array, rules: RuleParams) -> tuple[Array, Array]:
    """Returns (halt_left, mark_ref) after this step's mark."""
    move = jnp.abs(mark / mark_ref - 1.0)
    trip = (rules.halt_move > 0) & (move > rules.halt_move) & (halt_left == 0)
    halt_left = jnp.where(trip, rules.halt_steps, jnp.maximum(halt_left - 1, 0))
    return halt_left, mark_ref + (mark - mark_ref) / rules.halt_window_steps


def within_band(prices: Array, mark: Array, rules: RuleParams) -> Array:
    return jnp.abs(prices / mark - 1.0) <= rules.price_band


def throttle_lots(mark: Array, rules: RuleParams) -> Array:
    """Lots of liquidation orders allowed per step."""
    return jnp.where(rules.throttle_notional > 0, jnp.floor(rules.throttle_notional / mark), _UNLIMITED)
