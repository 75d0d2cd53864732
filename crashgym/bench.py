"""`crashgym bench`: throughput of the market step and the Gymnasium envs, peers side by side.

What is measured (all in one process, on ``jax.devices()[0]``'s platform):

* **core** -- the pure functional market step, ``Market.step_batch`` (the batched step
  with the batch-level ``lax.cond`` around ADL), agent idle (:func:`crashgym.market.no_orders`),
  params shared, under ``jit(lax.scan(step_batch))`` with the per-env keys split inside
  the scan. The state is donated and chained from call to call, so a long measurement
  walks through the episode (for ``oct10``: calm, then the shock at step 180).
  ``steps_per_second`` is the best call (as ``benchmarks/peers.py`` reports its peers);
  ``steps_per_second_mean`` is the total over all timed calls. A short measurement from
  reset only sees the start of the episode, so the largest batch is also timed from
  states ``--mid-episode-step`` steps in (for ``oct10`` the crash, when some env of the batch
  runs ADL in most steps): ``kind == "core-mid-episode"``.
* **gymnasium-vector** / **gymnasium-single** -- ``gymnasium.make_vec("crashgym/<env>")``
  (numpy in, numpy out, random actions) and the single env's per-step latency, when
  :mod:`crashgym.gym` is importable.
* **compile** -- trace + lower + compile of the core rollout at the largest batch, cold
  (``jax.clear_caches()`` and an empty persistent cache) and warm (``jax.clear_caches()``
  again, same persistent cache: ``jax_compilation_cache_dir`` with
  ``jax_persistent_cache_min_compile_time_secs=0``).
* **state bytes per env** -- sum of ``nbytes`` over the leaves of one env's ``MarketState``.
* **peers** (``--peers``, default on) -- gymnax CartPole-v1 at the same batch sizes via
  ``benchmarks/peers.py`` (found relative to the repository root; skipped with a note in
  an installed package without the source tree). ``--all-peers`` adds gymnasium's
  CartPole (single-step latency and native vector env), gymnax's Gymnasium wrapper
  latency and JAX-LOB.

With more than one local device the batch axis is sharded over a 1-D mesh ``'batch'``
(``NamedSharding``); batches not divisible by the device count run unsharded.

Numbers are only comparable within one run on one machine; the JSON records the load
average before and after, because a shared machine's neighbours move them.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import importlib.util
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from crashgym.sharding import MESH_AXIS

DEFAULT_NUM_ENVS = "1,64,1024,4096"
TARGET_STEPS_PER_SECOND = 1_000_000  # DESIGN section 6, core step at 4096 envs
TARGET_CARTPOLE_RATIO = 0.15
TARGET_VECTOR_STEPS_PER_SECOND = 500_000  # Gymnasium vector env at 1024 envs
TARGET_SINGLE_LATENCY_US = 50.0
TARGET_COMPILE_COLD_S = 10.0
TARGET_COMPILE_WARM_S = 2.0
TARGET_ENVS_IN_4GB = 65_536


# ----------------------------------------------------------------------------- CLI


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--num-envs must be comma-separated ints, got {text!r}") from e
    if not sizes or any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"--num-envs must be positive ints, got {text!r}")
    return sizes


def _checked_sizes(text: str) -> str:
    _batch_sizes(text)
    return text


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crashgym bench`` (also ``python -m crashgym.bench``)."""
    parser.add_argument("--env", default="MarketMaker-v0", help="Gymnasium env measured when crashgym.gym is present")
    parser.add_argument("--scenario", default="oct10", help="scenario name (configs/scenarios) or TOML path")
    parser.add_argument("--num-envs", default=DEFAULT_NUM_ENVS, type=_checked_sizes,
                        help="comma-separated batch sizes (default %(default)s)")
    parser.add_argument("--steps", type=_positive_int, default=None,
                        help="steps per measurement (scan length, one timed call after one warm-up call); "
                             "default: chosen so each measurement takes about --seconds")
    parser.add_argument("--seconds", type=float, default=3.0, help="target seconds per measurement (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON here")
    parser.add_argument("--plot", default=None, metavar="PATH", help="write a scaling plot (PNG) here")
    parser.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                        help="gymnax CartPole-v1 at the same batch sizes (benchmarks/peers.py)")
    parser.add_argument("--all-peers", action="store_true",
                        help="also gymnasium CartPole (latency, vector), the gymnax Gymnasium wrapper and JAX-LOB (slow)")
    parser.add_argument("--gym", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the Gymnasium vector env and single-env latency (crashgym.gym)")
    parser.add_argument("--compile-time", action=argparse.BooleanOptionalAction, default=True,
                        help="measure cold / warm-persistent-cache compile time at the largest batch")
    parser.add_argument("--mid-episode-step", type=int, default=480,
                        help="also time the largest batch from states this many steps into the episode "
                             "(oct10: the crash, ADL running); 0 to skip (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no table or progress output")
    from crashgym.cli import add_set_argument

    add_set_argument(parser)


def _complete(args: argparse.Namespace | None) -> argparse.Namespace:
    """Defaults for every option, overridden by what `args` carries (so run() takes partial namespaces)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    full = parser.parse_args([])
    for k, v in vars(args or argparse.Namespace()).items():
        setattr(full, k, v)
    return full


# --------------------------------------------------------------------- helpers


def _log(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@functools.cache
def load_peers() -> Any:
    """benchmarks/peers.py as a module, or raise ImportError saying why."""
    path = repo_root() / "benchmarks" / "peers.py"
    if not path.is_file():
        raise ImportError(f"{path} not found (installed package without the source tree)")
    spec = importlib.util.spec_from_file_location("crashgym_bench_peers", path)
    if spec is None or spec.loader is None:  # pragma: no cover
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except Exception:
        sys.modules.pop(spec.name, None)
        raise
    return module


def state_bytes(tree: Any) -> int:
    return int(sum(np.dtype(x.dtype).itemsize * math.prod(x.shape) for x in jax.tree.leaves(tree)))


def _checksum(state: Any) -> dict[str, Any]:
    """Summary of a batched final state: compares runs (sharded vs not) without shipping it."""
    leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]
    ints = sum(int(x.astype(np.int64).sum()) for x in leaves if x.dtype.kind in "iub")
    floats = [x.astype(np.float64) for x in leaves if x.dtype.kind == "f"]
    finite = all(bool(np.isfinite(x).all()) for x in floats)
    return {
        "step": int(np.asarray(state.step).reshape(-1)[0]),
        "sum_int": ints,
        "sum_float": float(sum(np.nansum(x) for x in floats)),
        "mark_mean": float(np.mean(np.asarray(state.signals.mark, np.float64))),
        "finite": finite,
    }


def batch_sharding(num_envs: int) -> jax.sharding.NamedSharding | None:
    """The batch axis over all local devices (crashgym.sharding), or None: one device, or a
    batch that does not divide (a benchmark times what it was asked for, so no padding)."""
    from crashgym import sharding

    if num_envs % jax.local_device_count():
        return None
    return sharding.batch_sharding()


# ----------------------------------------------------------------- core step


def make_rollout(market: Any, num_envs: int, length: int, sharding: Any = None) -> Callable:
    """rollout(state, key, params) -> (state, key, envs_with_adl (length,)): `length` batched steps.

    The agent is idle; per-env keys are split from `key` inside the scan, once per step.
    """
    from crashgym.market import no_orders

    def constrain(x: jax.Array) -> jax.Array:
        return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)

    def rollout(state: Any, key: jax.Array, params: Any) -> tuple[Any, jax.Array, jax.Array]:
        orders = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_envs,) + jnp.shape(x)), no_orders())

        def body(carry: tuple[Any, jax.Array], _: None) -> tuple[tuple[Any, jax.Array], jax.Array]:
            state, key = carry
            key, sub = jax.random.split(key)
            keys = constrain(jax.random.split(sub, num_envs))
            state, info = market.step_batch(keys, state, orders, params)
            state = jax.tree.map(constrain, state)
            return (state, key), jnp.sum(info["adl_count"] > 0)

        (state, key), adl_envs = jax.lax.scan(body, (state, key), None, length=length)
        return state, key, adl_envs

    return rollout


def initial_state(market: Any, params: Any, num_envs: int, seed: int, sharding: Any = None) -> tuple[Any, jax.Array]:
    keys = jax.random.split(jax.random.key(seed), num_envs + 1)
    state = jax.jit(jax.vmap(market.init, in_axes=(0, None)))(keys[1:], params)
    if sharding is not None:
        state = jax.device_put(state, sharding)
    return state, keys[0]


def _compile(rollout: Callable, state: Any, key: jax.Array, params: Any, split: dict[str, float] | None = None
             ) -> tuple[Any, float]:
    """AOT-compile `rollout` (state donated); seconds for trace + lower + compile (split into `split`)."""
    t0 = time.perf_counter()
    lowered = jax.jit(rollout, donate_argnums=(0,)).lower(state, key, params)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    if split is not None:
        split["trace_lower"], split["compile"] = t1 - t0, t2 - t1
    return compiled, t2 - t0


def compile_times(rollout: Callable, state: Any, key: jax.Array, params: Any) -> tuple[Any, dict[str, Any]]:
    """Cold and warm-persistent-cache compile of `rollout`; returns (the warm executable, times).

    Cold: in-memory caches cleared and an empty persistent cache directory (so the cold
    time includes writing the cache entry). Warm: in-memory caches cleared again, same
    directory. The caller's cache settings are restored afterwards.
    """
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    saved = {n: getattr(jax.config, n) for n in names}
    try:
        from jax._src import compilation_cache as _cc  # the cache reads its directory once per process
        reset = _cc.reset_cache
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        reset = None
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="crashgym-bench-cache-") as cache_dir:
        try:
            jax.config.update("jax_compilation_cache_dir", cache_dir)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
            if reset is not None:
                reset()
            jax.clear_caches()
            out["cold_split"], out["warm_split"] = {}, {}
            _, out["cold"] = _compile(rollout, state, key, params, out["cold_split"])
            entries = sum(len(files) for _, _, files in os.walk(cache_dir))
            jax.clear_caches()
            compiled, out["warm_cache"] = _compile(rollout, state, key, params, out["warm_split"])
            out["cache_entries"] = entries
            if entries == 0:
                out["note"] = "the persistent cache wrote nothing: warm_cache is a second cold compile"
        finally:
            for n, v in saved.items():
                jax.config.update(n, v)
            if reset is not None:
                reset()
    return compiled, out


def _timed_calls(compiled: Any, state: Any, key: jax.Array, params: Any, num_envs: int, chunk: int,
                 steps: int | None, seconds: float) -> tuple[dict[str, Any], Any]:
    """One warm-up call, then timed calls (state chained): (row fields, final state)."""
    start_step = int(np.asarray(state.step).reshape(-1)[0])
    t0 = time.perf_counter()
    state, key, adl = jax.block_until_ready(compiled(state, key, params))  # first call: allocations, threads
    first = time.perf_counter() - t0
    calls = 1 if steps is not None else int(min(100_000, max(2, math.ceil(seconds / max(first, 1e-6)))))
    times: list[float] = []
    adl_steps = 0
    deadline = time.perf_counter() + 4 * seconds  # the first call can underestimate; never run away
    for i in range(calls):
        t0 = time.perf_counter()
        state, key, adl = jax.block_until_ready(compiled(state, key, params))
        times.append(time.perf_counter() - t0)
        adl_steps += int(np.sum(np.asarray(adl) > 0))
        if steps is None and i >= 1 and time.perf_counter() > deadline:
            break
    env_steps = num_envs * chunk
    return dict(
        steps_per_second=env_steps / min(times),
        steps_per_second_mean=env_steps * len(times) / sum(times),
        ms_per_batch_step=min(times) / chunk * 1e3,
        steps=chunk * len(times),
        scan_length=chunk,
        calls=len(times),
        seconds=sum(times),
        episode_steps_timed=[start_step + chunk, start_step + chunk * (len(times) + 1)],
        adl_branch_share=adl_steps / (chunk * len(times)),
    ), state


def measure_core(market: Any, params: Any, num_envs: int, *, steps: int | None, seconds: float, seed: int,
                 compile_probe: bool = False, log: Callable[[str], None] = lambda s: None,
                 executables: dict[int, tuple[Any, int]] | None = None) -> dict[str, Any]:
    """Env-steps/s of jit(scan(step_batch)) at one batch size, from reset (see the module docstring).

    `executables`, when given, receives {num_envs: (compiled rollout, scan length)} for reuse.
    ``adl_branch_share``: share of the timed batched steps in which some env ran ADL.
    """
    sharding = batch_sharding(num_envs)
    chunk = steps if steps is not None else max(4, min(256, 16384 // num_envs))
    rollout = make_rollout(market, num_envs, chunk, sharding)
    state, key = initial_state(market, params, num_envs, seed, sharding)
    row: dict[str, Any] = {}
    if compile_probe:
        compiled, row["compile"] = compile_times(rollout, state, key, params)
        row["compile_seconds"] = row["compile"]["cold"]
    else:
        compiled, row["compile_seconds"] = _compile(rollout, state, key, params)
    if executables is not None:
        executables[num_envs] = (compiled, chunk)
    log(f"core num_envs={num_envs}: compiled in {row['compile_seconds']:.1f} s; timing calls of {chunk} steps")
    timing, state = _timed_calls(compiled, state, key, params, num_envs, chunk, steps, seconds)
    row.update(timing)
    row.update(
        sharded=sharding is not None,
        devices=jax.local_device_count() if sharding is not None else 1,
        state_sharding=str(state.accounts.size.sharding.spec) if sharding is not None else None,
        checksum=_checksum(state),
    )
    return row


def measure_core_mid_episode(market: Any, params: Any, num_envs: int, target_step: int, executables: dict[int, tuple[Any, int]],
                             *, steps: int | None, seconds: float, seed: int, log: Callable[[str], None] = lambda s: None
                             ) -> dict[str, Any] | None:
    """Env-steps/s at `num_envs` from states `target_step` steps into the episode (for oct10: the crash, ADL on).

    The states come from a small batch (the largest measured size <= 64 dividing num_envs)
    run forward with its already compiled rollout, tiled to num_envs; the per-env keys of
    the timed steps differ, so the copies diverge. Reuses compiled executables only:
    returns None when the sizes do not allow it.
    """
    small = [n for n in executables if n <= 64 and num_envs % n == 0]
    if num_envs not in executables or not small:
        return None
    n_ff = max(small)
    compiled_ff, chunk_ff = executables[n_ff]
    state, key = initial_state(market, params, n_ff, seed + 1, batch_sharding(n_ff))
    calls = max(1, math.ceil(target_step / chunk_ff))
    log(f"core num_envs={num_envs} mid-episode: running {n_ff} envs forward {calls * chunk_ff} steps")
    for _ in range(calls):
        state, key, _ = compiled_ff(state, key, params)
    reps = num_envs // n_ff
    state = jax.tree.map(lambda x: jnp.tile(np.asarray(x), (reps,) + (1,) * (x.ndim - 1)), jax.device_get(state))
    sharding = batch_sharding(num_envs)
    state = jax.device_put(state, sharding) if sharding is not None else jax.device_put(state)
    compiled, chunk = executables[num_envs]
    timing, state = _timed_calls(compiled, state, jax.random.key(seed + 2), params, num_envs, chunk, steps, seconds)
    return dict(timing, start_step=calls * chunk_ff, fast_forward_envs=n_ff, sharded=sharding is not None,
                devices=jax.local_device_count() if sharding is not None else 1, checksum=_checksum(state))


# ------------------------------------------------------------------ gymnasium


def measure_gym_vector(env_name: str, scenario: str, num_envs: int, *, steps: int | None, seconds: float,
                       seed: int,
                       settings: Sequence[str] = ()) -> dict[str, Any]:
    """Env-steps/s of gymnasium.make_vec("crashgym/<env>") with numpy actions in and numpy out."""
    import gymnasium

    import crashgym.gym  # noqa: F401  registers the ids (ImportError: the caller skips)

    env = gymnasium.make_vec(f"crashgym/{env_name}", num_envs=num_envs, vectorization_mode="vector_entry_point",
                             scenario=scenario, settings=settings)
    try:
        rng = np.random.default_rng(seed)
        space = env.single_action_space
        actions = rng.uniform(space.low, space.high, size=(8, num_envs) + space.shape).astype(space.dtype)
        env.reset(seed=seed)
        t0 = time.perf_counter()
        env.step(actions[0])  # compiles
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        env.step(actions[1])
        one = time.perf_counter() - t0
        n = steps if steps is not None else int(min(100_000, max(3, math.ceil(seconds / max(one, 1e-6)))))
        t0 = time.perf_counter()
        for i in range(n):
            env.step(actions[i % len(actions)])
        elapsed = time.perf_counter() - t0
    finally:
        env.close()
    return {"steps_per_second": num_envs * n / elapsed, "steps": n, "seconds": elapsed, "compile_seconds": compile_s}


def measure_gym_single(env_name: str, scenario: str, *, steps: int | None, seconds: float, seed: int,
                       settings: Sequence[str] = ()) -> dict[str, Any]:
    """Microseconds per step of gymnasium.make("crashgym/<env>") (resets on episode end included)."""
    import gymnasium

    import crashgym.gym  # noqa: F401

    env = gymnasium.make(f"crashgym/{env_name}", scenario=scenario, settings=settings)
    try:
        env.action_space.seed(seed)
        actions = [env.action_space.sample() for _ in range(64)]
        env.reset(seed=seed)
        t0 = time.perf_counter()
        env.step(actions[0])
        compile_s = time.perf_counter() - t0

        def loop(n: int) -> float:
            t0 = time.perf_counter()
            for i in range(n):
                _, _, term, trunc, _ = env.step(actions[i % len(actions)])
                if term or trunc:
                    env.reset()
            return time.perf_counter() - t0

        probe = loop(20) / 20
        n = steps if steps is not None else int(min(200_000, max(50, seconds / max(probe, 1e-6))))
        elapsed = loop(n)
    finally:
        env.close()
    return {"latency_us": elapsed / n * 1e6, "steps_per_second": n / elapsed, "steps": n, "compile_seconds": compile_s}


# ----------------------------------------------------------------------- peers


def measure_peers(sizes: list[int], all_peers: bool, log: Callable[[str], None]) -> tuple[list[dict], list[str]]:
    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    try:
        peers = load_peers()
    except Exception as e:  # ImportError, or the module failing at import
        return rows, [f"peers skipped: {type(e).__name__}: {e}"]

    def attempt(label: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # a missing peer package must not sink the run
            notes.append(f"{label} skipped: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
            return None

    for n in sizes:
        log(f"peer gymnax/CartPole-v1 num_envs={n}")
        v = attempt("gymnax/CartPole-v1", lambda: peers.gymnax_cartpole_steps_per_second(n))
        if v is None:
            break
        rows.append({"env": "gymnax/CartPole-v1", "kind": "jax-scan", "num_envs": n, "steps_per_second": float(v)})
    if not all_peers:
        return rows, notes
    for n in sizes:
        log(f"peer gymnasium/CartPole-v1 vector num_envs={n}")
        v = attempt("gymnasium/CartPole-v1 (vector)", lambda: peers.gymnasium_cartpole_vector_steps_per_second(n))
        if v is None:
            break
        rows.append({"env": "gymnasium/CartPole-v1 (vector, numpy)", "kind": "gymnasium-vector", "num_envs": n,
                     "steps_per_second": float(v)})
    for label, name, fn_name in (("gymnasium/CartPole-v1", "gymnasium/CartPole-v1 (single)",
                                  "gymnasium_cartpole_step_latency_us"),
                                 ("gymnax GymnaxToGymWrapper", "gymnax/CartPole-v1 (GymnaxToGymWrapper)",
                                  "gymnax_gym_wrapper_step_latency_us")):
        log(f"peer {name} single-step latency")
        us = attempt(label, getattr(peers, fn_name))
        if us is not None:
            rows.append({"env": name, "kind": "gymnasium-single", "num_envs": 1, "latency_us": float(us),
                         "steps_per_second": 1e6 / float(us)})
    steps_for = getattr(peers, "_jaxlob_steps_for", lambda n: (max(2, min(32, 4096 // n)), 1))
    for n in sizes:
        log(f"peer jaxlob ExecutionEnv num_envs={n} (slow)")
        steps, repeats = steps_for(n)
        v = attempt("jaxlob", lambda: peers.jaxlob_steps_per_second(n, steps=steps, repeats=repeats))
        if v is None:
            if getattr(peers, "JAXLOB_ERROR", ""):
                notes.append(f"jaxlob skipped: {peers.JAXLOB_ERROR}")
            break
        rows.append({"env": "jaxlob/ExecutionEnv (synthetic LOBSTER)", "kind": "jax-scan", "num_envs": n,
                     "steps_per_second": float(v)})
    return rows, notes


# ------------------------------------------------------------------------ run


def _targets(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """DESIGN section 6 targets that this run measured, with the measured value and the gap."""
    out: list[dict[str, Any]] = []

    def add(name: str, target: float, measured: float | None, higher_is_better: bool = True) -> None:
        if measured is None:
            return
        met = measured >= target if higher_is_better else measured <= target
        factor = (target / measured if higher_is_better else measured / target) if measured > 0 else math.inf
        out.append({"target": name, "goal": target, "measured": measured, "met": bool(met),
                    "shortfall_factor": None if met else factor})

    core = {r["num_envs"]: r for r in payload["results"] if r.get("kind") == "core"}
    if 4096 in core:
        add("core step env-steps/s at 4096 envs", TARGET_STEPS_PER_SECOND, core[4096]["steps_per_second"])
        if core[4096].get("ratio_to_cartpole") is not None:
            add("core step / gymnax CartPole at 4096 envs", TARGET_CARTPOLE_RATIO, core[4096]["ratio_to_cartpole"])
    mid = {r["num_envs"]: r for r in payload["results"] if r.get("kind") == "core-mid-episode"}
    if 4096 in mid:
        add(f"core step env-steps/s at 4096 envs from step {mid[4096]['start_step']} (some env ran ADL in "
            f"{mid[4096]['adl_branch_share']:.0%} of steps)", TARGET_STEPS_PER_SECOND, mid[4096]["steps_per_second"])
    vec = {r["num_envs"]: r for r in payload["results"] if r.get("kind") == "gymnasium-vector"}
    if 1024 in vec:
        add("Gymnasium vector env env-steps/s at 1024 envs", TARGET_VECTOR_STEPS_PER_SECOND, vec[1024]["steps_per_second"])
    single = [r for r in payload["results"] if r.get("kind") == "gymnasium-single"]
    if single:
        add("single Gymnasium env us/step", TARGET_SINGLE_LATENCY_US, single[0]["latency_us"], higher_is_better=False)
    cs = payload.get("compile_seconds") or {}
    if cs.get("cold") is not None:
        add("first compile s", TARGET_COMPILE_COLD_S, cs["cold"], higher_is_better=False)
    if cs.get("warm_cache") is not None:
        add("compile with warm persistent cache s", TARGET_COMPILE_WARM_S, cs["warm_cache"], higher_is_better=False)
    add("envs in 4 GB (state only)", TARGET_ENVS_IN_4GB, payload["envs_in_4GB"])
    return out


def run(args: argparse.Namespace | None = None) -> dict[str, Any]:
    """Run the benchmark described by `args` (see add_arguments); print a table, return the JSON payload."""
    args = _complete(args)
    sizes = _batch_sizes(args.num_envs) if isinstance(args.num_envs, str) else [int(n) for n in args.num_envs]
    log = functools.partial(_log, args)

    from crashgym.config import ConfigError
    from crashgym.market import Market
    from crashgym.scenarios import load_scenario

    try:
        scenario = load_scenario(args.scenario, settings=args.settings)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    market = Market(scenario.shape)
    params = scenario.params
    payload: dict[str, Any] = {
        "device": str(jax.devices()[0]),
        "devices": [str(d) for d in jax.local_devices()],
        "local_device_count": jax.local_device_count(),
        "env": args.env,
        "scenario": args.scenario,
        "shape": {k: getattr(scenario.shape, k) for k in scenario.shape.__dataclass_fields__},
        **({"settings": list(args.settings)} if args.settings else {}),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "jax": jax.__version__},
        "command": "crashgym bench " + " ".join(_argv_of(args)),
        "load_average": {"start": _load_average()},
        "results": [],
        "notes": [],
    }
    one = market.init(jax.random.key(0), params)
    payload["state_bytes_per_env"] = state_bytes(one)
    payload["envs_in_4GB"] = int(4 * 2**30 // payload["state_bytes_per_env"])

    largest = max(sizes)
    executables: dict[int, tuple[Any, int]] = {}
    for n in sizes:
        log(f"core num_envs={n}: compiling")
        row = measure_core(market, params, n, steps=args.steps, seconds=args.seconds, seed=args.seed,
                           compile_probe=args.compile_time and n == largest, log=log, executables=executables)
        if "compile" in row:
            payload["compile_seconds"] = dict(row.pop("compile"), num_envs=n,
                                              function="jit(lax.scan(Market.step_batch)), trace + lower + compile")
        payload["results"].append({"env": f"market-core[{args.scenario}]", "kind": "core", "num_envs": n, **row})
        log(f"core num_envs={n}: {row['steps_per_second']:,.0f} env-steps/s")
    if args.mid_episode_step > 0:
        row = measure_core_mid_episode(market, params, largest, args.mid_episode_step, executables, steps=args.steps,
                                       seconds=args.seconds, seed=args.seed, log=log)
        if row is None:
            payload["notes"].append("mid-episode measurement skipped: needs a measured batch size <= 64 dividing "
                                    f"{largest}")
        else:
            payload["results"].append({"env": f"market-core[{args.scenario}] from step {row['start_step']}",
                                       "kind": "core-mid-episode", "num_envs": largest, **row})
            log(f"core num_envs={largest} from step {row['start_step']}: {row['steps_per_second']:,.0f} env-steps/s")
    executables.clear()
    if "compile_seconds" not in payload:
        payload["compile_seconds"] = {"cold": None, "warm_cache": None, "note": "not measured (--no-compile-time)"}
    if jax.local_device_count() > 1:
        payload["sharding"] = {"mesh_axis": MESH_AXIS, "devices": jax.local_device_count(),
                               "sharded_num_envs": [r["num_envs"] for r in payload["results"] if r["kind"] == "core" and r["sharded"]]}

    if args.gym:
        _gym_rows(args, sizes, payload, log)

    payload["peers"] = []
    if args.peers:
        payload["peers"], notes = measure_peers(sizes, args.all_peers, log)
        payload["notes"] += notes
        cart = {p["num_envs"]: p["steps_per_second"] for p in payload["peers"] if p["env"] == "gymnax/CartPole-v1"}
        for r in payload["results"]:
            if r["kind"] in ("core", "core-mid-episode", "gymnasium-vector") and r["num_envs"] in cart:
                r["cartpole_steps_per_second"] = cart[r["num_envs"]]
                r["ratio_to_cartpole"] = r["steps_per_second"] / cart[r["num_envs"]]
    payload["load_average"]["end"] = _load_average()
    payload["targets"] = _targets(payload)

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        log(f"wrote {args.json}")
    if args.plot:
        try:
            plot(payload, args.plot)
            log(f"wrote {args.plot}")
        except ImportError as e:
            payload["notes"].append(f"plot skipped: {e}")
    if not args.quiet:
        print_table(payload)
    return payload


def _gym_rows(args: argparse.Namespace, sizes: list[int], payload: dict[str, Any], log: Callable[[str], None]) -> None:
    try:
        import crashgym.gym  # noqa: F401
    except ImportError as e:
        payload["notes"].append(f"Gymnasium envs skipped: {e}")
        return
    for n in sizes:
        log(f"gymnasium vector crashgym/{args.env} num_envs={n} (compiles its own step)")
        try:
            row = measure_gym_vector(args.env, args.scenario, n, steps=args.steps, seconds=args.seconds, seed=args.seed,
                                     settings=args.settings)
        except Exception as e:  # the vector env is someone else's moving target: report, don't crash
            payload["notes"].append(f"Gymnasium vector env skipped: {type(e).__name__}: {str(e)[:200]}")
            break
        payload["results"].append({"env": f"crashgym/{args.env} (gymnasium vector, numpy)", "kind": "gymnasium-vector",
                                   "num_envs": n, **row})
    log(f"gymnasium single crashgym/{args.env} latency")
    try:
        row = measure_gym_single(args.env, args.scenario, steps=args.steps, seconds=args.seconds, seed=args.seed,
                                 settings=args.settings)
    except Exception as e:
        payload["notes"].append(f"Gymnasium single env skipped: {type(e).__name__}: {str(e)[:200]}")
        return
    payload["results"].append({"env": f"crashgym/{args.env} (gymnasium single)", "kind": "gymnasium-single",
                               "num_envs": 1, **row})


def _argv_of(args: argparse.Namespace) -> list[str]:
    out = [f"--scenario {args.scenario}", f"--num-envs {args.num_envs if isinstance(args.num_envs, str) else ','.join(map(str, args.num_envs))}"]
    if args.steps is not None:
        out.append(f"--steps {args.steps}")
    out += [] if args.peers else ["--no-peers"]
    out += ["--all-peers"] if args.all_peers else []
    out += [] if args.gym else ["--no-gym"]
    out += [] if args.compile_time else ["--no-compile-time"]
    out += [f"--mid-episode-step {args.mid_episode_step}"] if args.mid_episode_step != 480 else []
    out += [f"--set {shlex.quote(s)}" for s in args.settings]
    return out


# --------------------------------------------------------------------- output


def _fmt(v: Any, spec: str = ",.0f") -> str:
    return "-" if v is None else format(v, spec)


def table_rows(payload: dict[str, Any]) -> list[list[str]]:
    rows = []
    for r in payload["results"]:
        if r["kind"] == "gymnasium-single":
            rows.append([r["env"], "1", _fmt(r["steps_per_second"]), f"{r['latency_us']:.1f} us/step", "-", "-", "-"])
            continue
        rows.append([
            r["env"], str(r["num_envs"]), _fmt(r["steps_per_second"]), _fmt(r.get("steps_per_second_mean")),
            _fmt(r.get("cartpole_steps_per_second")), _fmt(r.get("ratio_to_cartpole"), ".2%"),
            "yes" if r.get("sharded") else "-",
        ])
    for p in payload["peers"]:
        extra = f"{p['latency_us']:.1f} us/step" if "latency_us" in p else "-"
        rows.append([p["env"], str(p["num_envs"]), _fmt(p["steps_per_second"]), extra, "-", "-", "-"])
    return rows


HEADERS = ["env", "num_envs", "env-steps/s (best)", "mean / latency", "CartPole env-steps/s", "vs CartPole", "sharded"]


def _summary_lines(payload: dict[str, Any]) -> list[str]:
    cs = payload["compile_seconds"]
    lines = [
        f"device: {payload['device']} (x{payload['local_device_count']}); load average start {payload['load_average']['start']}"
        f" end {payload['load_average']['end']}",
        f"compile (jit(scan(step_batch)) at {cs.get('num_envs', '-')} envs): cold {_fmt(cs.get('cold'), '.1f')} s,"
        f" warm persistent cache {_fmt(cs.get('warm_cache'), '.1f')} s",
        f"state: {payload['state_bytes_per_env']:,} bytes/env ({payload['envs_in_4GB']:,} envs in 4 GiB)",
    ]
    for t in payload["targets"]:
        gap = "met" if t["met"] else f"MISSED by {t['shortfall_factor']:.1f}x"
        lines.append(f"target {t['target']}: goal {t['goal']:,.4g}, measured {t['measured']:,.4g} -> {gap}")
    lines += [f"note: {n}" for n in payload["notes"]]
    return lines


def print_table(payload: dict[str, Any]) -> None:
    rows = table_rows(payload)
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(HEADERS)]
        print("  ".join(h.ljust(w) for h, w in zip(HEADERS, widths)))
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        for line in _summary_lines(payload):
            print(line)
        return
    table = Table(title=escape(f"crashgym bench: {payload['scenario']} on {payload['device']}"))
    for i, h in enumerate(HEADERS):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        table.add_row(*(escape(c) for c in r))
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 150))
    console.print(table)
    for line in _summary_lines(payload):
        console.print(line, markup=False, highlight=False)


def plot(payload: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for r in payload["results"] + payload["peers"]:
        if r.get("kind") in ("core", "gymnasium-vector", "jax-scan", "core-mid-episode"):
            series.setdefault(r["env"], []).append((r["num_envs"], r["steps_per_second"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.axhline(TARGET_STEPS_PER_SECOND, color="grey", linestyle="--", linewidth=1, label="target: 1M env-steps/s at 4096")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("num_envs (batch)")
    ax.set_ylabel("env-steps / s")
    ax.set_title(f"crashgym bench ({payload['scenario']}) on {payload['device']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crashgym.bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
