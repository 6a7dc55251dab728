"""Base classes shared by the core's and the adapters' configuration models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigModel(BaseModel):
    """Frozen, strict about unknown keys: a typo in TOML is an error, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
