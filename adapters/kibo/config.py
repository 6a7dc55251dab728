"""The ``[retailers.<id>.kibo]`` table."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator

from bridge.configbase import ConfigModel


class KiboConfig(ConfigModel):
    """Kibo OMS: returns sink."""

    base_url: AnyHttpUrl = Field(description="Kibo OMS API base, e.g. https://integration.shopatron.com")
    auth: Literal["bearer", "basic"] = Field(default="bearer", description="tenant auth scheme")
    token: SecretStr | None = Field(default=None, description="bearer token (auth = bearer)")
    username: str | None = Field(default=None, description="user (auth = basic)")
    password: SecretStr | None = Field(default=None, description="password (auth = basic)")

    @model_validator(mode="after")
    def _credentials_match_auth(self) -> Self:
        if self.auth == "bearer" and self.token is None:
            raise ValueError('auth = "bearer" needs token')
        if self.auth == "basic" and (self.username is None or self.password is None):
            raise ValueError('auth = "basic" needs username and password')
        return self
