"""MarketMaker-v0: quote (or withdraw) one bid and one ask in the perpetual's book.

Action: 4 floats in [-1, 1] (clipped to the box), ``(bid offset, ask offset, bid size, ask size)``.

* offset ``a`` -> ``round((a + 1) / 2 * max_offset_ticks)`` ticks away from the mid:
  bid tick = ``floor(mid_tick) - offset``, ask tick = ``ceil(mid_tick) + offset``, where
  mid_tick is the mid in ticks (rounded to a half tick); when the mid sits exactly on a
  tick the quotes keep one tick from it (bid ``mid_tick - 1 - offset``, ask ``+ 1 + offset``),
  so the two own quotes never meet. The core's post-only rule then clamps a quote that
  would cross the opposite best to one tick inside it.
* size ``a`` -> ``round((a + 1) / 2 * max_quote_lots)`` lots; ``a == -1`` (or anything that
  rounds to 0 lots) means no quote on that side, so ``(-1, -1, -1, -1)`` is full withdrawal.

* risk limit: each side's size is cut so that a full fill keeps ``|position| <=
  max_inventory_lots`` (``AgentParams``; default 5,000 lots, ``inf`` for none).

Quotes are re-sent every step; the exchange keeps the agent's queue position when the
price is unchanged and the size not raised.

Reward: ``reward_scale * (equity_t - equity_{t-1}) / capital`` (fees, rebates, funding and
liquidation included; default reward_scale 100, so 1.0 = 1% of capital). Equity values the
position at its exit price by default (``AgentParams.value_at_exit``): cash plus what a market
order closing the position now would get from the other participants' resting orders, taker
fee included (``crashgym.envs.common.exit_equity``). A maker quoting the touch of a thin book
moves the mark with its own orders, so valuing a large inventory at the mark pays for
accumulating it (the exploit ``benchmarks/LEARNING.md`` documents); the exit price does not.
``value_at_exit = false`` gives ``cash + position * mark``. Then minus
``inventory_penalty * (|position| * mark / capital)^2``, plus the
obligation's payment adjustment (``payment = "penalty"``: ``-penalty_scale * sum(costs)``;
``"rebate"``: ``rebate_bps * 1e-4 * quoted notional``, the notional in the same units as the
reward, i.e. ``reward_scale * notional / capital``; ``"cost"``: nothing, costs are in info).

Costs: the obligation (crashgym.obligations) is checked on the quote the agent shows this
step, against the mid it quoted around; ``info["costs"]`` has one entry per
``crashgym.obligations.COMPONENTS``, ``info["cost"]`` is their sum.

Terminated when the agent is liquidated (its equity reached its maintenance margin);
truncated at ``params.max_steps``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crashgym.agent_obligation import agent_obligation_step, shown_quote
from crashgym.envs.common import (CrashEnv, EnvParams, EnvState, book_features, f32, market_features, obs_vector)
from crashgym.obligations import payment_reward
from crashgym.state import AgentOrders, MarketState

Array = jax.Array


def mid_in_ticks(mid: Array, tick: Array) -> Array:
    """The mid in ticks, rounded to a half tick (a mid is the average of two ticks)."""
    return jnp.round(mid / tick * 2.0) / 2.0


class MarketMaker(CrashEnv):
    name = "MarketMaker-v0"
    ACTION_NAMES = ("bid_offset", "ask_offset", "bid_size", "ask_size")
    OBS_NAMES = (
        "spread_bps_100",
        "bid_depth_0_2", "bid_depth_2_5", "bid_depth_5_10", "bid_depth_10_20",
        "ask_depth_0_2", "ask_depth_2_5", "ask_depth_5_10", "ask_depth_10_20",
        "flow_imbalance",
        "return_t-3", "return_t-2", "return_t-1", "return_t",
        "realized_vol",
        "inventory",
        "bid_resting", "ask_resting",
        "equity_change_pct",
        "basis_bps_100",
        "funding_rate_1e3",
        "open_interest",
        "oi_skew",
        "liquidations_pct_oi",
        "insurance_fund",
        "adl_pressure_pct",
        "adl_active",
        "halted",
        "presence",
        "window_left",
        "time_left",
    )

    def orders(self, state: EnvState, action: Array, params: EnvParams) -> AgentOrders:
        ap = params.market.agent
        mid_tick = mid_in_ticks(state.market.signals.mid, params.market.book.tick_size)
        offset = jnp.round((action[:2] + 1.0) / 2.0 * ap.max_offset_ticks).astype(jnp.int32)
        lots = jnp.round((action[2:] + 1.0) / 2.0 * ap.max_quote_lots).astype(jnp.int32)
        lots = jnp.where(action[2:] <= -1.0, 0, jnp.maximum(lots, 0))
        # Risk limit: a side's size never lets a full fill take |position| past the limit.
        pos = state.market.agent.position.astype(jnp.float32)
        room = jnp.maximum(jnp.stack([ap.max_inventory_lots - pos, ap.max_inventory_lots + pos]), 0.0)
        lots = jnp.minimum(lots.astype(jnp.float32), room).astype(jnp.int32)
        bid_tick = jnp.ceil(mid_tick).astype(jnp.int32) - 1 - offset[0]
        ask_tick = jnp.floor(mid_tick).astype(jnp.int32) + 1 + offset[1]
        return AgentOrders(bid_tick=bid_tick, bid_size=lots[0], ask_tick=ask_tick, ask_size=lots[1],
                           market_lots=jnp.int32(0))

    def obligations(self, state: EnvState, orders: AgentOrders, new_market: MarketState, params: EnvParams):
        tick = params.market.book.tick_size
        ob_state, costs, compliant, _exempt, presence, window_left = agent_obligation_step(
            state.ob, params.obligations, state.market, orders, new_market, tick)
        _, bid_notional, _, ask_notional = shown_quote(state.market, orders, new_market, tick)
        quoted = params.reward_scale * (bid_notional + ask_notional) / params.market.agent.capital
        payment = payment_reward(params.obligations, costs, compliant, quoted)
        return ob_state, costs, compliant, presence, window_left, payment

    def penalty(self, new_market: MarketState, params: EnvParams) -> Array:
        ap = params.market.agent
        inv = jnp.abs(new_market.agent.position).astype(jnp.float32) * new_market.signals.mark / ap.capital
        return ap.inventory_penalty * inv**2

    def observe(self, state: EnvState, params: EnvParams) -> Array:
        ms = state.market
        ap = params.market.agent
        f = market_features(state, params)
        ag = ms.agent
        q = f32(ap.max_quote_lots)
        return obs_vector([
            book_features(ms, params, self.shape.n_levels),
            f["flow_imbalance"],
            state.returns,
            f["realized_vol"],
            ag.position.astype(jnp.float32) / (10.0 * q),
            ag.bid_size.astype(jnp.float32) / q,
            ag.ask_size.astype(jnp.float32) / q,
            f["equity_change_pct"],
            f["basis_bps_100"],
            f["funding_rate_1e3"],
            f["open_interest"],
            f["oi_skew"],
            f["liquidations_pct_oi"],
            f["insurance_fund"],
            f["adl_pressure_pct"],
            f["adl_active"],
            f["halted"],
            state.presence,
            state.window_left,
            f["time_left"],
        ])
