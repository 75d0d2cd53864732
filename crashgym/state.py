"""The market's state: fixed-shape arrays grouped by the stage that owns them.

Sizes are int32 lots (exact, so positions are conserved exactly); money is float32 USD.
The ladder index j of the book maps to the absolute tick ``center_tick - n_levels + j``.
"""

from __future__ import annotations

import jax

from crashgym.types import pytree_dataclass

Array = jax.Array


@pytree_dataclass
class Book:
    center_tick: Array  # int32, absolute tick at ladder index n_levels
    bid_depth: Array  # int32 (2L,), resting background (zero-intelligence) bids per level
    ask_depth: Array  # int32 (2L,)


@pytree_dataclass
class Makers:
    """Background market makers (n). Quotes are absolute ticks; size 0 means no quote."""

    bid_tick: Array
    bid_size: Array
    ask_tick: Array
    ask_size: Array
    inventory: Array  # int32 lots, signed
    cash: Array  # float32 USD
    entry: Array  # float32 average entry price of the inventory
    mode: Array  # int32: 0 quoting, 1 defence, 2 withdrawn
    calm_steps: Array  # int32 steps of calm since withdrawal
    bankrupt: Array  # bool: equity went to zero; stops quoting for good


@pytree_dataclass
class Agent:
    """The learning agent: one resting quote per side, with its queue position, and a position."""

    bid_tick: Array
    bid_size: Array
    bid_ahead: Array  # int32 lots queued ahead of the agent's bid at its level
    ask_tick: Array
    ask_size: Array
    ask_ahead: Array
    position: Array  # int32 lots, signed
    cash: Array  # float32 USD
    entry: Array  # float32 average entry price
    liquidated: Array  # bool


@pytree_dataclass
class Accounts:
    """Leveraged traders, isolated margin, one position per slot.

    side: +1 long, -1 short, 0 empty. A position is alive while its liquidation
    bucket's epoch equals the epoch stored here: a liquidation round empties whole
    buckets and bumps their epoch, so it never has to touch these arrays.
    """

    side: Array  # int32 (M,)
    size: Array  # int32 lots (M,)
    entry: Array  # float32 entry price (M,)
    margin: Array  # float32 isolated margin USD (M,)
    bucket: Array  # int32 liquidation-price bucket (M,)
    epoch: Array  # int32 bucket epoch at opening (M,)
    cursor: Array  # int32, next slot the turnover visits


@pytree_dataclass
class LiquidationLadder:
    """Open positions aggregated by liquidation price, per side (0 long, 1 short).

    Bucket b covers liquidation prices [b, b+1) * bucket_width * initial_price.
    bankrupt_value is sum(size * bankruptcy_price): exact for the fund's accounting.
    frontier: long buckets >= frontier[0] and short buckets < frontier[1] are empty.
    """

    size: Array  # int32 (2, G)
    bankrupt_value: Array  # float32 (2, G)
    epoch: Array  # int32 (2, G)
    frontier: Array  # int32 (2,)
    total: Array  # int32 (2,) lots held by live accounts per side (open interest)


@pytree_dataclass
class Engine:
    """Positions taken over by the liquidation engine, waiting to be sold (0 long, 1 short)."""

    size: Array  # int32 (2,)
    bankrupt_value: Array  # float32 (2,)


@pytree_dataclass
class Ledger:
    """Cash and positions of everyone else, so that money and positions are conserved.

    traders_cash: pooled cash of the leveraged accounts (margin in, P&L out).
    net_deposits: money brought in (margin, fees) minus withdrawn (equity on close).
    background_*: the aggregate of unleveraged background traders.
    """

    traders_cash: Array
    net_deposits: Array
    background_position: Array
    background_cash: Array
    insurance_fund: Array
    fund_peak: Array
    fee_pool: Array
    overflow_lots: Array  # int32: lots that did not fit the ladder (cancelled, counted)


@pytree_dataclass
class Signals:
    """Prices and the slow-moving statistics that traders and makers watch."""

    index: Array  # fair value (spot index)
    log_vol: Array  # log-volatility state of the index
    hawkes: Array  # market-order intensity, lots per step per side
    mark: Array
    last: Array
    basis_ema: Array  # moving average of (mid - index), USD
    premium_sum: Array  # sum of premium index over the current funding interval
    funding_rate: Array  # last funding rate paid
    realized_var: Array  # EWMA of squared mid log-returns
    flow_imbalance: Array  # EWMA of (buy - sell) / (buy + sell) taker volume
    momentum: Array  # EWMA of mid log-returns divided by realized vol
    mark_ref: Array  # moving average of the mark (circuit breaker reference)
    halt_left: Array  # int32 steps of halt remaining
    mid: Array


@pytree_dataclass
class MarketState:
    step: Array
    book: Book
    makers: Makers
    agent: Agent
    accounts: Accounts
    ladder: LiquidationLadder
    engine: Engine
    ledger: Ledger
    signals: Signals


@pytree_dataclass
class AgentOrders:
    """What the agent sends into a step: quotes (absolute ticks, lots; size 0 = none) and a market order."""

    bid_tick: Array
    bid_size: Array
    ask_tick: Array
    ask_size: Array
    market_lots: Array  # signed: > 0 buy, < 0 sell
