"""crashgym: RL environments for crash dynamics in leveraged crypto markets."""

from crashgym.market import Market
from crashgym.params import MarketParams
from crashgym.types import MarketShape

__all__ = ["Market", "MarketParams", "MarketShape"]
__version__ = "0.1.0"
