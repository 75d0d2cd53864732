"""Stable-Baselines3 PPO for both roles, optionally under an obligation (Lagrangian).

    python -m agents.sb3_lagrangian --env MarketMaker-v0 --scenario calm --obligations mifid \\
        --steps 50000 --lagrangian

:class:`LagrangianCallback` makes any SB3 on-policy algorithm a Lagrangian one: at every
step it subtracts ``lambda * info["cost"]`` from the rewards SB3 is about to store (SB3
calls ``callback.on_step()`` before ``rollout_buffer.add``, and ``rewards`` is the same
numpy array, changed in place; the episode returns VecMonitor reports stay the env's
own), and at the end of every rollout it updates the multiplier by dual ascent:

    lambda <- max(0, lambda + lr * (measured cost per step - limit))

The limit is a per-step cost rate (an episode-cost limit divided by the episode length).
The default, :func:`agents.ppo_lagrangian.summed_cost_limit`, is the sum of the
per-component limits of the rules in force: ``info["cost"]`` is the sum of the components.
One multiplier on the summed cost (the JAX PPO-Lagrangian keeps one per component).

:func:`sb3_to_checkpoint_params` converts SB3 PPO's default MlpPolicy (separate tanh MLPs
for pi and vf, a state-independent log-std) into agents/ppo.py's layout, so a trained SB3
model is saved and evaluated like a JAX one (agents/checkpoint.py).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


class LagrangianCallback(BaseCallback):
    """Applies ``lambda * info["cost"]`` to the rewards; dual ascent on lambda per rollout.

    limit: allowed cost per step; lr: dual-ascent step size; init: initial multiplier.
    ``history`` holds (num_timesteps, measured cost per step, lambda after the update).
    """

    def __init__(self, limit: float, lr: float = 0.5, init: float = 0.0, verbose: int = 0):
        super().__init__(verbose)
        if limit < 0 or lr <= 0 or init < 0:
            raise ValueError(f"LagrangianCallback: need limit >= 0, lr > 0, init >= 0 (got {limit}, {lr}, {init})")
        self.limit, self.lr, self.lam = float(limit), float(lr), float(init)
        self._cost_sum = 0.0
        self._cost_steps = 0
        self.history: list[tuple[int, float, float]] = []

    def _on_step(self) -> bool:
        costs = np.array([info.get("cost", 0.0) for info in self.locals["infos"]], np.float32)
        # in place: SB3 stores this very array in its rollout buffer after on_step()
        self.locals["rewards"] -= (self.lam * costs).astype(self.locals["rewards"].dtype)
        self._cost_sum += float(costs.sum())
        self._cost_steps += len(costs)
        return True

    def _on_rollout_end(self) -> None:
        if self._cost_steps == 0:
            return
        rate = self._cost_sum / self._cost_steps
        self.lam = max(0.0, self.lam + self.lr * (rate - self.limit))
        self.history.append((int(self.num_timesteps), rate, self.lam))
        self.logger.record("lagrangian/lambda", self.lam)
        self.logger.record("lagrangian/cost_per_step", rate)
        self._cost_sum, self._cost_steps = 0.0, 0


class ProgressCallback(BaseCallback):
    """Calls ``fn(num_timesteps, mean reward per step, mean cost per step)`` after every rollout."""

    def __init__(self, fn: Callable[[int, float, float], None]):
        super().__init__(0)
        self.fn = fn
        self._r: list[float] = []
        self._c: list[float] = []

    def _on_step(self) -> bool:
        self._r.append(float(np.mean(self.locals["rewards"])))
        self._c.append(float(np.mean([i.get("cost", 0.0) for i in self.locals["infos"]])))
        return True

    def _on_rollout_end(self) -> None:
        self.fn(int(self.num_timesteps), float(np.mean(self._r)) if self._r else float("nan"),
                float(np.mean(self._c)) if self._c else float("nan"))
        self._r, self._c = [], []


def make_vec_env(env_id: str, scenario: str, obligations: str, num_envs: int, seed: int,
                 shape: dict[str, int] | None = None, settings: Sequence[str] = ()):
    """VecMonitor(SB3VecEnv(CrashGymVectorEnv(...))), seeded; `settings` as `crashgym.make` takes them."""
    from stable_baselines3.common.vec_env import VecMonitor

    from crashgym.gym import CrashGymVectorEnv
    from crashgym.sb3 import SB3VecEnv

    venv = CrashGymVectorEnv(env_id, num_envs=num_envs, scenario=scenario, obligations=obligations, shape=shape or None,
                             settings=settings)
    env = VecMonitor(SB3VecEnv(venv))
    env.seed(seed)
    return env


def train_sb3(env_id: str = "MarketMaker-v0", scenario: str = "calm", obligations: str = "none", steps: int = 20_000,
              seed: int = 0, num_envs: int = 16, n_steps: int = 128, lagrangian: bool = False,
              limit: float | None = None, lagrange_lr: float = 0.5, shape: dict[str, int] | None = None,
              settings: Sequence[str] = (), on_rollout: Callable[[int, float, float], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train SB3 PPO (MlpPolicy) for `steps` env steps; with `lagrangian`, under a
    LagrangianCallback whose limit defaults to the obligation's summed per-step limit.
    Returns (model, stats) with stats: steps_per_second, seconds, mean_return, lagrange history."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import CallbackList

    from agents.ppo_lagrangian import summed_cost_limit
    from crashgym.obligations import load_obligations

    env = make_vec_env(env_id, scenario, obligations, num_envs, seed, shape, settings)
    batch = n_steps * num_envs
    model = PPO("MlpPolicy", env, n_steps=n_steps, batch_size=min(256, batch), n_epochs=4, seed=seed, verbose=0,
                device="cpu")
    callbacks: list[BaseCallback] = []
    lag = None
    if lagrangian:
        lag = LagrangianCallback(limit if limit is not None else summed_cost_limit(load_obligations(obligations)),
                                 lr=lagrange_lr)
        callbacks.append(lag)
    if on_rollout:
        callbacks.append(ProgressCallback(on_rollout))
    env.reset()  # compile the jitted reset and step before timing
    env.step(np.zeros((num_envs,) + env.action_space.shape, np.float32))
    env.seed(seed)
    t = time.perf_counter()
    model.learn(total_timesteps=steps, callback=CallbackList(callbacks))
    seconds = time.perf_counter() - t
    returns = [ep["r"] for ep in model.ep_info_buffer]
    stats = {
        "steps": int(model.num_timesteps), "seconds": seconds, "steps_per_second": model.num_timesteps / seconds,
        "mean_return": float(np.mean(returns)) if returns else float("nan"), "episodes": len(returns),
        "lagrange": lag.history if lag else [],
    }
    return model, stats


def sb3_to_checkpoint_params(model) -> dict[str, Any]:
    """SB3 PPO's default MlpPolicy as agents/ppo.py network params (numpy float32).

    Needs the default architecture: ``mlp_extractor.policy_net`` / ``value_net`` made of
    Linear + Tanh pairs, ``action_net`` and ``value_net`` linear heads, a log_std vector,
    and no observation normalization (the JAX normalizer is then the identity)."""
    import torch

    pol = model.policy
    if not isinstance(getattr(pol, "log_std", None), torch.nn.Parameter):
        raise ValueError("sb3_to_checkpoint_params: needs a Gaussian policy with a state-independent log_std")

    def layers(seq, head) -> list[dict[str, np.ndarray]]:
        out = []
        for m in list(seq) + [head]:
            if isinstance(m, torch.nn.Linear):
                out.append({"w": m.weight.detach().cpu().numpy().T.astype(np.float32).copy(),
                            "b": m.bias.detach().cpu().numpy().astype(np.float32).copy()})
            elif not isinstance(m, torch.nn.Tanh):
                raise ValueError(f"sb3_to_checkpoint_params: unsupported layer {m!r} (default tanh MlpPolicy only)")
        return out

    return {"actor": layers(pol.mlp_extractor.policy_net, pol.action_net),
            "critic": layers(pol.mlp_extractor.value_net, pol.value_net),
            "log_std": pol.log_std.detach().cpu().numpy().astype(np.float32).copy()}


def identity_normalizer(obs_dim: int) -> dict[str, np.ndarray]:
    # var = 1 - 1e-8 so that normalize() divides by exactly 1.0 in float32
    return {"mean": np.zeros(obs_dim, np.float32), "var": np.full(obs_dim, 1.0 - 1e-8, np.float32),
            "count": np.float32(0.0)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="MarketMaker-v0", choices=["MarketMaker-v0", "LeveragedTrader-v0"])
    ap.add_argument("--scenario", default="calm")
    ap.add_argument("--obligations", default="none")
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--n-steps", type=int, default=128)
    ap.add_argument("--lagrangian", action="store_true", help="apply a Lagrange multiplier to info['cost']")
    ap.add_argument("--limit", type=float, default=None, help="allowed cost per step (default: from the obligation)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    model, stats = train_sb3(args.env, args.scenario, args.obligations, args.steps, args.seed, args.num_envs,
                             args.n_steps, args.lagrangian, args.limit)
    print(f"{args.env} on {args.scenario} ({args.obligations}): {stats['steps']} steps, "
          f"{stats['steps_per_second']:.0f} steps/s, mean return {stats['mean_return']:.4f}")
    for t, rate, lam in stats["lagrange"]:
        print(f"  step {t}: cost/step {rate:.4f} -> lambda {lam:.4f}")
    return stats


if __name__ == "__main__":
    main()
