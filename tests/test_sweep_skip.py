"""The liquidation rounds' batch-level skips (book.sweep_moves / book.no_fill,
liquidation.any_crossed) and the per-level totals the market step keeps across sweeps
(book.sweep's `resting`) change no result, bit for bit.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crashgym import book, liquidation
from crashgym import market as market_mod
from crashgym.market import Market, no_orders
from crashgym.params import MarketParams
from crashgym.types import MarketShape

from test_core_reference import LIQ, P0, W, _ladder, _mark, _run_take, _side, ladders, side_queues

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_sweep = jax.jit(book.sweep)
_moves = jax.jit(book.sweep_moves)
_no_fill = jax.jit(book.no_fill)


def _assert_same(a, b):
    for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
        np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@SETTINGS
@given(case=side_queues(), stale=st.booleans(), empty=st.booleans(), zero_lots=st.booleans())
def test_skipped_sweep_is_the_sweep(case, stale, empty, zero_lots):
    """Whenever sweep_moves says no, the sweep's result is exactly no_fill (queue position included)."""
    q, lots, walk = case
    if empty:  # nothing reachable: the common case of the later liquidation rounds
        walk = [False] * len(walk)
    if zero_lots:
        lots = 0
    if stale:  # the agent's recorded queue position is behind more than is queued at its level
        q = dict(q, agent_ahead=q["agent_ahead"] + 7)
    side, lots, walk = _side(**q), jnp.int32(lots), jnp.asarray(walk)
    full = _sweep(side, lots, walk)
    _assert_same(full, _sweep(side, lots, walk, book.total_volume(side)))  # the caller's totals change nothing
    moves = bool(_moves(side, lots, walk))
    assert moves == bool(_moves(side, lots, walk, book.total_volume(side)))
    if not moves:
        _assert_same(full, _no_fill(side))
    else:  # it says yes only when something changes
        assert int(full.lots) > 0 or int(full.agent_ahead) != int(side.agent_ahead)


_crossed = jax.jit(liquidation.any_crossed, static_argnums=(2,))


@SETTINGS
@given(c=ladders(), near=st.booleans())
def test_take_over_skipped_only_when_it_changes_nothing(c, near):
    """any_crossed is False exactly when take_over_crossed takes nothing and changes nothing."""
    if near:  # the mark just inside the frontier: the boundary case
        c = dict(c, level=float(c["frontier"][0]) - 1.5 + (0.9 if c["level"] > c["frontier"][0] else 0.1))
    lad, eng = _ladder(c)
    new_lad, new_eng, taken, taken_bv = _run_take(lad, eng, c["level"])
    changed = not all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in
                      zip(jax.tree.leaves((lad, eng)), jax.tree.leaves((new_lad, new_eng))))
    crossed = bool(_crossed(lad, _mark(c["level"]), W, jnp.float32(P0), LIQ))
    if not crossed:
        assert not changed
        _assert_same((taken, taken_bv), (jnp.zeros(2, jnp.int32), jnp.zeros(2, jnp.float32)))
    else:  # some bucket is taken over (its epoch bumped, even if it was empty)
        assert changed


STEPS = 80
B = 6
SHAPE = MarketShape(n_levels=16, n_accounts=64, n_makers=2, n_rounds=3, n_buckets=1024, bucket_window=8,
                    turnover_slots=4, episode_steps=STEPS)


def _stressed() -> MarketParams:
    """A crash with a tiny fund and 50-100x leverage: liquidation rounds fill in some markets of
    the batch and not in others (see test_core_batching.stressed)."""
    R = dataclasses.replace
    p = MarketParams()
    n = len(p.accounts.leverage_choices)
    return R(p, book=R(p.book, tick_size=0.2),
             flow=R(p.flow, shock_step=10, shock_steps=60, shock_drift_per_step=-0.003, shock_vol_mult=3.0,
                    risk_off_steps=60),
             accounts=R(p.accounts, long_bias=0.85, initial_open_fraction=0.9,
                        leverage_choices=tuple(50.0 if i % 2 else 100.0 for i in range(n)), leverage_weights=(1.0,) * n),
             liquidation=R(p.liquidation, insurance_fund=1000.0))


def _rollout(market: Market, params: MarketParams):
    keys = jax.random.split(jax.random.key(3), B + 1)
    state = jax.vmap(market.init, in_axes=(0, None))(keys[1:], params)
    orders = jax.tree.map(lambda x: jnp.broadcast_to(x, (B,) + jnp.shape(x)), no_orders())

    def body(carry, _):
        state, key = carry
        key, sub = jax.random.split(key)
        state, info = market.step_batch(jax.random.split(sub, B), state, orders, params)
        return (state, key), info

    (state, _), infos = jax.lax.scan(body, (state, keys[0]), None, length=STEPS)
    return state, infos


def test_step_batch_with_skip_equals_always_sweeping(monkeypatch):
    """step_batch (rounds skipped when no market of the batch would fill) against the same step
    with every round swept: every state and info leaf equal, over a crash with liquidations."""
    params = _stressed()
    market = Market(SHAPE)
    skipping = jax.jit(_rollout, static_argnums=0)(market, params)
    monkeypatch.setattr(market_mod, "_unless_idle", lambda busy, axis, work, idle, *ops: work(*ops))
    sweeping = jax.jit(_rollout, static_argnums=0)(Market(SHAPE), params)
    assert float(jnp.sum(sweeping[1]["liquidated_notional"])) > 0  # the cascade ran
    key_data = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x  # noqa: E731
    _assert_same(jax.tree.map(key_data, skipping[0]), jax.tree.map(key_data, sweeping[0]))  # the state: bit for bit
    # Diagnostics computed from that state: integers exact; float sums may differ in the last bit,
    # because XLA:CPU contracts multiply-adds into FMAs per compiled program (these are two programs).
    for name, x in skipping[1].items():
        y = sweeping[1][name]
        if jnp.issubdtype(x.dtype, jnp.floating):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
