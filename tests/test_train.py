"""The training loop on a tiny budget: it runs, the losses are finite, the Lagrange
multipliers move the right way, a checkpoint round-trips exactly and acts the same, and
`crashgym train` -> `crashgym run --agent CKPT` works end to end. (Whether learning
*works* is benchmarks/learning.py's job, not a test's.)"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import crashgym
from agents import checkpoint, evaluate, ppo, ppo_lagrangian
from crashgym.cli import main
from crashgym.obligations import COMPONENTS, load_obligations

from env_stepping import assert_same_market, env_trajectory  # tests/env_stepping.py
from hangs import SUBPROCESS_TIMEOUT_S  # tests/hangs.py

# The same market and config as `crashgym train --algo ppo-lag --steps 256 --seeds 2 --num-envs 16
# --num-steps 8 --episode-steps 16 --accounts 128` builds, so the CLI test below reuses this
# compile (persistent cache): compiling the training loop is most of these tests' time.
SHAPE = {"n_accounts": 128, "turnover_slots": 4, "episode_steps": 16}
CONFIG = ppo.PPOConfig(num_envs=16, num_steps=8, total_steps=2 * 16 * 16, num_seeds=2, num_minibatches=8)
CLI_TRAIN = ["train", "--env", "MarketMaker-v0", "--scenario", "calm", "--obligations", "mifid", "--algo", "ppo-lag",
             "--steps", "256", "--seeds", "2", "--num-envs", "16", "--num-steps", "8", "--episode-steps", "16",
             "--accounts", "128"]


@pytest.fixture(scope="module")
def mifid_env():
    return crashgym.make("MarketMaker-v0", scenario="calm", obligations="mifid", shape=SHAPE)


@pytest.fixture(scope="module")
def lag_result(mifid_env, tmp_path_factory):
    env, params = mifid_env
    logdir = tmp_path_factory.mktemp("curves")
    return ppo_lagrangian.train(CONFIG, env, params, logdir=str(logdir)), logdir


def test_plan_rounds_rollouts_to_the_episode():
    assert ppo.PPOConfig(num_steps=32).rollout_steps(1080) == 30
    T, U, chunks = CONFIG.plan(16)
    assert (T, U, chunks) == (8, 2, 2)
    assert ppo.PPOConfig(num_envs=16, total_steps=16 * 16 + 1).plan(16)[2] == 2  # rounded up to whole episodes


def test_ppo_lagrangian_runs_with_finite_losses(lag_result):
    res, logdir = lag_result
    m = res.metrics
    U = 2 * 2  # updates: 2 chunks (episodes) x 2 updates each
    assert m["pg_loss"].shape == (U, CONFIG.num_seeds) and m["lagrange"].shape == (U, CONFIG.num_seeds, len(COMPONENTS))
    for k in ("pg_loss", "vf_loss", "entropy", "approx_kl", "reward_per_step", "cost_per_step"):
        assert np.all(np.isfinite(m[k])), k
    assert res.env_steps == 2 * 16 * 16
    # one episode per chunk: episode metrics on the chunk's last update only
    assert np.all(np.isnan(m["episode_return"][0])) and np.all(np.isfinite(m["episode_return"][1]))
    # learning curves: CSV with a row per (update, seed) and a TensorBoard event file
    rows = (logdir / "curves.csv").read_text().splitlines()
    assert len(rows) == 1 + U * CONFIG.num_seeds and "lagrange/spread" in rows[0]
    assert any(p.name.startswith("events.out.tfevents") for p in logdir.iterdir())


def test_multipliers_follow_dual_ascent(lag_result, mifid_env):
    """An untrained maker quotes ~10 ticks from the mid (~100 bps wide): the spread rule
    fails on most steps, far above its limit, so lambda_spread rises every update; the
    distance rule is off in mifid (cost 0, below its limit), so lambda_distance stays 0."""
    res, _ = lag_result
    lam, rate = res.metrics["lagrange"], res.metrics["cost_rate"]
    limits = ppo_lagrangian.cost_limits(mifid_env[1].obligations)
    s, d = COMPONENTS.index("spread"), COMPONENTS.index("distance")
    assert np.all(rate[:, :, s] > limits[s])
    assert np.all(np.diff(lam[:, :, s], axis=0) > 0) and np.all(lam[0, :, s] > 0)
    expected = np.maximum(lam[:-1] + 0.5 * (rate[1:] - np.asarray(limits)), 0.0)  # lr 0.5 (default)
    np.testing.assert_allclose(lam[1:], expected, rtol=1e-5, atol=1e-6)
    assert np.all(lam[:, :, d] == 0)


def test_cost_limits_follow_the_rule():
    lim = dict(zip(COMPONENTS, ppo_lagrangian.cost_limits(load_obligations("mifid"), margin=0.05)))
    assert lim["spread"] == pytest.approx(0.45) and lim["size"] == pytest.approx(0.45)
    assert ppo_lagrangian.summed_cost_limit(load_obligations("none")) == 0.0
    # mifid: spread + size + presence are on, distance is off
    assert ppo_lagrangian.summed_cost_limit(load_obligations("mifid")) == pytest.approx(0.45 + 0.45 + 0.002)


def test_checkpoint_round_trips_and_acts_the_same(lag_result, mifid_env, tmp_path):
    res, _ = lag_result
    env, params = mifid_env
    p, norm = ppo.seed_slice(res.runner, 1)
    meta = checkpoint.metadata_for("MarketMaker-v0", "calm", "mifid", params.obligations, "ppo-lag", env.shape, params,
                                   env, seed=3, env_steps=res.env_steps)
    path = checkpoint.save(str(tmp_path / "agent"), p, norm, meta)
    ck = checkpoint.load(path)
    for a, b in zip(jax.tree_util.tree_leaves((p, norm)), jax.tree_util.tree_leaves((ck.params, ck.norm))):
        np.testing.assert_array_equal(np.asarray(a), b)
    assert ck.metadata["algo"] == "ppo-lag" and ck.metadata["obligations"] == "mifid"
    env2, params2 = checkpoint.env_and_params(ck)
    assert env2.shape == env.shape and params2.max_steps == params.max_steps
    np.testing.assert_array_equal(np.asarray(params2.obligations.presence_target), params.obligations.presence_target)
    obs = jax.random.normal(jax.random.key(0), (32, env.observation_space(params).shape[0]))
    np.testing.assert_array_equal(np.asarray(ppo.act_deterministic(p, norm, obs)),
                                  np.asarray(checkpoint.act_fn(ck)(obs)))
    # and the evaluation through the rebuilt env gives the same episodes as the original policy
    a = evaluate.evaluate(env, params, evaluate.from_params(p, norm), episodes=2, seed=9, chunk=16)
    b = evaluate.evaluate(env2, params2, evaluate.from_checkpoint(ck), episodes=2, seed=9, chunk=16)
    np.testing.assert_array_equal(a.episode["return"], b.episode["return"])


def test_not_a_checkpoint_is_named(tmp_path):
    bad = tmp_path / "x.npz"
    np.savez(bad, a=np.zeros(2))
    with pytest.raises(ValueError, match="not a crashgym checkpoint"):
        checkpoint.load(str(bad))


def test_cli_train_then_run(lag_result, tmp_path):  # after the fixture: its compile is reused
    ckpt, out, run_json = tmp_path / "mm.npz", tmp_path / "train.json", tmp_path / "run.json"
    # calm's own long bias, so the fixture's compile is reused; what is checked is that the
    # setting is recorded and travels with the checkpoint (crashgym.make's tests check that it acts).
    setting = "market.accounts.long_bias=0.55"
    assert main(CLI_TRAIN + ["--checkpoint", str(ckpt), "--json", str(out), "--set", setting]) == 0
    data = json.loads(out.read_text())
    assert data["settings"] == [setting]
    trained = checkpoint.load(str(ckpt))
    assert trained.metadata["market"] == {"accounts": {"long_bias": 0.55}}
    _, on_oct10 = checkpoint.env_and_params(trained, scenario="oct10")  # oct10's own bias is 0.87
    assert float(on_oct10.market.accounts.long_bias) == pytest.approx(0.55)
    assert {"env", "scenario", "algo", "steps", "steps_per_second", "checkpoint"} <= set(data)
    assert data["algo"] == "ppo-lag" and data["steps"] == 256 and data["steps_per_second"] > 0
    assert data["checkpoint"] == str(ckpt) and ckpt.exists()
    assert set(data["lagrange"]) == set(COMPONENTS)
    assert (tmp_path / "mm.logs" / "curves.csv").exists()
    assert checkpoint.load(str(ckpt)).metadata["obligation_params"]["presence_target"] == 0.5
    # the scenario's full-size market (64 levels, 1024 accounts): the policy adapts to the run's shape
    assert main(["run", "--scenario", "calm", "--agent", str(ckpt), "--seeds", "2", "--steps", "30",
                 "--json", str(run_json)]) == 0
    assert np.isfinite(json.loads(run_json.read_text())["metrics"]["agent_return"]["mean"])


def test_cli_train_rejects_bad_input(tmp_path):
    with pytest.raises(SystemExit, match="unknown obligations config 'nosuch'"):
        main(["train", "--obligations", "nosuch", "--steps", "10", "--checkpoint", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="--steps must be >= 1"):
        main(["train", "--steps", "0"])
    with pytest.raises(SystemExit, match="market.flow.cancel_rate"):  # the schema's check, reached through train
        main(["train", "--set", "market.flow.cancel_rate=-1", "--steps", "10", "--checkpoint", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="shape.n_levelz"):
        main(["train", "--set", "shape.n_levelz=32", "--steps", "10", "--checkpoint", str(tmp_path / "x")])


def test_training_sharded_over_two_devices_matches_one(mifid_env, tmp_path):
    """The env batch split over 2 forced host devices trains like one device: the first
    rollout (before any update) is the same, and the final networks agree to float32
    reduction-order noise."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    env, params = mifid_env
    cfg = ppo.PPOConfig(num_envs=16, num_steps=8, total_steps=16 * 16, num_seeds=1, num_minibatches=4)
    one = ppo.train(cfg, env, params)
    out = tmp_path / "sharded.npz"
    script = textwrap.dedent(f"""
        import jax, numpy as np
        assert jax.local_device_count() == 2, jax.devices()
        import crashgym
        from agents import ppo
        env, params = crashgym.make("MarketMaker-v0", scenario="calm", obligations="mifid", shape={SHAPE!r})
        cfg = ppo.PPOConfig(num_envs=16, num_steps=8, total_steps=16 * 16, num_seeds=1, num_minibatches=4)
        r = ppo.train(cfg, env, params)
        leaves = jax.tree_util.tree_leaves(r.runner["params"])
        np.savez({str(out)!r}, reward=r.metrics["reward_per_step"], *[np.asarray(x) for x in leaves])
    """)
    root = Path(__file__).resolve().parent.parent
    run_env = dict(os.environ, JAX_PLATFORMS="cpu",
                   XLA_FLAGS=os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
    subprocess.run([sys.executable, "-c", script], cwd=root, env=run_env, check=True, timeout=SUBPROCESS_TIMEOUT_S)
    sharded = np.load(out)
    np.testing.assert_allclose(sharded["reward"][0], one.metrics["reward_per_step"][0], rtol=1e-5)
    leaves = jax.tree_util.tree_leaves(one.runner["params"])
    for i, leaf in enumerate(leaves):
        np.testing.assert_allclose(sharded[f"arr_{i}"], np.asarray(leaf), rtol=1e-3, atol=1e-4)


def test_run_policy_sees_the_envs_own_observations(lag_result, mifid_env, tmp_path):
    """`crashgym run --agent CKPT` (rollout.run_batch with checkpoint.load_policy) steps the
    market exactly as the env does with the same network: same keys, same orders, same market."""
    from crashgym.rollout import StatefulPolicy, run_batch

    res, _ = lag_result
    env, params = mifid_env
    p, norm = ppo.seed_slice(res.runner, 0)
    meta = checkpoint.metadata_for("MarketMaker-v0", "calm", "mifid", params.obligations, "ppo-lag", env.shape, params,
                                   env)
    path = checkpoint.save(str(tmp_path / "agent"), p, norm, meta)
    policy = checkpoint.load_policy(path)
    seeds, steps = 3, int(env.shape.episode_steps)
    ran, _ = run_batch(env.shape, params.market, seeds, policy=policy, seed=5, chunk=steps, shard=False)

    act = checkpoint.act_fn(checkpoint.load(path))
    stepped, _, _ = env_trajectory(env, params, lambda state, p: act(env.observe(state, p)), seed=5, seeds=seeds,
                             steps=steps)
    assert_same_market(ran, stepped)

    # The memory matters: frozen at reset (the returns, presence and last-step features never
    # move), the same network trades differently.
    frozen = StatefulPolicy(policy.init, policy.act, lambda memory, *_: memory)
    stale, _ = run_batch(env.shape, params.market, seeds, policy=frozen, seed=5, chunk=steps, shard=False)
    assert any(not np.allclose(stale[n], ran[n]) for n in ran)
