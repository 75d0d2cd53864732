"""Train Stable-Baselines3 PPO on a crashgym env through the SB3 VecEnv adapter.

    python -m agents.sb3_ppo --steps 20000 --scenario calm --num-envs 16

Prints the mean episode return of the finished episodes (and the mean per-step reward,
which is meaningful even when no episode finished within --steps).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="MarketMaker-v0", choices=["MarketMaker-v0", "LeveragedTrader-v0"])
    ap.add_argument("--steps", type=int, default=20_000, help="total env steps")
    ap.add_argument("--scenario", default="calm")
    ap.add_argument("--obligations", default="none")
    ap.add_argument("--num-envs", type=int, default=16)
    ap.add_argument("--n-steps", type=int, default=128, help="PPO rollout length per env")
    ap.add_argument("--episode-steps", type=int, default=None, help="override the scenario's episode length")
    ap.add_argument("--accounts", type=int, default=None, help="override the number of leveraged accounts")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    from crashgym.gym import CrashGymVectorEnv
    from crashgym.sb3 import SB3VecEnv

    shape = {}
    if args.episode_steps:
        shape["episode_steps"] = args.episode_steps
    if args.accounts:
        shape["n_accounts"] = args.accounts
    venv = CrashGymVectorEnv(args.env, num_envs=args.num_envs, scenario=args.scenario,
                             obligations=args.obligations, shape=shape or None)
    env = VecMonitor(SB3VecEnv(venv))
    env.seed(args.seed)
    batch = args.n_steps * args.num_envs
    model = PPO("MlpPolicy", env, n_steps=args.n_steps, batch_size=min(256, batch), n_epochs=4, seed=args.seed,
                verbose=0, device="cpu")
    rewards: list[float] = []

    from stable_baselines3.common.callbacks import BaseCallback

    class Rewards(BaseCallback):
        def _on_step(self) -> bool:
            rewards.append(float(np.mean(self.locals["rewards"])))
            return True

    env.reset()  # compile the jitted reset and step before timing
    env.step(np.zeros((args.num_envs,) + env.action_space.shape, np.float32))
    env.seed(args.seed)
    t = time.perf_counter()
    model.learn(total_timesteps=args.steps, callback=Rewards())
    seconds = time.perf_counter() - t
    returns = [ep["r"] for ep in model.ep_info_buffer]
    out = {
        "mean_return": float(np.mean(returns)) if returns else float("nan"),
        "episodes": float(len(returns)),
        "mean_step_reward": float(np.mean(rewards)) if rewards else float("nan"),
        "steps_per_second": model.num_timesteps / seconds,
    }
    print(f"{args.env} on {args.scenario}: {model.num_timesteps} steps, {len(returns)} episodes, "
          f"mean return {out['mean_return']:.4f}, mean step reward {out['mean_step_reward']:.5f}, "
          f"{out['steps_per_second']:.0f} steps/s")
    return out


if __name__ == "__main__":
    main()
