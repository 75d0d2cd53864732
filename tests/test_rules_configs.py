"""Market-rule files (configs/rules/): every file loads over every scenario and runs; bad files fail clearly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from crashgym import rules as rules_mod
from crashgym.compare import build_batch
from crashgym.config import ConfigError, available
from crashgym.params import ADL_RULES, LIQUIDATION_MODES
from crashgym.rollout import run_batch
from crashgym.scenarios import load_scenario

BUILTIN = ("none", "luld_like", "buffered_liquidation", "tiered_leverage", "insurance_fund_10x",
           "adl_bitmex", "adl_binance", "adl_hyperliquid", "adl_pro_rata")


def test_builtin_rule_files_present():
    assert set(BUILTIN) <= set(available("rules"))


@pytest.mark.parametrize("scenario", available("scenarios"))
@pytest.mark.parametrize("name", available("rules"))
def test_every_rule_file_loads_over_every_scenario(scenario, name):
    sc = load_scenario(scenario, rules=[name])
    assert sc.rules == (name,)
    base = load_scenario(scenario)
    assert sc.shape == base.shape  # rules never change shapes, so rule sets share one batch


def test_rule_values_reach_the_params():
    p = load_scenario("oct10", rules=["luld_like"]).params.rules
    assert (p.halt_move, p.halt_window_steps, p.halt_steps, p.price_band) == (0.05, 30.0, 30, 0.05)
    p = load_scenario("oct10", rules=["buffered_liquidation"]).params
    assert p.rules.throttle_notional == 200000.0 and p.liquidation.mode == LIQUIDATION_MODES["chunked"]
    for rule, code in ADL_RULES.items():
        assert load_scenario("oct10", rules=[f"adl_{rule}"]).params.liquidation.adl_rule == code
    assert load_scenario("oct10", rules=["adl_hyperliquid"]).params.liquidation.adl_at_mark == 1
    acc = load_scenario("oct10", rules=["tiered_leverage"]).params.accounts
    default = load_scenario("oct10").params.accounts
    assert max(acc.tier_max_leverage) == 20.0
    np.testing.assert_allclose(np.subtract(acc.tier_mmr, default.tier_mmr), 0.005, atol=1e-12)  # the add-on
    liq = load_scenario("oct10", rules=["insurance_fund_10x"]).params.liquidation
    assert (liq.insurance_fund, liq.adl_drawdown) == (3.0e6, 1.0)
    # 'none' is the crypto status quo: it leaves the scenario's own defaults unchanged.
    assert load_scenario("oct10", rules=["none"]).params == load_scenario("oct10").params


def test_luld_like_halts_on_a_five_percent_move():
    r = load_scenario("oct10", rules=["luld_like"]).params.rules
    halt, _ = rules_mod.circuit_breaker(jnp.int32(0), jnp.float32(100.0), jnp.float32(94.9), r)
    assert int(halt) == 30
    halt, _ = rules_mod.circuit_breaker(jnp.int32(0), jnp.float32(100.0), jnp.float32(95.1), r)
    assert int(halt) == 0
    none = load_scenario("oct10", rules=["none"]).params.rules
    halt, _ = rules_mod.circuit_breaker(jnp.int32(0), jnp.float32(100.0), jnp.float32(50.0), none)
    assert int(halt) == 0


def test_all_rule_files_run_a_few_steps_in_one_batch():
    names = available("rules")
    shape, params, sets, ids, _ = build_batch("oct10", ["none", "strict"], names, seeds=1)
    shape = dataclasses.replace(shape, episode_steps=6)
    info, _ = run_batch(shape, params, len(ids), params_axis=0, seed_ids=ids, chunk=6)
    assert info["mark_price"].shape == (6, len(sets))
    for k in ("mark_price", "depth_2pct", "insurance_fund", "mm_equity"):
        assert np.isfinite(info[k]).all(), k


@pytest.mark.parametrize(
    "body, key",
    [
        ("[market.rules]\nhalt_mvoe = 0.05\n", "market.rules.halt_mvoe"),
        ("[market.rules]\nhalt_move = -0.1\n", "market.rules.halt_move"),
        ("[market.rules]\nprice_band = 0\n", "market.rules.price_band"),
        ("[market.rules]\nhalt_steps = 2.5\n", "market.rules.halt_steps"),
        ("[market.liquidation]\nadl_rule = \"okx\"\n", "market.liquidation.adl_rule"),
        ("[market.makers]\nobliged_fraction = 1.5\n", "market.makers.obliged_fraction"),
        ("[shape]\nn_levels = 32\n", "shape"),
    ],
)
def test_bad_rule_file_names_file_and_key(tmp_path: Path, body: str, key: str):
    path = tmp_path / "bad_rules.toml"
    path.write_text('schema_version = 1\ndescription = "bad"\n' + body)
    with pytest.raises(ConfigError) as e:
        load_scenario("oct10", rules=[str(path)])
    assert str(path) in str(e.value) and key in str(e.value)


def test_rule_file_needs_schema_version(tmp_path: Path):
    path = tmp_path / "old.toml"
    path.write_text('description = "no version"\n[market.rules]\nhalt_move = 0.05\n')
    with pytest.raises(ConfigError, match="schema_version"):
        load_scenario("oct10", rules=[str(path)])
    with pytest.raises(ConfigError, match="unknown rules config 'nope'"):
        load_scenario("oct10", rules=["nope"])
