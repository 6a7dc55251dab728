"""The ``[retailers.<id>.kibo]`` table."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator

from bridge.configbase import ConfigModel, InboundAuth, RetryConfig
from bridge.domain.base import Currency
from mappings.kibo.crosswalk import LineField, OrderField


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
        default="crosswalk",
        description="how an order line identifier becomes Kibo's orderItemID: the crosswalk"
        " (imported with `returns-bridge crosswalk import`, or filled from the order snapshot"
        " per order_item_id_field), or -- only where the order source's line ids ARE Kibo's"
        " -- the numeric identifier as is",
    )
    order_item_id_field: LineField = Field(
        default="none",
        description="the order line field that carries Kibo's orderItemID, read from the order"
        " snapshot the order flow stored and recorded in the crosswalk: line_id (ReturnLogic's"
        " externalOrderItemId, when the shop is Kibo), returnlogic_id (rlOrderItemId), none",
    )
    order_id_field: OrderField = Field(
        default="none",
        description="the order field that carries Kibo's orderID (sent as orderID):"
        " secondary_id (ReturnLogic's externalOrderId), id, or none; an orderID imported in"
        " the crosswalk wins",
    )
    return_locations: dict[str, int] = Field(
        default_factory=dict,
        description="RMA warehouse_id -> Kibo returnLocation (location id, >= 1)",
    )
    default_return_location: int | None = Field(
        default=None,
        ge=1,
        description="returnLocation of RMAs whose warehouse is not in return_locations"
        " (none: returnLocation left out, Kibo's default applies)",
    )
    deduct_return_shipping: bool = Field(
        default=False,
        description="the retailer charges the shopper the return label: send the RMA's"
        " return_shipping_cost_cents as returnReductionTotal",
    )
    refund_warranty: bool = Field(
        default=False,
        description="warranty units without an amount are refunded (Kibo prices them);"
        " false: a warranty return reimburses nothing (returnSubtotal 0)",
    )
    currency: Currency = Field(
        default="USD",
        description="ISO 4217 currency of a return whose order the bridge has no snapshot of"
        " (the order flow's snapshot gives each order's own currency); Kibo's amounts are sent"
        " and read in the currency's minor units (JPY 0 decimals, USD 2, KWD 3)",
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
    def _locations_are_ids(self) -> Self:
        bad = sorted(w for w, loc in self.return_locations.items() if loc < 1)
        if bad:
            raise ValueError(f"return_locations: location ids must be >= 1 ({', '.join(bad)})")
        return self

    @model_validator(mode="after")
    def _credentials_match_auth(self) -> Self:
        if self.auth == "bearer" and self.token is None:
            raise ValueError('auth = "bearer" needs token')
        if self.auth == "basic" and (self.username is None or self.password is None):
            raise ValueError('auth = "basic" needs username and password')
        return self
