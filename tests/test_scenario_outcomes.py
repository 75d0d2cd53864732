"""Issue-level behaviour of the two scenarios, over whole episodes and several seeds.

oct10: every episode liquidates, most reach ADL, depth within +-2% falls by more than 80%
from its pre-shock level. calm: none of that in most episodes.
"""

from __future__ import annotations

import numpy as np
import pytest

from crashgym.metrics import scenario_metrics
from crashgym.rollout import run_batch
from crashgym.scenarios import load_scenario

SEEDS = 8


def _episode(name: str) -> dict[str, np.ndarray]:
    sc = load_scenario(name)
    info, _ = run_batch(sc.shape, sc.params, SEEDS, seed=123, chunk=sc.shape.episode_steps)
    return scenario_metrics(info, sc.shape, sc.params)


@pytest.fixture(scope="module")
def oct10() -> dict[str, np.ndarray]:
    return _episode("oct10")


@pytest.fixture(scope="module")
def calm() -> dict[str, np.ndarray]:
    return _episode("calm")


def test_oct10_every_episode_liquidates(oct10):
    assert (oct10["liquidated_notional"] > 0).all()


def test_oct10_most_episodes_reach_adl(oct10):
    assert (oct10["adl_count"] > 0).mean() > 0.5


def test_oct10_depth_collapses(oct10):
    assert (oct10["min_depth_ratio"] < 0.2).mean() > 0.5


def test_oct10_open_interest_falls(oct10):
    assert np.median(oct10["open_interest_change"]) < -0.2


def test_calm_has_no_cascade(calm, oct10):
    assert (calm["adl_count"] == 0).mean() > 0.5
    assert (calm["min_depth_ratio"] > 0.2).mean() > 0.5
    # Occasional single liquidations happen in calm; a cascade does not.
    assert np.median(calm["liquidated_notional"]) < 0.1 * np.median(oct10["liquidated_notional"])
