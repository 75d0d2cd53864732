"""Stable-Baselines3 adapter: the VecEnv API and a short PPO run."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.env_checker import check_env as sb3_check_env  # noqa: E402,F401
from stable_baselines3.common.vec_env import VecMonitor  # noqa: E402

from crashgym.gym import CrashGymVectorEnv  # noqa: E402
from crashgym.sb3 import SB3VecEnv  # noqa: E402

EPISODE = 16
N = 4


@pytest.fixture(scope="module")
def venv():
    return SB3VecEnv(CrashGymVectorEnv("MarketMaker-v0", num_envs=N, scenario="calm", obligations="mifid",
                                       shape={"n_accounts": 128, "episode_steps": EPISODE}))


def test_vecenv_api(venv):
    assert venv.num_envs == N
    assert venv.observation_space.shape == venv.venv.single_observation_space.shape
    assert venv.get_attr("env_id") == ["MarketMaker-v0"] * N
    assert venv.get_attr("render_mode", indices=[0, 2]) == [None, None]
    params = venv.get_attr("params")[0]
    venv.set_attr("params", params)
    with pytest.raises(ValueError):
        venv.set_attr("params", params, indices=[1])
    assert venv.env_method("set_params", params, indices=[0, 1]) == [None, None]
    assert venv.env_is_wrapped(object) == [False] * N
    venv.seed(5)
    a = venv.reset()
    venv.seed(5)
    b = venv.reset()
    np.testing.assert_array_equal(a, b)


def test_step_infos_and_terminal_observation(venv):
    venv.seed(0)
    venv.reset()
    actions = np.zeros((N, 4), np.float32)
    for t in range(EPISODE):
        obs, rew, done, infos = venv.step(actions)
        assert obs.shape == (N,) + venv.observation_space.shape and rew.dtype == np.float32
        assert len(infos) == N
        for info in infos:
            assert info["cost"] == pytest.approx(float(np.sum(info["costs"])))
            assert len(info["costs"]) == 4
        if t < EPISODE - 1:
            assert not done.any()
            assert not any("terminal_observation" in i for i in infos)
    assert done.all()
    for info in infos:
        assert info["TimeLimit.truncated"] is True
        assert info["terminal_observation"].shape == venv.observation_space.shape


def test_ppo_trains_through_the_adapter(venv):
    env = VecMonitor(venv)
    env.seed(1)
    model = PPO("MlpPolicy", env, n_steps=512 // N, batch_size=64, n_epochs=2, seed=1, device="cpu", verbose=0)
    model.learn(total_timesteps=2048)
    assert model.num_timesteps >= 2048
    assert len(model.ep_info_buffer) >= min(100, 2048 // EPISODE - N)  # the buffer keeps 100
    assert all(np.isfinite(ep["r"]) for ep in model.ep_info_buffer)


# --------------------------------------------------------------------------- agents/sb3_lagrangian.py


def test_lagrangian_callback_penalizes_rewards_in_place():
    from agents.sb3_lagrangian import LagrangianCallback

    cb = LagrangianCallback(limit=0.1, lr=0.5, init=2.0)
    rewards = np.array([1.0, 1.0], np.float32)
    cb.locals = {"rewards": rewards, "infos": [{"cost": 1.0}, {"cost": 0.0}]}
    cb._on_step()
    np.testing.assert_allclose(rewards, [1.0 - 2.0, 1.0])  # the array SB3 will store


@pytest.mark.parametrize("limit, init, direction", [(0.0, 0.0, "up"), (100.0, 1.0, "down")])
def test_lagrangian_callback_dual_ascent_direction(venv, limit, init, direction):
    """Under mifid an untrained policy misses the quote rules on most steps: with limit 0 the
    multiplier rises; with a limit far above any cost it falls (to 0, projected)."""
    from agents.sb3_lagrangian import LagrangianCallback

    cb = LagrangianCallback(limit=limit, lr=0.5, init=init)
    venv.seed(2)
    model = PPO("MlpPolicy", VecMonitor(venv), n_steps=32, batch_size=64, n_epochs=1, seed=2, device="cpu", verbose=0)
    model.learn(total_timesteps=3 * 32 * N, callback=cb)
    lams = [init] + [lam for _, _, lam in cb.history]
    rates = [rate for _, rate, _ in cb.history]
    assert len(cb.history) == 3 and all(r > 0 for r in rates)
    if direction == "up":
        assert all(b > a for a, b in zip(lams, lams[1:]))
    else:
        assert lams[-1] < init and lams[-1] >= 0.0


def test_sb3_policy_converts_to_a_checkpoint(venv):
    from agents.ppo import act_deterministic
    from agents.sb3_lagrangian import identity_normalizer, sb3_to_checkpoint_params

    model = PPO("MlpPolicy", VecMonitor(venv), n_steps=32, seed=4, device="cpu", verbose=0)
    params = sb3_to_checkpoint_params(model)
    obs = np.random.default_rng(0).normal(size=(16, venv.observation_space.shape[0])).astype(np.float32)
    want, _ = model.predict(obs, deterministic=True)
    got = np.asarray(act_deterministic(params, identity_normalizer(obs.shape[1]), obs))
    np.testing.assert_allclose(got, want, atol=1e-5)
