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
    return [metaorder_impact(sc.shape, sc.params, IMPACT_SIZES, seeds=IMPACT_SEEDS, warmup_steps=120,
                             horizon_steps=30, seed=s)
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


def _synthetic_per_seed(rng, exponent, noise_bp, seeds):
    """(sizes, per-seed impacts): a power law of the given exponent (1.9 bp at 60 lots, as a
    square root with Y ~ 1 would give calm) plus Gaussian noise per seed."""
    sizes = np.array(IMPACT_SIZES, float)
    law = 1.9e-4 * (sizes / 60.0) ** exponent
    return sizes, law[:, None] + noise_bp * 1e-4 * rng.standard_normal((sizes.size, seeds))


def test_exponent_interval_covers_the_true_exponent_at_its_level():
    """Calibration of the bootstrap: on synthetic curves with a known exponent the 90% interval
    holds the truth about 90% of the time (a binomial range over 120 draws), and it narrows
    with more seeds."""
    rng = np.random.default_rng(11)
    hits, widths = [], {64: [], 256: []}
    for i in range(120):
        seeds = 64 if i % 2 else 256
        sizes, per_seed = _synthetic_per_seed(rng, 0.5, 8.0, seeds)
        lo, hi = st.impact_exponent_interval(sizes, per_seed, level=0.9, resamples=300, seed=i)
        hits.append(lo <= 0.5 <= hi)
        widths[seeds].append(hi - lo)
    assert 0.8 <= np.mean(hits) <= 0.98
    assert np.median(widths[256]) < 0.7 * np.median(widths[64])  # ~1/2 in theory: sqrt(64/256)


def test_exponent_interval_is_unbounded_when_noise_swamps_the_impacts():
    """Three sizes with 500 bp of noise on 2-4 bp: about half the resamples have fewer than two
    positive means, so no power law can be fitted to them and the interval is not bounded."""
    rng = np.random.default_rng(3)
    sizes, per_seed = _synthetic_per_seed(rng, 0.5, 500.0, 8)
    assert st.impact_exponent_interval(sizes[:3], per_seed[:3], resamples=200) == (-np.inf, np.inf)
    sizes, per_seed = _synthetic_per_seed(rng, 0.5, 0.3, 16)  # the same curve, 0.3 bp of noise: bounded
    lo, hi = st.impact_exponent_interval(sizes[:3], per_seed[:3], resamples=200)
    assert 0.2 < lo < 0.5 < hi < 0.8


@pytest.mark.parametrize("shape, level, message", [
    ((6, 32), 0.9, "must be \\(sizes, seeds >= 2\\)"),
    ((7, 1), 0.9, "must be \\(sizes, seeds >= 2\\)"),
    ((7, 32), 1.0, "level must be in \\(0, 1\\)"),
])
def test_exponent_interval_refuses_bad_input(shape, level, message):
    with pytest.raises(ValueError, match=message):
        st.impact_exponent_interval(np.array(IMPACT_SIZES, float), np.ones(shape), level=level)


def _crossover_curve(sizes, crossover_lots):
    """Linear up to the crossover, a square root above it, continuous (Bucci et al. 2019)."""
    return np.where(sizes <= crossover_lots, sizes / crossover_lots, np.sqrt(sizes / crossover_lots)) * 2e-4


def test_local_exponents_find_a_linear_to_square_root_crossover():
    """Without noise the slopes are exact: 1 below the crossover, 0.5 above; with noise the
    90% intervals hold them, and shuffling the sizes changes nothing."""
    sizes = np.array(IMPACT_SIZES, float)
    law = _crossover_curve(sizes, 480.0)
    exact = st.local_impact_exponents(sizes, np.repeat(law[:, None], 4, axis=1), resamples=50)
    np.testing.assert_allclose(exact["exponent"], [1, 1, 1, 0.5, 0.5, 0.5], atol=1e-12)
    np.testing.assert_array_equal(exact["from_lots"], sizes[:-1])
    np.testing.assert_array_equal(exact["to_lots"], sizes[1:])

    rng = np.random.default_rng(5)
    per_seed = law[:, None] + 0.5e-4 * rng.standard_normal((sizes.size, 256))
    noisy = st.local_impact_exponents(sizes, per_seed, resamples=500)
    lo, hi = noisy["interval"].T
    truth = np.array([1, 1, 1, 0.5, 0.5, 0.5])
    assert ((lo <= truth) & (truth <= hi)).sum() >= 5  # 90% intervals: one miss of six allowed
    assert hi[-1] < 0.75 and lo[0] > 0.6  # and they tell the two regimes apart at the ends

    shuffled = rng.permutation(sizes.size)
    again = st.local_impact_exponents(sizes[shuffled], per_seed[shuffled], resamples=500)
    np.testing.assert_allclose(again["exponent"], noisy["exponent"])


def test_local_exponent_is_unbounded_where_an_impact_is_not_positive():
    """A pair whose smaller impact is lost in the noise has no slope in most resamples."""
    rng = np.random.default_rng(8)
    sizes, per_seed = _synthetic_per_seed(rng, 0.5, 0.3, 32)
    per_seed[0] = 0.3e-4 * rng.standard_normal(32)  # the 60-lot metaorder moves nothing
    le = st.local_impact_exponents(sizes, per_seed, resamples=300)
    assert np.isinf(le["interval"][0]).all()
    assert np.isfinite(le["interval"][1:]).all()
    lo, hi = le["interval"][-1]
    assert lo < 0.5 < hi


@pytest.mark.parametrize("sizes, message", [
    ([60.0], "at least two distinct positive sizes"),
    ([60.0, 60.0, 120.0], "at least two distinct positive sizes"),
    ([0.0, 60.0, 120.0], "at least two distinct positive sizes"),
])
def test_local_exponents_refuse_bad_sizes(sizes, message):
    with pytest.raises(ValueError, match=message):
        st.local_impact_exponents(np.array(sizes), np.ones((len(sizes), 8)))
    with pytest.raises(ValueError, match="must be \\(sizes, seeds >= 2\\)"):
        st.local_impact_exponents(np.array([60.0, 120.0]), np.ones((3, 8)))


def test_impact_is_concave(impacts):
    """Whatever its exact exponent, calm's impact grows less than linearly with size: the
    exponent's 90% bootstrap interval over seeds lies below 1 on both seed bases. Measured
    0.73 (0.67-0.80) with seed 2025 and 0.72 (0.66-0.79) with seed 7."""
    for r in impacts:
        _, hi = st.impact_exponent_interval(r["sizes"], r["impact_per_seed"], level=0.9)
        assert hi < 1.0


def test_impact_has_the_square_root_laws_magnitude(impacts):
    """impact = Y sigma sqrt(Q / V) with Y ~ 0.5-1 in real markets (MARKET_MECHANICS.md section 7):
    sigma and V are the idle runs' own volatility and traded volume. Y varies with Q here (the
    exponent is not 0.5, next test), so the check is on its median over the sizes, on both bases.
    Measured 0.71 (seed 2025) and 0.59 (seed 7); Y per size 0.26-0.90."""
    for r in impacts:
        y = st.sqrt_law_prefactor(r["sizes"], r["impact"], r["step_sigma"], r["volume_per_step"])
        assert 0.5 <= np.median(y) <= 1.0


@pytest.mark.xfail(strict=True, reason=(
    "measured impact exponent 0.73 (90% bootstrap interval 0.67-0.80, R^2 0.98) with seed 2025 and 0.72 "
    "(0.66-0.79, R^2 0.97) with seed 7, 256 seeds each, sizes 60-3840 lots over 5 minutes. Between neighbouring "
    "sizes: linear up to 240 lots, about a square root from 240 to 960, ~0.67 from 960 to 3840, convex beyond "
    "~4,000. The square root (0.5) is well outside the interval. None of these gives a square root over this "
    "range: a quieter or lumpier background flow, fewer takers, no makers, no index link, a finer tick, a "
    "diffusing or V-shaped slower book, a latent spot book behind the arbitrage, a convex arbitrage, a book that "
    "moves with the fair value, a balanced background flow, or makers that lay off their fills into a V-shaped "
    "book. A V-shaped slower book with an index that follows the perp fits ~0.6 in calm, but its curve is linear "
    "then nearly flat and it breaks calm's tails and both events' calibration. The linear part ends at ~5% "
    "participation, and moves with the book's own trading rate as the latent-order-book theory says. What was "
    "tried, and the figures: docs/impact.md"))
def test_impact_is_roughly_square_root(impacts):
    """A square root is claimed only if the whole 90% interval of the exponent (a bootstrap over
    seeds) lies within 0.3-0.7 on both seed bases, so float rounding that moves the point
    estimate by a few hundredths (0.70-0.73 here: docs/scenarios.md) cannot flip the verdict."""
    for r in impacts:
        fit = st.impact_exponent(r["sizes"], r["impact"])
        lo, hi = st.impact_exponent_interval(r["sizes"], r["impact_per_seed"], level=0.9)
        assert 0.3 <= lo and hi <= 0.7 and fit["r2"] >= 0.9
