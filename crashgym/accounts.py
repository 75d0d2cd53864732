"""Leveraged accounts: isolated margin, tiered maintenance margin, opening and closing.

Margin rules (MARKET_MECHANICS section 1, Binance USDS-M, isolated):
maintenance margin MM = N * MMR - cum for notional N in its tier; a long is liquidated
when margin + size * (P - entry) <= size * P * MMR - cum, i.e. at
``LP = (size * entry - margin - cum) / (size * (1 - MMR))`` (shorts mirrored), and is
bankrupt at ``BP = entry - margin / size``. Both are fixed at entry, so positions are
aggregated by liquidation price on an absolute grid (the liquidation ladder), which
the liquidation stage reads without touching the per-account arrays.

Turnover: each step the accounts at a cursor are visited (``turnover_slots`` of them);
an open position closes with `close_prob`, an empty slot opens a new position with
`open_prob` (cut while the news is risk-off). New positions are long with probability
`long_bias` shifted by trend-following on momentum; leverage is drawn from a table and
capped by the tier; notional is log-normal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from crashgym.params import AccountParams, LiquidationParams
from crashgym.state import Accounts, LiquidationLadder
from crashgym.types import pytree_dataclass

Array = jax.Array

LONG, SHORT = 0, 1  # ladder rows


def tier(notional: Array, accounts: AccountParams) -> tuple[Array, Array, Array]:
    """(MMR, cum deduction USD, max leverage) for a position notional (USD)."""
    floors = jnp.asarray(accounts.tier_notional, jnp.float32)
    mmr = jnp.asarray(accounts.tier_mmr, jnp.float32)
    max_lev = jnp.asarray(accounts.tier_max_leverage, jnp.float32)
    prev_mmr = jnp.concatenate([jnp.zeros(1), mmr[:-1]])
    prev_floor = jnp.concatenate([jnp.zeros(1), floors[:-1]])
    cum = jnp.cumsum(prev_floor * (mmr - prev_mmr))  # tiny table: cumsum is fine here
    k = jnp.clip(jnp.sum(notional[..., None] > floors, axis=-1), 0, floors.shape[0] - 1)
    return mmr[k], cum[k], max_lev[k]


def liquidation_price(side: Array, size: Array, entry: Array, margin: Array, accounts: AccountParams) -> Array:
    """Isolated-margin liquidation price (USD); side +1 long, -1 short."""
    q = jnp.maximum(size, 1).astype(jnp.float32)
    mmr, cum, _ = tier(q * entry, accounts)
    long_lp = (q * entry - margin - cum) / (q * (1.0 - mmr))
    short_lp = (q * entry + margin + cum) / (q * (1.0 + mmr))
    return jnp.where(side > 0, long_lp, short_lp)


def bankruptcy_price(side: Array, size: Array, entry: Array, margin: Array) -> Array:
    q = jnp.maximum(size, 1).astype(jnp.float32)
    return entry - side * margin / q


def check_liquidation_grid(n_buckets: int, liquidation: LiquidationParams, accounts: AccountParams) -> None:
    """Refuse a liquidation-price grid that cannot hold the positions opened at the initial price.

    The grid spans [0, n_buckets * bucket_width) of the initial price; a short's liquidation
    price reaches up to (1 + 1/leverage) times its entry. Prices above the grid are clipped
    into its top bucket (liquidated when the mark reaches the top: too early), so the grid
    must at least cover twice the initial price and the highest short liquidation price.
    Skipped for traced values (the scenario loader and `crashgym.make` check concrete ones).
    """
    try:
        width = float(liquidation.bucket_width)
        min_leverage = min(float(x) for x in accounts.leverage_choices)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return
    top = n_buckets * width
    needed = max(2.0, 1.0 + 1.0 / min_leverage)
    if top < needed:
        raise ValueError(
            f"the liquidation-price grid covers {top:.3g}x the initial price (shape.n_buckets={n_buckets} x "
            f"market.liquidation.bucket_width={width:g}); it must cover at least {needed:.3g}x: raise n_buckets "
            f"to >= {int(np.ceil(needed / width))} or bucket_width")


def bucket_of(price: Array, n_buckets: int, initial_price: Array, liquidation: LiquidationParams) -> Array:
    width = liquidation.bucket_width * initial_price
    return jnp.clip(jnp.floor(price / width), 0, n_buckets - 1).astype(jnp.int32)


def alive(accounts: Accounts, ladder: LiquidationLadder) -> Array:
    """Which slots hold a live position (O(M) gather: used by ADL, observations and tests)."""
    row = jnp.where(accounts.side > 0, LONG, SHORT)
    return (accounts.side != 0) & (accounts.epoch == ladder.epoch[row, accounts.bucket]) & (accounts.size > 0)


def ladder_add(ladder: LiquidationLadder, side: Array, bucket: Array, size: Array, bankrupt_value: Array) -> LiquidationLadder:
    """Scatter-add positions (negative size to remove) into the ladder and move the frontier."""
    row = jnp.where(side > 0, LONG, SHORT)
    live = size != 0
    new_size = ladder.size.at[row, bucket].add(jnp.where(live, size, 0))
    new_bv = ladder.bankrupt_value.at[row, bucket].add(jnp.where(live, bankrupt_value, 0.0))
    opened = size > 0
    long_front = jnp.max(jnp.where(opened & (side > 0), bucket + 1, 0))
    short_front = jnp.min(jnp.where(opened & (side < 0), bucket, ladder.size.shape[1]))
    frontier = jnp.stack([jnp.maximum(ladder.frontier[0], long_front), jnp.minimum(ladder.frontier[1], short_front)])
    delta = jnp.where(live, size, 0)
    total = ladder.total + jnp.stack([jnp.sum(jnp.where(side > 0, delta, 0)), jnp.sum(jnp.where(side < 0, delta, 0))])
    return ladder.replace(size=new_size, bankrupt_value=new_bv, frontier=frontier, total=total)


@pytree_dataclass
class Turnover:
    """This step's decisions for the visited slots (k,)."""

    slot: Array
    closing: Array  # bool: an open position sends a closing market order
    opening: Array  # bool: an empty slot sends an opening market order
    side: Array  # +1 / -1 of the position (existing or new)
    lots: Array  # int32 order size
    leverage: Array  # float32, for new positions

    def buy_lots(self) -> Array:
        buys = (self.opening & (self.side > 0)) | (self.closing & (self.side < 0))
        return jnp.where(buys, self.lots, 0)

    def sell_lots(self) -> Array:
        sells = (self.opening & (self.side < 0)) | (self.closing & (self.side > 0))
        return jnp.where(sells, self.lots, 0)


def draw_positions(u: Array, price: Array, momentum: Array, params: AccountParams) -> tuple[Array, Array, Array]:
    """New positions from uniforms u (k, 3): (side +1/-1, lots, leverage)."""
    p_long = jnp.clip(params.long_bias + params.trend_coef * momentum, 0.02, 0.98)
    side = jnp.where(u[:, 0] < p_long, 1, -1)
    weights = jnp.asarray(params.leverage_weights, jnp.float32)
    cdf = jnp.cumsum(weights) / jnp.sum(weights)
    choice = jnp.clip(jnp.sum(u[:, 1:2] > cdf[None, :], axis=1), 0, weights.shape[0] - 1)
    notional = params.notional_median * jnp.exp(params.notional_sigma * ndtri(jnp.clip(u[:, 2], 1e-6, 1 - 1e-6)))
    _, _, max_lev = tier(notional, params)
    leverage = jnp.minimum(jnp.asarray(params.leverage_choices, jnp.float32)[choice], max_lev)
    lots = jnp.maximum(jnp.round(notional / price), 1.0).astype(jnp.int32)
    return side, lots, leverage


def plan_turnover(accounts: Accounts, ladder: LiquidationLadder, price: Array, momentum: Array, risk_off: Array,
                  halted: Array, u: Array, params: AccountParams) -> Turnover:
    """Decide closes and opens for the k slots at the cursor. u: (k, 5) uniforms."""
    m = accounts.side.shape[0]
    k = u.shape[0]
    slot = (accounts.cursor + jnp.arange(k)) % m
    side_now = accounts.side[slot]
    row = jnp.where(side_now > 0, LONG, SHORT)
    live = (side_now != 0) & (accounts.epoch[slot] == ladder.epoch[row, accounts.bucket[slot]]) & (accounts.size[slot] > 0)
    closing = live & (u[:, 0] < params.close_prob) & ~halted
    open_prob = params.open_prob * jnp.where(risk_off, params.risk_off_open_mult, 1.0)
    opening = ~live & (u[:, 1] < open_prob) & ~halted
    new_side, new_lots, leverage = draw_positions(u[:, 2:5], price, momentum, params)
    return Turnover(
        slot=slot,
        closing=closing,
        opening=opening,
        side=jnp.where(live, side_now, new_side),
        lots=jnp.where(closing, accounts.size[slot], jnp.where(opening, new_lots, 0)),
        leverage=leverage,
    )


def settle_turnover(accounts: Accounts, ladder: LiquidationLadder, plan: Turnover, filled: Array, price: Array,
                    taker_fee: Array, initial_price: Array, liquidation: LiquidationParams, params: AccountParams):
    """Apply fills (lots per visited slot, at `price`) to accounts, ladder and cash.

    Returns (accounts, ladder, traders_cash_delta, net_deposit_delta, fees).
    Closing: the position shrinks by the fill; the trader withdraws the margin share
    plus realized P&L. Opening: margin = notional / leverage is deposited.
    Fees are deposited by the trader and paid to the exchange.
    """
    slot = plan.slot
    q = filled.astype(jnp.float32)
    notional = q * price
    fees = taker_fee * notional
    # Closing (possibly partial).
    size = accounts.size[slot]
    frac = jnp.where(plan.closing & (size > 0), q / jnp.maximum(size, 1), 0.0)
    entry = accounts.entry[slot]
    margin = accounts.margin[slot]
    released = frac * margin
    pnl = plan.side * (price - entry) * q
    withdraw = jnp.where(plan.closing, released + pnl, 0.0)
    bp = bankruptcy_price(plan.side, size, entry, margin)
    closed = jnp.where(plan.closing, filled, 0)
    ladder = ladder_add(ladder, plan.side, accounts.bucket[slot], -closed, -closed.astype(jnp.float32) * bp)
    left = size - closed
    side_after = jnp.where(plan.closing & (left == 0), 0, accounts.side[slot])
    margin_after = jnp.where(plan.closing, margin - released, margin)

    # Opening.
    opens = plan.opening & (filled > 0)
    new_margin = notional / plan.leverage
    lp = liquidation_price(plan.side, filled, price, new_margin, params)
    bucket = bucket_of(lp, ladder.size.shape[1], initial_price, liquidation)
    new_bp = bankruptcy_price(plan.side, filled, price, new_margin)
    opened = jnp.where(opens, filled, 0)
    ladder = ladder_add(ladder, plan.side, bucket, opened, opened.astype(jnp.float32) * new_bp)
    row = jnp.where(plan.side > 0, LONG, SHORT)
    accounts = accounts.replace(
        side=accounts.side.at[slot].set(jnp.where(opens, plan.side, side_after)),
        size=accounts.size.at[slot].set(jnp.where(opens, filled, left)),
        entry=accounts.entry.at[slot].set(jnp.where(opens, price, entry)),
        margin=accounts.margin.at[slot].set(jnp.where(opens, new_margin, margin_after)),
        bucket=accounts.bucket.at[slot].set(jnp.where(opens, bucket, accounts.bucket[slot])),
        epoch=accounts.epoch.at[slot].set(jnp.where(opens, ladder.epoch[row, bucket], accounts.epoch[slot])),
        cursor=(accounts.cursor + slot.shape[0]) % accounts.side.shape[0],
    )
    # Cash: trades move price * q between the trader pool and the counterparties (done by
    # the caller); here only deposits and withdrawals of the pool.
    deposit = jnp.sum(jnp.where(opens, new_margin, 0.0)) + jnp.sum(fees) - jnp.sum(withdraw)
    traders_cash_delta = deposit - jnp.sum(fees)
    return accounts, ladder, traders_cash_delta, deposit, jnp.sum(fees)
