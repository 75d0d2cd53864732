"""Multi-host smoke run on one machine: two processes joined by ``jax.distributed``.

    python benchmarks/multihost.py [--scenario oct10] [--seeds 8] [--steps 120]

Starts two worker processes on this machine that call ``jax.distributed.initialize`` with a
local coordinator (process 0 and 1 of 2, CPU), so ``jax.devices()`` spans both processes
while ``jax.local_devices()`` is each process's own. Each worker runs its share of the seeds
(``seed_ids`` i, i + 2, ...) through ``crashgym.rollout.run_batch``, sharded over its local
devices: the per-host pattern docs/obligations_and_rules.md describes. The launcher then runs
all seeds in one process and checks that the two hosts' results, put back together, are
bit-identical. Exit status 0 when they are; the JSON summary is printed.

What this exercises: distributed initialisation, process-aware batching, and that a member's
result depends only on (seed, seed_id, params). What it does not: one batch spanning hosts
(a global mesh over ``jax.devices()``), which crashgym does not implement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N_PROCESSES = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(args: argparse.Namespace) -> None:
    import jax
    import numpy as np

    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=N_PROCESSES,
                               process_id=args.process_id)
    from crashgym.rollout import run_batch
    from crashgym.scenarios import load_scenario

    sc = load_scenario(args.scenario)
    shape = dataclasses.replace(sc.shape, episode_steps=args.steps)
    ids = np.arange(args.seeds)[jax.process_index()::jax.process_count()]
    info, _ = run_batch(shape, sc.params, len(ids), seed_ids=ids, chunk=40)
    np.savez(args.out, ids=ids, process_count=jax.process_count(), global_devices=len(jax.devices()),
             local_devices=jax.local_device_count(), **{f"info_{k}": v for k, v in info.items()})
    jax.distributed.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="oct10")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--process-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--coordinator", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return 0

    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="crashgym_multihost_"))
    coordinator = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--process-id", str(i), "--coordinator", coordinator,
                               "--scenario", args.scenario, "--seeds", str(args.seeds), "--steps", str(args.steps),
                               "--out", str(tmp / f"p{i}.npz")], env=env) for i in range(N_PROCESSES)]
    codes = [p.wait(timeout=900) for p in procs]
    wall = time.perf_counter() - t0
    if any(codes):
        print(f"worker exit codes {codes}", file=sys.stderr)
        return 1
    parts = [np.load(tmp / f"p{i}.npz") for i in range(N_PROCESSES)]

    sys.path.insert(0, str(ROOT))
    from crashgym.rollout import run_batch
    from crashgym.scenarios import load_scenario

    sc = load_scenario(args.scenario)
    shape = dataclasses.replace(sc.shape, episode_steps=args.steps)
    whole, _ = run_batch(shape, sc.params, args.seeds, chunk=40)
    mismatched = []
    for part in parts:
        ids = part["ids"]
        for k, v in whole.items():
            if not np.array_equal(part[f"info_{k}"], v[:, ids], equal_nan=True):
                mismatched.append(k)
    summary = {"scenario": args.scenario, "seeds": args.seeds, "steps": args.steps, "processes": N_PROCESSES,
               "process_count_seen": [int(p["process_count"]) for p in parts],
               "global_devices_seen": [int(p["global_devices"]) for p in parts],
               "local_devices_seen": [int(p["local_devices"]) for p in parts],
               "workers_wall_seconds": round(wall, 1), "bit_identical": not mismatched,
               "mismatched_keys": sorted(set(mismatched))}
    print(json.dumps(summary, indent=2))
    return 0 if not mismatched else 1


if __name__ == "__main__":
    sys.exit(main())
