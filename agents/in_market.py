"""An env policy inside ``crashgym run``: the env's bookkeeping carried beside the market.

``crashgym.rollout.run_batch`` steps bare markets. A policy written for the functional envs
(``(EnvState, EnvParams) -> action``: a trained network reading the env's observation, or
the ``obliged`` heuristic reading the env's presence counters) needs what only the env
keeps: the last returns, the last step's liquidations and ADL, open interest at reset, the
obligation window. :func:`env_policy_in_market` wraps it as a
:class:`crashgym.rollout.StatefulPolicy` whose memory is that bookkeeping (an ``EnvState``
without its market), initialised by the env's ``initial_state`` and advanced by its
``finish_step``, so the policy sees exactly what the env would show it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from crashgym.envs.common import CrashEnv, EnvParams, EnvState
from crashgym.params import MarketParams
from crashgym.rollout import StatefulPolicy
from crashgym.state import AgentOrders, MarketState
from crashgym.types import MarketShape

EnvAction = Callable[[CrashEnv, EnvState, EnvParams], jax.Array]


def env_policy_in_market(env_cls: type[CrashEnv], env_params_of: Callable[[MarketParams], EnvParams],
                         action: EnvAction, shape: MarketShape = MarketShape()) -> StatefulPolicy:
    """``action(env, env_state, env_params) -> action`` as a policy of one market.

    env_params_of: the run's market parameters -> the env's parameters (obligation, reward
    scale, episode length). shape: the env's shape; the run's own ladder size and account
    count replace its ``n_levels`` / ``n_accounts`` (read from the state).
    """

    def env_of(ms: MarketState, mp: MarketParams) -> tuple[CrashEnv, EnvParams]:
        n_accounts = ms.accounts.side.shape[-1]
        run_shape = dataclasses.replace(shape, n_levels=ms.book.bid_depth.shape[-1] // 2, n_accounts=n_accounts,
                                        turnover_slots=min(shape.turnover_slots, n_accounts))
        return env_cls(run_shape), env_params_of(mp)

    def init(ms: MarketState, mp: MarketParams) -> EnvState:
        env, params = env_of(ms, mp)
        return env.initial_state(ms, params).replace(market=None)

    def act(memory: EnvState, ms: MarketState, mp: MarketParams) -> AgentOrders:
        env, params = env_of(ms, mp)
        state = memory.replace(market=ms)
        return env.orders(state, jnp.clip(action(env, state, params), -1.0, 1.0), params)  # as env.step clips

    def update(memory: EnvState, ms: MarketState, orders: AgentOrders, new_ms: MarketState, info: dict,
               mp: MarketParams) -> EnvState:
        env, params = env_of(ms, mp)
        _, state, *_ = env.finish_step(memory.replace(market=ms), orders, new_ms, info, params)
        return state.replace(market=None)

    return StatefulPolicy(init=init, act=act, update=update)
