"""One step of the exchange, composed from the stages in the order the exchange runs them.

    index moves -> makers re-quote -> agent's orders -> background limit orders
    -> market orders sweep the book -> mark price -> liquidation rounds (cascade)
    -> auto-deleveraging -> funding -> circuit breaker -> ladder re-centres

`Market.step` is a pure function of (key, state, orders, params) for one market; vmap
it freely. `Market.step_batch` is the same step for a batch that also skips work no
market of the batch needs: idle liquidation rounds (batch-level `lax.cond`s), and the
O(accounts) ADL stage, run only on the markets that can close something, gathered in
chunks (under a plain vmap a per-market cond would run both branches every step).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from crashgym import accounts as acc_mod
from crashgym import adl, book, flow, funding, liquidation, makers, rules
from crashgym.params import MarketParams
from crashgym.state import (Accounts, Agent, AgentOrders, Book, Engine, LiquidationLadder, Ledger, Makers, MarketState,
                            Signals)
from crashgym.types import MarketShape

Array = jax.Array
Info = dict[str, Array]

_VAR_DECAY = 0.05  # EWMA weight of realized variance / flow imbalance / momentum per step


def _update_entry(position: Array, entry: Array, delta: Array, price: Array) -> Array:
    """Average entry price after a fill of signed `delta` lots at `price`."""
    new = position + delta
    grows = (jnp.sign(delta) == jnp.sign(position)) | (position == 0)
    flips = jnp.sign(new) * jnp.sign(position) < 0
    avg = (jnp.abs(position) * entry + jnp.abs(delta) * price) / jnp.maximum(jnp.abs(new), 1)
    return jnp.where(new == 0, 0.0, jnp.where(grows, avg, jnp.where(flips, price, entry)))


def _side_queue(is_bid: Array, bid: Array, ask: Array, mk: Makers, ag: Agent, center: Array, prices: Array, n_levels: int
                ) -> book.SideQueue:
    """The bid side (reversed, so the walk goes down from the best bid) or the ask side."""
    n = 2 * n_levels
    flip = lambda i: jnp.where(is_bid, n - 1 - i, i)  # noqa: E731
    sel = lambda b, a: jnp.where(is_bid, b, a)  # noqa: E731
    return book.SideQueue(
        background=sel(bid[::-1], ask),
        maker_index=flip(book.tick_to_index(sel(mk.bid_tick, mk.ask_tick), center, n_levels)),
        maker_size=sel(mk.bid_size, mk.ask_size),
        agent_index=flip(book.tick_to_index(sel(ag.bid_tick, ag.ask_tick), center, n_levels)),
        agent_size=sel(ag.bid_size, ag.ask_size),
        agent_ahead=sel(ag.bid_ahead, ag.ask_ahead),
        prices=sel(prices[::-1], prices),
    )


def _settle_makers(is_bid: Array, fill: book.SweepFill, bid: Array, ask: Array, mk: Makers, ag: Agent, ledger: Ledger,
                   tick_size: Array, params: MarketParams):
    """Book the resting side of a sweep: background orders, makers and the agent.

    When the bid side was hit the resting owners bought; otherwise they sold.
    """
    bid, ask = _take_background(is_bid, fill, bid, ask)
    mk, ag, ledger = _settle_owners(is_bid, fill, mk, ag, ledger, tick_size, params)
    return bid, ask, mk, ag, ledger


def _take_background(is_bid: Array, fill: book.SweepFill, bid: Array, ask: Array) -> tuple[Array, Array]:
    """The background orders a sweep filled leave the ladder (per level: integer lots)."""
    zi = jnp.where(is_bid, fill.background[::-1], fill.background)
    return bid - jnp.where(is_bid, zi, 0), ask - jnp.where(is_bid, 0, zi)


def _settle_owners(is_bid: Array, fill: book.SweepFill, mk: Makers, ag: Agent, ledger: Ledger, tick_size: Array,
                   params: MarketParams) -> tuple[Makers, Agent, Ledger]:
    """Positions, cash and fees of the resting owners a sweep filled (per owner, not per level)."""
    direction = jnp.where(is_bid, 1, -1)  # +1: resting owners bought
    # Makers.
    mk_tick = jnp.where(is_bid, mk.bid_tick, mk.ask_tick)
    mk_notional = fill.makers * mk_tick.astype(jnp.float32) * tick_size
    mk_fee = params.makers.maker_fee * mk_notional
    mk_entry = _update_entry(mk.inventory, mk.entry, direction * fill.makers, mk_tick * tick_size)
    mk = mk.replace(
        inventory=mk.inventory + direction * fill.makers,
        cash=mk.cash - direction * mk_notional - mk_fee,
        entry=mk_entry,
        bid_size=mk.bid_size - jnp.where(is_bid, fill.makers, 0),
        ask_size=mk.ask_size - jnp.where(is_bid, 0, fill.makers),
    )
    # Agent.
    ag_tick = jnp.where(is_bid, ag.bid_tick, ag.ask_tick)
    ag_notional = fill.agent * ag_tick.astype(jnp.float32) * tick_size
    ag_fee = params.agent.maker_fee * ag_notional
    ag = ag.replace(
        entry=_update_entry(ag.position, ag.entry, direction * fill.agent, ag_tick * tick_size),
        position=ag.position + direction * fill.agent,
        cash=ag.cash - direction * ag_notional - ag_fee,
        bid_size=ag.bid_size - jnp.where(is_bid, fill.agent, 0),
        ask_size=ag.ask_size - jnp.where(is_bid, 0, fill.agent),
        bid_ahead=jnp.where(is_bid, fill.agent_ahead, ag.bid_ahead),
        ask_ahead=jnp.where(is_bid, ag.ask_ahead, fill.agent_ahead),
    )
    zi_lots = jnp.sum(fill.background)
    zi_notional = fill.notional - jnp.sum(mk_notional) - ag_notional
    ledger = ledger.replace(
        background_position=ledger.background_position + direction * zi_lots,
        background_cash=ledger.background_cash - direction * zi_notional,
        fee_pool=ledger.fee_pool + jnp.sum(mk_fee) + ag_fee,
    )
    return mk, ag, ledger


def _top_of_book(bid: Array, ask: Array, mk: Makers, ag: Agent, center: Array, n_levels: int):
    """Total resting volume per level and best bid / ask ladder indices."""
    n = 2 * n_levels
    idx = lambda t: book.tick_to_index(t, center, n_levels)  # noqa: E731
    bid_total = bid + book.one_hot_volume(idx(mk.bid_tick), mk.bid_size, n) + _agent_volume(ag.bid_tick, ag.bid_size, center, n_levels)
    ask_total = ask + book.one_hot_volume(idx(mk.ask_tick), mk.ask_size, n) + _agent_volume(ag.ask_tick, ag.ask_size, center, n_levels)
    return bid_total, ask_total, *_best(bid_total, ask_total)


def _agent_volume(tick: Array, size: Array, center: Array, n_levels: int) -> Array:
    """The agent's quote on one side, spread over the ladder (int32 (2L,))."""
    return book.one_hot_volume(book.tick_to_index(tick, center, n_levels)[None], size[None], 2 * n_levels)


def _best(bid_total: Array, ask_total: Array) -> tuple[Array, Array]:
    """Best bid / ask ladder indices from the per-level totals."""
    return book.best_bid_index(bid_total), book.best_ask_index(ask_total)


def _walk_volume(is_bid: Array, bid_total: Array, ask_total: Array) -> Array:
    """Per-level totals of the side a sweep walks, in walk order (as `_side_queue` orders it)."""
    return jnp.where(is_bid, bid_total[::-1], ask_total)


def _take_fill(is_bid: Array, fill: book.SweepFill, bid_total: Array, ask_total: Array) -> tuple[Array, Array]:
    """Per-level totals after a sweep: it took exactly `fill.filled` off the side it walked
    (background, makers and agent together), so the totals need not be rebuilt from the quotes."""
    bid_total = bid_total - jnp.where(is_bid, fill.filled[::-1], 0)
    ask_total = ask_total - jnp.where(is_bid, 0, fill.filled)
    return bid_total, ask_total


def _mid(best_bid: Array, best_ask: Array, center: Array, n_levels: int, tick_size: Array, fallback: Array) -> Array:
    both = (best_bid >= 0) & (best_ask < 2 * n_levels)
    mid_index = 0.5 * (best_bid + best_ask).astype(jnp.float32)
    return jnp.where(both, (center - n_levels + mid_index) * tick_size, fallback)


class Market:
    """The perpetual-futures market for one static shape."""

    def __init__(self, shape: MarketShape = MarketShape()):
        self.shape = shape
        self._auto_deleverage = functools.partial(adl.auto_deleverage, slots=shape.adl_slots)

    # ------------------------------------------------------------------ reset
    def init(self, key: Array, params: MarketParams) -> MarketState:
        sh = self.shape
        acc_mod.check_liquidation_grid(sh.n_buckets, params.liquidation, params.accounts)
        L, n, m, g = sh.n_levels, sh.n_makers, sh.n_accounts, sh.n_buckets
        p0 = jnp.asarray(params.book.initial_price, jnp.float32)
        tick = params.book.tick_size
        center = jnp.round(p0 / tick).astype(jnp.int32)
        dist = jnp.abs(jnp.arange(2 * L) - L + 0.5)
        stationary = flow.arrival_profile(dist, params.flow) / jnp.maximum(params.flow.cancel_rate, 1e-3)
        depth = jnp.floor(stationary).astype(jnp.int32)
        bid = jnp.where(jnp.arange(2 * L) < L, depth, 0)
        ask = jnp.where(jnp.arange(2 * L) >= L, depth, 0)

        k_pos, k_entry, k_open = jax.random.split(key, 3)
        side, lots, lev = acc_mod.draw_positions(jax.random.uniform(k_pos, (m, 3)), p0, jnp.float32(0.0), params.accounts)
        is_open = jax.random.uniform(k_open, (m,)) < params.accounts.initial_open_fraction
        entry = p0 * jnp.exp(0.003 * jax.random.normal(k_entry, (m,)))
        lots = jnp.where(is_open, lots, 0)
        side = jnp.where(is_open, side, 0)
        margin = lots * entry / lev
        lp = acc_mod.liquidation_price(side, lots, entry, margin, params.accounts)
        bucket = acc_mod.bucket_of(lp, g, p0, params.liquidation)
        bp = acc_mod.bankruptcy_price(side, lots, entry, margin)
        ladder = LiquidationLadder(
            size=jnp.zeros((2, g), jnp.int32), bankrupt_value=jnp.zeros((2, g), jnp.float32),
            epoch=jnp.zeros((2, g), jnp.int32), frontier=jnp.array([0, g], jnp.int32), total=jnp.zeros(2, jnp.int32),
        )
        ladder = acc_mod.ladder_add(ladder, side, bucket, lots, lots * bp)
        accounts = Accounts(side=side, size=lots, entry=entry, margin=jnp.where(is_open, margin, 0.0), bucket=bucket,
                            epoch=jnp.zeros(m, jnp.int32), cursor=jnp.int32(0))
        signed = side * lots
        zeros_n = jnp.zeros(n, jnp.int32)
        f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
        return MarketState(
            step=jnp.int32(0),
            book=Book(center_tick=center, bid_depth=bid, ask_depth=ask),
            makers=Makers(bid_tick=zeros_n, bid_size=zeros_n, ask_tick=zeros_n, ask_size=zeros_n, inventory=zeros_n,
                          cash=jnp.full(n, params.makers.capital, jnp.float32), entry=jnp.zeros(n, jnp.float32),
                          mode=zeros_n, calm_steps=zeros_n, bankrupt=jnp.zeros(n, bool)),
            agent=Agent(bid_tick=jnp.int32(0), bid_size=jnp.int32(0), bid_ahead=jnp.int32(0), ask_tick=jnp.int32(0),
                        ask_size=jnp.int32(0), ask_ahead=jnp.int32(0), position=jnp.int32(0),
                        cash=f32(params.agent.capital), entry=f32(0.0), liquidated=jnp.bool_(False)),
            accounts=accounts,
            ladder=ladder,
            engine=Engine(size=jnp.zeros(2, jnp.int32), bankrupt_value=jnp.zeros(2, jnp.float32)),
            ledger=Ledger(
                traders_cash=jnp.sum(accounts.margin - signed * entry), net_deposits=jnp.sum(accounts.margin),
                background_position=-jnp.sum(signed), background_cash=jnp.sum(signed * entry),
                insurance_fund=f32(params.liquidation.insurance_fund), fund_peak=f32(params.liquidation.insurance_fund),
                fee_pool=f32(0.0), overflow_lots=jnp.int32(0),
            ),
            signals=Signals(index=p0, log_vol=f32(0.0), hawkes=f32(params.flow.market_rate_lots), mark=p0, last=p0,
                            basis_ema=f32(0.0), premium_sum=f32(0.0), funding_rate=f32(0.0),
                            realized_var=f32(params.flow.vol_per_step) ** 2, flow_imbalance=f32(0.0), momentum=f32(0.0),
                            mark_ref=p0, halt_left=jnp.int32(0), mid=p0),
        )

    # ------------------------------------------------------------------- step
    def step(self, key: Array, state: MarketState, orders: AgentOrders, params: MarketParams) -> tuple[MarketState, Info]:
        state, aux = self.trade(key, state, orders, params)
        state, adl_notional, adl_count = jax.lax.cond(
            _runs_adl(state, params), self._auto_deleverage, _no_adl, state, params)
        return self.settle(state, aux, adl_notional, adl_count, params)

    def step_batch(self, keys: Array, state: MarketState, orders: AgentOrders, params: MarketParams,
                   params_axis: int | None = None) -> tuple[MarketState, Info]:
        """`step` over a leading batch axis; params shared (params_axis=None) or batched (0)."""
        trade = jax.vmap(functools.partial(self.trade, batch_axis=_BATCH), in_axes=(0, 0, 0, params_axis),
                         axis_name=_BATCH)
        state, aux = trade(keys, state, orders, params)
        state, adl_notional, adl_count = self._deleverage_batch(state, params, params_axis)
        return jax.vmap(self.settle, in_axes=(0, 0, 0, 0, params_axis))(state, aux, adl_notional, adl_count, params)

    def _deleverage_batch(self, state: MarketState, params: MarketParams, params_axis: int | None
                          ) -> tuple[MarketState, Array, Array]:
        """Stage 8 over a batch, run only on the markets that need it.

        In a crash few markets of a batch run ADL at once (the session-5 oct10, 1024 seeds:
        a median 1.5% and a 90th percentile 3.2% of them on the steps where any does; see
        `_runs_adl`), and ADL ranks every account. So those markets are deleveraged in
        chunks of `_ADL_CHUNK`: a while loop gathers a chunk, runs ADL on it and scatters it
        back, as many times as needed (none on most steps). A loop rather than a `lax.cond`:
        the loop updates the state in place, where a cond over the whole batch's accounts
        measured ~12 ms per step at 4096 envs even when it skipped.
        """
        runs = jax.vmap(_runs_adl, in_axes=(0, params_axis))(state, params)
        b = runs.shape[0]
        chunk = min(b, _ADL_CHUNK)
        n_chunks = (jnp.sum(runs) + chunk - 1) // chunk
        queue = jnp.nonzero(runs, size=b + chunk, fill_value=b)[0]  # markets to run, then b (padding)

        def deleverage_chunk(i, carry):
            s, notional, closed = carry
            at = jax.lax.dynamic_slice(queue, (i * chunk,), (chunk,))
            take = lambda x: x[jnp.minimum(at, b - 1)]  # noqa: E731  (padding reads a real market ...)
            put = lambda full, part: full.at[at].set(part, mode="drop")  # noqa: E731  (... and is dropped)
            sub_params = params if params_axis is None else jax.tree_util.tree_map(take, params)
            sub, sub_notional, sub_closed = jax.vmap(self._auto_deleverage, in_axes=(0, params_axis))(
                jax.tree_util.tree_map(take, s), sub_params)
            return jax.tree_util.tree_map(put, s, sub), put(notional, sub_notional), put(closed, sub_closed)

        return jax.lax.fori_loop(0, n_chunks, deleverage_chunk,
                                 (state, jnp.zeros(b, jnp.float32), jnp.zeros(b, jnp.int32)))

    # ---------------------------------------------------------- stages 1 - 7
    def trade(self, key: Array, state: MarketState, orders: AgentOrders, params: MarketParams,
              batch_axis: str | None = None) -> tuple[MarketState, Info]:
        """Stages 1-7. batch_axis: the name of the vmap axis when `step_batch` maps this over a
        batch; then a liquidation round whose sweep would not touch the book in any market of the
        batch skips the per-level work (a batch-level `lax.cond`, same results either way)."""
        sh = self.shape
        L, k = sh.n_levels, sh.turnover_slots
        tick = params.book.tick_size
        u = jax.random.uniform(key, (16 + 5 * k,))
        s, bk, mk, ag, ledger = state.signals, state.book, state.makers, state.agent, state.ledger
        center, bid, ask = bk.center_tick, bk.bid_depth, bk.ask_depth
        halted = s.halt_left > 0
        _, risk_off = flow.in_shock(state.step, params.flow)
        prices = book.ladder_prices(center, L, tick)

        # 1. The index (spot fair value) moves.
        index, log_vol = flow.index_step(s.index, s.log_vol, s.mid, state.step, u[0:4], params.flow)

        # 2. Background makers update their stress and mode, cancel and re-quote around the mid.
        oi = state.ladder.total.astype(jnp.float32)
        oi_skew = (oi[0] - oi[1]) / jnp.maximum(oi[0] + oi[1], 1.0)
        rv = jnp.sqrt(s.realized_var)
        level = makers.stress(rv, s.flow_imbalance, oi_skew, risk_off, mk.inventory, params.makers)
        mode, calm = makers.next_mode(mk.mode, mk.calm_steps, level, mk.bankrupt, params.makers)
        no_mm = mk.replace(bid_size=jnp.zeros_like(mk.bid_size), ask_size=jnp.zeros_like(mk.ask_size))
        _, _, bb, ba = _top_of_book(bid, ask, no_mm, ag, center, L)
        first = center - L
        must, mm_exempt = makers.obligation_status(mk.bankrupt, rv, halted, s.mark / s.mark_ref - 1.0, params.makers,
                                                   params.maker_obligation)
        mb, mbs, ma, mas = makers.quotes(mode, mk.inventory, s.mid / tick, rv, tick / s.mid, params.makers,
                                         must, params.maker_obligation, tick, risk_off)
        mb = jnp.where(ba < 2 * L, jnp.minimum(mb, first + ba - 1), mb)  # post-only: never cross
        ma = jnp.where(bb >= 0, jnp.maximum(ma, first + bb + 1), ma)
        mm_compliant = jnp.sum(makers.meets_obligation(mb, mbs, ma, mas, s.mid, tick, params.maker_obligation))
        mm_two_sided = jnp.sum((mbs > 0) & (mas > 0))  # posted quotes, before this step's trades eat into them
        mk = mk.replace(bid_tick=mb, bid_size=mbs, ask_tick=ma, ask_size=mas, mode=mode, calm_steps=calm)

        # 3. The agent's quotes: keep queue position when the level is unchanged and size not raised.
        bid_total, ask_total, bb, ba = _top_of_book(bid, ask, mk, ag.replace(bid_size=jnp.int32(0), ask_size=jnp.int32(0)), center, L)
        ag, rejected = _place_agent(ag, orders, bid_total, ask_total, bb, ba, center, L)

        # 4. Background limit orders arrive and cancel.
        mid_index = s.mid / tick - (center - L)
        bid_total, ask_total, bb, ba = _top_of_book(bid, ask, mk, ag, center, L)
        bid_quotes, ask_quotes = bid_total - bid, ask_total - ask  # makers' and agent's lots per level
        gap = jnp.where(risk_off, params.flow.news_gap_levels, 0.0)
        bid, ask, bid_kept, ask_kept = flow.limit_orders(bid, ask, mid_index, bb, ba, u[4:8], params.flow, gap)
        # From here on the per-level totals are kept up to date instead of rebuilt from the quotes.
        bid_total, ask_total = bid + bid_quotes, ask + ask_quotes
        kept_at = lambda kept, t: kept[jnp.clip(book.tick_to_index(t, center, L), 0, 2 * L - 1)]  # noqa: E731
        ag = ag.replace(bid_ahead=jnp.floor(ag.bid_ahead * kept_at(bid_kept, ag.bid_tick)).astype(jnp.int32),
                        ask_ahead=jnp.floor(ag.ask_ahead * kept_at(ask_kept, ag.ask_tick)).astype(jnp.int32))

        # 5. Market orders: background (Hawkes), arbitrage, leveraged traders, the agent.
        basis = (s.mid - index) / index
        zi_buy, zi_sell = flow.market_orders(s.hawkes, basis, u[8:12], params.flow, state.step)
        plan = acc_mod.plan_turnover(state.accounts, state.ladder, s.mid, s.momentum, risk_off, halted,
                                     u[16:].reshape(k, 5), params.accounts)
        ag_buy = jnp.where(ag.liquidated, 0, jnp.maximum(orders.market_lots, 0))
        ag_sell = jnp.where(ag.liquidated, 0, jnp.maximum(-orders.market_lots, 0))
        open_ = ~halted
        band = rules.within_band(prices, s.mark, params.rules)
        buy_req = jnp.where(open_, jnp.concatenate([zi_buy[None], plan.buy_lots(), ag_buy[None]]), 0)
        sell_req = jnp.where(open_, jnp.concatenate([zi_sell[None], plan.sell_lots(), ag_sell[None]]), 0)
        buy_fill = book.sweep(_side_queue(jnp.bool_(False), bid, ask, mk, ag, center, prices, L), jnp.sum(buy_req), band,
                              ask_total)
        bid, ask, mk, ag, ledger = _settle_makers(jnp.bool_(False), buy_fill, bid, ask, mk, ag, ledger, tick, params)
        bid_total, ask_total = _take_fill(jnp.bool_(False), buy_fill, bid_total, ask_total)
        sell_fill = book.sweep(_side_queue(jnp.bool_(True), bid, ask, mk, ag, center, prices, L), jnp.sum(sell_req), band[::-1],
                               bid_total[::-1])
        bid, ask, mk, ag, ledger = _settle_makers(jnp.bool_(True), sell_fill, bid, ask, mk, ag, ledger, tick, params)
        bid_total, ask_total = _take_fill(jnp.bool_(True), sell_fill, bid_total, ask_total)

        buys, buy_avg = _allocate(buy_req, buy_fill)
        sells, sell_avg = _allocate(sell_req, sell_fill)
        acc_fill = buys[1:-1] + sells[1:-1]
        acc_price = jnp.where(plan.buy_lots() > 0, buy_avg, sell_avg)
        accounts, ladder, pool_delta, deposits, fees = acc_mod.settle_turnover(
            state.accounts, state.ladder, plan, acc_fill, acc_price, params.accounts.taker_fee,
            params.book.initial_price, params.liquidation, params.accounts)
        acc_trade_cash = jnp.sum(sells[1:-1] * sell_avg) - jnp.sum(buys[1:-1] * buy_avg)
        ag_delta = buys[-1] - sells[-1]
        ag_notional = buys[-1] * buy_avg + sells[-1] * sell_avg
        ag_fee = params.agent.taker_fee * ag_notional
        ag = ag.replace(
            entry=_update_entry(ag.position, ag.entry, buys[-1], buy_avg),
        )
        ag = ag.replace(
            entry=_update_entry(ag.position + buys[-1], ag.entry, -sells[-1], sell_avg),
            position=ag.position + ag_delta,
            cash=ag.cash - buys[-1] * buy_avg + sells[-1] * sell_avg - ag_fee,
        )
        # The background crowd takes the remainder of each sweep's lots and notional exactly.
        bg_buy_cash = buy_fill.notional - jnp.sum(buys[1:] * buy_avg)
        bg_sell_cash = sell_fill.notional - jnp.sum(sells[1:] * sell_avg)
        ledger = ledger.replace(
            traders_cash=ledger.traders_cash + pool_delta + acc_trade_cash,
            net_deposits=ledger.net_deposits + deposits,
            fee_pool=ledger.fee_pool + fees + ag_fee,
            background_position=ledger.background_position + buys[0] - sells[0],
            background_cash=ledger.background_cash - bg_buy_cash + bg_sell_cash,
            overflow_lots=ledger.overflow_lots + rejected,
        )

        # 6. Mark price.
        bb, ba = _best(bid_total, ask_total)
        last = jnp.where(sell_fill.lots > 0, sell_fill.last_price, jnp.where(buy_fill.lots > 0, buy_fill.last_price, s.last))
        mid = _mid(bb, ba, center, L, tick, jnp.where(params.book.empty_side_last == 1, last, s.mid))
        basis_ema = s.basis_ema + (mid - index - s.basis_ema) / params.funding.basis_ma_steps
        mark = funding.mark_price(index, basis_ema, last, s.funding_rate, state.step, params.funding)

        # 7. Liquidation cascade: take over crossed positions, cross queues, IOC into the book.
        engine = state.engine
        hit, ag_pos, ag_cash, engine = liquidation.take_over_account(ag.position, ag.cash, mark,
                                                                     params.agent.maintenance_margin, engine)
        # A liquidated agent's quotes are cancelled: off the per-level totals too.
        bid_total = bid_total - jnp.where(hit, _agent_volume(ag.bid_tick, ag.bid_size, center, L), 0)
        ask_total = ask_total - jnp.where(hit, _agent_volume(ag.ask_tick, ag.ask_size, center, L), 0)
        ag = ag.replace(position=ag_pos, cash=ag_cash, liquidated=ag.liquidated | hit,
                        bid_size=jnp.where(hit, 0, ag.bid_size), ask_size=jnp.where(hit, 0, ag.ask_size))
        throttle_left = rules.throttle_lots(mark, params.rules)
        taken_long = taken_short = jnp.float32(0.0)
        liq_lots = jnp.int32(0)
        fund = ledger.insurance_fund
        bb, ba = _best(bid_total, ask_total)

        def liquidation_round(_, carry):
            (ladder, engine, taken_long, taken_short, bid, ask, bid_total, ask_total, bb, ba, ledger, mk, ag,
             throttle_left, liq_lots, last, mid, mark) = carry
            crossed = liquidation.any_crossed(ladder, mark, sh.bucket_window, params.book.initial_price, params.liquidation)
            ladder, engine, taken, taken_bv = _unless_idle(
                crossed, batch_axis, functools.partial(liquidation.take_over_crossed, window=sh.bucket_window,
                                                       initial_price=params.book.initial_price,
                                                       liquidation=params.liquidation),
                _no_take_over, ladder, engine, mark)
            taken_long = taken_long + taken[0] * mark
            taken_short = taken_short + taken[1] * mark
            engine, pnl = liquidation.cross_queues(engine)
            lots, sells_side = liquidation.order_lots(engine, throttle_left, halted, params.liquidation)
            band = rules.within_band(prices, mark, params.rules)
            view = _side_queue(sells_side, bid, ask, mk, ag, center, prices, L)
            walk_limit = liquidation.ioc_walk_limit(engine, sells_side, view.prices, jnp.where(sells_side, band[::-1], band),
                                                    params.liquidation)
            resting = _walk_volume(sells_side, bid_total, ask_total)
            # Most rounds after the first find nothing to fill anywhere in the batch: skip them.
            moves = book.sweep_moves(view, lots, walk_limit, resting)
            fill, (bid, ask, bid_total, ask_total, bb, ba) = _unless_idle(
                moves, batch_axis, _walk_book, _idle_book, sells_side, view, lots, walk_limit, resting,
                (bid, ask, bid_total, ask_total, bb, ba))
            engine, fill_pnl = liquidation.settle_fill(engine, sells_side, fill.lots, fill.notional)
            ledger = ledger.replace(insurance_fund=ledger.insurance_fund + pnl + fill_pnl,
                                    traders_cash=ledger.traders_cash + taken_bv[0] - taken_bv[1])
            # Outside the branch: XLA:CPU would contract these float updates differently inside it.
            mk, ag, ledger = _settle_owners(sells_side, fill, mk, ag, ledger, tick, params)
            throttle_left = throttle_left - fill.lots
            liq_lots = liq_lots + fill.lots
            last = jnp.where(fill.lots > 0, fill.last_price, last)
            mid = _mid(bb, ba, center, L, tick, jnp.where(params.book.empty_side_last == 1, last, mid))
            mark = funding.mark_price(index, basis_ema, last, s.funding_rate, state.step, params.funding)
            return (ladder, engine, taken_long, taken_short, bid, ask, bid_total, ask_total, bb, ba, ledger, mk, ag,
                    throttle_left, liq_lots, last, mid, mark)

        carry = (ladder, engine, taken_long, taken_short, bid, ask, bid_total, ask_total, bb, ba, ledger, mk, ag,
                 throttle_left, liq_lots, last, mid, mark)
        # A loop, not a Python unroll: the round compiles once (cold compile at 1024 envs 9.1 ->
        # 7.9 s from reset, 11.3 -> 7.9 s mid-crash; the same speed, measured A/B).
        carry = jax.lax.fori_loop(0, sh.n_rounds, liquidation_round, carry)
        (ladder, engine, taken_long, taken_short, bid, ask, bid_total, ask_total, bb, ba, ledger, mk, ag,
         throttle_left, liq_lots, last, mid, mark) = carry
        liquidation_fees = jnp.minimum(params.liquidation.liquidation_fee * (taken_long + taken_short),
                                       jnp.maximum(ledger.insurance_fund - fund, 0.0))

        signals = s.replace(index=index, log_vol=log_vol, mark=mark, last=last, basis_ema=basis_ema)
        state = state.replace(book=bk.replace(bid_depth=bid, ask_depth=ask), makers=mk, agent=ag, accounts=accounts,
                              ladder=ladder, engine=engine, ledger=ledger, signals=signals)
        aux = {
            "mid": mid,
            "bid_total": bid_total,  # resting lots per level after the cascade (ADL moves no quotes)
            "ask_total": ask_total,
            "prev_mark": s.mark,
            "taker_buy_lots": buy_fill.lots,
            "taker_sell_lots": sell_fill.lots,
            "liquidation_fill_lots": liq_lots,
            "liquidated_long_notional": taken_long,
            "liquidated_short_notional": taken_short,
            "liquidation_fees": liquidation_fees,
            "agent_liquidated": hit,
            "agent_position_before_adl": ag.position,
            "mm_compliant": mm_compliant,
            "mm_two_sided": mm_two_sided,
            "mm_exempt": mm_exempt,
            "fund_equity": liquidation.fund_equity(ledger.insurance_fund, engine, mark, params.liquidation),
        }
        return state, aux

    # -------------------------------------------------------- stages 9 - 11
    def settle(self, state: MarketState, aux: Info, adl_notional: Array, adl_count: Array, params: MarketParams
               ) -> tuple[MarketState, Info]:
        sh = self.shape
        L = sh.n_levels
        tick = params.book.tick_size
        s, mk, ag, ledger, bk = state.signals, state.makers, state.agent, state.ledger, state.book
        mark, index, mid = s.mark, s.index, aux["mid"]
        bid_total, ask_total = aux["bid_total"], aux["ask_total"]
        bb, ba = _best(bid_total, ask_total)
        first = (bk.center_tick - L).astype(jnp.float32)
        best_bid = jnp.where(bb >= 0, (first + bb) * tick, jnp.nan)
        best_ask = jnp.where(ba < 2 * L, (first + ba) * tick, jnp.nan)

        # 9. Funding: accrue the premium, pay at the end of each interval (longs pay shorts).
        premium_sum = s.premium_sum + funding.premium(best_bid, best_ask, index)
        pay = funding.is_funding_step(state.step, params.funding)
        rate = jnp.where(pay, funding.funding_rate(premium_sum / params.funding.interval_steps, params.funding), s.funding_rate)
        per_lot = jnp.where(pay, rate * mark, 0.0)
        oi = state.ladder.total
        ledger = ledger.replace(
            traders_cash=ledger.traders_cash - per_lot * (oi[0] - oi[1]),
            insurance_fund=ledger.insurance_fund - per_lot * (state.engine.size[0] - state.engine.size[1]),
            background_cash=ledger.background_cash - per_lot * ledger.background_position,
        )
        mk = mk.replace(cash=mk.cash - per_lot * mk.inventory)
        ag = ag.replace(cash=ag.cash - per_lot * ag.position)
        premium_sum = jnp.where(pay, 0.0, premium_sum)

        # 10. Circuit breaker; makers out of capital stop for good; the fund's peak.
        halt_left, mark_ref = rules.circuit_breaker(s.halt_left, s.mark_ref, mark, params.rules)
        mk = mk.replace(bankrupt=mk.bankrupt | (mk.cash + mk.inventory * mark <= 0))
        # The fund's peak, of the value the ADL trigger reads: the balance, or (ioc_limit bankruptcy)
        # its equity with the taken-over queue at the mark, read before this step's ADL.
        fund = jnp.where(params.liquidation.ioc_limit == 1, aux["fund_equity"], ledger.insurance_fund)
        ledger = ledger.replace(fund_peak=jnp.maximum(ledger.fund_peak, fund))

        # 11. Re-centre the ladder on the mid.
        mid_index = mid / tick - first
        bid, ask, center, dropped = book.recentre(bk.bid_depth, bk.ask_depth, bk.center_tick, mid_index, L,
                                                  params.book.recentre_levels)
        ledger = ledger.replace(overflow_lots=ledger.overflow_lots + dropped)

        # Slow statistics.
        # Makers and traders read volatility off the mark: the mid's half-tick flicker is not risk.
        ret = jnp.log(mark / aux["prev_mark"])
        realized_var = (1 - _VAR_DECAY) * s.realized_var + _VAR_DECAY * ret**2
        buy, sell = aux["taker_buy_lots"].astype(jnp.float32), aux["taker_sell_lots"].astype(jnp.float32)
        imbalance = (buy - sell) / jnp.maximum(buy + sell, 1.0)
        flow_imbalance = (1 - _VAR_DECAY) * s.flow_imbalance + _VAR_DECAY * imbalance
        momentum = (1 - _VAR_DECAY) * s.momentum + _VAR_DECAY * ret / jnp.sqrt(jnp.maximum(realized_var, 1e-12))
        hawkes = flow.hawkes_update(s.hawkes, buy + sell + aux["liquidation_fill_lots"], params.flow)
        signals = s.replace(premium_sum=premium_sum, funding_rate=rate, realized_var=realized_var,
                            flow_imbalance=flow_imbalance, momentum=momentum, hawkes=hawkes, mark_ref=mark_ref,
                            halt_left=halt_left, mid=mid)
        state = state.replace(step=state.step + 1, book=bk.replace(bid_depth=bid, ask_depth=ask, center_tick=center),
                              makers=mk, agent=ag, ledger=ledger, signals=signals)

        prices = book.ladder_prices(bk.center_tick, L, tick)
        info = {
            "mark_price": mark,
            "index_price": index,
            "mid_price": mid,
            "best_bid": best_bid,
            "best_ask": best_ask,
            "spread_bps": (best_ask - best_bid) / mid * 1e4,
            "depth_2pct": book.depth_within(bid_total, ask_total, prices, mid, 0.02),
            "open_interest_long": oi[0] * mark,
            "open_interest_short": oi[1] * mark,
            "insurance_fund": ledger.insurance_fund,
            "fund_equity": fund,  # the fund as the ADL trigger reads it (liquidation.fund_equity)
            "liquidated_notional": aux["liquidated_long_notional"] + aux["liquidated_short_notional"],
            "liquidated_long_notional": aux["liquidated_long_notional"],
            "liquidation_fees": aux["liquidation_fees"],
            "engine_queue_lots": jnp.sum(state.engine.size),
            "adl_notional": adl_notional,
            "adl_count": adl_count,
            "bad_debt": jnp.maximum(-ledger.insurance_fund, 0.0),
            "halted": halt_left > 0,
            "funding_rate": rate,
            "taker_volume_lots": aux["taker_buy_lots"] + aux["taker_sell_lots"],
            "mm_two_sided": aux["mm_two_sided"],
            "mm_withdrawn": jnp.sum(mk.mode == makers.WITHDRAWN),
            "mm_equity": jnp.sum(mk.cash + mk.inventory * mark),
            "mm_compliant": aux["mm_compliant"],  # makers whose posted quote met the obligation (or strict's)
            "mm_exempt": aux["mm_exempt"],  # the makers' obligation was exempt this step
            "mm_bankrupt": jnp.sum(mk.bankrupt),
            "agent_liquidated": aux["agent_liquidated"],
            "agent_adl_lots": jnp.abs(aux["agent_position_before_adl"] - ag.position),  # ADL only shrinks positions
            "agent_equity": ag.cash + ag.position * mark,
            "agent_position": ag.position,
            "overflow_lots": ledger.overflow_lots,
        }
        return state, info


_BATCH = "crashgym_batch"  # vmap axis name of `Market.step_batch`
_ADL_CHUNK = 64  # markets deleveraged together in `step_batch` (a gather, one vmapped ADL, a scatter)


def _unless_idle(busy: Array, batch_axis: str | None, work: Callable, idle: Callable, *operands: Any) -> Any:
    """work(*operands), or idle(*operands) (the same result, cheaply, where `busy` is False)
    when no market of the batch is busy.

    Only inside `step_batch` (vmap axis `batch_axis`): there `busy` is summed over the batch
    into one unbatched predicate, so the `lax.cond` stays a branch. Elsewhere (one market, or a
    plain vmap of `step`, where a cond on a per-market predicate would become a select of both
    branches, which XLA:CPU runs ~80x slower here) the work always runs.
    """
    if batch_axis is None:
        return work(*operands)
    any_busy = jax.lax.psum(busy.astype(jnp.int32), batch_axis) > 0
    return jax.lax.cond(any_busy, work, idle, *operands)


def _walk_book(is_bid: Array, view: book.SideQueue, lots: Array, walk_limit: Array, resting: Array, ladder: tuple
               ) -> tuple[book.SweepFill, tuple]:
    """A liquidation round's IOC order walks the book: (fill, (bid, ask, bid_total, ask_total,
    best bid, best ask) after it). The per-level part of the round; the owners are booked after."""
    bid, ask, bid_total, ask_total, _, _ = ladder
    fill = book.sweep(view, lots, walk_limit, resting)
    bid, ask = _take_background(is_bid, fill, bid, ask)
    bid_total, ask_total = _take_fill(is_bid, fill, bid_total, ask_total)
    return fill, (bid, ask, bid_total, ask_total, *_best(bid_total, ask_total))


def _idle_book(is_bid: Array, view: book.SideQueue, lots: Array, walk_limit: Array, resting: Array, ladder: tuple
               ) -> tuple[book.SweepFill, tuple]:
    """`_walk_book` when `book.sweep_moves` is False: nothing filled, the book as it was."""
    return book.no_fill(view), ladder


def _no_take_over(ladder: LiquidationLadder, engine: Engine, mark: Array):
    """`liquidation.take_over_crossed` when `liquidation.any_crossed` is False: nothing taken."""
    return ladder, engine, jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.float32)


def _runs_adl(state: MarketState, params: MarketParams) -> Array:
    """ADL is due (`adl.needs_adl`) and can close something (`adl.has_counterparty`). Without
    the crowd in the ADL pool most markets with a queue had no profitable opposite position
    left (the session-4 oct10, 1024 markets after 512 steps: 632 needed ADL, 122 of them had a
    counterparty); with it (`adl_background = 1`) the queue is cleared when ADL runs, and 15
    markets of the session-5 oct10 need ADL at that step, all with a counterparty."""
    return adl.needs_adl(state, params) & adl.has_counterparty(state, params)


def _no_adl(state: MarketState, params: MarketParams):
    return state, jnp.float32(0.0), jnp.int32(0)


def _allocate(requests: Array, fill: book.SweepFill) -> tuple[Array, Array]:
    """Split a sweep's fill between the takers who sent it (one sweep, one average price).

    Everyone but the background crowd (index 0) gets floor(request * fill ratio);
    the crowd takes the remainder, so lots add up exactly.
    """
    total = jnp.sum(requests)
    ratio = fill.lots.astype(jnp.float32) / jnp.maximum(total, 1).astype(jnp.float32)
    got = jnp.floor(requests.astype(jnp.float32) * ratio).astype(jnp.int32)
    got = got.at[0].set(fill.lots - jnp.sum(got[1:]))
    avg = jnp.where(fill.lots > 0, fill.notional / jnp.maximum(fill.lots, 1), 0.0)
    return got, avg


def _place_agent(ag: Agent, orders: AgentOrders, bid_total: Array, ask_total: Array, best_bid: Array, best_ask: Array,
                 center: Array, n_levels: int) -> tuple[Agent, Array]:
    """New agent quotes, post-only (clamped one tick inside the opposite best, and the ask
    above the agent's own bid), keeping
    queue position when the tick is unchanged and the size not raised (exchange rule).
    Quotes off the ladder are rejected and counted. Returns (agent, rejected lots)."""
    n = 2 * n_levels
    first = center - n_levels
    live = ~ag.liquidated
    bid_tick = jnp.where(best_ask < n, jnp.minimum(orders.bid_tick, first + best_ask - 1), orders.bid_tick)
    ask_tick = jnp.where(best_bid >= 0, jnp.maximum(orders.ask_tick, first + best_bid + 1), orders.ask_tick)
    # Post-only against its own bid too: a locked or crossed pair moves the ask one tick above the bid.
    two_sided = (orders.bid_size > 0) & (orders.ask_size > 0)
    ask_tick = jnp.where(two_sided, jnp.maximum(ask_tick, bid_tick + 1), ask_tick)
    bid_idx, ask_idx = bid_tick - first, ask_tick - first
    bid_ok = (bid_idx >= 0) & (bid_idx < n) & live
    ask_ok = (ask_idx >= 0) & (ask_idx < n) & live
    bid_size = jnp.where(bid_ok, jnp.maximum(orders.bid_size, 0), 0)
    ask_size = jnp.where(ask_ok, jnp.maximum(orders.ask_size, 0), 0)
    rejected = jnp.where(bid_ok, 0, jnp.maximum(orders.bid_size, 0)) + jnp.where(ask_ok, 0, jnp.maximum(orders.ask_size, 0))
    keep_bid = (bid_tick == ag.bid_tick) & (ag.bid_size > 0) & (bid_size <= ag.bid_size)
    keep_ask = (ask_tick == ag.ask_tick) & (ag.ask_size > 0) & (ask_size <= ag.ask_size)
    at = lambda total, i: total[jnp.clip(i, 0, n - 1)]  # noqa: E731
    ag = ag.replace(
        bid_tick=bid_tick, bid_size=bid_size, ask_tick=ask_tick, ask_size=ask_size,
        bid_ahead=jnp.where(keep_bid, ag.bid_ahead, at(bid_total, bid_idx)),
        ask_ahead=jnp.where(keep_ask, ag.ask_ahead, at(ask_total, ask_idx)),
    )
    return ag, rejected


def no_orders() -> AgentOrders:
    """An agent that does nothing (no quotes, no market order)."""
    z = jnp.int32(0)
    return AgentOrders(bid_tick=z, bid_size=z, ask_tick=z, ask_size=z, market_lots=z)


def net_position(state: MarketState) -> Array:
    """Sum of signed positions over every holder, from the per-account arrays: must be 0."""
    live = acc_mod.alive(state.accounts, state.ladder)
    accounts = jnp.sum(jnp.where(live, state.accounts.side * state.accounts.size, 0))
    return (accounts + state.engine.size[0] - state.engine.size[1] + jnp.sum(state.makers.inventory)
            + state.agent.position + state.ledger.background_position)


def cash_balance(state: MarketState) -> Array:
    """Cash held by every holder minus net deposits: constant over an episode.

    The liquidation engine's cash is implied: it paid the bankruptcy value of the long
    positions it holds and received that of the shorts.
    """
    led = state.ledger
    engine_cash = state.engine.bankrupt_value[1] - state.engine.bankrupt_value[0]
    return (led.traders_cash + jnp.sum(state.makers.cash) + state.agent.cash + led.background_cash
            + led.insurance_fund + led.fee_pool + engine_cash - led.net_deposits)
