"""ADL against the background crowd (`liquidation.adl_background`).

On the exchanges every profitable opposite position can be auto-deleveraged. The crowd is
one aggregate position ranked at effective leverage 1, so a leverage-weighted ranking puts
it behind the leveraged holders with the same PnL%. Checked on every state of a stressed
run where ADL is due, with positions and cash conserved.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from crashgym import adl
from crashgym.accounts import alive
from crashgym.market import cash_balance, net_position
from test_core_batching import MARKET, stressed, stressed_states  # tests/ is on sys.path

R = dataclasses.replace


def _with_crowd(p, on: int):
    return R(p, liquidation=R(p.liquidation, adl_background=on))


@pytest.fixture(scope="module")
def due():
    """States of a stressed run just before stage 8 (ADL), where ADL is due (flattened over
    steps and seeds)."""
    p = stressed()
    flat = stressed_states(p, jax.random.split(jax.random.key(11), 8), before_adl=True)
    rows = np.flatnonzero(np.asarray(jax.vmap(lambda s: adl.needs_adl(s, p))(flat)))
    assert rows.size >= 20, "states where ADL is due"
    return p, jax.tree_util.tree_map(lambda x: x[rows], flat)


def _deleverage(states, p):
    return jax.vmap(lambda s: adl.auto_deleverage(s, p))(states)


@pytest.mark.parametrize("rule", [0, 1, 2, 3])
def test_adl_with_the_crowd_conserves_positions_and_cash(due, rule):
    p, states = due
    p = _with_crowd(R(p, liquidation=R(p.liquidation, adl_rule=rule)), 1)
    after, _, _ = _deleverage(states, p)
    assert (np.asarray(jax.vmap(net_position)(after)) == 0).all()
    before_cash = np.asarray(jax.vmap(cash_balance)(states))
    np.testing.assert_allclose(np.asarray(jax.vmap(cash_balance)(after)), before_cash, rtol=0, atol=1e-6 * np.abs(
        np.asarray(states.ledger.traders_cash)).max() + 1.0)


def test_the_crowd_ranks_as_an_unleveraged_holder_under_bitmex(due):
    """BitMEX ranks by PnL% x effective leverage; the crowd's is its PnL% at leverage 1. Where ADL
    reaches the crowd, every leveraged position ranked above it is closed in full; where the
    positions ranked above it cover the queue, the crowd keeps its position."""
    p, states = due
    after, _, _ = _deleverage(states, _with_crowd(p, 1))
    moved = np.asarray(after.ledger.background_position - states.ledger.background_position)
    reached = moved != 0
    assert reached.sum() >= 5, "states where ADL reaches the crowd"
    want = np.where(np.asarray(states.engine.size[:, 0]) > 0, -1, 1)
    assert (np.sign(moved[reached]) == -want[reached]).all()  # it buys back against a long queue

    mark = np.asarray(states.signals.mark, float)[:, None]
    acc = states.accounts
    entry, size = np.asarray(acc.entry, float), np.asarray(acc.size, float)
    gain = want[:, None] * (mark - entry)
    equity = np.asarray(acc.margin, float) + gain * size
    score = gain / entry * mark * size / np.maximum(equity, 1e-6)
    crowd_entry = np.asarray(jax.vmap(adl.crowd_entry)(states.ledger), float)
    crowd_score = want * (mark[:, 0] - crowd_entry) / crowd_entry
    live = np.asarray(jax.vmap(alive)(states.accounts, states.ladder))
    above = live & (np.asarray(acc.side) == want[:, None]) & (gain > 0) & (score > crowd_score[:, None])
    left = np.asarray(after.accounts.size) > 0
    assert not (above & left)[reached].any()
    covered = np.where(above, size, 0).sum(axis=1) >= np.asarray(states.engine.size).sum(axis=1)
    assert covered.sum() >= 5, "states where the positions ranked above the crowd cover the queue"
    assert not reached[covered].any()


def test_without_the_crowd_its_ledger_is_untouched(due):
    p, states = due
    after, _, _ = _deleverage(states, _with_crowd(p, 0))
    np.testing.assert_array_equal(np.asarray(after.ledger.background_position),
                                  np.asarray(states.ledger.background_position))
    np.testing.assert_array_equal(np.asarray(after.ledger.background_cash), np.asarray(states.ledger.background_cash))
    with_crowd, _, _ = _deleverage(states, _with_crowd(p, 1))
    left_without = np.asarray(after.engine.size).sum(axis=1)
    left_with = np.asarray(with_crowd.engine.size).sum(axis=1)
    assert (left_with <= left_without).all() and (left_with < left_without).any()


def test_crowd_entry_is_its_cost_basis():
    """At reset the crowd holds the other side of every position: its entry is their
    position-weighted entry, so its uPnL is minus theirs."""
    p = stressed()
    s = MARKET.init(jax.random.key(0), p)
    live = np.asarray(alive(s.accounts, s.ladder))
    signed = np.where(live, np.asarray(s.accounts.side) * np.asarray(s.accounts.size), 0).astype(float)
    expected = (signed * np.asarray(s.accounts.entry)).sum() / signed.sum()
    np.testing.assert_allclose(float(adl.crowd_entry(s.ledger)), expected, rtol=1e-5)
