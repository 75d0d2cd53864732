"""Evaluate a policy in a functional env over many held-out seeds, in one jitted batch.

Every policy, heuristic or learned, goes through the same env (reward, costs, obligation
presence), so the numbers compare like for like:

    from agents import evaluate, heuristics
    env, params = crashgym.make("MarketMaker-v0", scenario="calm", obligations="mifid")
    res = evaluate.evaluate(env, params, evaluate.heuristic("fixed-spread"), episodes=64, seed=10_000)
    res.episode["return"].mean()

A policy here is ``(obs (N, D), state (batched EnvState), params) -> actions (N, A)``.
Episodes all start at step 0 and run ``params.max_steps`` steps; after a termination
(the agent liquidated) the episode's later steps are masked out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from crashgym.obligations import COMPONENTS

BatchPolicy = Callable[..., jax.Array]


@dataclasses.dataclass
class EvalResult:
    episode: dict[str, np.ndarray]  # one value per episode
    trace: dict[str, np.ndarray]  # (steps, episodes) per-step series

    def summary(self) -> dict[str, float]:
        return {k: float(np.nanmean(v)) for k, v in self.episode.items()}


def heuristic(name: str) -> BatchPolicy:
    """A heuristic of agents/heuristics.py as a batch policy for its env."""
    return _HEURISTICS.setdefault(name, _heuristic(name))


def _heuristic(name: str) -> BatchPolicy:
    from agents.heuristics import env_policy

    fn = env_policy(name)
    return lambda obs, state, params, _=None: jax.vmap(fn, in_axes=(0, None))(state, params)


_HEURISTICS: dict[str, BatchPolicy] = {}


def network(obs, state, params, policy_params):
    """A trained agents/ppo.py actor as a deterministic batch policy; ``policy_params`` =
    {"params": network params, "norm": obs normalizer} (only the actor is read)."""
    from agents.ppo import act_deterministic

    return act_deterministic(policy_params["params"], policy_params["norm"], obs)


def network_params(params, norm) -> dict:
    """The policy_params of :func:`network`: the actor and log-std, and the normalizer."""
    return {"params": {"actor": params["actor"]}, "norm": norm}


def from_checkpoint(ckpt) -> tuple[BatchPolicy, dict]:
    """(policy, policy_params) of a checkpoint (agents/checkpoint.py)."""
    import jax.tree_util as tu

    return network, network_params(tu.tree_map(jnp.asarray, ckpt.params), tu.tree_map(jnp.asarray, ckpt.norm))


def from_params(params, norm) -> tuple[BatchPolicy, dict]:
    """(policy, policy_params) of one seed of a trained agents/ppo.py network."""
    return network, network_params(params, norm)


_ADVANCE: dict = {}


def _advance(env, policy, episodes: int, chunk: int):
    """The jitted chunk of steps, cached per (env, policy, sizes): env params and policy
    params are arguments, so scenarios, rules and trained networks reuse one compile."""
    key = (id(env), policy, episodes, chunk)
    if key not in _ADVANCE:
        @jax.jit
        def advance(carry, key, env_params, policy_params):
            def body(c, k):
                obs, state, alive = c
                action = policy(obs, state, env_params, policy_params)
                obs, state, reward, term, trunc, info = env.step_batch(jax.random.split(k, episodes), state, action,
                                                                       env_params)
                live = alive.astype(jnp.float32)
                out = {"reward": reward * live, "cost": info["cost"] * live, "costs": info["costs"] * live[:, None],
                       "compliant": info["compliant"] & alive, "equity": info["equity"], "reward_equity": info["reward_equity"],
                       "position": info["position"],
                       "mark": info["market"]["mark_price"], "live": alive}
                return (obs, state, alive & ~term), out
            return jax.lax.scan(body, carry, jax.random.split(key, chunk))

        _ADVANCE[key] = (env, advance)  # keep env alive so its id stays unique
    return _ADVANCE[key][1]


def evaluate(env, env_params, policy: BatchPolicy | tuple[BatchPolicy, dict], episodes: int = 64, seed: int = 10_000,
             chunk: int = 120) -> EvalResult:
    """Run `episodes` episodes (keys from `seed`, disjoint from training keys when seed is
    far from the training seed) and return per-episode results. `policy` is a batch policy
    or a (policy, policy_params) pair (from_params, from_checkpoint).

    Per episode: return (sum of rewards), cost (sum of info["cost"]), presence (fraction of
    live steps with a compliant quote), pnl (USD, change of equity at the mark), pnl_exit (USD,
    change of the reward's equity: at the exit price by default), max_abs_inventory (lots),
    final_inventory (lots), terminated (liquidated), violation_rate/<component> (fraction of
    live steps with that cost > 0); traces: equity, position, compliant, mark, reward."""
    policy, policy_params = policy if isinstance(policy, tuple) else (policy, None)
    steps = int(env_params.max_steps)
    chunk = max(1, min(chunk, steps))
    keys = jax.random.split(jax.random.key(seed), episodes)
    obs, state = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))(keys, env_params)
    equity0 = np.asarray(state.prev_equity)  # flat at reset: mark and exit equity agree
    advance = _advance(env, policy, episodes, chunk)
    carry = (obs, state, jnp.ones(episodes, bool))
    pieces = []
    key = jax.random.key(seed + 1)
    for _ in range(-(-steps // chunk)):
        key, sub = jax.random.split(key)
        carry, out = advance(carry, sub, env_params, policy_params)
        pieces.append(jax.device_get(out))
    tr = {k: np.concatenate([p[k] for p in pieces])[:steps] for k in pieces[0]}
    live = tr["live"].astype(float)
    n_live = np.maximum(live.sum(0), 1.0)
    last = np.maximum(live.sum(0).astype(int) - 1, 0)
    equity_end = tr["equity"][last, np.arange(episodes)]
    episode = {
        "return": tr["reward"].sum(0),
        "cost": tr["cost"].sum(0),
        "presence": tr["compliant"].sum(0) / n_live,
        "pnl": equity_end - equity0,
        "pnl_exit": tr["reward_equity"][last, np.arange(episodes)] - equity0,
        "max_abs_inventory": (np.abs(tr["position"]) * live).max(0),
        "final_inventory": tr["position"][last, np.arange(episodes)].astype(float),
        "terminated": 1.0 - np.asarray(carry[2]).astype(float),
    }
    for i, name in enumerate(COMPONENTS):
        episode[f"violation_rate/{name}"] = (tr["costs"][:, :, i] > 0).sum(0) / n_live
    return EvalResult(episode=episode, trace={k: tr[k] for k in ("equity", "position", "compliant", "mark", "reward")})


def paired_gap(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean of a - b over paired episodes (same seeds) with a 95% normal CI."""
    d = np.asarray(a, float) - np.asarray(b, float)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"gap": float(d.mean()), "ci95_low": float(d.mean() - half), "ci95_high": float(d.mean() + half),
            "n": int(len(d))}
