"""Small building blocks shared by the core: frozen pytree dataclasses and the static shape."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import jax

T = TypeVar("T")


def pytree_dataclass(cls: type[T]) -> type[T]:
    """A frozen dataclass whose every field is a JAX leaf (traced under jit/vmap).

    Shape-setting values never live here: they are in :class:`MarketShape`, which is
    static, so sweeping any numeric knob never recompiles.
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    jax.tree_util.register_dataclass(cls, data_fields=names, meta_fields=[])
    cls.replace = lambda self, **kw: dataclasses.replace(self, **kw)  # type: ignore[attr-defined]
    return cls


@dataclasses.dataclass(frozen=True)
class MarketShape:
    """Everything that sets an array shape; static under jit (changing it recompiles).

    n_levels: price levels per side of the book ladder (the ladder holds 2 * n_levels).
    n_accounts: leveraged trader account slots.
    n_makers: background market makers.
    n_rounds: liquidation rounds (cascade depth) per step.
    n_buckets: buckets of the absolute liquidation-price grid, per side.
    bucket_window: buckets examined per side per liquidation round.
    turnover_slots: account slots visited per step (close / open decisions).
    episode_steps: steps before truncation.
    adl_slots: counterparties ADL may close per step (the best-ranked; the rest of the
        bankrupt queue waits for the next step).
    """

    n_levels: int = 64
    n_accounts: int = 1024
    n_makers: int = 4
    n_rounds: int = 4
    n_buckets: int = 1024
    bucket_window: int = 16
    turnover_slots: int = 4
    episode_steps: int = 1080
    adl_slots: int = 64

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"MarketShape.{f.name} must be a positive int, got {v!r}")
        if self.n_levels < 8:
            raise ValueError(f"MarketShape.n_levels must be >= 8, got {self.n_levels}")
        if self.bucket_window > self.n_buckets:
            raise ValueError("MarketShape.bucket_window must not exceed n_buckets")
        if self.turnover_slots > self.n_accounts:
            raise ValueError("MarketShape.turnover_slots must not exceed n_accounts")

    @property
    def ladder_size(self) -> int:
        return 2 * self.n_levels
