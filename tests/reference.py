"""Plain-Python reference implementations of the market core, for differential tests.

Loops and Python ints / floats only: slow and obviously correct, written from the
rules in the docstrings of crashgym.book, crashgym.liquidation, crashgym.adl and
crashgym.accounts and from MARKET_MECHANICS sections 1 and 2, not from the JAX code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# ----------------------------------------------------------------------------- book


def prefix_sum(xs: list) -> list:
    """Inclusive running total."""
    out, acc = [], 0
    for x in xs:
        acc = acc + x
        out.append(acc)
    return out


@dataclass
class SweepResult:
    lots: int = 0
    notional: float = 0.0
    last_price: float = math.nan
    background: list[int] = field(default_factory=list)
    makers: list[int] = field(default_factory=list)
    agent: int = 0
    agent_ahead: int = 0


def sweep(background: list[int], maker_index: list[int], maker_size: list[int], agent_index: int, agent_size: int,
          agent_ahead: int, prices: list[float], lots: int, walk_limit: list[bool]) -> SweepResult:
    """A market order of `lots` walks one side of the book from index 0 outwards.

    At each level the queue is, in time priority: the background orders, then the
    makers in index order, with the agent's order inserted after `agent_ahead` lots of
    that queue (never behind more than is actually queued there). Levels where
    walk_limit is False are skipped. Makers or an agent whose index is off the ladder
    have nothing resting.
    """
    n, k = len(background), len(maker_size)
    if 0 <= agent_index < n:  # a stale queue position: never behind more than is queued there
        queued = background[agent_index] + sum(s for i, s in zip(maker_index, maker_size) if i == agent_index)
        agent_ahead = min(agent_ahead, queued)
    res = SweepResult(background=[0] * n, makers=[0] * k, agent_ahead=agent_ahead)
    left = lots
    deepest = -1
    for j in range(n):
        if not walk_limit[j]:
            continue
        # The queue at this level as (owner, maker id, lots) chunks.
        queue: list[tuple[str, int, int]] = []
        if background[j] > 0:
            queue.append(("bg", -1, background[j]))
        for m in range(k):
            if maker_index[m] == j and maker_size[m] > 0:
                queue.append(("mk", m, maker_size[m]))
        agent_here = agent_index == j
        if agent_here and agent_size > 0:
            queued = sum(c[2] for c in queue)
            pos = min(agent_ahead, queued)
            split: list[tuple[str, int, int]] = []
            seen = 0
            inserted = False
            for owner, m, size in queue:
                if not inserted and seen + size >= pos:
                    first = pos - seen
                    if first > 0:
                        split.append((owner, m, first))
                    split.append(("agent", -1, agent_size))
                    if size - first > 0:
                        split.append((owner, m, size - first))
                    inserted = True
                else:
                    split.append((owner, m, size))
                seen += size
            if not inserted:
                split.append(("agent", -1, agent_size))
            queue = split
        taken_here = 0
        for owner, m, size in queue:
            if left == 0:
                break
            q = min(size, left)
            left -= q
            taken_here += q
            if owner == "bg":
                res.background[j] += q
            elif owner == "mk":
                res.makers[m] += q
            else:
                res.agent += q
        if agent_here:
            res.agent_ahead = max(agent_ahead - taken_here, 0)
        if taken_here > 0:
            deepest = j
            res.lots += taken_here
            res.notional += taken_here * prices[j]
    if deepest >= 0:
        res.last_price = prices[deepest]
    return res


# ---------------------------------------------------------------------- liquidation


@dataclass
class TakeOver:
    size: list[list[int]]
    bankrupt_value: list[list[float]]
    epoch: list[list[int]]
    frontier: list[int]
    total: list[int]
    engine_size: list[int]
    engine_bv: list[float]
    taken: list[int]
    taken_bv: list[float]
    crossed: list[list[bool]]


def take_over_crossed(size, bankrupt_value, epoch, frontier, total, engine_size, engine_bv, level: float, window: int
                      ) -> TakeOver:
    """One liquidation round on the ladder (see crashgym.liquidation.take_over_crossed).

    `level` = mark / bucket_width_usd - 0.5: a long bucket b is crossed when b > level
    (the mark is below the bucket's middle), a short bucket when b < level. Only a
    window of `window` buckets next to each side's frontier is examined: for longs the
    window ends at the frontier (buckets >= frontier[0] are empty), for shorts it starts
    there (buckets < frontier[1] are empty), both clipped to the grid. Crossed buckets
    move to the engine whole (lots and bankruptcy value) and their epoch is bumped;
    the frontier moves past what was emptied.
    """
    g = len(size[0])
    size = [list(r) for r in size]
    bankrupt_value = [list(r) for r in bankrupt_value]
    epoch = [list(r) for r in epoch]
    f0, f1 = frontier
    s0 = min(max(f0 - window, 0), g - window)
    s1 = min(max(f1, 0), g - window)
    crossed = [[False] * g, [False] * g]
    for b in range(s0, s0 + window):
        crossed[0][b] = b < f0 and b > level
    for b in range(s1, s1 + window):
        crossed[1][b] = b >= f1 and b < level
    taken, taken_bv = [0, 0], [0.0, 0.0]
    for row in (0, 1):
        for b in range(g):
            if crossed[row][b]:
                taken[row] += size[row][b]
                taken_bv[row] += bankrupt_value[row][b]
                size[row][b] = 0
                bankrupt_value[row][b] = 0.0
                epoch[row][b] += 1
    new_f0 = min(f0, max(s0, math.floor(level) + 1))
    new_f1 = max(f1, min(s1 + window, math.ceil(level)))
    return TakeOver(size=size, bankrupt_value=bankrupt_value, epoch=epoch, frontier=[new_f0, new_f1],
                    total=[total[0] - taken[0], total[1] - taken[1]],
                    engine_size=[engine_size[0] + taken[0], engine_size[1] + taken[1]],
                    engine_bv=[engine_bv[0] + taken_bv[0], engine_bv[1] + taken_bv[1]],
                    taken=taken, taken_bv=taken_bv, crossed=crossed)


def fund_pnl_of_fill(sells: bool, queue_lots: int, queue_bv: float, lots: int, notional: float) -> float:
    """Insurance-fund P&L of an engine fill (MARKET_MECHANICS section 2, key identity).

    The engine holds `queue_lots` at an average bankruptcy price BP = queue_bv / queue_lots.
    Selling a long queue: (fill - BP) * Q; buying back a short queue: (BP - fill) * Q.
    """
    if lots == 0:
        return 0.0
    bp = queue_bv / queue_lots
    fill = notional / lots
    return (fill - bp) * lots if sells else (bp - fill) * lots


def order_lots(engine_size: list[int], throttle_left: float, halted: bool, mode: int, chunk_fraction: float
               ) -> tuple[int, bool]:
    """Lots the engine sends this round: the long queue first (sell), else the short queue
    (buy); all of it (mode 0) or a ceil'd chunk (mode 1), at most the throttle; none while halted."""
    sells = engine_size[0] > 0
    queue = engine_size[0] if sells else engine_size[1]
    chunk = math.ceil(chunk_fraction * queue) if mode == 1 else queue
    lots = int(min(chunk, throttle_left))
    return (0 if halted else lots), sells


# ----------------------------------------------------------------------------- ADL


def allocate_greedy(score: list[float], size: list[int], need: int) -> list[int]:
    """Close the highest score first (ties: lower index first); -inf is never closed."""
    order = sorted(range(len(size)), key=lambda i: (-score[i], i))
    take = [0] * len(size)
    left = need
    for i in order:
        if score[i] == -math.inf or left <= 0:
            continue
        q = min(size[i], left)
        take[i] = q
        left -= q
    return take


def pro_rata_share(score: list[float], size: list[int], need: int) -> list[float]:
    """The exact (fractional) pro-rata split of min(need, eligible) over eligible sizes."""
    eligible = [s if score[i] != -math.inf else 0 for i, s in enumerate(size)]
    total = sum(eligible)
    goal = min(need, total)
    if total == 0:
        return [0.0] * len(size)
    return [e * goal / total for e in eligible]


# -------------------------------------------------------------------------- margin


def tier_table(tier_notional, tier_mmr, tier_max_leverage) -> list[tuple[float, float, float, float]]:
    """(upper notional bound, MMR, cum, max leverage) per tier, Binance's formula
    cum_n = floor_n * (MMR_n - MMR_{n-1}) + cum_{n-1}, floor_n the lower bound of tier n."""
    rows = []
    cum, prev_mmr, prev_bound = 0.0, 0.0, 0.0
    for bound, mmr, lev in zip(tier_notional, tier_mmr, tier_max_leverage):
        cum = prev_bound * (mmr - prev_mmr) + cum
        rows.append((bound, mmr, cum, lev))
        prev_mmr, prev_bound = mmr, bound
    return rows


def tier(notional: float, table) -> tuple[float, float, float]:
    """(MMR, cum, max leverage) of the tier whose bound is the first >= notional; the last beyond."""
    for bound, mmr, cum, lev in table:
        if notional <= bound:
            return mmr, cum, lev
    _, mmr, cum, lev = table[-1]
    return mmr, cum, lev


def liquidation_price(side: int, size: int, entry: float, margin: float, table) -> float:
    """Binance isolated margin: the price where wallet + uPnL = MM = N * MMR - cum.

    Long:  margin + Q (LP - EP) = Q LP MMR - cum  ->  LP = (Q EP - margin - cum) / (Q (1 - MMR))
    Short: margin + Q (EP - LP) = Q LP MMR - cum  ->  LP = (Q EP + margin + cum) / (Q (1 + MMR))
    The tier is that of the notional at entry.
    """
    q = max(size, 1)
    mmr, cum, _ = tier(q * entry, table)
    if side > 0:
        return (q * entry - margin - cum) / (q * (1.0 - mmr))
    return (q * entry + margin + cum) / (q * (1.0 + mmr))


def bybit_liquidation_price(side: int, entry: float, leverage: float, mmr: float) -> float:
    """Bybit's simplified isolated formula (MARKET_MECHANICS section 1, MM at entry value)."""
    return entry * (1.0 - 1.0 / leverage + mmr) if side > 0 else entry * (1.0 + 1.0 / leverage - mmr)


def bankruptcy_price(side: int, entry: float, leverage: float) -> float:
    return entry * (1.0 - 1.0 / leverage) if side > 0 else entry * (1.0 + 1.0 / leverage)
