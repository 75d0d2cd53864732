"""crashgym: RL environments for crash dynamics in leveraged crypto markets."""

from crashgym.market import Market
from crashgym.params import MarketParams
from crashgym.types import MarketShape
from crashgym.make import make

__all__ = ["Market", "MarketParams", "MarketShape", "make"]
__version__ = "0.1.0"


def _register_gymnasium_ids() -> None:
    """Register crashgym/MarketMaker-v0 and crashgym/LeveragedTrader-v0 with Gymnasium.

    Entry points are strings, so this imports gymnasium but not crashgym.gym."""
    try:
        import gymnasium
    except ImportError:  # pragma: no cover - gymnasium is a dependency
        return
    for name in ("MarketMaker-v0", "LeveragedTrader-v0"):
        gid = f"crashgym/{name}"
        if gid not in gymnasium.registry:
            gymnasium.register(
                id=gid,
                entry_point="crashgym.gym:make_env",
                vector_entry_point="crashgym.gym:make_vector_env",
                kwargs={"env_id": name, "scenario": "calm", "obligations": "none", "rules": None},
                disable_env_checker=True,
            )


_register_gymnasium_ids()
