"""The README's usage snippets (Gymnasium, Stable-Baselines3, JAX), run verbatim.

Keep these strings identical to the README's code blocks.
"""

from __future__ import annotations

import pytest

GYMNASIUM = '''
import gymnasium
import crashgym  # registers crashgym/MarketMaker-v0 and crashgym/LeveragedTrader-v0

env = gymnasium.make("crashgym/MarketMaker-v0", scenario="calm", obligations="mifid")
obs, info = env.reset(seed=0)
for _ in range(5):
    action = env.action_space.sample()  # bid offset, ask offset, bid size, ask size in [-1, 1]
    obs, reward, terminated, truncated, info = env.step(action)
    print(f"reward {reward:+.4f}  cost {info['cost']:.2f}  mark {info['market']['mark_price']:.2f}")

# A native JAX vector env: one jitted call steps all envs, autoreset in the same step.
envs = gymnasium.make_vec("crashgym/MarketMaker-v0", num_envs=16, scenario="oct10")
obs, info = envs.reset(seed=0)
obs, rewards, terminations, truncations, info = envs.step(envs.action_space.sample())
print(obs.shape, info["cost"].mean(), info["market"]["depth_2pct"].mean())
'''

SB3 = '''
from stable_baselines3 import PPO
from crashgym.gym import CrashGymVectorEnv
from crashgym.sb3 import SB3VecEnv

venv = SB3VecEnv(CrashGymVectorEnv("MarketMaker-v0", num_envs=16, scenario="calm"))
model = PPO("MlpPolicy", venv, n_steps=128, batch_size=256, verbose=0)
model.learn(total_timesteps=2048)
'''

JAX = '''
import jax
import jax.numpy as jnp
import crashgym

env, params = crashgym.make("MarketMaker-v0", scenario="oct10", obligations="mifid")
keys = jax.random.split(jax.random.key(0), 64)
reset = jax.jit(jax.vmap(env.reset, in_axes=(0, None)))
step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))  # or env.step_batch: skips idle ADL
obs, state = reset(keys, params)
action = jnp.tile(jnp.array([-0.5, -0.5, 0.0, 0.0]), (64, 1))  # 5 ticks out, half size, both sides
obs, state, reward, terminated, truncated, info = step(keys, state, action, params)
print(reward.mean(), info["cost"].mean(), info["costs"].shape, info["market"]["mark_price"].mean())
'''

SNIPPETS = {"gymnasium": GYMNASIUM, "sb3": SB3, "jax": JAX}


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_readme_snippet(name):
    if name == "sb3":
        pytest.importorskip("stable_baselines3")
    exec(compile(SNIPPETS[name], f"<README {name} snippet>", "exec"), {"__name__": "__readme__"})
