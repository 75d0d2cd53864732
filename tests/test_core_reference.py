"""Differential tests: the JAX core against the plain-Python reference in tests/reference.py.

Every jitted function here has one fixed shape, so each compiles once per module.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from crashgym import accounts as acc_mod
from crashgym import adl, book, liquidation
from crashgym.params import AccountParams, LiquidationParams
from crashgym.state import Engine, LiquidationLadder

import reference as ref  # tests/reference.py (pytest puts tests/ on sys.path)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ============================================================================ book
N_LEVELS = 20  # walk-order levels of the side queue under test
N_MAKERS = 3

_sweep = jax.jit(book.sweep)
_prefix_sum = jax.jit(book.prefix_sum)


def _side(background, maker_index, maker_size, agent_index, agent_size, agent_ahead, prices) -> book.SideQueue:
    i32 = lambda x: jnp.asarray(x, jnp.int32)  # noqa: E731
    return book.SideQueue(background=i32(background), maker_index=i32(maker_index), maker_size=i32(maker_size),
                          agent_index=i32(agent_index), agent_size=i32(agent_size), agent_ahead=i32(agent_ahead),
                          prices=jnp.asarray(prices, jnp.float32))


@st.composite
def side_queues(draw, ahead_within_queue: bool = True):
    """A random side queue; the agent's queue position is at most what is queued at its level."""
    n, k = N_LEVELS, N_MAKERS
    sparse = st.one_of(st.just(0), st.integers(1, 80))
    background = draw(st.lists(sparse, min_size=n, max_size=n))
    maker_index = draw(st.lists(st.integers(-2, n + 1), min_size=k, max_size=k))
    # Makers often share a level (with each other and with the agent).
    if draw(st.booleans()):
        maker_index[1] = maker_index[0]
    maker_size = draw(st.lists(st.integers(0, 60), min_size=k, max_size=k))
    agent_index = draw(st.one_of(st.integers(-1, n), st.sampled_from(maker_index)))
    agent_size = draw(st.integers(0, 60))
    others = 0
    if 0 <= agent_index < n:
        others = background[agent_index] + sum(s for i, s in zip(maker_index, maker_size) if i == agent_index)
    if ahead_within_queue:
        agent_ahead = draw(st.integers(0, others))
    else:
        agent_ahead = draw(st.integers(others + 1, others + 100))
    ascending = draw(st.booleans())  # ask side walks up in price, bid side down
    tick = 0.05
    prices = [100.0 + (j if ascending else -j) * tick for j in range(n)]
    mode = draw(st.sampled_from(["all", "band", "mask"]))
    if mode == "all":
        walk = [True] * n
    elif mode == "band":
        reach = draw(st.integers(0, n))
        walk = [j < reach for j in range(n)]
    else:
        walk = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    on_ladder = lambda i: 0 <= i < n  # noqa: E731
    volume = sum(background) + sum(s for i, s in zip(maker_index, maker_size) if on_ladder(i))
    volume += agent_size if on_ladder(agent_index) else 0
    lots = draw(st.integers(0, volume + 50))
    return dict(background=background, maker_index=maker_index, maker_size=maker_size, agent_index=agent_index,
                agent_size=agent_size, agent_ahead=agent_ahead, prices=prices), lots, walk


def _compare_sweep(q, lots, walk):
    want = ref.sweep(**q, lots=lots, walk_limit=walk)
    got = _sweep(_side(**q), jnp.int32(lots), jnp.asarray(walk))
    assert int(got.lots) == want.lots
    assert np.asarray(got.background).tolist() == want.background
    assert np.asarray(got.makers).tolist() == want.makers
    assert int(got.agent) == want.agent
    assert int(got.agent_ahead) == want.agent_ahead
    np.testing.assert_allclose(float(got.notional), want.notional, rtol=1e-6, atol=1e-3)
    if math.isnan(want.last_price):
        assert math.isnan(float(got.last_price))
    else:
        assert float(got.last_price) == pytest.approx(want.last_price, rel=1e-6)


@SETTINGS
@given(side_queues())
@example(({"background": [5] + [0] * 19, "maker_index": [0, 0, 3], "maker_size": [4, 6, 2], "agent_index": 0,
           "agent_size": 7, "agent_ahead": 9, "prices": [100.0 + 0.05 * j for j in range(20)]}, 20, [True] * 20))
def test_sweep_matches_reference(case):
    q, lots, walk = case
    _compare_sweep(q, lots, walk)


@SETTINGS
@given(side_queues())
def test_sweep_conserves_lots(case):
    """Everything the order takes comes from some owner: background, a maker or the agent."""
    q, lots, walk = case
    got = _sweep(_side(**q), jnp.int32(lots), jnp.asarray(walk))
    parts = int(jnp.sum(got.background)) + int(jnp.sum(got.makers)) + int(got.agent)
    assert int(got.lots) == parts == min(lots, int(jnp.sum(jnp.where(jnp.asarray(walk), book.total_volume(_side(**q)), 0))))
    assert (np.asarray(got.background) <= np.asarray(q["background"])).all()
    assert (np.asarray(got.makers) <= np.asarray(q["maker_size"])).all()
    assert 0 <= int(got.agent) <= q["agent_size"]


def test_sweep_conserves_lots_when_agent_ahead_is_stale():
    q = dict(background=[50] + [0] * 19, maker_index=[99, 99, 99], maker_size=[0, 0, 0], agent_index=0, agent_size=20,
             agent_ahead=100, prices=[100.0 - 0.05 * j for j in range(20)])
    got = _sweep(_side(**q), jnp.int32(70), jnp.ones(20, bool))
    parts = int(jnp.sum(got.background)) + int(jnp.sum(got.makers)) + int(got.agent)
    assert int(got.lots) == parts == 70


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 31, 32, 33, 64, 300])
def test_prefix_sum_matches_cumsum(n):
    for seed in range(3):
        rng = np.random.default_rng(seed)
        xi = rng.integers(-1000, 1000, size=(2, n)).astype(np.int32)
        np.testing.assert_array_equal(np.asarray(_prefix_sum(jnp.asarray(xi))), np.cumsum(xi, axis=-1))
        assert np.asarray(_prefix_sum(jnp.asarray(xi[0]))).tolist() == ref.prefix_sum(xi[0].tolist())
        xf = rng.uniform(0, 100, size=(2, n)).astype(np.float32)
        np.testing.assert_allclose(np.asarray(_prefix_sum(jnp.asarray(xf))),
                                   np.cumsum(xf.astype(np.float64), axis=-1), rtol=1e-5, atol=1e-3)


def test_prefix_sum_jit_and_ladder_sizes():
    for n in (1, 2, 3, 31, 32, 33, 128):
        x = jnp.arange(n, dtype=jnp.int32)
        np.testing.assert_array_equal(np.asarray(_prefix_sum(x)), np.cumsum(np.arange(n)))


def test_best_indices_and_recentre():
    bid = jnp.array([0, 3, 0, 2, 0, 0, 0, 0], jnp.int32)
    ask = jnp.array([0, 0, 0, 0, 0, 4, 0, 1], jnp.int32)
    assert int(book.best_bid_index(bid)) == 3
    assert int(book.best_ask_index(ask)) == 5
    assert int(book.best_bid_index(jnp.zeros(8, jnp.int32))) == -1
    assert int(book.best_ask_index(jnp.zeros(8, jnp.int32))) == 8
    # Re-centre: the mid drifted 3 levels up (> recentre_levels = 2): shift by 3, count what falls off.
    new_bid, new_ask, center, dropped = book.recentre(bid, ask, jnp.int32(1000), jnp.float32(7.0), 4, jnp.int32(2))
    assert int(center) == 1003
    assert np.asarray(new_bid).tolist() == [2, 0, 0, 0, 0, 0, 0, 0]
    assert np.asarray(new_ask).tolist() == [0, 0, 4, 0, 1, 0, 0, 0]
    assert int(dropped) == 3  # the 3 bid lots at index 1
    # Conservation: kept + dropped == before.
    assert int(new_bid.sum() + new_ask.sum() + dropped) == int(bid.sum() + ask.sum())


# ===================================================================== liquidation
G, W = 64, 8
LIQ = LiquidationParams(bucket_width=0.002)
P0 = 100.0
WIDTH = 0.002 * P0

_take = jax.jit(liquidation.take_over_crossed, static_argnums=(3,))


@st.composite
def ladders(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    f0 = draw(st.integers(0, G))
    f1 = draw(st.integers(0, G))
    density = draw(st.sampled_from([0.2, 0.6, 1.0]))
    size = rng.integers(1, 400, size=(2, G)) * (rng.uniform(size=(2, G)) < density)
    size[0, f0:] = 0  # frontier semantics: long buckets >= frontier[0] are empty
    size[1, :f1] = 0  # short buckets < frontier[1] are empty
    bp = rng.uniform(50, 150, size=(2, G))
    bv = (size * bp).astype(np.float32)
    epoch = rng.integers(0, 4, size=(2, G))
    eng = rng.integers(0, 500, size=2)
    eng_bv = (eng * rng.uniform(50, 150, size=2)).astype(np.float32)
    # Where the mark stands, in buckets: away from bucket middles so float32 rounding cannot matter.
    level = draw(st.one_of(st.integers(0, G + 2).map(float), st.just(-0.45))) + draw(st.floats(0.05, 0.95))
    if level > G + 2:
        level = float(G + 2) + 0.5
    return dict(size=size, bv=bv, epoch=epoch, frontier=[f0, f1], eng=eng, eng_bv=eng_bv, level=level)


def _ladder(c) -> tuple[LiquidationLadder, Engine]:
    lad = LiquidationLadder(size=jnp.asarray(c["size"], jnp.int32), bankrupt_value=jnp.asarray(c["bv"], jnp.float32),
                            epoch=jnp.asarray(c["epoch"], jnp.int32), frontier=jnp.asarray(c["frontier"], jnp.int32),
                            total=jnp.asarray(c["size"].sum(axis=1), jnp.int32))
    eng = Engine(size=jnp.asarray(c["eng"], jnp.int32), bankrupt_value=jnp.asarray(c["eng_bv"], jnp.float32))
    return lad, eng


def _mark(level: float) -> jax.Array:
    return jnp.float32((level + 0.5) * WIDTH)


def _run_take(lad, eng, level):
    return _take(lad, eng, _mark(level), W, jnp.float32(P0), LIQ)


@SETTINGS
@given(ladders())
def test_take_over_crossed_matches_reference(c):
    lad, eng = _ladder(c)
    new_lad, new_eng, taken, taken_bv = _run_take(lad, eng, c["level"])
    want = ref.take_over_crossed(c["size"].tolist(), c["bv"].astype(float).tolist(), c["epoch"].tolist(), c["frontier"],
                                 c["size"].sum(axis=1).tolist(), c["eng"].tolist(), c["eng_bv"].astype(float).tolist(),
                                 c["level"], W)
    np.testing.assert_array_equal(np.asarray(new_lad.size), np.asarray(want.size))
    np.testing.assert_allclose(np.asarray(new_lad.bankrupt_value), np.asarray(want.bankrupt_value), rtol=1e-6)
    assert np.asarray(taken).tolist() == want.taken
    np.testing.assert_allclose(np.asarray(taken_bv), want.taken_bv, rtol=1e-5, atol=1e-2)
    assert np.asarray(new_lad.frontier).tolist() == want.frontier
    assert np.asarray(new_lad.total).tolist() == want.total
    assert np.asarray(new_eng.size).tolist() == want.engine_size
    np.testing.assert_allclose(np.asarray(new_eng.bankrupt_value), want.engine_bv, rtol=1e-5, atol=1e-2)
    # Epochs: bumped for every crossed bucket that held positions (so those accounts die),
    # unchanged where nothing was crossed; bumping an empty crossed bucket is harmless.
    old, new = c["epoch"], np.asarray(new_lad.epoch)
    crossed = np.asarray(want.crossed)
    held = c["size"] > 0
    np.testing.assert_array_equal(new[crossed & held], old[crossed & held] + 1)
    np.testing.assert_array_equal(new[~crossed], old[~crossed])
    assert set(np.unique(new[crossed & ~held] - old[crossed & ~held]).tolist()) <= {0, 1}


@SETTINGS
@given(ladders())
def test_repeated_rounds_take_every_crossed_bucket(c):
    """A cascade of enough rounds at a fixed mark empties exactly the crossed buckets,
    and the frontier invariant holds after every round."""
    lad, eng = _ladder(c)
    level = c["level"]
    total_taken = np.zeros(2, np.int64)
    for _ in range(G // W + 2):
        lad, eng, taken, _ = _run_take(lad, eng, level)
        total_taken += np.asarray(taken)
        size, f = np.asarray(lad.size), np.asarray(lad.frontier)
        assert (size[0, f[0]:] == 0).all() and (size[1, :f[1]] == 0).all()
    b = np.arange(G)
    size = np.asarray(lad.size)
    assert (size[0, b > level] == 0).all()
    assert (size[1, b < level] == 0).all()
    np.testing.assert_array_equal(size[0, b < level], c["size"][0, b < level])
    np.testing.assert_array_equal(size[1, b > level], c["size"][1, b > level])
    assert total_taken.tolist() == [int(c["size"][0, b > level].sum()), int(c["size"][1, b < level].sum())]
    assert (np.asarray(eng.size) == c["eng"] + total_taken).all()


@SETTINGS
@given(st.booleans(), st.lists(st.tuples(st.integers(1, 500), st.floats(50, 150)), min_size=1, max_size=8),
       st.floats(0, 1), st.floats(40, 160))
def test_settle_fill_fund_pnl_identity(sells, positions, fill_fraction, fill_price):
    """Fund P&L of a liquidation fill = (fill - bankruptcy) * Q for longs, mirrored for shorts."""
    q_total = sum(q for q, _ in positions)
    bv_total = sum(q * bp for q, bp in positions)
    row = 0 if sells else 1
    size = [0, 0]
    bv = [0.0, 0.0]
    size[row], bv[row] = q_total, bv_total
    eng = Engine(size=jnp.asarray(size, jnp.int32), bankrupt_value=jnp.asarray(bv, jnp.float32))
    lots = int(round(fill_fraction * q_total))
    notional = lots * fill_price
    new_eng, pnl = liquidation.settle_fill(eng, jnp.bool_(sells), jnp.int32(lots), jnp.float32(notional))
    want = ref.fund_pnl_of_fill(sells, q_total, bv_total, lots, notional)
    scale = max(1.0, bv_total) * 1e-5
    assert float(pnl) == pytest.approx(want, abs=scale)
    if lots == q_total:  # the whole queue: the per-position identity, summed
        per_position = sum(((fill_price - bp) if sells else (bp - fill_price)) * q for q, bp in positions)
        assert float(pnl) == pytest.approx(per_position, abs=scale)
        assert float(new_eng.bankrupt_value[row]) == pytest.approx(0.0, abs=scale)
    assert int(new_eng.size[row]) == q_total - lots
    assert int(new_eng.size[1 - row]) == 0
    # Cash identity: what the engine's implied cash gains plus the fund's P&L is what the fill paid.
    engine_cash = lambda e: float(e.bankrupt_value[1] - e.bankrupt_value[0])  # noqa: E731
    paid_to_engine = notional if sells else -notional
    assert engine_cash(new_eng) - engine_cash(eng) + float(pnl) == pytest.approx(paid_to_engine, abs=scale)


@SETTINGS
@given(st.integers(0, 1000), st.integers(0, 1000), st.floats(50, 150), st.floats(50, 150))
def test_cross_queues_fund_pnl(q_long, q_short, bp_long, bp_short):
    eng = Engine(size=jnp.asarray([q_long, q_short], jnp.int32),
                 bankrupt_value=jnp.asarray([q_long * bp_long, q_short * bp_short], jnp.float32))
    new_eng, pnl = liquidation.cross_queues(eng)
    x = min(q_long, q_short)
    assert np.asarray(new_eng.size).tolist() == [q_long - x, q_short - x]
    # The engine hands x longs (paid BP_long) to x shorts (received BP_short): the fund keeps the difference.
    assert float(pnl) == pytest.approx(x * (bp_short - bp_long), abs=1e-5 * max(1.0, x * 150))
    assert min(np.asarray(new_eng.size)) == 0


@SETTINGS
@given(st.integers(0, 5000), st.integers(0, 5000), st.one_of(st.just(2.0**30), st.floats(0, 3000).map(math.floor)),
       st.booleans(), st.sampled_from([0, 1]), st.floats(0.01, 1.0))
def test_order_lots_matches_reference(q_long, q_short, throttle, halted, mode, chunk):
    eng = Engine(size=jnp.asarray([q_long, q_short], jnp.int32), bankrupt_value=jnp.zeros(2, jnp.float32))
    lots, sells = liquidation.order_lots(eng, jnp.float32(throttle), jnp.bool_(halted),
                                         LiquidationParams(mode=mode, chunk_fraction=chunk))
    queue = q_long if q_long > 0 else q_short
    x = chunk * queue
    if mode == 1:
        assume(abs(x - round(x)) > 1e-3)  # ceil at a float32 rounding edge is not the point here
    want_lots, want_sells = ref.order_lots([q_long, q_short], throttle, halted, mode, chunk)
    assert bool(sells) == want_sells
    assert int(lots) == want_lots


@SETTINGS
@given(st.integers(-3000, 3000), st.floats(-3e5, 3e5), st.floats(50, 150), st.floats(0.001, 0.05))
def test_take_over_account_zeroes_equity(position, cash, mark, mm):
    eng0 = Engine(size=jnp.asarray([7, 3], jnp.int32), bankrupt_value=jnp.asarray([700.0, 300.0], jnp.float32))
    hit, pos, new_cash, eng = liquidation.take_over_account(jnp.int32(position), jnp.float32(cash), jnp.float32(mark),
                                                            jnp.float32(mm), eng0)
    equity = cash + position * mark
    want_hit = position != 0 and equity <= mm * abs(position) * mark
    if abs(equity - mm * abs(position) * mark) > 1e-3 * max(1.0, abs(cash)):  # away from the float32 edge
        assert bool(hit) == want_hit
    if bool(hit):
        assert int(pos) == 0
        # Taken over at the bankruptcy price: nothing left, the engine holds the position.
        assert float(new_cash) == pytest.approx(0.0, abs=1e-5 * max(1.0, abs(cash), abs(position) * mark))
        row = 0 if position > 0 else 1
        assert int(eng.size[row]) == int(eng0.size[row]) + abs(position)
        # Cash conserved between the holder and the engine's implied cash.
        engine_cash = lambda e: float(e.bankrupt_value[1] - e.bankrupt_value[0])  # noqa: E731
        assert float(new_cash) - cash + engine_cash(eng) - engine_cash(eng0) == pytest.approx(
            0.0, abs=1e-5 * max(1.0, abs(cash), abs(position) * mark))
    else:
        assert int(pos) == position and float(new_cash) == np.float32(cash)
        np.testing.assert_array_equal(np.asarray(eng.size), np.asarray(eng0.size))


# ============================================================================= ADL
K_ADL = 12
_allocate = jax.jit(adl.allocate)


@st.composite
def adl_cases(draw):
    size = draw(st.lists(st.integers(0, 2000), min_size=K_ADL, max_size=K_ADL))
    score = draw(st.lists(st.one_of(st.sampled_from([-math.inf, 0.5, 1.0, 2.0]), st.floats(0.01, 100.0)),
                          min_size=K_ADL, max_size=K_ADL))
    need = draw(st.integers(0, 12000))
    return score, size, need


def _alloc(rule, score, size, need):
    return np.asarray(_allocate(jnp.int32(rule), jnp.asarray(score, jnp.float32), jnp.asarray(size, jnp.int32),
                                jnp.int32(need)))


@SETTINGS
@given(adl_cases(), st.sampled_from([0, 1, 2]))
def test_adl_allocate_greedy_matches_reference(case, rule):
    score, size, need = case
    score32 = np.asarray(score, np.float32).tolist()  # rank on the same float32 scores
    got = _alloc(rule, score, size, need)
    assert got.tolist() == ref.allocate_greedy(score32, size, need)
    eligible = sum(s for s, sc in zip(size, score) if sc != -math.inf)
    assert got.sum() == min(need, eligible)


@SETTINGS
@given(adl_cases())
def test_adl_allocate_pro_rata_sums_exactly(case):
    score, size, need = case
    got = _alloc(3, score, size, need)
    eligible = [s if sc != -math.inf else 0 for s, sc in zip(size, score)]
    assert got.sum() == min(need, sum(eligible))
    assert (got >= 0).all() and (got <= np.asarray(eligible)).all()


@pytest.mark.parametrize("size,need", [([10] * 6, 5), ([3] * 7, 4), ([7] * 8, 20)])
def test_adl_allocate_pro_rata_within_one_lot(size, need):
    score = [1.0] * len(size)
    pad = K_ADL - len(size)
    got = _alloc(3, score + [-math.inf] * pad, size + [0] * pad, need)[: len(size)]
    share = ref.pro_rata_share(score, size, need)
    assert got.sum() == min(need, sum(size))
    assert all(abs(g - s) < 1.0 for g, s in zip(got.tolist(), share)), (got.tolist(), share)


@SETTINGS
@given(st.sampled_from([0, 1, 2, 3]), st.sampled_from([1, -1]), st.integers(0, 1000), st.floats(50, 150),
       st.floats(50, 150), st.floats(1e3, 1e6), st.floats(0.0, 1e5), st.floats(0.004, 0.125))
def test_adl_scores_match_rules(rule, direction, size, entry, mark, equity, wallet, mmr):
    got = float(adl.adl_scores(jnp.int32(rule), jnp.int32(direction), jnp.int32(size), jnp.float32(entry),
                               jnp.float32(equity), jnp.float32(wallet), jnp.float32(mmr), jnp.float32(mark)))
    upnl = direction * (mark - entry) * size
    if not (upnl > 1e-3 * max(1.0, size * mark) and size > 0):
        if upnl <= 0 or size == 0:
            assert got == -math.inf
        return
    notional = mark * size
    want = {
        0: upnl / (entry * size) * notional / equity,  # BitMEX: PnL% * effective leverage
        1: upnl / max(wallet, 1.0) * mmr * notional / equity,  # Binance: PnL% * margin ratio
        2: (mark / entry if direction > 0 else entry / mark) * notional / equity,  # Hyperliquid
        3: 1.0,  # pro rata: every profitable candidate alike
    }[rule]
    assert got == pytest.approx(want, rel=2e-4)


# ========================================================================== margin
BINANCE = AccountParams(tier_notional=(5.0e4, 2.5e5, 1.0e6, 1.0e7, 2.0e7, 5.0e7, 1.0e8),
                        tier_mmr=(0.004, 0.005, 0.01, 0.025, 0.05, 0.10, 0.125),
                        tier_max_leverage=(125.0, 100.0, 50.0, 20.0, 10.0, 5.0, 4.0))
# MARKET_MECHANICS section 1, Binance BTCUSDT tiers: (notional <=, max leverage, MMR, cum).
BINANCE_TABLE = [(5.0e4, 125, 0.004, 0), (2.5e5, 100, 0.005, 50), (1.0e6, 50, 0.01, 1300), (1.0e7, 20, 0.025, 16300),
                 (2.0e7, 10, 0.05, 266300), (5.0e7, 5, 0.10, 1266300), (1.0e8, 4, 0.125, 2516300)]

_tier = jax.jit(acc_mod.tier)
_lp = jax.jit(acc_mod.liquidation_price)
_bp = jax.jit(acc_mod.bankruptcy_price)


def test_tier_table_matches_binance():
    table = ref.tier_table(BINANCE.tier_notional, BINANCE.tier_mmr, BINANCE.tier_max_leverage)
    prev = 0.0
    for (bound, lev, mmr, cum), (rbound, rmmr, rcum, rlev) in zip(BINANCE_TABLE, table):
        assert (rbound, rmmr, rlev) == (bound, mmr, lev) and rcum == pytest.approx(cum, abs=1e-6)
        for notional in (prev * 1.0001 + 1.0, 0.5 * (prev + bound), bound):  # the bound itself is in the tier (<=)
            got_mmr, got_cum, got_lev = (float(x) for x in _tier(jnp.float32(notional), BINANCE))
            assert got_mmr == pytest.approx(mmr, rel=1e-6)
            assert got_cum == pytest.approx(cum, rel=1e-6, abs=1e-3)
            assert got_lev == lev
        prev = bound
    # Beyond the last tier the last tier applies.
    assert float(_tier(jnp.float32(5e8), BINANCE)[1]) == pytest.approx(2516300, rel=1e-6)


def test_default_tier_table_follows_binance_formula():
    p = AccountParams()
    table = ref.tier_table(p.tier_notional, p.tier_mmr, p.tier_max_leverage)
    prev = 0.0
    for bound, mmr, cum, lev in table:
        got_mmr, got_cum, got_lev = (float(x) for x in _tier(jnp.float32(0.5 * (prev + bound)), p))
        assert (got_mmr, got_lev) == (pytest.approx(mmr, rel=1e-6), lev)
        assert got_cum == pytest.approx(cum, rel=1e-6, abs=1e-3)
        prev = bound


@SETTINGS
@given(st.sampled_from([1, -1]), st.integers(1, 200_000), st.floats(1.0, 1000.0), st.floats(1.0, 125.0))
def test_liquidation_price_matches_binance_closed_form(side, size, entry, leverage):
    table = ref.tier_table(BINANCE.tier_notional, BINANCE.tier_mmr, BINANCE.tier_max_leverage)
    margin = size * entry / leverage
    entry32, margin32 = float(np.float32(entry)), float(np.float32(margin))
    notional = size * entry32
    # Stay clear of tier bounds, where float32 and float64 may pick different tiers.
    assume_clear = all(abs(notional - b) > 1e-4 * b for b in BINANCE.tier_notional)
    if not assume_clear:
        return
    got = float(_lp(jnp.int32(side), jnp.int32(size), jnp.float32(entry), jnp.float32(margin), BINANCE))
    want = ref.liquidation_price(side, size, entry32, margin32, table)
    assert got == pytest.approx(want, abs=2e-5 * entry, rel=2e-5)
    bp = float(_bp(jnp.int32(side), jnp.int32(size), jnp.float32(entry), jnp.float32(margin)))
    assert bp == pytest.approx(ref.bankruptcy_price(side, entry, leverage), rel=2e-5, abs=2e-5 * entry)
    # Liquidation comes before bankruptcy on the way against the position (whenever the
    # maintenance margin at the bankruptcy price, N * MMR - cum, is not negative).
    mmr, cum, _ = ref.tier(notional, table)
    if size * abs(bp) * mmr < cum:
        return
    if side > 0:
        assert got >= bp - 1e-5 * entry
    else:
        assert got <= bp + 1e-5 * entry


@SETTINGS
@given(st.sampled_from([1, -1]), st.integers(1, 400), st.floats(1.0, 100.0), st.floats(1.0, 125.0))
def test_liquidation_price_first_tier_is_bybit_simplified(side, size, entry, leverage):
    """With cum = 0 (first tier) the Binance LP is BP / (1 -+ MMR), which is Bybit's simplified
    EP * (1 -+ 1/L +- MMR) up to the second-order term MMR * (MMR - 1/L) / (1 -+ MMR)."""
    if size * entry > 0.999 * BINANCE.tier_notional[0]:
        return
    mmr = BINANCE.tier_mmr[0]
    margin = size * entry / leverage
    got = float(_lp(jnp.int32(side), jnp.int32(size), jnp.float32(entry), jnp.float32(margin), BINANCE))
    bp = ref.bankruptcy_price(side, entry, leverage)
    assert got == pytest.approx(bp / (1.0 - side * mmr), rel=2e-5, abs=2e-5 * entry)
    second_order = entry * mmr * abs(mmr - 1.0 / leverage) / (1.0 - mmr)
    assert abs(got - ref.bybit_liquidation_price(side, entry, leverage, mmr)) <= second_order + 2e-5 * entry


def test_liquidation_price_worked_example():
    """1 BTC-like lot worth 40,000 at 10x in the first tier, and 100 lots (4M, tier 4 with cum 16,300)."""
    lp = float(_lp(jnp.int32(1), jnp.int32(1), jnp.float32(40000.0), jnp.float32(4000.0), BINANCE))
    assert lp == pytest.approx((40000 - 4000) / (1 - 0.004), rel=1e-6)  # 36144.58
    lp = float(_lp(jnp.int32(1), jnp.int32(100), jnp.float32(40000.0), jnp.float32(400000.0), BINANCE))
    assert lp == pytest.approx((4_000_000 - 400_000 - 16_300) / (100 * (1 - 0.025)), rel=1e-6)
    lp = float(_lp(jnp.int32(-1), jnp.int32(100), jnp.float32(40000.0), jnp.float32(400000.0), BINANCE))
    assert lp == pytest.approx((4_000_000 + 400_000 + 16_300) / (100 * (1 + 0.025)), rel=1e-6)


def test_bucket_of_and_alive():
    liq = LiquidationParams(bucket_width=0.002)
    b = acc_mod.bucket_of(jnp.asarray([0.0, 0.19, 0.2, 99.99, 1e9, -5.0], jnp.float32), 1024, jnp.float32(100.0), liq)
    assert np.asarray(b).tolist() == [0, 0, 1, 499, 1023, 0]
