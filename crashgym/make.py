"""`crashgym.make`: a functional environment and its parameters from names.

    env, params = crashgym.make("MarketMaker-v0", scenario="oct10", obligations="mifid")
    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from crashgym.envs import ENVS, CrashEnv, EnvParams
from crashgym.envs.common import REWARD_SCALE
from crashgym.obligations import ObligationParams, load_obligations
from crashgym.scenarios import Scenario, load_scenario, parse_settings
from crashgym.types import MarketShape

__all__ = ["make", "env_ids"]


def env_ids() -> tuple[str, ...]:
    return tuple(ENVS)


def _env_class(env_id: str) -> type[CrashEnv]:
    name = env_id.removeprefix("crashgym/")
    if name not in ENVS:
        raise ValueError(f"unknown env id {env_id!r}; known: {', '.join(ENVS)}")
    return ENVS[name]


def make(env_id: str, scenario: str | Scenario = "calm", obligations: str | ObligationParams = "none",
         rules: str | list[str] | tuple[str, ...] | None = None, max_episode_steps: int | None = None,
         shape: MarketShape | Mapping[str, int] | None = None, market: Mapping[str, Any] | None = None,
         reward_scale: float = REWARD_SCALE, settings: Sequence[str] = ()) -> tuple[CrashEnv, EnvParams]:
    """Build a functional env and its params.

    env_id: "MarketMaker-v0" or "LeveragedTrader-v0" (a "crashgym/" prefix is accepted).
    scenario: a name under configs/scenarios/, a path to a TOML file, or a loaded Scenario.
    obligations: a name under configs/obligations/, a path, or ObligationParams.
    rules: rule file name(s) laid over the scenario (configs/rules/).
    max_episode_steps: truncation length; default the scenario's shape.episode_steps.
    shape: a MarketShape, or a dict of MarketShape fields replacing the scenario's
        (e.g. ``{"n_accounts": 128, "episode_steps": 50}`` for small, fast tests).
    market: overrides of the market parameters, nested like the scenario's [market]
        table (e.g. ``{"agent": {"inventory_penalty": 0.1}}``).
    reward_scale: reward = reward_scale * equity change / capital (default 100).
    settings: ``KEY=VALUE`` strings as the commands' ``--set`` takes them
        (``["market.flow.cancel_rate=0.01", "shape.n_levels=128"]``), laid over the scenario,
        its rules and ``market=`` last; ``shape=`` is applied after them.

    An env may change some of the agent's defaults (``DEFAULT_AGENT``): LeveragedTrader-v0
    trades with 10,000 USD of capital (a trader, not a whale that sweeps the book each
    step); ``market={"agent": {"capital": ...}}`` sets it.
    """
    cls = _env_class(env_id)
    if isinstance(scenario, Scenario):
        if rules or market or settings:
            raise ValueError("rules=, market= and settings= need a scenario name or path, not a loaded Scenario")
        sc = scenario
    else:
        sc = load_scenario(scenario, rules=rules, overrides=market, settings=settings)
    sh = sc.shape
    if isinstance(shape, MarketShape):
        sh = shape
    elif shape is not None:
        known = {f.name for f in dataclasses.fields(MarketShape)}
        bad = sorted(set(shape) - known)
        if bad:
            raise ValueError(f"unknown shape field {bad[0]!r}; known: {', '.join(sorted(known))}")
        sh = dataclasses.replace(sh, **dict(shape))
    # The env's agent defaults yield to any agent key the caller set, by market= or settings=.
    user_agent = {**(market or {}).get("agent", {}), **parse_settings(settings).get("market", {}).get("agent", {})}
    defaults = {k: v for k, v in cls.DEFAULT_AGENT.items() if k not in user_agent}
    if defaults:
        sc = dataclasses.replace(sc, params=sc.params.replace(agent=sc.params.agent.replace(**defaults)))
        sc.params.agent.validate()
    ob = obligations if isinstance(obligations, ObligationParams) else load_obligations(obligations)
    if max_episode_steps is not None and (not isinstance(max_episode_steps, int) or max_episode_steps < 1):
        raise ValueError(f"max_episode_steps must be a positive int, got {max_episode_steps!r}")
    steps = sh.episode_steps if max_episode_steps is None else max_episode_steps
    if not reward_scale > 0:
        raise ValueError(f"reward_scale must be > 0, got {reward_scale!r}")
    params = EnvParams(market=sc.params, obligations=ob, max_steps=int(steps), reward_scale=float(reward_scale))
    return cls(sh), params
