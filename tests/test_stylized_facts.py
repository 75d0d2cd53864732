"""The calm market against the stylized facts (MARKET_MECHANICS.md section 7), over 16 seeds.

Heavy tails, no linear autocorrelation of returns, volatility clustering, no liquidation
cascade, and the price impact of metaorders against their size (square root in real
markets). Returns are log returns of the mark at 10 s (one step) and 1 minute.
"""

from __future__ import annotations

import numpy as np
import pytest

from crashgym import stylized as st
from crashgym.impact import metaorder_impact
from crashgym.metrics import scenario_metrics
from crashgym.rollout import run_batch
from crashgym.scenarios import load_scenario

SEEDS = 16
SEED = 2025
IMPACT_SIZES = (60, 120, 240, 480, 960, 1920, 3840)  # lots over 30 steps (5 minutes)


@pytest.fixture(scope="module")
def calm():
    sc = load_scenario("calm")
    info, _ = run_batch(sc.shape, sc.params, SEEDS, seed=SEED, chunk=sc.shape.episode_steps)
    m = scenario_metrics(info, sc.shape, sc.params)
    return sc, info, m


IMPACT_SEED_BASES = (SEED, 7)  # an exponent is only claimed if it holds on both
# 64 seeds read 0.67 and 0.80 on the two bases, 256 read 0.73 and 0.72: the smallest
# impacts (~0.6 bp) need the larger sample to pin the fit.
IMPACT_SEEDS = 256


@pytest.fixture(scope="module")
def impacts():
    sc = load_scenario("calm")
    return [metaorder_impact(sc.shape, sc.params, IMPACT_SIZES, seeds=IMPACT_SEEDS, warmup_steps=120, horizon_steps=30, seed=s)
            for s in IMPACT_SEED_BASES]


@pytest.fixture(scope="module")
def impact(impacts):
    return impacts[0]


@pytest.mark.parametrize("every", [1, 6])
def test_returns_have_heavy_tails(calm, every):
    _, info, _ = calm
    k = st.excess_kurtosis(st.log_returns(info["mark_price"], every))
    assert np.median(k) > 0.5  # Gaussian: 0. Measured medians: 7.3 at 10 s, 3.2 at 1 min
    assert (k > 0).mean() >= 0.75


def test_returns_have_no_linear_autocorrelation(calm):
    _, info, _ = calm
    rho = np.median(st.acf(st.log_returns(info["mark_price"]), [1, 2, 3, 5, 10]), axis=1)
    assert np.abs(rho).max() < 0.1


def test_volatility_clusters(calm):
    """Positive autocorrelation of |returns| at lags 1..20 steps (10 s .. 200 s), decaying."""
    _, info, _ = calm
    rho = np.median(st.acf(np.abs(st.log_returns(info["mark_price"])), [1, 2, 5, 10, 20]), axis=1)
    assert (rho > 0.05).all()
    assert rho[0] > rho[-1]


def test_no_liquidation_cascade_in_most_seeds(calm):
    _, _, m = calm
    assert (m["adl_count"] == 0).mean() >= 0.75
    assert (m["max_drawdown"] < 0.1).mean() >= 0.75
    assert (m["insurance_fund_min"] >= 0).mean() >= 0.75


def test_impact_grows_with_metaorder_size(impact):
    """Buying moves the mid up, more for larger metaorders (beyond the noise)."""
    y, se = impact["impact"], impact["impact_se"]
    assert (y > 0).all()
    assert y[-1] > y[0] + 3 * (se[-1] + se[0])
    assert (np.diff(y) > -2 * (se[1:] + se[:-1])).all()


@pytest.mark.xfail(strict=True, reason=(
    "measured impact exponent 0.73 (R^2 0.98) with seed 2025 and 0.72 (R^2 0.97) with seed 7, 256 seeds each, "
    "sizes 60-3840 lots over 5 minutes: concave, but not a square root. About linear up to ~500 lots (local "
    "exponent ~0.9), ~0.6 above. The makers' quotes and the background arrivals refill at the current mid every "
    "step, so impact keeps a linear part; latent-book ramps, slower books, convex arbitrage, makers centred on "
    "the index or leaning on the order flow, and a latent counter-flow were tried: docs/scenarios.md, Known limits"))
def test_impact_is_roughly_square_root(impacts):
    for r in impacts:
        fit = st.impact_exponent(r["sizes"], r["impact"])
        assert 0.3 <= fit["exponent"] <= 0.7 and fit["r2"] >= 0.9
