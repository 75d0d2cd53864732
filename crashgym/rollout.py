"""Run a scenario for many seeds in one vectorized batch and collect the diagnostics.

The episode is advanced in jitted chunks of `chunk` steps (one compile), so a caller can
show progress between chunks. A policy maps (state, params) of ONE market to the
agent's orders; it is vmapped over the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from crashgym.market import Market, no_orders
from crashgym.params import MarketParams
from crashgym.state import AgentOrders, MarketState
from crashgym.types import MarketShape

Policy = Callable[[MarketState, MarketParams], AgentOrders]


def idle_policy(state: MarketState, params: MarketParams) -> AgentOrders:
    return no_orders()


def run_batch(shape: MarketShape, params: MarketParams, seeds: int, *, policy: Policy = idle_policy, seed: int = 0,
              chunk: int = 60, on_chunk: Callable[[int, int], None] | None = None, params_axis: int | None = None
              ) -> tuple[dict[str, np.ndarray], float]:
    """Returns (info as {name: array (steps, seeds)}, seconds per step of the whole batch).

    With params_axis=0, `params` holds one entry per batch member (a sweep over rules).
    """
    market = Market(shape)
    steps = shape.episode_steps
    chunk = max(1, min(chunk, steps))
    key = jax.random.key(seed)
    init = jax.jit(jax.vmap(market.init, in_axes=(0, params_axis)))
    state = init(jax.random.split(key, seeds), params)
    act = jax.vmap(policy, in_axes=(0, params_axis))

    @jax.jit
    def advance(state, key):
        def body(s, k):
            s, info = market.step_batch(jax.random.split(k, seeds), s, act(s, params), params, params_axis)
            return s, info
        return jax.lax.scan(body, state, jax.random.split(key, chunk))

    pieces = []
    done = 0
    elapsed = 0.0
    while done < steps:
        key, sub = jax.random.split(key)
        t0 = time.perf_counter()
        state, info = advance(state, sub)
        info = jax.device_get(info)
        if done > 0:  # the first chunk includes compilation
            elapsed += time.perf_counter() - t0
        pieces.append(info)
        done += chunk
        if on_chunk:
            on_chunk(min(done, steps), steps)
    stacked = {k: np.concatenate([np.asarray(p[k]) for p in pieces], axis=0)[:steps] for k in pieces[0]}
    timed_steps = max(done - chunk, 1)
    return stacked, elapsed / timed_steps if done > chunk else float("nan")
