"""Checkpoints of trained policies: one ``.npz`` file, exact round trip.

Layout (all arrays stored as they are, float32, so save -> load is bit-exact):

* ``params/actor/<i>/w``, ``params/actor/<i>/b``, ``params/critic/...``, ``params/log_std``:
  the network of agents/ppo.py (SB3 PPO's MlpPolicy is converted into the same layout:
  same tanh MLP, so one loader serves every algorithm);
* ``norm/mean``, ``norm/var``, ``norm/count``: the observation normalizer;
* ``metadata``: a JSON string: ``format``, ``version``, ``env`` (id), ``scenario``,
  ``obligations`` (name) and ``obligation_params`` (every field, so a rule given as a path
  rebuilds exactly), ``algo``, ``shape`` (MarketShape fields), ``market`` (overrides),
  ``reward_scale``, ``max_steps``, ``obs_names``, ``action_names``, ``seed``,
  ``env_steps``, ``config``.

``load_policy(path)`` gives what ``crashgym run --agent PATH`` needs: a policy
``(MarketState, MarketParams) -> AgentOrders`` of one market. The run's scenario supplies
the market parameters; the env's other parameters (obligation, reward scale, episode
length) come from the checkpoint's metadata. A market policy sees only the market state,
so the parts of the env's observation that live in the env's own bookkeeping are
approximated there (see :func:`env_state_from_market`); :func:`env_and_policy` rebuilds
the training env itself for an exact evaluation (agents/evaluate.py).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from crashgym.envs import ENVS
from crashgym.envs.common import N_RETURNS, EnvParams, EnvState, equity, open_interest
from crashgym.obligations import ObligationParams, ObligationState
from crashgym.params import MarketParams
from crashgym.state import AgentOrders, MarketState
from crashgym.types import MarketShape

FORMAT = "crashgym-checkpoint"
VERSION = 1


class Checkpoint(NamedTuple):
    params: dict[str, Any]  # {"actor": [{"w", "b"}, ...], "critic": [...], "log_std"}
    norm: dict[str, Any]  # {"mean", "var", "count"}
    metadata: dict[str, Any]


def _flatten(prefix: str, tree: Any, out: dict[str, np.ndarray]) -> None:
    if isinstance(tree, dict):
        for k, v in tree.items():
            _flatten(f"{prefix}/{k}", v, out)
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            _flatten(f"{prefix}/{i}", v, out)
    else:
        out[prefix] = np.asarray(tree)


def _unflatten(flat: dict[str, np.ndarray], prefix: str) -> Any:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        if not key.startswith(prefix + "/"):
            continue
        parts = key[len(prefix) + 1:].split("/")
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value

    def listify(node: Any) -> Any:
        if isinstance(node, dict):
            if node and all(k.isdigit() for k in node):
                return [listify(node[str(i)]) for i in range(len(node))]
            return {k: listify(v) for k, v in node.items()}
        return node

    return listify(tree)


def save(path: str, params: dict[str, Any], norm: dict[str, Any], metadata: dict[str, Any]) -> str:
    """Write a checkpoint (``.npz`` is appended if missing). Returns the path written."""
    flat: dict[str, np.ndarray] = {}
    _flatten("params", jax.device_get(params), flat)
    _flatten("norm", jax.device_get(norm), flat)
    meta = {"format": FORMAT, "version": VERSION, **metadata}
    flat["metadata"] = np.asarray(json.dumps(meta, sort_keys=True))
    if not path.endswith(".npz"):
        path += ".npz"
    with open(path, "wb") as fh:
        np.savez(fh, **flat)
    return path


def load(path: str) -> Checkpoint:
    """Read a checkpoint; a file that is not one raises ValueError naming the path."""
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a crashgym checkpoint ({e})") from None
    if "metadata" not in flat:
        raise ValueError(f"{path}: not a crashgym checkpoint (no 'metadata' entry)")
    meta = json.loads(str(flat.pop("metadata")))
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{path}: unsupported checkpoint format {meta.get('format')!r} v{meta.get('version')!r}")
    for name in ("env", "algo", "scenario", "obligation_params", "shape", "max_steps", "reward_scale"):
        if name not in meta:
            raise ValueError(f"{path}: checkpoint metadata lacks {name!r}")
    return Checkpoint(params=_unflatten(flat, "params"), norm=_unflatten(flat, "norm"), metadata=meta)


def metadata_for(env_id: str, scenario: str, obligations: str, obligation_params: ObligationParams, algo: str,
                 shape: MarketShape, env_params: EnvParams, env, *, market: dict | None = None, seed: int = 0,
                 env_steps: int = 0, config: dict | None = None) -> dict[str, Any]:
    """The metadata a checkpoint needs to rebuild its env (see the module docstring)."""
    return {
        "env": env_id, "scenario": scenario, "obligations": obligations,
        "obligation_params": {f.name: np.asarray(getattr(obligation_params, f.name)).item()
                              for f in dataclasses.fields(ObligationParams)},
        "algo": algo, "shape": dataclasses.asdict(shape), "market": market or {},
        "reward_scale": float(env_params.reward_scale), "max_steps": int(env_params.max_steps),
        "obs_names": list(env.OBS_NAMES), "action_names": list(env.ACTION_NAMES),
        "seed": seed, "env_steps": env_steps, "config": config or {},
    }


def obligation_params(meta: dict[str, Any]) -> ObligationParams:
    return ObligationParams(**meta["obligation_params"])


def env_and_params(ckpt: Checkpoint, scenario: str | None = None):
    """The functional env and EnvParams the checkpoint was trained in (``scenario``
    replaces the training scenario, e.g. train on calm, evaluate on oct10; the shape and
    everything else stay as trained)."""
    import crashgym

    meta = ckpt.metadata
    return crashgym.make(meta["env"], scenario=scenario or meta["scenario"], obligations=obligation_params(meta),
                         shape=MarketShape(**meta["shape"]), market=meta["market"] or None,
                         reward_scale=meta["reward_scale"], max_episode_steps=meta["max_steps"])


def act_fn(ckpt: Checkpoint):
    """``obs (..., D) -> action (..., A)``: the deterministic (mean) action, clipped."""
    from agents.ppo import act_deterministic

    params = jax.tree_util.tree_map(jnp.asarray, ckpt.params)
    norm = jax.tree_util.tree_map(jnp.asarray, ckpt.norm)
    return lambda obs: act_deterministic(params, norm, obs)


def env_state_from_market(ms: MarketState, params: EnvParams) -> EnvState:
    """An EnvState around a bare MarketState (for ``crashgym run``, which steps the market
    without the env's bookkeeping). Approximate where the env keeps history the market
    does not: the last returns and the last step's liquidation / ADL notionals read 0,
    open interest at reset is taken as today's (the feature reads 1), and the obligation
    window follows the step counter with a full presence so far."""
    window = jnp.maximum(jnp.asarray(params.obligations.window_steps, jnp.int32), 1)
    k = (ms.step % window).astype(jnp.int32)
    long_, short = open_interest(ms)
    z = jnp.float32(0.0)
    return EnvState(
        market=ms, time=ms.step.astype(jnp.int32), prev_equity=equity(ms), returns=jnp.zeros(N_RETURNS, jnp.float32),
        oi0=long_ + short, liq_notional=z, adl_notional=z, adl_lots=jnp.int32(0),
        ob=ObligationState(steps_in_window=k, compliant_in_window=k, exempt_in_window=jnp.int32(0)),
        presence=jnp.float32(1.0), window_left=((window - k) / window).astype(jnp.float32))


def load_policy(path: str):
    """A ``(MarketState, MarketParams) -> AgentOrders`` policy of one market from a
    checkpoint, for crashgym.rollout.run_batch / ``crashgym run --agent PATH``."""
    ckpt = load(path)
    meta = ckpt.metadata
    cls = ENVS[meta["env"]]
    ob = obligation_params(meta)
    act = act_fn(ckpt)
    trained = MarketShape(**meta["shape"])

    def policy(ms: MarketState, mp: MarketParams) -> AgentOrders:
        # The env object only holds the shape; the ladder size comes from the run's state.
        n_levels = ms.book.bid_depth.shape[-1] // 2
        n_accounts = ms.accounts.side.shape[-1]
        shape = dataclasses.replace(trained, n_levels=n_levels, n_accounts=n_accounts,
                                    turnover_slots=min(trained.turnover_slots, n_accounts))
        env = cls(shape)
        params = EnvParams(market=mp, obligations=ob, max_steps=meta["max_steps"], reward_scale=meta["reward_scale"])
        state = env_state_from_market(ms, params)
        return env.orders(state, act(env.observe(state, params)), params)

    policy.metadata = meta  # type: ignore[attr-defined]
    return policy
