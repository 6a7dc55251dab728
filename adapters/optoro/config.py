"""The ``[retailers.<id>.optoro]`` table."""

from __future__ import annotations

from pydantic import AnyHttpUrl, Field, SecretStr

from bridge.configbase import (
    ConfigModel,
    InboundApiKeyAuth,
    InboundAuth,
    InboundBasicAuth,
    RetryConfig,
)

BasicAuth = InboundBasicAuth
ApiKeyAuth = InboundApiKeyAuth


class OptoroConfig(ConfigModel):
    """Optoro Returns Experience: outbound Returns Portal Orders, inbound RMAs and exchanges."""

    base_url: AnyHttpUrl = Field(
        description="Returns Portal Orders API base, e.g. https://orders.optiturn.com"
    )
    auth_url: AnyHttpUrl | None = Field(
        default=None,
        description="OAuth token server base (POST /oauth/token), e.g. https://auth.optiturn.com;"
        " default: base_url with a leading 'orders.' host label replaced by 'auth.', else"
        " base_url itself",
    )
    client_id: str = Field(description="OAuth client-credentials client id")
    client_secret: SecretStr = Field(description="OAuth client-credentials secret")
    optiturn_id: str = Field(description="expected X-Optiturn-Id header on inbound calls")
    api_version: int = Field(default=3, ge=1, description="Api-Version sent to Optoro")
    inbound_auth: InboundAuth = Field(description="how Optoro authenticates its calls to us")
    batch_size: int = Field(default=25, ge=1, le=500, description="orders per RPO request")
    timeout: float = Field(default=30.0, gt=0, description="seconds per outbound request")
    retry: RetryConfig = Field(
        default_factory=RetryConfig,
        description="backoff of Returns Portal Orders retries and the pause after a bare 429",
    )
    address_name_from_email: bool = Field(
        default=True,
        description="an address with no person's name (ReturnLogic has none) takes the"
        " customer's email, since Optoro requires a name; false: such orders are flagged",
    )
    size_dimensions: list[str] = Field(
        default_factory=lambda: ["Size", "Variant", "Length"],
        description="variant option names that are size dimensions (joined into all_size)",
    )
    gift_card_skus: list[str] = Field(
        default_factory=list, description="SKUs agreed with Optoro for gift-card exchange items"
    )
    invalid_message_status: int = Field(
        default=200,
        ge=200,
        le=499,
        description="status answered to an authenticated RMA Optoro should not retry (Optoro"
        " asks for 200; the payload is quarantined either way)",
    )
    optiturn_mismatch_status: int = Field(
        default=503,
        ge=200,
        le=599,
        description="status answered to an authenticated RMA or exchange order whose"
        " X-Optiturn-Id is not this retailer's (kept quarantined and flagged); 503: Optoro"
        " retries (it retries only 500/502/503/504), so a fix of optiturn_id lets it through",
    )
    variants_cache_ttl: float = Field(
        default=300.0, ge=0, description="seconds a variants answer is fresh"
    )
    variants_stale_ttl: float = Field(
        default=86400.0,
        ge=0,
        description="seconds a cached answer may be served while the catalog fails",
    )
    exchange_wait: float = Field(
        default=20.0, gt=0, description="seconds a repeated exchange order waits for the first one"
    )

    def token_base(self) -> str:
        """The token server's base URL (no trailing slash): ``auth_url``, else derived from
        ``base_url`` as Optoro names its hosts (``orders.X`` -> ``auth.X``), else ``base_url``."""
        if self.auth_url is not None:
            return str(self.auth_url).rstrip("/")
        base = str(self.base_url).rstrip("/")
        host = self.base_url.host or ""
        if host.startswith("orders."):
            return base.replace(f"//{host}", f"//auth.{host.removeprefix('orders.')}", 1)
        return base
