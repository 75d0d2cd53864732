"""Auto-deleveraging (tier 3): close profitable opposite positions against the bankrupt queue.

Trigger (OKX / Bybit): the engine still holds liquidated positions and the insurance
fund is exhausted or has drawn down more than `adl_drawdown` from its peak (with
`ioc_limit = "bankruptcy"` the fund's equity: its balance plus the queue it took over,
valued at the mark, `liquidation.fund_equity`).
Ranking rules (MARKET_MECHANICS section 2), `adl_rule`:
- 0 bitmex: PnL% * effective leverage (mark value / equity);
- 1 binance: max(0, uPnL) / max(1, wallet) * maintenance margin / equity;
- 2 hyperliquid: (mark / entry, or entry / mark for shorts) * notional / equity;
- 3 pro_rata: the loss is spread over all opposite profit in proportion to size.
Candidates: every holder of a profitable opposite position, as on the exchanges: the
leveraged accounts, the background makers, the agent and, with `adl_background` (the
default), the background crowd. The crowd is one aggregate position of unleveraged
traders, ranked at effective leverage 1 (equity = notional) with its cost basis as entry
(`crowd_entry`), so the leverage-weighted rules put it behind a leveraged holder with the
same PnL%; pro_rata shares the loss with it by size. Without it a queue larger than the
leveraged profit waits for the book, selling into every new bid (oct10: ~55k lots for an
hour). Positions close at the queue's bankruptcy price, or at the mark when `adl_at_mark`
(Hyperliquid).

Ranking needs every account, so this stage is O(accounts); it is cheap to skip: the step
runs it only where `needs_adl` and `has_counterparty` hold, and the batched step gathers
those markets into a sub-batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crashgym.accounts import alive, bankruptcy_price, ladder_add, tier
from crashgym.book import prefix_sum
from crashgym.liquidation import fund_equity
from crashgym.params import MarketParams
from crashgym.state import Ledger, MarketState

Array = jax.Array


def needs_adl(state: MarketState, params: MarketParams) -> Array:
    """The engine holds a queue and the fund (its equity under `ioc_limit = "bankruptcy"`:
    `liquidation.fund_equity`) is exhausted or past its drawdown; not during a halt."""
    floor = jnp.maximum(state.ledger.fund_peak * (1.0 - params.liquidation.adl_drawdown), 0.0)
    queued = jnp.sum(state.engine.size) > 0
    fund = fund_equity(state.ledger.insurance_fund, state.engine, state.signals.mark, params.liquidation)
    return queued & (fund <= floor) & (state.signals.halt_left == 0)


def crowd_entry(ledger: Ledger) -> Array:
    """The background crowd's average cost (USD per lot): -cash / position.

    The crowd starts with cash = -position * entry (the other side of the reset positions),
    so this is its cost basis with realized P&L and funding folded in: its uPnL at the mark
    is cash + position * mark. NaN when it holds nothing.
    """
    pos = ledger.background_position.astype(jnp.float32)
    return jnp.where(pos != 0, -ledger.background_cash / jnp.where(pos != 0, pos, 1.0), jnp.nan)


def has_counterparty(state: MarketState, params: MarketParams) -> Array:
    """Whether some live position on the side ADL would close is in profit: the candidates
    `adl_scores` ranks (it also drops non-finite scores, so this is a superset and skipping
    ADL where it is False never changes a result). Where it is False ADL closes nothing and
    the queue waits for the book, so the O(accounts) ranking can be skipped.
    """
    acc, makers, agent, mark = state.accounts, state.makers, state.agent, state.signals.mark
    want = jnp.where(state.engine.size[0] > 0, -1, 1)  # a long queue is closed against shorts
    in_profit = lambda side, entry: (side == want) & (want * (mark - entry) > 0)  # noqa: E731
    crowd = (params.liquidation.adl_background == 1) & in_profit(jnp.sign(state.ledger.background_position),
                                                                 crowd_entry(state.ledger))
    return (jnp.any(in_profit(acc.side, acc.entry) & alive(acc, state.ladder))
            | jnp.any(in_profit(jnp.sign(makers.inventory), makers.entry))
            | in_profit(jnp.sign(agent.position), agent.entry) | crowd)


def adl_scores(rule: Array, direction: Array, size: Array, entry: Array, equity: Array, wallet: Array, mmr: Array, mark: Array) -> Array:
    """Score of each candidate (higher is closed first); -inf where not profitable.

    direction: +1 for long candidates, -1 for short. size in lots (>= 0).
    """
    q = size.astype(jnp.float32)
    upnl = direction * (mark - entry) * q
    notional = mark * q
    equity = jnp.maximum(equity, 1e-6)
    bitmex = upnl / jnp.maximum(entry * q, 1e-6) * notional / equity
    binance = jnp.maximum(upnl, 0.0) / jnp.maximum(wallet, 1.0) * mmr * notional / equity
    ratio = jnp.where(direction > 0, mark / entry, entry / mark)
    hyperliquid = ratio * notional / equity
    score = jnp.select([rule == 0, rule == 1, rule == 2], [bitmex, binance, hyperliquid], jnp.ones_like(q))
    return jnp.where((upnl > 0) & (size > 0), score, -jnp.inf)


def allocate(rule: Array, score: Array, size: Array, need: Array, slots: int | None = None) -> Array:
    """Lots to close per candidate: greedy by score, or pro rata for rule 3.

    slots (static): the greedy rules close at most the `slots` best-ranked candidates in
    one call (`lax.top_k` instead of a full sort: the sort of ~1000 candidates cost most of
    a crash step); what they cannot cover stays queued for the next step. None: no limit.
    Ties rank the lower index first either way.
    """
    eligible = jnp.where(jnp.isfinite(score), size, 0)
    n = size.shape[0]
    if slots is None or slots >= n:
        order = jnp.argsort(-score)
    else:
        _, order = jax.lax.top_k(score, slots)
    ranked_size = eligible[order]
    before = prefix_sum(ranked_size) - ranked_size
    ranked = jnp.zeros_like(size).at[order].set(jnp.clip(need - before, 0, ranked_size))
    total = jnp.sum(eligible)
    goal = jnp.minimum(need, total)
    share = eligible.astype(jnp.float32) * goal / jnp.maximum(total, 1)
    base = jnp.floor(share).astype(jnp.int32)
    # The shares' fractional parts sum to the remainder, so at least that many candidates have
    # one: give one lot each to the first of them (index order, not largest remainder).
    has_fraction = (base < eligible) & (share > base)
    rest = goal - jnp.sum(base)
    extra = (has_fraction & (prefix_sum(has_fraction.astype(jnp.int32)) <= rest)).astype(jnp.int32)
    return jnp.where(rule == 3, base + extra, ranked)


def auto_deleverage(state: MarketState, params: MarketParams, slots: int | None = None) -> tuple[MarketState, Array, Array]:
    """Run ADL on the non-empty engine queue, closing at most `slots` counterparties (see
    `allocate`). Returns (state, adl_notional USD, adl_count)."""
    acc, ladder, engine, ledger = state.accounts, state.ladder, state.engine, state.ledger
    makers, agent = state.makers, state.agent
    mark = state.signals.mark
    sells = engine.size[0] > 0  # a long queue is closed against shorts
    row = jnp.where(sells, 0, 1)
    need = engine.size[row]
    avg_bp = engine.bankrupt_value[row] / jnp.maximum(need, 1)
    price = jnp.where(params.liquidation.adl_at_mark == 1, mark, avg_bp)
    want = jnp.where(sells, -1, 1)  # sign of the positions that get closed

    live = alive(acc, ladder) & (acc.side == want)
    acc_size = jnp.where(live, acc.size, 0)
    acc_mmr, _, _ = tier(acc_size * mark, params.accounts)
    acc_equity = acc.margin + acc.side * (mark - acc.entry) * acc_size
    mm_size = jnp.where(jnp.sign(makers.inventory) == want, jnp.abs(makers.inventory), 0)
    mm_equity = makers.cash + makers.inventory * mark
    ag_size = jnp.where(jnp.sign(agent.position) == want, jnp.abs(agent.position), 0)
    ag_equity = agent.cash + agent.position * mark

    # The crowd is unleveraged: equity = its notional (effective leverage 1).
    bg = ledger.background_position
    bg_size = jnp.where((params.liquidation.adl_background == 1) & (jnp.sign(bg) == want), jnp.abs(bg), 0)
    bg_entry = jnp.nan_to_num(crowd_entry(ledger), nan=mark)
    bg_equity = mark * bg_size.astype(jnp.float32)

    size = jnp.concatenate([acc_size, mm_size, ag_size[None], bg_size[None]])
    entry = jnp.concatenate([acc.entry, makers.entry, agent.entry[None], bg_entry[None]])
    equity = jnp.concatenate([acc_equity, mm_equity, ag_equity[None], bg_equity[None]])
    upnl = want * (mark - entry) * size
    is_account = jnp.arange(size.shape[0]) < acc.size.shape[0]
    wallet = jnp.where(is_account, jnp.concatenate([acc.margin, jnp.zeros(mm_size.shape[0] + 2)]), equity - upnl)
    mmr = jnp.concatenate([acc_mmr, jnp.full(mm_size.shape[0] + 2, params.agent.maintenance_margin)])
    rule = params.liquidation.adl_rule
    score = adl_scores(rule, jnp.full(size.shape, want), size, entry, equity, wallet, mmr, mark)
    take = allocate(rule, score, size, need, slots)
    m, n = acc.size.shape[0], mm_size.shape[0]
    t_acc, t_mm, t_ag, t_bg = take[:m], take[m:m + n], take[m + n], take[m + n + 1]
    total = jnp.sum(take)

    # Accounts: shrink, release margin and realized P&L to the trader, update the ladder.
    q = t_acc.astype(jnp.float32)
    frac = q / jnp.maximum(acc.size, 1)
    withdraw = frac * acc.margin + acc.side * (price - acc.entry) * q
    bp = bankruptcy_price(acc.side, acc.size, acc.entry, acc.margin)
    ladder = ladder_add(ladder, acc.side, acc.bucket, -t_acc, -q * bp)
    left = acc.size - t_acc
    acc = acc.replace(size=left, side=jnp.where(left == 0, 0, acc.side), margin=acc.margin * (1.0 - frac))
    # Holders sell (longs, want=+1) or buy back (shorts, want=-1) at the ADL price: +want * price * lots.
    trade_cash = want * price
    ledger = ledger.replace(
        traders_cash=ledger.traders_cash + trade_cash * jnp.sum(q) - jnp.sum(withdraw),
        net_deposits=ledger.net_deposits - jnp.sum(withdraw),
        insurance_fund=ledger.insurance_fund + jnp.where(sells, price - avg_bp, avg_bp - price) * total,
        background_position=ledger.background_position - want * t_bg,
        background_cash=ledger.background_cash + trade_cash * t_bg,
    )
    makers = makers.replace(inventory=makers.inventory - want * t_mm, cash=makers.cash + trade_cash * t_mm)
    agent = agent.replace(position=agent.position - want * t_ag, cash=agent.cash + trade_cash * t_ag)
    onehot = jnp.arange(2) == row
    engine = engine.replace(
        size=engine.size - jnp.where(onehot, total, 0),
        bankrupt_value=engine.bankrupt_value - jnp.where(onehot, avg_bp * total, 0.0),
    )
    state = state.replace(accounts=acc, ladder=ladder, engine=engine, ledger=ledger, makers=makers, agent=agent)
    return state, price * total, jnp.sum(take > 0)
