"""Run a scenario for many seeds in one vectorized batch and collect the diagnostics.

The episode is advanced in jitted chunks of `chunk` steps (one compile), so a caller can
show progress between chunks. A policy maps (state, params) of ONE market to the
agent's orders; it is vmapped over the batch. A policy that needs its own history (a
trained agent's observation: recent returns, the obligation window) is a
:class:`StatefulPolicy`, whose memory is carried beside the market through the episode.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from crashgym import sharding as sharding_mod
from crashgym.agent_obligation import agent_meets_presence_rule, agent_obligation_step
from crashgym.market import Market, no_orders
from crashgym.obligations import COMPONENTS, ObligationState, init_obligation_state
from crashgym.params import MarketParams
from crashgym.state import AgentOrders, MarketState
from crashgym.types import MarketShape

Policy = Callable[[MarketState, MarketParams], AgentOrders]


def idle_policy(state: MarketState, params: MarketParams) -> AgentOrders:
    return no_orders()


class StatefulPolicy(NamedTuple):
    """A policy with a memory of its own, all pure functions of ONE market (vmapped):

    - ``init(state, params) -> memory`` at reset;
    - ``act(memory, state, params) -> AgentOrders`` before each step;
    - ``update(memory, state, orders, new_state, step_info, params) -> memory`` after it
      (``step_info``: the market step's info dict).
    """

    init: Callable[[MarketState, MarketParams], Any]
    act: Callable[[Any, MarketState, MarketParams], AgentOrders]
    update: Callable[[Any, MarketState, AgentOrders, MarketState, dict, MarketParams], Any]


def stateful(policy: Policy | StatefulPolicy) -> StatefulPolicy:
    """A plain policy as a StatefulPolicy with no memory (a stateful one as it is)."""
    if isinstance(policy, StatefulPolicy):
        return policy
    return StatefulPolicy(init=lambda state, params: (), act=lambda memory, state, params: policy(state, params),
                          update=lambda memory, state, orders, new_state, info, params: ())


def member_keys(seed: int, seed_ids: np.ndarray) -> jax.Array:
    """One PRNG key per batch member: fold_in(key(seed), seed_id). A member's whole episode
    depends only on (seed, its seed_id, its params), never on the batch around it, so a member
    gives the same result alone, in a bigger batch, or on another device."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(seed_ids, jnp.uint32))


AGENT_COST_KEYS: tuple[str, ...] = tuple(f"agent_cost_{c}" for c in COMPONENTS)


def agent_ledger(ob: ObligationState, state: MarketState, orders: AgentOrders, new_state: MarketState,
                 params: MarketParams) -> tuple[ObligationState, dict[str, jax.Array]]:
    """The agent's quote held to the obligation in force in the market
    (``params.maker_obligation``), as MarketMaker-v0 holds it (crashgym.agent_obligation),
    its window counted from reset: ``agent_compliant`` (the mm_presence test: the rule in
    force, or strict's spread and size when none is) and ``agent_cost_<component>``, the
    obligation's cost of the step for each of crashgym.obligations.COMPONENTS (all 0 when
    no rule is in force)."""
    tick = params.book.tick_size
    ob, costs, *_ = agent_obligation_step(ob, params.maker_obligation, state, orders, new_state, tick)
    info = {"agent_compliant": agent_meets_presence_rule(params.maker_obligation, state, orders, new_state, tick)}
    return ob, {**info, **{key: costs[i] for i, key in enumerate(AGENT_COST_KEYS)}}


def run_batch(shape: MarketShape, params: MarketParams, seeds: int, *, policy: Policy | StatefulPolicy = idle_policy,
              seed: int = 0,
              chunk: int = 60, on_chunk: Callable[[int, int], None] | None = None, params_axis: int | None = None,
              seed_ids: np.ndarray | None = None, shard: bool = True) -> tuple[dict[str, np.ndarray], float]:
    """Returns (info as {name: array (steps, seeds)}, seconds per step of the whole batch).

    ``seeds`` is the batch size. With params_axis=0, ``params`` holds one entry per batch
    member (a sweep over rules). ``seed_ids`` (default ``arange(seeds)``) names each member's
    random stream (see :func:`member_keys`): members with equal seed_id and params run the
    same episode. With ``shard`` and more than one local device, the batch is split over a
    1-D device mesh (crashgym.sharding); a batch that does not divide evenly is padded with
    copies of its last member, whose results are dropped.
    """
    market = Market(shape)
    steps = shape.episode_steps
    chunk = max(1, min(chunk, steps))
    ids = np.arange(seeds) if seed_ids is None else np.asarray(seed_ids)
    if ids.shape != (seeds,):
        raise ValueError(f"seed_ids must have shape ({seeds},), got {ids.shape}")
    sharding = sharding_mod.batch_sharding() if shard else None
    batch = seeds
    if sharding is not None:
        batch = sharding_mod.padded_size(seeds, len(sharding.mesh.devices.flat))
        ids = np.concatenate([ids, np.repeat(ids[-1:], batch - seeds)])
        if params_axis == 0:
            params = sharding_mod.pad_batch(params, batch)
        params = sharding_mod.shard(params, sharding) if params_axis == 0 else params
    keys = jax.vmap(jax.random.split)(member_keys(seed, ids))  # (batch, 2): reset key, step key
    keys = sharding_mod.shard(keys, sharding)
    init = jax.jit(jax.vmap(market.init, in_axes=(0, params_axis)))
    state = sharding_mod.shard(init(keys[:, 0], params), sharding)
    step_keys = keys[:, 1]
    agent = stateful(policy)
    memory = jax.jit(jax.vmap(agent.init, in_axes=(0, params_axis)))(state, params)
    act = jax.vmap(agent.act, in_axes=(0, 0, params_axis))
    update = jax.vmap(agent.update, in_axes=(0, 0, 0, 0, 0, params_axis))
    ledger = jax.vmap(agent_ledger, in_axes=(0, 0, 0, 0, params_axis))
    ob = sharding_mod.shard(jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (batch,)), init_obligation_state()),
                            sharding)

    @jax.jit
    def advance(carry, step_keys, params):  # params traced, never baked in as constants
        def body(carry, _):
            s, m, ob = carry
            k = jax.vmap(jax.random.fold_in)(step_keys, s.step)  # per member, per step
            orders = act(m, s, params)
            new, info = market.step_batch(sharding_mod.constrain(k, sharding), s, orders, params, params_axis)
            ob, agent_info = ledger(ob, s, orders, new, params)
            carry = (sharding_mod.constrain(new, sharding), update(m, s, orders, new, info, params), ob)
            return carry, {**info, **agent_info}
        return jax.lax.scan(body, carry, None, length=chunk)

    pieces = []
    done = 0
    elapsed = 0.0
    while done < steps:
        t0 = time.perf_counter()
        (state, memory, ob), info = advance((state, memory, ob), step_keys, params)
        info = jax.device_get(info)
        if done > 0:  # the first chunk includes compilation
            elapsed += time.perf_counter() - t0
        pieces.append(info)
        done += chunk
        if on_chunk:
            on_chunk(min(done, steps), steps)
    stacked = {k: np.concatenate([np.asarray(p[k]) for p in pieces], axis=0)[:steps, :seeds] for k in pieces[0]}
    timed_steps = max(done - chunk, 1)
    return stacked, elapsed / timed_steps if done > chunk else float("nan")
