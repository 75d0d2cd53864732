"""Benchmark and profile of the market core, for benchmarks/RESULTS.md.

    python benchmarks/bench_market.py                 # crashgym.bench.run with defaults plus all peers
                                                      # -> benchmarks/results_cpu.json (+ --plot PATH)
    python benchmarks/bench_market.py --profile       # where the time of one step goes at 4096 envs
                                                      # -> --out PATH (default: a temporary file)

The profile has four parts:

1. ``hlo``: op counts of the optimized HLO of one jitted ``step_batch`` and XLA's
   ``cost_analysis`` (flops, bytes accessed).
2. ``trace``: a ``jax.profiler`` trace of ``jit(scan(step_batch))`` (the benchmark's
   rollout). Every function the step calls is wrapped (for the trace only, by
   monkeypatching module attributes; the core files are not modified) in a
   ``jax.named_scope`` named ``<stage>:<module.function>#<call number>``, so the
   per-op events of the XLA:CPU runtime can be attributed to functions and to calls
   (``book.sweep#1`` is the taker buy sweep, ``#3``-``#6`` the liquidation rounds).
   Op names map to scopes through the ``op_name`` metadata of the compiled HLO. A
   fusion is attributed to the scope of its root instruction, so this is approximate
   at the boundaries between functions. Times are CPU time summed over XLA's threads.
3. ``ablations``: wall time per batched step with static sizes changed one at a time
   (liquidation rounds, ladder levels, accounts, liquidation buckets), the ADL branch
   forced on, the ADL stage removed, and an empty step (the scan / carry overhead).
4. ``adl_frequency``: how often the batch-level ADL branch runs over an ``oct10``
   episode (the fraction of steps where some env of the batch needs ADL).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import functools
import glob
import inspect
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from crashgym import bench  # noqa: E402

HERE = Path(__file__).resolve().parent


# ------------------------------------------------------------------------ bench


def run_bench(extra: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--all-peers", "--json", str(HERE / "results_cpu.json"), *extra])
    return bench.run(args)


# ---------------------------------------------------------------------- helpers


def _scenario(shape_overrides: dict[str, int] | None = None):
    from crashgym.market import Market
    from crashgym.scenarios import load_scenario

    sc = load_scenario("oct10")
    shape = dataclasses.replace(sc.shape, **(shape_overrides or {}))
    return Market(shape), sc.params


def _orders(num_envs: int):
    from crashgym.market import no_orders

    return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_envs,) + jnp.shape(x)), no_orders())


def _rollout(step: Callable, num_envs: int, length: int) -> Callable:
    """jit-able rollout(state, key, params) of `length` calls of step(keys, state, orders, params) -> state."""
    def rollout(state, key, params):
        orders = _orders(num_envs)

        def body(carry, _):
            s, k = carry
            k, sub = jax.random.split(k)
            return (step(jax.random.split(sub, num_envs), s, orders, params), k), None

        return jax.lax.scan(body, (state, key), None, length=length)[0]
    return rollout


def _time_rollout(rollout: Callable, state: Any, key: jax.Array, params: Any, length: int, repeats: int
                  ) -> dict[str, float]:
    """Compile (state donated), one warm-up call, then `repeats` timed calls chained; ms per batched step."""
    t0 = time.perf_counter()
    compiled = jax.jit(rollout, donate_argnums=(0,)).lower(state, key, params).compile()
    compile_s = time.perf_counter() - t0
    state, key = jax.block_until_ready(compiled(state, key, params))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, key = jax.block_until_ready(compiled(state, key, params))
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"ms_min": times[0] / length * 1e3, "ms_median": times[len(times) // 2] / length * 1e3,
            "compile_s": compile_s, "load": os.getloadavg()[0]}


def _init(market: Any, params: Any, num_envs: int, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), num_envs + 1)
    return jax.jit(jax.vmap(market.init, in_axes=(0, None)))(keys[1:], params), keys[0]


# ------------------------------------------------------------- named scopes


_STAGE_MARKERS = {  # first function of each stage, in the order Market.trade / step_batch call them
    "flow.index_step": "1 index",
    "makers.stress": "2 makers",
    "market._place_agent": "3 agent quotes",
    "flow.limit_orders": "4 limit orders",
    "flow.market_orders": "5 market orders",
    "funding.mark_price": "6 mark",
    "liquidation.take_over_account": "7 liquidation rounds",
    "adl.needs_adl": "8 ADL",
    "adl.auto_deleverage": "8 ADL",
    "Market.settle": "9-11 settle",
}


@contextlib.contextmanager
def named_scopes() -> Iterator[dict[str, int]]:
    """Wrap every function the step calls in a jax.named_scope '<stage>:<module.fn>#<n>' (trace time only)."""
    from crashgym import accounts, adl, book, flow, funding, liquidation, makers, market, rules

    modules = {"accounts": accounts, "adl": adl, "book": book, "flow": flow, "funding": funding,
               "liquidation": liquidation, "makers": makers, "market": market, "rules": rules}
    counts: dict[str, int] = collections.Counter()
    ctx = {"stage": "0 pre", "depth": 0}
    saved: list[tuple[Any, str, Any]] = []

    def wrap(label: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*a, **k):
            if label in _STAGE_MARKERS and (label != "funding.mark_price" or ctx["stage"] < "6"):
                ctx["stage"] = _STAGE_MARKERS[label]
            if label == "Market.trade":
                ctx["stage"] = "0 pre"
            counts[label] += 1
            name = f"{label}#{counts[label]}"
            if ctx["depth"] == 1 or (ctx["depth"] == 0 and not label.startswith("Market.")):
                # directly under Market.trade / settle / step_batch: tag the stage
                name = f"{ctx['stage']}:{name}"
            ctx["depth"] += 1
            try:
                with jax.named_scope(name):
                    return fn(*a, **k)
            finally:
                ctx["depth"] -= 1
        return wrapper

    for mod_name, mod in modules.items():
        for attr, obj in list(vars(mod).items()):
            if inspect.isfunction(obj) and obj.__module__ == mod.__name__ and attr not in ("no_orders",):
                saved.append((mod, attr, obj))
                setattr(mod, attr, wrap(f"{mod_name}.{attr}", obj))
    for meth in ("trade", "settle"):
        fn = getattr(market.Market, meth)
        saved.append((market.Market, meth, fn))
        setattr(market.Market, meth, wrap(f"Market.{meth}", fn))
    try:
        yield counts
    finally:
        for obj, attr, fn in reversed(saved):
            setattr(obj, attr, fn)


# ------------------------------------------------------------ what-if patches
# Candidate optimisations, applied by monkeypatching for a measurement only (the core
# files are not changed here). Each must compute exactly what the original computes
# for the values the step produces (integer volumes < 2**24 for the prefix sums).


def _prefix_sum_matmul(x: jax.Array) -> jax.Array:
    """Inclusive prefix sum as x @ triu(ones): one GEMM instead of log2(n) shifted adds."""
    n = x.shape[-1]
    upper = jnp.triu(jnp.ones((n, n), x.dtype))
    return jnp.matmul(x, upper, precision=jax.lax.Precision.HIGHEST)


def _best_bid_index_max(bid_total: jax.Array) -> jax.Array:
    n = bid_total.shape[-1]
    return jnp.max(jnp.where(bid_total > 0, jnp.arange(n), -1), axis=-1)


def _best_ask_index_min(ask_total: jax.Array) -> jax.Array:
    n = ask_total.shape[-1]
    return jnp.min(jnp.where(ask_total > 0, jnp.arange(n), n), axis=-1)


WHATIFS: dict[str, dict[tuple[str, str], Callable]] = {
    "prefix_matmul": {("book", "prefix_sum"): _prefix_sum_matmul},
    "best_index_minmax": {("book", "best_bid_index"): _best_bid_index_max, ("book", "best_ask_index"): _best_ask_index_min},
}


@contextlib.contextmanager
def whatif(names: list[str] | tuple[str, ...]) -> Iterator[None]:
    import importlib

    saved = []
    try:
        for name in names:
            for (mod_name, attr), fn in WHATIFS[name].items():
                mod = importlib.import_module(f"crashgym.{mod_name}")
                saved.append((mod, attr, getattr(mod, attr)))
                setattr(mod, attr, fn)
        yield
    finally:
        for mod, attr, fn in reversed(saved):
            setattr(mod, attr, fn)


# ------------------------------------------------------------------------ HLO


def hlo_op_names(hlo_text: str) -> dict[str, str]:
    """instruction name -> op_name metadata (the named-scope path)."""
    out = {}
    for line in hlo_text.splitlines():
        m = re.match(r"^\s*(?:ROOT )?%?([\w.\-]+) = ", line)
        if not m:
            continue
        md = re.search(r'op_name="([^"]*)"', line)
        if md:
            out[m.group(1)] = md.group(1)
    return out


def hlo_summary(hlo_text: str) -> dict[str, Any]:
    ops: collections.Counter[str] = collections.Counter()
    for line in hlo_text.splitlines():
        line = re.sub(r"/\*.*?\*/", "", line)
        m = re.match(r"^\s*(?:ROOT )?%?[\w.\-]+ = (?:\([^=]*?\)|[^ ]+) ([a-z][\w\-]*)\(", line)
        if m:
            ops[m.group(1)] += 1
    computations = sum(1 for line in hlo_text.splitlines() if re.match(r"^(ENTRY )?%?[\w.\-]+ .*\{$", line))
    return {"instructions": sum(ops.values()), "computations": computations, "ops": dict(ops.most_common())}


def profile_hlo(num_envs: int) -> dict[str, Any]:
    market, params = _scenario()
    state, key = _init(market, params, num_envs)
    orders = _orders(num_envs)

    def one(state, key, params):
        return market.step_batch(jax.random.split(key, num_envs), state, orders, params)[0]

    t0 = time.perf_counter()
    lowered = jax.jit(one).lower(state, key, params)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    summary = hlo_summary(compiled.as_text())
    pre = hlo_summary(lowered.as_text(dialect="hlo"))
    keep = ("fusion", "scatter", "gather", "sort", "reduce-window", "while", "conditional", "copy", "dynamic-slice",
            "dynamic-update-slice", "reduce", "concatenate", "pad", "select", "broadcast")
    return {
        "num_envs": num_envs,
        "trace_lower_s": t1 - t0,
        "compile_s": t2 - t1,
        "unoptimized_instructions": pre["instructions"],
        "optimized_instructions": summary["instructions"],
        "optimized_ops": {k: summary["ops"].get(k, 0) for k in keep},
        "cost_analysis": {k: float(ca[k]) for k in ("flops", "bytes accessed", "transcendentals") if k in ca},
        "state_bytes_per_env": bench.state_bytes(market.init(jax.random.key(0), params)),
    }


# ---------------------------------------------------------------------- trace


def _scope_parts(op_name: str) -> list[str]:
    """The named scopes of an op_name path, with transform wrappers ('vmap(...)') removed."""
    parts = []
    for p in op_name.split("/"):
        if "#" in p:
            p = re.sub(r"^(?:[\w\-]+\()+", "", p)
            parts.append(p[: len(p) - (len(p) - len(p.rstrip(")")))] if p.endswith(")") else p)
    return parts


def profile_trace(num_envs: int, length: int, force_adl: bool = False, patches: tuple[str, ...] = ()) -> dict[str, Any]:
    """Per-op CPU time of jit(scan(step_batch)) attributed to named scopes (see the module docstring)."""
    from crashgym import adl

    market, params = _scenario()
    state, key = _init(market, params, num_envs)

    def step(keys, s, o, p):
        if not force_adl:
            return market.step_batch(keys, s, o, p)[0]
        s, aux = jax.vmap(market.trade, in_axes=(0, 0, 0, None))(keys, s, o, p)
        s, notional, count = jax.vmap(adl.auto_deleverage, in_axes=(0, None))(s, p)
        return jax.vmap(market.settle, in_axes=(0, 0, 0, 0, None))(s, aux, notional, count, p)[0]

    with whatif(patches), named_scopes() as calls:
        compiled = jax.jit(_rollout(step, num_envs, length), donate_argnums=(0,)).lower(state, key, params).compile()
    calls = dict(calls)
    op_names = hlo_op_names(compiled.as_text())
    state, key = jax.block_until_ready(compiled(state, key, params))
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            t0 = time.perf_counter()
            state, key = jax.block_until_ready(compiled(state, key, params))
            wall = time.perf_counter() - t0
        (path,) = glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True)
        data = jax.profiler.ProfileData.from_file(path)

    per_op: dict[str, float] = collections.defaultdict(float)
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLA"):
                continue
            for ev in line.events:
                name = ev.name.removeprefix("end: ")
                if name.startswith("ThunkExecutor"):
                    continue
                per_op[name] += ev.duration_ns / 1e6
    total = sum(per_op.values())
    by_leaf: dict[str, float] = collections.defaultdict(float)  # innermost function (self time)
    by_call: dict[str, float] = collections.defaultdict(float)  # outermost call under Market.* (inclusive)
    by_stage: dict[str, float] = collections.defaultdict(float)
    by_fn: dict[str, float] = collections.defaultdict(float)  # outermost function, all its calls
    unattributed: dict[str, float] = collections.defaultdict(float)
    for op, ms in per_op.items():
        parts = _scope_parts(op_names.get(op, ""))
        if not parts:
            unattributed[op.split(".")[0]] += ms
            by_stage["(outside the step functions: scan loop, RNG, copies)"] += ms
            continue
        leaf = parts[-1].split(":")[-1].split("#")[0]
        by_leaf[leaf] += ms
        top = next((p for p in parts if ":" in p), None)
        if top is None:  # inline code of Market.trade / settle / step_batch itself
            owner = parts[0].split("#")[0]
            by_call[f"{owner} (inline)"] += ms
            by_stage[f"{owner} (inline code)"] += ms
            by_fn[f"{owner} (inline)"] += ms
        else:
            by_call[top] += ms
            by_stage[top.split(":")[0]] += ms
            by_fn[top.split(":")[1].split("#")[0]] += ms

    def table(d: dict[str, float], n: int = 40) -> list[dict[str, Any]]:
        return [{"name": k, "ms_per_batched_step": v / length, "share": v / total}
                for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:n]]

    return {
        "num_envs": num_envs, "scan_length": length, "force_adl": force_adl, "whatif": list(patches),
        "wall_ms_per_batched_step": wall / length * 1e3,
        "cpu_ms_per_batched_step": total / length,
        "traced_calls": calls,
        "by_stage": table(by_stage), "by_function": table(by_fn), "by_call": table(by_call, 60),
        "by_leaf_function": table(by_leaf), "unattributed_ops": table(unattributed, 15),
        "top_ops": [{"op": k, "op_name": op_names.get(k, ""), "ms_per_batched_step": v / length, "share": v / total}
                    for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])[:25]],
    }


# ------------------------------------------------------------------ ablations


def profile_ablations(num_envs: int, length: int, repeats: int, which: list[str] | None) -> list[dict[str, Any]]:
    from crashgym import adl

    def step_batch(m):
        return lambda k, s, o, p: m.step_batch(k, s, o, p)[0]

    def no_adl_stage(m):
        def f(k, s, o, p):
            s, aux = jax.vmap(m.trade, in_axes=(0, 0, 0, None))(k, s, o, p)
            z = jnp.zeros(s.step.shape, jnp.float32)
            return jax.vmap(m.settle, in_axes=(0, 0, 0, 0, None))(s, aux, z, z.astype(jnp.int32), p)[0]
        return f

    def adl_forced(m):
        def f(k, s, o, p):
            s, aux = jax.vmap(m.trade, in_axes=(0, 0, 0, None))(k, s, o, p)
            s, a, c = jax.vmap(adl.auto_deleverage, in_axes=(0, None))(s, p)
            return jax.vmap(m.settle, in_axes=(0, 0, 0, 0, None))(s, aux, a, c, p)[0]
        return f

    def trade_only(m):
        return lambda k, s, o, p: jax.vmap(m.trade, in_axes=(0, 0, 0, None))(k, s, o, p)[0]

    def rng_only(m):
        def f(k, s, o, p):
            u = jax.vmap(lambda kk: jax.random.uniform(kk, (16 + 5 * m.shape.turnover_slots,)))(k)
            return s.replace(signals=s.signals.replace(mark=s.signals.mark + u[:, 0]))
        return f

    def empty(m):
        return lambda k, s, o, p: s.replace(step=s.step + 1)

    variants: list[tuple[str, dict[str, int], Callable] | tuple[str, dict[str, int], Callable, tuple[str, ...]]] = [
        ("baseline (oct10 shape, step_batch)", {}, step_batch),
        ("empty step (scan + carry only)", {}, empty),
        ("RNG only (split + 36 uniforms per env)", {}, rng_only),
        ("trade only (stages 1-7)", {}, trade_only),
        ("no ADL stage (trade + settle)", {}, no_adl_stage),
        ("ADL branch forced for every env", {}, adl_forced),
        ("n_rounds=1", {"n_rounds": 1}, step_batch),
        ("n_rounds=2", {"n_rounds": 2}, step_batch),
        ("n_rounds=8", {"n_rounds": 8}, step_batch),
        ("n_levels=32", {"n_levels": 32}, step_batch),
        ("n_levels=128", {"n_levels": 128}, step_batch),
        ("n_accounts=256", {"n_accounts": 256}, step_batch),
        ("n_buckets=256", {"n_buckets": 256}, step_batch),
        ("n_accounts=256, n_buckets=256", {"n_accounts": 256, "n_buckets": 256}, step_batch),
        ("what-if prefix_matmul", {}, step_batch, ("prefix_matmul",)),
        ("what-if best_index_minmax", {}, step_batch, ("best_index_minmax",)),
        ("what-if prefix_matmul + best_index_minmax", {}, step_batch, ("prefix_matmul", "best_index_minmax")),
        ("baseline again (drift check)", {}, step_batch),
    ]
    out = []
    for name, shape, make, *rest in variants:
        if which and not any(w in name for w in which):
            continue
        patches = rest[0] if rest else ()
        market, params = _scenario(shape)
        state, key = _init(market, params, num_envs)
        with whatif(patches):
            row = _time_rollout(_rollout(make(market), num_envs, length), state, key, params, length, repeats)
        row = {"variant": name, "shape": shape, "whatif": list(patches), **row,
               "state_bytes_per_env": bench.state_bytes(market.init(jax.random.key(0), params))}
        print(f"  {name:44s} {row['ms_min']:8.1f} ms/step (median {row['ms_median']:.1f}, load {row['load']:.1f})",
              flush=True)
        out.append(row)
    return out


# -------------------------------------------------------------- ADL frequency


def profile_adl_frequency(num_envs: int, batches: tuple[int, ...] = (64, 1024, 4096)) -> dict[str, Any]:
    """Per step of an oct10 episode: share of envs that ran ADL (adl_count > 0) or would run it
    on the state after the step (due and with a profitable counterparty: market._runs_adl)."""
    from crashgym.market import _runs_adl

    market, params = _scenario()
    steps = market.shape.episode_steps
    state, key = _init(market, params, num_envs, seed=1)
    orders = _orders(num_envs)

    def episode(state, key, params):
        def body(carry, _):
            s, k = carry
            k, sub = jax.random.split(k)
            s, info = market.step_batch(jax.random.split(sub, num_envs), s, orders, params)
            need = jax.vmap(_runs_adl, in_axes=(0, None))(s, params)
            return (s, k), (jnp.mean(info["adl_count"] > 0), jnp.mean(need), jnp.mean(info["liquidated_notional"] > 0))
        return jax.lax.scan(body, (state, key), None, length=steps)[1]

    t0 = time.perf_counter()
    ran, need, liq = jax.block_until_ready(jax.jit(episode)(state, key, params))
    seconds = time.perf_counter() - t0
    ran, need, liq = (np.asarray(x, np.float64) for x in (ran, need, liq))
    p = np.maximum(ran, need)  # per-env probability that the step's ADL branch is taken (estimate)
    return {
        "num_envs_sampled": num_envs, "episode_steps": steps, "seconds_incl_compile": seconds,
        "share_of_steps_any_env_needed": float(np.mean(p > 0)),
        "first_step_with_adl": int(np.argmax(p > 0)) if (p > 0).any() else None,
        "mean_env_share_needing": float(p.mean()),
        "expected_share_of_steps_branch_runs": {str(b): float(np.mean(1 - (1 - p) ** b)) for b in batches},
        "share_of_steps_with_liquidations_any_env": float(np.mean(liq > 0)),
        "per_step_env_share_needing_every_60": [round(float(x), 4) for x in p[::60]],
    }


# ------------------------------------------------------------------------ main


def _print_table(title: str, rows: list[dict[str, Any]], n: int = 20) -> None:
    print(f"\n{title}")
    for r in rows[:n]:
        print(f"  {r['ms_per_batched_step']:9.2f} ms  {100 * r['share']:5.1f}%  {r['name']}")


def run_profile(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"device": str(jax.devices()[0]), "num_envs": args.num_envs,
                           "date": time.strftime("%Y-%m-%d"), "load_average_start": os.getloadavg()}
    parts = args.parts.split(",")
    if "hlo" in parts:
        print("HLO of one step_batch ...", flush=True)
        out["hlo"] = profile_hlo(args.num_envs)
        print(json.dumps(out["hlo"], indent=1))
    if "trace" in parts:
        print("profiler trace ...", flush=True)
        out["trace"] = profile_trace(args.num_envs, args.length)
        if args.whatif:
            print(f"profiler trace with what-if {args.whatif} ...", flush=True)
            out["trace_whatif"] = profile_trace(args.num_envs, args.length, patches=tuple(args.whatif.split(",")))
        t = out["trace"]
        print(f"wall {t['wall_ms_per_batched_step']:.1f} ms / batched step, CPU {t['cpu_ms_per_batched_step']:.1f} ms")
        _print_table("by stage", t["by_stage"])
        _print_table("by function (outermost call)", t["by_function"], 30)
        _print_table("by call", t["by_call"], 40)
        _print_table("by innermost function (self)", t["by_leaf_function"], 25)
        _print_table("unattributed ops", t["unattributed_ops"], 10)
        if "trace_whatif" in out:
            t = out["trace_whatif"]
            print(f"\nwhat-if {t['whatif']}: wall {t['wall_ms_per_batched_step']:.1f} ms / batched step,"
                  f" CPU {t['cpu_ms_per_batched_step']:.1f} ms")
            _print_table("by stage (what-if)", t["by_stage"])
            _print_table("by call (what-if)", t["by_call"], 25)
            _print_table("by innermost function (self, what-if)", t["by_leaf_function"], 20)
    if "trace_adl" in parts:
        print("profiler trace, ADL branch forced ...", flush=True)
        out["trace_adl"] = profile_trace(args.num_envs, args.length, force_adl=True)
        t = out["trace_adl"]
        print(f"wall {t['wall_ms_per_batched_step']:.1f} ms / batched step, CPU {t['cpu_ms_per_batched_step']:.1f} ms")
        _print_table("by stage (ADL forced)", t["by_stage"])
        _print_table("by innermost function (self, ADL forced)", t["by_leaf_function"], 25)
    if "ablations" in parts:
        print("ablations (ms per batched step, min over repeats) ...", flush=True)
        out["ablations"] = profile_ablations(args.num_envs, args.ablation_length, args.repeats,
                                             args.only.split(",") if args.only else None)
    if "adl_frequency" in parts:
        print("ADL frequency over an oct10 episode ...", flush=True)
        out["adl_frequency"] = profile_adl_frequency(args.adl_envs)
        print(json.dumps(out["adl_frequency"], indent=1))
    out["load_average_end"] = os.getloadavg()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="profile the core step instead of the benchmark")
    parser.add_argument("--parts", default="hlo,trace,trace_adl,ablations,adl_frequency")
    parser.add_argument("--num-envs", type=int, default=4096, help="(profile) batch size")
    parser.add_argument("--length", type=int, default=4, help="(profile) scan length of the traced call")
    parser.add_argument("--ablation-length", type=int, default=8, help="(profile) scan length per ablation call")
    parser.add_argument("--repeats", type=int, default=5, help="(profile) timed calls per ablation (min reported)")
    parser.add_argument("--only", default=None, help="(profile) comma-separated substrings of ablation names")
    parser.add_argument("--whatif", default="prefix_matmul",
                        help="(profile) what-if patches for a second trace: " + ",".join(WHATIFS) + " ('' for none)")
    parser.add_argument("--adl-envs", type=int, default=512, help="(profile) envs sampled for the ADL frequency")
    parser.add_argument("--out", default=None, help="(profile) JSON path (default: <tmp>/crashgym_profile_cpu.json)")
    args, extra = parser.parse_known_args(argv)
    if not args.profile:
        run_bench(extra)
        return
    if extra:
        parser.error(f"unknown arguments: {extra}")
    result = run_profile(args)
    path = Path(args.out) if args.out else Path(tempfile.gettempdir()) / "crashgym_profile_cpu.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
