"""The ``[retailers.<id>.kibo]`` table."""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr

from bridge.configbase import ConfigModel


class KiboConfig(ConfigModel):
    """Kibo OMS: returns sink."""

    base_url: AnyHttpUrl = Field(description="Kibo OMS API base, e.g. https://integration.shopatron.com")
    auth: Literal["bearer", "basic"] = Field(default="bearer", description="tenant auth scheme")
    token: SecretStr | None = Field(default=None, description="bearer token (auth = bearer)")
    username: str | None = Field(default=None, description="user (auth = basic)")
    password: SecretStr | None = Field(default=None, description="password (auth = basic)")
