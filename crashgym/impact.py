"""Metaorder price impact: how far the mid moves when the agent buys Q lots over K steps.

Experiment (Toth et al. 2011 measure impact of metaorders executed over time):
1. run a batch of markets for `warmup_steps` with no agent (independent seeds);
2. from those same states, run K steps twice with the same keys: once with the agent
   buying Q / K lots per step at market, once idle (common random numbers, so the
   background noise cancels in the difference);
3. impact(Q) = mean over seeds of log(mid with the metaorder / mid without) at step K.

The exponent of impact against Q is fitted by `crashgym.stylized.impact_exponent`;
square-root impact is ~0.5. Its prefactor Y in impact = Y sigma sqrt(Q / V) comes from
`crashgym.stylized.sqrt_law_prefactor`, with sigma and V (the traded volume) measured on the
idle runs. This is JAX (it steps the market); the statistics are numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crashgym.market import Market, no_orders
from crashgym.params import MarketParams
from crashgym.types import MarketShape


def metaorder_impact(shape: MarketShape, params: MarketParams, sizes_lots: Sequence[int], *, seeds: int = 64,
                     warmup_steps: int = 120, horizon_steps: int = 30, seed: int = 0) -> dict[str, np.ndarray]:
    """Mean log impact of buy metaorders of each size (lots, spread evenly over horizon_steps).

    Returns {"sizes": (k,) lots actually sent (Q rounded down to a multiple of horizon_steps),
    "impact": (k,) mean log mid change vs the idle twin, "impact_se": (k,) its standard error
    over seeds, "step_sigma": per-step log-return std of the idle runs' mark,
    "volume_per_step": mean taker lots traded per step in the idle runs (every taker:
    background, arbitrage, traders, liquidations)}.
    """
    market = Market(shape)
    key = jax.random.key(seed)
    k_init, k_warm, k_meta = jax.random.split(key, 3)
    sizes = np.asarray(sizes_lots, np.int64)
    if (sizes <= 0).any():
        raise ValueError("metaorder sizes must be positive lots")

    @jax.jit
    def warm(keys):
        states = jax.vmap(market.init, in_axes=(0, None))(keys, params)

        def body(s, k):
            s, _ = market.step_batch(jax.random.split(k, seeds), s, jax.vmap(lambda _: no_orders())(jnp.arange(seeds)),
                                     params)
            return s, None

        states, _ = jax.lax.scan(body, states, jax.random.split(k_warm, warmup_steps))
        return states

    @jax.jit
    def run(states, per_step_lots):
        """Mid after horizon_steps with the agent buying per_step_lots each step (batch), the mark path
        and the taker lots traded per step."""
        keys = jax.random.split(k_meta, horizon_steps)

        def body(s, k):
            orders = jax.vmap(lambda q: no_orders().replace(market_lots=q))(per_step_lots)
            s, info = market.step_batch(jax.random.split(k, seeds), s, orders, params)
            return s, (info["mid_price"], info["mark_price"], info["taker_volume_lots"])

        _, (mid, mark, volume) = jax.lax.scan(body, states, keys)
        return mid[-1], mark, volume

    states = warm(jax.random.split(k_init, seeds))
    base_mid, base_mark, base_volume = run(states, jnp.zeros(seeds, jnp.int32))
    impacts, errors = [], []
    for q in sizes:
        per_step = int(q // horizon_steps)  # Q spread evenly; the size reported is per_step * horizon
        mid, _, _ = run(states, jnp.full(seeds, per_step, jnp.int32))
        d = np.log(np.asarray(mid, float)) - np.log(np.asarray(base_mid, float))
        impacts.append(d.mean())
        errors.append(d.std(ddof=1) / np.sqrt(seeds))
    executed = (sizes // horizon_steps) * horizon_steps
    returns = np.diff(np.log(np.asarray(base_mark, float)), axis=0)
    return {"sizes": executed.astype(float), "impact": np.asarray(impacts), "impact_se": np.asarray(errors),
            "step_sigma": float(returns.std()), "volume_per_step": float(np.asarray(base_volume, float).mean())}
