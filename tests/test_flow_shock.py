"""The news shock's ramp (crashgym.flow.shock_intensity): the drift and extra volatility of the
fair value build linearly over shock_ramp_steps, or arrive at once when it is 0."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from crashgym import flow
from crashgym.params import FlowParams

SHOCK = dict(shock_step=10, shock_steps=20, shock_drift_per_step=-0.001, shock_vol_mult=4.0)


def intensities(params: FlowParams, steps: int = 40) -> np.ndarray:
    return np.array([float(flow.shock_intensity(jnp.asarray(t), params)) for t in range(steps)])


def test_without_a_ramp_the_shock_is_on_at_full_strength_for_its_window():
    x = intensities(FlowParams(**SHOCK))
    assert (x[:10] == 0).all() and (x[10:30] == 1).all() and (x[30:] == 0).all()


@pytest.mark.parametrize("ramp", [1, 5, 20, 35])
def test_the_ramp_grows_linearly_to_full_and_stops_with_the_shock(ramp):
    x = intensities(FlowParams(**SHOCK, shock_ramp_steps=ramp))
    k = np.arange(20)
    assert (x[:10] == 0).all() and (x[30:] == 0).all()
    np.testing.assert_allclose(x[10:30], np.minimum((k + 1) / ramp, 1.0), rtol=1e-6)


@pytest.mark.parametrize("ramp", [0, 8])
def test_index_drift_and_vol_scale_with_the_intensity(ramp):
    """With no noise, jumps or spot arbitrage the index moves by exactly drift * intensity; the
    volatility multiplier is 1 + (shock_vol_mult - 1) * intensity (read off a unit shock)."""
    quiet = dict(vol_per_step=0.0, jump_prob=0.0, basis_pull=0.0)
    p = FlowParams(**SHOCK, **quiet, shock_ramp_steps=ramp)
    u = jnp.array([0.5, 0.5, 1.0, 0.5])  # z = 0 for the return and the vol innovation, no jump
    for t in range(40):
        index, _ = flow.index_step(jnp.float32(100.0), jnp.float32(0.0), jnp.float32(100.0), jnp.asarray(t), u, p)
        expected = SHOCK["shock_drift_per_step"] * float(flow.shock_intensity(jnp.asarray(t), p))
        assert float(jnp.log(index / 100.0)) == pytest.approx(expected, abs=1e-6)
    # Volatility: a one-sigma return innovation at base vol v moves the index by v * multiplier.
    v = 1e-3
    noisy = FlowParams(**SHOCK, vol_per_step=v, vol_of_vol=0.0, jump_prob=0.0, basis_pull=0.0,
                       shock_ramp_steps=ramp)
    z1 = jnp.array([0.5, 0.8413447, 1.0, 0.5])  # Phi(1): a unit return shock
    for t in (5, 12, 20):
        strength = float(flow.shock_intensity(jnp.asarray(t), noisy))
        index, _ = flow.index_step(jnp.float32(100.0), jnp.float32(0.0), jnp.float32(100.0), jnp.asarray(t), z1, noisy)
        drift = SHOCK["shock_drift_per_step"] * strength
        assert float(jnp.log(index / 100.0)) - drift == pytest.approx(v * (1 + (SHOCK["shock_vol_mult"] - 1) * strength), rel=1e-3)
