"""The ``[retailers.<id>.optoro]`` table."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr

from bridge.configbase import ConfigModel


class BasicAuth(ConfigModel):
    """HTTP Basic credentials Optoro sends on its webhooks."""

    kind: Literal["basic"] = "basic"
    username: str = Field(description="user name Optoro sends")
    password: SecretStr = Field(description="password Optoro sends")


class ApiKeyAuth(ConfigModel):
    """An API-key header Optoro sends on its webhooks."""

    kind: Literal["api_key"] = "api_key"
    header: str = Field(default="X-Api-Key", description="header name carrying the key")
    key: SecretStr = Field(description="the key value")


class OptoroConfig(ConfigModel):
    """Optoro Returns Experience: outbound Returns Portal Orders, inbound RMAs and exchanges."""

    base_url: AnyHttpUrl = Field(description="Optoro API base, e.g. https://api.optoro.com")
    client_id: str = Field(description="OAuth client-credentials client id")
    client_secret: SecretStr = Field(description="OAuth client-credentials secret")
    optiturn_id: str = Field(description="expected X-Optiturn-Id header on inbound calls")
    api_version: int = Field(default=3, ge=1, description="Api-Version sent to Optoro")
    inbound_auth: BasicAuth | ApiKeyAuth = Field(
        discriminator="kind", description="how Optoro authenticates its calls to us"
    )
    batch_size: int = Field(default=25, ge=1, le=500, description="orders per RPO request")
