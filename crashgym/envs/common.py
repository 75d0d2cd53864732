"""Shared machinery of the functional (gymnax-style) environments.

Every environment is a role on top of one :class:`crashgym.market.Market`:

    obs, state = env.reset(key, params)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

Both are pure, jittable and vmappable over keys (and params). There is no autoreset
inside ``step``: the Gymnasium vector env (crashgym.gym) does it. ``step_batch`` is the
same step over a leading batch axis; it goes through ``Market.step_batch``, which runs
the O(accounts) ADL stage only when some market in the batch needs it.

Parameters (:class:`EnvParams`) bundle the market's parameters, the obligation rule
set and two env knobs, all traced (a batch may hold different values side by side).
The env object itself holds only static things (the market's shape).

Actions are clipped to the action box inside ``step`` (the Gymnasium adapters validate
them first: NaN / inf / a wrong shape raise ValueError there).

Observations are float32 vectors of scale-free features, clipped to [-10, 10] (any
NaN, e.g. a spread while one side of the book is empty, is replaced by a bounded
value first). See each env's ``OBS_NAMES``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crashgym import book
from crashgym.market import Market
from crashgym.obligations import COMPONENTS, ObligationParams, ObligationState, init_obligation_state
from crashgym.params import MarketParams
from crashgym.state import AgentOrders, MarketState
from crashgym.types import MarketShape, pytree_dataclass

Array = jax.Array

OBS_BOUND = 10.0
N_RETURNS = 4  # mid returns kept in the state for the observation
DEPTH_BANDS = (0.0, 2.0, 5.0, 10.0, 20.0)  # band edges, ticks from the mid
REWARD_SCALE = 100.0  # default: a reward of 1 is a change of 1% of capital


# --------------------------------------------------------------------------- params / state


@pytree_dataclass
class EnvParams:
    """Everything numeric an environment reads (all traced).

    market: the market's parameters (crashgym.params.MarketParams).
    obligations: the obligation rule set (crashgym.obligations.ObligationParams).
    max_steps: truncation length (steps); defaults to the scenario's episode_steps.
    reward_scale: reward = reward_scale * (equity change) / capital, so with the
        default 100 a reward of 1.0 is a gain of 1% of the agent's capital.
    """

    market: MarketParams = MarketParams()
    obligations: ObligationParams = ObligationParams()
    max_steps: int = 1080
    reward_scale: float = REWARD_SCALE


@pytree_dataclass
class EnvState:
    """The market plus the env's bookkeeping (one environment; batched under vmap)."""

    market: MarketState
    time: Array  # int32 steps since reset
    prev_equity: Array  # float32 agent's reward equity (CrashEnv.reward_equity) after the previous step (USD)
    returns: Array  # float32 (N_RETURNS,) last mid log-returns divided by realized vol, newest last
    oi0: Array  # float32 open interest (lots, both sides) at reset
    liq_notional: Array  # float32 liquidated notional in the last step (USD)
    adl_notional: Array  # float32 ADL notional in the last step (USD)
    adl_lots: Array  # int32 agent lots closed by ADL in the last step
    ob: ObligationState  # obligation presence counters
    presence: Array  # float32 compliant fraction of the window so far (1 when nothing counted yet)
    window_left: Array  # float32 fraction of the obligation window still to come


# --------------------------------------------------------------------------- spaces


@dataclasses.dataclass(frozen=True)
class Box:
    """A gymnax-like box space (the Gymnasium adapter turns it into gymnasium.spaces.Box)."""

    low: float
    high: float
    shape: tuple[int, ...]
    dtype: Any = jnp.float32

    def sample(self, key: Array) -> Array:
        return jax.random.uniform(key, self.shape, self.dtype, self.low, self.high)

    def contains(self, x: Any) -> Array:
        x = jnp.asarray(x)
        return (x.shape == self.shape) & jnp.all((x >= self.low) & (x <= self.high))


# --------------------------------------------------------------------------- features


def f32(x: Any) -> Array:
    return jnp.asarray(x, jnp.float32)


def clean_obs(x: Array) -> Array:
    """NaN -> 0, +-inf -> bounds, then clip to [-OBS_BOUND, OBS_BOUND], float32."""
    x = jnp.nan_to_num(f32(x), nan=0.0, posinf=OBS_BOUND, neginf=-OBS_BOUND)
    return jnp.clip(x, -OBS_BOUND, OBS_BOUND)


def book_totals(ms: MarketState, n_levels: int, include_agent: bool = True) -> tuple[Array, Array]:
    """Resting volume per ladder level (background + makers [+ agent]), bid and ask (2L,)."""
    bk, mk, ag = ms.book, ms.makers, ms.agent
    n = 2 * n_levels
    idx = lambda t: book.tick_to_index(t, bk.center_tick, n_levels)  # noqa: E731
    bid = bk.bid_depth + book.one_hot_volume(idx(mk.bid_tick), mk.bid_size, n)
    ask = bk.ask_depth + book.one_hot_volume(idx(mk.ask_tick), mk.ask_size, n)
    if include_agent:
        bid = bid + book.one_hot_volume(idx(ag.bid_tick)[None], ag.bid_size[None], n)
        ask = ask + book.one_hot_volume(idx(ag.ask_tick)[None], ag.ask_size[None], n)
    return bid, ask


def equity(ms: MarketState) -> Array:
    """The agent's marked-to-market equity: cash + position * mark (USD)."""
    return ms.agent.cash + ms.agent.position.astype(jnp.float32) * ms.signals.mark


def exit_equity(ms: MarketState, params: EnvParams, n_levels: int) -> Array:
    """The agent's equity if it closed its whole position now with one market order (USD).

    The order walks the other participants' resting volume from the touch outwards (a long
    sells into the bids, a short buys the asks) and pays the taker fee on what it trades.
    Lots beyond the ladder are valued at its far end: an approximation that is generous to
    very large positions, since the model has no liquidity outside the ladder. This is the
    liquidation value a risk desk would mark a market maker's inventory at; unlike the mark,
    the agent cannot raise it by quoting the touch of a thin book.
    """
    ag = ms.agent
    bid, ask = book_totals(ms, n_levels, include_agent=False)
    prices = book.ladder_prices(ms.book.center_tick, n_levels, params.market.book.tick_size)
    long_ = ag.position > 0
    # Walk order: best price first (bids from the top of the ladder down, asks from the bottom up).
    volume = jnp.where(long_, bid[::-1], ask).astype(jnp.float32)
    price = jnp.where(long_, prices[::-1], prices)
    lots = jnp.abs(ag.position).astype(jnp.float32)
    through = book.prefix_sum(volume)
    traded = jnp.clip(lots - (through - volume), 0.0, volume)
    beyond = jnp.maximum(lots - through[-1], 0.0)
    notional = jnp.sum(traded * price) + beyond * price[-1]
    side = jnp.sign(ag.position).astype(jnp.float32)
    return ag.cash + side * notional - params.market.agent.taker_fee * notional


def realized_vol(ms: MarketState) -> Array:
    return jnp.sqrt(jnp.maximum(ms.signals.realized_var, 0.0))


def book_features(ms: MarketState, params: EnvParams, n_levels: int) -> Array:
    """[spread_bps / 100, bid volume in 4 bands, ask volume in 4 bands].

    Band volumes are lots within DEPTH_BANDS ticks of the mid, divided by the band's
    width times the book's stationary depth one level from the mid
    (limit_rate_lots / cancel_rate), so a calm book reads about 1 near the touch.
    A missing side reads a spread of 10 (the clip bound).
    """
    bid, ask = book_totals(ms, n_levels)
    n = 2 * n_levels
    tick = params.market.book.tick_size
    first = (ms.book.center_tick - n_levels).astype(jnp.float32)
    has_bid, has_ask = jnp.any(bid > 0), jnp.any(ask > 0)
    bb = book.best_bid_index(bid).astype(jnp.float32)
    ba = book.best_ask_index(ask).astype(jnp.float32)
    mid = ms.signals.mid
    spread_bps = jnp.where(has_bid & has_ask, (ba - bb) * tick / mid * 1e4, 1e3)
    mid_index = mid / tick - first
    levels = jnp.arange(n, dtype=jnp.float32)
    edges = jnp.asarray(DEPTH_BANDS, jnp.float32)
    width = edges[1:] - edges[:-1]
    fl = params.market.flow
    ref = jnp.maximum(fl.limit_rate_lots / jnp.maximum(fl.cancel_rate, 1e-3), 1.0)

    def bands(volume: Array, dist: Array) -> Array:
        inside = (dist[:, None] >= edges[None, :-1]) & (dist[:, None] < edges[None, 1:])
        return jnp.sum(jnp.where(inside, volume[:, None].astype(jnp.float32), 0.0), axis=0) / (width * ref)

    bid_bands = bands(bid, mid_index - levels)
    ask_bands = bands(ask, levels - mid_index)
    return jnp.concatenate([(spread_bps / 100.0)[None], bid_bands, ask_bands])


def open_interest(ms: MarketState) -> tuple[Array, Array]:
    """(long lots, short lots) of the leveraged accounts, float32."""
    oi = ms.ladder.total.astype(jnp.float32)
    return oi[0], oi[1]


def market_features(state: EnvState, params: EnvParams) -> dict[str, Array]:
    """Scale-free market features shared by the envs (each a float32 scalar, not yet clipped)."""
    ms = state.market
    s = ms.signals
    mp = params.market
    long_, short = open_interest(ms)
    oi = long_ + short
    oi_safe = jnp.maximum(oi, 1.0)
    fund0 = jnp.maximum(f32(mp.liquidation.insurance_fund), 1.0)
    vol_ref = jnp.maximum(f32(mp.flow.vol_per_step), 1e-6)
    return {
        "flow_imbalance": s.flow_imbalance,
        "realized_vol": realized_vol(ms) / vol_ref,
        "basis_bps_100": (s.mark - s.index) / s.index * 1e4 / 100.0,
        "funding_rate_1e3": s.funding_rate * 1e3,
        "open_interest": oi / jnp.maximum(state.oi0, 1.0),
        "oi_skew": (long_ - short) / oi_safe,
        "liquidations_pct_oi": state.liq_notional / (oi_safe * s.mark) * 100.0,
        "insurance_fund": ms.ledger.insurance_fund / fund0,
        "adl_pressure_pct": jnp.sum(ms.engine.size).astype(jnp.float32) / oi_safe * 100.0,
        "adl_active": (state.adl_notional > 0).astype(jnp.float32),
        "halted": (s.halt_left > 0).astype(jnp.float32),
        "time_left": 1.0 - state.time.astype(jnp.float32) / jnp.maximum(f32(params.max_steps), 1.0),
        "equity_change_pct": (equity(ms) / params.market.agent.capital - 1.0) * 100.0,
    }


# --------------------------------------------------------------------------- base env


class CrashEnv:
    """Base class of the functional environments (one static MarketShape per instance)."""

    name: str = "crashgym-env"
    OBS_NAMES: tuple[str, ...] = ()
    ACTION_NAMES: tuple[str, ...] = ()
    DEFAULT_AGENT: dict[str, float | bool] = {}  # AgentParams values crashgym.make uses unless overridden

    def __init__(self, shape: MarketShape = MarketShape()):
        self.shape = shape
        self.market = Market(shape)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.shape})"

    # Subclasses implement these three.
    def orders(self, state: EnvState, action: Array, params: EnvParams) -> AgentOrders:
        raise NotImplementedError

    def observe(self, state: EnvState, params: EnvParams) -> Array:
        raise NotImplementedError

    def obligations(self, state: EnvState, orders: AgentOrders, new_market: MarketState, params: EnvParams
                    ) -> tuple[ObligationState, Array, Array, Array, Array, Array]:
        """(ob_state, costs, compliant, presence, window_left, reward adjustment). Default: none."""
        z = jnp.float32(0.0)
        return (state.ob, jnp.zeros(len(COMPONENTS), jnp.float32), jnp.bool_(False), state.presence,
                state.window_left, z)

    def penalty(self, new_market: MarketState, params: EnvParams) -> Array:
        """Extra reward penalty (reward units). Default: none."""
        return jnp.float32(0.0)

    def reward_equity(self, ms: MarketState, params: EnvParams) -> Array:
        """The equity the reward is the change of (USD): at the exit price when
        ``AgentParams.value_at_exit`` (the default), else at the mark."""
        return jnp.where(params.market.agent.value_at_exit, exit_equity(ms, params, self.shape.n_levels), equity(ms))

    # Spaces and defaults.
    @property
    def default_params(self) -> EnvParams:
        return EnvParams(max_steps=self.shape.episode_steps)

    @property
    def num_actions(self) -> int:
        return len(self.ACTION_NAMES)

    def action_space(self, params: EnvParams | None = None) -> Box:
        return Box(-1.0, 1.0, (len(self.ACTION_NAMES),), jnp.float32)

    def observation_space(self, params: EnvParams | None = None) -> Box:
        return Box(-OBS_BOUND, OBS_BOUND, (len(self.OBS_NAMES),), jnp.float32)

    # Reset / step.
    def reset(self, key: Array, params: EnvParams | None = None) -> tuple[Array, EnvState]:
        params = self.default_params if params is None else params
        state = self.initial_state(self.market.init(key, params.market), params)
        return self.observe(state, params), state

    def initial_state(self, ms: MarketState, params: EnvParams) -> EnvState:
        """The env's state at reset around a freshly initialised market ``ms``."""
        ms = strong(ms)
        long_, short = open_interest(ms)
        z = jnp.float32(0.0)
        return EnvState(
            market=ms, time=jnp.int32(0), prev_equity=self.reward_equity(ms, params), returns=jnp.zeros(N_RETURNS, jnp.float32),
            oi0=long_ + short, liq_notional=z, adl_notional=z, adl_lots=jnp.int32(0),
            ob=init_obligation_state(), presence=jnp.float32(1.0), window_left=jnp.float32(1.0),
        )

    def step(self, key: Array, state: EnvState, action: Array, params: EnvParams | None = None):
        """One step (no autoreset). Returns (obs, state, reward, terminated, truncated, info)."""
        params = self.default_params if params is None else params
        action = jnp.clip(f32(action), -1.0, 1.0)
        orders = self.orders(state, action, params)
        new_market, minfo = self.market.step(key, state.market, orders, params.market)
        return self.finish_step(state, orders, new_market, minfo, params)

    def step_batch(self, keys: Array, state: EnvState, action: Array, params: EnvParams | None = None,
                   params_axis: int | None = None):
        """`step` over a leading batch axis (keys, state, action batched; params shared when
        params_axis is None, batched when 0), through Market.step_batch."""
        params = self.default_params if params is None else params
        action = jnp.clip(f32(action), -1.0, 1.0)
        orders = jax.vmap(self.orders, in_axes=(0, 0, params_axis))(state, action, params)
        new_market, minfo = self.market.step_batch(keys, state.market, orders, params.market, params_axis=params_axis)
        return jax.vmap(self.finish_step, in_axes=(0, 0, 0, 0, params_axis))(state, orders, new_market, minfo, params)

    def finish_step(self, state: EnvState, orders: AgentOrders, new_market: MarketState, minfo: dict[str, Array],
                    params: EnvParams):
        """The env's side of a step, after the market stepped from ``state.market`` to
        ``new_market`` with the agent's ``orders`` (``minfo``: the market's step info): reward,
        costs, bookkeeping. Returns (obs, state, reward, terminated, truncated, info)."""
        ag = new_market.agent
        eq = equity(new_market)
        reward_eq = self.reward_equity(new_market, params)
        capital = f32(params.market.agent.capital)
        ob_state, costs, compliant, presence, window_left, payment = self.obligations(state, orders, new_market, params)
        reward = (params.reward_scale * (reward_eq - state.prev_equity) / capital - self.penalty(new_market, params)
                  + payment)
        adl_lots = minfo["agent_adl_lots"]
        ret = jnp.log(new_market.signals.mid / state.market.signals.mid)
        z = jnp.clip(ret / jnp.maximum(realized_vol(new_market), 1e-6), -OBS_BOUND, OBS_BOUND)
        z = jnp.nan_to_num(z, nan=0.0)
        time = state.time + 1
        new_state = EnvState(
            market=strong(new_market), time=time, prev_equity=reward_eq,
            returns=jnp.concatenate([state.returns[1:], z[None].astype(jnp.float32)]),
            oi0=state.oi0, liq_notional=f32(minfo["liquidated_notional"]), adl_notional=f32(minfo["adl_notional"]),
            adl_lots=adl_lots.astype(jnp.int32), ob=ob_state, presence=f32(presence), window_left=f32(window_left),
        )
        terminated = ag.liquidated
        truncated = (time >= params.max_steps) & ~terminated
        info = {
            "market": minfo,
            "cost": jnp.sum(costs),
            "costs": costs,
            "compliant": compliant,
            "equity": eq,
            "reward_equity": reward_eq,
            "position": ag.position,
            "adl": new_state.adl_lots,
        }
        obs = self.observe(new_state, params)
        return obs, new_state, f32(reward), terminated, truncated, info


def strong(tree: Any) -> Any:
    """Drop weak types from every leaf, so that a state coming out of ``step`` has exactly the
    avals of one coming out of ``reset`` (a weak-typed leaf would make jit compile twice)."""
    return jax.tree_util.tree_map(lambda x: jax.lax.convert_element_type(x, jnp.asarray(x).dtype), tree)


def obs_vector(parts: list[Array]) -> Array:
    return clean_obs(jnp.concatenate([jnp.atleast_1d(f32(p)) for p in parts]))


def np_box(space: Box) -> tuple[np.ndarray, np.ndarray]:
    return (np.full(space.shape, space.low, np.float32), np.full(space.shape, space.high, np.float32))
