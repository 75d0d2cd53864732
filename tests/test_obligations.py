"""Tests for crashgym.obligations: rule files, per-step costs, exemptions, presence, batching."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crashgym.config import ConfigError, available
from crashgym.obligations import (
    COMPONENTS,
    PAYMENT_MODES,
    ObligationParams,
    compliant_quote,
    init_obligation_state,
    is_exempt,
    load_obligations,
    maker_must_quote,
    obligation_step,
    payment_reward,
    quote_checks,
)

BUILTIN = ("none", "nyse_dmm", "stub_quote", "mifid", "mifid_penalty", "mifid_rebate", "strict", "strict_exempt")
I = {c: i for i, c in enumerate(COMPONENTS)}

step = jax.jit(obligation_step)

# A quote 20 bps wide around 100 with 20000 USD a side: compliant under every built-in rule.
GOOD = dict(bid_price=99.9, bid_notional=20000.0, ask_price=100.1, ask_notional=20000.0, mid=100.0)
WITHDRAWN = dict(bid_price=math.nan, bid_notional=0.0, ask_price=math.nan, ask_notional=0.0, mid=100.0)
CALM = dict(realized_vol=3e-4, halted=False, recent_move=0.0)


def run(params, quotes, markets=None, state=None):
    """Step through a list of quotes; return stacked outputs."""
    state = init_obligation_state() if state is None else state
    markets = markets or [CALM] * len(quotes)
    out = []
    for q, m in zip(quotes, markets):
        state, costs, compliant, exempt, presence, left = step(state, params, **q, **m)
        out.append((np.asarray(costs), bool(compliant), bool(exempt), float(presence), float(left)))
    return state, out


# --------------------------------------------------------------------------- files


def test_builtin_files_present_and_load():
    assert set(BUILTIN) <= set(available("obligations"))
    for name in available("obligations"):
        p = load_obligations(name)
        assert isinstance(p, ObligationParams)
    assert load_obligations("none").active == 0
    assert load_obligations("mifid").exempt_vol == 0 and load_obligations("mifid").exempt_halt == 0
    assert load_obligations("mifid_penalty").payment == PAYMENT_MODES["penalty"]
    r = load_obligations("mifid_rebate")
    assert r.payment == PAYMENT_MODES["rebate"] and r.rebate_bps == 0.5
    s, se = load_obligations("strict"), load_obligations("strict_exempt")
    assert (s.exempt_vol, s.exempt_halt, s.exempt_move) == (0.0, 0, 0.0)
    assert (se.exempt_vol, se.exempt_halt, se.exempt_move) == (0.002, 1, 0.05)
    assert se.replace(exempt_vol=0.0, exempt_halt=0, exempt_move=0.0) == s


def test_load_by_path(tmp_path: Path):
    f = tmp_path / "x.toml"
    f.write_text('schema_version = 1\ndescription = "x"\n[obligation]\nactive = 1\npresence_target = 0.3\n')
    p = load_obligations(str(f))
    assert p.active == 1 and p.presence_target == 0.3 and p.window_steps == 360


BAD = [
    ('[obligation]\nactive = 1\nmax_sprad_bps = 3.0\n', "obligation.max_sprad_bps"),
    ('[obligation]\nwindow_steps = 10.5\n', "obligation.window_steps"),
    ('[obligation]\nmax_spread_bps = "wide"\n', "obligation.max_spread_bps"),
    ('[obligation]\nexempt_halt = true\n', "obligation.exempt_halt"),
    ('[obligation]\npresence_target = 1.5\n', "obligation.presence_target"),
    ('[obligation]\nwindow_steps = 0\n', "obligation.window_steps"),
    ('[obligation]\nmin_size_notional = -1.0\n', "obligation.min_size_notional"),
    ('[obligation]\nactive = 2\n', "obligation.active"),
    ('[obligation]\npayment = "bribe"\n', "obligation.payment"),
    ('[obligation]\npayment = 1\n', "obligation.payment"),
    ('[obligation]\nrebate_bps = -0.5\n', "obligation.rebate_bps"),
    ('[obligation]\n[extra]\n', "extra"),
    ('obligation = 3\n', "obligation"),
]


@pytest.mark.parametrize("body,key", BAD)
def test_bad_file_names_file_and_key(tmp_path: Path, body: str, key: str):
    f = tmp_path / "bad.toml"
    f.write_text("schema_version = 1\n" + body)
    with pytest.raises(ConfigError) as e:
        load_obligations(str(f))
    assert str(f) in str(e.value) and f"'{key}'" in str(e.value)


def test_bad_schema_and_unknown_name(tmp_path: Path):
    f = tmp_path / "old.toml"
    f.write_text("schema_version = 2\n[obligation]\n")
    with pytest.raises(ConfigError, match="schema_version"):
        load_obligations(str(f))
    with pytest.raises(ConfigError, match="no_such_rule"):
        load_obligations("no_such_rule")


# --------------------------------------------------------------------------- costs


def test_strict_withdrawn_costs_every_step_compliant_costs_nothing():
    p = load_obligations("strict")
    _, out = run(p, [WITHDRAWN] * 5)
    for costs, compliant, exempt, presence, _ in out:
        assert not compliant and not exempt and presence == 0.0
        assert costs[I["spread"]] == 1 and costs[I["size"]] == 1 and costs[I["distance"]] == 0
        assert costs[I["presence"]] == pytest.approx(0.95)
    _, out = run(p, [GOOD] * 5)
    for costs, compliant, *_ in out:
        assert compliant and not costs.any()


def test_one_sided_and_thin_quotes_fail():
    p = load_obligations("strict")
    one_sided = dict(GOOD, ask_price=math.nan)
    no_ask_size = dict(GOOD, ask_notional=0.0)
    thin = dict(GOOD, bid_notional=5000.0)
    wide = dict(GOOD, bid_price=99.8, ask_price=100.2)  # 40 bps
    for q, failing in [(one_sided, {"spread", "size"}), (no_ask_size, {"spread", "size"}),
                       (thin, {"size"}), (wide, {"spread"})]:
        _, [(costs, compliant, *_)] = run(p, [q])
        assert not compliant
        assert {c for c in ("spread", "size", "distance") if costs[I[c]] > 0} == failing


def test_limits_are_inclusive_and_disabled_rules_ok():
    p = ObligationParams(active=1, max_spread_bps=20.0, min_size_notional=20000.0, max_distance_bps=10.0)
    ok = {k: bool(v) for k, v in quote_checks(p, **GOOD).items()}
    assert ok == {"spread": True, "size": True, "distance": True, "two_sided": True}
    off = ObligationParams(active=1)
    ok = {k: bool(v) for k, v in quote_checks(off, **WITHDRAWN).items()}
    assert ok == {"spread": True, "size": True, "distance": True, "two_sided": False}


@pytest.mark.parametrize("tick", [0.05, 0.005, 0.1, 1.0])
@pytest.mark.parametrize("mid_ticks", [2000, 1999, 1265, 20000, 140000])
def test_a_quote_of_whole_ticks_at_the_cap_passes_and_one_tick_more_fails(tick, mid_ticks):
    """Prices as the engine makes them (float32 tick x integer ticks): the widest spread of
    whole ticks within the cap passes, one tick wider fails. (strict at 100 with a 0.05 tick:
    6 ticks are exactly 30 bps, which float32 cancellation in ask - bid used to fail.)"""
    cap_bps = 30.0
    p = ObligationParams(active=1, max_spread_bps=cap_bps, min_size_notional=1.0, max_distance_bps=cap_bps / 2)
    t = np.float32(tick)
    mid = np.float32(mid_ticks) * t
    n = math.floor(cap_bps * 1e-4 * mid_ticks + 1e-9)  # widest whole-tick spread within the cap
    if n < 2:
        pytest.skip("the tick is wider than half the cap here")
    for width, ok in ((n, True), (n + 1, False)):
        lo = mid_ticks - width // 2
        bid, ask = np.float32(lo) * t, np.float32(lo + width) * t
        got = quote_checks(p, bid_price=bid, bid_notional=np.float32(10.0), ask_price=ask,
                           ask_notional=np.float32(10.0), mid=mid)
        assert bool(got["spread"]) is ok, (tick, mid_ticks, width)
    d = math.floor(cap_bps / 2 * 1e-4 * mid_ticks + 1e-9)  # farthest whole-tick distance within its cap
    for away, ok in ((d, True), (d + 1, False)):
        got = quote_checks(p, bid_price=np.float32(mid_ticks - away) * t, bid_notional=np.float32(10.0),
                           ask_price=np.float32(mid_ticks + 1) * t, ask_notional=np.float32(10.0), mid=mid)
        assert bool(got["distance"]) is ok, (tick, mid_ticks, away)


def test_stub_quote_distance():
    p = load_obligations("stub_quote")
    near = dict(bid_price=93.0, bid_notional=100.0, ask_price=107.0, ask_notional=100.0, mid=100.0)
    stub = dict(near, bid_price=0.01)
    _, out = run(p, [near, stub])
    assert out[0][1] and not out[0][0].any()
    assert not out[1][1] and out[1][0][I["distance"]] == 1 and out[1][0][I["spread"]] == 0


def test_none_costs_zero():
    p = load_obligations("none")
    markets = [CALM, dict(realized_vol=0.05, halted=True, recent_move=-0.3)] * 3
    _, out = run(p, [WITHDRAWN, GOOD, dict(GOOD, bid_price=1.0)] * 2, markets)
    assert all(not costs.any() for costs, *_ in out)
    assert not bool(maker_must_quote(p, False))


# --------------------------------------------------------------------------- exemptions


VOL, MOVE = 0.002, 0.05


@settings(max_examples=60, deadline=None)
@given(
    vol=st.one_of(st.floats(0.0, 0.01), st.sampled_from([VOL, np.nextafter(np.float32(VOL), np.float32(1)).item()])),
    move=st.one_of(st.floats(-0.2, 0.2), st.sampled_from([MOVE, -MOVE, 0.0500001, -0.0500001, 0.0499999])),
    halted=st.booleans(),
)
def test_exemptions_switch_costs_off_exactly_when_condition_holds(vol, move, halted):
    se, s = load_obligations("strict_exempt"), load_obligations("strict")
    market = dict(realized_vol=vol, halted=halted, recent_move=move)
    # The condition as float32 comparisons (the model computes in float32), strict inequalities.
    expect = bool(np.float32(vol) > np.float32(VOL)) or halted or bool(abs(np.float32(move)) > np.float32(MOVE))
    assert bool(is_exempt(se, **market)) == expect
    state, [(costs, compliant, exempt, _, _)] = run(se, [WITHDRAWN], [market])
    assert exempt == expect and not compliant
    if expect:
        assert not costs.any()
        assert int(state.exempt_in_window) == 1 and int(state.compliant_in_window) == 0
    else:
        assert costs[I["spread"]] == 1 and costs[I["size"]] == 1 and costs[I["presence"]] > 0
    assert bool(maker_must_quote(se, exempt)) == (not expect)
    # Without exemptions the same market never exempts.
    _, [(costs_s, _, exempt_s, _, _)] = run(s, [WITHDRAWN], [market])
    assert not exempt_s and costs_s[I["spread"]] == 1


def test_each_exemption_alone():
    base = ObligationParams(active=1, presence_target=0.5)
    assert not bool(is_exempt(base, 1.0, True, 1.0))  # all off
    assert bool(is_exempt(base.replace(exempt_vol=0.01), 0.02, False, 0.0))
    assert not bool(is_exempt(base.replace(exempt_vol=0.01), 0.01, False, 0.0))
    assert bool(is_exempt(base.replace(exempt_halt=1), 0.0, True, 0.0))
    assert not bool(is_exempt(base.replace(exempt_halt=1), 0.0, False, 0.0))
    assert bool(is_exempt(base.replace(exempt_move=0.1), 0.0, False, -0.2))


# --------------------------------------------------------------------------- presence


def test_presence_accounting_over_window():
    p = ObligationParams(active=1, presence_target=0.5, window_steps=4, min_size_notional=1000.0)
    quotes = [GOOD, WITHDRAWN, WITHDRAWN, WITHDRAWN, WITHDRAWN, GOOD, GOOD, WITHDRAWN]
    markets = [CALM] * 8
    state, out = run(p, quotes, markets)
    presence = [o[3] for o in out]
    assert presence == pytest.approx([1.0, 0.5, 1 / 3, 0.25, 0.0, 0.5, 2 / 3, 0.5])
    pcost = [o[0][I["presence"]] for o in out]
    assert pcost == pytest.approx([0, 0, 0.5 - 1 / 3, 0.25, 0.5, 0, 0, 0])
    assert [o[4] for o in out] == pytest.approx([0.75, 0.5, 0.25, 0.0] * 2)
    assert (int(state.steps_in_window), int(state.compliant_in_window), int(state.exempt_in_window)) == (4, 2, 0)


def test_exempt_steps_leave_presence_denominator():
    p = ObligationParams(active=1, presence_target=0.9, window_steps=10, exempt_halt=1)
    halted = dict(CALM, halted=True)
    state, out = run(p, [GOOD, WITHDRAWN, WITHDRAWN, GOOD], [CALM, halted, halted, CALM])
    assert [o[3] for o in out] == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert not any(o[0].any() for o in out)
    assert (int(state.steps_in_window), int(state.compliant_in_window), int(state.exempt_in_window)) == (4, 2, 2)
    # Only exempt steps so far: presence is vacuously 1.
    _, out = run(p, [WITHDRAWN], [halted])
    assert out[0][3] == 1.0


def test_under_scan():
    p = load_obligations("mifid")
    n = 20

    def body(state, i):
        q = jnp.where(i % 3 == 0, jnp.nan, 99.9), jnp.float32(20000.0), jnp.where(i % 3 == 0, jnp.nan, 100.1)
        state, costs, compliant, *_ = obligation_step(state, p, q[0], q[1], q[2], q[1], 100.0, 3e-4, False, 0.0)
        return state, (costs, compliant)

    state, (costs, compliant) = jax.jit(lambda: jax.lax.scan(body, init_obligation_state(), jnp.arange(n)))()
    assert costs.shape == (n, len(COMPONENTS)) and costs.dtype == jnp.float32
    assert int(state.compliant_in_window) == int(compliant.sum()) == n - 7


# --------------------------------------------------------------------------- batching


def test_vmap_over_mixed_rule_sets_equals_members():
    members = [load_obligations(n) for n in BUILTIN]
    batch = jax.tree.map(lambda *x: jnp.stack(x), *members)
    k = len(members)
    rng = np.random.default_rng(0)
    state = jax.tree.map(lambda x: jnp.broadcast_to(x, (k,)), init_obligation_state())
    single = [init_obligation_state() for _ in members]
    vstep = jax.jit(jax.vmap(obligation_step))
    for t in range(12):
        withdraw = rng.random(k) < 0.4
        bid = np.where(withdraw, np.nan, 100 - rng.uniform(0.05, 0.5, k)).astype(np.float32)
        ask = np.where(withdraw, np.nan, 100 + rng.uniform(0.05, 0.5, k)).astype(np.float32)
        bn = np.where(withdraw, 0.0, rng.uniform(0, 30000, k)).astype(np.float32)
        an = np.where(withdraw, 0.0, rng.uniform(0, 30000, k)).astype(np.float32)
        mid = np.full(k, 100.0, np.float32)
        vol = rng.uniform(0, 0.004, k).astype(np.float32)
        halted = rng.random(k) < 0.2
        move = rng.uniform(-0.1, 0.1, k).astype(np.float32)
        state, *outs = vstep(state, batch, bid, bn, ask, an, mid, vol, halted, move)
        for j, m in enumerate(members):
            single[j], *one = step(single[j], m, bid[j], bn[j], ask[j], an[j], mid[j], vol[j], halted[j], move[j])
            for a, b in zip(outs, one):
                np.testing.assert_array_equal(np.asarray(a)[j], np.asarray(b))
            for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(single[j])):
                assert int(np.asarray(a)[j]) == int(b)


# --------------------------------------------------------------------------- makers, payment


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("mid", [100.0, 78.0, 140.0])
def test_compliant_quote_complies_after_tick_rounding(name, mid):
    p = load_obligations(name)
    tick = 0.1
    h, size = compliant_quote(p, mid, tick, 1.5, 60.0)
    h, size = float(h), float(size)
    assert h <= 1.5 + 1e-6 and size >= 60.0
    for offset in np.linspace(0, 1, 11):  # mid anywhere between two ticks
        m = mid + offset * tick
        mt = m / tick
        bid_t = math.floor(mt - h + 0.5)
        ask_t = max(math.ceil(mt + h - 0.5), bid_t + 1)
        lots = math.floor(size)
        q = dict(bid_price=bid_t * tick, bid_notional=lots * bid_t * tick,
                 ask_price=ask_t * tick, ask_notional=lots * ask_t * tick, mid=m)
        ok = quote_checks(p, **q)
        assert all(bool(ok[c]) for c in ("spread", "size", "distance", "two_sided")), (name, m, h, size, q)


def test_compliant_quote_is_cheapest_and_base_when_off():
    p = load_obligations("strict")
    h, size = compliant_quote(p, 100.0, 0.1, 5.0, 1.0)
    assert float(h) == pytest.approx(1.0, abs=1e-5)  # (30 bps * 0.1 ticks/bp - 1) / 2
    assert float(size) == math.ceil(10000 / (100 - 1.5 * 0.1))
    h, size = compliant_quote(load_obligations("none"), 100.0, 0.1, 5.0, 1.0)
    assert (float(h), float(size)) == (5.0, 1.0)


def test_maker_must_quote():
    assert bool(maker_must_quote(load_obligations("mifid"), False))
    assert not bool(maker_must_quote(load_obligations("strict_exempt"), True))
    assert not bool(maker_must_quote(ObligationParams(active=1, max_spread_bps=10.0), False))


def test_payment_reward():
    costs = jnp.array([1.0, 0.0, 0.5, 0.0])
    assert float(payment_reward(load_obligations("mifid"), costs, False, 1e4)) == 0.0
    assert float(payment_reward(load_obligations("mifid_penalty").replace(penalty_scale=2.0), costs, False, 1e4)) == -3.0
    r = load_obligations("mifid_rebate")
    assert float(payment_reward(r, costs, True, 1e4)) == pytest.approx(0.5)
    assert float(payment_reward(r, costs, False, 1e4)) == 0.0


# --------------------------------------------------------------------------- presence reference, caps


def test_presence_reference_is_strict_and_presence_rule_picks_it():
    from crashgym.obligations import PRESENCE_REFERENCE, presence_rule

    strict = load_obligations("strict")
    assert (PRESENCE_REFERENCE.max_spread_bps, PRESENCE_REFERENCE.min_size_notional) == (
        strict.max_spread_bps, strict.min_size_notional)
    mifid, none = load_obligations("mifid"), load_obligations("none")
    assert float(presence_rule(mifid).max_spread_bps) == mifid.max_spread_bps
    assert float(presence_rule(none).max_spread_bps) == strict.max_spread_bps
    # Works on batched params (one entry per batch member).
    batch = jax.tree.map(lambda *x: jnp.stack([jnp.asarray(v) for v in x]), mifid, none)
    np.testing.assert_allclose(np.asarray(presence_rule(batch).min_size_notional), [2000.0, 10000.0])


def test_quote_caps():
    from crashgym.obligations import quote_caps

    spread_cap, dist_cap = quote_caps(load_obligations("strict"), 100.0, 0.1)
    assert float(spread_cap) == pytest.approx(1.0) and math.isinf(float(dist_cap))
    spread_cap, dist_cap = quote_caps(load_obligations("stub_quote"), 100.0, 0.1)
    assert math.isinf(float(spread_cap)) and float(dist_cap) == pytest.approx(80.0 - 0.5)


@pytest.mark.parametrize("name", ["strict", "strict_exempt", "none"])
def test_withdrawn_agent_pays_on_every_non_exempt_step_compliant_pays_none(name):
    """Over a sequence of market conditions (calm, volatile, halted, big move): a withdrawn quote
    costs > 0 exactly on the steps the rule is active and not exempt; a compliant one never."""
    p = load_obligations(name)
    markets = [CALM, dict(CALM, realized_vol=0.003), dict(CALM, halted=True), dict(CALM, recent_move=-0.08),
               CALM, dict(CALM, realized_vol=0.0019)] * 3
    _, withdrawn = run(p, [WITHDRAWN] * len(markets), markets)
    _, good = run(p, [GOOD] * len(markets), markets)
    for m, (costs, compliant, exempt, *_), (gcosts, gcompliant, *_) in zip(markets, withdrawn, good):
        should_exempt = bool(is_exempt(p, m["realized_vol"], m["halted"], m["recent_move"]))
        assert exempt == should_exempt
        assert (costs.sum() > 0) == (p.active == 1 and not should_exempt)
        assert gcompliant and gcosts.sum() == 0.0
