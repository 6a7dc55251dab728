"""The ``[retailers.<id>.kibo]`` table."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator

from bridge.configbase import ConfigModel, InboundAuth, RetryConfig


class KiboConfig(ConfigModel):
    """Kibo OMS: the returns sink (Create Return, Get Return, Return Event Notifications)."""

    base_url: AnyHttpUrl = Field(
        description="Kibo OMS API base, e.g. https://integration.shopatron.com"
    )
    auth: Literal["bearer", "basic"] = Field(default="bearer", description="tenant auth scheme")
    auth_header: str = Field(default="Authorization", description="header carrying credentials")
    token: SecretStr | None = Field(default=None, description="bearer token (auth = bearer)")
    username: str | None = Field(default=None, description="user (auth = basic)")
    password: SecretStr | None = Field(default=None, description="password (auth = basic)")
    timeout: float = Field(default=30.0, gt=0, description="seconds per request")
    retry: RetryConfig = Field(
        default_factory=RetryConfig,
        description="backoff of Create Return retries and the pause after a bare 429",
    )
    line_ids: Literal["numeric", "crosswalk"] = Field(
        default="numeric",
        description="how an order line identifier becomes Kibo's orderItemID: the numeric"
        " identifier as is, or the crosswalk recorded when the order was synced",
    )
    exchange_lines_numeric: bool = Field(
        default=False,
        description="exchange orders reuse the original order's numeric item ids",
    )
    gift_card_type: Literal["GC", "GT", "GX", "IM", "M1", "M2", "M3", "VA"] = Field(
        default="GC", description="giftCardInfo.giftCardType of gift-card refunds"
    )
    client_return_ids: bool = Field(
        default=True,
        description="send every create with a returnID derived from the RMA, step and order;"
        " where the tenant keeps it (checked at the first answer, remembered per retailer) a"
        " create whose answer was lost is settled by Get Return on that id, never by an"
        " operator; false for a tenant that refuses a client returnID",
    )
    return_id_bits: Literal[31, 53] = Field(
        default=53,
        description="width of the derived returnID: 53 (exact in any JSON parser, collisions"
        " negligible) or 31 (for tenants storing a signed 32-bit id)",
    )
    unknown_outcome_wait: float = Field(
        default=900.0,
        gt=0,
        description="where the tenant does not keep the bridge's returnID: seconds to wait for"
        " Kibo's return_created notification after a create whose answer was lost, before"
        " parking it for an operator (Kibo has no lookup by order)",
    )
    notifications: InboundAuth | None = Field(
        default=None, description="how Kibo authenticates its Return Event Notifications"
    )
    event_names: dict[str, str] = Field(
        default_factory=dict,
        description="extra notification event names -> kind (created, accepted, rejected,"
        " cleared, reopened, refund_failed) for tenants with translated notifications",
    )

    @model_validator(mode="after")
    def _credentials_match_auth(self) -> Self:
        if self.auth == "bearer" and self.token is None:
            raise ValueError('auth = "bearer" needs token')
        if self.auth == "basic" and (self.username is None or self.password is None):
            raise ValueError('auth = "basic" needs username and password')
        return self
