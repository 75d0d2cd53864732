"""Determinism and batching of Market.step: same key same result, vmap == one by one,
step_batch == vmap(step) (also with params batched), and one compile per shape."""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crashgym.market import Market, no_orders
from crashgym.params import MarketParams
from crashgym.types import MarketShape

R = dataclasses.replace

STEPS = 120
B = 4
# Two liquidation rounds (not four) halve the compile time of the four programs below;
# batching does not depend on the cascade depth.
SHAPE = MarketShape(n_levels=16, n_accounts=64, n_makers=2, n_rounds=2, n_buckets=1024, bucket_window=8,
                    turnover_slots=4, episode_steps=STEPS)
MARKET = Market(SHAPE)


def stressed(adl_rule: int = 0, long_bias: float = 0.85, insurance_fund: float = 1000.0,
             adl_background: int = 1) -> MarketParams:
    """A crash with a tiny fund on a coarse tick with 50-100x leverage: ADL runs in most
    episodes, at different steps (see test_core_invariants.make_params)."""
    p = MarketParams()
    n = len(p.accounts.leverage_choices)
    return R(p, book=R(p.book, tick_size=0.2),
             flow=R(p.flow, shock_step=20, shock_steps=100, shock_drift_per_step=-0.002, shock_vol_mult=3.0,
                    risk_off_steps=100),
             accounts=R(p.accounts, long_bias=float(long_bias), initial_open_fraction=0.9,
                        leverage_choices=tuple(50.0 if i % 2 else 100.0 for i in range(n)), leverage_weights=(1.0,) * n),
             liquidation=R(p.liquidation, insurance_fund=float(insurance_fund), adl_rule=int(adl_rule),
                           adl_background=int(adl_background)))


def stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def member(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _summary(info):
    return {k: info[k] for k in ("mark_price", "insurance_fund", "liquidated_notional", "adl_notional", "adl_count",
                                 "taker_volume_lots", "engine_queue_lots")}


def stressed_states(p: MarketParams, keys, before_adl: bool = False):
    """Every state of a STEPS-step run of len(keys) markets, flattened over steps and markets:
    after each step, or (before_adl) just before its stage 8, ADL."""

    @jax.jit
    def states(keys):
        s0 = jax.vmap(MARKET.init, in_axes=(0, None))(keys, p)
        orders = jax.vmap(lambda _: no_orders())(jnp.arange(keys.shape[0]))

        def body(s, k):
            ks = jax.random.split(k, keys.shape[0])
            pre = jax.vmap(MARKET.trade, in_axes=(0, 0, 0, None))(ks, s, orders, p)[0] if before_adl else None
            s, _ = MARKET.step_batch(ks, s, orders, p)
            return s, (pre if before_adl else s)
        return jax.lax.scan(body, s0, jax.random.split(keys[0], STEPS))[1]

    return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), states(keys))


# One compiled program per (function, shape) for the whole module.
TRACES = {"single": 0, "vmap": 0, "batch": 0, "batch_p": 0}


@jax.jit
@chex.assert_max_traces(n=1)
def roll_single(key, params):
    TRACES["single"] += 1
    k0, k1 = jax.random.split(key)
    s0 = MARKET.init(k0, params)

    def body(s, k):
        s, info = MARKET.step(k, s, no_orders(), params)
        return s, _summary(info)

    return jax.lax.scan(body, s0, jax.random.split(k1, STEPS))


def _batched_roll(step):
    def roll(keys, params, params_axis):
        k = jax.vmap(jax.random.split)(keys)  # (B, 2)
        s0 = jax.vmap(MARKET.init, in_axes=(0, params_axis))(k[:, 0], params)
        run_keys = jnp.swapaxes(jax.vmap(lambda kk: jax.random.split(kk, STEPS))(k[:, 1]), 0, 1)  # (STEPS, B)
        orders = jax.vmap(lambda _: no_orders())(jnp.arange(keys.shape[0]))

        def body(s, kk):
            s, info = step(kk, s, orders, params, params_axis)
            return s, _summary(info)

        return jax.lax.scan(body, s0, run_keys)
    return roll


@jax.jit
def roll_vmap(keys, params):
    TRACES["vmap"] += 1
    step = lambda k, s, o, p, ax: jax.vmap(MARKET.step, in_axes=(0, 0, 0, ax))(k, s, o, p)  # noqa: E731
    return _batched_roll(step)(keys, params, None)


@jax.jit
def roll_batch(keys, params):
    TRACES["batch"] += 1
    return _batched_roll(MARKET.step_batch)(keys, params, None)


@jax.jit
def roll_batch_p(keys, params):
    TRACES["batch_p"] += 1
    return _batched_roll(MARKET.step_batch)(keys, params, 0)


def assert_trees_equal(a, b, *, exact_floats: bool = False, where: str = "", rtol: float = 1e-5):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for (path, x), y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        name = where + jax.tree_util.keystr(path)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        if exact_floats or not np.issubdtype(x.dtype, np.floating):
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-3, equal_nan=True, err_msg=name)


KEYS = jax.random.split(jax.random.key(7), B)


@pytest.fixture(scope="module")
def singles():
    """Each member of the batch stepped alone (shared stressed params)."""
    p = stressed()
    return [roll_single(KEYS[i], p) for i in range(B)]


@pytest.fixture(scope="module")
def vmapped():
    return roll_vmap(KEYS, stressed())


def test_same_key_same_result_bitwise():
    p = stressed()
    a = roll_single(jax.random.key(3), p)
    b = roll_single(jax.random.key(3), p)
    assert_trees_equal(a, b, exact_floats=True)
    # A different key gives a different episode.
    c = roll_single(jax.random.key(4), p)
    assert not np.array_equal(np.asarray(a[1]["mark_price"]), np.asarray(c[1]["mark_price"]))


def test_vmap_step_equals_each_env_alone(singles, vmapped):
    state, info = vmapped
    for i, (s_i, info_i) in enumerate(singles):
        assert_trees_equal(member(state, i), s_i, where=f"member {i} state")
        assert_trees_equal(jax.tree.map(lambda x: x[:, i], info), info_i,
                           where=f"member {i} info")


def test_step_batch_equals_vmap_step(vmapped):
    """The batch-level lax.cond around ADL changes nothing, including steps where ADL runs
    in some members and not in others."""
    state_b, info_b = roll_batch(KEYS, stressed())
    state_v, info_v = vmapped
    adl = np.asarray(info_v["adl_notional"]) > 0  # (STEPS, B)
    mixed = adl.any(axis=1) & ~adl.all(axis=1)
    assert mixed.any(), "the test config should run ADL in some members and not others at some step"
    assert (~adl.any(axis=1)).any(), "and have steps with no ADL at all (the skip branch)"
    assert_trees_equal(state_b, state_v, where="state")
    assert_trees_equal(info_b, info_v, where="info")


def test_step_batch_deleverages_in_chunks(monkeypatch):
    """`step_batch` runs ADL only on the markets that can close something, gathered in chunks
    (here of 4, from 32 markets: several chunks on some steps, a padded last chunk on others):
    same results as vmap(step), where each market runs its own cond."""
    import crashgym.market as market_mod

    monkeypatch.setattr(market_mod, "_ADL_CHUNK", 4)
    keys = jax.random.split(jax.random.key(11), 32)
    p = stressed()
    state_b, info_b = jax.jit(lambda k: _batched_roll(MARKET.step_batch)(k, p, None))(keys)
    step = lambda k, s, o, pp, ax: jax.vmap(MARKET.step, in_axes=(0, 0, 0, ax))(k, s, o, pp)  # noqa: E731
    state_v, info_v = jax.jit(lambda k: _batched_roll(step)(k, p, None))(keys)
    running = (np.asarray(info_v["adl_notional"]) > 0).sum(axis=1)  # markets deleveraged per step
    assert (running % 4 != 0).any(), "steps with a padded chunk"
    assert (running > 8).any(), "steps with three chunks or more"
    assert (running == 0).any(), "steps with none"
    # Integers (positions, lots, queues) exactly; floats to float32 summation order, since
    # the ADL stage's reductions are compiled for another batch shape (measured: 1.3e-5 of
    # one market's insurance fund after 120 steps).
    assert_trees_equal(state_b, state_v, where="state", rtol=1e-4)
    assert_trees_equal(info_b, info_v, where="info", rtol=1e-4)


def test_adl_without_a_profitable_counterparty_closes_nothing():
    """`adl.has_counterparty` may only be False where ADL would change nothing: checked on
    every state of a stressed run whose engine still holds a queue (the steps skip it). The
    background crowd is left out of the pool here: in a crash it is almost always a
    profitable counterparty, so with it too few states would skip."""
    from crashgym import adl

    p = stressed(adl_background=0)
    flat = stressed_states(p, jax.random.split(jax.random.key(3), 8))
    queued = np.asarray(flat.engine.size.sum(axis=1) > 0)
    has = np.asarray(jax.vmap(lambda s: adl.has_counterparty(s, p))(flat))
    after, notional, closed = jax.vmap(lambda s: adl.auto_deleverage(s, p))(flat)
    assert (queued & ~has).sum() >= 20, "states that skip ADL"
    idle = queued & ~has
    assert (np.asarray(closed)[idle] == 0).all()
    for path, x, y in zip(jax.tree_util.tree_leaves_with_path(flat), jax.tree.leaves(flat), jax.tree.leaves(after)):
        np.testing.assert_array_equal(np.asarray(x)[idle], np.asarray(y)[idle], err_msg=jax.tree_util.keystr(path[0]))


def test_step_batch_with_batched_params_equals_each_alone():
    variants = [stressed(adl_rule=0, long_bias=0.85), stressed(adl_rule=1, long_bias=0.7),
                stressed(adl_rule=2, long_bias=0.9, insurance_fund=5000.0), stressed(adl_rule=3, long_bias=0.6)]
    state_b, info_b = roll_batch_p(KEYS, stack(variants))
    assert (np.asarray(info_b["adl_notional"]).sum(axis=0) > 0).sum() >= 2
    for i, p in enumerate(variants):
        s_i, info_i = roll_single(KEYS[i], p)
        assert_trees_equal(member(state_b, i), s_i, where=f"member {i} state")
        assert_trees_equal(jax.tree.map(lambda x: x[:, i], info_b), info_i, where=f"member {i} info")


def test_one_compile_per_shape_across_param_values():
    """Sweeping numeric knobs (including the enumerated ones) never retraces."""
    variants = [stressed(adl_rule=r, long_bias=lb, insurance_fund=f)
                for r, lb, f in [(0, 0.5, 1e3), (1, 0.6, 2e5), (2, 0.7, 3e5), (3, 0.8, 0.0)]]
    p = MarketParams()
    variants.append(R(p, liquidation=R(p.liquidation, mode=1, adl_at_mark=1),
                      rules=R(p.rules, halt_move=0.05, throttle_notional=1e5), book=R(p.book, tick_size=0.1),
                      accounts=R(p.accounts, leverage_choices=tuple(float(x) + 1.0 for x in p.accounts.leverage_choices))))
    before = dict(TRACES)
    for v in variants:
        jax.block_until_ready(roll_single(jax.random.key(0), v))
    for v in variants[:2]:
        jax.block_until_ready(roll_batch(KEYS, v))
    jax.block_until_ready(roll_batch_p(KEYS, stack(variants[:4])))
    jax.block_until_ready(roll_batch_p(KEYS, stack(variants[1:5])))
    for name in TRACES:
        assert TRACES[name] <= 1, f"{name} traced {TRACES[name]} times"
        assert TRACES[name] - before[name] <= (1 if before[name] == 0 else 0), name


def _avals(tree):
    return [(jax.tree_util.keystr(path), x.shape, x.dtype, bool(getattr(x, "weak_type", False)))
            for path, x in jax.tree_util.tree_leaves_with_path(tree)]


def test_step_output_state_has_the_type_of_the_reset_state():
    p = MarketParams()
    s0 = jax.eval_shape(MARKET.init, jax.random.key(0), p)
    s1, _ = jax.eval_shape(MARKET.step, jax.random.key(1), s0, no_orders(), p)
    mismatched = [(a, b) for a, b in zip(_avals(s0), _avals(s1)) if a != b]
    assert not mismatched, mismatched
