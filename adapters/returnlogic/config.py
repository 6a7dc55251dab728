"""The ``[retailers.<id>.returnlogic]`` table."""

from __future__ import annotations

import string
from typing import Literal, Self

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator

from bridge.configbase import ConfigModel, RetryConfig
from bridge.domain.base import Currency
from mappings.returnlogic import TEMPLATE_FIELDS
from mappings.returnlogic.rules import TagRules


class RlOrdersConfig(ConfigModel):
    """``[retailers.<id>.returnlogic.orders]``: the order source feeding Optoro."""

    enabled: bool = Field(default=True, description="poll orders and publish them")
    poll_every: float = Field(default=300.0, gt=0, description="seconds between polls")
    overlap: float = Field(
        default=600.0,
        ge=0,
        description="seconds re-read before the cursor on every poll (records that show up late)",
    )
    first_poll_days: float = Field(
        default=1.0,
        ge=0,
        description="without a cursor yet, the first poll reads orders created this many days"
        " back (older history: `returns-bridge backfill orders`)",
    )
    rescan_days: float = Field(
        default=30.0,
        gt=0,
        description="the re-scan re-reads orders created in the last N days (catches updates)",
    )
    rescan_every: float = Field(default=3600.0, gt=0, description="seconds between re-scans")
    page_size: int = Field(default=250, ge=1, le=250, description="orders per request")
    tag_rules: TagRules = Field(
        default_factory=TagRules,
        description="which orders and lines get the returns tags; a rule given replaces that"
        " tag's default rule",
    )


class RlDisposition(ConfigModel):
    """A ReturnLogic item disposition (``PUT /v1/rmas/{id}`` ``rmaItems[].disposition``)."""

    code: str = Field(min_length=1, max_length=255, description="disposition code")
    description: str | None = Field(default=None, max_length=255, description="shown in RL")
    comment: str | None = Field(default=None, max_length=1000, description="note on the item")


def _default_dispositions() -> dict[Literal["accepted", "cleared"], RlDisposition]:
    return {
        "accepted": RlDisposition(
            code="RECEIVED", description="Received at the returns center (Kibo accepted)"
        ),
        "cleared": RlDisposition(
            code="PROCESSED", description="Received and refunded (Kibo return cleared)"
        ),
    }


class RlWritebackConfig(ConfigModel):
    """``[retailers.<id>.returnlogic.rmas.writeback]``: a ReturnLogic RMA's items marked
    received, with a disposition, when the returns sink reports its return accepted or
    cleared (once per RMA, the first of the two)."""

    enabled: bool = Field(
        default=True,
        description="mark the RMA's items received in ReturnLogic when the return is"
        " accepted or cleared (ReturnLogic may then process the RMA automatically, as its"
        " settings say)",
    )
    dispositions: dict[Literal["accepted", "cleared"], RlDisposition] = Field(
        default_factory=_default_dispositions,
        description="the disposition sent per returns-sink outcome (accepted: goods"
        " received; cleared: received and refunded)",
    )

    @model_validator(mode="after")
    def _both_outcomes(self) -> Self:
        missing = {"accepted", "cleared"} - set(self.dispositions)
        if missing:
            raise ValueError(f"dispositions needs {', '.join(sorted(missing))}")
        return self


class RlRmasConfig(ConfigModel):
    """``[retailers.<id>.returnlogic.rmas]``: ReturnLogic RMAs into the RMA lifecycle."""

    enabled: bool = Field(default=False, description="receive and reconcile ReturnLogic RMAs")
    webhook_url: AnyHttpUrl | None = Field(
        default=None,
        description="public url of this retailer's webhook endpoint on the bridge, as"
        " ReturnLogic must call it (https://bridge.example.com/retailers/<id>/returnlogic/"
        "webhooks); set: the bridge keeps its registrations; unset: register it by hand",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="shared secret ReturnLogic sends back as the 'key' query parameter of"
        " the registered url (the API signs nothing); unset: every webhook is refused (401)"
        " and RMAs arrive by reconciliation only",
    )
    supervise_every: float = Field(
        default=600.0, gt=0, description="seconds between checks of the webhook registrations"
    )
    reconcile_every: float = Field(
        default=900.0, gt=0, description="seconds between reconciliation polls of RMAs"
    )
    reconcile_overlap: float = Field(
        default=600.0,
        ge=0,
        description="seconds each poll's minCreateDate reaches back before the previous poll"
        " (clock skew, RMAs created while it ran)",
    )
    reconcile_lookback: float = Field(
        default=86400.0,
        ge=0,
        description="seconds the first poll looks back for RMAs created (and closed) before"
        " the bridge watched; open RMAs are always read whatever their age",
    )
    flag_dead_letters: bool = Field(
        default=False,
        description="flag a ReturnLogic RMA whose return ends in the dead letters, so the"
        " retailer's team sees it in ReturnLogic",
    )
    flag_path: str | None = Field(
        default=None,
        description="path of ReturnLogic's Flag RMA operation, {id} = rlRmaId, e.g."
        " /v1/rmas/{id}/flag (the docs name the operation, not its path)",
    )
    flag_method: Literal["POST", "PUT"] = Field(
        default="POST", description="HTTP method of the Flag RMA operation"
    )
    flag_every: float = Field(
        default=300.0, gt=0, description="seconds between looks for dead letters to flag"
    )
    writeback: RlWritebackConfig = Field(
        default_factory=RlWritebackConfig,
        description="the returns sink's outcome written back to the RMA's items",
    )

    @model_validator(mode="after")
    def _flag_path_when_flagging(self) -> Self:
        if self.flag_path is not None and (
            not self.flag_path.startswith("/") or "{id}" not in self.flag_path
        ):
            raise ValueError("flag_path must start with / and contain {id}")
        if self.flag_dead_letters and self.flag_path is None:
            raise ValueError("flag_dead_letters needs flag_path (e.g. /v1/rmas/{id}/flag)")
        return self


class RlCatalogConfig(ConfigModel):
    """``[retailers.<id>.returnlogic.catalog]``: products for Exchange Variants."""

    enabled: bool = Field(default=True, description="offer ReturnLogic products as a catalog")
    product_url_template: str | None = Field(
        default=None, description="product page url, e.g. https://shop.example/p/{handle}"
    )
    image_fallback: str | None = Field(
        default=None, description="image url of variants and products without one"
    )
    variant_scan_pages: int = Field(
        default=200,
        ge=0,
        description="most product pages (250 each) read to find a ReturnLogic variant id the"
        " API cannot search by; 0: variant ids are not resolved",
    )
    variant_scan_every: float = Field(
        default=900.0,
        gt=0,
        description="seconds before an unknown variant id makes the catalog be read again",
    )

    @field_validator("product_url_template")
    @classmethod
    def _known_template_fields(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"not a valid template: {exc}") from None
        unknown = sorted(names - TEMPLATE_FIELDS)
        if unknown:
            known = ", ".join(sorted(TEMPLATE_FIELDS))
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; known: {known}")
        return value


class RlExchangeConfig(ConfigModel):
    """``[retailers.<id>.returnlogic.exchange_orders]``: the order sink for exchanges."""

    enabled: bool = Field(default=True, description="create exchange orders in ReturnLogic")
    order_number_prefix: str = Field(default="EXCH-", description="prefix of exchange orders")
    external_source: str | None = Field(
        default=None, description="externalSource of the orders created, e.g. returns-bridge"
    )


class RlInstallConfig(ConfigModel):
    """``[retailers.<id>.returnlogic.install]``: the OAuth installation an operator sends.

    ReturnLogic's documents show only the redirect to the app (``code`` and ``teamId``),
    not the page a retailer installs from. ``returns-bridge returnlogic install-url`` builds
    that URL as OAuth 2.0 does (RFC 6749 4.1.1): ``authorize_url`` with ``response_type=code``,
    ``client_id``, ``redirect_uri`` (when ``redirect_url`` is set) and a signed, single-use
    ``state`` that ReturnLogic hands back on the redirect; the callback refuses any redirect
    without one the bridge issued for that retailer and team."""

    authorize_url: AnyHttpUrl | None = Field(
        default=None,
        description="ReturnLogic's installation (authorize) page of the app, as ReturnLogic"
        " gives it to the app's developer; needed by install-url",
    )
    redirect_url: AnyHttpUrl | None = Field(
        default=None,
        description="public url of this retailer's callback on the bridge"
        " (https://bridge.example.com/retailers/<id>/returnlogic/oauth/callback), sent as"
        " redirect_uri; unset: ReturnLogic uses the redirect url registered with the app",
    )
    state_ttl: float = Field(
        default=600.0,
        gt=0,
        le=86400,
        description="seconds an installation URL (its state) stays valid; used once",
    )


class ReturnLogicConfig(ConfigModel):
    """ReturnLogic: order source, catalog, exchange-order sink and RMA source."""

    base_url: AnyHttpUrl = Field(
        description="ReturnLogic API base, e.g. https://api.returnlogic.com"
    )
    team_id: str = Field(description="the ReturnLogic team (one token set per team)")
    client_id: str | None = Field(default=None, description="OAuth app client id")
    client_secret: SecretStr | None = Field(default=None, description="OAuth app client secret")
    static_token: SecretStr | None = Field(
        default=None, description="bearer token of a private app; no OAuth dance"
    )
    token_key_env: str = Field(
        default="RETURNS_BRIDGE_TOKEN_KEY",
        description="name of the env var holding the key that encrypts tokens at rest",
    )
    timeout: float = Field(default=30.0, gt=0, description="seconds per request")
    currency: Currency = Field(
        default="USD",
        description="the store's currency (ISO 4217) for the amounts of ReturnLogic documents"
        " that name none: products (variant prices) and RMAs (label cost, bonus); orders carry"
        " their own shopCurrencyCode. Default USD, the currency of every ReturnLogic sample",
    )
    install: RlInstallConfig = Field(
        default_factory=RlInstallConfig, description="OAuth installation URL and its state"
    )
    orders: RlOrdersConfig = Field(default_factory=RlOrdersConfig, description="order source")
    rmas: RlRmasConfig = Field(default_factory=RlRmasConfig, description="RMA source")
    catalog: RlCatalogConfig = Field(default_factory=RlCatalogConfig, description="catalog")
    exchange_orders: RlExchangeConfig = Field(
        default_factory=RlExchangeConfig, description="exchange order sink"
    )
    requests_per_second: int = Field(default=2, ge=1, description="per-key second window")
    requests_per_minute: int = Field(default=120, ge=1, description="per-key minute window")
    retry: RetryConfig = Field(
        default_factory=lambda: RetryConfig(initial=0.5, cap=30.0),
        description="backoff of calls retried while their caller waits (syncs, catalog, RMA"
        " reads) and the pause after a 429 without Retry-After",
    )

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> Self:
        oauth = (self.client_id, self.client_secret)
        if self.static_token is not None and any(v is not None for v in oauth):
            raise ValueError("set static_token or client_id and client_secret, not both")
        if self.static_token is None and any(v is None for v in oauth):
            raise ValueError("set static_token, or client_id and client_secret for OAuth")
        return self
