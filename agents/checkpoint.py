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

``load_policy(path)`` gives what ``crashgym run --agent PATH`` needs: a
``crashgym.rollout.StatefulPolicy`` of one market that carries the env's bookkeeping (so its
observations are the env's own). The run's scenario supplies the market parameters; the
env's other parameters (obligation, reward scale, episode length) come from the
checkpoint's metadata. :func:`env_and_policy` rebuilds the training env itself
(agents/evaluate.py).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agents.in_market import env_policy_in_market
from crashgym.envs import ENVS
from crashgym.envs.common import EnvParams
from crashgym.obligations import ObligationParams
from crashgym.params import MarketParams
from crashgym.rollout import StatefulPolicy
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


def load_policy(path: str) -> StatefulPolicy:
    """The checkpoint's policy of one market for crashgym.rollout.run_batch / ``crashgym run
    --agent PATH``: a StatefulPolicy whose memory is the env's own bookkeeping (recent
    returns, last step's liquidations and ADL, open interest at reset, the obligation
    window), updated after every market step exactly as the env's ``step`` does, so the
    network sees the observations it was trained on. The run's scenario and shape supply
    the market; the obligation, reward scale and episode length come from the metadata."""
    ckpt = load(path)
    meta = ckpt.metadata
    cls = ENVS[meta["env"]]
    ob = obligation_params(meta)
    act = act_fn(ckpt)

    def env_params(mp: MarketParams) -> EnvParams:
        return EnvParams(market=mp, obligations=ob, max_steps=meta["max_steps"], reward_scale=meta["reward_scale"])

    return env_policy_in_market(cls, env_params, lambda env, state, params: act(env.observe(state, params)),
                                MarketShape(**meta["shape"]))
