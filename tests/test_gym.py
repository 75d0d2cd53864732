"""Gymnasium adapters: check_env, the native vector env (same-step autoreset), seeding,
input validation, registration, rendering and the Safety wrapper."""

from __future__ import annotations

import gymnasium
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import crashgym  # noqa: F401  (registers the ids)
from crashgym.gym import CrashGymEnv, CrashGymVectorEnv
from crashgym.safety import SafetyWrapper

EPISODE = 10
SMALL = {"n_accounts": 128, "episode_steps": EPISODE}
N = 3


@pytest.fixture(scope="module")
def mm_env():
    env = gymnasium.make("crashgym/MarketMaker-v0", scenario="calm", obligations="mifid", shape=SMALL,
                         render_mode="rgb_array").unwrapped
    assert isinstance(env, CrashGymEnv)
    return env


@pytest.fixture(scope="module")
def mm_vec():
    return CrashGymVectorEnv("MarketMaker-v0", num_envs=N, scenario="calm", obligations="mifid", shape=SMALL)


def test_check_env_market_maker(mm_env):
    check_env(mm_env, skip_render_check=False)


def test_check_env_leveraged_trader():
    check_env(gymnasium.make("crashgym/LeveragedTrader-v0", scenario="calm", shape=SMALL, render_mode="ansi").unwrapped)


def test_registered_ids_make_and_make_vec():
    env = gymnasium.make("crashgym/MarketMaker-v0", scenario="calm", shape=SMALL)
    assert isinstance(env.unwrapped, CrashGymEnv)
    venv = gymnasium.make_vec("crashgym/MarketMaker-v0", num_envs=N, scenario="calm", shape=SMALL)
    assert isinstance(venv, CrashGymVectorEnv)  # vector_entry_point is the default mode
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert venv.observation_space.shape == (N,) + venv.single_observation_space.shape
    assert venv.action_space.shape == (N, 4)
    venv2 = gymnasium.make_vec("crashgym/MarketMaker-v0", num_envs=N, vectorization_mode="vector_entry_point",
                               scenario="calm", shape=SMALL, max_episode_steps=5)
    assert int(venv2.params.max_steps) == 5
    # --set style settings pass through both constructors to crashgym.make.
    env3 = gymnasium.make("crashgym/MarketMaker-v0", scenario="calm", shape=SMALL, settings=["shape.n_levels=32"])
    venv3 = gymnasium.make_vec("crashgym/MarketMaker-v0", num_envs=N, scenario="calm", shape=SMALL,
                               settings=["market.flow.cancel_rate=0.02"])
    assert env3.unwrapped.env.shape.n_levels == 32 and env.unwrapped.env.shape.n_levels == 64
    assert float(venv3.params.market.flow.cancel_rate) == pytest.approx(0.02)


def test_single_env_bad_actions(mm_env):
    mm_env.reset(seed=0)
    with pytest.raises(ValueError, match="NaN"):
        mm_env.step(np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="inf"):
        mm_env.step(np.array([0.0, 0.0, np.inf, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        mm_env.step(np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        mm_env.step(np.zeros((1, 4)))
    obs, r, term, trunc, info = mm_env.step(np.array([5.0, -5.0, 2.0, 0.0]))  # clipped to the box
    assert mm_env.observation_space.contains(obs)
    assert info["cost"] == pytest.approx(float(np.sum(info["costs"])))


def test_vector_env_bad_actions_name_the_env(mm_vec):
    mm_vec.reset(seed=0)
    a = np.zeros((N, 4), np.float32)
    a[2, 1] = np.nan
    with pytest.raises(ValueError, match="env 2.*NaN"):
        mm_vec.step(a)
    a[2, 1] = 0.0
    a[1, 3] = -np.inf
    with pytest.raises(ValueError, match="env 1.*inf"):
        mm_vec.step(a)
    with pytest.raises(ValueError, match="shape"):
        mm_vec.step(np.zeros((N + 1, 4)))


def test_single_env_seeding_is_deterministic(mm_env):
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (4, 4)).astype(np.float32)
    runs = []
    for _ in range(2):
        obs, _ = mm_env.reset(seed=123)
        traj = [obs]
        for a in actions:
            obs, r, *_ = mm_env.step(a)
            traj += [obs, np.float32(r)]
        runs.append(traj)
    for x, y in zip(*runs):
        np.testing.assert_array_equal(x, y)
    other, _ = mm_env.reset(seed=124)
    mm_env.step(actions[0])
    assert not np.array_equal(mm_env.step(actions[1])[0], runs[0][3])


def test_vector_env_autoreset_same_step(mm_vec):
    import jax

    obs, info = mm_vec.reset(seed=7)
    assert obs.shape == (N, len(mm_vec.env.OBS_NAMES)) and info == {}
    # Make env 1 three steps older so that its episode ends before the others'.
    st = mm_vec.state
    mm_vec.state = st.replace(time=st.time.at[1].add(3))
    a = np.zeros((N, 4), np.float32)
    ended = []
    for t in range(EPISODE + 1):
        obs, rew, term, trunc, info = mm_vec.step(a)
        assert obs.dtype == np.float32 and rew.shape == (N,) and term.dtype == bool
        assert info["_cost"].all() and info["cost"].shape == (N,) and info["costs"].shape == (N, 4)
        assert info["market"]["mark_price"].shape == (N,) and info["_market"].all()
        done = term | trunc
        if done.any():
            assert np.array_equal(info["_final_obs"], done) and np.array_equal(info["_final_info"], done)
            for i in range(N):
                if done[i]:
                    assert info["final_obs"][i].shape == obs[i].shape
                    assert not np.array_equal(info["final_obs"][i], obs[i])  # obs is the next episode's first
                else:
                    assert info["final_obs"][i] is None
            assert np.array_equal(info["final_info"]["_cost"], done)
            ended.append((t, np.flatnonzero(done).tolist()))
        else:
            assert "final_obs" not in info and "final_info" not in info
    assert ended == [(EPISODE - 4, [1]), (EPISODE - 1, [0, 2])]
    # After the autoreset the env's step counter starts again.
    assert np.asarray(jax.device_get(mm_vec.state.time)).tolist() == [1, 4, 1]


def test_vector_env_equals_single_envs(mm_vec, mm_env):
    """Env i of a vector env seeded s follows the single env seeded s + i (autoreset included)."""
    rng = np.random.default_rng(1)
    steps = EPISODE + 2
    actions = rng.uniform(-1, 1, (steps, N, 4)).astype(np.float32)
    vobs, _ = mm_vec.reset(seed=40)
    v_obs, v_rew = [vobs], []
    for t in range(steps):
        o, r, term, trunc, _ = mm_vec.step(actions[t])
        v_obs.append(o)
        v_rew.append(r)
    for i in range(N):
        obs, _ = mm_env.reset(seed=40 + i)
        np.testing.assert_allclose(obs, v_obs[0][i], rtol=1e-5, atol=1e-5)
        for t in range(steps):
            obs, r, term, trunc, _ = mm_env.step(actions[t, i])
            if term or trunc:
                obs, _ = mm_env.reset()
            np.testing.assert_allclose(obs, v_obs[t + 1][i], rtol=1e-4, atol=1e-4, err_msg=f"env {i} step {t}")
            assert r == pytest.approx(float(v_rew[t][i]), abs=1e-5)


def test_vector_env_seeding(mm_vec):
    a = np.full((N, 4), 0.2, np.float32)
    first = [mm_vec.reset(seed=3)[0], mm_vec.step(a)[0]]
    second = [mm_vec.reset(seed=3)[0], mm_vec.step(a)[0]]
    for x, y in zip(first, second):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first[0][0], first[0][1])  # envs differ


def test_render_modes(mm_env):
    mm_env.reset(seed=0)
    for _ in range(3):
        mm_env.step(mm_env.action_space.sample())
    frame = mm_env.render()
    assert frame.shape == (360, 480, 3) and frame.dtype == np.uint8 and frame.std() > 0
    text = CrashGymEnv(env=mm_env.env, params=mm_env.params, render_mode="ansi")
    text.reset(seed=0)
    out = text.render()
    assert "mid" in out and "spread" in out and "insurance fund" in out and "inventory" in out


def test_safety_wrapper_cost_is_info_cost(mm_env):
    env = SafetyWrapper(mm_env)
    env.reset(seed=5)
    seen = []
    for a in ([-1, -1, -1, -1], [-1, -1, 1, 1], [0, 0, 0, 0]):
        obs, reward, cost, term, trunc, info = env.step(np.asarray(a, np.float32))
        assert cost == info["cost"] and isinstance(reward, float)
        seen.append(cost)
    assert seen[0] > 0  # full withdrawal breaks the mifid obligation
    assert jnp.isfinite(jnp.asarray(seen)).all()


def test_tree_packer_round_trip_is_exact():
    """Pack / unpack keeps every leaf's dtype, shape and bits (one buffer per dtype)."""
    from crashgym.packing import TreePacker

    rng = np.random.default_rng(3)
    tree = {"f": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "i": jnp.asarray(rng.integers(-9, 9, 5), jnp.int32),
            "b": jnp.asarray(rng.random(2) > 0.5), "s": (jnp.float32(np.nan), jnp.int32(-7), jnp.float32(-0.0))}
    packer = TreePacker(tree)
    bufs = packer.pack(tree)
    assert len(bufs) == 3 and sorted(str(b.dtype) for b in bufs) == ["bool", "float32", "int32"]
    back = packer.unpack(bufs)
    for x, y in zip(jax_leaves(tree), jax_leaves(back)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.atleast_1d(np.asarray(x)).view(np.uint8), np.atleast_1d(np.asarray(y)).view(np.uint8))


def test_single_env_state_round_trips_through_its_packed_form(mm_env):
    """`state` unpacks the packed carry; setting it packs it again, and the env steps on from it."""
    mm_env.reset(seed=5)
    a = np.zeros(4, np.float32)
    assert not any(mm_env.step(a)[2:4])
    st = mm_env.state
    last = int(mm_env.params.max_steps) - 1
    mm_env.state = st.replace(time=st.time * 0 + last)
    assert int(mm_env.state.time) == last
    np.testing.assert_array_equal(np.asarray(mm_env.state.market.accounts.size), np.asarray(st.market.accounts.size))
    assert mm_env.step(a)[3]  # truncated: the step saw the time that was set


def jax_leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_states_handed_out_survive_the_next_steps(mm_vec, mm_env):
    """Both adapters donate their state to the jitted step; what `state` returned stays valid."""
    for env, a in ((mm_vec, np.zeros((N, 4), np.float32)), (mm_env, np.zeros(4, np.float32))):
        env.reset(seed=9)
        before = env.state
        t0 = np.asarray(before.time).copy()
        env.step(a)
        env.step(a)
        np.testing.assert_array_equal(np.asarray(before.time), t0)
        np.testing.assert_array_equal(np.asarray(env.state.time), t0 + 2)
        env.state = before  # and a state handed back in is copied, not consumed
        env.step(a)
        np.testing.assert_array_equal(np.asarray(before.time), t0)
