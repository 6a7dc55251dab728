"""A fake ReturnLogic on loopback: OAuth, rate windows, orders, catalog, RMAs and webhooks.

What it serves (paths the spec names: ``/v1/oauth``, ``/v1/orders``, ``/v1/products``,
``/v1/rmas``; the others are the spec's operations at the paths its operation names suggest,
which the text does not show):

``POST /v1/oauth``
    JSON ``{"grant_type": "authorization_code", "client_id", "client_secret", "code"}`` or
    ``{"grant_type": "refresh_token", "client_id", "client_secret", "refresh_token"}`` ->
    ``{"bearer_token", "refresh_token"}`` (no lifetime: the spec announces none, a client learns
    expiry from a 401; knob ``announce_expiry`` adds ``expires_in``). Codes come from
    :meth:`ReturnLogicSandbox.issue_code` / :meth:`~ReturnLogicSandbox.install` (the install
    redirect), are single-use and expire after ``code_ttl``. Bearers expire after
    ``token_ttl``; with ``rotate_refresh_tokens`` a used refresh token is dead (400).
    Unknown client: 401. Malformed body, bad code or refresh token: 400 ``ValidateError``.
``GET /oauth/authorize?client_id=...&state=...[&redirect_uri=...][&as_team=...]``
    The app's installation page, approved at once by the retailer logged in to team
    ``as_team`` (sandbox-only): 302 to the redirect url with ``code``, ``teamId`` and the
    ``state`` given (the spec documents no installation page; this is OAuth 2.0's shape).
``/v1/orders`` (GET list, GET ``/count``, GET ``/{rlOrderId}``, POST create, PUT/PATCH
``/{rlOrderId}`` update), ``/v1/products`` (GET list, ``/count``, ``/{rlProductId}``; PUT/PATCH
``/{rlProductId}`` and ``/{rlProductId}/variants/{rlProductVariantId}``), ``/v1/rmas`` (GET
list, ``/count``, ``/{rlRmaId}``; PUT/PATCH ``/{rlRmaId}`` (also ``/{rlRmaId}/items``) updates
items; POST/PUT ``/{rlRmaId}/flag``), ``/v1/webhooks`` (GET list, POST create, PUT/PATCH
``/{registrationId}``; DELETE, which the spec does not list).
    Need ``Authorization: Bearer <token>`` (401 otherwise); lists take ``skip`` (>= 0) and
    ``limit`` (1..250, default 20) and the documented filters (:mod:`.queries`) and return bare
    JSON arrays in id order; creating an order whose ``orderNumber`` the team already has is a
    400 ``ValidateError`` naming ``orderNumber`` (the spec documents no duplicate error; knob
    ``duplicate_order_status``).

Every ``/v1`` response carries ``X-RateLimit-Limit-Second``, ``-Minute`` and
``X-RateLimit-Remaining-Second``, ``-Minute``; beyond ``rate_limit_second`` (2) or
``rate_limit_minute`` (120) admitted requests per key in a sliding 1 s / 60 s window the answer
is 429 (:mod:`.windows`). The key is the team (``rate_limit_key="team"``, all of a team's
tokens share it) or the bearer token.

Webhooks: every RMA change (create -> ``rma.requested``, update -> ``rma.updated``, delete ->
``rma.deleted``) is POSTed to each active registration of that action, as
:func:`webhook_payload` (the spec documents no payload; this one carries the RMA as
``GET /v1/rmas/{id}`` returns it, under ``data``). Knobs ``drop_rate``, ``duplicate_rate``,
``delivery_delay`` + ``delivery_jitter`` (random per message, so messages overtake one
another), ``delivery_retries``; after ``max_failures`` consecutive failed attempts (non-2xx,
connection error, timeout) the registration is deactivated and messages for it are dropped
until it is updated back to active, which resets its error count (as the spec says).

Sandbox-only routes (no authentication, no rate limit): ``GET /_sandbox/state``,
``GET|POST /_sandbox/control`` (knobs, plus ``revoke_tokens``/``expire_tokens``),
``POST /_sandbox/reset``, ``POST /_sandbox/generate``, ``POST /_sandbox/install``,
``POST /_sandbox/api_keys``, ``POST /_sandbox/rmas`` (an RMA as a shopper would request it),
``POST /_sandbox/rmas/{id}/advance``, ``DELETE /_sandbox/rmas/{id}``,
``POST /_sandbox/orders/{id}/fulfill`` (the shop ships the whole order), ``GET
/_sandbox/requests``, ``/_sandbox/events``, ``/_sandbox/deliveries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import math
import random
import secrets
import signal
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from adapters.returnlogic.sandbox.bodies import BodyChecker, discount
from adapters.returnlogic.sandbox.data import (
    DEFAULT_ANCHOR,
    FINANCIAL_STATUSES,
    FULFILLMENT_STATUSES,
    RETURN_TYPES,
    WORKFLOW_PATH,
    Catalog,
    IdAllocator,
    generate_orders,
    generate_products,
    generate_rmas,
    iso,
    iso_ms,
    money,
    new_rma,
    to_cents,
    transition,
)
from adapters.returnlogic.sandbox.queries import (
    ValidateError,
    order_filter,
    page,
    product_filter,
    rma_filter,
)
from adapters.returnlogic.sandbox.windows import KeyWindows, Verdict
from bridge.sandboxkit import KnobbedState, serving

__all__ = [
    "AUTHORIZE_PATH",
    "CONTROL_PREFIX",
    "DEFAULT_TEAM",
    "KNOBS",
    "OAUTH_PATH",
    "RESOURCE_ACTIONS",
    "SANDBOX_KEY",
    "Delivery",
    "Knobs",
    "RecordedRequest",
    "Registration",
    "ReturnLogicSandbox",
    "TeamData",
    "WebhookEvent",
    "make_app",
    "running_sandbox",
    "serve",
    "serve_forever",
    "webhook_payload",
]

log = logging.getLogger(__name__)

OAUTH_PATH = "/v1/oauth"
AUTHORIZE_PATH = "/oauth/authorize"
"""The app's installation page (not in the spec, which shows only the redirect back)."""
API_PREFIX = "/v1/"
CONTROL_PREFIX = "/_sandbox"
DEFAULT_TEAM = "fe9588ff-c78f-4aa3-a247-7163bcd88ddc"
"""The ``teamId`` of the spec's samples; every call without a team uses it."""
RESOURCE_ACTIONS: tuple[str, ...] = ("rma.updated", "rma.requested", "rma.deleted")
GRANT_TYPES = ("authorization_code", "refresh_token")
ORDER_MONEY = ("totalPrice", "fees", "taxPrice", "shippingPrice", "refundAmount")
REQUEST_LOG_SIZE = 100_000
_BEFORE_RECEIPT = frozenset({"Requested", "Authorized", "Active", "InTransit", "Delivered"})


class Knobs(BaseModel):
    """Settings and fault knobs of the sandbox, validated (unknown names are refused)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # the OAuth app
    client_id: str = Field(default="sandbox-client-id", description="OAuth app client id")
    client_secret: str = Field(default="sandbox-client-secret", description="OAuth app secret")
    redirect_url: str | None = Field(
        default=None, description="the app's redirect URL (install sends code and teamId there)"
    )
    token_ttl: float = Field(default=3600.0, gt=0, description="bearer token lifetime, s")
    refresh_token_ttl: float | None = Field(
        default=None, gt=0, description="refresh token lifetime, s; None = no expiry"
    )
    code_ttl: float = Field(default=600.0, gt=0, description="authorization code lifetime, s")
    rotate_refresh_tokens: bool = Field(
        default=True, description="a refresh returns a new refresh token; the used one dies"
    )
    revoke_bearer_on_refresh: bool = Field(
        default=False, description="a refresh also revokes the bearer issued with that pair"
    )
    announce_expiry: bool = Field(
        default=False, description="add expires_in to /v1/oauth answers (not in the spec)"
    )
    # rate windows
    rate_limit_enabled: bool = Field(default=True, description="answer 429 beyond the windows")
    rate_limit_second: int = Field(default=2, ge=1, description="admitted requests per 1 s")
    rate_limit_minute: int = Field(default=120, ge=1, description="admitted requests per 60 s")
    rate_limit_key: Literal["team", "token"] = Field(
        default="team", description="what a window counts: the team or each bearer token"
    )
    retry_after_header: bool = Field(
        default=False, description="add Retry-After to 429s (the spec documents none)"
    )
    # API behaviour
    max_limit: int = Field(default=250, ge=1, description="largest limit a list accepts")
    duplicate_order_status: int = Field(
        default=400, ge=400, le=499, description="status of a create with a known orderNumber"
    )
    auto_process: bool = Field(
        default=False, description="an RMA whose items are all received is processed at once"
    )
    # faults (on paths starting with one of fault_paths)
    maintenance: bool = Field(default=False, description="answer every /v1 request with 503")
    latency: float = Field(default=0.0, ge=0, description="seconds before answering")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="fraction answered 500")
    fail_next: int = Field(default=0, ge=0, description="answer the next N with 500")
    rate_limit_next: int = Field(default=0, ge=0, description="answer the next N with 429")
    fault_paths: list[str] = Field(
        default_factory=lambda: [API_PREFIX], description="path prefixes the faults apply to"
    )
    # webhooks
    drop_rate: float = Field(default=0.0, ge=0, le=1, description="fraction of messages lost")
    duplicate_rate: float = Field(
        default=0.0, ge=0, le=1, description="fraction of messages delivered twice"
    )
    delivery_delay: float = Field(default=0.0, ge=0, description="seconds before delivering")
    delivery_jitter: float = Field(
        default=0.0, ge=0, description="extra random delay per message, s (reorders them)"
    )
    delivery_retries: int = Field(default=0, ge=0, description="attempts after a failed one")
    retry_delay: float = Field(default=0.05, ge=0, description="seconds between attempts")
    delivery_timeout: float = Field(default=5.0, gt=0, description="seconds per attempt")
    max_failures: int = Field(
        default=5, ge=1, description="consecutive failed attempts that deactivate a registration"
    )
    seed: int | None = Field(default=0, description="seed of the fault and webhook RNG")


KNOBS: tuple[str, ...] = tuple(Knobs.model_fields)


# --- records ---------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One ``/v1`` request (no credentials kept)."""

    seq: int
    method: str
    path: str
    query: dict[str, str]
    at: float
    """The sandbox clock when it arrived (what the rate windows count)."""
    team_id: str | None = None
    key: str | None = None
    """The rate-limit key it counted against (``team:<id>`` or ``token:<digest>``)."""
    status: int | None = None
    outcome: str = "pending"
    """``ok``, ``unauthorized``, ``rate_limited``, ``maintenance``, ``error``, ``invalid``,
    ``not_found``, ``duplicate``, ``token_issued``, ``conflict``."""

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Registration:
    """A webhook registration; :meth:`as_json` is the documented shape."""

    registration_id: str
    team_id: str
    resource_action: str
    endpoint: str
    active: bool
    create_date: str
    error_count: int = 0
    """Consecutive failed attempts; reset by a success or by setting ``active`` true."""
    delivered: int = 0
    failed: int = 0
    deactivated: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "registrationId": self.registration_id,
            "resourceAction": self.resource_action,
            "endpoint": self.endpoint,
            "active": self.active,
            "createDate": self.create_date,
        }

    def inspect(self) -> dict[str, Any]:
        return {
            **self.as_json(),
            "errorCount": self.error_count,
            "delivered": self.delivered,
            "failed": self.failed,
            "deactivated": self.deactivated,
        }


@dataclass
class WebhookEvent:
    """One RMA change, as generated (whatever becomes of its deliveries)."""

    event_id: str
    team_id: str
    resource_action: str
    rl_rma_id: int
    created: str
    rma: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "eventId": self.event_id,
            "teamId": self.team_id,
            "resourceAction": self.resource_action,
            "rlRmaId": self.rl_rma_id,
            "createDate": self.created,
        }


@dataclass
class Delivery:
    """One message for one registration (a duplicate is a second Delivery, ``copy`` 1)."""

    seq: int
    event_id: str
    registration_id: str
    resource_action: str
    rl_rma_id: int
    endpoint: str
    copy: int = 0
    delay: float = 0.0
    attempts: int = 0
    status: int | None = None
    outcome: str = "scheduled"
    """``scheduled``, ``delivered``, ``failed``, ``dropped`` (the drop knob),
    ``skipped_inactive`` (the registration was deactivated meanwhile), ``undeliverable``
    (the sandbox is not being served), ``cancelled`` (shut down first)."""
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def webhook_payload(event: WebhookEvent, registration: Registration) -> dict[str, Any]:
    """The body POSTed to a registration (the spec does not document one):
    ``{"eventId", "resourceAction", "registrationId", "teamId", "createDate", "rlRmaId",
    "data"}`` where ``data`` is the RMA as ``GET /v1/rmas/{rlRmaId}`` returned it when the
    event happened (its last state for ``rma.deleted``). A duplicate carries the same
    ``eventId``."""
    return {
        "eventId": event.event_id,
        "resourceAction": event.resource_action,
        "registrationId": registration.registration_id,
        "teamId": event.team_id,
        "createDate": event.created,
        "rlRmaId": event.rl_rma_id,
        "data": event.rma,
    }


@dataclass
class _Grant:
    team_id: str
    kind: Literal["bearer", "refresh", "api_key"]
    expires_at: float | None
    partner: str | None = None
    """A bearer's refresh token, a refresh token's bearer."""


@dataclass
class TeamData:
    """One retailer's data (each team sees only its own)."""

    team_id: str
    orders: dict[int, dict[str, Any]] = field(default_factory=dict)
    order_numbers: dict[str, int] = field(default_factory=dict)
    products: dict[int, dict[str, Any]] = field(default_factory=dict)
    variants: dict[int, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)
    catalog: Catalog = field(default_factory=Catalog)
    rmas: dict[int, dict[str, Any]] = field(default_factory=dict)
    rmas_by_order: dict[int, list[int]] = field(default_factory=dict)
    registrations: dict[str, Registration] = field(default_factory=dict)

    def add_order(self, order: dict[str, Any]) -> None:
        self.orders[order["rlOrderId"]] = order
        self.order_numbers[order["orderNumber"]] = order["rlOrderId"]

    def add_product(self, product: dict[str, Any]) -> None:
        self.products[product["rlProductId"]] = product
        for variant in product["variants"]:
            self.variants[variant["rlProductVariantId"]] = (product, variant)
        self.catalog.add(product)

    def add_rma(self, rma: dict[str, Any]) -> None:
        self.rmas[rma["rlRmaId"]] = rma
        self.rmas_by_order.setdefault(rma["rlOrderId"], []).append(rma["rlRmaId"])

    def find_order(self, ref: int | str) -> dict[str, Any] | None:
        """By ``rlOrderId`` (an int, or digits that are one) else by ``orderNumber``."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            found = self.orders.get(int(ref))
            if found is not None:
                return found
        rl_id = self.order_numbers.get(str(ref))
        return self.orders.get(rl_id) if rl_id is not None else None

    def counts(self) -> dict[str, Any]:
        return {
            "orders": len(self.orders),
            "products": len(self.products),
            "variants": len(self.variants),
            "rmas": len(self.rmas),
            "registrations": [r.inspect() for r in self.registrations.values()],
        }


_RECORD = web.RequestKey("returnlogic_sandbox_record", RecordedRequest)
_TEAM = web.RequestKey("returnlogic_sandbox_team", str)


class _NotFound(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")


class _Conflict(Exception):
    pass


# --- the sandbox -----------------------------------------------------------------------------


class ReturnLogicSandbox(KnobbedState):
    """State and knobs of one fake ReturnLogic. Knobs are attributes (see :class:`Knobs`).

    ``clock`` (monotonic seconds) decides token expiry and the rate windows; ``wall`` (an aware
    datetime) stamps records created or changed through the API. Replace either in tests.
    """

    knobs_model = Knobs

    url: str
    clock: Callable[[], float]
    wall: Callable[[], datetime]
    teams: dict[str, TeamData]
    requests: deque[RecordedRequest]
    """The latest :data:`REQUEST_LOG_SIZE` ``/v1`` requests, oldest first."""
    requests_seen: int
    windows: dict[str, KeyWindows]
    events: list[WebhookEvent]
    deliveries: list[Delivery]
    rate_limited: int
    """429s answered (window or ``rate_limit_next``)."""
    tokens_issued: int
    refreshes: int
    unauthorized: int

    # knobs, declared for type checkers; stored in ``_knobs`` (validated on assignment)
    client_id: str
    client_secret: str
    redirect_url: str | None
    token_ttl: float
    refresh_token_ttl: float | None
    code_ttl: float
    rotate_refresh_tokens: bool
    revoke_bearer_on_refresh: bool
    announce_expiry: bool
    rate_limit_enabled: bool
    rate_limit_second: int
    rate_limit_minute: int
    rate_limit_key: Literal["team", "token"]
    retry_after_header: bool
    max_limit: int
    duplicate_order_status: int
    auto_process: bool
    maintenance: bool
    latency: float
    error_rate: float
    fail_next: int
    rate_limit_next: int
    fault_paths: list[str]
    drop_rate: float
    duplicate_rate: float
    delivery_delay: float
    delivery_jitter: float
    delivery_retries: int
    retry_delay: float
    delivery_timeout: float
    max_failures: int
    seed: int | None

    def __init__(self, **knobs: Any) -> None:
        object.__setattr__(self, "_initial", Knobs(**knobs))
        object.__setattr__(self, "_knobs", self._initial.model_copy(deep=True))
        object.__setattr__(self, "url", "")
        object.__setattr__(self, "clock", time.monotonic)
        object.__setattr__(self, "wall", lambda: datetime.now(UTC))
        self._session: aiohttp.ClientSession | None = None
        object.__setattr__(self, "_tasks", set())
        self._clear(keep_data=False)

    # knobs ---------------------------------------------------------------------------------

    def knobs(self) -> dict[str, Any]:
        """Current knob values (the client secret shown as ``***``)."""
        values: dict[str, Any] = self._knobs.model_dump()
        values["client_secret"] = "***"  # noqa: S105 (redaction)
        return values

    # state ---------------------------------------------------------------------------------

    def _clear(self, keep_data: bool) -> None:
        if not keep_data:
            self.teams = {}
            self.ids = IdAllocator()
        self.requests = deque(maxlen=REQUEST_LOG_SIZE)
        self.requests_seen = 0
        self.windows = {}
        self.events = []
        self.deliveries = []
        self.rate_limited = 0
        self.tokens_issued = 0
        self.refreshes = 0
        self.unauthorized = 0
        self._codes: dict[str, tuple[str, float]] = {}
        self._grants: dict[str, _Grant] = {}
        self._dead: dict[str, str] = {}
        """Tokens that no longer work -> why (``rotated``, ``revoked``)."""
        self.rng = random.Random(self._knobs.seed)  # noqa: S311 (reproducible faults)
        self._ids_rng = random.Random(self._knobs.seed)  # noqa: S311 (ids, not secrets)

    def reset(self, keep_data: bool = False) -> None:
        """Forget tokens, requests, windows, events and deliveries, knobs back to their initial
        values; the data too unless ``keep_data``. Deliveries under way are cancelled."""
        for task in list(self._tasks):
            task.cancel()
        object.__setattr__(self, "_knobs", self._initial.model_copy(deep=True))
        self._clear(keep_data)

    def team(self, team_id: str = DEFAULT_TEAM) -> TeamData:
        """The team's data (created empty on first use)."""
        data = self.teams.get(team_id)
        if data is None:
            data = self.teams[team_id] = TeamData(team_id)
        return data

    @property
    def orders(self) -> dict[int, dict[str, Any]]:
        """The default team's orders by ``rlOrderId``."""
        return self.team().orders

    @property
    def products(self) -> dict[int, dict[str, Any]]:
        return self.team().products

    @property
    def rmas(self) -> dict[int, dict[str, Any]]:
        return self.team().rmas

    @property
    def registrations(self) -> dict[str, Registration]:
        return self.team().registrations

    def _now_ms(self) -> int:
        return iso_ms(self.wall())

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._ids_rng.getrandbits(128), version=4))

    def generate(
        self,
        orders: int = 0,
        products: int | None = None,
        rmas: int | None = None,
        seed: int = 0,
        *,
        team_id: str = DEFAULT_TEAM,
        anchor: datetime | None = None,
        days: int = 180,
    ) -> dict[str, int]:
        """Add deterministic data to a team: ``products`` (default ``10 + orders // 40``, at
        most 500, none when the team has a catalog already and no number is given), ``orders``
        spread over the ``days`` before ``anchor`` (default :data:`DEFAULT_ANCHOR`, fixed, so
        a seed always gives the same records), ``rmas`` (default ``orders // 10``) on shipped
        orders. Returns how many of each were added."""
        team = self.team(team_id)
        rng = random.Random(seed)  # noqa: S311 (reproducible data)
        if anchor is not None and anchor.tzinfo is None:
            anchor = anchor.replace(tzinfo=UTC)
        anchor_ms = iso_ms(anchor or DEFAULT_ANCHOR)
        if products is None:
            products = 0 if team.products else min(500, 10 + orders // 40)
        new_products = generate_products(products, rng, self.ids, anchor_ms)
        for product in new_products:
            team.add_product(product)
        new_orders = generate_orders(orders, rng, self.ids, team.catalog, anchor_ms, days=days)
        for order in new_orders:
            team.add_order(order)
        new_rmas = generate_rmas(
            orders // 10 if rmas is None else rmas,
            rng,
            self.ids,
            new_orders,
            team.catalog,
            anchor_ms,
            team_id,
            taken=lambda order: order["rlOrderId"] in team.rmas_by_order,
        )
        for rma in new_rmas:
            team.add_rma(rma)
        return {"products": len(new_products), "orders": len(new_orders), "rmas": len(new_rmas)}

    # OAuth ---------------------------------------------------------------------------------

    def issue_code(self, team_id: str = DEFAULT_TEAM) -> str:
        """An authorization code for ``team_id``, as an install would hand the app."""
        code = secrets.token_urlsafe(9)
        self._codes[code] = (team_id, self.clock() + self._knobs.code_ttl)
        return code

    def install(
        self,
        team_id: str = DEFAULT_TEAM,
        state: str | None = None,
        redirect_url: str | None = None,
    ) -> str:
        """The URL a retailer's browser is sent to when it installs the app: ``redirect_url``
        (default: the configured one; ``ValueError`` without any) with ``code``, ``teamId``
        and, when the installation page was given one, ``state`` handed back unchanged."""
        target = redirect_url or self._knobs.redirect_url
        if not target:
            raise ValueError("no redirect_url configured")
        code = self.issue_code(team_id)
        separator = "&" if urlsplit(target).query else "?"
        fields = {"code": code, "teamId": team_id}
        if state is not None:
            fields["state"] = state
        return f"{target}{separator}{urlencode(fields)}"

    def issue_api_key(self, team_id: str = DEFAULT_TEAM, key: str | None = None) -> str:
        """A bearer token that never expires (a private app's API key)."""
        key = key or secrets.token_urlsafe(24)
        self._grants[key] = _Grant(team_id=team_id, kind="api_key", expires_at=None)
        self.team(team_id)
        return key

    def issue_tokens(self, team_id: str = DEFAULT_TEAM) -> dict[str, Any]:
        """A new bearer/refresh pair for ``team_id`` and the body ``/v1/oauth`` answers with."""
        now = self.clock()
        bearer = secrets.token_urlsafe(24)
        refresh = secrets.token_urlsafe(24)
        refresh_ttl = self._knobs.refresh_token_ttl
        self._grants[bearer] = _Grant(team_id, "bearer", now + self._knobs.token_ttl, refresh)
        self._grants[refresh] = _Grant(
            team_id, "refresh", now + refresh_ttl if refresh_ttl else None, bearer
        )
        self.tokens_issued += 1
        self.team(team_id)
        body: dict[str, Any] = {"bearer_token": bearer, "refresh_token": refresh}
        if self._knobs.announce_expiry:
            body["expires_in"] = self._knobs.token_ttl
        return body

    def _refresh(self, refresh: str, grant: _Grant) -> dict[str, Any]:
        knobs = self._knobs
        self.refreshes += 1
        revoked = grant.partner if knobs.revoke_bearer_on_refresh else None
        if revoked and self._grants.pop(revoked, None) is not None:
            self._dead[revoked] = "revoked"
        if knobs.rotate_refresh_tokens:
            del self._grants[refresh]
            self._dead[refresh] = "rotated"
            return self.issue_tokens(grant.team_id)
        now = self.clock()
        bearer = secrets.token_urlsafe(24)
        self._grants[bearer] = _Grant(grant.team_id, "bearer", now + knobs.token_ttl, refresh)
        grant.partner = bearer
        self.tokens_issued += 1
        body: dict[str, Any] = {"bearer_token": bearer, "refresh_token": refresh}
        if knobs.announce_expiry:
            body["expires_in"] = knobs.token_ttl
        return body

    def revoke_tokens(self) -> int:
        """Revoke every bearer and refresh token (API keys stay); how many there were."""
        live = [t for t, g in self._grants.items() if g.kind != "api_key"]
        for token in live:
            del self._grants[token]
            self._dead[token] = "revoked"
        return len(live)

    def expire_tokens(self) -> int:
        """Make every bearer token expire now (refresh tokens stay usable)."""
        now = self.clock()
        bearers = [g for g in self._grants.values() if g.kind == "bearer"]
        for grant in bearers:
            grant.expires_at = now
        return len(bearers)

    def key_for(self, token: str) -> str:
        """The rate-limit key requests with ``token`` count against."""
        grant = self._grants.get(token)
        if self._knobs.rate_limit_key == "team" and grant is not None:
            return f"team:{grant.team_id}"
        return f"token:{hashlib.sha256(token.encode()).hexdigest()[:12]}"

    def _authenticate(self, authorization: str) -> tuple[str, str] | str:
        """``(team_id, key)``, or why not."""
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "missing bearer token"
        grant = self._grants.get(token)
        if grant is None or grant.kind == "refresh":
            return "token revoked" if token in self._dead else "invalid token"
        if grant.expires_at is not None and grant.expires_at <= self.clock():
            return "token expired"
        return grant.team_id, self.key_for(token)

    # rate windows --------------------------------------------------------------------------

    def rate_stats(self, key: str | None = None) -> dict[str, Any]:
        """Per key (or one key): requests, admitted, 429s, counts in the last second/minute,
        and the most seen in any 1 s / 60 s window (all requests, and admitted ones)."""
        now = self.clock()
        if key is not None:
            windows = self.windows.get(key)
            return windows.stats(now) if windows else KeyWindows().stats(now)
        return {k: w.stats(now) for k, w in self.windows.items()}

    def max_in_any_second(self, key: str | None = None, *, admitted: bool = False) -> int:
        """The most requests a key (default: any key) sent within any 1 s window."""
        picks = [self.windows[key]] if key in self.windows else []
        if key is None:
            picks = list(self.windows.values())
        return max(
            ((w.admitted_second if admitted else w.seen_second).peak for w in picks), default=0
        )

    def max_in_any_minute(self, key: str | None = None, *, admitted: bool = False) -> int:
        """The most requests a key (default: any key) sent within any 60 s window."""
        picks = [self.windows[key]] if key in self.windows else []
        if key is None:
            picks = list(self.windows.values())
        return max(
            ((w.admitted_minute if admitted else w.seen_minute).peak for w in picks), default=0
        )

    def _idle_verdict(self, key: str | None) -> Verdict:
        knobs = self._knobs
        windows = self.windows.get(key) if key else None
        if windows is None:
            return Verdict(
                True,
                knobs.rate_limit_second,
                knobs.rate_limit_minute,
                knobs.rate_limit_second,
                knobs.rate_limit_minute,
            )
        return windows.peek(self.clock(), knobs.rate_limit_second, knobs.rate_limit_minute)

    def _retry_after(self, key: str) -> int:
        windows = self.windows[key]
        now = self.clock()
        waits = [0.0]
        if len(windows.second) >= self._knobs.rate_limit_second:
            waits.append(windows.second[0] + 1.0 - now)
        if len(windows.minute) >= self._knobs.rate_limit_minute:
            waits.append(windows.minute[0] + 60.0 - now)
        return max(1, math.ceil(max(waits)))

    # orders --------------------------------------------------------------------------------

    def create_order(self, body: Any, team_id: str = DEFAULT_TEAM) -> dict[str, Any]:
        """``POST /v1/orders``: validate, refuse a known ``orderNumber``, store, return."""
        team = self.team(team_id)
        check = BodyChecker()
        if not isinstance(body, dict):
            raise ValidateError.one("requestBody", "invalid object")
        values = {
            name: check.string(body, name, required=True)
            for name in ("externalOrderId", "orderNumber", "orderName")
        }
        currency = check.string(body, "shopCurrencyCode", required=True, max_length=3)
        tags = check.strings(body, "tags", required=True)
        taxes_included = check.boolean(body, "taxesIncluded", required=True)
        amounts = {name: check.money(body, name, required=True) for name in ORDER_MONEY}
        external_customer = check.number(body, "externalCustomerId")
        email = check.string(body, "customerEmail")
        phone = check.string(body, "customerPhone")
        shipping = check.address(body, "shippingAddress")
        billing = check.address(body, "billingAddress")
        fulfillment = check.choice(body, "fulfillmentStatus", FULFILLMENT_STATUSES)
        financial = check.choice(body, "financialStatus", FINANCIAL_STATUSES)
        source = check.string(body, "externalSource")
        source_type = check.string(body, "sourceType")
        shipped_at = check.date(body, "shippedAt")
        external_created = check.date(body, "externalCreateDate")
        external_updated = check.date(body, "externalUpdateDate")
        gateway = check.string(body, "gateway")
        bonus = check.boolean(body, "flatRateBonusCreditApplied")
        raw_items = check.objects(body, "orderItems")
        raw_discounts = check.objects(body, "orderDiscounts")
        items = [
            self._order_item(check, team, item, f"orderItems[{index}]")
            for index, item in enumerate(raw_items)
        ]
        discounts = [
            discount(check, d, f"orderDiscounts[{index}]") for index, d in enumerate(raw_discounts)
        ]
        check.done()
        number = values["orderNumber"]
        assert number is not None
        assert currency is not None
        if number in team.order_numbers:
            raise ValidateError(
                {
                    "orderNumber": {
                        "message": "an order with this orderNumber already exists",
                        "value": number,
                    }
                },
                message="Order number already exists",
            )
        now = iso(self._now_ms())
        rl_order_id = self.ids.take("order")
        order_items = [
            self._build_item(item, rl_order_id, now, fulfillment) for item in items if item
        ]
        net = sum(to_cents(i["totalPrice"]) - to_cents(i["totalDiscount"]) for i in order_items)
        order: dict[str, Any] = {
            "rlOrderId": rl_order_id,
            "externalOrderId": values["externalOrderId"],
            "externalSource": source,
            "createDate": now,
            "updateDate": now,
            "externalCreateDate": external_created or now,
            "externalUpdateDate": external_updated or now,
            "billingAddress": billing,
            "shippingAddress": shipping,
            "customerEmail": email,
            "customerPhone": phone,
            "orderName": values["orderName"],
            "orderNumber": number,
            "gateway": gateway,
            "flatRateBonusCreditApplied": bool(bonus),
            "subtotalPrice": money(net),
            "totalPrice": money(amounts["totalPrice"] or 0),
            "shippingPrice": money(amounts["shippingPrice"] or 0),
            "fees": money(amounts["fees"] or 0),
            "orderLevelDiscount": money(
                sum(d["amount"] for d in discounts if not d["isShippingDiscount"])
            ),
            "taxPrice": money(amounts["taxPrice"] or 0),
            "taxesIncluded": bool(taxes_included),
            "refundAmount": money(amounts["refundAmount"] or 0),
            "shippedAt": shipped_at,
            "shopCurrencyCode": currency,
            "tags": list(tags or []),
            "fulfillmentStatus": fulfillment,
            "financialStatus": financial,
            "isPseudo": False,
            "discounts": [
                {
                    "rlOrderDiscountId": self.ids.take("order_discount"),
                    "rlOrderId": rl_order_id,
                    "externalOrderId": values["externalOrderId"],
                    "amount": money(d["amount"]),
                    "code": d["code"],
                    "isShippingDiscount": d["isShippingDiscount"],
                }
                for d in discounts
            ],
            "orderItems": order_items,
        }
        if source_type is not None:
            order["sourceType"] = source_type
        if external_customer is not None:
            order["externalCustomerId"] = external_customer
        team.add_order(order)
        return order

    def _order_item(
        self, check: BodyChecker, team: TeamData, item: dict[str, Any], where: str
    ) -> dict[str, Any] | None:
        external_id = check.string(item, "externalOrderItemId", required=True, where=where)
        quantity = check.integer(item, "quantity", required=True, where=where, low=0)
        is_taxable = check.boolean(item, "isTaxable", required=True, where=where)
        is_gift_card = check.boolean(item, "isGiftCard", required=True, where=where)
        tax = check.money(item, "taxPerItem", required=True, where=where)
        variant_id = check.integer(item, "rlProductVariantId", where=where, low=0)
        custom_sku = check.string(item, "sku", where=where)
        custom_price = check.money(item, "price", where=where)
        check.string(item, "vendor", where=where)
        check.string(item, "fulfillmentService", where=where)
        status = check.choice(item, "fulfillmentStatus", FULFILLMENT_STATUSES, where=where)
        fulfillable = check.integer(item, "fulfillableQuantity", where=where, low=0)
        properties = check.strings(item, "properties", where=where)
        refunded = check.integer(item, "refundQuantity", where=where, low=0)
        override = check.money(item, "priceOverride", where=where)
        discounts = [
            discount(check, d, f"{where}.orderItemDiscounts[{index}]")
            for index, d in enumerate(check.objects(item, "orderItemDiscounts", where=where))
        ]
        product: dict[str, Any] = {}
        variant: dict[str, Any] = {}
        if variant_id is not None:
            found = team.variants.get(variant_id)
            if found is None:
                check.fail(f"{where}.rlProductVariantId", "product variant not found", variant_id)
                return None
            product, variant = found
        elif custom_sku is None or custom_price is None:
            # AddCustomItemToOrderRequest: the spec names it without its fields
            check.fail(f"{where}.rlProductVariantId", "'rlProductVariantId' is required", None)
            return None
        if quantity is None or tax is None:
            return None
        if fulfillable is not None and fulfillable > quantity:
            check.fail(f"{where}.fulfillableQuantity", "more than quantity", fulfillable)
        if refunded is not None and refunded > quantity:
            check.fail(f"{where}.refundQuantity", "more than quantity", refunded)
        price = override
        if price is None:
            price = custom_price if custom_price is not None else to_cents(variant["price"])
        return {
            "externalOrderItemId": external_id,
            "quantity": quantity,
            "isTaxable": bool(is_taxable),
            "isGiftCard": bool(is_gift_card),
            "taxPerItem": tax,
            "price": price,
            "discount": sum(d["amount"] for d in discounts if not d["isShippingDiscount"]),
            "fulfillmentStatus": status,
            "fulfillableQuantity": fulfillable,
            "properties": properties or [],
            "refundQuantity": refunded or 0,
            "product": product,
            "variant": variant,
            "sku": variant.get("sku") or custom_sku,
            "name": product.get("name") or item.get("name") or custom_sku,
        }

    def _build_item(
        self, item: dict[str, Any], rl_order_id: int, now: str, order_status: str | None
    ) -> dict[str, Any]:
        qty = item["quantity"]
        status = item["fulfillmentStatus"] or order_status
        fulfillable = item["fulfillableQuantity"]
        if fulfillable is None:
            fulfillable = 0 if status in ("fulfilled", "restocked") else qty
        discount_total = min(item["discount"], item["price"] * qty)
        per_discount = discount_total // qty if qty else 0
        actual = item["price"] - per_discount
        return {
            "rlOrderItemId": self.ids.take("order_item"),
            "rlOrderId": rl_order_id,
            "externalOrderItemId": item["externalOrderItemId"],
            "externalProductId": item["product"].get("externalProductId"),
            "createDate": now,
            "updateDate": now,
            "sku": item["sku"],
            "displayName": item["name"],
            "productExists": bool(item["variant"]),
            "quantity": qty,
            "pricePerItem": money(item["price"]),
            "discountPerItem": money(per_discount),
            "actualPricePerItem": money(actual),
            "taxPerItem": money(item["taxPerItem"]),
            "totalPrice": money(item["price"] * qty),
            "totalDiscount": money(discount_total),
            "totalTax": money(item["taxPerItem"] * qty),
            "isTaxable": item["isTaxable"],
            "fulfillableQuantity": fulfillable,
            "fulfillmentStatus": status,
            "isGiftCard": item["isGiftCard"],
            "properties": item["properties"],
            "refundQuantity": item["refundQuantity"],
            "grams": item["variant"].get("grams") or 0,
            "discounts": [],
        }

    def update_order(
        self, rl_order_id: int, body: Any, team_id: str = DEFAULT_TEAM
    ) -> dict[str, Any]:
        """``PUT /v1/orders/{rlOrderId}``: the documented fields; money is frozen once the
        order has an RMA (400 naming the field)."""
        team = self.team(team_id)
        order = team.orders.get(rl_order_id)
        if order is None:
            raise _NotFound("order")
        if not isinstance(body, dict):
            raise ValidateError.one("requestBody", "invalid object")
        check = BodyChecker()
        changes: dict[str, Any] = {}
        for name in ("customerEmail", "sourceType"):
            if name in body:
                changes[name] = check.string(body, name)
        for name in ("customerPhone", "gateway"):
            if name in body:
                changes[name] = check.string(body, name, nullable=True)
        for name in ("shippingAddress", "billingAddress"):
            if name in body:
                changes[name] = check.address(body, name)
        if "fulfillmentStatus" in body:
            changes["fulfillmentStatus"] = check.choice(
                body, "fulfillmentStatus", FULFILLMENT_STATUSES, nullable=True
            )
        if "financialStatus" in body:
            changes["financialStatus"] = check.choice(body, "financialStatus", FINANCIAL_STATUSES)
        if "shippedAt" in body:
            changes["shippedAt"] = check.date(body, "shippedAt", nullable=True)
        if "externalUpdateDate" in body:
            changes["externalUpdateDate"] = check.date(body, "externalUpdateDate")
        if "tags" in body:
            changes["tags"] = check.strings(body, "tags")
        if "taxesIncluded" in body:
            changes["taxesIncluded"] = check.boolean(body, "taxesIncluded")
        if "shopCurrencyCode" in body:
            changes["shopCurrencyCode"] = check.string(body, "shopCurrencyCode", max_length=3)
        for name in ORDER_MONEY:
            if name in body:
                cents = check.money(body, name)
                if cents is None:
                    continue
                if rl_order_id in team.rmas_by_order and cents != to_cents(order[name]):
                    check.fail(
                        name, "Cannot change monetary values after an RMA has been created", None
                    )
                changes[name] = money(cents)
        check.done()
        order.update(changes)
        order["updateDate"] = iso(self._now_ms())
        return order

    def fulfill_order(
        self, rl_order_id: int, team_id: str = DEFAULT_TEAM, shipped_at: str | None = None
    ) -> dict[str, Any]:
        """The shop ships every unit not yet shipped, as the commerce platform reports it to
        ReturnLogic (the public API cannot change order items): the order and its items become
        ``fulfilled`` with nothing left to fulfil, ``shippedAt`` set (now unless given)."""
        order = self.team(team_id).orders.get(rl_order_id)
        if order is None:
            raise _NotFound("order")
        now = iso(self._now_ms())
        for item in order["orderItems"]:
            item["fulfillableQuantity"] = 0
            item["fulfillmentStatus"] = "fulfilled"
            item["updateDate"] = now
        order["fulfillmentStatus"] = "fulfilled"
        order["shippedAt"] = shipped_at or now
        order["updateDate"] = now
        return order

    # catalog -------------------------------------------------------------------------------

    def update_product(
        self, rl_product_id: int, body: Any, team_id: str = DEFAULT_TEAM
    ) -> dict[str, Any]:
        """``PUT /v1/products/{rlProductId}``: ``isActive``, ``name``, ``vendor``,
        ``productType``, ``tags``, ``imageUrl``, ``externalProductId``, ``price``."""
        product = self.team(team_id).products.get(rl_product_id)
        if product is None:
            raise _NotFound("product")
        if not isinstance(body, dict):
            raise ValidateError.one("requestBody", "invalid object")
        check = BodyChecker()
        changes: dict[str, Any] = {}
        for name in ("name", "vendor", "productType", "imageUrl", "externalProductId"):
            if name in body:
                changes[name] = check.string(body, name)
        if "isActive" in body:
            changes["isActive"] = check.boolean(body, "isActive")
        if "tags" in body:
            changes["tags"] = check.strings(body, "tags")
        if "price" in body:
            cents = check.money(body, "price")
            changes["price"] = money(cents) if cents is not None else None
        check.done()
        product.update(changes)
        product["updateDate"] = iso(self._now_ms())
        return product

    def update_variant(
        self, rl_product_id: int, rl_variant_id: int, body: Any, team_id: str = DEFAULT_TEAM
    ) -> dict[str, Any]:
        """``PATCH /v1/products/{rlProductId}/variants/{rlProductVariantId}``."""
        team = self.team(team_id)
        found = team.variants.get(rl_variant_id)
        if found is None or found[0]["rlProductId"] != rl_product_id:
            raise _NotFound("product variant")
        product, variant = found
        if not isinstance(body, dict):
            raise ValidateError.one("requestBody", "invalid object")
        check = BodyChecker()
        changes: dict[str, Any] = {}
        for name in ("externalVariantId", "sku", "name", "barcode", "imageUrl"):
            if name in body:
                changes[name] = check.string(body, name)
        for name in ("isActive",):
            if name in body:
                changes[name] = check.boolean(body, name)
        for name in ("position", "grams", "inventoryQuantity"):
            if name in body:
                changes[name] = check.integer(body, name)
        if "price" in body:
            cents = check.money(body, "price")
            changes["price"] = money(cents) if cents is not None else None
        check.done()
        old_sku = variant.get("sku")
        variant.update(changes)
        variant["updateDate"] = variant["variantUpdatedAt"] = iso(self._now_ms())
        if old_sku != variant.get("sku"):
            team.catalog.by_sku.pop(old_sku or "", None)
            team.catalog.add(product)
        return variant

    # RMAs ----------------------------------------------------------------------------------

    def _rma(self, team: TeamData, rl_rma_id: int) -> dict[str, Any]:
        rma = team.rmas.get(rl_rma_id)
        if rma is None:
            raise _NotFound("RMA")
        return rma

    def create_rma(
        self,
        order_ref: int | str,
        items: list[Mapping[str, Any]] | None = None,
        *,
        team_id: str = DEFAULT_TEAM,
        status: str | None = None,
    ) -> dict[str, Any]:
        """An RMA requested by the shopper on an order (``rlOrderId`` or ``orderNumber``):
        ``items`` are ``{"externalOrderItemId" (or "sku"), "quantity", "returnType",
        "returnReasonCode"}`` (default: one unit of the first returnable line, ``refund``,
        ``SZ``). Fires ``rma.requested``; ``status`` moves it along first (one event still).
        ``ValueError`` for an unknown order or line, or more units than were shipped."""
        team = self.team(team_id)
        order = team.find_order(order_ref)
        if order is None:
            raise ValueError(f"unknown order {order_ref!r}")
        lines: list[tuple[Mapping[str, Any], int, str, str]] = []
        if not items:
            shipped = [i for i in order["orderItems"] if _shipped(i) - i["refundQuantity"] > 0]
            if not shipped:
                raise ValueError(f"order {order['orderNumber']} has nothing shipped to return")
            items = [{"externalOrderItemId": shipped[0]["externalOrderItemId"]}]
        for spec in items:
            key = spec.get("externalOrderItemId") or spec.get("externalOrderLineId")
            line = next(
                (
                    i
                    for i in order["orderItems"]
                    if (key is not None and i["externalOrderItemId"] == str(key))
                    or (key is None and spec.get("sku") and i.get("sku") == spec.get("sku"))
                ),
                None,
            )
            if line is None:
                raise ValueError(f"order {order['orderNumber']} has no line {key or spec!r}")
            qty = int(spec.get("quantity", 1))
            available = _shipped(line) - line["refundQuantity"]
            if not 1 <= qty <= available:
                raise ValueError(
                    f"line {line['externalOrderItemId']}: {qty} units asked, {available} returnable"
                )
            return_type = str(spec.get("returnType", "refund"))
            if return_type not in RETURN_TYPES:
                raise ValueError(f"unknown returnType {return_type!r}")
            lines.append((line, qty, return_type, str(spec.get("returnReasonCode", "SZ"))))
        now = self._now_ms()
        rl_rma_id = self.ids.take("rma")
        rma = new_rma(
            order,
            lines,
            team_id=team_id,
            rl_rma_id=rl_rma_id,
            item_ids=[self.ids.take("rma_item") for _ in lines],
            created_ms=now,
            catalog=team.catalog,
            rowpointer=self._uuid(),
            created_by={"email": order.get("customerEmail") or "", "userId": self._uuid()},
        )
        if status is not None and status != "Requested":
            transition(rma, status, now, order)
        team.add_rma(rma)
        self._emit(team, "rma.requested", rma)
        return rma

    def advance_rma(
        self, rl_rma_id: int, to: str | None = None, *, team_id: str = DEFAULT_TEAM
    ) -> dict[str, Any]:
        """Move an RMA to ``to`` (default: the next step of the main line) and fire
        ``rma.updated``. ``ValueError`` when it cannot move there (final, backwards)."""
        team = self.team(team_id)
        rma = self._rma(team, rl_rma_id)
        if to is None:
            current = rma["workflowStatus"]
            here = (
                WORKFLOW_PATH.index("Authorized" if current == "Active" else current)
                if (current in WORKFLOW_PATH or current == "Active")
                else len(WORKFLOW_PATH)
            )
            if here + 1 >= len(WORKFLOW_PATH):
                raise ValueError(f"RMA {rl_rma_id} is {current}: nothing follows")
            to = WORKFLOW_PATH[here + 1]
        transition(rma, to, self._now_ms(), team.orders.get(rma["rlOrderId"]))
        self._emit(team, "rma.updated", rma)
        return rma

    def update_rma_items(
        self, rl_rma_id: int, body: Any, team_id: str = DEFAULT_TEAM
    ) -> dict[str, Any]:
        """``PUT /v1/rmas/{rlRmaId}``: ``{"rmaItems": [{"rlRmaItemId", "disposition":
        {"code", "description", "comment"}, "itemReceived"}]}``. When every item is received the
        RMA becomes ``Received`` (and ``Processed`` with ``auto_process``). Fires
        ``rma.updated``."""
        team = self.team(team_id)
        rma = self._rma(team, rl_rma_id)
        check = BodyChecker()
        if not isinstance(body, dict):
            raise ValidateError.one("requestBody", "invalid object")
        raw_items = check.objects(body, "rmaItems", required=True)
        by_id = {item["rlRmaItemId"]: item for item in rma["rmaItems"]}
        updates = []
        for index, raw in enumerate(raw_items):
            where = f"rmaItems[{index}]"
            item_id = check.integer(raw, "rlRmaItemId", required=True, where=where)
            received = check.boolean(raw, "itemReceived", where=where)
            disposition = check.object(raw, "disposition", where=where)
            for name in ("code", "description", "comment"):
                if disposition is not None:
                    check.string(disposition, name, where=f"{where}.disposition")
            if item_id is not None and item_id not in by_id:
                check.fail(f"{where}.rlRmaItemId", "RMA item not found", item_id)
                continue
            updates.append((item_id, received, disposition))
        check.done()
        if rma["workflowStatus"] in ("Abandoned", "Canceled", "Rejected"):
            raise _Conflict(f"RMA {rl_rma_id} is {rma['workflowStatus']}")
        now_ms = self._now_ms()
        now = iso(now_ms)
        for item_id, received, disposition in updates:
            item = by_id[item_id]
            if disposition is not None:
                merged = dict(item.get("disposition") or {})
                merged.update(
                    {
                        k: disposition[k]
                        for k in ("code", "description", "comment")
                        if k in disposition
                    }
                )
                merged.setdefault("restockProcessed", False)
                merged.setdefault("restockQuantity", item["quantity"])
                item["disposition"] = merged
            if received is True:
                item["rmaItemReceived"] = True
                item["acceptedQuantity"] = item["quantity"]
            elif received is False:
                item["rmaItemReceived"] = False
            item["updateDate"] = now
        rma["timeline"]["updateDate"] = now
        order = team.orders.get(rma["rlOrderId"])
        all_received = all(i["rmaItemReceived"] for i in rma["rmaItems"])
        if all_received and rma["workflowStatus"] in _BEFORE_RECEIPT:
            transition(rma, "Received", now_ms, order)
        if all_received and self._knobs.auto_process and rma["workflowStatus"] == "Received":
            transition(rma, "Processed", now_ms, order)
        self._emit(team, "rma.updated", rma)
        return rma

    def flag_rma(self, rl_rma_id: int, team_id: str = DEFAULT_TEAM) -> dict[str, Any]:
        """Flag an RMA (it cannot be unflagged); fires ``rma.updated``."""
        team = self.team(team_id)
        rma = self._rma(team, rl_rma_id)
        rma["flagged"] = True
        self._emit(team, "rma.updated", rma)
        return rma

    def delete_rma(self, rl_rma_id: int, team_id: str = DEFAULT_TEAM) -> dict[str, Any]:
        """Delete an RMA (a shopper's abandoned request, an admin's clean-up); fires
        ``rma.deleted`` with its last state."""
        team = self.team(team_id)
        rma = team.rmas.pop(rl_rma_id, None)
        if rma is None:
            raise _NotFound("RMA")
        siblings = team.rmas_by_order.get(rma["rlOrderId"], [])
        if rl_rma_id in siblings:
            siblings.remove(rl_rma_id)
        if not siblings:
            team.rmas_by_order.pop(rma["rlOrderId"], None)
        self._emit(team, "rma.deleted", rma)
        return rma

    # webhooks ------------------------------------------------------------------------------

    def register_webhook(
        self,
        endpoint: str,
        resource_action: str,
        active: bool = True,
        team_id: str = DEFAULT_TEAM,
    ) -> Registration:
        """A webhook registration, as ``POST /v1/webhooks`` makes one."""
        if resource_action not in RESOURCE_ACTIONS:
            raise ValueError(f"unknown resourceAction {resource_action!r}")
        registration = Registration(
            registration_id=self._uuid(),
            team_id=team_id,
            resource_action=resource_action,
            endpoint=endpoint,
            active=active,
            create_date=iso(self._now_ms()),
        )
        self.team(team_id).registrations[registration.registration_id] = registration
        return registration

    def _emit(self, team: TeamData, action: str, rma: Mapping[str, Any]) -> WebhookEvent:
        event = WebhookEvent(
            event_id=self._uuid(),
            team_id=team.team_id,
            resource_action=action,
            rl_rma_id=rma["rlRmaId"],
            created=iso(self._now_ms()),
            rma=copy.deepcopy(dict(rma)),
        )
        self.events.append(event)
        knobs = self._knobs
        for registration in list(team.registrations.values()):
            if registration.resource_action != action or not registration.active:
                continue
            base = functools.partial(
                Delivery,
                seq=0,
                event_id=event.event_id,
                registration_id=registration.registration_id,
                resource_action=action,
                rl_rma_id=event.rl_rma_id,
                endpoint=registration.endpoint,
            )
            if knobs.drop_rate and self.rng.random() < knobs.drop_rate:
                self._record(base(outcome="dropped"))
                continue
            copies = 2 if knobs.duplicate_rate and self.rng.random() < knobs.duplicate_rate else 1
            body = json.dumps(webhook_payload(event, registration)).encode()
            for number in range(copies):
                delay = knobs.delivery_delay + (
                    self.rng.random() * knobs.delivery_jitter if knobs.delivery_jitter else 0.0
                )
                delivery = self._record(base(copy=number, delay=delay))
                self._schedule(delivery, registration, body)
        return event

    def _record(self, delivery: Delivery) -> Delivery:
        delivery.seq = len(self.deliveries) + 1
        self.deliveries.append(delivery)
        return delivery

    def _schedule(self, delivery: Delivery, registration: Registration, body: bytes) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or self._session is None:
            delivery.outcome = "undeliverable"
            return
        task = loop.create_task(self._deliver(delivery, registration, body))
        self._tasks.add(task)
        task.add_done_callback(self._delivery_done)

    def _delivery_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("returnlogic sandbox: webhook delivery crashed", exc_info=task.exception())

    async def _deliver(self, delivery: Delivery, registration: Registration, body: bytes) -> None:
        knobs = self._knobs
        try:
            if delivery.delay:
                await asyncio.sleep(delivery.delay)
            while True:
                session = self._session
                if not registration.active:
                    delivery.outcome = "skipped_inactive"
                    return
                if session is None:
                    delivery.outcome = "undeliverable"
                    return
                delivery.attempts += 1
                ok = False
                try:
                    async with session.post(
                        registration.endpoint,
                        data=body,
                        headers={"Content-Type": "application/json"},
                        timeout=aiohttp.ClientTimeout(total=knobs.delivery_timeout),
                    ) as response:
                        await response.read()
                        delivery.status = response.status
                        ok = 200 <= response.status < 300
                        delivery.error = None if ok else f"HTTP {response.status}"
                except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                    delivery.status = None
                    delivery.error = type(exc).__name__
                if ok:
                    registration.error_count = 0
                    registration.delivered += 1
                    delivery.outcome = "delivered"
                    return
                registration.error_count += 1
                registration.failed += 1
                if registration.active and registration.error_count >= knobs.max_failures:
                    registration.active = False
                    registration.deactivated += 1
                    log.info(
                        "returnlogic sandbox: registration deactivated after %d failures",
                        registration.error_count,
                    )
                if delivery.attempts > knobs.delivery_retries or not registration.active:
                    delivery.outcome = "failed"
                    return
                await asyncio.sleep(knobs.retry_delay)
        except asyncio.CancelledError:
            delivery.outcome = "cancelled"
            raise

    async def drain(self) -> None:
        """Wait until every scheduled delivery has finished (wrap it in ``asyncio.timeout``)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # inspection ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """A JSON summary: knobs, teams, tokens, requests, rate windows, webhooks."""
        outcomes: dict[str, int] = {}
        for record in self.requests:
            outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
        deliveries: dict[str, int] = {}
        for delivery in self.deliveries:
            deliveries[delivery.outcome] = deliveries.get(delivery.outcome, 0) + 1
        now = self.clock()
        return {
            "url": self.url,
            "knobs": self.knobs(),
            "teams": {team_id: team.counts() for team_id, team in self.teams.items()},
            "tokens": {
                "issued": self.tokens_issued,
                "refreshes": self.refreshes,
                "bearers_active": sum(
                    1
                    for g in self._grants.values()
                    if g.kind != "refresh" and (g.expires_at is None or g.expires_at > now)
                ),
            },
            "requests": self.requests_seen,
            "outcomes": outcomes,
            "unauthorized": self.unauthorized,
            "rate_limited": self.rate_limited,
            "max_in_any_second": self.max_in_any_second(),
            "max_in_any_minute": self.max_in_any_minute(),
            "rate": self.rate_stats(),
            "webhooks": {"events": len(self.events), "deliveries": deliveries},
        }

    # HTTP: the /v1 pipeline ----------------------------------------------------------------

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        record = RecordedRequest(
            seq=self.requests_seen + 1,
            method=request.method,
            path=request.path,
            query=dict(request.query),
            at=self.clock(),
        )
        self.requests.append(record)
        self.requests_seen += 1
        request[_RECORD] = record
        response, verdict = await self._pipeline(request, handler, record)
        for name, value in (verdict or self._idle_verdict(record.key)).headers().items():
            response.headers[name] = value
        record.status = response.status
        return response

    async def _pipeline(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        record: RecordedRequest,
    ) -> tuple[web.StreamResponse, Verdict | None]:
        knobs = self._knobs
        if knobs.maintenance:
            record.outcome = "maintenance"
            return _error(503, "ServiceUnavailable", "Down For Maintenance"), None
        verdict: Verdict | None = None
        if request.path != OAUTH_PATH:
            who = self._authenticate(request.headers.get("Authorization", ""))
            if isinstance(who, str):
                record.outcome = "unauthorized"
                self.unauthorized += 1
                return _error(401, "Unauthorized", f"Unauthorized: {who}"), None
            record.team_id, record.key = who
            request[_TEAM] = who[0]
            windows = self.windows.get(who[1])
            if windows is None:
                windows = self.windows[who[1]] = KeyWindows()
            verdict = windows.admit(
                record.at,
                knobs.rate_limit_second,
                knobs.rate_limit_minute,
                knobs.rate_limit_enabled,
            )
            if not verdict.admitted:
                return self._too_many(record), verdict
        if any(request.path.startswith(prefix) for prefix in knobs.fault_paths):
            fault = await self._fault(record, verdict)
            if fault is not None:
                return fault
        try:
            response = await handler(request)
        except ValidateError as exc:
            record.outcome = "invalid"
            return web.json_response(exc.body(), status=400), verdict
        except _NotFound as exc:
            record.outcome = "not_found"
            return _error(404, "NotFound", str(exc)), verdict
        except _Conflict as exc:
            record.outcome = "conflict"
            return _error(409, "Conflict", str(exc)), verdict
        except web.HTTPException as exc:
            record.outcome = "not_found" if exc.status == 404 else "error"
            return _error(exc.status, exc.reason.replace(" ", ""), exc.reason), verdict
        if record.outcome == "pending":
            record.outcome = "ok"
        return response, verdict

    def _too_many(self, record: RecordedRequest) -> web.Response:
        record.outcome = "rate_limited"
        self.rate_limited += 1
        response = _error(429, "RateLimitExceeded", "Rate Limit Exceeded")
        if self._knobs.retry_after_header and record.key is not None:
            response.headers["Retry-After"] = str(self._retry_after(record.key))
        return response

    async def _fault(
        self, record: RecordedRequest, verdict: Verdict | None
    ) -> tuple[web.Response, Verdict | None] | None:
        knobs = self._knobs
        if knobs.latency > 0:
            await asyncio.sleep(knobs.latency)
        if knobs.rate_limit_next > 0:
            knobs.rate_limit_next -= 1
            forced = dataclasses.replace(
                verdict or self._idle_verdict(None), admitted=False, remaining_second=0
            )
            return self._too_many(record), forced
        if knobs.fail_next > 0 or (knobs.error_rate > 0 and self.rng.random() < knobs.error_rate):
            knobs.fail_next = max(0, knobs.fail_next - 1)
            record.outcome = "error"
            return _error(500, "InternalServerError", "Internal Server Error"), verdict
        return None

    # HTTP: OAuth ---------------------------------------------------------------------------

    async def oauth(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise ValidateError.one("requestBody", "invalid object")
        check = BodyChecker()
        grant_type = check.choice(body, "grant_type", GRANT_TYPES, required=True, echo=True)
        client_id = check.string(body, "client_id", required=True)
        client_secret = check.string(body, "client_secret", required=True, echo=False)
        credential = {"authorization_code": "code", "refresh_token": "refresh_token"}.get(
            grant_type or ""
        )
        value = check.string(body, credential, required=True, echo=False) if credential else None
        check.done()
        knobs = self._knobs
        if not (
            secrets.compare_digest(str(client_id), knobs.client_id)
            and secrets.compare_digest(str(client_secret), knobs.client_secret)
        ):
            self.unauthorized += 1
            request[_RECORD].outcome = "unauthorized"
            return _error(401, "Unauthorized", "Unauthorized: invalid client credentials")
        now = self.clock()
        assert value is not None
        if grant_type == "authorization_code":
            issued = self._codes.pop(value, None)
            if issued is None or issued[1] <= now:
                raise ValidateError.one("code", "invalid or expired authorization code")
            request[_RECORD].outcome = "token_issued"
            return web.json_response(self.issue_tokens(issued[0]))
        grant = self._grants.get(value)
        if grant is None or grant.kind != "refresh":
            reason = self._dead.get(value)
            message = f"refresh token {reason}" if reason else "invalid refresh token"
            raise ValidateError.one("refresh_token", message)
        if grant.expires_at is not None and grant.expires_at <= now:
            raise ValidateError.one("refresh_token", "refresh token expired")
        request[_RECORD].outcome = "token_issued"
        return web.json_response(self._refresh(value, grant))

    # HTTP: orders --------------------------------------------------------------------------

    def _team_of(self, request: web.Request) -> TeamData:
        return self.team(request[_TEAM])

    async def list_orders(self, request: web.Request) -> web.Response:
        skip, limit = page(request.query, self._knobs.max_limit)
        keep = order_filter(request.query)
        team = self._team_of(request)
        return _json(_slice(team.orders.values(), keep, skip, limit))

    async def count_orders(self, request: web.Request) -> web.Response:
        keep = order_filter(request.query)
        return _json({"count": sum(1 for o in self._team_of(request).orders.values() if keep(o))})

    async def get_order(self, request: web.Request) -> web.Response:
        order = self._team_of(request).orders.get(_path_int(request, "rlOrderId"))
        if order is None:
            raise _NotFound("order")
        return _json(order)

    async def post_order(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        team_id = request[_TEAM]
        try:
            order = self.create_order(body, team_id)
        except ValidateError as exc:
            if "orderNumber" in exc.fields and exc.message == "Order number already exists":
                status = self._knobs.duplicate_order_status
                request[_RECORD].outcome = "duplicate"
                return web.json_response({**exc.body(), "status": status}, status=status)
            raise
        return _json(order)

    async def put_order(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return _json(self.update_order(_path_int(request, "rlOrderId"), body, request[_TEAM]))

    # HTTP: products ------------------------------------------------------------------------

    async def list_products(self, request: web.Request) -> web.Response:
        skip, limit = page(request.query, self._knobs.max_limit)
        keep = product_filter(request.query)
        return _json(_slice(self._team_of(request).products.values(), keep, skip, limit))

    async def count_products(self, request: web.Request) -> web.Response:
        keep = product_filter(request.query)
        products = self._team_of(request).products.values()
        return _json({"count": sum(1 for p in products if keep(p))})

    async def get_product(self, request: web.Request) -> web.Response:
        product = self._team_of(request).products.get(_path_int(request, "rlProductId"))
        if product is None:
            raise _NotFound("product")
        return _json(product)

    async def put_product(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        product_id = _path_int(request, "rlProductId")
        return _json(self.update_product(product_id, body, request[_TEAM]))

    async def patch_variant(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        product_id = _path_int(request, "rlProductId")
        variant_id = _path_int(request, "rlProductVariantId")
        return _json(self.update_variant(product_id, variant_id, body, request[_TEAM]))

    # HTTP: RMAs ----------------------------------------------------------------------------

    async def list_rmas(self, request: web.Request) -> web.Response:
        skip, limit = page(request.query, self._knobs.max_limit)
        keep = rma_filter(request.query)
        return _json(_slice(self._team_of(request).rmas.values(), keep, skip, limit))

    async def count_rmas(self, request: web.Request) -> web.Response:
        keep = rma_filter(request.query)
        return _json({"count": sum(1 for r in self._team_of(request).rmas.values() if keep(r))})

    async def get_rma(self, request: web.Request) -> web.Response:
        return _json(self._rma(self._team_of(request), _path_int(request, "rlRmaId")))

    async def put_rma(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        rma_id = _path_int(request, "rlRmaId")
        return _json(self.update_rma_items(rma_id, body, request[_TEAM]))

    async def post_flag(self, request: web.Request) -> web.Response:
        return _json(self.flag_rma(_path_int(request, "rlRmaId"), request[_TEAM]))

    # HTTP: webhooks ------------------------------------------------------------------------

    async def list_webhooks(self, request: web.Request) -> web.Response:
        registrations = self._team_of(request).registrations.values()
        return _json([r.as_json() for r in registrations])

    def _registration_body(self, body: Any) -> tuple[str, str, bool | None]:
        if not isinstance(body, dict):
            raise ValidateError.one("requestBody", "invalid object")
        check = BodyChecker()
        action = check.choice(body, "resourceAction", RESOURCE_ACTIONS, required=True)
        endpoint = check.string(body, "endpoint", required=True)
        active = check.boolean(body, "active")
        if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
            check.fail("endpoint", "must be an absolute http(s) URL", endpoint)
        check.done()
        assert action is not None
        assert endpoint is not None
        return action, endpoint, active

    async def post_webhook(self, request: web.Request) -> web.Response:
        action, endpoint, active = self._registration_body(await _json_body(request))
        registration = self.register_webhook(
            endpoint, action, True if active is None else active, request[_TEAM]
        )
        return _json(registration.as_json())

    async def put_webhook(self, request: web.Request) -> web.Response:
        registration = self._team_of(request).registrations.get(
            request.match_info["registrationId"]
        )
        if registration is None:
            raise _NotFound("webhook registration")
        action, endpoint, active = self._registration_body(await _json_body(request))
        registration.resource_action = action
        registration.endpoint = endpoint
        if active is True:
            registration.error_count = 0
        if active is not None:
            registration.active = active
        return _json(registration.as_json())

    async def delete_webhook(self, request: web.Request) -> web.Response:
        registrations = self._team_of(request).registrations
        registration = registrations.pop(request.match_info["registrationId"], None)
        if registration is None:
            raise _NotFound("webhook registration")
        return _json(registration.as_json())

    # HTTP: sandbox control -----------------------------------------------------------------

    async def control(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            changes = await _control_body(request)
            revoke = bool(changes.pop("revoke_tokens", False))
            expire = bool(changes.pop("expire_tokens", False))
            try:
                self.configure(**changes)
            except ValueError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            if revoke:
                self.revoke_tokens()
            if expire:
                self.expire_tokens()
        return _json(self.state())

    async def state_view(self, request: web.Request) -> web.Response:
        return _json(self.state())

    async def reset_view(self, request: web.Request) -> web.Response:
        body = await _control_body(request)
        self.reset(keep_data=bool(body.get("keep_data", False)))
        return _json(self.state())

    async def generate_view(self, request: web.Request) -> web.Response:
        body = await _control_body(request)
        try:
            anchor = body.get("anchor")
            added = self.generate(
                orders=int(body.get("orders", 0)),
                products=None if body.get("products") is None else int(body["products"]),
                rmas=None if body.get("rmas") is None else int(body["rmas"]),
                seed=int(body.get("seed", 0)),
                team_id=str(body.get("teamId", DEFAULT_TEAM)),
                anchor=datetime.fromisoformat(anchor) if anchor else None,
            )
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return _json(added)

    async def authorize_view(self, request: web.Request) -> web.Response:
        """``GET /oauth/authorize``: the app's installation page as a retailer logged in to
        team ``as_team`` (sandbox-only parameter, default the samples' team) sees it when
        it approves: a 302 to the redirect url with ``code``, ``teamId`` and ``state``.
        ``client_id`` must be the app's; ``redirect_uri``, when given, must be the
        configured redirect url if one is configured (400 otherwise, like OAuth 2.0
        servers). ReturnLogic documents no such page: this is the OAuth 2.0 shape."""
        query = request.query
        if query.get("client_id") != self._knobs.client_id:
            return _error(400, "ValidateError", "unknown client_id")
        if query.get("response_type", "code") != "code":
            return _error(400, "ValidateError", "response_type must be code")
        redirect_uri = query.get("redirect_uri")
        configured = self._knobs.redirect_url
        if redirect_uri and configured and redirect_uri != configured:
            return _error(400, "ValidateError", "redirect_uri is not the app's redirect url")
        if not (redirect_uri or configured):
            return _error(400, "ValidateError", "the app has no redirect url")
        location = self.install(
            query.get("as_team", DEFAULT_TEAM), query.get("state"), redirect_uri or None
        )
        return web.Response(status=302, headers={"Location": location})

    async def install_view(self, request: web.Request) -> web.Response:
        body = await _control_body(request)
        team_id = str(body.get("teamId", DEFAULT_TEAM))
        if not self._knobs.redirect_url:
            return _json({"code": self.issue_code(team_id), "teamId": team_id})
        redirect = self.install(team_id)
        answer: dict[str, Any] = {"redirect": redirect, "teamId": team_id}
        answer["code"] = parse_qs(urlsplit(redirect).query)["code"][-1]
        if body.get("follow") and self._session is not None:
            # play the retailer's browser: follow the redirect to the app
            async with self._session.get(redirect, allow_redirects=False) as response:
                await response.read()
                answer["status"] = response.status
        return _json(answer)

    async def api_key_view(self, request: web.Request) -> web.Response:
        body = await _control_body(request)
        team_id = str(body.get("teamId", DEFAULT_TEAM))
        key = body.get("key")
        return _json({"api_key": self.issue_api_key(team_id, key), "teamId": team_id})

    async def create_rma_view(self, request: web.Request) -> web.Response:
        body = await _control_body(request)
        order_ref = body.get("rlOrderId") or body.get("orderNumber")
        if order_ref is None:
            return web.json_response({"error": "give rlOrderId or orderNumber"}, status=400)
        try:
            rma = self.create_rma(
                order_ref,
                body.get("items"),
                team_id=str(body.get("teamId", DEFAULT_TEAM)),
                status=body.get("workflowStatus"),
            )
        except (TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return _json(rma)

    async def advance_view(self, request: web.Request) -> web.Response:
        body = await _control_body(request)
        team_id = str(body.get("teamId", request.query.get("teamId", DEFAULT_TEAM)))
        try:
            rma = self.advance_rma(_path_int(request, "rlRmaId"), body.get("to"), team_id=team_id)
        except _NotFound as exc:
            return web.json_response({"error": str(exc)}, status=404)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=409)
        return _json(rma)

    async def fulfill_view(self, request: web.Request) -> web.Response:
        team_id = request.query.get("teamId", DEFAULT_TEAM)
        try:
            order = self.fulfill_order(_path_int(request, "rlOrderId"), team_id)
        except _NotFound as exc:
            return web.json_response({"error": str(exc)}, status=404)
        return _json(order)

    async def delete_rma_view(self, request: web.Request) -> web.Response:
        team_id = request.query.get("teamId", DEFAULT_TEAM)
        try:
            rma = self.delete_rma(_path_int(request, "rlRmaId"), team_id)
        except _NotFound as exc:
            return web.json_response({"error": str(exc)}, status=404)
        return _json(rma)

    async def requests_view(self, request: web.Request) -> web.Response:
        return _json([r.as_json() for r in self.requests])

    async def events_view(self, request: web.Request) -> web.Response:
        return _json([e.as_json() for e in self.events])

    async def deliveries_view(self, request: web.Request) -> web.Response:
        return _json([d.as_json() for d in self.deliveries])

    # lifecycle -----------------------------------------------------------------------------

    async def client_session(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the ClientSession webhook deliveries use, and their tasks."""
        session = aiohttp.ClientSession()
        self._session = session
        try:
            yield
        finally:
            self._session = None
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()


# --- helpers ---------------------------------------------------------------------------------


def _shipped(item: Mapping[str, Any]) -> int:
    if item.get("fulfillmentStatus") not in ("fulfilled", "partial"):
        return 0
    return int(item["quantity"]) - int(item.get("fulfillableQuantity") or 0)


def _slice(
    records: Any, keep: Callable[[Mapping[str, Any]], bool], skip: int, limit: int
) -> list[dict[str, Any]]:
    return list(itertools.islice((r for r in records if keep(r)), skip, skip + limit))


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):  # exact: 3-decimal currencies (KWD) keep their third place
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _error(status: int, name: str, message: str) -> web.Response:
    return web.json_response({"status": status, "name": name, "message": message}, status=status)


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        raise ValidateError.one("requestBody", "'requestBody' is required")
    try:
        return json.loads(raw, parse_float=Decimal)
    except ValueError:
        raise ValidateError.one("requestBody", "invalid JSON") from None


async def _control_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "body is not JSON"}') from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "expected a JSON object"}')
    return body


def _path_int(request: web.Request, name: str) -> int:
    raw = request.match_info[name]
    try:
        return int(raw)
    except ValueError:
        raise ValidateError.one(name, "invalid integer number", raw) from None


# --- the application -------------------------------------------------------------------------

SANDBOX_KEY = web.AppKey("returnlogic_sandbox", ReturnLogicSandbox)


def make_app(sandbox: ReturnLogicSandbox) -> web.Application:
    """The aiohttp application of ``sandbox`` (its webhook ClientSession lives in the app's
    ``cleanup_ctx``)."""
    app = web.Application(middlewares=[sandbox.middleware])
    app[SANDBOX_KEY] = sandbox
    app.cleanup_ctx.append(sandbox.client_session)
    r = app.router
    r.add_post(OAUTH_PATH, sandbox.oauth)
    r.add_get(AUTHORIZE_PATH, sandbox.authorize_view)
    r.add_get("/v1/orders", sandbox.list_orders)
    r.add_post("/v1/orders", sandbox.post_order)
    r.add_get("/v1/orders/count", sandbox.count_orders)
    r.add_get("/v1/orders/{rlOrderId}", sandbox.get_order)
    r.add_put("/v1/orders/{rlOrderId}", sandbox.put_order)
    r.add_patch("/v1/orders/{rlOrderId}", sandbox.put_order)
    r.add_get("/v1/products", sandbox.list_products)
    r.add_get("/v1/products/count", sandbox.count_products)
    r.add_get("/v1/products/{rlProductId}", sandbox.get_product)
    r.add_put("/v1/products/{rlProductId}", sandbox.put_product)
    r.add_patch("/v1/products/{rlProductId}", sandbox.put_product)
    r.add_put("/v1/products/{rlProductId}/variants/{rlProductVariantId}", sandbox.patch_variant)
    r.add_patch("/v1/products/{rlProductId}/variants/{rlProductVariantId}", sandbox.patch_variant)
    r.add_get("/v1/rmas", sandbox.list_rmas)
    r.add_get("/v1/rmas/count", sandbox.count_rmas)
    r.add_get("/v1/rmas/{rlRmaId}", sandbox.get_rma)
    for path in ("/v1/rmas/{rlRmaId}", "/v1/rmas/{rlRmaId}/items"):
        r.add_put(path, sandbox.put_rma)
        r.add_patch(path, sandbox.put_rma)
    r.add_post("/v1/rmas/{rlRmaId}/flag", sandbox.post_flag)
    r.add_put("/v1/rmas/{rlRmaId}/flag", sandbox.post_flag)
    r.add_get("/v1/webhooks", sandbox.list_webhooks)
    r.add_post("/v1/webhooks", sandbox.post_webhook)
    r.add_put("/v1/webhooks/{registrationId}", sandbox.put_webhook)
    r.add_patch("/v1/webhooks/{registrationId}", sandbox.put_webhook)
    r.add_delete("/v1/webhooks/{registrationId}", sandbox.delete_webhook)
    c = CONTROL_PREFIX
    r.add_get(f"{c}/state", sandbox.state_view)
    r.add_route("*", f"{c}/control", sandbox.control)
    r.add_post(f"{c}/reset", sandbox.reset_view)
    r.add_post(f"{c}/generate", sandbox.generate_view)
    r.add_post(f"{c}/install", sandbox.install_view)
    r.add_post(f"{c}/api_keys", sandbox.api_key_view)
    r.add_post(f"{c}/rmas", sandbox.create_rma_view)
    r.add_post(f"{c}/rmas/{{rlRmaId}}/advance", sandbox.advance_view)
    r.add_delete(f"{c}/rmas/{{rlRmaId}}", sandbox.delete_rma_view)
    r.add_post(f"{c}/orders/{{rlOrderId}}/fulfill", sandbox.fulfill_view)
    r.add_get(f"{c}/requests", sandbox.requests_view)
    r.add_get(f"{c}/events", sandbox.events_view)
    r.add_get(f"{c}/deliveries", sandbox.deliveries_view)
    return app


@contextlib.asynccontextmanager
async def running_sandbox(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sandbox: ReturnLogicSandbox | None = None,
    **knobs: Any,
) -> AsyncIterator[ReturnLogicSandbox]:
    """Serve a :class:`ReturnLogicSandbox` (a new one with ``knobs``, or ``sandbox``) on
    ``host:port`` (0 = a free port) until the block ends; its ``url`` is set."""
    if sandbox is None:
        sandbox = ReturnLogicSandbox(**knobs)
    elif knobs:
        sandbox.configure(**knobs)
    async with serving(make_app(sandbox), host, port) as url:
        sandbox.url = url
        yield sandbox


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(
    host: str = "127.0.0.1",
    port: int = 8090,
    *,
    stop: asyncio.Event | None = None,
    generate: Mapping[str, Any] | None = None,
    api_keys: Mapping[str, str] | None = None,
    **knobs: Any,
) -> None:
    """Serve until ``stop`` is set or SIGINT/SIGTERM. ``generate`` is passed to
    :meth:`ReturnLogicSandbox.generate`; ``api_keys`` maps keys to teams. Prints the URL, the
    client id, the team and what was generated."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    sandbox = ReturnLogicSandbox(**knobs)
    added = sandbox.generate(**generate) if generate else None
    for key, team_id in (api_keys or {}).items():
        sandbox.issue_api_key(team_id, key)
    try:
        async with running_sandbox(host, port, sandbox=sandbox):
            print(f"returnlogic sandbox listening on {sandbox.url}", flush=True)
            print(f"  client_id: {sandbox.client_id}", flush=True)
            print(f"  team: {(generate or {}).get('team_id', DEFAULT_TEAM)}", flush=True)
            if added is not None:
                print(
                    f"  generated: {added['orders']} orders, {added['products']} products,"
                    f" {added['rmas']} RMAs",
                    flush=True,
                )
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 8090,
    *,
    generate: Mapping[str, Any] | None = None,
    api_keys: Mapping[str, str] | None = None,
    **knobs: Any,
) -> int:
    """Blocking: serve a sandbox until SIGINT/SIGTERM; returns the exit status (0)."""
    asyncio.run(serve(host, port, generate=generate, api_keys=api_keys, **knobs))
    return 0
