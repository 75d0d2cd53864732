"""Functional (gymnax-style) environments: crashgym.make, reset/step, vmap, rewards, costs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crashgym
from crashgym import book
from crashgym.envs import EnvParams, LeveragedTrader, MarketMaker
from crashgym.envs.common import book_totals, equity, exit_equity
from crashgym.obligations import COMPONENTS, load_obligations
from crashgym.scenarios import load_scenario

SMALL = {"n_accounts": 128, "episode_steps": 12}
MARKET_KEYS = ("mark_price", "index_price", "best_bid", "best_ask", "depth_2pct", "open_interest_long",
               "open_interest_short", "insurance_fund", "liquidated_notional", "adl_notional", "adl_count",
               "bad_debt", "halted")


@pytest.fixture(scope="module")
def mm():
    env, params = crashgym.make("MarketMaker-v0", scenario="calm", obligations="mifid", shape=SMALL)
    return env, params, jax.jit(env.reset), jax.jit(env.step)


@pytest.fixture(scope="module")
def trader():
    env, params = crashgym.make("LeveragedTrader-v0", scenario="calm", shape=SMALL)
    return env, params, jax.jit(env.reset), jax.jit(env.step)


def test_make_unknown_id_lists_ids():
    with pytest.raises(ValueError, match="MarketMaker-v0.*LeveragedTrader-v0"):
        crashgym.make("Nope-v0")


def test_make_bad_arguments():
    with pytest.raises(ValueError, match="n_acounts"):
        crashgym.make("MarketMaker-v0", shape={"n_acounts": 3})
    with pytest.raises(ValueError, match="max_episode_steps"):
        crashgym.make("MarketMaker-v0", max_episode_steps=0)


def test_make_returns_env_and_params():
    env, params = crashgym.make("crashgym/MarketMaker-v0", scenario="oct10", obligations="mifid", max_episode_steps=7)
    assert isinstance(env, MarketMaker) and isinstance(params, EnvParams)
    assert params.max_steps == 7
    assert params.obligations == load_obligations("mifid")
    assert env.action_space(params).shape == (4,)
    assert env.observation_space(params).shape == (len(MarketMaker.OBS_NAMES),)
    env2, params2 = crashgym.make("LeveragedTrader-v0")
    assert isinstance(env2, LeveragedTrader) and env2.action_space(params2).shape == (1,)
    assert params2.max_steps == env2.shape.episode_steps



def test_make_lays_settings_over_the_scenario():
    """`settings=` takes the commands' --set strings, laid last; shape= still wins for its fields."""
    env, params = crashgym.make("MarketMaker-v0", scenario="calm", settings=[
        "market.flow.cancel_rate=0.02", "shape.n_levels=32", "market.liquidation.adl_rule=pro_rata"],
        market={"flow": {"cancel_rate": 0.5}}, shape={"n_accounts": 128})
    base_env, base = crashgym.make("MarketMaker-v0", scenario="calm")
    assert float(params.market.flow.cancel_rate) == pytest.approx(0.02) != float(base.market.flow.cancel_rate)
    assert int(params.market.liquidation.adl_rule) != int(base.market.liquidation.adl_rule)
    assert (env.shape.n_levels, env.shape.n_accounts) == (32, 128)
    assert (base_env.shape.n_levels, base_env.shape.n_accounts) == (64, 1024)
    # One string is one setting, not a sequence of characters.
    _, one = crashgym.make("MarketMaker-v0", scenario="calm", settings="market.flow.cancel_rate=0.02")
    assert float(one.market.flow.cancel_rate) == pytest.approx(0.02)


def test_make_settings_beat_the_envs_agent_defaults():
    """LeveragedTrader-v0 trades 10,000 USD by default; an agent key set by --set wins, as by market=."""
    _, default = crashgym.make("LeveragedTrader-v0", scenario="calm")
    _, by_setting = crashgym.make("LeveragedTrader-v0", scenario="calm", settings=["market.agent.capital=2500"])
    _, by_market = crashgym.make("LeveragedTrader-v0", scenario="calm", market={"agent": {"capital": 2500.0}})
    assert float(default.market.agent.capital) == 10_000.0
    assert float(by_setting.market.agent.capital) == float(by_market.market.agent.capital) == 2500.0


def test_make_bad_settings_are_named():
    with pytest.raises(ValueError, match="market.flow.no_such_key"):
        crashgym.make("MarketMaker-v0", settings=["market.flow.no_such_key=1"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        crashgym.make("MarketMaker-v0", settings=["market.flow.cancel_rate"])
    with pytest.raises(ValueError, match="settings= need a scenario name"):
        crashgym.make("MarketMaker-v0", scenario=load_scenario("calm"), settings=["shape.n_levels=32"])

def test_market_maker_action_mapping(mm):
    env, params, reset, _ = mm
    _, state = reset(jax.random.key(0), params)
    tick = params.market.book.tick_size
    state = state.replace(market=state.market.replace(signals=state.market.signals.replace(mid=jnp.float32(1000.5 * tick))))
    o = env.orders(state, jnp.array([-1.0, 1.0, 1.0, 0.0]), params)
    assert int(o.bid_tick) == 1000 and int(o.ask_tick) == 1001 + int(params.market.agent.max_offset_ticks)
    assert int(o.bid_size) == int(params.market.agent.max_quote_lots)
    assert int(o.ask_size) == round(params.market.agent.max_quote_lots / 2)
    assert int(o.market_lots) == 0
    w = env.orders(state, -jnp.ones(4), params)
    assert int(w.bid_size) == 0 and int(w.ask_size) == 0
    # Mid on a tick: the quotes keep one tick away from it.
    state = state.replace(market=state.market.replace(signals=state.market.signals.replace(mid=jnp.float32(1000 * tick))))
    o = env.orders(state, jnp.array([-1.0, -1.0, 0.0, 0.0]), params)
    assert int(o.bid_tick) == 999 and int(o.ask_tick) == 1001


def test_step_contract_market_maker(mm):
    env, params, reset, step = mm
    obs, state = reset(jax.random.key(0), params)
    assert obs.shape == (len(env.OBS_NAMES),) and obs.dtype == jnp.float32
    for t in range(3):
        obs, state, reward, term, trunc, info = step(jax.random.key(t), state, jnp.array([-0.8, -0.8, 0.0, 0.0]), params)
        assert np.all(np.isfinite(obs)) and np.all(np.abs(obs) <= 10)
        assert np.isfinite(float(reward))
        assert set(MARKET_KEYS) <= set(info["market"])
        assert info["costs"].shape == (len(COMPONENTS),)
        assert float(info["cost"]) == pytest.approx(float(jnp.sum(info["costs"])))
        assert not bool(term) and not bool(trunc)
    assert int(state.time) == 3


def test_withdrawal_breaks_obligation(mm):
    env, params, reset, step = mm
    _, state = reset(jax.random.key(1), params)
    _, _, _, _, _, info = step(jax.random.key(2), state, -jnp.ones(4), params)
    costs = dict(zip(COMPONENTS, np.asarray(info["costs"])))
    assert costs["spread"] == 1.0 and costs["size"] == 1.0 and costs["presence"] > 0
    assert not bool(info["compliant"])
    # Without an obligation every cost is zero (same compiled step: params are traced).
    none = params.replace(obligations=load_obligations("none"))
    _, _, _, _, _, info = step(jax.random.key(2), state, -jnp.ones(4), none)
    assert float(info["cost"]) == 0.0


def exit_equity_reference(ms, params, n_levels: int) -> float:
    """Close the agent's position by walking the other participants' volume level by level."""
    bid, ask = book_totals(ms, n_levels, include_agent=False)
    prices = np.asarray(book.ladder_prices(ms.book.center_tick, n_levels, params.market.book.tick_size), np.float64)
    pos = int(ms.agent.position)
    walk = zip(np.asarray(bid)[::-1], prices[::-1]) if pos > 0 else zip(np.asarray(ask), prices)
    left, notional, far = abs(pos), 0.0, None
    for volume, price in walk:
        take = min(left, int(volume))
        notional, left, far = notional + take * price, left - take, price
    notional += left * far  # beyond the ladder: its far end
    return float(ms.agent.cash) + np.sign(pos) * notional - params.market.agent.taker_fee * notional


def _with_position(state, lots: int):
    ag = state.market.agent
    return state.replace(market=state.market.replace(agent=ag.replace(position=jnp.int32(lots))))


def test_reward_is_change_of_exit_equity(mm):
    env, params, reset, step = mm
    _, state = reset(jax.random.key(3), params)
    _, s1, r, _, _, info = step(jax.random.key(4), state, jnp.array([-1.0, -1.0, 1.0, 1.0]), params)
    ag = s1.market.agent
    eq = float(ag.cash) + int(ag.position) * float(s1.market.signals.mark)
    assert float(info["equity"]) == pytest.approx(eq, rel=1e-6)
    exit_eq = exit_equity_reference(s1.market, params, env.shape.n_levels)
    assert float(info["reward_equity"]) == pytest.approx(exit_eq, rel=1e-6)
    want = params.reward_scale * (exit_eq - float(state.prev_equity)) / params.market.agent.capital
    assert float(r) == pytest.approx(want, abs=1e-4)
    # value_at_exit = False: the change of the marked-to-market equity.
    at_mark = params.replace(market=params.market.replace(agent=params.market.agent.replace(value_at_exit=False)))
    _, s1, r, _, _, info = step(jax.random.key(4), state, jnp.array([-1.0, -1.0, 1.0, 1.0]), at_mark)
    assert float(info["reward_equity"]) == float(info["equity"])
    want = params.reward_scale * (float(info["equity"]) - float(state.prev_equity)) / params.market.agent.capital
    assert float(r) == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("lots", [0, 1, 7, -7, 300, -300, 10**6, -(10**6)])
def test_exit_equity_walks_the_book(mm, lots):
    env, params, reset, _ = mm
    _, state = reset(jax.random.key(6), params)
    ms = _with_position(state, lots).market
    got = float(exit_equity(ms, params, env.shape.n_levels))
    assert got == pytest.approx(exit_equity_reference(ms, params, env.shape.n_levels), rel=1e-6)
    marked = float(equity(ms))
    if lots != 0:  # closing through a book with a spread costs something: below the mark value
        assert got < marked
    else:
        assert got == marked


def test_inventory_limit_cuts_quote_sizes(mm):
    env, params, reset, _ = mm
    _, state = reset(jax.random.key(7), params)
    limited = params.replace(market=params.market.replace(agent=params.market.agent.replace(max_inventory_lots=150.0)))
    full = jnp.array([0.0, 0.0, 1.0, 1.0])  # max_quote_lots (200) a side
    for pos, bid, ask in [(0, 150, 150), (100, 50, 200), (-140, 200, 10), (150, 0, 200), (400, 0, 200)]:
        o = env.orders(_with_position(state, pos), full, limited)
        assert (int(o.bid_size), int(o.ask_size)) == (bid, ask), pos
    o = env.orders(_with_position(state, 4900), full, params)  # the default limit: 5,000 lots
    assert (int(o.bid_size), int(o.ask_size)) == (100, 200)
    unlimited = params.replace(market=params.market.replace(agent=params.market.agent.replace(max_inventory_lots=jnp.inf)))
    o = env.orders(_with_position(state, 10**6), full, unlimited)
    assert (int(o.bid_size), int(o.ask_size)) == (200, 200)
    with pytest.raises(ValueError, match="max_inventory_lots"):
        crashgym.make("MarketMaker-v0", market={"agent": {"max_inventory_lots": -1.0}})


def test_truncation_and_termination(mm):
    env, params, reset, step = mm
    _, state = reset(jax.random.key(5), params)
    late = state.replace(time=jnp.int32(params.max_steps - 1))
    *_, term, trunc, _ = step(jax.random.key(6), late, jnp.zeros(4), params)
    assert bool(trunc) and not bool(term)
    # An agent whose equity is below maintenance margin is liquidated: terminated.
    mark = float(state.market.signals.mark)
    ag = state.market.agent.replace(position=jnp.int32(10_000), cash=jnp.float32(-10_000 * mark * 0.999))
    doomed = state.replace(market=state.market.replace(agent=ag))
    *_, term, trunc, info = step(jax.random.key(7), doomed, jnp.zeros(4), params)
    assert bool(term) and not bool(trunc)


def test_vmap_over_keys_and_params(mm):
    env, params, _, _ = mm
    both = jax.tree_util.tree_map(lambda a, b: jnp.stack([jnp.asarray(a), jnp.asarray(b)]),
                                  params, params.replace(obligations=load_obligations("none")))
    keys = jax.random.split(jax.random.key(8), 2)

    @jax.jit
    def run(keys, p):
        obs, state = jax.vmap(env.reset)(keys, p)
        return jax.vmap(env.step)(keys, state, -jnp.ones((2, 4)), p)

    obs, state, reward, term, trunc, info = run(keys, both)
    assert obs.shape == (2, len(env.OBS_NAMES))
    assert float(info["cost"][0]) > 0 and float(info["cost"][1]) == 0.0


def test_same_key_same_result(trader):
    env, params, reset, step = trader
    outs = []
    for _ in range(2):
        obs, state = reset(jax.random.key(11), params)
        obs, state, r, *_ = step(jax.random.key(12), state, jnp.array([0.5]), params)
        outs.append((np.asarray(obs), float(r)))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    assert outs[0][1] == outs[1][1]


def test_leveraged_trader_targets_leverage(trader):
    env, params, reset, step = trader
    obs, state = reset(jax.random.key(13), params)
    assert obs.shape == (len(env.OBS_NAMES),)
    for t in range(3):
        obs, state, r, term, trunc, info = step(jax.random.key(20 + t), state, jnp.array([0.3]), params)
        assert float(info["cost"]) == 0.0 and info["costs"].shape == (len(COMPONENTS),)
        assert int(info["adl"]) >= 0
    pos = int(state.market.agent.position)
    assert pos > 0  # long, towards 0.3 * max leverage
    lev = pos * float(state.market.signals.mark) / float(info["equity"])
    assert 0 < lev <= 0.3 * params.market.agent.max_leverage * 1.05
    names = dict(zip(env.OBS_NAMES, np.asarray(obs)))
    assert names["leverage"] > 0 and 0 <= names["adl_light"] <= 1
    # Actions beyond the box are clipped, not rejected, by the functional env.
    obs2, *_ = step(jax.random.key(30), state, jnp.array([7.0]), params)
    assert np.all(np.isfinite(obs2))
