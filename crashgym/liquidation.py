"""Liquidation engine, tiers 1 and 2: take over crossed positions, sell them into the book.

Rule modelled (Binance / Bybit / OKX style): when the mark crosses a position's
liquidation price the engine takes the position over at its bankruptcy price (the
trader loses the whole isolated margin), cancels nothing else, and sends it to the book
as IOC orders: anywhere within the price band (`ioc_limit = "band"`) or, as the real
engines do, only at the bankruptcy price or better within the band (`"bankruptcy"`,
`ioc_walk_limit`); all at once (`full`) or a chunk of the queue per round (`chunked`, as
Hyperliquid does for large positions). A fill better than the bankruptcy price is surplus
for the insurance fund (the liquidation fee is part of it); a worse fill is paid by the
fund. What the book cannot take waits in the engine's queue (and a throttle may hold it
back: the "buffer period"); under `"bankruptcy"` that queue is the fund's take-over, valued
at the mark for the ADL trigger (`fund_equity`). Long and short queues cross internally
at the mark before either goes to the book.

The ladder is read through a window of buckets at the liquidation frontier, so a round
costs O(window), not O(accounts).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crashgym.params import LiquidationParams
from crashgym.state import Engine, LiquidationLadder

Array = jax.Array


def _window(rows: Array, start: Array, window: int) -> Array:
    """rows[r, start[r] : start[r] + window] for r in (long, short): contiguous slices, so a
    vmapped call gathers one window per market rather than `window` single elements."""
    return jnp.concatenate([jax.lax.dynamic_slice(rows, (r, start[r]), (1, window)) for r in range(2)])


def _put_window(rows: Array, start: Array, values: Array) -> Array:
    """Write `values` (2, window) back where `_window` read them (in place under jit)."""
    for r in range(2):
        rows = jax.lax.dynamic_update_slice(rows, values[r:r + 1], (r, start[r]))
    return rows


def take_over_crossed(ladder: LiquidationLadder, engine: Engine, mark: Array, window: int, initial_price: Array,
                      liquidation: LiquidationParams) -> tuple[LiquidationLadder, Engine, Array, Array]:
    """Move every bucket the mark has crossed into the engine's queue.

    A bucket triggers when the mark crosses its middle (liquidation prices are binned
    to `bucket_width`: an approximation of at most half a bucket). The engine pays the
    traders the bankruptcy value of the longs and receives that of the shorts, so the
    traders keep nothing of the margin. Returns (ladder, engine, lots taken per side (2,),
    bankruptcy value taken per side (2,)).
    """
    g = ladder.size.shape[1]
    width = liquidation.bucket_width * initial_price
    level = mark / width - 0.5  # bucket b triggers for longs when b > level, shorts when b < level
    start = jnp.stack([jnp.clip(ladder.frontier[0] - window, 0, g - window), jnp.clip(ladder.frontier[1], 0, g - window)])
    idx = start[:, None] + jnp.arange(window)[None, :]  # (2, W)
    crossed = jnp.stack([
        (idx[0] < ladder.frontier[0]) & (idx[0] > level),
        (idx[1] >= ladder.frontier[1]) & (idx[1] < level),
    ])
    size = _window(ladder.size, start, window)
    bv = _window(ladder.bankrupt_value, start, window)
    taken = jnp.sum(jnp.where(crossed, size, 0), axis=1)
    taken_bv = jnp.sum(jnp.where(crossed, bv, 0.0), axis=1)
    ladder_size = _put_window(ladder.size, start, jnp.where(crossed, 0, size))
    ladder_bv = _put_window(ladder.bankrupt_value, start, jnp.where(crossed, 0.0, bv))
    ladder_epoch = _put_window(ladder.epoch, start, _window(ladder.epoch, start, window) + crossed.astype(jnp.int32))
    first_long = jnp.floor(level).astype(jnp.int32) + 1
    last_short = jnp.ceil(level).astype(jnp.int32) - 1
    frontier = jnp.stack([
        jnp.clip(first_long, start[0], ladder.frontier[0]),
        jnp.clip(last_short + 1, ladder.frontier[1], start[1] + window),
    ])
    ladder = ladder.replace(size=ladder_size, bankrupt_value=ladder_bv, epoch=ladder_epoch, frontier=frontier, total=ladder.total - taken)
    engine = engine.replace(size=engine.size + taken, bankrupt_value=engine.bankrupt_value + taken_bv)
    return ladder, engine, taken, taken_bv


def cross_queues(engine: Engine) -> tuple[Engine, Array]:
    """Net the long and short queues against each other. Returns (engine, fund P&L USD)."""
    x = jnp.minimum(engine.size[0], engine.size[1])
    avg = engine.bankrupt_value / jnp.maximum(engine.size, 1)
    released = avg * x
    pnl = released[1] - released[0]  # short bankruptcy value received minus long paid
    return engine.replace(size=engine.size - x, bankrupt_value=engine.bankrupt_value - released), pnl


def order_lots(engine: Engine, throttle_left: Array, halted: Array, liquidation: LiquidationParams) -> tuple[Array, Array]:
    """(lots to send, sells?) for this round: the non-empty queue, chunked and throttled."""
    sells = engine.size[0] > 0
    queue = jnp.where(sells, engine.size[0], engine.size[1])
    chunk = jnp.where(liquidation.mode == 1, jnp.ceil(liquidation.chunk_fraction * queue), queue)
    lots = jnp.minimum(chunk, throttle_left).astype(jnp.int32)
    return jnp.where(halted, 0, lots), sells


def queue_bankruptcy_price(engine: Engine, sells: Array) -> Array:
    """Average bankruptcy price (USD) of the queue on the side being sent (longs when `sells`)."""
    row = jnp.where(sells, 0, 1)
    return engine.bankrupt_value[row] / jnp.maximum(engine.size[row], 1)


def ioc_walk_limit(engine: Engine, sells: Array, prices: Array, band: Array, liquidation: LiquidationParams) -> Array:
    """Levels (bool, walk order) the engine's IOC order may reach this round.

    prices and band (the circuit-breaker price band, `rules.within_band`) in walk order, as
    `book.sweep` reads them. `ioc_limit` 0 (`band`): the whole band. 1 (`bankruptcy`), the
    real rule (Binance, Bybit, OKX): each liquidation order is an IOC limit order at the
    position's bankruptcy price, so it fills only at that price or better, and what does not
    fill is the insurance fund's (take-over) or, when the fund cannot carry it, ADL's. The
    queue is aggregated per side, so the limit is the queue's average bankruptcy price (an
    approximation of one IOC per position: positions whose own bankruptcy price is better
    than the average may wait, worse ones may fill below their own). The walk limit is the
    intersection with the band, and every fill is at or better than the average, so
    `settle_fill` never books a shortfall for the fund. The rest stays in the queue as the
    fund's position: `fund_equity` values it at the mark for the ADL trigger.
    """
    bp = queue_bankruptcy_price(engine, sells)
    no_worse = jnp.where(sells, prices >= bp, prices <= bp)
    return band & (no_worse | (liquidation.ioc_limit == 0))


def fund_equity(insurance_fund: Array, engine: Engine, mark: Array, liquidation: LiquidationParams) -> Array:
    """The insurance fund as the ADL trigger reads it (USD).

    `ioc_limit` band: the fund's balance (the queue is sold within the band, losses and all).
    `bankruptcy`: the fund has taken over what the book would not fill at the bankruptcy
    price, so its equity is the balance plus that position valued at the mark (long queue
    worth size * mark against the bankruptcy value paid, short queue mirrored); ADL runs
    once this equity is exhausted or past its drawdown, as when the fund cannot absorb it.
    """
    size = engine.size.astype(jnp.float32)
    marked = (size[0] * mark - engine.bankrupt_value[0]) + (engine.bankrupt_value[1] - size[1] * mark)
    return jnp.where(liquidation.ioc_limit == 1, insurance_fund + marked, insurance_fund)


def settle_fill(engine: Engine, sells: Array, lots: Array, notional: Array) -> tuple[Engine, Array]:
    """Book the engine's IOC fill. Returns (engine, fund P&L USD: surplus > 0, shortfall < 0)."""
    row = jnp.where(sells, 0, 1)
    avg = engine.bankrupt_value[row] / jnp.maximum(engine.size[row], 1)
    released = avg * lots
    pnl = jnp.where(sells, notional - released, released - notional)
    onehot = jnp.arange(2) == row
    engine = engine.replace(
        size=engine.size - jnp.where(onehot, lots, 0),
        bankrupt_value=engine.bankrupt_value - jnp.where(onehot, released, 0.0),
    )
    return engine, pnl


def take_over_account(position: Array, cash: Array, mark: Array, maintenance_margin: Array, engine: Engine):
    """Liquidate a cross-margined holder (the agent) whose equity fell to maintenance.

    The engine takes the position at the price where its equity is zero.
    Returns (liquidated, position, cash, engine).
    """
    notional = jnp.abs(position).astype(jnp.float32) * mark
    equity = cash + position * mark
    hit = (position != 0) & (equity <= maintenance_margin * notional)
    bp = -cash / jnp.where(position == 0, 1, position)
    q = jnp.abs(position)
    row = jnp.where(position > 0, 0, 1)
    onehot = (jnp.arange(2) == row) & hit
    engine = engine.replace(
        size=engine.size + jnp.where(onehot, q, 0),
        bankrupt_value=engine.bankrupt_value + jnp.where(onehot, q * bp, 0.0),
    )
    return hit, jnp.where(hit, 0, position), jnp.where(hit, cash + position * bp, cash), engine


def any_crossed(ladder: LiquidationLadder, mark: Array, window: int, initial_price: Array,
                liquidation: LiquidationParams) -> Array:
    """Whether `take_over_crossed` would take over any bucket (empty ones included: they change
    epoch). When it would not, it returns its inputs unchanged and zero takings, so a caller may
    skip it. Scalar work only: the window's nearest bucket to the mark decides."""
    g = ladder.size.shape[1]
    level = mark / (liquidation.bucket_width * initial_price) - 0.5
    start = jnp.stack([jnp.clip(ladder.frontier[0] - window, 0, g - window), jnp.clip(ladder.frontier[1], 0, g - window)])
    top_long = jnp.minimum(ladder.frontier[0], start[0] + window) - 1  # highest long bucket in the window
    low_short = jnp.maximum(ladder.frontier[1], start[1])  # lowest short bucket in the window
    return ((top_long >= start[0]) & (top_long > level)) | ((low_short < start[1] + window) & (low_short < level))
