"""Base classes shared by the core's and the adapters' configuration models."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ConfigModel(BaseModel):
    """Frozen, strict about unknown keys: a typo in TOML is an error, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class InboundBasicAuth(ConfigModel):
    """HTTP Basic credentials a partner sends on its calls to the bridge."""

    kind: Literal["basic"] = "basic"
    username: str = Field(description="user name the partner sends")
    password: SecretStr = Field(description="password the partner sends")


class InboundApiKeyAuth(ConfigModel):
    """A shared secret a partner sends in a header on its calls to the bridge."""

    kind: Literal["api_key"] = "api_key"
    header: str = Field(default="X-Api-Key", description="header name carrying the key")
    key: SecretStr = Field(description="the key value")


InboundAuth = Annotated[InboundBasicAuth | InboundApiKeyAuth, Field(discriminator="kind")]
