"""ReturnLogic adapter: transport only (client, inbound handlers, sandbox)."""

from __future__ import annotations

from adapters.returnlogic.config import ReturnLogicConfig
from bridge.registry import AdapterSpec

ADAPTER = AdapterSpec(name="returnlogic", config_model=ReturnLogicConfig, description="ReturnLogic")
