"""Numeric parameters of the market, grouped by the stage that reads them.

Every field is traced under jit (see :func:`crashgym.types.pytree_dataclass`), so a
batch may hold different values side by side. Time is counted in steps; a step is
``MarketParams.step_seconds`` of simulated time. Prices are in quote currency (USD),
sizes in integer lots of one base unit, rates as fractions.
Defaults follow ../shared/MARKET_MECHANICS.md where it gives a number.
"""

from __future__ import annotations

from crashgym.config import require
from crashgym.obligations import ObligationParams
from crashgym.types import pytree_dataclass

ADL_RULES = {"bitmex": 0, "binance": 1, "hyperliquid": 2, "pro_rata": 3}
LIQUIDATION_MODES = {"full": 0, "chunked": 1}
IOC_LIMITS = {"band": 0, "bankruptcy": 1}


@pytree_dataclass
class BookParams:
    """The price ladder. tick_size in USD; sizes everywhere are integer lots of one base unit."""

    initial_price: float = 100.0
    tick_size: float = 0.05
    recentre_levels: int = 16  # re-centre when the mid drifts this many levels off centre
    # A side swept empty leaves no mid. 0: keep the previous mid (the book pins there until
    # that side refills); 1: the last trade price is the mid (price discovery continues).
    empty_side_last: int = 0

    def validate(self) -> None:
        require(self.initial_price > 0, "initial_price", "must be > 0")
        require(self.tick_size > 0, "tick_size", "must be > 0")
        require(self.recentre_levels >= 1, "recentre_levels", "must be >= 1")
        require(self.empty_side_last in (0, 1), "empty_side_last", "must be 0 or 1")


@pytree_dataclass
class FlowParams:
    """Background flow: the index (fair value) process and zero-intelligence orders."""

    # Index: log jump-diffusion with stochastic (AR(1) log-) volatility.
    vol_per_step: float = 3.0e-4  # log-return std per step in calm (~55%/yr at 10 s steps)
    vol_persistence: float = 0.995  # AR(1) coefficient of log-volatility
    vol_of_vol: float = 0.06  # std of log-volatility innovations
    jump_prob: float = 0.002  # probability of a jump per step
    jump_scale: float = 0.004  # mean absolute log jump (Laplace)
    basis_pull: float = 0.05  # fraction of the perp-index log gap the index closes per step (spot arbitrage)
    # Shock (news): from shock_step for shock_steps the index drifts and its vol is scaled.
    shock_step: int = -1  # -1: no shock
    shock_steps: int = 0
    shock_drift_per_step: float = 0.0
    shock_vol_mult: float = 1.0
    shock_ramp_steps: int = 0  # drift and extra vol grow linearly to full over this many steps (0: at once)
    risk_off_steps: int = 0  # how long makers see the news as a risk-off signal
    # Rebound after the shock (10 Oct 2025's V-shaped wick): for rebound_steps after the
    # shock ends the index drifts back up; shorts opened into the fall are squeezed.
    rebound_steps: int = 0
    rebound_drift_per_step: float = 0.0
    # Concentrated holder (OM, 13 Apr 2025): from holder_start_step for holder_steps it
    # sells into the book at holder_sell_lots per step, the rate growing geometrically to
    # holder_end_mult times that by the end (dumping accelerates as the price falls). Its
    # lots join the background sell flow and are booked in the background ledger; this
    # stands for the holder's own venue sales and the OTC-discount inventory that
    # arbitrageurs bring on-venue. -1: no holder.
    holder_start_step: int = -1
    holder_steps: int = 0
    holder_sell_lots: float = 0.0  # lots per step at the start
    holder_end_mult: float = 1.0
    holder_spot_impact: float = 0.0  # index log-return per lot the holder sells here (it sells on spot venues alike)
    # Limit orders (lots per level per step) and cancellations (fraction per step).
    limit_rate_lots: float = 50.0  # expected lots arriving one level from the mid (calm: ~$3M within +-2%)
    limit_decay_levels: float = 16.0  # e-folding distance of arrivals, in levels
    cancel_rate: float = 0.04
    # Latent order book (Toth et al. 2011, Donier et al. 2015): arrivals grow linearly with the
    # distance from the mid up to latent_levels, then follow the exponential decay; the
    # stationary book is V-shaped near the price (square-root impact in a static book). 0: off.
    latent_levels: float = 0.0
    # Risk-off news (risk_off_steps): the crowd pulls its limit orders within this many levels of
    # the mid and places none there while the news lasts (10 Oct 2025: spreads widened at once).
    # 0: off.
    news_gap_levels: float = 0.0
    # Market orders: self-exciting intensity (lots per step per side) with Pareto sizes.
    market_rate_lots: float = 30.0
    hawkes_excitation: float = 0.3  # branching ratio (< 1 for stability); see flow.hawkes_update
    hawkes_decay: float = 0.97  # per-step decay of the excitation
    market_size_tail: float = 2.5  # Pareto tail index of per-step market order volume
    arb_rate_lots: float = 400.0  # lots per step per 1% of basis, pulling perp to index

    def validate(self) -> None:
        require(self.vol_per_step >= 0, "vol_per_step", "must be >= 0")
        require(0 <= self.vol_persistence < 1, "vol_persistence", "must be in [0, 1)")
        require(self.vol_of_vol >= 0, "vol_of_vol", "must be >= 0")
        require(0 <= self.jump_prob <= 1, "jump_prob", "must be in [0, 1]")
        require(self.jump_scale >= 0, "jump_scale", "must be >= 0")
        require(0 <= self.basis_pull <= 1, "basis_pull", "must be in [0, 1]")
        require(self.shock_steps >= 0, "shock_steps", "must be >= 0")
        require(self.shock_vol_mult > 0, "shock_vol_mult", "must be > 0")
        require(self.shock_ramp_steps >= 0, "shock_ramp_steps", "must be >= 0")
        require(self.risk_off_steps >= 0, "risk_off_steps", "must be >= 0")
        require(self.news_gap_levels >= 0, "news_gap_levels", "must be >= 0")
        require(self.rebound_steps >= 0, "rebound_steps", "must be >= 0")
        require(self.holder_start_step >= -1, "holder_start_step", "must be >= 0, or -1 for no holder")
        require(self.holder_steps >= 0, "holder_steps", "must be >= 0")
        require(self.holder_sell_lots >= 0, "holder_sell_lots", "must be >= 0")
        require(self.holder_end_mult > 0, "holder_end_mult", "must be > 0")
        require(self.holder_spot_impact >= 0, "holder_spot_impact", "must be >= 0")
        require(self.limit_rate_lots >= 0, "limit_rate_lots", "must be >= 0")
        require(self.limit_decay_levels > 0, "limit_decay_levels", "must be > 0")
        require(0 <= self.cancel_rate <= 1, "cancel_rate", "must be in [0, 1]")
        require(self.latent_levels >= 0, "latent_levels", "must be >= 0 (0: no latent ramp)")
        require(self.market_rate_lots >= 0, "market_rate_lots", "must be >= 0")
        require(0 <= self.hawkes_excitation < 1, "hawkes_excitation", "must be in [0, 1) (a stable Hawkes process)")
        require(0 <= self.hawkes_decay < 1, "hawkes_decay", "must be in [0, 1)")
        require(self.market_size_tail > 1, "market_size_tail", "must be > 1 (finite mean)")
        require(self.arb_rate_lots >= 0, "arb_rate_lots", "must be >= 0")


@pytree_dataclass
class MakerParams:
    """Background market makers: quoting, defence, withdrawal and return.

    Stress = vol_weight * realized_vol / vol_ref + flow_weight * |flow imbalance|
    + skew_weight * |open-interest skew| + news_weight * risk_off + inventory_weight * |inventory| / max.
    Thresholds are spread across makers by +-heterogeneity so they do not act in lock step.
    """

    quote_size_lots: float = 60.0
    half_spread_ticks: float = 1.5
    vol_spread_coef: float = 1.0  # extra half-spread in ticks per tick of per-step realized vol
    inventory_skew: float = 1.0  # quote shift in half-spreads at max inventory
    max_inventory_lots: float = 3000.0
    capital: float = 2.0e6  # USD per maker
    vol_ref: float = 6.0e-4  # realized vol per step that counts as stress 1
    vol_weight: float = 1.0
    flow_weight: float = 0.6
    skew_weight: float = 0.3
    news_weight: float = 1.0
    inventory_weight: float = 0.5
    defence_stress: float = 1.2  # above: widen and shrink (defence)
    withdraw_stress: float = 2.2  # above: pull all quotes
    return_stress: float = 1.0  # below this for return_lag_steps: quote again
    return_lag_steps: int = 60
    heterogeneity: float = 0.25
    defence_widen: float = 3.0
    defence_size: float = 0.4
    # Risk-off news widens every quoting maker's half-spread by this factor while it lasts
    # (10 Oct 2025: "T+0 tariff news, spreads widen, MMs still quote"); defence multiplies on top.
    news_widen: float = 1.0
    maker_fee: float = -0.00005  # negative: rebate
    # Obligation binding (the rule itself is MarketParams.maker_obligation): the first
    # round(obliged_fraction * n_makers) makers, i.e. those with the lowest stress thresholds
    # (the first to withdraw), are bound. 1.0 binds all; it has no effect while the rule is inactive.
    obliged_fraction: float = 1.0

    def validate(self) -> None:
        require(self.quote_size_lots >= 0, "quote_size_lots", "must be >= 0")
        require(0 <= self.obliged_fraction <= 1, "obliged_fraction", "must be in [0, 1]")
        require(self.half_spread_ticks >= 0.5, "half_spread_ticks", "must be >= 0.5")
        require(self.max_inventory_lots > 0, "max_inventory_lots", "must be > 0")
        require(self.capital > 0, "capital", "must be > 0")
        require(self.vol_ref > 0, "vol_ref", "must be > 0")
        require(self.defence_stress <= self.withdraw_stress, "defence_stress", "must not exceed withdraw_stress")
        require(self.news_widen >= 1.0, "news_widen", "must be >= 1 (news widens quotes, never tightens them)")
        require(self.return_stress <= self.withdraw_stress, "return_stress", "must not exceed withdraw_stress")
        require(self.return_lag_steps >= 0, "return_lag_steps", "must be >= 0")
        require(0 <= self.heterogeneity < 1, "heterogeneity", "must be in [0, 1)")
        require(self.defence_widen >= 1, "defence_widen", "must be >= 1")
        require(0 <= self.defence_size <= 1, "defence_size", "must be in [0, 1]")


@pytree_dataclass
class AccountParams:
    """Leveraged traders (isolated margin) and the margin tier table.

    Tier k applies to position notional <= tier_notional[k] (USD): maintenance margin
    rate tier_mmr[k] and deduction cum_k = floor_k * (mmr_k - mmr_{k-1}) + cum_{k-1}
    (Binance's formula), maximum leverage tier_max_leverage[k].
    """

    initial_open_fraction: float = 0.6  # of slots holding a position at reset
    open_prob: float = 0.1  # chance an empty slot opens when visited
    close_prob: float = 0.05  # chance an open position closes when visited
    long_bias: float = 0.55  # probability a new position is long, before trend
    trend_coef: float = 0.3  # shift of that probability per unit of normalized momentum
    risk_off_open_mult: float = 0.3  # open_prob multiplier while the news is risk-off
    notional_median: float = 20000.0  # USD
    notional_sigma: float = 1.0  # log-normal sigma of notional
    leverage_choices: tuple[float, ...] = (2.0, 3.0, 5.0, 10.0, 20.0, 25.0, 50.0)
    leverage_weights: tuple[float, ...] = (0.10, 0.12, 0.20, 0.25, 0.18, 0.08, 0.07)
    tier_notional: tuple[float, ...] = (5.0e4, 2.5e5, 1.0e6, 1.0e7, 2.0e7, 5.0e7, 1.0e8)
    tier_mmr: tuple[float, ...] = (0.004, 0.005, 0.01, 0.025, 0.05, 0.10, 0.125)
    tier_max_leverage: tuple[float, ...] = (125.0, 100.0, 50.0, 20.0, 10.0, 5.0, 4.0)
    taker_fee: float = 0.0005

    def validate(self) -> None:
        require(0 <= self.initial_open_fraction <= 1, "initial_open_fraction", "must be in [0, 1]")
        require(0 <= self.open_prob <= 1, "open_prob", "must be in [0, 1]")
        require(0 <= self.close_prob <= 1, "close_prob", "must be in [0, 1]")
        require(0 <= self.long_bias <= 1, "long_bias", "must be in [0, 1]")
        require(self.notional_median > 0, "notional_median", "must be > 0")
        require(self.notional_sigma >= 0, "notional_sigma", "must be >= 0")
        require(len(self.leverage_choices) == len(self.leverage_weights), "leverage_weights", "must have one weight per leverage choice")
        require(all(x >= 1 for x in self.leverage_choices), "leverage_choices", "must all be >= 1")
        require(all(w >= 0 for w in self.leverage_weights) and sum(self.leverage_weights) > 0, "leverage_weights", "must be >= 0 with a positive sum")
        n = len(self.tier_notional)
        require(n >= 1 and len(self.tier_mmr) == n and len(self.tier_max_leverage) == n, "tier_mmr", "tier tables must have equal lengths")
        require(all(a < b for a, b in zip(self.tier_notional, self.tier_notional[1:])), "tier_notional", "must increase")
        require(all(0 < m < 1 for m in self.tier_mmr), "tier_mmr", "must be in (0, 1)")
        require(
            all(m < 1.0 / lev for m, lev in zip(self.tier_mmr, self.tier_max_leverage)),
            "tier_mmr",
            "maintenance margin must be below initial margin (1 / max leverage) in every tier",
        )
        require(0 <= self.taker_fee < 0.01, "taker_fee", "must be in [0, 0.01)")


@pytree_dataclass
class LiquidationParams:
    """The three tiers: book liquidation, insurance fund, auto-deleveraging (ADL)."""

    liquidation_fee: float = 0.005  # of liquidated notional, to the insurance fund (out of the surplus)
    mode: int = 0  # LIQUIDATION_MODES: 0 full, 1 chunked (at most chunk_fraction of the queue per round)
    chunk_fraction: float = 0.2
    # IOC_LIMITS: how far the engine's IOC order may walk the book. 0 band: anywhere within
    # the price band; 1 bankruptcy: within the band and no worse than the queue's (average)
    # bankruptcy price; the rest waits for the fund's take-over / ADL (crashgym.liquidation).
    ioc_limit: int = 0
    bucket_width: float = 0.002  # liquidation-price grid spacing as a fraction of the initial price
    insurance_fund: float = 3.0e5  # USD at reset
    adl_drawdown: float = 0.3  # ADL once the fund is this far below its peak (OKX / Bybit: 30%)
    adl_rule: int = 0  # ADL_RULES: bitmex, binance, hyperliquid, pro_rata
    adl_at_mark: int = 0  # 1: close ADL at the mark price (Hyperliquid) instead of the bankruptcy price
    # 1: the background crowd is an ADL candidate like every other holder (one aggregate
    # position ranked at effective leverage 1, behind leveraged holders with the same PnL%);
    # 0: only leveraged accounts, makers and the agent (crashgym.adl).
    adl_background: int = 1

    def validate(self) -> None:
        require(0 <= self.liquidation_fee < 0.05, "liquidation_fee", "must be in [0, 0.05)")
        require(self.mode in LIQUIDATION_MODES.values(), "mode", f"must be one of {sorted(LIQUIDATION_MODES)}")
        require(0 < self.chunk_fraction <= 1, "chunk_fraction", "must be in (0, 1]")
        require(self.ioc_limit in IOC_LIMITS.values(), "ioc_limit", f"must be one of {sorted(IOC_LIMITS)}")
        require(0 < self.bucket_width < 0.05, "bucket_width", "must be in (0, 0.05)")
        require(self.insurance_fund >= 0, "insurance_fund", "must be >= 0")
        require(0 < self.adl_drawdown <= 1, "adl_drawdown", "must be in (0, 1]")
        require(self.adl_rule in ADL_RULES.values(), "adl_rule", f"must be one of {sorted(ADL_RULES)}")
        require(self.adl_at_mark in (0, 1), "adl_at_mark", "must be 0 or 1")
        require(self.adl_background in (0, 1), "adl_background", "must be 0 or 1")


@pytree_dataclass
class FundingParams:
    """Mark price (median rule) and funding (premium index, interest, clamp, cap)."""

    interval_steps: int = 360  # one hour at 10 s steps (Hyperliquid pays hourly)
    interest_per_interval: float = 0.0000125  # 0.01% per 8 h, per hour
    clamp: float = 0.0005
    cap: float = 0.02
    basis_ma_steps: float = 30.0  # moving-average window of (mid - index) for mark P2

    def validate(self) -> None:
        require(self.interval_steps >= 1, "interval_steps", "must be >= 1")
        require(self.clamp >= 0, "clamp", "must be >= 0")
        require(self.cap > 0, "cap", "must be > 0")
        require(self.basis_ma_steps >= 1, "basis_ma_steps", "must be >= 1")


@pytree_dataclass
class RuleParams:
    """Market rules: circuit breaker, price band, liquidation throttle."""

    halt_move: float = 0.0  # halt when |mark / reference - 1| exceeds this; 0 disables
    halt_window_steps: float = 30.0  # reference = moving average of the mark over this window (LULD: 5 min)
    halt_steps: int = 30  # length of a halt
    price_band: float = 0.10  # market orders walk at most this far from the mark
    throttle_notional: float = 0.0  # max liquidated notional (USD) per step; 0 disables

    def validate(self) -> None:
        require(self.halt_move >= 0, "halt_move", "must be >= 0")
        require(self.halt_window_steps >= 1, "halt_window_steps", "must be >= 1")
        require(self.halt_steps >= 0, "halt_steps", "must be >= 0")
        require(0 < self.price_band <= 1, "price_band", "must be in (0, 1]")
        require(self.throttle_notional >= 0, "throttle_notional", "must be >= 0")


@pytree_dataclass
class AgentParams:
    """The learning agent's account (one holder, cross margin on its own account)."""

    capital: float = 1.0e6
    maker_fee: float = -0.00005
    taker_fee: float = 0.0005
    maintenance_margin: float = 0.01
    max_quote_lots: float = 200.0
    max_offset_ticks: float = 20.0
    inventory_penalty: float = 0.0  # reward penalty per (inventory notional / capital)^2
    max_leverage: float = 10.0
    # Reward equity values the position at its exit price (crashgym.envs.common.exit_equity):
    # what closing it now with a market order would get, taker fee included. False: at the
    # mark, which a maker quoting the touch of a thin book can move with its own orders.
    value_at_exit: bool = True
    # MarketMaker risk limit: |position| after full fills (lots; inf: none). 5,000 lots is ~0.5x
    # the default capital at 100 USD: without a limit the maker can buy far more than the book
    # could ever absorb and drag the whole market up with it (benchmarks/LEARNING.md).
    max_inventory_lots: float = 5000.0

    def validate(self) -> None:
        require(self.capital > 0, "capital", "must be > 0")
        require(0 < self.maintenance_margin < 1, "maintenance_margin", "must be in (0, 1)")
        require(self.max_quote_lots > 0, "max_quote_lots", "must be > 0")
        require(self.max_offset_ticks >= 1, "max_offset_ticks", "must be >= 1")
        require(self.inventory_penalty >= 0, "inventory_penalty", "must be >= 0")
        require(self.max_inventory_lots >= 0, "max_inventory_lots", "must be >= 0 (inf: no limit)")
        require(self.maintenance_margin < 1.0 / self.max_leverage, "maintenance_margin", "must be below initial margin 1 / max_leverage")


@pytree_dataclass
class MarketParams:
    step_seconds: float = 10.0
    book: BookParams = BookParams()
    flow: FlowParams = FlowParams()
    makers: MakerParams = MakerParams()
    accounts: AccountParams = AccountParams()
    liquidation: LiquidationParams = LiquidationParams()
    funding: FundingParams = FundingParams()
    rules: RuleParams = RuleParams()
    agent: AgentParams = AgentParams()
    # The obligation binding the background makers (crashgym.makers.quotes); inactive by default.
    # The learning agent's own obligation is separate (crashgym.envs EnvParams.obligations).
    maker_obligation: ObligationParams = ObligationParams()

    def validate(self) -> None:
        require(self.step_seconds > 0, "step_seconds", "must be > 0")
