"""Smoke tests of `crashgym bench` (crashgym.bench): tiny sizes, no peers, no timing assertions.

The machine is shared, so nothing here checks a speed: only that the benchmark runs,
returns the documented JSON shape, and that the sharded path (2 forced host devices,
in a subprocess) simulates exactly what the unsharded path does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crashgym import bench

from hangs import SUBPROCESS_TIMEOUT_S  # tests/hangs.py

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(num_envs="1,4", steps=5, peers=False, gym=False, quiet=True, seed=0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    payload = bench.run(argparse.Namespace(**TINY, json=str(path)))
    return payload, path


def test_json_shape(tiny: tuple[dict, Path]) -> None:
    payload, path = tiny
    on_disk = json.loads(path.read_text())
    assert on_disk["results"] == json.loads(json.dumps(payload["results"]))
    assert isinstance(payload["device"], str) and payload["device"]
    rows = [r for r in payload["results"] if r["kind"] == "core"]
    assert [r["num_envs"] for r in rows] == [1, 4]
    for r in payload["results"]:
        assert {"env", "num_envs", "steps_per_second"} <= set(r)
        assert isinstance(r["env"], str)
        assert r["steps_per_second"] > 0 and math.isfinite(r["steps_per_second"])
        assert r["steps"] == 5 and r["scan_length"] == 5 and r["calls"] == 1
        assert r["checksum"]["finite"]
        assert not r["sharded"]  # one CPU device in this process
    for r in rows:
        assert r["checksum"]["step"] == 10  # one warm-up call + one timed call, state chained
    # The largest batch again, from states 480 steps into the episode (run forward at 4 envs).
    (mid,) = [r for r in payload["results"] if r["kind"] == "core-mid-episode"]
    assert mid["num_envs"] == 4 and mid["start_step"] == 480 and mid["checksum"]["step"] == 490
    assert 0.0 <= mid["adl_branch_share"] <= 1.0
    cs = payload["compile_seconds"]
    assert cs["num_envs"] == 4  # measured at the largest batch
    assert cs["cold"] > 0 and cs["warm_cache"] > 0
    assert payload["state_bytes_per_env"] > 0 and isinstance(payload["state_bytes_per_env"], int)
    assert payload["peers"] == []
    assert isinstance(payload["notes"], list) and isinstance(payload["targets"], list)


def test_state_bytes_matches_init() -> None:
    import jax

    from crashgym.market import Market
    from crashgym.scenarios import load_scenario

    sc = load_scenario("oct10")
    one = Market(sc.shape).init(jax.random.key(0), sc.params)
    assert bench.state_bytes(one) == sum(x.nbytes for x in jax.tree.leaves(one))


def test_sharded_matches_unsharded(tiny: tuple[dict, Path], tmp_path: Path) -> None:
    """The batch sharded over 2 host devices gives the same final states as one device."""
    payload, _ = tiny
    out = tmp_path / "sharded.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    import jax

    if jax.config.jax_compilation_cache_dir:  # share the session's persistent cache (see conftest.py)
        env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
    cmd = [sys.executable, "-m", "crashgym.bench", "--num-envs", "4", "--steps", "5", "--no-peers", "--no-gym",
           "--no-compile-time", "--quiet", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = json.loads(out.read_text())
    assert sharded["local_device_count"] == 2
    assert sharded["sharding"]["sharded_num_envs"] == [4]
    for kind in ("core", "core-mid-episode"):  # from reset, and from step 480 (run forward at 4 envs)
        (row,) = [r for r in sharded["results"] if r["kind"] == kind]
        assert row["sharded"] and row["devices"] == 2
        (ref,) = [r for r in payload["results"] if r["kind"] == kind and r["num_envs"] == 4]
        a, b = row["checksum"], ref["checksum"]
        assert a["step"] == b["step"] and a["sum_int"] == b["sum_int"]
        assert a["sum_float"] == pytest.approx(b["sum_float"], rel=1e-6)
        assert a["mark_mean"] == pytest.approx(b["mark_mean"], rel=1e-6)
    (row,) = [r for r in sharded["results"] if r["kind"] == "core"]
    assert "batch" in row["state_sharding"]


def test_table_plot_and_missing_peers(tiny: tuple[dict, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    payload, _ = tiny
    bench.print_table(payload)
    text = capsys.readouterr().out
    assert "market-core[oct10]" in text and "bytes/env" in text
    bench.plot(payload, str(tmp_path / "scaling.png"))
    assert (tmp_path / "scaling.png").stat().st_size > 0
    # An installed package without the benchmarks folder: peers are skipped with a note.
    bench.load_peers.cache_clear()
    monkeypatch.setattr(bench, "repo_root", lambda: tmp_path)
    rows, notes = bench.measure_peers([1], all_peers=False, log=lambda s: None)
    bench.load_peers.cache_clear()
    assert rows == [] and notes and "peers skipped" in notes[0]


def test_cli_options() -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args([])
    assert args.env == "MarketMaker-v0" and args.scenario == "oct10" and args.num_envs == "1,64,1024,4096"
    assert args.peers and args.steps is None and args.json is None and args.plot is None
    assert not parser.parse_args(["--no-peers"]).peers
    with pytest.raises(SystemExit):
        parser.parse_args(["--num-envs", "1,x"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--num-envs", "0"])


def test_settings_are_laid_over_the_scenario_and_recorded() -> None:
    settings = ["shape.n_levels=32", "shape.n_accounts=64", "market.flow.cancel_rate=0.02"]
    payload = bench.run(argparse.Namespace(**dict(TINY, num_envs="2", steps=2), scenario="calm", json=None,
                                           compile_time=False, mid_episode_step=0, settings=settings))
    assert payload["shape"]["n_levels"] == 32 and payload["shape"]["n_accounts"] == 64
    assert payload["settings"] == settings
    assert "--set shape.n_levels=32 --set shape.n_accounts=64" in payload["command"]
    (row,) = payload["results"]
    assert row["checksum"]["finite"] and row["num_envs"] == 2
    with pytest.raises(SystemExit, match="market.flow.no_such_key"):
        bench.run(argparse.Namespace(**TINY, settings=["market.flow.no_such_key=1"]))
