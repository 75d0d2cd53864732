"""Market-maker obligations (../shared/MARKET_MECHANICS.md section 4): rules, exemptions, costs.

An obligation is a set of quote rules a market maker must meet, and a presence target: the
fraction of (non-exempt) steps of a rolling window in which it shows a compliant two-sided
quote. Rule sets live in ``configs/obligations/<name>.toml``::

    schema_version = 1
    description = "..."
    [obligation]
    active = 1
    max_spread_bps = 30.0
    payment = "cost"          # "cost" | "penalty" | "rebate" (stored as PAYMENT_MODES code)
    ...

Every field of :class:`ObligationParams` is a traced number, so one jitted/vmapped batch may
mix rule sets (``none`` next to ``strict`` next to ``mifid``) without recompiling.

Per-step constraint costs (constrained-MDP style), one per entry of :data:`COMPONENTS`:

* ``spread``, ``size``, ``distance``: 1.0 on a non-exempt step where that quote rule is
  enabled and fails, else 0.0. A missing side (price nan, or notional <= 0) fails every
  enabled rule; a disabled rule (its threshold is 0) is always ok.
* ``presence``: on a non-exempt step whose quote is not compliant, the shortfall
  ``max(0, presence_target - presence_so_far)`` (presence_so_far after counting this step);
  0 on a compliant step. A compliant quote is two-sided and meets every enabled quote rule.
* Exempt steps cost nothing in any component and are left out of the presence count
  (numerator and denominator). With ``active == 0`` (the ``none`` rule) all costs are 0.

The window holds ``window_steps`` steps and restarts (counters to zero) on the step after it
is full. How the costs reach the reward depends on ``payment``: ``cost`` leaves them to a
constrained-RL learner (info only), ``penalty`` subtracts ``penalty_scale * sum(costs)``,
``rebate`` pays ``rebate_bps`` of the quoted notional on compliant steps (see
:func:`payment_reward`).
"""

from __future__ import annotations

import copy
from typing import Any

import jax
import jax.numpy as jnp

from crashgym.config import ConfigError, from_mapping, read_config, require
from crashgym.types import pytree_dataclass

__all__ = [
    "COMPONENTS",
    "PAYMENT_MODES",
    "ObligationParams",
    "ObligationState",
    "PRESENCE_REFERENCE",
    "compliant_quote",
    "init_obligation_state",
    "is_exempt",
    "load_obligations",
    "maker_must_quote",
    "obligation_step",
    "payment_reward",
    "presence_rule",
    "quote_caps",
    "quote_checks",
]

Array = jax.Array

COMPONENTS: tuple[str, ...] = ("spread", "size", "presence", "distance")
PAYMENT_MODES = {"cost": 0, "penalty": 1, "rebate": 2}

# Slack so that a quote placed exactly at a limit is not failed by float32 rounding: relative
# on every threshold (the threshold and the mid are rounded, ~1e-7), and a few ulps of the
# price on a difference of two prices (the spread, the distance), whose rounding is an ulp of
# the price, not of the difference.
_REL_TOL = 1e-5
_PRICE_ULPS = 4.0

_TOP_KEYS = {"schema_version", "description", "obligation"}


@pytree_dataclass
class ObligationParams:
    """One obligation rule set. A threshold of 0 switches its rule off.

    Spreads and distances are in basis points of the mid, sizes in USD notional per side,
    realized vol as the per-step log-return standard deviation, moves as fractions.
    """

    active: int = 0  # 0: no obligation (the 'none' rule); 1: the rules below bind
    max_spread_bps: float = 0.0  # (ask - bid) / mid * 1e4 must be <= this; 0: no spread rule
    min_size_notional: float = 0.0  # USD on each side must be >= this; 0: no size rule
    presence_target: float = 0.0  # fraction of non-exempt window steps with a compliant quote
    window_steps: int = 360  # presence window, steps (restarts when full)
    max_distance_bps: float = 0.0  # stub-quote rule: each side within this of mid; 0: off
    exempt_vol: float = 0.0  # exempt while per-step realized vol > this; 0: off
    exempt_halt: int = 0  # 1: exempt while trading is halted
    exempt_move: float = 0.0  # exempt while |recent price move| > this fraction; 0: off
    payment: int = 0  # PAYMENT_MODES code: 0 cost, 1 penalty, 2 rebate
    penalty_scale: float = 1.0  # 'penalty' mode: reward penalty per unit of summed cost
    rebate_bps: float = 0.0  # 'rebate' mode: bonus, bps of quoted notional, per compliant step

    def validate(self) -> None:
        require(self.active in (0, 1), "active", "must be 0 (no obligation) or 1")
        require(self.max_spread_bps >= 0, "max_spread_bps", "must be >= 0 (0 switches the spread rule off)")
        require(self.min_size_notional >= 0, "min_size_notional", "must be >= 0 (0 switches the size rule off)")
        require(0 <= self.presence_target <= 1, "presence_target", "must be in [0, 1]")
        require(self.window_steps >= 1, "window_steps", "must be >= 1")
        require(self.max_distance_bps >= 0, "max_distance_bps", "must be >= 0 (0 switches the distance rule off)")
        require(self.exempt_vol >= 0, "exempt_vol", "must be >= 0 (0 switches the exemption off)")
        require(self.exempt_halt in (0, 1), "exempt_halt", "must be 0 or 1")
        require(self.exempt_move >= 0, "exempt_move", "must be >= 0 (0 switches the exemption off)")
        require(self.payment in PAYMENT_MODES.values(), "payment", f"must be one of {sorted(PAYMENT_MODES)}")
        require(self.penalty_scale >= 0, "penalty_scale", "must be >= 0")
        require(self.rebate_bps >= 0, "rebate_bps", "must be >= 0")


@pytree_dataclass
class ObligationState:
    """Counters of the current presence window (int32 scalars, or batched)."""

    steps_in_window: Array  # steps of the current window so far, exempt ones included
    compliant_in_window: Array  # non-exempt steps with a compliant quote
    exempt_in_window: Array  # exempt steps (left out of the presence denominator)


def init_obligation_state() -> ObligationState:
    z = jnp.zeros((), jnp.int32)
    return ObligationState(steps_in_window=z, compliant_in_window=z, exempt_in_window=z)


# --------------------------------------------------------------------------- loading


def load_obligations(name_or_path: str) -> ObligationParams:
    """Load ``configs/obligations/<name>.toml`` (or a path) into :class:`ObligationParams`.

    ``payment`` is written as a name (``"cost"``, ``"penalty"``, ``"rebate"``). Unknown keys,
    wrong types and impossible values raise :class:`ConfigError` naming the file and key.
    """
    source, data = read_config(name_or_path, "obligations", _TOP_KEYS)
    if "obligation" not in data:
        raise ConfigError(f"{source}: missing table 'obligation'")
    table: Any = data["obligation"]
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: 'obligation' must be a table, got {table!r}")
    table = copy.deepcopy(table)
    if "payment" in table:
        name = table["payment"]
        if not isinstance(name, str) or name not in PAYMENT_MODES:
            raise ConfigError(
                f"{source}: 'obligation.payment' must be one of {sorted(PAYMENT_MODES)} (a string), got {name!r}"
            )
        table["payment"] = PAYMENT_MODES[name]
    return from_mapping(ObligationParams, table, source=source, prefix="obligation")


# --------------------------------------------------------------------------- per-step checks


def _f32(x: Any) -> Array:
    return jnp.asarray(x, jnp.float32)


def quote_checks(
    params: ObligationParams,
    bid_price: Array,
    bid_notional: Array,
    ask_price: Array,
    ask_notional: Array,
    mid: Array,
) -> dict[str, Array]:
    """Per-rule ``ok`` flags (bool) for ``spread``, ``size``, ``distance``, plus ``two_sided``.

    ``two_sided``: both prices finite, both notionals > 0, ask >= bid, and mid finite and > 0.
    A quote that is not two-sided fails every enabled rule; a disabled rule (threshold 0) is
    always ok. Limits are inclusive, with a 1e-5 relative slack for float32 rounding and a few
    float32 ulps of the price on the spread and distance (differences of two prices). Whether
    the obligation is ``active`` is not looked at here.
    """
    bid, ask, mid = _f32(bid_price), _f32(ask_price), _f32(mid)
    bid_n, ask_n = _f32(bid_notional), _f32(ask_notional)
    two_sided = (
        jnp.isfinite(bid) & jnp.isfinite(ask) & jnp.isfinite(mid) & (mid > 0)
        & (bid_n > 0) & (ask_n > 0) & (ask >= bid)
    )
    safe_mid = jnp.where(mid > 0, mid, 1.0)
    max_spread, min_size, max_dist = _f32(params.max_spread_bps), _f32(params.min_size_notional), _f32(params.max_distance_bps)
    # A difference of two float32 prices is off by up to about an ulp of the price, a large
    # share of a spread of a few ticks: 6 ticks of 0.05 around 100 (exactly strict's 30 bps)
    # came out at 30.0003 bps and failed. The slack is a few ulps of the price (5e-5 USD at
    # 100), far below a tick.
    price_slack = _PRICE_ULPS * jnp.finfo(jnp.float32).eps * jnp.maximum(jnp.abs(bid), jnp.abs(ask))
    bps = safe_mid * 1e-4 * (1 + _REL_TOL)  # USD per bp of the mid, with the relative slack
    spread_ok = two_sided & (ask - bid <= max_spread * bps + price_slack)
    size_ok = two_sided & (jnp.minimum(bid_n, ask_n) >= min_size * (1 - _REL_TOL))
    dist_ok = two_sided & (jnp.maximum(mid - bid, ask - mid) <= max_dist * bps + price_slack)
    return {
        "spread": (max_spread <= 0) | spread_ok,
        "size": (min_size <= 0) | size_ok,
        "distance": (max_dist <= 0) | dist_ok,
        "two_sided": two_sided,
    }


def is_exempt(params: ObligationParams, realized_vol: Array, halted: Array, recent_move: Array) -> Array:
    """Whether this step is exempt: vol above ``exempt_vol``, halted with ``exempt_halt``, or
    ``|recent_move|`` above ``exempt_move`` (each only when switched on). Strict inequalities."""
    vol_on, move_on = _f32(params.exempt_vol) > 0, _f32(params.exempt_move) > 0
    by_vol = vol_on & (_f32(realized_vol) > _f32(params.exempt_vol))
    by_halt = (jnp.asarray(params.exempt_halt) == 1) & jnp.asarray(halted).astype(bool)
    by_move = move_on & (jnp.abs(_f32(recent_move)) > _f32(params.exempt_move))
    return by_vol | by_halt | by_move


def obligation_step(
    ob_state: ObligationState,
    params: ObligationParams,
    bid_price: Array,
    bid_notional: Array,
    ask_price: Array,
    ask_notional: Array,
    mid: Array,
    realized_vol: Array,
    halted: Array,
    recent_move: Array,
) -> tuple[ObligationState, Array, Array, Array, Array, Array]:
    """One step of obligation accounting for one quote (see the module docstring).

    Returns ``(ob_state, costs, compliant, exempt, presence_so_far, window_left)``:
    costs float32 ``(len(COMPONENTS),)`` in COMPONENTS order; compliant and exempt bool;
    presence_so_far float32, the compliant fraction of the window's non-exempt steps so far,
    this step included (1.0 while there are none); window_left float32, the fraction of the
    window still to come after this step, ``(window_steps - steps_in_window) / window_steps``
    in [0, 1).
    """
    checks = quote_checks(params, bid_price, bid_notional, ask_price, ask_notional, mid)
    compliant = checks["two_sided"] & checks["spread"] & checks["size"] & checks["distance"]
    exempt = is_exempt(params, realized_vol, halted, recent_move)

    window = jnp.maximum(jnp.asarray(params.window_steps, jnp.int32), 1)
    full = ob_state.steps_in_window >= window
    zero = jnp.zeros_like(ob_state.steps_in_window)
    steps = jnp.where(full, zero, ob_state.steps_in_window) + 1
    good = jnp.where(full, zero, ob_state.compliant_in_window) + (compliant & ~exempt).astype(jnp.int32)
    exempts = jnp.where(full, zero, ob_state.exempt_in_window) + exempt.astype(jnp.int32)
    new_state = ObligationState(
        steps_in_window=steps.astype(jnp.int32),
        compliant_in_window=good.astype(jnp.int32),
        exempt_in_window=exempts.astype(jnp.int32),
    )

    counted = steps - exempts
    presence = jnp.where(counted > 0, good / jnp.maximum(counted, 1), 1.0).astype(jnp.float32)
    window_left = ((window - steps) / window).astype(jnp.float32)

    charge = (jnp.asarray(params.active) == 1) & ~exempt
    fail = lambda ok: jnp.where(charge & ~ok, 1.0, 0.0)  # noqa: E731
    shortfall = jnp.maximum(_f32(params.presence_target) - presence, 0.0)
    presence_cost = jnp.where(charge & ~compliant, shortfall, 0.0)
    by_name = {
        "spread": fail(checks["spread"]),
        "size": fail(checks["size"]),
        "presence": presence_cost,
        "distance": fail(checks["distance"]),
    }
    costs = jnp.stack([by_name[c] for c in COMPONENTS]).astype(jnp.float32)
    return new_state, costs, compliant, exempt, presence, window_left


def payment_reward(params: ObligationParams, costs: Array, compliant: Array, quoted_notional: Array) -> Array:
    """Reward adjustment (float32, USD-free units of the caller's reward) for the payment mode.

    cost: 0 (costs go to a constrained learner via info). penalty: ``-penalty_scale *
    sum(costs)``. rebate: ``rebate_bps * 1e-4 * quoted_notional`` on an active, compliant
    step. quoted_notional is the caller's quoted notional (e.g. both sides summed).
    """
    mode = jnp.asarray(params.payment)
    active = jnp.asarray(params.active) == 1
    penalty = -_f32(params.penalty_scale) * jnp.sum(_f32(costs), axis=-1)
    rebate = jnp.where(active & jnp.asarray(compliant), _f32(params.rebate_bps) * 1e-4 * _f32(quoted_notional), 0.0)
    out = jnp.where(mode == PAYMENT_MODES["penalty"], penalty, jnp.where(mode == PAYMENT_MODES["rebate"], rebate, 0.0))
    return jnp.where(active, out, 0.0).astype(jnp.float32)


# --------------------------------------------------------------------------- binding makers

# The quote standard mm_presence is measured against when no obligation is in force: the
# spread and size of configs/obligations/strict.toml (30 bps, 10000 USD a side; a test
# checks the two agree). Presence target and window do not enter a per-step check.
PRESENCE_REFERENCE = ObligationParams(active=1, max_spread_bps=30.0, min_size_notional=10000.0, presence_target=0.95)


def presence_rule(params: ObligationParams) -> ObligationParams:
    """The rule a quote's presence is judged by: ``params`` when active, else
    :data:`PRESENCE_REFERENCE` (traced: works on batched params)."""
    active = jnp.asarray(params.active) == 1
    return jax.tree.map(lambda a, b: jnp.where(active, a, b), params, PRESENCE_REFERENCE)


def maker_must_quote(params: ObligationParams, exempt: Array) -> Array:
    """Whether the obligation binds background makers this step (may not withdraw):
    active, with a presence target > 0, and not exempt."""
    return (jnp.asarray(params.active) == 1) & (_f32(params.presence_target) > 0) & ~jnp.asarray(exempt).astype(bool)


def quote_caps(params: ObligationParams, mid: Array, tick_size: Array) -> tuple[Array, Array]:
    """Widest half spread (ticks) the spread rule and the distance rule allow, ``(spread_cap,
    distance_cap)``, +inf where the rule is off; each keeps the half-tick rounding margin
    described in :func:`compliant_quote` (float32)."""
    ticks_per_bps = _f32(mid) * 1e-4 / _f32(tick_size)
    inf = jnp.float32(jnp.inf)
    spread_cap = jnp.where(_f32(params.max_spread_bps) > 0, (_f32(params.max_spread_bps) * ticks_per_bps - 1.0) / 2, inf)
    dist_cap = jnp.where(_f32(params.max_distance_bps) > 0, _f32(params.max_distance_bps) * ticks_per_bps - 0.5, inf)
    return spread_cap, dist_cap


def compliant_quote(
    params: ObligationParams,
    mid: Array,
    tick_size: Array,
    base_half_spread_ticks: Array,
    base_size_lots: Array,
) -> tuple[Array, Array]:
    """The cheapest quote meeting the rule, as ``(half_spread_ticks, size_lots)`` (float32).

    The half spread is the base one capped at the widest the spread and distance rules allow;
    the size is the base one raised to the smallest the size rule allows (lots of one base
    unit, so notional = lots * price). Rule-off and inactive obligations leave the base quote.

    Rounding: makers round each side to a tick (``floor(mid - h + 0.5)``, ``ceil(mid + h -
    0.5)``), which can add up to half a tick per side, so the caps keep that margin:
    spread cap ``h <= (max_spread_ticks - 1) / 2``, distance cap ``h <= max_distance_ticks -
    0.5``, and the size is sized at the bid price ``mid - (h + 0.5) * tick``. The half spread
    never goes below 0.5 ticks (a one-tick market), even if the rule asks for less. An
    inventory skew moves the quote off centre and is the caller's to account for.
    """
    mid, tick = _f32(mid), _f32(tick_size)
    base_h, base_size = _f32(base_half_spread_ticks), _f32(base_size_lots)
    active = jnp.asarray(params.active) == 1
    spread_cap, dist_cap = quote_caps(params, mid, tick)
    h = jnp.maximum(jnp.minimum(base_h, jnp.minimum(spread_cap, dist_cap)), 0.5)
    h = jnp.where(active, h, base_h)
    bid_price = jnp.maximum(mid - (h + 0.5) * tick, tick)
    min_lots = jnp.ceil(_f32(params.min_size_notional) / bid_price)
    size = jnp.where(active, jnp.maximum(base_size, min_lots), base_size)
    return h.astype(jnp.float32), size.astype(jnp.float32)
