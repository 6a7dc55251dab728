"""The ``[retailers.<id>.returnlogic]`` table."""

from __future__ import annotations

from typing import Self

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator

from bridge.configbase import ConfigModel


class RlOrdersConfig(ConfigModel):
    """``[retailers.<id>.returnlogic.orders]``: the order source feeding Optoro."""

    enabled: bool = Field(default=True, description="poll orders and publish them")
    poll_every: float = Field(default=300.0, gt=0, description="seconds between polls")


class RlRmasConfig(ConfigModel):
    """``[retailers.<id>.returnlogic.rmas]``: ReturnLogic RMAs into the RMA lifecycle."""

    enabled: bool = Field(default=False, description="receive and reconcile ReturnLogic RMAs")


class RlCatalogConfig(ConfigModel):
    """``[retailers.<id>.returnlogic.catalog]``: products for Exchange Variants."""

    product_url_template: str | None = Field(
        default=None, description="product page url, e.g. https://shop.example/p/{handle}"
    )


class RlExchangeConfig(ConfigModel):
    """``[retailers.<id>.returnlogic.exchange_orders]``: the order sink for exchanges."""

    order_number_prefix: str = Field(default="EXCH-", description="prefix of exchange orders")


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
    orders: RlOrdersConfig = Field(default_factory=RlOrdersConfig, description="order source")
    rmas: RlRmasConfig = Field(default_factory=RlRmasConfig, description="RMA source")
    catalog: RlCatalogConfig = Field(default_factory=RlCatalogConfig, description="catalog")
    exchange_orders: RlExchangeConfig = Field(
        default_factory=RlExchangeConfig, description="exchange order sink"
    )
    requests_per_second: int = Field(default=2, ge=1, description="per-key second window")
    requests_per_minute: int = Field(default=120, ge=1, description="per-key minute window")

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> Self:
        oauth = (self.client_id, self.client_secret)
        if self.static_token is not None and any(v is not None for v in oauth):
            raise ValueError("set static_token or client_id and client_secret, not both")
        if self.static_token is None and any(v is None for v in oauth):
            raise ValueError("set static_token, or client_id and client_secret for OAuth")
        return self
