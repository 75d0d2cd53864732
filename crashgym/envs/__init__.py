"""Functional (gymnax-style) environments: one role per module, on top of crashgym.market."""

from crashgym.envs.common import Box, CrashEnv, EnvParams, EnvState
from crashgym.envs.leveraged_trader import LeveragedTrader
from crashgym.envs.market_maker import MarketMaker

ENVS: dict[str, type[CrashEnv]] = {
    "MarketMaker-v0": MarketMaker,
    "LeveragedTrader-v0": LeveragedTrader,
}

__all__ = ["ENVS", "Box", "CrashEnv", "EnvParams", "EnvState", "LeveragedTrader", "MarketMaker"]
