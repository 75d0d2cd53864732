"""Follow-up to benchmarks/learning.py: PPO vs the heuristics on calm when inventory is
penalized (AgentParams.inventory_penalty), i.e. when marking a huge inventory at the mark
price no longer pays. Appends its section to benchmarks/LEARNING.md and writes
benchmarks/learning_penalty.json.

    JAX_COMPILATION_CACHE_DIR=.jax_cache python benchmarks/learning_penalty.py --penalty 0.01

Reward per step = 100 x equity change / capital - penalty x (|inventory| x mark / capital)^2,
so with --penalty 0.01 holding one capital's worth of inventory for a whole 1080-step
episode costs 10.8 (10.8% of capital) in reward; every agent is scored with the same reward.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import crashgym  # noqa: E402
from agents import evaluate, ppo  # noqa: E402
from crashgym.obligations import COMPONENTS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from learning import ci, log  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--penalty", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=4_000_000)
    ap.add_argument("--num-envs", type=int, default=1024)
    ap.add_argument("--episodes", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-seed", type=int, default=1_000_003)
    ap.add_argument("--md", default=os.path.join(HERE, "LEARNING.md"))
    ap.add_argument("--json", default=os.path.join(HERE, "learning_penalty.json"))
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    market = {"agent": {"inventory_penalty": args.penalty}}
    env, params = crashgym.make("MarketMaker-v0", scenario="calm", market=market)
    config = ppo.PPOConfig(num_envs=args.num_envs, num_steps=30, total_steps=args.steps, seed=args.seed)
    log(f"train ppo on calm with inventory_penalty {args.penalty}: {args.steps:,} steps")
    res = ppo.train(config, env, params, component_names=COMPONENTS,
                    on_chunk=lambda d, t, m: log(f"  {d:,}/{t:,} reward/step {np.mean(m['reward_per_step'][-1]):.5f}"))
    log(f"  {res.env_steps:,} steps, {res.steps_per_second:,.0f} env-steps/s incl. learning")
    agents = {"fixed-spread": evaluate.heuristic("fixed-spread"),
              "avellaneda-stoikov": evaluate.heuristic("avellaneda-stoikov"),
              "withdraw-on-vol": evaluate.heuristic("withdraw-on-vol"),
              "ppo (penalized)": evaluate.from_params(*ppo.seed_slice(res.runner, 0))}
    results = {}
    for name, pol in agents.items():
        results[name] = evaluate.evaluate(env, params, pol, episodes=args.episodes, seed=args.eval_seed)
        log(f"  eval {name}: return {results[name].episode['return'].mean():.4f}")
    ppo_ret = results["ppo (penalized)"].episode["return"]
    gaps = {h: evaluate.paired_gap(ppo_ret, results[h].episode["return"])
            for h in ("fixed-spread", "avellaneda-stoikov")}
    rows = {name: {"return": ci(r.episode["return"])[0], "return_ci95": ci(r.episode["return"])[1],
                   "pnl": float(r.episode["pnl"].mean()),
                   "max_abs_inventory": float(r.episode["max_abs_inventory"].mean()),
                   "final_inventory": float(np.abs(r.episode["final_inventory"]).mean())}
            for name, r in results.items()}
    out = {"penalty": args.penalty, "env_steps": res.env_steps, "steps_per_second": res.steps_per_second,
           "rows": rows, "gaps": gaps, "loadavg_start": load0, "loadavg_end": os.getloadavg(), "args": {k: v for k, v in vars(args).items() if k not in ("md", "json")}}
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=2)
    lines = [
        "",
        f"## (b') PPO vs heuristics on calm with an inventory penalty ({args.penalty})",
        "",
        f"`python benchmarks/learning_penalty.py --penalty {args.penalty} --steps {args.steps}` "
        f"([learning_penalty.json](learning_penalty.json)); {res.env_steps:,} training steps, "
        f"{args.episodes} held-out episodes, every agent scored with the same penalized reward.",
        "",
        "| agent | return (mean ± 95% CI) | P&L USD | max abs inventory (lots) | final abs inventory |",
        "|---|---:|---:|---:|---:|",
        *[f"| {n} | {r['return']:.4f} ± {r['return_ci95']:.4f} | {r['pnl']:,.0f} | {r['max_abs_inventory']:.0f} | "
          f"{r['final_inventory']:.0f} |" for n, r in rows.items()],
        "",
        *[f"- PPO minus {h}: {v['gap']:+.4f} [{v['ci95_low']:+.4f}, {v['ci95_high']:+.4f}] (n = {v['n']})"
          for h, v in gaps.items()],
        "",
    ]
    with open(args.md, "a") as fh:
        fh.write("\n".join(lines) + "\n")
    log(f"appended to {os.path.basename(args.md)}, wrote {os.path.basename(args.json)}")
    return out


if __name__ == "__main__":
    main()
