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
    assert (impact["agent_liquidated"] == 0).all()  # every metaorder ran to its end
    assert (y > 0).all()
    assert y[-1] > y[0] + 3 * (se[-1] + se[0])
    assert (np.diff(y) > -2 * (se[1:] + se[:-1])).all()


def test_sqrt_law_prefactor_and_exponent_recover_a_square_root_law():
    sizes = np.array([60.0, 240.0, 960.0, 3840.0])
    sigma, volume, prefactor = 4e-4, 250.0, 0.7
    impacts_ = prefactor * sigma * np.sqrt(sizes / volume)
    np.testing.assert_allclose(st.sqrt_law_prefactor(sizes, impacts_, sigma, volume), prefactor, rtol=1e-12)
    assert st.impact_exponent(sizes, impacts_)["exponent"] == pytest.approx(0.5, abs=1e-9)
    with pytest.raises(ValueError, match="volume_per_step > 0"):
        st.sqrt_law_prefactor(sizes, impacts_, sigma, 0.0)


def test_impact_has_the_square_root_laws_magnitude(impacts):
    """impact = Y sigma sqrt(Q / V) with Y ~ 0.5-1 in real markets (MARKET_MECHANICS.md section 7):
    sigma and V are the idle runs' own volatility and traded volume. Y varies with Q here (the
    exponent is not 0.5, next test), so the check is on its median over the sizes, on both bases.
    Measured 0.71 (seed 2025) and 0.59 (seed 7); Y per size 0.26-0.90."""
    for r in impacts:
        y = st.sqrt_law_prefactor(r["sizes"], r["impact"], r["step_sigma"], r["volume_per_step"])
        assert 0.5 <= np.median(y) <= 1.0


@pytest.mark.xfail(strict=True, reason=(
    "measured impact exponent 0.73 (R^2 0.98) with seed 2025 and 0.72 (R^2 0.97) with seed 7, 256 seeds each, "
    "sizes 60-3840 lots over 5 minutes: about linear up to ~500 lots (local exponent ~0.9), ~0.6 above, convex "
    "beyond ~4,000. None of these gives a square root over this range: a quieter or lumpier background flow, no "
    "makers, no index link, or a diffusing or V-shaped slower book. What was tried, and the figures: "
    "docs/scenarios.md, Known limits"))
def test_impact_is_roughly_square_root(impacts):
    for r in impacts:
        fit = st.impact_exponent(r["sizes"], r["impact"])
        assert 0.3 <= fit["exponent"] <= 0.7 and fit["r2"] >= 0.9
