"""Optoro Returns Experience adapter: transport only (client, inbound handlers, sandbox)."""

from __future__ import annotations

from adapters.optoro.config import OptoroConfig
from bridge.registry import AdapterSpec

ADAPTER = AdapterSpec(
    name="optoro", config_model=OptoroConfig, description="Optoro Returns Experience"
)
