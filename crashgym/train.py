"""`crashgym train`: train an agent and write a checkpoint that `crashgym run --agent PATH` evaluates.

    crashgym train --env MarketMaker-v0 --scenario calm --algo ppo --steps 2000000
    crashgym train --env MarketMaker-v0 --scenario calm --obligations mifid --algo ppo-lag --steps 2000000
    crashgym train --env LeveragedTrader-v0 --scenario oct10 --algo sb3-ppo --steps 50000

Algorithms: ``ppo`` (agents/ppo.py, end-to-end jitted JAX PPO), ``ppo-lag`` (agents/
ppo_lagrangian.py, one multiplier per obligation component), ``sb3-ppo`` (Stable-Baselines3
PPO through crashgym.sb3; with ``--obligations`` other than none it trains under
agents/sb3_lagrangian.py's LagrangianCallback unless ``--no-lagrangian``).

The agents live in the ``agents`` package, imported here only when the command runs (the
library never depends on them). JSON (``--json``): {"env", "scenario", "algo", "steps",
"steps_per_second", "checkpoint"}, plus a few extra keys (obligations, seeds, seconds,
compile_seconds, final metrics, logdir).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any

ALGOS = ("ppo", "ppo-lag", "sb3-ppo")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", default="MarketMaker-v0", help="MarketMaker-v0 or LeveragedTrader-v0")
    p.add_argument("--scenario", default="calm", help="scenario name (configs/scenarios) or TOML path")
    p.add_argument("--obligations", default="none", help="obligation rule set (configs/obligations) or TOML path")
    p.add_argument("--algo", default="ppo", choices=ALGOS)
    p.add_argument("--steps", type=int, default=1_000_000, help="env steps per seed (rounded up to whole chunks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="JAX algos: independent seeds trained side by side; "
                   "the checkpoint keeps the best")
    p.add_argument("--num-envs", type=int, default=None, help="environments per seed (default 1024 JAX, 16 SB3)")
    p.add_argument("--num-steps", type=int, default=None,
                   help="rollout length per env (default 30 JAX, lowered to a divisor of the episode; 128 SB3)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lagrange-lr", type=float, default=0.5, help="dual-ascent step of the Lagrange multipliers")
    p.add_argument("--no-lagrangian", action="store_true", help="sb3-ppo: ignore the obligation's costs")
    p.add_argument("--episode-steps", type=int, default=None, help="override the scenario's episode length")
    p.add_argument("--accounts", type=int, default=None, help="override the number of leveraged accounts")
    p.add_argument("--checkpoint", default=None, help="checkpoint path (default out/<env>-<scenario>-<algo>.npz)")
    p.add_argument("--logdir", default=None, help="learning curves (CSV + TensorBoard; default <checkpoint>.logs)")
    p.add_argument("--json", default=None)
    from crashgym.cli import add_set_argument

    add_set_argument(p)


def _shape_overrides(args: argparse.Namespace) -> dict[str, int]:
    shape: dict[str, int] = {}
    if args.episode_steps:
        shape["episode_steps"] = args.episode_steps
    if args.accounts:
        shape["n_accounts"] = args.accounts
        shape["turnover_slots"] = min(4, args.accounts)
    return shape


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
                    TextColumn("return/ep {task.fields[ret]}  reward/step {task.fields[rps]}  "
                               "cost/step {task.fields[cost]}"),
                    TimeElapsedColumn())


def _fmt(x: float) -> str:
    return "-" if x != x else f"{x:.4g}"  # NaN -> "-"


# XLA:CPU's multi-threaded Eigen pool can wedge in the training loop with jax 0.10 (the
# computation never finishes, the CPU idles); single-threaded Eigen avoids it. Only takes
# effect when JAX has not started its backend yet, as is the case in a `crashgym train` process.
NO_EIGEN_THREADS = "--xla_cpu_multi_thread_eigen=false"


def run(args: argparse.Namespace) -> dict[str, Any]:
    if NO_EIGEN_THREADS not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + NO_EIGEN_THREADS).strip()
    import numpy as np

    import crashgym
    from crashgym.cli import output_path
    from crashgym.config import ConfigError
    from crashgym.obligations import COMPONENTS, load_obligations
    from crashgym.scenarios import parse_settings

    if args.steps < 1:
        raise SystemExit("error: --steps must be >= 1")
    if args.seeds < 1:
        raise SystemExit("error: --seeds must be >= 1")
    try:
        from agents import checkpoint as ckpt_mod
    except ImportError as e:
        raise SystemExit(f"crashgym train: the agents package is not importable ({e})") from None
    shape = _shape_overrides(args)
    settings = getattr(args, "settings", None) or []
    try:
        ob = load_obligations(args.obligations)
        env, env_params = crashgym.make(args.env, scenario=args.scenario, obligations=ob, shape=shape or None,
                                        settings=settings)
        market = parse_settings(settings).get("market", {})  # the checkpoint rebuilds its env with these
    except (ConfigError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    scenario = os.path.basename(args.scenario).removesuffix(".toml")
    obligations = os.path.basename(args.obligations).removesuffix(".toml")
    path = args.checkpoint or os.path.join("out", f"{args.env}-{scenario}-{args.algo}.npz")
    if not path.endswith(".npz"):
        path += ".npz"
    output_path(path)
    logdir = args.logdir or path.removesuffix(".npz") + ".logs"

    extra: dict[str, Any] = {}
    with _progress() as bar:
        task = bar.add_task("train", total=args.steps * (args.seeds if args.algo != "sb3-ppo" else 1),
                            ret="-", rps="-", cost="-")
        if args.algo in ("ppo", "ppo-lag"):
            from agents import ppo, ppo_lagrangian

            config = ppo.PPOConfig(num_envs=args.num_envs or 1024, num_steps=args.num_steps or 30,
                                   total_steps=args.steps, num_seeds=args.seeds, lr=args.lr, seed=args.seed)
            batch = config.num_envs * config.rollout_steps(int(env_params.max_steps))
            config = dataclasses.replace(config, num_minibatches=next(m for m in (8, 4, 2, 1) if batch % m == 0))
            constraint = ppo_lagrangian.constraint_for(ob, lr=args.lagrange_lr) if args.algo == "ppo-lag" else None

            def on_chunk(done: int, total: int, m: dict[str, Any]) -> None:
                finished = np.isfinite(m["episode_return"]).any()
                bar.update(task, total=total * args.seeds, completed=done * args.seeds,
                           ret=_fmt(float(np.nanmean(m["episode_return"]))) if finished else "-",
                           rps=_fmt(float(np.mean(m["reward_per_step"][-1]))),
                           cost=_fmt(float(np.mean(m["cost_per_step"][-1]))))

            result = ppo.train(config, env, env_params, constraint=constraint, logdir=logdir, on_chunk=on_chunk,
                               component_names=COMPONENTS)
            best = result.best_seed()
            params, norm = ppo.seed_slice(result.runner, best)
            steps_done, sps = result.env_steps, result.steps_per_second
            extra = {"seconds": result.seconds, "compile_seconds": result.compile_seconds, "best_seed": best,
                     "final_reward_per_step": float(np.mean(result.metrics["reward_per_step"][-1])),
                     "final_cost_per_step": float(np.mean(result.metrics["cost_per_step"][-1]))}
            if constraint is not None:
                extra["lagrange"] = dict(zip(COMPONENTS, map(float, result.metrics["lagrange"][-1][best])))
            cfg = dataclasses.asdict(config)
        else:
            from agents import sb3_lagrangian

            lagrangian = int(ob.active) == 1 and not args.no_lagrangian
            num_envs = args.num_envs or 16

            def on_rollout(t: int, rps: float, cost: float) -> None:
                bar.update(task, completed=min(t, args.steps), rps=_fmt(rps), cost=_fmt(cost))

            model, stats = sb3_lagrangian.train_sb3(
                args.env, args.scenario, args.obligations, args.steps, args.seed, num_envs, args.num_steps or 128,
                lagrangian=lagrangian, lagrange_lr=args.lagrange_lr, shape=shape or None, settings=settings,
                on_rollout=on_rollout)
            params = sb3_lagrangian.sb3_to_checkpoint_params(model)
            norm = sb3_lagrangian.identity_normalizer(env.observation_space(env_params).shape[0])
            steps_done, sps = stats["steps"], stats["steps_per_second"]
            extra = {"seconds": stats["seconds"], "mean_return": stats["mean_return"], "lagrangian": lagrangian}
            if lagrangian:
                extra["lagrange"] = stats["lagrange"][-1][2] if stats["lagrange"] else 0.0
            cfg = {"num_envs": num_envs, "n_steps": args.num_steps or 128, "lagrangian": lagrangian}
        bar.update(task, completed=bar.tasks[0].total)

    meta = ckpt_mod.metadata_for(args.env, scenario, obligations, ob, args.algo, env.shape, env_params, env,
                                 market=market, seed=args.seed, env_steps=int(steps_done), config=cfg)
    path = ckpt_mod.save(path, params, norm, meta)
    result_json = {"env": args.env, "scenario": scenario, "algo": args.algo, "steps": int(steps_done),
                   "steps_per_second": float(sps), "checkpoint": path, "obligations": obligations,
                   "seeds": args.seeds if args.algo != "sb3-ppo" else 1,
                   "logdir": logdir if args.algo != "sb3-ppo" else None,
                   **extra}
    if settings:  # only then, as for `crashgym run`
        result_json["settings"] = settings
    print(f"trained {args.algo} on {args.env}/{scenario} ({obligations}): {steps_done} steps per seed, "
          f"{sps:,.0f} env-steps/s; checkpoint {path}")
    if args.json:
        with open(output_path(args.json), "w") as fh:
            json.dump(result_json, fh, indent=2)
        print(f"wrote {args.json}")
    return result_json
