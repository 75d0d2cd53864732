"""Throughput and latency of peer environments, measured on the same machine as crashgym.

Numbers are only comparable within one run on one device, so this module measures the
peers itself instead of quoting published figures:

* gymnax CartPole-v1 under ``jit(scan(vmap(step)))`` -- the "cheapest JAX env" yardstick;
* gymnasium's own numpy CartPole-v1 (single env latency and its native vector env);
* gymnax's Gymnasium wrapper (per-step latency of a jitted env driven from Python);
* JAX-LOB 0.19 (``pip install jaxlob``), the closest peer: a JAX limit-order-book
  execution environment. It was written for JAX ~0.4.1x and needs run-time patches
  (see :func:`jaxlob_steps_per_second`) plus LOBSTER data, which we replace with a
  synthetic LOBSTER-format day written to a temporary directory.

Every function does its own warm-up (ahead-of-time compile or a first call) outside the
timed region, times with ``time.perf_counter`` after ``block_until_ready`` and returns the
best of a few repeats as a plain float.

Run ``python benchmarks/peers.py --num-envs 1,64,1024,4096 --json out.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import json
import os
import sys
import tempfile
import time
import types
import urllib.request
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Why the last jaxlob measurement returned None (empty when it ran).
JAXLOB_ERROR: str = ""


def _ensure_six() -> None:
    """Let gymnax import without ``six``.

    gymnax 1.0.1 imports ``six.moves.urllib.request`` (for its MNIST bandit) at package
    import but does not declare the dependency; a stub with the one function it uses
    avoids adding a package to the environment just for that.
    """
    try:
        import six  # noqa: F401
    except ImportError:
        six = types.ModuleType("six")
        moves = types.ModuleType("six.moves")
        urllib_mod = types.ModuleType("six.moves.urllib")
        request = types.ModuleType("six.moves.urllib.request")
        request.urlretrieve = urllib.request.urlretrieve  # type: ignore[attr-defined]
        six.moves = moves  # type: ignore[attr-defined]
        moves.urllib = urllib_mod  # type: ignore[attr-defined]
        urllib_mod.request = request  # type: ignore[attr-defined]
        sys.modules.update(
            {
                "six": six,
                "six.moves": moves,
                "six.moves.urllib": urllib_mod,
                "six.moves.urllib.request": request,
            }
        )


def _best_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Best wall time of ``fn()`` over ``repeats`` calls (fn must block on its result)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# --------------------------------------------------------------------------- gymnax


@functools.cache
def _gymnax_cartpole() -> tuple[Any, Any]:
    _ensure_six()
    import gymnax

    return gymnax.make("CartPole-v1")


def gymnax_cartpole_steps_per_second(num_envs: int, steps: int = 1000, repeats: int = 3) -> float:
    """Env-steps/s of gymnax CartPole-v1 under ``jit(scan(vmap(env.step)))``.

    Random actions are drawn inside the scan and ``env.step`` auto-resets (gymnax
    default), so this is the cost of the cheapest possible JAX environment loop.
    """
    env, params = _gymnax_cartpole()
    key = jax.random.key(0)
    _, state = jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), params)

    def rollout(state: Any, key: jax.Array) -> tuple[Any, jax.Array]:
        def body(carry: tuple[Any, jax.Array], _: None) -> tuple[tuple[Any, jax.Array], jax.Array]:
            state, key = carry
            key, k_act, k_step = jax.random.split(key, 3)
            action = jax.random.randint(k_act, (num_envs,), 0, 2)
            _, state, reward, _, _, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                jax.random.split(k_step, num_envs), state, action, params
            )
            return (state, key), reward.sum()

        (state, _), rewards = jax.lax.scan(body, (state, key), None, length=steps)
        return state, rewards

    # Ahead-of-time compile so the timed calls contain no tracing or compilation.
    compiled = jax.jit(rollout).lower(state, key).compile()
    jax.block_until_ready(compiled(state, key))  # first call: allocations, thread pools
    seconds = _best_seconds(lambda: jax.block_until_ready(compiled(state, key)), repeats)
    return num_envs * steps / seconds


def gymnax_gym_wrapper_step_latency_us(steps: int = 2000, repeats: int = 3) -> float:
    """Microseconds per ``step`` of gymnax CartPole behind ``GymnaxToGymWrapper``.

    This is a jitted JAX env driven one step at a time from Python: the cost is
    dispatch plus a device->host sync for ``terminated`` each step, which is what a
    Gymnasium-style agent loop pays.
    """
    env, params = _gymnax_cartpole()
    from gymnax.wrappers import GymnaxToGymWrapper

    wrapped = GymnaxToGymWrapper(env, params, seed=0)
    wrapped.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 2, size=steps).tolist()

    def loop() -> None:
        for a in actions:
            _, _, terminated, truncated, _ = wrapped.step(a)
            if terminated or truncated:  # bool() of a jax array: the per-step host sync
                wrapped.reset()

    loop()  # warm-up: compiles env.step / env.reset
    return _best_seconds(loop, repeats) / steps * 1e6


# ------------------------------------------------------------------------ gymnasium


def gymnasium_cartpole_step_latency_us(steps: int = 20000, repeats: int = 3) -> float:
    """Microseconds per ``env.step`` of gymnasium's CartPole-v1 (resets on done included)."""
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 2, size=steps).tolist()

    def loop() -> None:
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()

    loop()  # warm-up (first-call checks of the PassiveEnvChecker, caches)
    seconds = _best_seconds(loop, repeats)
    env.close()
    return seconds / steps * 1e6


def gymnasium_cartpole_vector_steps_per_second(num_envs: int, steps: int = 200, repeats: int = 3) -> float:
    """Env-steps/s of gymnasium's native numpy ``CartPoleVectorEnv`` (auto-resetting)."""
    import gymnasium as gym

    try:
        env = gym.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="vector_entry_point")
    except Exception:  # older gymnasium without a vector entry point: sync vector env
        env = gym.make_vec("CartPole-v1", num_envs=num_envs, vectorization_mode="sync")
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 2, size=(steps, num_envs))

    def loop() -> None:
        for a in actions:
            env.step(a)

    loop()
    seconds = _best_seconds(loop, repeats)
    env.close()
    return num_envs * steps / seconds


# --------------------------------------------------------------------------- jaxlob


def _write_synthetic_lobster(root: str, seed: int = 0, rate_hz: float = 1.0) -> None:
    """Write one synthetic trading day in LOBSTER format under ``root/data``.

    jaxlob's ``BaseLOBEnv`` only reads LOBSTER CSVs (``Flow_10`` messages, ``Book_10``
    level-10 snapshots) for 09:30-16:00 and slices them into 13 half-hour windows of
    100-message steps. The flow is a random but self-consistent mix of limit
    submissions (type 1), partial cancels (2), deletes (3) and executions (4) around
    a random-walk mid; at 1 msg/s each window is ~28 steps, enough for the 1800 s
    episodes of the execution task.
    """
    rng = np.random.default_rng(seed)
    tick, mid0, levels = 100, 3_000_000, 10
    # Run past 16:00 so the loader's "+10 steps" look-ahead of the last window exists.
    t0, t1 = 34_200.0, 57_700.0
    n = int((t1 - t0) * rate_hz)
    times = np.sort(rng.uniform(t0, t1, n))
    mid = mid0 + tick * np.cumsum(rng.choice([-1, 0, 1], size=n, p=[0.05, 0.9, 0.05]))
    kinds_u = rng.uniform(size=n)
    live: dict[int, tuple[int, int, int]] = {}  # order id -> (price, size, direction)
    rows: list[str] = []
    next_id = 1
    for i in range(n):
        u = kinds_u[i]
        # Roughly LOBSTER's mix for a liquid stock: 45% submits, 35% deletes, 10% partial
        # cancels, 10% executions; keep >= 50 live orders so cancels have targets.
        kind = 1 if (u < 0.45 or len(live) < 50) else 3 if u < 0.8 else 2 if u < 0.9 else 4
        if kind == 1:
            direction = 1 if rng.uniform() < 0.5 else -1
            price = int(mid[i] - direction * tick * rng.integers(1, levels + 1))
            size = int(rng.integers(1, 101))
            oid, next_id = next_id, next_id + 1
            live[oid] = (price, size, direction)
        else:
            oid = list(live)[int(rng.integers(len(live)))]
            price, resting, direction = live[oid]
            size = resting if kind == 3 else int(rng.integers(1, resting + 1))
            if size >= resting:
                del live[oid]
            else:
                live[oid] = (price, resting - size, direction)
        rows.append(f"{times[i]:.9f},{kind},{oid},{size},{price},{direction}\n")
    k = np.arange(1, levels + 1)
    book = np.empty((n, 4 * levels), dtype=np.int64)
    book[:, 0::4] = mid[:, None] + tick * k  # ask price
    book[:, 1::4] = 100  # ask size
    book[:, 2::4] = mid[:, None] - tick * k  # bid price
    book[:, 3::4] = 100  # bid size
    name = "SYN_2023-01-03_34200000_57600000_{}_10.csv"
    os.makedirs(os.path.join(root, "data", "Flow_10"), exist_ok=True)
    os.makedirs(os.path.join(root, "data", "Book_10"), exist_ok=True)
    with open(os.path.join(root, "data", "Flow_10", name.format("message")), "w") as f:
        f.writelines(rows)
    np.savetxt(os.path.join(root, "data", "Book_10", name.format("orderbook")), book, fmt="%d", delimiter=",")


class _JnpWithKeywordWhere(types.ModuleType):
    """``jax.numpy`` with ``where(cond, x=..., y=...)`` accepted again.

    JAX made ``x``/``y`` of ``jnp.where`` positional-only; jaxlob's book code calls
    ``jnp.where(c, x=..., y=...)``. Installed as jaxlob's module-global ``jnp`` only, so
    the real ``jax.numpy`` is untouched.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(jnp, name)

    @staticmethod
    def where(condition: Any, x: Any = None, y: Any = None, /, **kwargs: Any) -> Any:
        x, y = kwargs.pop("x", x), kwargs.pop("y", y)
        if x is None and y is None:
            return jnp.where(condition, **kwargs)
        return jnp.where(condition, x, y, **kwargs)


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Any:
    """Temporarily set ``obj.name`` (removing it afterwards if it did not exist)."""
    missing = object()
    old = getattr(obj, name, missing)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if old is missing:
            delattr(obj, name)
        else:
            setattr(obj, name, old)


@functools.cache
def _jaxlob_env() -> tuple[Any, Any]:
    """Import jaxlob 0.19 under current JAX and build its ``ExecutionEnv`` on synthetic data.

    Patches (all reverted after import/construction unless noted):

    1. ``sys.modules["gymnax_exchange"]`` aliases ``jaxlob.gymnax_exchange``: the wheel
       installs under ``jaxlob/`` but its modules import ``gymnax_exchange.*`` (kept).
    2. ``chex.assert_gpu_available`` -> no-op during import: ``exec_env`` asserts a GPU at
       module import time.
    3. ``flax.struct.dataclass`` wrapped during import: ``jnp.array`` defaults of
       dataclass fields (``EnvParams.time_delay_obs_act``) are now unhashable, which
       Python 3.11 dataclasses reject as mutable defaults; they become
       ``default_factory`` fields.
    4. ``pandas.errors.SettingWithCopyWarning`` re-added during construction: the LOBSTER
       loader imports it and pandas 3 removed it.
    5. The book module's global ``jnp`` -> :class:`_JnpWithKeywordWhere` (kept; only
       jaxlob's own namespace): keyword ``x=``/``y=`` of ``jnp.where``.
    6. ``is_truncated`` overridden to ``False`` in a subclass (kept): gymnax >= 1.0's
       ``step`` calls ``is_truncated(state, params)``, which reads
       ``params.max_steps_in_episode``; jaxlob's params have no such field. gymnax
       0.0.x, which jaxlob targeted, had no truncation, so ``False`` keeps its semantics
       (episodes end by jaxlob's own ``is_terminal``: 1800 s elapsed or task done).
    """
    _ensure_six()
    import chex
    import flax.struct
    import pandas.errors

    import jaxlob.gymnax_exchange

    sys.modules.setdefault("gymnax_exchange", jaxlob.gymnax_exchange)
    orig_dataclass = flax.struct.dataclass

    def dataclass_allowing_array_defaults(clz: Any = None, **kwargs: Any) -> Any:
        if clz is None:
            return lambda c: dataclass_allowing_array_defaults(c, **kwargs)
        annotations = vars(clz).get("__annotations__", {})
        for name, value in list(vars(clz).items()):
            if name in annotations and isinstance(value, jax.Array):
                setattr(clz, name, dataclasses.field(default_factory=lambda v=value: v))
        return orig_dataclass(clz, **kwargs)

    quiet = contextlib.redirect_stdout(io.StringIO())  # jaxlob prints at import/construction
    with (
        quiet,
        _patched(chex, "assert_gpu_available", lambda *a, **k: None),
        _patched(flax.struct, "dataclass", dataclass_allowing_array_defaults),
    ):
        import gymnax_exchange.jaxen.exec_env as exec_env
        import gymnax_exchange.jaxob.JaxOrderBookArrays as job

    job.jnp = _JnpWithKeywordWhere("jax.numpy[jaxlob]")

    class ExecutionEnv(exec_env.ExecutionEnv):  # type: ignore[misc, name-defined]
        def is_truncated(self, state: Any, params: Any) -> jax.Array:
            return jnp.zeros((), dtype=bool)

    class SettingWithCopyWarning(Warning):
        pass

    with (
        tempfile.TemporaryDirectory() as root,
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
        _patched(pandas.errors, "SettingWithCopyWarning", getattr(pandas.errors, "SettingWithCopyWarning", SettingWithCopyWarning)),
    ):
        warnings.simplefilter("ignore")
        _write_synthetic_lobster(root)
        # Sell 500 shares, "pure" actions (quantity = action * task size): the
        # configuration of jaxlob's own PPO scripts (ppoS5ExecCont.py).
        env = ExecutionEnv(root, "sell", -1, "pure", 500, 0.0)
    return env, env.default_params


def jaxlob_steps_per_second(num_envs: int, steps: int = 4, repeats: int = 2) -> float | None:
    """Env-steps/s of JAX-LOB's ``ExecutionEnv`` under ``jit(scan(vmap(env.step)))``.

    One env step processes 108 order-book messages sequentially (4 auto-cancels of
    the agent's resting orders, 4 agent limit orders, 100 market-data messages) on
    100-order-per-side books, plus the reward/observation bookkeeping, with gymnax
    auto-reset. Actions are uniform in [0, 0.02) (up to 10 shares per order of the
    500-share task). Data is a synthetic LOBSTER day (see
    :func:`_write_synthetic_lobster`). Returns None if jaxlob cannot be imported or
    run; the reason is stored in :data:`JAXLOB_ERROR`.
    """
    global JAXLOB_ERROR
    try:
        env, params = _jaxlob_env()
        key = jax.random.key(0)
        reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
        _, state = reset(jax.random.split(key, num_envs), params)
        n_actions = env.num_actions

        def rollout(state: Any, key: jax.Array, params: Any) -> tuple[Any, jax.Array]:
            def body(carry: tuple[Any, jax.Array], _: None) -> tuple[tuple[Any, jax.Array], jax.Array]:
                state, key = carry
                key, k_act, k_step = jax.random.split(key, 3)
                action = jax.random.uniform(k_act, (num_envs, n_actions), maxval=0.02)
                _, state, reward, _, _, _ = jax.vmap(env.step, in_axes=(0, 0, 0, None))(
                    jax.random.split(k_step, num_envs), state, action, params
                )
                return (state, key), reward.sum()

            (state, _), rewards = jax.lax.scan(body, (state, key), None, length=steps)
            return state, rewards

        # AOT compile keeps compilation out of the timing; no extra untimed warm-up call
        # because one call at 4096 envs costs ~10 s here (repeats absorb first-call cost).
        compiled = jax.jit(rollout).lower(state, key, params).compile()
        out: list[Any] = []
        seconds = _best_seconds(lambda: out.append(jax.block_until_ready(compiled(state, key, params))), repeats)
        if not bool(jnp.all(jnp.isfinite(out[-1][1]))):
            raise FloatingPointError("non-finite rewards from jaxlob step")
    except Exception as exc:  # report, don't crash the whole benchmark table
        JAXLOB_ERROR = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        return None
    JAXLOB_ERROR = ""
    return num_envs * steps / seconds


# ----------------------------------------------------------------------------- CLI


def _jaxlob_steps_for(num_envs: int) -> tuple[int, int]:
    """(steps, repeats) for one jaxlob measurement: ~4k env-steps per timed call (a few
    seconds on 2 CPU cores), at least 2 steps, and one repeat once a call costs > ~5 s."""
    steps = max(2, min(32, 4096 // num_envs))
    repeats = 1 if num_envs * steps >= 2048 else 3
    return steps, repeats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", default="1,64,1024,4096", help="comma-separated batch sizes")
    parser.add_argument("--json", default=None, help="write results to this JSON file")
    parser.add_argument("--skip-jaxlob", action="store_true", help="skip the (slow) JAX-LOB rows")
    args = parser.parse_args(argv)
    batch_sizes = [int(s) for s in args.num_envs.split(",") if s.strip()]

    results: list[dict[str, Any]] = []
    notes: dict[str, str] = {}

    def record(env_name: str, n: int, value: float | None) -> None:
        results.append({"env": env_name, "num_envs": n, "steps_per_second": value})
        shown = "n/a" if value is None else f"{value:,.0f}"
        print(f"{env_name:<34} {n:>8} {shown:>16}", flush=True)

    print(f"device: {jax.devices()[0]}")
    print(f"{'env':<34} {'num_envs':>8} {'steps/s':>16}")
    for n in batch_sizes:
        record("gymnax/CartPole-v1", n, gymnax_cartpole_steps_per_second(n))
    for n in batch_sizes:
        record("gymnasium/CartPole-v1 (vector)", n, gymnasium_cartpole_vector_steps_per_second(n))
    if not args.skip_jaxlob:
        for n in batch_sizes:
            steps, repeats = _jaxlob_steps_for(n)
            value = jaxlob_steps_per_second(n, steps=steps, repeats=repeats)
            record("jaxlob/ExecutionEnv (synthetic)", n, value)
            if value is None:
                notes["jaxlob"] = JAXLOB_ERROR
                print(f"  jaxlob failed: {JAXLOB_ERROR}")
                break  # the failure is not batch-size dependent; don't repeat it

    latency = {
        "gymnasium/CartPole-v1": gymnasium_cartpole_step_latency_us(),
        "gymnax/CartPole-v1 via GymnaxToGymWrapper": gymnax_gym_wrapper_step_latency_us(),
    }
    print(f"\n{'single-env step latency':<44} {'us/step':>10}")
    for name, us in latency.items():
        print(f"{name:<44} {us:>10.2f}")

    if args.json:
        payload: dict[str, Any] = {"device": str(jax.devices()[0]), "results": results, "latency_us": latency}
        if notes:
            payload["notes"] = notes
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
