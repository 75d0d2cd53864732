"""Stable-Baselines3 adapter: a crashgym vector env as an SB3 ``VecEnv``.

    from stable_baselines3 import PPO
    from crashgym.gym import CrashGymVectorEnv
    from crashgym.sb3 import SB3VecEnv

    venv = SB3VecEnv(CrashGymVectorEnv("MarketMaker-v0", num_envs=16, scenario="calm"))
    PPO("MlpPolicy", venv).learn(10_000)

Per-env infos (a list of dicts, as SB3 expects): ``cost`` (float), ``costs`` (array, one
entry per crashgym.obligations.COMPONENTS), ``TimeLimit.truncated`` (True when the episode
was cut by the time limit and not terminated), and ``terminal_observation`` where the
episode ended (the returned observation is then the first of the next episode; the
underlying vector env resets in the same step). The full batched Gymnasium info of the
last step is kept in ``self.last_info``.

All N environments live in one jitted batch, so attribute access is batch-wide:
``get_attr(name)`` reads the attribute of the vector env (e.g. ``params``, ``env_id``,
``render_mode``) and returns it once per requested index; ``set_attr(name, value)`` sets
it on the vector env, for every env (``indices`` naming only some of them raise
ValueError); ``env_method(name, ...)`` calls the vector env's method once and returns its
result once per requested index. ``seed(s)`` makes the next ``reset()`` seed env i with ``s + i``
(the same env i as a single crashgym Gymnasium env seeded ``s + i``).
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium
import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from crashgym.gym import CrashGymVectorEnv

__all__ = ["SB3VecEnv"]


class SB3VecEnv(VecEnv):
    def __init__(self, vector_env: CrashGymVectorEnv):
        self.venv = vector_env
        self._actions: np.ndarray | None = None
        self.last_info: dict[str, Any] = {}
        super().__init__(vector_env.num_envs, vector_env.single_observation_space, vector_env.single_action_space)

    # ---------------------------------------------------------------- stepping
    def reset(self) -> np.ndarray:
        seeds = self._seeds if all(x is not None for x in self._seeds) else None
        obs, info = self.venv.reset(seed=seeds)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        obs, reward, term, trunc, info = self.venv.step(self._actions.reshape(self.venv.action_space.shape))
        self._actions = None
        self.last_info = info
        done = term | trunc
        cost = info["cost"].tolist()
        costs = info["costs"]
        limit = (trunc & ~term).tolist()
        infos = [{"cost": c, "costs": costs[i], "TimeLimit.truncated": t} for i, (c, t) in enumerate(zip(cost, limit))]
        if done.any():
            final = info["final_obs"]
            for i in np.flatnonzero(done):
                infos[i]["terminal_observation"] = final[i]
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        self.venv.close()

    # ---------------------------------------------------------------- attributes
    def _count(self, indices) -> int:
        return len(list(self._get_indices(indices)))

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        value = getattr(self.venv, attr_name)
        return [value] * self._count(indices)

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        if self._count(indices) != self.num_envs:
            raise ValueError("crashgym envs share one batch: set_attr applies to all envs (indices=None)")
        setattr(self.venv, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        result = getattr(self.venv, method_name)(*method_args, **method_kwargs)
        return [result] * self._count(indices)

    def env_is_wrapped(self, wrapper_class: type[gymnasium.Wrapper], indices=None) -> list[bool]:
        return [False] * self._count(indices)

    def get_images(self) -> Sequence[np.ndarray | None]:
        frame = self.venv.render()
        return [frame] + [None] * (self.num_envs - 1)
