"""LeveragedTrader-v0: hold a leveraged position through the market, survive (or ride) the crash.

Action: 1 float in [-1, 1] (clipped to the box): the target position as a signed fraction
of the maximum leverage, ``target lots = round(a * max_leverage * max(equity, 0) / mark)``.
The env sends a market order for ``target - position`` lots (no quotes); it fills against
the book within the price band (possibly partly).

Capital: crashgym.make gives this env 10,000 USD of capital by default (10x is then
~1,000 lots at 100 USD, a few levels of the book; the MarketMaker's 1e6 would sweep the
whole ladder every step). Override with ``market={"agent": {"capital": ...}}``.

Reward: ``reward_scale * (equity_t - equity_{t-1}) / capital`` (equity = cash + position *
mark; fees, funding, liquidation and ADL included; default reward_scale 100). This env sets
``value_at_exit = false`` (a taker's trading costs are paid when it trades); ``market={"agent":
{"value_at_exit": True}}`` values its position at the exit price as MarketMaker-v0 does.
Costs: all zero (no obligation applies to a taker); ``info["costs"]`` keeps the shape.
Terminated when the agent is liquidated; truncated at ``params.max_steps``.

``info["adl"]``: the agent's lots closed by auto-deleveraging this step (exact: the core
reports how far ADL shrank the agent's position).

The ADL light (``adl_light``): the agent's ADL score (crashgym.adl.adl_scores with the
market's ranking rule) against the live leveraged accounts on its side, as a quantile
bucket 0..4 divided by 4 (like the exchanges' 5-light indicator); 0 when flat or not in
profit (not an ADL candidate), with ``adl_candidate`` saying which. O(accounts) per step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crashgym.accounts import alive, tier
from crashgym.adl import adl_scores
from crashgym.envs.common import CrashEnv, EnvParams, EnvState, equity, market_features, obs_vector
from crashgym.state import AgentOrders, MarketState

Array = jax.Array


def adl_light(ms: MarketState, params: EnvParams) -> tuple[Array, Array]:
    """(light in {0, .25, .5, .75, 1}, candidate flag) for the agent."""
    acc, ag = ms.accounts, ms.agent
    mark = ms.signals.mark
    rule = params.market.liquidation.adl_rule
    direction = jnp.sign(ag.position)
    live = alive(acc, ms.ladder) & (acc.side == direction) & (direction != 0)
    size = jnp.where(live, acc.size, 0)
    mmr, _, _ = tier(size * mark, params.market.accounts)
    acc_equity = acc.margin + acc.side * (mark - acc.entry) * size
    scores = adl_scores(rule, jnp.full(size.shape, direction), size, acc.entry, acc_equity, acc.margin, mmr, mark)
    q = jnp.abs(ag.position)
    ag_equity = equity(ms)
    upnl = direction * (mark - ag.entry) * q
    mine = adl_scores(rule, direction[None], q[None], ag.entry[None], ag_equity[None], (ag_equity - upnl)[None],
                      jnp.full((1,), params.market.agent.maintenance_margin), mark)[0]
    candidate = jnp.isfinite(mine) & (q > 0) & ~ag.liquidated
    finite = jnp.isfinite(scores)
    n = jnp.sum(finite)
    below = jnp.sum(finite & (scores < mine))
    quantile = jnp.where(n > 0, below / jnp.maximum(n, 1), 1.0)
    bucket = jnp.clip(jnp.floor(quantile * 5.0), 0, 4)
    return jnp.where(candidate, bucket / 4.0, 0.0).astype(jnp.float32), candidate.astype(jnp.float32)


class LeveragedTrader(CrashEnv):
    name = "LeveragedTrader-v0"
    ACTION_NAMES = ("target_leverage",)
    DEFAULT_AGENT = {"capital": 10_000.0, "value_at_exit": False}  # a taker's P&L at the mark, as exchanges show it
    OBS_NAMES = (
        "return_t-3", "return_t-2", "return_t-1", "return_t",
        "realized_vol",
        "basis_bps_100",
        "funding_rate_1e3",
        "flow_imbalance",
        "leverage",
        "margin_ratio",
        "liquidation_distance",
        "adl_light",
        "adl_candidate",
        "oi_skew",
        "open_interest",
        "liquidations_pct_oi",
        "insurance_fund",
        "adl_pressure_pct",
        "adl_active",
        "halted",
        "equity_change_pct",
        "time_left",
    )

    def orders(self, state: EnvState, action: Array, params: EnvParams) -> AgentOrders:
        ms = state.market
        ap = params.market.agent
        eq = jnp.maximum(equity(ms), 0.0)
        target = jnp.round(action[0] * ap.max_leverage * eq / ms.signals.mark)
        target = jnp.clip(target, -2.0**30, 2.0**30).astype(jnp.int32)
        z = jnp.int32(0)
        return AgentOrders(bid_tick=z, bid_size=z, ask_tick=z, ask_size=z, market_lots=target - ms.agent.position)

    def observe(self, state: EnvState, params: EnvParams) -> Array:
        ms = state.market
        ap = params.market.agent
        f = market_features(state, params)
        mark = ms.signals.mark
        pos = ms.agent.position.astype(jnp.float32)
        eq = equity(ms)
        eq_safe = jnp.maximum(eq, 1e-6)
        notional = jnp.abs(pos) * mark
        leverage = pos * mark / eq_safe / ap.max_leverage
        margin_ratio = ap.maintenance_margin * notional / eq_safe  # 1.0: liquidation
        # Liquidation price: cash + pos * P = mm * |pos| * P.
        mm = ap.maintenance_margin
        denom = jnp.where(pos > 0, pos * (1.0 - mm), pos * (1.0 + mm))
        liq_price = -ms.agent.cash / jnp.where(pos == 0, 1.0, denom)
        dist = jnp.where(pos > 0, (mark - liq_price) / mark, (liq_price - mark) / mark)
        dist = jnp.where(pos == 0, 1.0, dist)
        light, candidate = adl_light(ms, params)
        return obs_vector([
            state.returns,
            f["realized_vol"],
            f["basis_bps_100"],
            f["funding_rate_1e3"],
            f["flow_imbalance"],
            leverage,
            margin_ratio,
            dist,
            light,
            candidate,
            f["oi_skew"],
            f["open_interest"],
            f["liquidations_pct_oi"],
            f["insurance_fund"],
            f["adl_pressure_pct"],
            f["adl_active"],
            f["halted"],
            f["equity_change_pct"],
            f["time_left"],
        ])
