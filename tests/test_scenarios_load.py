"""Every scenario and rules TOML loads and runs; malformed files fail loudly, naming file and key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest

from crashgym.config import ConfigError, available, configs_root
from crashgym.market import Market, cash_balance, net_position, no_orders
from crashgym.params import ADL_RULES, AccountParams, MarketParams
from crashgym.scenarios import load_scenario
from crashgym.types import MarketShape

SMOKE_STEPS = 12
SMALL = dict(n_levels=16, n_accounts=64, n_makers=2, n_rounds=2, n_buckets=1024, bucket_window=8, turnover_slots=4,
             episode_steps=SMOKE_STEPS)

SCENARIOS = available("scenarios")
RULES = available("rules")

_RUNNERS: dict[MarketShape, object] = {}


def _runner(shape: MarketShape):
    """One jitted (reset + SMOKE_STEPS steps) per shape: every scenario shares it."""
    if shape not in _RUNNERS:
        market = Market(shape)

        @jax.jit
        def run(key, params):
            k0, k1 = jax.random.split(key)
            s0 = market.init(k0, params)

            def body(s, k):
                s, info = market.step(k, s, no_orders(), params)
                return s, (net_position(s), cash_balance(s), info["mark_price"], info["insurance_fund"])

            _, out = jax.lax.scan(body, s0, jax.random.split(k1, SMOKE_STEPS))
            return (net_position(s0), cash_balance(s0)), out

        _RUNNERS[shape] = run
    return _RUNNERS[shape]


def _smoke(scenario) -> None:
    shape = dataclasses.replace(scenario.shape, **SMALL)
    (net0, cash0), (net, cash, mark, fund) = jax.tree.map(np.asarray, _runner(shape)(jax.random.key(0), scenario.params))
    assert net0 == 0 and (net == 0).all()
    assert np.abs(cash.astype(np.float64) - cash0).max() <= 1e-5 * max(1.0, abs(float(cash0))) + SMOKE_STEPS
    assert np.isfinite(mark).all() and (mark > 0).all() and np.isfinite(fund).all()


def test_the_shipped_scenarios_exist():
    assert {"calm", "oct10", "om"} <= set(SCENARIOS)


@pytest.mark.parametrize("overrides", [
    # The OM holder selling from the first step, into a book whose empty side takes the last trade as mid.
    {"flow": {"holder_start_step": 0, "holder_steps": SMOKE_STEPS, "holder_sell_lots": 500.0, "holder_end_mult": 4.0,
              "holder_spot_impact": 1e-5}},
    # The oct10 shock with its rebound starting inside the smoke window.
    {"flow": {"shock_step": 0, "shock_steps": 4, "rebound_steps": 6, "rebound_drift_per_step": 0.01}},
    # The latent-book ramp (a V-shaped background book) under the same shock.
    {"flow": {"latent_levels": 8.0, "shock_step": 0, "shock_steps": 4, "rebound_steps": 6, "rebound_drift_per_step": 0.01}},
])
def test_holder_and_rebound_conserve_positions_and_cash(overrides):
    """The holder's lots go through the background ledger like any background order."""
    base = "om" if "holder_start_step" in overrides["flow"] else "oct10"
    _smoke(load_scenario(base, overrides=overrides))


def test_om_grids_cover_a_90_percent_fall():
    """The liquidation-price grid spans 0 .. n_buckets * bucket_width * initial price, and the
    tick is small enough that the ladder keeps many levels at -90%."""
    sc = load_scenario("om")
    p = sc.params
    assert sc.shape.n_buckets * p.liquidation.bucket_width >= 1.5  # shorts' liquidation prices up to 1.5 x entry
    assert 0.1 * p.book.initial_price / p.book.tick_size >= sc.shape.n_levels  # ticks below -90%


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_loads_and_runs(name):
    sc = load_scenario(name)
    assert sc.name == name and sc.description
    assert isinstance(sc.shape, MarketShape) and isinstance(sc.params, MarketParams)
    assert sc.params.liquidation.adl_rule in ADL_RULES.values()
    _smoke(sc)


def test_settings_are_laid_over_the_file_rules_and_overrides_last():
    """`--set KEY=VALUE` (load_scenario's settings): shape and market keys, enum names, and
    the last word over a rules file and a dict of overrides; the rest stays the scenario's."""
    base = load_scenario("oct10", rules="adl_hyperliquid", overrides={"flow": {"cancel_rate": 0.02}})
    sc = load_scenario("oct10", rules="adl_hyperliquid", overrides={"flow": {"cancel_rate": 0.02}},
                       settings=["market.flow.cancel_rate=0.03", "shape.n_levels=32",
                                 "market.liquidation.adl_rule=pro_rata", 'market.liquidation.mode="chunked"'])
    assert base.params.flow.cancel_rate == 0.02 and sc.params.flow.cancel_rate == 0.03
    assert sc.shape.n_levels == 32 and base.shape.n_levels != 32
    assert sc.params.liquidation.adl_rule == ADL_RULES["pro_rata"] != base.params.liquidation.adl_rule
    assert sc.params.liquidation.mode == 1 and sc.params.liquidation.adl_at_mark == 1  # the rules file's, kept
    assert sc.params.makers == base.params.makers and sc.params.accounts == base.params.accounts
    assert dataclasses.replace(sc.shape, n_levels=base.shape.n_levels) == base.shape


@pytest.mark.parametrize("setting, needle", [
    ("market.flow.cancel_rate", "expected KEY=VALUE"),
    ("market.flow.cancel_rate=", "expected KEY=VALUE"),
    ("flow.cancel_rate=0.1", "KEY must be shape.<field> or market.<table>.<field>"),
    ("market.cancel_rate=0.1", "KEY must be shape.<field> or market.<table>.<field>"),
    ("market.flow.cancel_ratee=0.1", "unknown key 'market.flow.cancel_ratee'"),
    ("market.flow.cancel_rate=fast", "'market.flow.cancel_rate' must be float, got 'fast'"),
    ("market.flow.cancel_rate=2.0", "'market.flow.cancel_rate' must be in [0, 1]"),
    ("shape.n_levels=16.5", "'shape.n_levels' must be int, got 16.5"),
    ("shape.n_levelz=16", "unknown key 'shape.n_levelz'"),
    ("market.liquidation.adl_rule=nosuch", "'market.liquidation.adl_rule' must be one of"),
])
def test_bad_setting_raises_config_error_naming_it(setting, needle):
    with pytest.raises(ConfigError) as err:
        load_scenario("calm", settings=[setting])
    msg = str(err.value)
    assert "--set" in msg and needle in msg, msg
    assert msg.count("calm.toml") <= 1, msg  # named once, not once per layer of the error


def test_scenario_loads_by_path():
    path = configs_root() / "scenarios" / f"{SCENARIOS[0]}.toml"
    assert load_scenario(str(path)) == load_scenario(SCENARIOS[0])


@pytest.mark.parametrize("rule", RULES or [pytest.param(None, marks=pytest.mark.skip(reason="no configs/rules/*.toml"))])
def test_rules_load_over_every_scenario_and_run(rule):
    for name in SCENARIOS:
        sc = load_scenario(name, rules=rule)
        assert sc.rules == (rule,)
    _smoke(load_scenario(SCENARIOS[0], rules=rule))


def test_rules_file_and_overrides_are_laid_over_the_scenario(tmp_path):
    rule = tmp_path / "hl_adl.toml"
    rule.write_text('schema_version = 1\ndescription = "Hyperliquid-style ADL"\n'
                    '[market.liquidation]\nadl_rule = "hyperliquid"\nadl_at_mark = 1\nmode = "chunked"\n')
    sc = load_scenario("oct10", rules=str(rule))
    assert sc.params.liquidation.adl_rule == ADL_RULES["hyperliquid"]
    assert sc.params.liquidation.adl_at_mark == 1 and sc.params.liquidation.mode == 1
    base = load_scenario("oct10")
    assert sc.params.flow == base.params.flow  # untouched tables keep the scenario's values
    over = load_scenario("oct10", rules=str(rule), overrides={"liquidation": {"adl_rule": "pro_rata"}})
    assert over.params.liquidation.adl_rule == ADL_RULES["pro_rata"]
    assert over.params.liquidation.adl_at_mark == 1
    _smoke(over)


# ------------------------------------------------------------------ bad files
def _tier_line() -> str:
    """A tier_mmr list as long as the default tables whose first MMR equals the first
    tier's initial margin (1 / max leverage): maintenance must be strictly below it."""
    acc = AccountParams()
    mmr = list(acc.tier_mmr)
    mmr[0] = 1.0 / acc.tier_max_leverage[0]
    return "tier_mmr = [" + ", ".join(repr(float(x)) for x in mmr) + "]"


BAD_SCENARIOS = {
    # name: (TOML body after schema_version, key the message must name)
    "unknown_top_key": ('colour = "red"\n', "colour"),
    "unknown_market_key": ("[market.flow]\nshock_stepz = 3\n", "market.flow.shock_stepz"),
    "unknown_group": ("[market.fees]\ntaker = 0.1\n", "market.fees"),
    "unknown_shape_key": ("[shape]\nn_level = 16\n", "shape.n_level"),
    "tick_as_string": ('[market.book]\ntick_size = "0.1"\n', "market.book.tick_size"),
    "bool_for_float": ("[market.accounts]\nlong_bias = true\n", "market.accounts.long_bias"),
    "float_for_int": ("[shape]\nn_levels = 16.5\n", "shape.n_levels"),
    "float_for_int_param": ("[market.flow]\nshock_step = 180.0\n", "market.flow.shock_step"),
    "table_for_float": ("[market.book.tick_size]\nx = 1\n", "market.book.tick_size"),
    "zero_tick": ("[market.book]\ntick_size = 0.0\n", "market.book.tick_size"),
    "negative_tick": ("[market.book]\ntick_size = -0.1\n", "market.book.tick_size"),
    "mmr_not_below_initial_margin": ("[market.accounts]\n" + _tier_line() + "\n", "market.accounts.tier_mmr"),
    "negative_quote_size": ("[market.makers]\nquote_size_lots = -1\n", "market.makers.quote_size_lots"),
    "bad_adl_rule_name": ('[market.liquidation]\nadl_rule = "fifo"\n', "market.liquidation.adl_rule"),
    "bad_adl_rule_code": ("[market.liquidation]\nadl_rule = 7\n", "market.liquidation.adl_rule"),
    "bad_liquidation_mode": ('[market.liquidation]\nmode = "partial"\n', "market.liquidation.mode"),
    "bad_ioc_limit_name": ('[market.liquidation]\nioc_limit = "limit"\n', "market.liquidation.ioc_limit"),
    "bad_ioc_limit_code": ("[market.liquidation]\nioc_limit = 2\n", "market.liquidation.ioc_limit"),
    "adl_background_not_a_flag": ("[market.liquidation]\nadl_background = 2\n", "market.liquidation.adl_background"),
    "negative_fund": ("[market.liquidation]\ninsurance_fund = -1.0\n", "market.liquidation.insurance_fund"),
    "unstable_hawkes": ("[market.flow]\nhawkes_excitation = 1.0\n", "market.flow.hawkes_excitation"),
    "negative_latent_ramp": ("[market.flow]\nlatent_levels = -1.0\n", "market.flow.latent_levels"),
    "negative_shock_ramp": ("[market.flow]\nshock_ramp_steps = -1\n", "market.flow.shock_ramp_steps"),
    "probability_above_one": ("[market.accounts]\nlong_bias = 1.5\n", "market.accounts.long_bias"),
    "tiny_ladder": ("[shape]\nn_levels = 4\n", "n_levels"),
    "window_beyond_grid": ("[shape]\nn_buckets = 8\nbucket_window = 16\n", "bucket_window"),
    "zero_accounts": ("[shape]\nn_accounts = 0\n", "n_accounts"),
}


@pytest.mark.parametrize("case", sorted(BAD_SCENARIOS))
def test_bad_scenario_raises_config_error_naming_file_and_key(tmp_path, case):
    body, key = BAD_SCENARIOS[case]
    path = tmp_path / f"{case}.toml"
    path.write_text("schema_version = 1\n" + body)
    with pytest.raises(ConfigError) as err:
        load_scenario(str(path))
    msg = str(err.value)
    assert msg.count(str(path)) == 1, msg  # named once, not once per layer of the error
    assert key in msg, msg


@pytest.mark.parametrize("text,needle", [
    ('description = "no version"\n', "schema_version"),
    ("schema_version = 2\n", "schema_version"),
    ('schema_version = "1"\n', "schema_version"),
    ("schema_version = 1\n[market\n", "invalid TOML"),
    ("schema_version = 1\ndescription = 3\n", "description"),
])
def test_bad_header_raises_config_error(tmp_path, text, needle):
    path = tmp_path / "header.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_scenario(str(path))
    assert str(path) in str(err.value) and needle in str(err.value)


def test_missing_scenario_lists_the_available_ones():
    with pytest.raises(ConfigError) as err:
        load_scenario("no_such_scenario")
    assert "no_such_scenario" in str(err.value)
    for name in SCENARIOS:
        assert name in str(err.value)
    with pytest.raises(ConfigError):
        load_scenario("/nonexistent/dir/x.toml")


@pytest.mark.parametrize("body,key", [
    ("[market.liquidation]\nadl_rule = \"lottery\"\n", "market.liquidation.adl_rule"),
    ("[market.rules]\nhalt_mvoe = 0.1\n", "market.rules.halt_mvoe"),
    ("[market.rules]\nprice_band = 0.0\n", "market.rules.price_band"),
    ("[shape]\nn_levels = 32\n", "shape"),
])
def test_bad_rules_file_raises_config_error_naming_it(tmp_path, body, key):
    path = tmp_path / "bad_rule.toml"
    path.write_text('schema_version = 1\ndescription = "bad"\n' + body)
    with pytest.raises(ConfigError) as err:
        load_scenario(SCENARIOS[0], rules=str(path))
    assert str(path) in str(err.value) and key in str(err.value), str(err.value)


def test_bad_override_raises_config_error():
    with pytest.raises(ConfigError) as err:
        load_scenario(SCENARIOS[0], overrides={"book": {"tick_sise": 0.1}})
    assert "market.book.tick_sise" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_scenario(SCENARIOS[0], overrides={"makers": {"quote_size_lots": -5.0}})
    assert "market.makers.quote_size_lots" in str(err.value)


def test_every_shipped_file_is_strict_clean():
    """The shipped TOMLs themselves carry schema_version 1 and only known top-level keys."""
    import tomllib

    for kind in ("scenarios", "rules"):
        for name in available(kind):
            data = tomllib.loads(Path(configs_root() / kind / f"{name}.toml").read_text())
            assert data.get("schema_version") == 1, name
            assert set(data) <= {"schema_version", "description", "shape", "market"}, name


def test_latent_ramp_makes_the_reset_book_v_shaped():
    """With flow.latent_levels the reset book is the ramped stationary profile (arrivals / cancel
    rate), growing linearly over the first latent_levels levels from the mid, as the arrivals do."""
    sc = load_scenario("calm", overrides={"flow": {"latent_levels": 8.0}})
    shape = MarketShape(**SMALL)
    state = Market(shape).init(jax.random.key(0), sc.params)
    ask = np.asarray(state.book.ask_depth)[shape.n_levels:shape.n_levels + 8]
    assert (np.diff(ask) > 0).all()
    assert ask[0] < 0.2 * ask[-1]
