"""Safety-Gymnasium style wrapper: ``step`` returns the cost beside the reward.

    env = SafetyWrapper(gymnasium.make("crashgym/MarketMaker-v0", obligations="mifid"))
    obs, info = env.reset(seed=0)
    obs, reward, cost, terminated, truncated, info = env.step(action)

``cost`` is ``info["cost"]`` (the sum of the obligation costs; ``info["costs"]`` has one
entry per crashgym.obligations.COMPONENTS). Works on the single env and on the vector
env (then cost is an array with one entry per env).
"""

from __future__ import annotations

from typing import Any

import gymnasium

__all__ = ["SafetyWrapper"]


class SafetyWrapper(gymnasium.Wrapper):
    def step(self, action: Any):  # type: ignore[override]
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, info["cost"], terminated, truncated, info
