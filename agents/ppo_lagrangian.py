"""PPO-Lagrangian in JAX: PPO under the market-maker obligation as a constrained MDP.

The obligation (crashgym.obligations) reports one per-step cost per component of
``COMPONENTS = (spread, size, presence, distance)`` in ``info["costs"]``. PPO-Lagrangian
(Ray, Achiam & Amodei 2019, "Benchmarking Safe Exploration in Deep RL") solves

    max_pi  E[sum_t gamma^t r_t]   s.t.   E[c_k] <= d_k  for every component k

through the Lagrangian ``L = J_r - sum_k lambda_k (J_ck - d_k)``:

* a cost critic: the critic gets one extra value head per component, trained on the
  discounted costs like the reward head, and GAE gives a cost advantage per component;
* the policy ascends ``(A_r - sum_k lambda_k A_ck) / (1 + sum_k lambda_k)`` (each
  advantage standardized over the minibatch; the 1 + sum rescaling keeps the step size
  bounded as the multipliers grow);
* one multiplier per component, updated by dual (projected gradient) ascent after every
  rollout: ``lambda_k <- max(0, lambda_k + lr * (measured cost rate_k - d_k))``.

The limits ``d_k`` come from the obligation in force (:func:`cost_limits`): the rule
allows a maker to miss its quote rules on ``1 - presence_target`` of the steps, so the
spread / size / distance indicator costs may average at most ``1 - presence_target -
margin``; the presence shortfall (charged only while presence is below target) may
average at most ``presence_slack``. A disabled rule costs 0 always, so its multiplier
stays 0.

The training loop itself is agents/ppo.py's (``ppo.train(..., constraint=...)``); this
module adds the limits, the report of multipliers and violation rates over training, and
the entry point.
"""

from __future__ import annotations

import numpy as np

from agents import ppo
from crashgym.obligations import COMPONENTS, ObligationParams

__all__ = ["cost_limits", "constraint_for", "report", "summed_cost_limit", "train"]


def cost_limits(obligation: ObligationParams, margin: float = 0.05, presence_slack: float = 0.002
                ) -> tuple[float, ...]:
    """Per-step cost rate allowed for each of COMPONENTS under `obligation`.

    margin: safety margin on the quote-rule components (fraction of steps), so the policy
    aims a little above the presence target rather than exactly on it.
    presence_slack: allowed mean presence shortfall cost per step.
    """
    target = float(obligation.presence_target) if int(obligation.active) == 1 else 0.0
    rule_limit = max(1.0 - target - margin, 0.0)
    by_name = {"spread": rule_limit, "size": rule_limit, "distance": rule_limit, "presence": presence_slack}
    return tuple(by_name[c] for c in COMPONENTS)


def summed_cost_limit(obligation: ObligationParams, margin: float = 0.05, presence_slack: float = 0.002) -> float:
    """Allowed per-step rate of the summed cost ``info["cost"]``: the sum of
    :func:`cost_limits` over the components whose rule is switched on (for an SB3-style
    single multiplier; 0 when no obligation is active)."""
    if int(obligation.active) != 1:
        return 0.0
    on = {"spread": float(obligation.max_spread_bps) > 0, "size": float(obligation.min_size_notional) > 0,
          "distance": float(obligation.max_distance_bps) > 0, "presence": float(obligation.presence_target) > 0}
    limits = cost_limits(obligation, margin, presence_slack)
    return float(sum(d for c, d in zip(COMPONENTS, limits) if on[c]))


def constraint_for(obligation: ObligationParams, lr: float = 0.5, margin: float = 0.05,
                   presence_slack: float = 0.002) -> ppo.Constraint:
    """The ppo.Constraint for `obligation`: one multiplier per component of COMPONENTS."""
    return ppo.Constraint(limits=cost_limits(obligation, margin, presence_slack), lr=lr, init=0.0)


def train(config: ppo.PPOConfig, env, env_params, lr: float = 0.5, margin: float = 0.05, presence_slack: float = 0.002,
          logdir: str | None = None, on_chunk=None) -> ppo.TrainResult:
    """PPO-Lagrangian against the obligation in ``env_params.obligations``."""
    constraint = constraint_for(env_params.obligations, lr, margin, presence_slack)
    return ppo.train(config, env, env_params, constraint=constraint, logdir=logdir, on_chunk=on_chunk,
                     component_names=COMPONENTS)


def report(result: ppo.TrainResult, constraint: ppo.Constraint, every: int = 0) -> list[dict[str, float]]:
    """Multipliers, violation rates, cost rates and compliant rate over training (mean over
    seeds), one row per `every` updates (default: ~10 rows)."""
    m = result.metrics
    n = m["lagrange"].shape[0]
    every = every or max(1, n // 10)
    rows = []
    for u in list(range(every - 1, n, every)) + ([n - 1] if (n - 1) % every != every - 1 else []):
        row = {"update": u + 1, "compliant_rate": float(np.mean(m["compliant_rate"][u]))}
        for k, name in enumerate(COMPONENTS):
            row[f"lambda/{name}"] = float(np.mean(m["lagrange"][u][:, k]))
            row[f"cost_rate/{name}"] = float(np.mean(m["cost_rate"][u][:, k]))
            row[f"limit/{name}"] = float(constraint.limits[k])
            row[f"violation_rate/{name}"] = float(np.mean(m["violation_rate"][u][:, k]))
        rows.append(row)
    return rows
