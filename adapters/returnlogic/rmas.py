"""ReturnLogic rmas (to be filled)."""

from __future__ import annotations

from typing import Any

from adapters.returnlogic.client import RlTeam
from adapters.returnlogic.config import ReturnLogicConfig


def setup(runtime: Any, retailer: Any, config: ReturnLogicConfig, team: RlTeam) -> None:
    """Wire this part for one retailer."""
