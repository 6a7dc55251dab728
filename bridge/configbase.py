"""Base classes shared by the core's and the adapters' configuration models."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from bridge.http.policy import Backoff


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


class InboundBearerAuth(ConfigModel):
    """A bearer token a partner sends as ``Authorization: Bearer <token>`` (OAuth 2 access
    tokens issued out of band, e.g. agreed with Optoro's Client Success)."""

    kind: Literal["bearer"] = "bearer"
    token: SecretStr = Field(description="the token the partner sends")


UNSUPPORTED_INBOUND_AUTH = {
    "aws_sigv4": "AWS SigV4 request signing is not supported; agree basic, api_key or bearer",
    "oauth2": 'an OAuth 2 token endpoint is not served by the bridge; use kind = "bearer"'
    " with the access token agreed with the partner",
}
"""Schemes partners offer that the bridge refuses at ``returns-bridge check``, and why."""


class InboundUnsupportedAuth(BaseModel):
    """A scheme a partner offers that the bridge does not verify: refused when loaded, with
    the reason (never accepted as if it authenticated anyone)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kind: Literal["aws_sigv4", "oauth2"]

    @model_validator(mode="after")
    def _refused(self) -> Self:
        raise ValueError(UNSUPPORTED_INBOUND_AUTH[self.kind])


InboundCredentials = InboundBasicAuth | InboundApiKeyAuth | InboundBearerAuth
"""The inbound schemes the bridge verifies."""

InboundAuth = Annotated[
    InboundBasicAuth | InboundApiKeyAuth | InboundBearerAuth | InboundUnsupportedAuth,
    Field(discriminator="kind"),
]


class RetryConfig(ConfigModel):
    """``[retailers.<id>.<platform>.retry]``: how failed calls to one destination are retried.

    Attempt ``n`` waits a random time up to ``min(cap, initial * 2**n)`` (full jitter), never
    less than a ``Retry-After`` the partner sent. A 429 without ``Retry-After`` pauses the
    destination's governor by the same backoff (consecutive bare 429s grow it). When the
    destination answers again after an outage, its waiting retries are sent at once, so
    ``cap`` bounds what one effect waits for a partner that is down, not the recovery."""

    initial: float = Field(
        default=1.0, gt=0, description="seconds: the base of the first retry's delay"
    )
    cap: float = Field(default=300.0, gt=0, description="seconds: the longest delay between tries")
    pause_on_429: float | None = Field(
        default=None,
        gt=0,
        description="seconds the governor pauses after a 429 without Retry-After;"
        " unset: the retry backoff",
    )

    @model_validator(mode="after")
    def _cap_not_below_initial(self) -> Self:
        if self.cap < self.initial:
            raise ValueError("cap must be at least initial")
        return self

    def backoff(self) -> Backoff:
        return Backoff(initial=self.initial, cap=self.cap)
