"""Order book: a price ladder on a tick grid, matching, queue positions, re-centring.

The ladder holds 2L levels; index j is the absolute tick ``center_tick - L + j``.
Resting volume at a level has three owners, queued in price-time priority:
background (zero-intelligence) orders first (they are older), then the background
makers (who cancel and re-quote every step, so they join the back each time), and the
agent, whose queue position (lots ahead of it) is tracked explicitly. A market order
walks the ladder from the touch outwards with a prefix sum ("sweep").

Everything here is a pure function of one market; callers vmap.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from crashgym.types import pytree_dataclass

Array = jax.Array


def prefix_sum(x: Array) -> Array:
    """Inclusive prefix sum along the last axis.

    XLA:CPU lowers ``jnp.cumsum`` to a reduce-window that costs O(n^2) on a ladder of a
    few hundred levels. Floats go through one matmul with an upper-triangular matrix of
    ones (a GEMM over the batch; exact for integer-valued lots below 2^24); integers
    through log2(n) shifted adds.
    """
    n = x.shape[-1]
    if jnp.issubdtype(x.dtype, jnp.floating):
        upper = np.triu(np.ones((n, n), x.dtype))  # a constant of the program, not rebuilt per call
        return jnp.matmul(x, upper, precision=jax.lax.Precision.HIGHEST)
    shift = 1
    while shift < n:
        pad = [(0, 0)] * (x.ndim - 1) + [(shift, 0)]
        x = x + jnp.pad(x, pad)[..., :n]
        shift *= 2
    return x


def tick_to_index(tick: Array, center_tick: Array, n_levels: int) -> Array:
    return tick - center_tick + n_levels


def ladder_prices(center_tick: Array, n_levels: int, tick_size: Array) -> Array:
    """Price in USD of every ladder level, lowest first."""
    ticks = center_tick - n_levels + jnp.arange(2 * n_levels)
    return ticks.astype(jnp.float32) * tick_size


def best_bid_index(bid_total: Array) -> Array:
    """Highest index with bids, or -1 when the bid side is empty."""
    n = bid_total.shape[-1]
    return jnp.max(jnp.where(bid_total > 0, jnp.arange(n), -1), axis=-1)


def best_ask_index(ask_total: Array) -> Array:
    """Lowest index with asks, or 2L when the ask side is empty."""
    n = ask_total.shape[-1]
    return jnp.min(jnp.where(ask_total > 0, jnp.arange(n), n), axis=-1)


def one_hot_volume(index: Array, size: Array, n: int) -> Array:
    """Volume per level of a few resting orders (index (k,), size (k,)); out-of-range orders vanish."""
    hit = index[:, None] == jnp.arange(n)[None, :]
    return jnp.sum(jnp.where(hit, size[:, None], 0), axis=0)


@pytree_dataclass
class SideQueue:
    """One side of the book seen in walking order (index 0 is the far end from the
    opposite side's touch, so the walk goes from the best price outwards)."""

    background: Array  # int32 (N,)
    maker_index: Array  # int32 (n,) walk-order index of each maker's quote
    maker_size: Array  # int32 (n,)
    agent_index: Array  # int32
    agent_size: Array  # int32
    agent_ahead: Array  # int32
    prices: Array  # float32 (N,) in walk order


@pytree_dataclass
class SweepFill:
    lots: Array  # int32 filled
    notional: Array  # float32 USD
    last_price: Array  # price of the deepest level reached (USD); nan if nothing filled
    background: Array  # int32 (N,) filled per level from background orders
    makers: Array  # int32 (n,) filled per maker
    agent: Array  # int32 filled from the agent's quote
    agent_ahead: Array  # int32 the agent's new queue position
    filled: Array  # int32 (N,) filled per level, all owners together (walk order)


def total_volume(side: SideQueue) -> Array:
    n = side.background.shape[-1]
    agent = one_hot_volume(side.agent_index[None], side.agent_size[None], n)
    return side.background + one_hot_volume(side.maker_index, side.maker_size, n) + agent


def sweep(side: SideQueue, lots: Array, walk_limit: Array, resting: Array | None = None) -> SweepFill:
    """A market order of `lots` walks `side` from the best price outwards.

    walk_limit (bool (N,)): levels the order may reach (the price band). What cannot
    be filled within it is left to the caller (IOC: the rest is cancelled or queued).
    resting (int32 (N,), optional): `total_volume(side)` when the caller already keeps the
    per-level totals (the market step does: a sweep only takes `filled` off them), so
    the makers' and agent's quotes are not spread over the ladder again.
    """
    n = side.background.shape[-1]
    levels = jnp.arange(n)
    resting = total_volume(side) if resting is None else resting
    volume = jnp.where(walk_limit, resting, 0)
    volume_f = volume.astype(jnp.float32)
    before = prefix_sum(volume_f) - volume_f
    fill = jnp.clip(lots.astype(jnp.float32) - before, 0.0, volume_f).astype(jnp.int32)

    # The agent is filled once the volume ahead of it at its level is gone. Its recorded
    # queue position can be stale (orders ahead were cancelled or re-quoted away): it is
    # never behind more than is really queued at its level.
    at_agent = levels == side.agent_index
    queued_others = jnp.sum(jnp.where(at_agent, resting, 0)) - side.agent_size
    ahead = jnp.where(jnp.any(at_agent), jnp.minimum(side.agent_ahead, queued_others), side.agent_ahead)
    agent_level_fill = jnp.sum(jnp.where(at_agent, fill, 0))
    agent_fill = jnp.clip(agent_level_fill - ahead, 0, side.agent_size)
    agent_ahead = jnp.maximum(ahead - agent_level_fill, 0)
    others = fill - jnp.where(at_agent, agent_fill, 0)

    background = jnp.minimum(others, side.background)
    maker_left = others - background  # what reaches the makers at each level
    k = side.maker_index.shape[0]
    same_level = side.maker_index[:, None] == side.maker_index[None, :]
    earlier = jnp.tril(jnp.ones((k, k), bool), -1)
    ahead_of_maker = jnp.sum(jnp.where(same_level & earlier, side.maker_size[None, :], 0), axis=1)
    maker_level_left = maker_left[jnp.clip(side.maker_index, 0, n - 1)]
    in_range = (side.maker_index >= 0) & (side.maker_index < n)
    makers = jnp.where(in_range, jnp.clip(maker_level_left - ahead_of_maker, 0, side.maker_size), 0)

    total = jnp.sum(fill)
    deepest = jnp.max(jnp.where(fill > 0, levels, -1))
    last_price = jnp.where(total > 0, side.prices[jnp.maximum(deepest, 0)], jnp.nan)
    return SweepFill(
        lots=total,
        notional=jnp.sum(fill.astype(jnp.float32) * side.prices),
        last_price=last_price,
        background=background,
        makers=makers,
        agent=agent_fill,
        agent_ahead=agent_ahead,
        filled=fill,
    )


def sweep_moves(side: SideQueue, lots: Array, walk_limit: Array, resting: Array | None = None) -> Array:
    """Whether `sweep` would change anything. False when it can fill nothing (no lots, or no
    volume within the walk limit) and the agent's queue position needs no correction; then
    `sweep` returns exactly `no_fill(side)` and a caller may skip the per-level work."""
    n = side.background.shape[-1]
    resting = total_volume(side) if resting is None else resting
    reachable = jnp.any(walk_limit & (resting > 0))
    at_ladder = (side.agent_index >= 0) & (side.agent_index < n)
    queued_others = resting[jnp.clip(side.agent_index, 0, n - 1)] - side.agent_size
    stale = (at_ladder & (side.agent_ahead > queued_others)) | (side.agent_ahead < 0)
    return ((lots > 0) & reachable) | stale


def no_fill(side: SideQueue) -> SweepFill:
    """`sweep`'s result when `sweep_moves` is False: nothing filled, the agent's queue kept."""
    zeros = jnp.zeros(side.background.shape, jnp.int32)
    return SweepFill(lots=jnp.int32(0), notional=jnp.float32(0.0), last_price=jnp.float32(jnp.nan), background=zeros,
                     makers=jnp.zeros(side.maker_size.shape, jnp.int32), agent=jnp.int32(0),
                     agent_ahead=jnp.asarray(side.agent_ahead, jnp.int32), filled=zeros)


def recentre(bid: Array, ask: Array, center_tick: Array, mid_index: Array, n_levels: int, recentre_levels: Array):
    """Shift the ladder so the mid sits at its centre once it has drifted far.

    Background orders shifted off the ladder are cancelled and returned as a count
    (the caller adds them to the overflow counter), never dropped silently.
    """
    n = 2 * n_levels
    drift = mid_index - n_levels
    shift = jnp.where(jnp.abs(drift) > recentre_levels, jnp.round(drift).astype(jnp.int32), 0)
    src = jnp.arange(n) + shift
    valid = (src >= 0) & (src < n)
    src = jnp.clip(src, 0, n - 1)
    new_bid = jnp.where(valid, bid[src], 0)
    new_ask = jnp.where(valid, ask[src], 0)
    dropped = (jnp.sum(bid) - jnp.sum(new_bid)) + (jnp.sum(ask) - jnp.sum(new_ask))
    return new_bid, new_ask, center_tick + shift, dropped


def depth_within(bid_total: Array, ask_total: Array, prices: Array, mid: Array, fraction: float | Array) -> Array:
    """Notional (USD) resting on both sides within +-fraction of the mid."""
    near = jnp.abs(prices - mid) <= fraction * mid
    return jnp.sum(jnp.where(near, (bid_total + ask_total).astype(jnp.float32) * prices, 0.0))
