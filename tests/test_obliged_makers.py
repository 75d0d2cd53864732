"""Background makers bound by an obligation (crashgym.makers with MarketParams.maker_obligation)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crashgym import makers
from crashgym.obligations import PRESENCE_REFERENCE, load_obligations
from crashgym.params import MakerParams
from crashgym.rollout import run_batch
from crashgym.scenarios import load_scenario

MP = MakerParams()
TICK = 0.05
N = 4


def _quote(mode, inventory, mid, obligation, must, rv=3e-4):
    mode = jnp.full(N, mode, jnp.int32)
    inv = jnp.asarray(inventory, jnp.int32)
    return makers.quotes(mode, inv, jnp.float32(mid / TICK), jnp.float32(rv), jnp.float32(TICK / mid), MP,
                         jnp.asarray(must), obligation, TICK)


@pytest.mark.parametrize("name", ["nyse_dmm", "stub_quote", "mifid", "strict", "strict_exempt"])
@pytest.mark.parametrize("mode", [makers.QUOTING, makers.DEFENCE, makers.WITHDRAWN])
@pytest.mark.parametrize("mid", [100.0, 61.37, 143.2])
def test_bound_maker_posts_compliant_quote_in_any_mode(name, mode, mid):
    ob = load_obligations(name)
    # Inventories from short beyond the limit to long beyond it: the skew must not break the rule.
    inventory = [-4000, -1500, 900, 3500]
    for rv in (3e-4, 3e-3):  # calm, and a vol that widens the makers' own spread a lot
        q = _quote(mode, inventory, mid, ob, [True] * N, rv)
        ok = makers.meets_obligation(*q, jnp.float32(mid), TICK, ob)
        assert bool(jnp.all(ok)), (name, mode, mid, rv, [np.asarray(x) for x in q])


def test_free_makers_unchanged_and_withdraw():
    ob = load_obligations("strict")
    inv = [0, 100, -100, 0]
    free = _quote(makers.WITHDRAWN, inv, 100.0, ob, [False] * N)
    assert np.all(np.asarray(free[1]) == 0) and np.all(np.asarray(free[3]) == 0)  # withdrawn: no size
    base = makers.quotes(jnp.zeros(N, jnp.int32), jnp.asarray(inv, jnp.int32), jnp.float32(100 / TICK),
                         jnp.float32(3e-4), jnp.float32(TICK / 100), MP)
    same = _quote(makers.QUOTING, inv, 100.0, ob, [False] * N)
    for a, b in zip(base, same):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_cheapest_quote_raises_size_and_caps_spread():
    ob = load_obligations("strict")  # 30 bps, 10000 USD a side
    bt, bs, at, as_ = _quote(makers.WITHDRAWN, [0] * N, 100.0, ob, [True] * N)
    # Defence spread would be ~9 ticks (45 bps); the cap brings it within 30 bps = 6 ticks.
    assert np.all((np.asarray(at) - np.asarray(bt)) * TICK / 100 * 1e4 <= 30.0 + 1e-3)
    lots = np.asarray(bs)
    assert np.all(lots * np.asarray(bt) * TICK >= 10000.0) and np.all(lots <= 10000 / 99 + 2)  # no more than needed
    assert np.array_equal(np.asarray(bs), np.asarray(as_))


def test_obligation_status_binding_exemption_bankruptcy():
    ob = load_obligations("strict_exempt")  # exempt: vol > 0.002, halt, |move| > 5%
    no = jnp.zeros(N, bool)
    must, ex = makers.obligation_status(no, 3e-4, False, 0.0, MP, ob)
    assert np.asarray(must).all() and not bool(ex)
    for rv, halted, move in [(0.0021, False, 0.0), (3e-4, True, 0.0), (3e-4, False, -0.051)]:
        must, ex = makers.obligation_status(no, rv, halted, move, MP, ob)
        assert bool(ex) and not np.asarray(must).any()
    must, _ = makers.obligation_status(jnp.array([True, False, False, True]), 3e-4, False, 0.0, MP, ob)
    assert np.asarray(must).tolist() == [False, True, True, False]
    must, _ = makers.obligation_status(no, 3e-4, False, 0.0, MP.replace(obliged_fraction=0.5), ob)
    assert np.asarray(must).tolist() == [True, True, False, False]  # the first (most nervous) half
    must, _ = makers.obligation_status(no, 3e-4, False, 0.0, MP, load_obligations("none"))
    assert not np.asarray(must).any()


def test_meets_obligation_uses_strict_reference_when_none():
    assert PRESENCE_REFERENCE.max_spread_bps == load_obligations("strict").max_spread_bps
    assert PRESENCE_REFERENCE.min_size_notional == load_obligations("strict").min_size_notional
    bid, ask = jnp.array([1998] * N), jnp.array([2002] * N)  # 20 bps around 100
    small, big = jnp.full(N, 60), jnp.full(N, 120)  # 6000 / 12000 USD a side
    none = load_obligations("none")
    assert not bool(jnp.any(makers.meets_obligation(bid, small, ask, small, 100.0, TICK, none)))
    assert bool(jnp.all(makers.meets_obligation(bid, big, ask, big, 100.0, TICK, none)))
    assert bool(jnp.all(makers.meets_obligation(bid, small, ask, small, 100.0, TICK, load_obligations("mifid"))))


# --------------------------------------------------------------------------- in the market


SEEDS = 3


@pytest.fixture(scope="module")
def crash_runs():
    """oct10 through the shock into the makers' withdrawal, several binding rules in one batch."""
    sc = load_scenario("oct10")
    shape = dataclasses.replace(sc.shape, episode_steps=540)
    sets = {
        "none": load_obligations("none"),
        "strict": load_obligations("strict"),
        "strict_exempt": load_obligations("strict_exempt"),
        "mifid": load_obligations("mifid"),
        "strict_half": load_obligations("strict"),
    }
    members = [sc.params.replace(maker_obligation=ob) for ob in sets.values()]
    members[-1] = members[-1].replace(makers=members[-1].makers.replace(obliged_fraction=0.5))
    stacked = jax.tree.map(lambda *x: jnp.repeat(jnp.stack([jnp.asarray(v) for v in x]), SEEDS, axis=0), *members)
    info, _ = run_batch(shape, stacked, len(members) * SEEDS, params_axis=0,
                        seed_ids=np.tile(np.arange(SEEDS), len(members)), chunk=180)
    return {name: {k: v[:, i * SEEDS:(i + 1) * SEEDS] for k, v in info.items()} for i, name in enumerate(sets)}


def test_obliged_makers_keep_presence_outside_exemptions_unless_bankrupt(crash_runs):
    for name, bound, target in [("strict", N, 0.95), ("strict_exempt", N, 0.95), ("mifid", N, 0.5),
                                ("strict_half", N // 2, 0.95)]:
        info = crash_runs[name]
        # Makers bankrupt before this step are released; bankruptcy is recorded at the step's end.
        bankrupt_before = np.vstack([np.zeros_like(info["mm_bankrupt"][:1]), info["mm_bankrupt"][:-1]])
        owed = np.maximum(bound - bankrupt_before, 0)
        # Quotes are judged at the mid they were made around (the previous step's). With a fixed
        # tick a bps spread cap cannot be met once one tick is wider than it (strict's 30 bps at
        # tick 0.05 below ~16.7 USD): those steps are not the makers' failure and are left out.
        mid = np.vstack([np.full_like(info["mid_price"][:1], 100.0), info["mid_price"][:-1]])
        cap = {"strict": 30.0, "strict_exempt": 30.0, "mifid": 50.0, "strict_half": 30.0}[name]
        feasible = TICK / mid * 1e4 <= cap
        counted = ~info["mm_exempt"].astype(bool) & feasible
        assert counted.sum() >= 100  # not vacuous
        presence = np.minimum(info["mm_compliant"], owed)[counted].sum() / max(owed[counted].sum(), 1)
        assert presence >= target, (name, presence)


def test_binding_changes_the_market(crash_runs):
    none, strict = crash_runs["none"], crash_runs["strict"]
    # Free makers pull their quotes in the crash; bound ones do not: the market itself differs.
    assert none["mm_withdrawn"].max() > 0
    assert strict["mm_compliant"].mean() > none["mm_compliant"].mean()
    assert not np.array_equal(none["mark_price"], strict["mark_price"])
    # The exemption switches on in the crash and then makers may leave (exempt steps exist).
    assert crash_runs["strict_exempt"]["mm_exempt"].any()
    assert not crash_runs["strict"]["mm_exempt"].any()
