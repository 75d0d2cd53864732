"""The liquidation engine's IOC limit (`liquidation.ioc_limit`): `band` (the whole price band)
or `bankruptcy` (the real rule: at the queue's bankruptcy price or better, within the band).

Stage level: no fill worse than the queue's average bankruptcy price, so the fund never books
a shortfall from a fill. Market level: the same for every engine fill of a crash, with
positions and cash conserved (the helpers of test_core_invariants). The default (`band`) is
unchanged: test_core_reference, test_sweep_skip and test_core_invariants run it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crashgym import book, liquidation
from crashgym import market as market_mod
from crashgym.config import ConfigError
from crashgym.market import Market
from crashgym.params import IOC_LIMITS, LiquidationParams
from crashgym.scenarios import load_scenario
from crashgym.state import Engine

from test_core_invariants import MARKET, STEPS, assert_invariants, make_params, run

BAND = LiquidationParams()
BANKRUPTCY = LiquidationParams(ioc_limit=IOC_LIMITS["bankruptcy"])


def _random_case(rng: np.random.Generator, n: int = 32, k: int = 3):
    """One side of a book in walk order, a one-sided queue and a band around a mark."""
    sells = bool(rng.integers(2))
    step = -0.05 if sells else 0.05  # the walk goes down the bids or up the asks
    top = 100.0 + rng.uniform(-1, 1)
    prices = jnp.asarray(top + step * np.arange(n), jnp.float32)
    side = book.SideQueue(
        background=jnp.asarray(rng.integers(0, 40, n) * (rng.random(n) < 0.7), jnp.int32),
        maker_index=jnp.asarray(rng.integers(0, n, k), jnp.int32), maker_size=jnp.asarray(rng.integers(0, 60, k), jnp.int32),
        agent_index=jnp.int32(rng.integers(0, n)), agent_size=jnp.int32(rng.integers(0, 30)),
        agent_ahead=jnp.int32(0), prices=prices)
    size = int(rng.integers(1, 2000))
    bp = float(top + step * rng.uniform(-2, n + 2))  # anywhere from above the touch to past the ladder
    row = 0 if sells else 1
    engine = Engine(size=jnp.asarray([size if row == 0 else 0, size if row == 1 else 0], jnp.int32),
                    bankrupt_value=jnp.asarray([size * bp if row == 0 else 0.0, size * bp if row == 1 else 0.0], jnp.float32))
    mark = top + step * rng.uniform(-1, 4)
    band = jnp.abs(prices / mark - 1.0) <= rng.choice([0.003, 0.01, 0.1])
    return sells, side, engine, band, bp, int(rng.integers(1, 3000))


def test_band_limit_is_the_band():
    rng = np.random.default_rng(0)
    for _ in range(50):
        sells, side, engine, band, _, _ = _random_case(rng)
        limit = liquidation.ioc_walk_limit(engine, jnp.bool_(sells), side.prices, band, BAND)
        np.testing.assert_array_equal(np.asarray(limit), np.asarray(band))


def test_bankruptcy_limit_fills_never_worse_than_the_bankruptcy_price():
    """Every level the IOC reaches is in the band and at or better than the queue's bankruptcy
    price; the fund's P&L from the fill is a surplus (>= 0 up to float32 rounding)."""
    rng = np.random.default_rng(1)
    filled_some = partial = 0
    for _ in range(200):
        sells, side, engine, band, bp, lots = _random_case(rng)
        s = jnp.bool_(sells)
        limit = liquidation.ioc_walk_limit(engine, s, side.prices, band, BANKRUPTCY)
        bp32 = float(liquidation.queue_bankruptcy_price(engine, s))
        prices = np.asarray(side.prices)
        ok = prices >= bp32 if sells else prices <= bp32
        np.testing.assert_array_equal(np.asarray(limit), np.asarray(band) & ok)
        fill = book.sweep(side, jnp.int32(min(lots, int(engine.size.sum()))), limit)
        reached = np.asarray(fill.filled) > 0
        assert (ok[reached]).all() and np.asarray(band)[reached].all()
        after, pnl = liquidation.settle_fill(engine, s, fill.lots, fill.notional)
        assert float(pnl) >= -1e-6 * abs(float(fill.notional)) - 1e-3, (sells, bp, float(pnl))
        # What did not fill stays queued at the same average bankruptcy price.
        assert int(after.size.sum()) == int(engine.size.sum()) - int(fill.lots)
        if int(after.size.sum()) > 0:
            np.testing.assert_allclose(float(liquidation.queue_bankruptcy_price(after, s)), bp32, rtol=1e-5)
        filled_some += int(fill.lots) > 0
        partial += 0 < int(fill.lots) < min(lots, int(engine.size.sum()))
    assert filled_some > 20 and partial > 5  # the cases exercise fills and partial fills


def test_fund_equity_marks_the_queue_only_under_the_bankruptcy_rule():
    engine = Engine(size=jnp.asarray([10, 4], jnp.int32), bankrupt_value=jnp.asarray([950.0, 440.0], jnp.float32))
    fund, mark = jnp.float32(1000.0), jnp.float32(90.0)
    assert float(liquidation.fund_equity(fund, engine, mark, BAND)) == 1000.0
    # long queue: 10 * 90 - 950 = -50; short queue: 440 - 4 * 90 = +80.
    assert float(liquidation.fund_equity(fund, engine, mark, BANKRUPTCY)) == pytest.approx(1030.0)


def test_ioc_limit_is_read_from_configs_by_name(tmp_path):
    assert load_scenario("oct10").params.liquidation.ioc_limit == IOC_LIMITS["band"]
    over = load_scenario("oct10", overrides={"liquidation": {"ioc_limit": "bankruptcy"}})
    assert over.params.liquidation.ioc_limit == IOC_LIMITS["bankruptcy"]
    for body in ('ioc_limit = "limit"', "ioc_limit = 2"):
        path = tmp_path / "bad.toml"
        path.write_text(f"schema_version = 1\n[market.liquidation]\n{body}\n")
        with pytest.raises(ConfigError, match="market.liquidation.ioc_limit"):
            load_scenario(str(path))


# ------------------------------------------------------------------ market level
def _recording_settle_fill(records: list):
    original = liquidation.settle_fill

    def settle_fill(engine, sells, lots, notional):
        bp = liquidation.queue_bankruptcy_price(engine, sells)
        jax.debug.callback(lambda *a: records.append(tuple(np.asarray(x) for x in a)), sells, lots, notional, bp)
        return original(engine, sells, lots, notional)

    return settle_fill


@pytest.mark.parametrize("seed", range(3))
def test_market_engine_fills_at_or_better_than_bankruptcy(monkeypatch, seed):
    """The stressed crash of test_core_invariants with the rule on: every engine fill of every
    round averages at or better than the queue's bankruptcy price, and positions and cash are
    conserved at every step (through ADL too)."""
    records: list = []
    monkeypatch.setattr(market_mod.liquidation, "settle_fill", _recording_settle_fill(records))
    params = make_params(stressed=True, adl_rule=seed % 4, ioc_limit=1)
    market = Market(MARKET.shape)

    @jax.jit
    def rollout(key):
        k_init, k_run = jax.random.split(key)
        s0 = market.init(k_init, params)

        def body(s, k):
            s, info = market.step(k, s, market_mod.no_orders(), params)
            return s, (info["liquidated_notional"], info["adl_notional"], info["fund_equity"])

        return jax.lax.scan(body, s0, jax.random.split(k_run, STEPS))[1]

    liquidated, adl_notional, _ = jax.tree.map(np.asarray, rollout(jax.random.key(seed)))
    jax.effects_barrier()
    monkeypatch.undo()  # the invariants' own rollout is traced without the recorder
    sells, lots, notional, bp = (np.stack(x) for x in zip(*records))
    done = lots > 0
    assert liquidated.sum() > 0 and done.any()
    avg = notional[done] / lots[done]
    worse = np.where(sells[done], avg < bp[done] * (1 - 1e-6), avg > bp[done] * (1 + 1e-6))
    assert not worse.any(), f"{worse.sum()} fills worse than the bankruptcy price"
    init, trace = run(seed, params, agent=0)
    assert_invariants(init, trace, cash_until_adl=False)


def test_the_rule_changes_the_stressed_crash():
    """Sanity: the option is wired: the stressed crash, whose band-rule fills drain the fund,
    runs differently with the bankruptcy limit."""
    band = [run(seed, make_params(stressed=True), agent=0)[1] for seed in range(3)]
    ioc = [run(seed, make_params(stressed=True, ioc_limit=1), agent=0)[1] for seed in range(3)]
    assert any(not np.array_equal(a["mark"], b["mark"]) for a, b in zip(band, ioc))
    assert min(float(t["fund"].min()) for t in band) < 1000.0
    # Here no fill loses the fund money (crossing the queues could: not in these seeds) and ADL
    # still runs: the trigger reads the fund's equity with the taken-over queue at the mark.
    assert min(float(t["fund"].min()) for t in ioc) >= 1000.0
    assert all(float(t["adl"].sum()) > 0 for t in ioc)


def test_step_batch_skip_uses_the_same_walk_limit(monkeypatch):
    """step_batch's skipped rounds equal always sweeping with the bankruptcy limit too."""
    import test_sweep_skip as sk

    params = sk._stressed()
    params = dataclasses.replace(params, liquidation=dataclasses.replace(params.liquidation, ioc_limit=1))
    market = Market(sk.SHAPE)
    skipping = jax.jit(sk._rollout, static_argnums=0)(market, params)
    monkeypatch.setattr(market_mod, "_unless_idle", lambda busy, axis, work, idle, *ops: work(*ops))
    sweeping = jax.jit(sk._rollout, static_argnums=0)(Market(sk.SHAPE), params)
    assert float(jnp.sum(sweeping[1]["liquidated_notional"])) > 0
    key_data = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x  # noqa: E731
    sk._assert_same(jax.tree.map(key_data, skipping[0]), jax.tree.map(key_data, sweeping[0]))
