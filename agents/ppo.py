"""PPO in JAX, trained end to end under ``jax.jit`` (the PureJaxRL pattern).

Read top to bottom:

1. ``PPOConfig``: every knob, with units.
2. The network: two tanh MLPs (actor mean + a state-independent log-std; critic with one
   value head for the reward and, for PPO-Lagrangian, one per cost).
3. Observation normalization: running mean / variance (parallel-moments update), kept
   in the train state and in the checkpoint.
4. ``make_train``: ``init(key)`` and a jitted ``train_chunk(runner)``: one chunk is one
   episode of every environment: reset ``num_seeds * num_envs`` environments, then one
   ``lax.scan`` over ``max_steps / num_steps`` updates, each = a rollout of ``num_steps``
   steps (``env.step_batch``) + GAE + ``update_epochs`` epochs of clipped-PPO minibatch
   updates. The environments of all seeds step as one flat batch (so the market's
   batch-level shortcuts, e.g. running ADL only when some market needs it, stay real
   branches); the networks and optimizers are ``vmap``-ed over seeds.
   With several local devices the flat env batch is split over them (``crashgym.sharding``);
   the networks are replicated.
5. ``train``: the Python driver that calls ``train_chunk`` until the budget is spent and
   logs learning curves (CSV and TensorBoard event files) between chunks.

Resets: all episodes start together at the chunk's start and are truncated together at
its end (``num_steps`` is lowered to a divisor of the episode length if needed). An
environment whose agent is liquidated earlier (terminated) keeps stepping, frozen out:
its later transitions get zero advantage and a value target equal to the value, so they
teach nothing. Resetting inside the step loop instead would need a reset (several times
the cost of a step here) on every step under ``jnp.where``, or a ``lax.cond`` around the
reset (which deadlocked XLA:CPU in this program with jax 0.10).

Truncation is treated as termination in GAE: the observation carries ``time_left``, so
the value of the last step of an episode is well defined as 0.

PPO-Lagrangian (agents/ppo_lagrangian.py) passes a ``Constraint``: K cost heads, K
Lagrange multipliers updated by dual ascent after every rollout, and the advantage
``(A_r - sum_k lambda_k A_ck) / (1 + sum_k lambda_k)``. Without it (plain PPO) K = 0 and
that code is skipped at trace time.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from crashgym import sharding

Array = jax.Array
Params = dict[str, Any]

# ----------------------------------------------------------------------------- 1. config


@dataclasses.dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters (per seed unless said otherwise)."""

    num_envs: int = 1024  # environments per seed
    num_steps: int = 30  # rollout length per environment, steps (a divisor of the episode length)
    total_steps: int = 1_000_000  # env steps per seed (rounded up to whole episodes of all envs)
    num_seeds: int = 1  # independent runs trained side by side (vmapped)
    update_epochs: int = 4
    num_minibatches: int = 8
    lr: float = 3e-4
    anneal_lr: bool = True
    gamma: float = 0.99  # per step (10 s): a horizon of ~100 steps (~17 min)
    gae_lambda: float = 0.95
    clip_eps: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: tuple[int, ...] = (64, 64)
    init_log_std: float = -0.5
    seed: int = 0

    def rollout_steps(self, episode_steps: int) -> int:
        """num_steps, lowered to the largest divisor of the episode length."""
        return max(d for d in range(1, min(self.num_steps, episode_steps) + 1) if episode_steps % d == 0)

    def plan(self, episode_steps: int) -> tuple[int, int, int]:
        """(rollout steps T, updates per chunk (= per episode), chunks) for this episode length."""
        T = self.rollout_steps(episode_steps)
        chunks = max(1, math.ceil(self.total_steps / (episode_steps * self.num_envs)))
        return T, episode_steps // T, chunks

    def validate(self) -> None:
        for name in ("num_envs", "num_steps", "total_steps", "num_seeds", "update_epochs", "num_minibatches"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"PPOConfig.{name} must be a positive int, got {getattr(self, name)!r}")


class Constraint(NamedTuple):
    """What PPO-Lagrangian adds (see agents/ppo_lagrangian.py). limits: (K,) per-step cost
    rate allowed for each cost component; lr: dual-ascent step; init: initial multipliers."""

    limits: tuple[float, ...]
    lr: float = 0.5
    init: float = 0.0


# ----------------------------------------------------------------------------- 2. network


def _dense_init(key: Array, n_in: int, n_out: int, scale: float) -> dict[str, Array]:
    return {"w": jax.nn.initializers.orthogonal(scale)(key, (n_in, n_out), jnp.float32),
            "b": jnp.zeros((n_out,), jnp.float32)}


def _mlp_init(key: Array, sizes: list[int], out_scale: float) -> list[dict[str, Array]]:
    keys = jax.random.split(key, len(sizes) - 1)
    n = len(sizes) - 1
    return [_dense_init(k, a, b, out_scale if i == n - 1 else math.sqrt(2.0))
            for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:]))]


def _mlp(layers: list[dict[str, Array]], x: Array) -> Array:
    for layer in layers[:-1]:
        x = jnp.tanh(x @ layer["w"] + layer["b"])
    return x @ layers[-1]["w"] + layers[-1]["b"]


def init_network(key: Array, obs_dim: int, action_dim: int, hidden: tuple[int, ...], n_values: int = 1,
                 init_log_std: float = -0.5) -> Params:
    """Actor (mean) and critic (n_values heads: reward value, then one per cost)."""
    ka, kc = jax.random.split(key)
    return {
        "actor": _mlp_init(ka, [obs_dim, *hidden, action_dim], 0.01),
        "critic": _mlp_init(kc, [obs_dim, *hidden, n_values], 1.0),
        "log_std": jnp.full((action_dim,), init_log_std, jnp.float32),
    }


def forward(params: Params, obs: Array) -> tuple[Array, Array, Array]:
    """(action mean, log_std, values (..., n_values)) for normalized observations."""
    return _mlp(params["actor"], obs), params["log_std"], _mlp(params["critic"], obs)


def log_prob(mean: Array, log_std: Array, action: Array) -> Array:
    z = (action - mean) / jnp.exp(log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


def entropy(log_std: Array) -> Array:
    return jnp.sum(log_std + 0.5 * math.log(2 * math.pi * math.e))


def act_deterministic(params: Params, norm: dict[str, Array], obs: Array) -> Array:
    """The policy's mean action, clipped to the [-1, 1] box (evaluation / checkpoints)."""
    return jnp.clip(_mlp(params["actor"], normalize(norm, obs)), -1.0, 1.0)  # the actor only


# ----------------------------------------------------------------------------- 3. obs normalization


def init_normalizer(obs_dim: int) -> dict[str, Array]:
    return {"mean": jnp.zeros(obs_dim, jnp.float32), "var": jnp.ones(obs_dim, jnp.float32),
            "count": jnp.float32(1e-4)}


def update_normalizer(norm: dict[str, Array], batch: Array) -> dict[str, Array]:
    """Merge a batch's moments into the running ones (Chan et al. parallel algorithm)."""
    batch = batch.reshape(-1, batch.shape[-1])
    b_mean, b_var, b_count = batch.mean(0), batch.var(0), jnp.float32(batch.shape[0])
    delta = b_mean - norm["mean"]
    total = norm["count"] + b_count
    mean = norm["mean"] + delta * b_count / total
    m2 = norm["var"] * norm["count"] + b_var * b_count + delta**2 * norm["count"] * b_count / total
    return {"mean": mean, "var": m2 / total, "count": total}


def normalize(norm: dict[str, Array], obs: Array) -> Array:
    return jnp.clip((obs - norm["mean"]) / jnp.sqrt(norm["var"] + 1e-8), -10.0, 10.0)


# ----------------------------------------------------------------------------- 4. the compiled loop


class Transition(NamedTuple):
    obs: Array  # normalized, (S, N, D)
    raw_obs: Array  # as the env gave it (for the normalizer's update)
    action: Array  # (S, N, A)
    logp: Array  # (S, N)
    values: Array  # (S, N, V)
    reward: Array  # (S, N)
    costs: Array  # (S, N, C) all obligation components
    done: Array  # (S, N) terminated or truncated on this step
    live: Array  # (S, N) 1 until the step that ends the episode (included), then 0
    compliant: Array  # (S, N)


def gae(values: Array, rewards: Array, dones: Array, last_value: Array, gamma: float, lam: float
        ) -> tuple[Array, Array]:
    """Generalized advantage estimation over time (axis 0). values/rewards (T, ...), dones
    (T, ...) broadcastable; returns (advantages, value targets)."""

    def body(carry, x):
        adv, next_value = carry
        value, reward, done = x
        delta = reward + gamma * next_value * (1.0 - done) - value
        adv = delta + gamma * lam * (1.0 - done) * adv
        return (adv, value), adv

    _, advantages = jax.lax.scan(body, (jnp.zeros_like(last_value), last_value), (values, rewards, dones), reverse=True)
    return advantages, advantages + values


def _standardize(x: Array) -> Array:
    return (x - x.mean()) / (x.std() + 1e-8)


def make_train(config: PPOConfig, env, env_params, constraint: Constraint | None = None
               ) -> tuple[Callable[[Array], dict], Callable[[dict], tuple[dict, dict]]]:
    """Returns ``(init, train_chunk)``. ``init(key)`` builds the runner state (networks,
    optimizers, normalizers and multipliers per seed); ``train_chunk(runner)`` (jitted)
    runs one episode of every environment, i.e. ``max_steps / T`` updates in one
    ``lax.scan``, and returns the new runner and per-update metrics shaped (updates, seeds, ...)."""
    config.validate()
    S, N = config.num_seeds, config.num_envs
    T, U, chunks = config.plan(int(env_params.max_steps))
    if (N * T) % config.num_minibatches:
        raise ValueError(f"PPOConfig: num_envs * rollout steps ({N} * {T}) must divide into "
                         f"num_minibatches ({config.num_minibatches})")
    obs_dim = env.observation_space(env_params).shape[0]
    act_dim = env.action_space(env_params).shape[0]
    K = 0 if constraint is None else len(constraint.limits)
    limits = jnp.zeros((0,), jnp.float32) if constraint is None else jnp.asarray(constraint.limits, jnp.float32)
    batch = N * T
    minibatch = batch // config.num_minibatches
    schedule_steps = chunks * U * config.update_epochs * config.num_minibatches
    lr = optax.linear_schedule(config.lr, 0.0, schedule_steps) if config.anneal_lr else config.lr
    optimizer = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), optax.adam(lr, eps=1e-5))
    reset_all = jax.vmap(env.reset, in_axes=(0, None))
    # The flat env batch (seeds x envs) is split over all local devices; networks are replicated.
    env_sharding = sharding.batch_sharding() if (S * N) % jax.local_device_count() == 0 else None
    per_seed = lambda x: x.reshape((S, N) + x.shape[1:])  # noqa: E731  flat env batch -> (seeds, envs, ...)

    def init(key: Array) -> dict:
        k_net, k_env, k_run = jax.random.split(key, 3)
        nets = jax.vmap(lambda k: init_network(k, obs_dim, act_dim, config.hidden, 1 + K, config.init_log_std))(
            jax.random.split(k_net, S))
        obs, _ = reset_all(jax.random.split(k_env, S * N), env_params)
        norm = jax.vmap(lambda _: init_normalizer(obs_dim))(jnp.arange(S))
        norm = jax.vmap(update_normalizer)(norm, per_seed(obs))
        return {"params": nets, "opt": jax.vmap(optimizer.init)(nets), "norm": norm,
                "lagrange": jnp.full((S, K), 0.0 if constraint is None else constraint.init, jnp.float32),
                "key": k_run, "update": jnp.int32(0)}

    # -- one environment step for every seed: act, step the flat batch
    def env_step(carry, _):
        r, e = carry
        key, k_act, k_step = jax.random.split(e["key"], 3)
        raw = per_seed(e["obs"])
        obs_n = jax.vmap(normalize)(r["norm"], raw)
        mean, log_std, values = jax.vmap(forward)(r["params"], obs_n)
        action = mean + jnp.exp(log_std)[:, None, :] * jax.random.normal(k_act, mean.shape)
        logp = jax.vmap(log_prob)(mean, log_std, action)
        obs, env_state, reward, term, trunc, info = env.step_batch(
            jax.random.split(k_step, S * N), e["env_state"], action.reshape(S * N, act_dim), env_params)
        alive = e["alive"]
        live = alive.astype(jnp.float32)
        obs, env_state = sharding.constrain((obs, env_state), env_sharding)
        e = {"key": key, "env_state": env_state, "obs": obs, "alive": alive & ~(term | trunc),
             "terminated": e["terminated"] | (alive & term),
             "return": e["return"] + live * reward, "cost": e["cost"] + live * info["cost"],
             "compliant": e["compliant"] + live * info["compliant"], "steps": e["steps"] + live}
        t = Transition(obs=obs_n, raw_obs=raw, action=action, logp=logp, values=values, reward=per_seed(reward),
                       costs=per_seed(info["costs"]), done=per_seed((term | trunc).astype(jnp.float32)),
                       live=per_seed(live), compliant=per_seed(info["compliant"].astype(jnp.float32)))
        return (r, e), t

    # -- the PPO loss of one seed on one minibatch
    def loss_fn(params, lagrange, mb):
        mean, log_std, values = forward(params, mb["obs"])
        logp = log_prob(mean, log_std, mb["action"])
        ratio = jnp.exp(logp - mb["logp"])
        adv = _standardize(mb["adv"][:, 0])
        if K:  # PPO-Lagrangian: penalize each cost's advantage by its multiplier
            cost_adv = jax.vmap(_standardize, in_axes=1, out_axes=1)(mb["adv"][:, 1:])
            adv = (adv - cost_adv @ lagrange) / (1.0 + jnp.sum(lagrange))
        adv = adv * mb["live"]  # steps after a termination teach nothing
        pg = -jnp.mean(jnp.minimum(ratio * adv, jnp.clip(ratio, 1 - config.clip_eps, 1 + config.clip_eps) * adv))
        v_clipped = mb["values"] + jnp.clip(values - mb["values"], -config.clip_eps, config.clip_eps)
        vf = 0.5 * jnp.mean(jnp.maximum((values - mb["targets"]) ** 2, (v_clipped - mb["targets"]) ** 2).sum(-1)
                            * mb["live"])
        ent = entropy(log_std)
        total = pg + config.vf_coef * vf - config.ent_coef * ent
        approx_kl = jnp.mean((ratio - 1.0) - jnp.log(ratio))
        return total, {"pg_loss": pg, "vf_loss": vf, "entropy": ent, "approx_kl": approx_kl,
                       "clip_frac": jnp.mean(jnp.abs(ratio - 1.0) > config.clip_eps)}

    # -- update epochs of one seed
    def update_seed(params, opt, lagrange, data, key):
        def epoch(carry, k):
            perm = jax.random.permutation(k, batch)
            shuffled = jax.tree_util.tree_map(
                lambda x: x[perm].reshape((config.num_minibatches, minibatch) + x.shape[1:]), data)

            def step(carry, mb):
                params, opt = carry
                grads, stats = jax.grad(loss_fn, has_aux=True)(params, lagrange, mb)
                updates, opt = optimizer.update(grads, opt, params)
                return (optax.apply_updates(params, updates), opt), stats

            return jax.lax.scan(step, carry, shuffled)

        (params, opt), stats = jax.lax.scan(epoch, (params, opt), jax.random.split(key, config.update_epochs))
        return params, opt, jax.tree_util.tree_map(jnp.mean, stats)

    # -- one update: rollout, GAE, PPO epochs, dual ascent, normalizer
    def one_update(carry, u):
        (r, e), traj = jax.lax.scan(env_step, carry, None, length=T)  # traj: (T, S, N, ...)
        last_values = jax.vmap(forward)(r["params"], jax.vmap(normalize)(r["norm"], per_seed(e["obs"])))[2]
        signals = traj.reward[..., None]
        if K:
            signals = jnp.concatenate([signals, traj.costs[..., :K]], axis=-1)  # (T, S, N, 1 + K)
        adv, targets = gae(traj.values, signals, traj.done[..., None], last_values, config.gamma, config.gae_lambda)
        targets = jnp.where(traj.live[..., None] > 0, targets, traj.values)

        def flat(x):  # (T, S, N, ...) -> (S, T * N, ...)
            x = jnp.swapaxes(x, 0, 1)
            return x.reshape((S, T * N) + x.shape[3:])

        data = {"obs": flat(traj.obs), "action": flat(traj.action), "logp": flat(traj.logp), "live": flat(traj.live),
                "values": flat(traj.values), "adv": flat(adv), "targets": flat(targets)}
        key, k_up = jax.random.split(r["key"])
        params, opt, stats = jax.vmap(update_seed)(r["params"], r["opt"], r["lagrange"], data,
                                                   jax.random.split(k_up, S))
        live = jnp.maximum(traj.live.sum(axis=(0, 2)), 1.0)  # (S,)
        cost_rate = (traj.costs * traj.live[..., None]).sum(axis=(0, 2)) / live[:, None]  # (S, C) per live step
        lagrange = r["lagrange"]
        if K:  # dual ascent: raise lambda_k while the measured cost rate exceeds its limit
            lagrange = jnp.maximum(lagrange + constraint.lr * (cost_rate[:, :K] - limits), 0.0)
        norm = jax.vmap(update_normalizer)(r["norm"], jnp.swapaxes(traj.raw_obs, 0, 1))
        last = u == U - 1  # the episode of every env is over after the chunk's last update
        ep_steps = jnp.maximum(per_seed(e["steps"]), 1.0)
        episode = lambda x: jnp.where(last, per_seed(x).mean(1), jnp.nan)  # noqa: E731
        metrics = {
            **stats,
            "reward_per_step": (traj.reward * traj.live).sum(axis=(0, 2)) / live,
            "cost_per_step": cost_rate.sum(-1),
            "cost_rate": cost_rate,  # (S, C)
            "violation_rate": ((traj.costs > 0) * traj.live[..., None]).sum(axis=(0, 2)) / live[:, None],
            "compliant_rate": (traj.compliant * traj.live).sum(axis=(0, 2)) / live,
            "lagrange": lagrange,  # (S, K)
            "episode_return": episode(e["return"]),
            "episode_cost": episode(e["cost"]),
            "episode_presence": jnp.where(last, (per_seed(e["compliant"]) / ep_steps).mean(1), jnp.nan),
            "episode_terminated": episode(e["terminated"].astype(jnp.float32)),
        }
        r = {**r, "params": params, "opt": opt, "norm": norm, "lagrange": lagrange, "key": key,
             "update": r["update"] + 1}
        return (r, e), metrics

    @jax.jit
    def train_chunk(runner: dict) -> tuple[dict, dict]:
        key, k_reset, k_env = jax.random.split(runner["key"], 3)
        obs, env_state = sharding.constrain(reset_all(jax.random.split(k_reset, S * N), env_params), env_sharding)
        zeros = jnp.zeros((S * N,), jnp.float32)
        e = {"key": k_env, "env_state": env_state, "obs": obs, "alive": jnp.ones((S * N,), bool),
             "terminated": jnp.zeros((S * N,), bool),
             "return": zeros, "cost": zeros, "compliant": zeros, "steps": zeros}
        (runner, _), metrics = jax.lax.scan(one_update, ({**runner, "key": key}, e), jnp.arange(U))
        return runner, metrics

    return init, train_chunk


# ----------------------------------------------------------------------------- 5. driver and logging


class CurveLogger:
    """Learning curves: one CSV row per (update, seed) and TensorBoard scalars
    (``seed<k>/<metric>``) written with tensorboard's event-file writer when installed."""

    def __init__(self, logdir: str | None, component_names: tuple[str, ...] = ()):
        self.logdir = logdir
        self.components = component_names
        self._csv = None
        self._tb = None
        if logdir:
            os.makedirs(logdir, exist_ok=True)
            self._file = open(os.path.join(logdir, "curves.csv"), "w", newline="")
            self._csv = csv.writer(self._file)
            self._header: list[str] | None = None
            try:
                from tensorboard.summary import Writer
            except ImportError:  # optional: the 'agents' extra installs it
                Writer = None
            self._tb = Writer(logdir) if Writer is not None else None

    def _flatten(self, metrics: dict[str, np.ndarray], u: int, s: int) -> dict[str, float]:
        row = {}
        for name, v in metrics.items():
            x = np.asarray(v[u, s])
            if x.ndim == 0:
                row[name] = float(x)
            else:
                names = self.components if name != "lagrange" else self.components[: x.shape[0]]
                for i, xi in enumerate(x):
                    row[f"{name}/{names[i] if i < len(names) else i}"] = float(xi)
        return row

    def log(self, metrics: dict[str, np.ndarray], first_update: int, steps_per_update: int) -> None:
        if not self.logdir:
            return
        n_updates, n_seeds = np.asarray(metrics["pg_loss"]).shape
        for u in range(n_updates):
            step = (first_update + u + 1) * steps_per_update
            for s in range(n_seeds):
                row = self._flatten(metrics, u, s)
                if self._header is None:
                    self._header = ["update", "env_steps", "seed", *row]
                    self._csv.writerow(self._header)
                self._csv.writerow([first_update + u + 1, step, s, *(row[k] for k in self._header[3:])])
                if self._tb is not None:
                    for k, v in row.items():
                        if np.isfinite(v):
                            self._tb.add_scalar(f"seed{s}/{k}", v, step)
        self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self.logdir:
            self._file.close()
            if self._tb is not None:
                self._tb.close()


@dataclasses.dataclass
class TrainResult:
    runner: dict  # final runner state (params, norm, lagrange per seed)
    metrics: dict[str, np.ndarray]  # per update, per seed
    env_steps: int  # per seed
    seconds: float  # wall time of all chunks (training: rollouts and updates), compile excluded
    compile_seconds: float  # wall time of compiling train_chunk
    steps_per_second: float  # env steps of all seeds per second of training (learning included)

    def best_seed(self, last: int = 5) -> int:
        """The seed with the highest mean reward per step over the last `last` updates."""
        r = self.metrics["reward_per_step"][-last:]
        return int(np.argmax(np.nanmean(r, axis=0)))


def train(config: PPOConfig, env, env_params, constraint: Constraint | None = None, logdir: str | None = None,
          on_chunk: Callable[[int, int, dict[str, np.ndarray]], None] | None = None,
          component_names: tuple[str, ...] = ()) -> TrainResult:
    """Train; call ``on_chunk(env_steps_done, env_steps_total, last_chunk_metrics)`` after
    every compiled chunk (per seed steps). Returns the final runner and all metrics."""
    init, train_chunk = make_train(config, env, env_params, constraint)
    runner = jax.jit(init)(jax.random.key(config.seed))
    T, U, n_chunks = config.plan(int(env_params.max_steps))
    per_chunk = U * T * config.num_envs  # env steps per seed per chunk
    logger = CurveLogger(logdir, component_names)
    history: list[dict[str, np.ndarray]] = []
    t0 = time.perf_counter()
    train_chunk = train_chunk.lower(runner).compile()  # compile apart, so the timing is the training's own
    compile_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    for c in range(n_chunks):
        runner, metrics = train_chunk(runner)
        metrics = jax.device_get(metrics)
        history.append(metrics)
        logger.log(metrics, c * U, T * config.num_envs)
        if on_chunk:
            on_chunk((c + 1) * per_chunk, n_chunks * per_chunk, metrics)
    seconds = time.perf_counter() - t0
    logger.close()
    stacked = {k: np.concatenate([np.asarray(h[k]) for h in history]) for k in history[0]}
    sps = n_chunks * per_chunk * config.num_seeds / seconds
    return TrainResult(runner=runner, metrics=stacked, env_steps=n_chunks * per_chunk, seconds=seconds,
                       compile_seconds=compile_seconds, steps_per_second=sps)


def seed_slice(runner: dict, seed: int) -> tuple[Params, dict[str, Array]]:
    """(network params, obs normalizer) of one seed of a trained runner."""
    take = lambda tree: jax.tree_util.tree_map(lambda x: x[seed], tree)  # noqa: E731
    return take(runner["params"]), take(runner["norm"])
