"""Background flow: the index (fair value) and zero-intelligence orders around it.

- The index follows a log jump-diffusion with AR(1) log-volatility (stochastic
  volatility gives volatility clustering; Laplace jumps and the vol mixture give heavy
  tails), plus a scenario shock (news: drift and a volatility jump), and is pulled
  towards the perp by spot arbitrage (`basis_pull`): the seeds' basis spiral.
- Limit orders arrive around the mid with intensity decaying away from it and are
  cancelled at a constant rate (Cont-Stoikov-Talreja style, in expectation); optionally
  the arrivals ramp up linearly from the mid first (a latent order book).
- Market orders are self-exciting (a discrete Hawkes intensity) with Pareto sizes.
- Arbitrage flow buys the perp below the index and sells it above.
- A concentrated holder (the OM collapse) sells into the book on a schedule that
  accelerates; a rebound phase after the shock (10 Oct 2025's wick) squeezes shorts.

Randomness is a handful of uniforms per step. Per-level arrivals use randomized
rounding with a rotated low-discrepancy sequence (one uniform per side) because a
uniform per level costs more than the rest of the step on CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import ndtri

from crashgym.params import FlowParams

Array = jax.Array

_GOLDEN = 0.6180339887498949


def in_shock(step: Array, flow: FlowParams) -> tuple[Array, Array]:
    """(shock active, risk-off news visible to makers) at this step."""
    on = flow.shock_step >= 0
    since = step - flow.shock_step
    return on & (since >= 0) & (since < flow.shock_steps), on & (since >= 0) & (since < flow.risk_off_steps)


def shock_intensity(step: Array, flow: FlowParams) -> Array:
    """How much of the shock is in force at this step, in [0, 1] (0 outside the shock).

    The news lands at shock_step, but the selling builds: the drift and the extra volatility
    grow linearly to full strength over shock_ramp_steps (0: all at once). On 10 Oct 2025 the
    tariff news came ~40 minutes before depth started to collapse and ~80 before the bottom.
    """
    shock, _ = in_shock(step, flow)
    since = (step - flow.shock_step + 1).astype(jnp.float32)
    ramp = jnp.clip(since / jnp.maximum(flow.shock_ramp_steps, 1), 0.0, 1.0)
    return jnp.where(shock, ramp, 0.0)


def in_rebound(step: Array, flow: FlowParams) -> Array:
    """The rebound phase: the rebound_steps right after the shock ends."""
    since = step - flow.shock_step - flow.shock_steps
    return (flow.shock_step >= 0) & (since >= 0) & (since < flow.rebound_steps)


def holder_lots(step: Array, flow: FlowParams) -> Array:
    """Expected lots the concentrated holder sells this step (0 outside its window).

    The rate grows geometrically from holder_sell_lots to holder_sell_lots * holder_end_mult.
    """
    since = (step - flow.holder_start_step).astype(jnp.float32)
    active = (flow.holder_start_step >= 0) & (since >= 0) & (since < flow.holder_steps)
    frac = since / jnp.maximum(flow.holder_steps - 1, 1)
    return jnp.where(active, flow.holder_sell_lots * jnp.power(flow.holder_end_mult, frac), 0.0)


def index_step(index: Array, log_vol: Array, mid: Array, step: Array, u: Array, flow: FlowParams) -> tuple[Array, Array]:
    """One step of the fair value. u: 4 uniforms. Returns (index, log_vol)."""
    shock, _ = in_shock(step, flow)
    strength = shock_intensity(step, flow)
    z_vol, z_ret = ndtri(jnp.clip(u[:2], 1e-7, 1 - 1e-7))
    log_vol = flow.vol_persistence * log_vol + flow.vol_of_vol * z_vol
    sigma = flow.vol_per_step * jnp.exp(log_vol) * (1.0 + (flow.shock_vol_mult - 1.0) * strength)
    centred = u[3] - 0.5  # Laplace by inverse CDF
    laplace = -jnp.sign(centred) * jnp.log1p(-2.0 * jnp.abs(centred) + 1e-12)
    jump = jnp.where(u[2] < flow.jump_prob, flow.jump_scale * laplace, 0.0)
    rebound = jnp.where(in_rebound(step, flow), flow.rebound_drift_per_step, 0.0)
    drift = jnp.where(shock, flow.shock_drift_per_step * strength, rebound)
    # The holder dumps on spot venues too: linear impact on the fair value per lot sold.
    drift = drift - flow.holder_spot_impact * holder_lots(step, flow)
    pull = flow.basis_pull * (jnp.log(mid) - jnp.log(index))
    return index * jnp.exp(drift + sigma * z_ret + jump + pull), log_vol


def _rounded(expected: Array, u0: Array) -> Array:
    """Randomized rounding of per-level expectations with a rotated golden-ratio sequence."""
    u = jnp.mod(u0 + _GOLDEN * jnp.arange(expected.shape[-1]), 1.0)
    return jnp.floor(expected + u).astype(jnp.int32)


def arrival_profile(dist: Array, flow: FlowParams) -> Array:
    """Expected background limit lots arriving per step at `dist` levels from the mid (dist > 0).

    Zero-intelligence arrivals decay exponentially away from the mid (e-folding
    `limit_decay_levels`). With `latent_levels` > 0 they are also scaled by
    min(dist / latent_levels, 1): the latent order book (Toth et al. 2011; Donier, Bonart,
    Mastromatteo & Bouchaud 2015), whose density grows linearly away from the price. Liquidity
    that was waiting off-book is revealed as the price comes near it, and because arrivals
    follow the current mid, levels a metaorder consumed refill from that profile around the new
    price. A static linear (V-shaped) book costs Q ~ depth_slope * impact^2 / 2 to move the
    price, so impact would grow as sqrt(Q) inside the ramp; in this market it does not (the
    makers' quotes and the refill dominate: docs/impact.md). An
    approximation: the latent book's reservation prices do not diffuse, and the ramp is cut off
    by the exponential decay.
    """
    ramp = jnp.where(flow.latent_levels > 0, jnp.clip(dist / jnp.maximum(flow.latent_levels, 1e-6), 0.0, 1.0), 1.0)
    return flow.limit_rate_lots * jnp.exp(-(dist - 0.5) / flow.limit_decay_levels) * ramp


def limit_orders(
    bid: Array, ask: Array, mid_index: Array, best_bid: Array, best_ask: Array, u: Array, flow: FlowParams,
    gap_levels: Array | float = 0.0,
) -> tuple[Array, Array, Array, Array]:
    """Background limit arrivals and cancellations on the ladder.

    New bids go below the mid and strictly below the best ask; asks mirrored (no order
    crosses). gap_levels: while risk-off news lasts (`news_gap_levels`), the crowd cancels
    what it rests within that many levels of the mid and places nothing there: limit-order
    traders, like the makers, back away from the price on the news. Returns (bid, ask,
    bid_kept, ask_kept), *_kept the fraction of each level's resting background volume that
    survived cancellation (for queue positions).
    """
    n = bid.shape[-1]
    j = jnp.arange(n, dtype=jnp.float32)
    dist_bid = mid_index - j
    dist_ask = j - mid_index
    exp_bid = jnp.where((dist_bid > gap_levels) & (j < best_ask), arrival_profile(dist_bid, flow), 0.0)
    exp_ask = jnp.where((dist_ask > gap_levels) & (j > best_bid), arrival_profile(dist_ask, flow), 0.0)
    cancel_bid = jnp.minimum(_rounded(bid * flow.cancel_rate, u[2]), bid)
    cancel_ask = jnp.minimum(_rounded(ask * flow.cancel_rate, u[3]), ask)
    cancel_bid = jnp.where((dist_bid > 0) & (dist_bid <= gap_levels), bid, cancel_bid)
    cancel_ask = jnp.where((dist_ask > 0) & (dist_ask <= gap_levels), ask, cancel_ask)
    bid_kept = jnp.where(bid > 0, 1.0 - cancel_bid / jnp.maximum(bid, 1), 1.0)
    ask_kept = jnp.where(ask > 0, 1.0 - cancel_ask / jnp.maximum(ask, 1), 1.0)
    return bid - cancel_bid + _rounded(exp_bid, u[0]), ask - cancel_ask + _rounded(exp_ask, u[1]), bid_kept, ask_kept


def market_orders(hawkes: Array, basis: Array, u: Array, flow: FlowParams, step: Array) -> tuple[Array, Array]:
    """Background taker lots (buy, sell) this step.

    hawkes: current intensity (lots per side). basis: (mid - index) / index.
    Each side draws a Pareto multiple of the intensity; arbitrage adds flow against the
    basis; the concentrated holder (if any) adds its scheduled sells. All of it is the
    background crowd's, so the market books it in the background ledger.
    """
    pareto = jnp.power(jnp.clip(u[:2], 1e-6, 1.0), -1.0 / flow.market_size_tail)
    mean = flow.market_size_tail / (flow.market_size_tail - 1.0)
    base = hawkes * pareto / mean
    arb = flow.arb_rate_lots * basis * 100.0
    buy = base[0] + jnp.maximum(-arb, 0.0)
    sell = base[1] + jnp.maximum(arb, 0.0) + holder_lots(step, flow)
    return jnp.floor(buy + u[2]).astype(jnp.int32), jnp.floor(sell + u[3]).astype(jnp.int32)


def hawkes_update(hawkes: Array, executed_lots: Array, flow: FlowParams) -> Array:
    """Discrete Hawkes intensity: decays to the base rate, excited by executed taker volume.

    Excitation is normalised so the branching ratio is `hawkes_excitation` for
    two-sided flow at the base rate. Every executed lot excites it (traders', arbitrage,
    liquidations), so the intensity settles above base / (1 - excitation): in calm ~5x the
    base rate at 0.6, which after oct10's crash let the takers eat the book faster than it
    refilled; hence the default 0.3 (docs/scenarios.md, "What changed in session 5").
    """
    base = flow.market_rate_lots
    excess = flow.hawkes_decay * (hawkes - base)
    kick = flow.hawkes_excitation * (1.0 - flow.hawkes_decay) * executed_lots / 2.0
    return jnp.clip(base + excess + kick, base, 50.0 * base + 1.0)
