"""Heuristic agents: valid orders in both forms, the obliged maker meets its rule cheaply,
trader heuristics trade toward their target; `crashgym run --agent` with them."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crashgym
from agents import evaluate, heuristics
from crashgym import metrics
from crashgym.cli import main
from crashgym.market import Market
from crashgym.obligations import COMPONENTS, load_obligations
from crashgym.rollout import AGENT_COST_KEYS, run_batch, stateful

from env_stepping import assert_same_market, env_trajectory  # tests/env_stepping.py

SHAPE = {"n_accounts": 128, "n_levels": 16, "episode_steps": 24}
B = 8


@pytest.fixture(scope="module")
def market_batch():
    env, params = crashgym.make("MarketMaker-v0", scenario="calm", shape=SHAPE)
    market = Market(env.shape)
    states = jax.jit(jax.vmap(market.init, in_axes=(0, None)))(jax.random.split(jax.random.key(3), B), params.market)
    return states, params.market


@pytest.mark.parametrize("name", ["fixed-spread", "avellaneda-stoikov", "withdraw-on-vol", "obliged", "obliged:strict"])
def test_maker_orders_are_valid(market_batch, name):
    states, mp = market_batch
    policy = stateful(heuristics.market_policy(name))
    memory = jax.vmap(policy.init, in_axes=(0, None))(states, mp)
    orders = jax.vmap(policy.act, in_axes=(0, 0, None))(memory, states, mp)
    for f in ("bid_tick", "bid_size", "ask_tick", "ask_size", "market_lots"):
        assert getattr(orders, f).dtype == jnp.int32 and getattr(orders, f).shape == (B,)
    mid_tick = np.asarray(states.signals.mid) / float(mp.book.tick_size)
    both = (np.asarray(orders.bid_size) > 0) & (np.asarray(orders.ask_size) > 0)
    assert np.all(np.asarray(orders.bid_size) >= 0) and np.all(np.asarray(orders.bid_size) <= mp.agent.max_quote_lots)
    assert np.all(np.asarray(orders.bid_tick)[both] < mid_tick[both])
    assert np.all(np.asarray(orders.ask_tick)[both] > mid_tick[both])
    assert np.all(np.asarray(orders.market_lots) == 0)


def test_obliged_quote_is_the_cheapest_compliant_one(market_batch):
    states, mp = market_batch
    rule = load_obligations("mifid")
    orders = jax.vmap(heuristics.obliged_quote, in_axes=(0, None, None, None))(states, mp, rule, True)
    mid = np.asarray(states.signals.mid)
    tick = float(mp.book.tick_size)
    bid, ask = np.asarray(orders.bid_tick) * tick, np.asarray(orders.ask_tick) * tick
    spread_bps = (ask - bid) / mid * 1e4
    assert np.all(spread_bps <= 50.0) and np.all(spread_bps > 50.0 - 2 * tick / mid * 1e4)  # widest allowed
    lots = np.asarray(orders.bid_size)
    assert np.all(lots * bid >= 2000.0) and np.all((lots - 1) * bid < 2000.0)  # smallest allowed
    # no obligation: nothing requires a quote, so none is shown
    idle = jax.vmap(heuristics.obliged_quote, in_axes=(0, None, None, None))(states, mp, load_obligations("none"), True)
    assert np.all(np.asarray(idle.bid_size) == 0) and np.all(np.asarray(idle.ask_size) == 0)


@pytest.mark.parametrize("name, sign", [("fixed-leverage-long", 1), ("de-risk-on-vol", 1)])
def test_traders_buy_toward_a_long_target(market_batch, name, sign):
    states, mp = market_batch
    orders = jax.vmap(heuristics.market_policy(name), in_axes=(0, None))(states, mp)
    lots = np.asarray(orders.market_lots)
    assert np.all(np.sign(lots) == sign)  # flat at reset, calm vol: buy
    assert np.all(np.asarray(orders.bid_size) == 0) and np.all(np.asarray(orders.ask_size) == 0)


def test_de_risk_cuts_leverage_when_vol_spikes(market_batch):
    states, mp = market_batch
    calm = heuristics.de_risk_on_vol_target(jax.tree_util.tree_map(lambda x: x[0], states), mp)
    stressed = jax.tree_util.tree_map(lambda x: x[0], states)
    stressed_var = jnp.float32((10 * mp.flow.vol_per_step) ** 2)
    stressed = stressed.replace(signals=stressed.signals.replace(realized_var=stressed_var))
    assert float(calm) == pytest.approx(3.0) and float(heuristics.de_risk_on_vol_target(stressed, mp)) == 0.0


def test_unknown_heuristic_is_named():
    with pytest.raises(KeyError, match="unknown agent 'nosuch'"):
        heuristics.market_policy("nosuch")


def test_env_form_places_the_same_quote():
    """orders_to_maker_action inverts MarketMaker.orders for quotes inside the action range."""
    env, params = crashgym.make("MarketMaker-v0", scenario="calm", shape=SHAPE)
    _, state = env.reset(jax.random.key(0), params)
    for name in ("fixed-spread", "avellaneda-stoikov"):
        want = heuristics.market_policy(name)(state.market, params.market)
        action = heuristics.env_policy(name)(state, params)
        got = env.orders(state, action, params)
        for f in ("bid_tick", "bid_size", "ask_tick", "ask_size"):
            assert int(getattr(got, f)) == int(getattr(want, f)), (name, f)


def test_obliged_meets_mifid_in_the_env_at_least_cost():
    env, params = crashgym.make("MarketMaker-v0", scenario="calm", obligations="mifid",
                                shape={**SHAPE, "episode_steps": 60})
    res = evaluate.evaluate(env, params, evaluate.heuristic("obliged"), episodes=4, seed=5, chunk=60)
    assert np.all(res.episode["presence"] >= 0.5)
    assert np.all(res.episode["presence"] <= 0.6)  # quotes only when required
    assert np.all(res.episode["violation_rate/presence"] == 0.0)


def test_run_steps_obliged_as_the_env_does():
    """`crashgym run --agent obliged` reads the env's presence counters (carried beside the
    market), so it quotes on exactly the env form's steps, exempt ones included: same keys,
    same market. The exemption threshold sits inside calm's per-step vol at reset
    (2.3-3.5e-4), so steps drop out of the presence count, which a fixed schedule cannot see."""
    rule = dataclasses.replace(load_obligations("strict_exempt"), exempt_vol=2.8e-4)
    env, params = crashgym.make("MarketMaker-v0", scenario="calm", obligations=rule,
                                shape={**SHAPE, "episode_steps": 40})
    ran, _ = run_batch(env.shape, params.market, 2, policy=heuristics.obliged(rule), seed=4, chunk=40, shard=False)
    stepped, _, last = env_trajectory(env, params, heuristics.obliged_env_action, seed=4, seeds=2, steps=40)
    exempt = np.asarray(last.ob.exempt_in_window)
    assert np.all(exempt > 0) and np.all(exempt < 40)  # the exemption path is exercised
    assert_same_market(ran, stepped)


def test_runs_agent_ledger_is_the_envs_obligation_accounting():
    """agent_presence, cost_per_step and violation_rate in `crashgym run` come from the same
    accounting as MarketMaker-v0's info["costs"] / info["compliant"], step for step, when the
    run's rule in force is the env's rule. fixed-spread's quote fails strict on some steps and
    passes on others, so both branches are compared."""
    rule = load_obligations("strict")
    env, params = crashgym.make("MarketMaker-v0", scenario="calm", obligations=rule,
                                shape={**SHAPE, "episode_steps": 40})
    params = params.replace(market=params.market.replace(maker_obligation=rule))
    ran, _ = run_batch(env.shape, params.market, 2, policy=heuristics.market_policy("fixed-spread"), seed=3, chunk=40,
                       shard=False)
    stepped, own, _ = env_trajectory(env, params, heuristics.env_policy("fixed-spread"), seed=3, seeds=2, steps=40)
    assert_same_market(ran, stepped)
    costs = np.stack([ran[key] for key in AGENT_COST_KEYS], axis=-1)
    np.testing.assert_allclose(costs, own["costs"], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ran["agent_compliant"], own["compliant"])
    assert 0 < own["compliant"].mean() < 1 and costs.sum() > 0

    got = metrics.scenario_metrics(ran, env.shape, params.market)
    np.testing.assert_allclose(got["agent_presence"], own["compliant"].mean(axis=0))
    np.testing.assert_allclose(got["cost_per_step"], own["costs"].sum(-1).mean(axis=0), rtol=1e-6)
    for i, c in enumerate(COMPONENTS):
        np.testing.assert_allclose(got[f"violation_rate/{c}"], (own["costs"][..., i] > 0).mean(axis=0))


def test_an_agent_that_never_quotes_fails_an_active_rule():
    """The idle agent: presence 0 always; no cost with no rule in force; under strict, every
    step fails spread and size (a missing side fails every enabled rule)."""
    env, params = crashgym.make("MarketMaker-v0", scenario="calm", shape={**SHAPE, "episode_steps": 12})
    for name, want in (("none", 0.0), ("strict", 1.0)):
        mp = params.market.replace(maker_obligation=load_obligations(name))
        ran, _ = run_batch(env.shape, mp, 2, seed=1, chunk=12, shard=False)
        got = metrics.scenario_metrics(ran, env.shape, mp)
        assert np.all(got["agent_presence"] == 0.0)
        assert np.all(got["violation_rate/spread"] == want) and np.all(got["violation_rate/size"] == want)
        assert np.all((got["cost_per_step"] > 0) == (want > 0))


def test_trader_heuristics_in_the_env():
    env, params = crashgym.make("LeveragedTrader-v0", scenario="calm", shape=SHAPE)
    res = evaluate.evaluate(env, params, evaluate.heuristic("fixed-leverage-long"), episodes=4, seed=1, chunk=24)
    assert np.all(res.trace["position"][-1] > 0) and np.all(np.isfinite(res.episode["return"]))


def test_run_with_the_obliged_heuristic(tmp_path):
    out = tmp_path / "run.json"
    assert main(["run", "--scenario", "calm", "--seeds", "2", "--steps", "30", "--agent", "obliged",
                 "--json", str(out)]) == 0
    assert np.isfinite(json.loads(out.read_text())["metrics"]["agent_return"]["mean"])
