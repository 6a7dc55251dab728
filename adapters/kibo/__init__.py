"""Kibo OMS adapter: transport only (client, inbound handlers, sandbox)."""

from __future__ import annotations

from adapters.kibo.config import KiboConfig
from bridge.registry import AdapterSpec

ADAPTER = AdapterSpec(name="kibo", config_model=KiboConfig, description="Kibo OMS")
