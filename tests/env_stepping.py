"""The market trajectory of a functional env stepped by hand with run_batch's random keys
(crashgym.rollout.member_keys): what `crashgym run` must reproduce for an env policy."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from crashgym.rollout import AGENT_COST_KEYS, member_keys


def env_trajectory(env, params, action: Callable, *, seed: int, seeds: int, steps: int):
    """({name: (steps, seeds)} of the market's step info, {"costs": (steps, seeds, components),
    "compliant": (steps, seeds)} of the env's own, the last EnvState (batched));
    ``action(env_state, env_params)`` of one env, vmapped."""
    keys = jax.vmap(jax.random.split)(member_keys(seed, np.arange(seeds)))
    markets = jax.vmap(env.market.init, in_axes=(0, None))(keys[:, 0], params.market)
    state = jax.vmap(env.initial_state, in_axes=(0, None))(markets, params)
    act = jax.jit(jax.vmap(action, in_axes=(0, None)))
    stepped, own = [], []
    for _ in range(steps):
        k = jax.vmap(jax.random.fold_in)(keys[:, 1], state.market.step)
        _, state, _, _, _, info = env.step_batch(k, state, act(state, params), params)
        stepped.append(jax.device_get(info["market"]))
        own.append(jax.device_get({"costs": info["costs"], "compliant": info["compliant"]}))
    return ({name: np.stack([s[name] for s in stepped]) for name in stepped[0]},
            {name: np.stack([o[name] for o in own]) for name in own[0]}, state)


def assert_same_market(ran: dict[str, np.ndarray], stepped: dict[str, np.ndarray]) -> None:
    """run_batch's info (the market's, plus the agent's ledger) against the env's market info."""
    assert set(ran) == set(stepped) | {"agent_compliant", *AGENT_COST_KEYS}
    for name in stepped:
        np.testing.assert_allclose(ran[name], stepped[name], rtol=1e-5, atol=1e-6, err_msg=name)
