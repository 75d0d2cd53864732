"""Gymnasium adapters: a single env, a native JAX vector env, and registration.

    env = gymnasium.make("crashgym/MarketMaker-v0", scenario="calm")
    envs = gymnasium.make_vec("crashgym/MarketMaker-v0", num_envs=1024, scenario="oct10")

Both take ``scenario=``, ``obligations=``, ``rules=``, ``max_episode_steps=`` (and the other
keyword arguments of :func:`crashgym.make`, e.g. ``shape={"n_accounts": 128}``), or a ready
functional env with ``env=`` and ``params=``.

Numpy in, numpy out. Each step is ONE jitted call (market step, reward, observation and,
for the vector env, the same-step autoreset fused); the PRNG key lives on the device and
is split inside that call. Scalars of ``info`` travel back packed in one float32 array.
The state stays on the device and is donated to each step (updated in place; the single
env's is packed into one buffer per dtype); ``env.state`` returns a copy, and assigning
``env.state`` copies what it is given.

Actions: a NaN / inf or a wrong shape raises ValueError naming the problem (and, for the
vector env, the env index); finite values outside [-1, 1] are clipped to the box.

Info (single env): ``cost`` (float, the sum of the obligation costs), ``costs`` (array, one
entry per crashgym.obligations.COMPONENTS), ``compliant``, ``equity`` (USD), ``position``
(lots), ``adl`` (agent lots closed by ADL this step) and ``market`` (a dict: the core's
per-step diagnostics, mark_price, best_bid, depth_2pct, insurance_fund, adl_count, ...).
Reset's info is empty.

Vector env (Gymnasium 1.x): ``metadata["autoreset_mode"] == AutoresetMode.SAME_STEP``;
when an episode ends, the returned observation is the first of the next episode and
``info["final_obs"]`` (object array, the last observation where ``info["_final_obs"]``)
and ``info["final_info"]`` (the step's info, masks ``_key`` set where the episode ended)
carry the ending. Info values are numpy arrays with a leading num_envs axis, each with
its ``_key`` mask (all True: every env reports every key every step).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, NamedTuple

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from crashgym.envs.common import CrashEnv, EnvParams, EnvState
from crashgym.make import make as make_functional
from crashgym.packing import TreePacker

__all__ = ["CrashGymEnv", "CrashGymVectorEnv", "ENV_IDS", "register_envs"]

ENV_IDS = ("crashgym/MarketMaker-v0", "crashgym/LeveragedTrader-v0")
RENDER_MODES = ["rgb_array", "ansi"]
HISTORY = 120  # steps of price history kept for rendering


def _build(env_id: str, env: CrashEnv | None, params: EnvParams | None, kwargs: dict[str, Any]
           ) -> tuple[CrashEnv, EnvParams]:
    if env is not None:
        if kwargs:
            raise ValueError(f"pass either env= (with params=) or make() arguments, not both: {sorted(kwargs)}")
        return env, _on_device(env.default_params if params is None else params)
    built, default = make_functional(env_id, **kwargs)
    return built, _on_device(default if params is None else params)


def _on_device(params: EnvParams) -> EnvParams:
    """Params as device arrays once, so a step does not convert ~100 Python numbers per call."""
    return jax.device_put(params)


def _to_gym_box(box) -> gymnasium.spaces.Box:
    return gymnasium.spaces.Box(low=np.float32(box.low), high=np.float32(box.high), shape=box.shape, dtype=np.float32)


class _InfoPacker:
    """Flattens the scalar leaves of (reward, terminated, truncated, info) into one float32
    array inside jit, and rebuilds the dict on the host with the original dtypes."""

    def __init__(self, example: Any, batch: int | None):
        leaves, self.treedef = jax.tree_util.tree_flatten(example)
        lead = 0 if batch is None else 1
        self.shapes = [tuple(leaf.shape[lead:]) for leaf in leaves]
        self.dtypes = [np.dtype(leaf.dtype) for leaf in leaves]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.offsets = np.cumsum([0] + self.sizes)
        self.batch = batch

    def pack(self, tree: Any) -> jax.Array:
        leaves = jax.tree_util.tree_leaves(tree)
        if self.batch is None:
            return jnp.concatenate([jnp.ravel(leaf).astype(jnp.float32) for leaf in leaves])
        return jnp.concatenate([leaf.reshape(leaf.shape[0], -1).astype(jnp.float32) for leaf in leaves], axis=1)

    def unpack(self, flat: np.ndarray) -> Any:
        """Single env: scalars as Python bool / int / float, arrays as numpy arrays.
        Batched: numpy arrays with a leading batch axis, in the original dtypes."""
        out = []
        if self.batch is None:
            values = flat.tolist()
            for off, size, shape, dtype in zip(self.offsets, self.sizes, self.shapes, self.dtypes):
                if shape:
                    out.append(np.asarray(flat[off:off + size], dtype).reshape(shape))
                elif dtype == np.bool_:
                    out.append(bool(values[off]))
                elif dtype.kind in "iu":
                    out.append(int(values[off]))
                else:
                    out.append(values[off])
        else:
            for off, size, shape, dtype in zip(self.offsets, self.sizes, self.shapes, self.dtypes):
                out.append(flat[:, off:off + size].reshape((flat.shape[0],) + shape).astype(dtype))
        return jax.tree_util.tree_unflatten(self.treedef, out)


def _check_action(action: Any, shape: tuple[int, ...], batched: bool) -> np.ndarray:
    try:
        a = np.asarray(action, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"action must be an array of floats with shape {shape}, got {action!r}") from e
    if a.shape != shape:
        raise ValueError(f"action has shape {a.shape}, expected {shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        what = "NaN" if np.isnan(a[bad]).any() else "inf"
        if batched:
            i = int(np.argwhere(bad)[0][0])
            raise ValueError(f"action for env {i} contains {what}: {a[i].tolist()}")
        raise ValueError(f"action contains {what}: {a.tolist()}")
    return np.clip(a, -1.0, 1.0)


class _History:
    """A short price / event history for rendering."""

    def __init__(self) -> None:
        self.mid: deque[float] = deque(maxlen=HISTORY)
        self.liq: deque[float] = deque(maxlen=HISTORY)
        self.adl: deque[float] = deque(maxlen=HISTORY)

    def clear(self) -> None:
        self.mid.clear()
        self.liq.clear()
        self.adl.clear()

    def add(self, market: dict[str, Any]) -> None:
        self.mid.append(float(market.get("mid_price", market.get("mark_price", np.nan))))
        self.liq.append(float(market.get("liquidated_notional", 0.0)))
        self.adl.append(float(market.get("adl_notional", 0.0)))


# Jitted functions are shared by every adapter with the same env class, shape, params
# structure (and num_envs): a second env of the same kind does not compile again.
_FNS: dict[tuple, "_Fns"] = {}


class _Fns(NamedTuple):
    """The jitted calls of one adapter kind. Params (151 scalars), and the single env's
    state (72 leaves), cross the jit boundary packed (`TreePacker`: one buffer per dtype):
    each leaf costs a few microseconds per call on its own, more than half of a
    single-env step before packing."""

    reset: Callable
    step: Callable
    info: _InfoPacker
    pack_params: Callable
    pack_state: Callable
    unpack_state: Callable


def _signature(tree: Any) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return treedef, tuple((leaf.shape, str(leaf.dtype)) for leaf in leaves)


def _single_fns(fenv: CrashEnv, params: EnvParams) -> _Fns:
    cache_key = ("single", type(fenv), fenv.shape, _signature(params))
    if cache_key in _FNS:
        return _FNS[cache_key]
    key0 = jax.random.key(0)
    st_shape = jax.eval_shape(fenv.reset, key0, params)[1]
    act = jax.ShapeDtypeStruct(fenv.action_space(params).shape, jnp.float32)
    out = jax.eval_shape(lambda k, s, a, p: fenv.step(k, s, a, p)[2:], key0, st_shape, act, params)
    info, state_p, params_p = _InfoPacker(tuple(out), None), TreePacker(st_shape), TreePacker(params)

    def reset_fn(key, params_bufs):
        key, sub = jax.random.split(key)
        obs, state = fenv.reset(sub, params_p.unpack(params_bufs))
        return key, state_p.pack(state), obs

    def step_fn(key, state_bufs, action, params_bufs):
        key, sub = jax.random.split(key)
        obs, state, reward, term, trunc, out = fenv.step(sub, state_p.unpack(state_bufs), action,
                                                         params_p.unpack(params_bufs))
        return key, state_p.pack(state), obs, info.pack((reward, term, trunc, out))

    _FNS[cache_key] = _Fns(jax.jit(reset_fn), jax.jit(step_fn, donate_argnums=(0, 1)), info, jax.jit(params_p.pack),
                           jax.jit(state_p.pack), jax.jit(state_p.unpack))
    return _FNS[cache_key]


def _vector_fns(fenv: CrashEnv, params: EnvParams, num_envs: int) -> _Fns:
    """Per-env keys evolve exactly as the single env's do (split, use the second half), so
    env i of a vector env seeded s follows the single env seeded s + i, autoresets included."""
    cache_key = ("vector", type(fenv), fenv.shape, _signature(params), num_envs)
    if cache_key in _FNS:
        return _FNS[cache_key]
    split2 = jax.vmap(jax.random.split)
    reset_batch = jax.vmap(fenv.reset, in_axes=(0, None))
    keys0 = jax.vmap(jax.random.key)(jnp.arange(num_envs))
    st_shape = jax.eval_shape(reset_batch, keys0, params)[1]
    act = jax.ShapeDtypeStruct((num_envs,) + fenv.action_space(params).shape, jnp.float32)
    out = jax.eval_shape(lambda k, s, a, p: fenv.step_batch(k, s, a, p)[2:], keys0, st_shape, act, params)
    # The batched state stays a pytree: its per-leaf call cost is small beside a batched
    # step, and packing it (a copy of every leaf) measured 2-3x slower at 1024 envs.
    info, params_p = _InfoPacker(tuple(out), num_envs), TreePacker(params)

    def reset_fn(keys, params_bufs):
        ks = split2(keys)
        obs, state = reset_batch(ks[:, 1], params_p.unpack(params_bufs))
        return ks[:, 0], state, obs

    def step_fn(keys, state, action, params_bufs):
        params = params_p.unpack(params_bufs)
        ks = split2(keys)
        keys = ks[:, 0]
        obs, state1, reward, term, trunc, out = fenv.step_batch(ks[:, 1], state, action, params)
        done = term | trunc

        def reset_done(_, carry):
            keys, obs, state = carry
            kr = split2(keys)
            obs_r, state_r = reset_batch(kr[:, 1], params)
            pick = lambda a, b: _select(done, a, b)  # noqa: E731
            return pick(kr[:, 0], keys), pick(obs_r, obs), jax.tree_util.tree_map(pick, state_r, state)

        # A loop of zero or one trip rather than a cond: with the state donated, the loop
        # updates it in place, where a cond returned a copy of the whole batch's state
        # (measured 2x slower per step at 1024 envs).
        keys, obs_next, state_next = jax.lax.fori_loop(0, jnp.any(done).astype(jnp.int32), reset_done,
                                                       (keys, obs, state1))
        return keys, state_next, obs_next, obs, info.pack((reward, term, trunc, out))

    # The adapter owns its keys and state: donated, so XLA writes the next state over them.
    copy = jax.jit(lambda tree: jax.tree_util.tree_map(jnp.copy, tree))  # what the user gets / gives
    _FNS[cache_key] = _Fns(jax.jit(reset_fn), jax.jit(step_fn, donate_argnums=(0, 1)), info, jax.jit(params_p.pack),
                           copy, copy)
    return _FNS[cache_key]


def _select(done: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.where(done.reshape(done.shape + (1,) * (a.ndim - 1)), a, b)


class _PackedAdapter:
    """What both adapters share: the params packed once per `set_params`, the state kept on
    the device between steps (packed for the single env) and donated to each step, so
    `state` hands out a copy and assigning it stores a copy."""

    env: CrashEnv
    _state_carry: Any = None  # the single env: packed buffers; the vector env: the EnvState

    def _fns_for(self, params: EnvParams) -> _Fns:
        raise NotImplementedError

    def _bind(self, params: EnvParams) -> None:
        self.params = _on_device(params)
        self._fns = self._fns_for(self.params)
        self._params_bufs = self._fns.pack_params(self.params)

    @property
    def state(self) -> EnvState | None:
        """The current EnvState (batched for the vector env), or None before reset()."""
        return None if self._state_carry is None else self._fns.unpack_state(self._state_carry)

    @state.setter
    def state(self, state: EnvState) -> None:
        self._state_carry = self._fns.pack_state(state)

    def set_params(self, params: EnvParams) -> None:
        """Swap the (traced) parameters; no recompilation when their structure is unchanged."""
        self._bind(params)


class CrashGymEnv(_PackedAdapter, gymnasium.Env):
    """A crashgym functional env as a Gymnasium env (numpy in and out, one jitted call per step)."""

    metadata = {"render_modes": RENDER_MODES, "render_fps": 10}

    def __init__(self, env_id: str = "MarketMaker-v0", *, render_mode: str | None = None, env: CrashEnv | None = None,
                 params: EnvParams | None = None, **kwargs: Any):
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES} or None, got {render_mode!r}")
        self.env, params = _build(env_id, env, params, kwargs)
        self._bind(params)
        self.env_id = self.env.name
        self.render_mode = render_mode
        self.action_space = _to_gym_box(self.env.action_space(self.params))
        self.observation_space = _to_gym_box(self.env.observation_space(self.params))
        self._action_shape = self.action_space.shape
        self._key: jax.Array | None = None
        self._history = _History()
        self._last_info: dict[str, Any] = {}

    # -------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._key = jax.random.key(int(seed))
        elif self._key is None:
            self._key = jax.random.key(int(self.np_random.integers(0, 2**31 - 1)))
        self._key, self._state_carry, obs = self._fns.reset(self._key, self._params_bufs)
        self._history.clear()
        self._last_info = {}
        return np.array(obs), {}

    def step(self, action: Any):
        if self._state_carry is None:
            raise RuntimeError("call reset() before step()")
        a = _check_action(action, self._action_shape, batched=False)
        self._key, self._state_carry, obs, packed = self._fns.step(self._key, self._state_carry, a, self._params_bufs)
        obs, packed = jax.device_get((obs, packed))
        obs = np.array(obs)  # writable
        reward, term, trunc, info = self._fns.info.unpack(packed)
        if self.render_mode is not None:
            self._history.add(info["market"])
            self._last_info = info
        return obs, reward, term, trunc, info

    def render(self):
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'ansi'")
            return None
        from crashgym import render as render_mod

        if self._state_carry is None:
            raise RuntimeError("call reset() before render()")
        state = jax.device_get(self.state)
        if self.render_mode == "ansi":
            return render_mod.ansi(self.env, state, self.params, self._last_info)
        return render_mod.rgb_array(self.env, state, self.params, self._history, self._last_info)

    def _fns_for(self, params: EnvParams) -> _Fns:
        return _single_fns(self.env, params)


class CrashGymVectorEnv(_PackedAdapter, VectorEnv):
    """``num_envs`` crashgym envs stepped by one jit(step_batch) call with same-step autoreset."""

    metadata = {"render_modes": RENDER_MODES, "render_fps": 10, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, env_id: str = "MarketMaker-v0", num_envs: int = 1, *, render_mode: str | None = None,
                 env: CrashEnv | None = None, params: EnvParams | None = None, **kwargs: Any):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if render_mode is not None and render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode must be one of {RENDER_MODES} or None, got {render_mode!r}")
        self.env, params = _build(env_id, env, params, kwargs)
        self.num_envs = num_envs
        self._bind(params)
        self.env_id = self.env.name
        self.render_mode = render_mode
        self.single_action_space = _to_gym_box(self.env.action_space(self.params))
        self.single_observation_space = _to_gym_box(self.env.observation_space(self.params))
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self._action_shape = (num_envs,) + self.single_action_space.shape
        self._key: jax.Array | None = None
        self._all = np.ones(num_envs, bool)
        self._history = _History()
        self._last_info: dict[str, Any] = {}

    def reset(self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None):
        """Reset every env. ``seed``: an int s (env i gets seed s + i, as Gymnasium's
        SyncVectorEnv does, and follows the single env seeded s + i), a list of ints (one
        per env), or None (continue each env's key stream; random seeds the first time)."""
        if seed is not None:
            seeds = [int(seed) + i for i in range(self.num_envs)] if np.isscalar(seed) else [int(x) for x in seed]
            if any(not 0 <= x < 2**32 for x in seeds):
                raise ValueError(f"seeds must be in [0, 2**32), got {seeds[:4]}...")
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed list has {len(seeds)} entries, expected num_envs={self.num_envs}")
            self._key = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
        elif self._key is None:
            base = int(np.random.default_rng().integers(0, 2**31 - 1 - self.num_envs))
            self._key = jax.vmap(jax.random.key)(jnp.arange(base, base + self.num_envs, dtype=jnp.uint32))
        self._key, self._state_carry, obs = self._fns.reset(self._key, self._params_bufs)
        self._history.clear()
        return np.array(obs), {}

    def _masked(self, info: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in info.items():
            out[k] = self._masked(v, mask) if isinstance(v, dict) else v
            out["_" + k] = mask
        return out

    def step(self, actions: Any):
        if self._state_carry is None:
            raise RuntimeError("call reset() before step()")
        a = _check_action(actions, self._action_shape, batched=True)
        self._key, self._state_carry, obs, final_obs, packed = self._fns.step(self._key, self._state_carry, a,
                                                                             self._params_bufs)
        obs, packed = jax.device_get((obs, packed))
        obs = np.array(obs)  # writable
        reward, term, trunc, raw = self._fns.info.unpack(packed)
        info = self._masked(raw, self._all)
        done = term | trunc
        if done.any():
            last = np.asarray(final_obs)
            fo = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                fo[i] = last[i]
            info["final_obs"] = fo
            info["_final_obs"] = done
            info["final_info"] = self._masked(raw, done)
            info["_final_info"] = done
        if self.render_mode is not None:
            self._history.add({k: v[0] for k, v in raw["market"].items()})
            self._last_info = {k: (v[0] if not isinstance(v, dict) else {kk: vv[0] for kk, vv in v.items()})
                               for k, v in raw.items()}
        return obs, reward.astype(np.float32), term, trunc, info

    def render(self):
        """The first env's frame (rgb_array) or text (ansi)."""
        if self.render_mode is None or self._state_carry is None:
            return None
        from crashgym import render as render_mod

        state = jax.device_get(jax.tree_util.tree_map(lambda x: x[0], self.state))
        if self.render_mode == "ansi":
            return render_mod.ansi(self.env, state, self.params, self._last_info)
        return render_mod.rgb_array(self.env, state, self.params, self._history, self._last_info)

    def _fns_for(self, params: EnvParams) -> _Fns:
        return _vector_fns(self.env, params, self.num_envs)


def make_env(**kwargs: Any) -> CrashGymEnv:
    """Entry point used by the registry (env_id comes from the spec's kwargs)."""
    return CrashGymEnv(**kwargs)


def make_vector_env(num_envs: int = 1, **kwargs: Any) -> CrashGymVectorEnv:
    return CrashGymVectorEnv(num_envs=num_envs, **kwargs)


def register_envs() -> None:
    """Register the Gymnasium ids (done on ``import crashgym``; idempotent)."""
    from crashgym import _register_gymnasium_ids

    _register_gymnasium_ids()
