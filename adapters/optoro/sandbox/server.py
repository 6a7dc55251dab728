"""A fake Optoro on loopback: OAuth client credentials and Returns Portal Orders.

What it serves (one host for both by default; ``running_sandbox(separate_auth=True)`` serves
the token endpoint on a port of its own, ``sandbox.auth_url``, as Optoro serves it from
``auth.optiturn.com`` apart from the ``orders.`` host, and each answers 404 for the other's path):

``POST /oauth/token``
    JSON ``{"grant_type": "client_credentials", "client_id", "client_secret"}`` ->
    ``{"access_token", "token_type": "Bearer", "expires_in", "scope", "created_at"}``; 401
    ``invalid_client`` for unknown credentials, 400 for a malformed body or another grant type.
``POST /returns_portal_orders``
    needs ``Authorization: Bearer <token>`` (401 ``invalid_token`` otherwise: unknown, revoked or
    expired) and ``Api-Version: 3`` (400 otherwise); the body is validated against Optoro's
    description plus the rules its prose states ("must be unique", quantity bounds) -> 422 with
    ``errors``; accepted orders are recorded, every version, and answered ``200`` with an empty
    body (the description documents no response body).

Inspection and control (not Optoro's; no authentication): ``GET /_sandbox/state``,
``GET /_sandbox/orders``, ``GET /_sandbox/requests``, ``GET|POST /_sandbox/control`` (a JSON
object of knob names, plus ``"revoke_tokens": true``), ``POST /_sandbox/reset``.

Knobs (attributes of :class:`OptoroSandbox`, or ``POST /_sandbox/control``); faults apply to the
paths in ``fault_paths`` (by default only ``/returns_portal_orders``), checked in this order:

``drop_after``
    ``None``, or serve that many more requests and then close every further connection
    without an answer (counts down; set it again or to ``None`` to stop).
``latency``
    seconds to wait before answering.
``rate_limit_next`` / ``rate_limit_rate``
    answer a bare ``429`` (no ``Retry-After``, no ``X-RateLimit-*``, no body; what Optoro does)
    to the next N requests / to this fraction of requests.
``error_rate``
    answer this fraction of requests with ``500``.
``accept_then_drop_next``
    record the next N accepted Returns Portal Orders requests, then close the connection without
    an answer (the orders are stored; the client sees a disconnect).
``fail_orders``
    order identifiers Optoro cannot take: a Returns Portal Orders request carrying one of them
    is answered ``500`` whatever else it holds (nothing of it is stored).
``reject_orders``
    order identifiers Optoro refuses: a request carrying one is answered ``422`` naming it.
``stall_orders``
    order identifiers Optoro hangs on: a request carrying one waits ``stall_seconds`` and
    then answers ``500`` (a client with a shorter timeout sees no answer).

Random faults draw from one RNG seeded by ``seed``, so a run is reproducible. Other knobs:
``client_id``, ``client_secret``, ``token_ttl`` (``expires_in``, seconds; tokens really expire),
``validation`` (check bodies against the description), ``strict`` (turn warnings into 422s).

Warnings (``sandbox.warnings``) note what Optoro's prose asks for but a fake cannot know Optoro
enforces: a header product/tax amount that is not the sum of the lines, and a refund re-sent with
other content ("Refund objects are not updatable").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from adapters.optoro.sandbox.compare import header_sum_mismatches
from adapters.optoro.schemas import validate
from bridge.sandboxkit import KnobbedState, serve_until_stopped, serving

__all__ = [
    "API_VERSION",
    "KNOBS",
    "RPO_PATH",
    "TOKEN_PATH",
    "Knobs",
    "OptoroSandbox",
    "RecordedRequest",
    "make_app",
    "running_sandbox",
    "serve",
    "serve_forever",
]

TOKEN_PATH = "/oauth/token"  # noqa: S105 (a path)
RPO_PATH = "/returns_portal_orders"
API_VERSION = "3"
CONTROL_PREFIX = "/_sandbox"
SCOPE = "read write"

# messages of Optoro's descriptions (components.responses) and of its OAuth server
BAD_REQUEST = "Malformed request. Check structure of JSON payload."
NOT_FOUND = "The requested resource could not be found."
UNPROCESSABLE = "The request could not not be processed. Ensure parameter values are valid."
SERVER_ERROR = "Server error. Retry request using an exponential backoff."
INVALID_CLIENT = (
    "Client authentication failed due to unknown client, no client authentication included, "
    "or unsupported authentication method."
)
UNSUPPORTED_GRANT = "The authorization grant type is not supported by the authorization server."
# messages, not secrets
TOKEN_INVALID = "The access token is invalid"  # noqa: S105
TOKEN_EXPIRED = "The access token expired"  # noqa: S105
TOKEN_REVOKED = "The access token was revoked"  # noqa: S105
MAX_QUANTITY = 1000


class Knobs(BaseModel):
    """The sandbox's settings and fault knobs, validated (unknown names are refused)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    client_id: str = Field(default="sandbox-client-id", description="OAuth client id")
    client_secret: str = Field(default="sandbox-client-secret", description="OAuth secret")
    token_ttl: int = Field(default=90000, ge=1, description="expires_in of issued tokens, s")
    validation: bool = Field(default=True, description="validate bodies against the description")
    strict: bool = Field(default=False, description="answer 422 for warnings too")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="fraction answered 500")
    rate_limit_next: int = Field(default=0, ge=0, description="bare 429 for the next N")
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1, description="fraction answered 429")
    latency: float = Field(default=0.0, ge=0, description="seconds before answering")
    drop_after: int | None = Field(
        default=None, ge=0, description="serve N more requests, then drop every connection"
    )
    accept_then_drop_next: int = Field(
        default=0, ge=0, description="record the next N accepted requests, then drop them"
    )
    fault_paths: list[str] = Field(
        default_factory=lambda: [RPO_PATH], description="paths the faults apply to"
    )
    fail_orders: list[str] = Field(
        default_factory=list, description="order identifiers whose RPO requests answer 500"
    )
    reject_orders: list[str] = Field(
        default_factory=list, description="order identifiers whose RPO requests answer 422"
    )
    stall_orders: list[str] = Field(
        default_factory=list,
        description="order identifiers whose RPO requests hang stall_seconds, then answer 500",
    )
    stall_seconds: float = Field(default=30.0, ge=0, description="how long stall_orders hang")
    seed: int | None = Field(default=0, description="seed of the fault RNG; None = random")


KNOBS: tuple[str, ...] = tuple(Knobs.model_fields)


@dataclass
class RecordedRequest:
    """One request to an Optoro endpoint of the sandbox (secrets redacted)."""

    seq: int
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int | None = None
    """Status answered; ``None`` when the connection was dropped without an answer."""
    outcome: str = "pending"
    """``accepted``, ``accepted_then_dropped``, ``dropped``, ``rate_limited``, ``error``,
    ``unauthorized``, ``bad_request``, ``invalid``, ``token_issued``, ``not_found``."""
    errors: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "status": self.status,
            "outcome": self.outcome,
            "errors": self.errors,
            "at": self.at,
        }


@dataclass
class _Token:
    created_at: float
    expires_at: float  # monotonic


class _Drop(Exception):
    """Close the connection without answering."""


class OptoroSandbox(KnobbedState):
    """State and knobs of one fake Optoro. Knobs are attributes (see :class:`Knobs`)."""

    knobs_model = Knobs

    url: str
    orders: dict[str, list[dict[str, Any]]]
    """Order identifier -> every version accepted, oldest first (latest last)."""
    requests: list[RecordedRequest]
    warnings: list[dict[str, Any]]
    tokens_issued: int
    tokens_revoked: int
    clock: Callable[[], float]
    """Monotonic clock deciding token expiry (replace it in tests to expire tokens)."""

    # knobs, declared for type checkers; stored in ``_knobs`` (validated on assignment)
    client_id: str
    client_secret: str
    token_ttl: int
    validation: bool
    strict: bool
    error_rate: float
    rate_limit_next: int
    rate_limit_rate: float
    latency: float
    drop_after: int | None
    accept_then_drop_next: int
    fault_paths: list[str]
    fail_orders: list[str]
    reject_orders: list[str]
    stall_orders: list[str]
    stall_seconds: float
    seed: int | None
    auth_url: str
    """Base URL of the token endpoint (``url`` unless served apart)."""

    def __init__(self, **knobs: Any) -> None:
        object.__setattr__(self, "_initial", Knobs(**knobs))
        object.__setattr__(self, "_knobs", self._initial.model_copy(deep=True))
        object.__setattr__(self, "url", "")
        object.__setattr__(self, "auth_url", "")
        object.__setattr__(self, "clock", time.monotonic)
        self._clear()

    # knobs ---------------------------------------------------------------------------------

    def knobs(self) -> dict[str, Any]:
        """Current knob values (the client secret shown as ``***``)."""
        values: dict[str, Any] = self._knobs.model_dump()
        values["client_secret"] = "***"  # noqa: S105 (redaction)
        return values

    # state ---------------------------------------------------------------------------------

    def _clear(self) -> None:
        self.orders = {}
        self.requests = []
        self.warnings = []
        self.tokens_issued = 0
        self.tokens_revoked = 0
        self._tokens: dict[str, _Token] = {}
        self._revoked: set[str] = set()
        self._refunds: dict[tuple[str, str], dict[str, Any]] = {}
        self.rng = random.Random(self._knobs.seed)  # noqa: S311 (reproducible faults)

    def reset(self) -> None:
        """Forget everything received and issued; knobs back to their initial values."""
        object.__setattr__(self, "_knobs", self._initial.model_copy(deep=True))
        self._clear()

    def revoke_tokens(self) -> int:
        """Revoke every token issued so far (requests with them get 401); how many were live."""
        live = len(self._tokens)
        self._revoked.update(self._tokens)
        self._tokens.clear()
        self.tokens_revoked += live
        return live

    def issue_token(self) -> dict[str, Any]:
        """A new token and the body ``POST /oauth/token`` answers with."""
        token = secrets.token_urlsafe(24)
        created = time.time()
        ttl = self._knobs.token_ttl
        self._tokens[token] = _Token(created_at=created, expires_at=self.clock() + ttl)
        self.tokens_issued += 1
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": ttl,
            "scope": SCOPE,
            "created_at": int(created),
        }

    @property
    def tokens_active(self) -> int:
        now = self.clock()
        return sum(1 for t in self._tokens.values() if t.expires_at > now)

    @property
    def token_url(self) -> str:
        return f"{self.auth_url or self.url}{TOKEN_PATH}"

    @property
    def rpo_url(self) -> str:
        return f"{self.url}{RPO_PATH}"

    def latest(self, identifier: str) -> dict[str, Any] | None:
        """The latest accepted version of an order, or ``None``."""
        versions = self.orders.get(identifier)
        return versions[-1] if versions else None

    def rpo_requests(self) -> list[RecordedRequest]:
        """The Returns Portal Orders requests received, any outcome."""
        return [r for r in self.requests if r.path == RPO_PATH]

    def state(self) -> dict[str, Any]:
        """A JSON summary: counters, knobs, orders (identifier -> number of versions)."""
        outcomes: dict[str, int] = {}
        for record in self.requests:
            outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
        return {
            "url": self.url,
            "knobs": self.knobs(),
            "tokens_issued": self.tokens_issued,
            "tokens_active": self.tokens_active,
            "tokens_revoked": self.tokens_revoked,
            "requests": len(self.requests),
            "outcomes": outcomes,
            "orders": {identifier: len(v) for identifier, v in self.orders.items()},
            "warnings": self.warnings,
        }

    # request handling ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Every Optoro endpoint: log, apply faults, dispatch."""
        raw = await request.read()
        body = _parse_body(raw)
        record = RecordedRequest(
            seq=len(self.requests) + 1,
            method=request.method,
            path=request.path,
            headers=_redacted_headers(request.headers),
            body=_redacted_body(body),
        )
        self.requests.append(record)
        try:
            response = await self._answer(request, record, body)
        except _Drop:
            record.status = None
            if request.transport is not None:
                request.transport.close()
            # the client never gets an answer; aiohttp cannot write to a closed transport
            raise asyncio.CancelledError from None
        record.status = response.status
        return response

    async def _answer(
        self, request: web.Request, record: RecordedRequest, body: Any
    ) -> web.StreamResponse:
        route = (request.method, request.path)
        known = route in {("POST", TOKEN_PATH), ("POST", RPO_PATH)}
        if request.app.get(SERVES, request.path) != request.path:
            known = False  # the other host's endpoint
            route = ("", "")
        if known and request.path in self._knobs.fault_paths:
            fault = await self._fault(record)
            if fault is not None:
                return fault
        if route == ("POST", TOKEN_PATH):
            return self._token(record, body)
        if route == ("POST", RPO_PATH):
            return await self._rpo(request, record, body)
        record.outcome = "not_found"
        return _error(404, "not_found", NOT_FOUND)

    async def _fault(self, record: RecordedRequest) -> web.StreamResponse | None:
        knobs = self._knobs
        if knobs.drop_after is not None:
            if knobs.drop_after == 0:
                record.outcome = "dropped"
                raise _Drop
            knobs.drop_after -= 1
        if knobs.latency > 0:
            await asyncio.sleep(knobs.latency)
        if knobs.rate_limit_next > 0 or (
            knobs.rate_limit_rate > 0 and self.rng.random() < knobs.rate_limit_rate
        ):
            knobs.rate_limit_next = max(0, knobs.rate_limit_next - 1)
            record.outcome = "rate_limited"
            return web.Response(status=429)
        if knobs.error_rate > 0 and self.rng.random() < knobs.error_rate:
            record.outcome = "error"
            return _error(500, "internal_server_error", SERVER_ERROR)
        return None

    def _token(self, record: RecordedRequest, body: Any) -> web.StreamResponse:
        if not isinstance(body, dict):
            record.outcome = "bad_request"
            return _error(400, "invalid_request", BAD_REQUEST)
        if not (
            secrets.compare_digest(str(body.get("client_id", "")), self._knobs.client_id)
            and secrets.compare_digest(
                str(body.get("client_secret", "")), self._knobs.client_secret
            )
        ):
            record.outcome = "unauthorized"
            return _error(401, "invalid_client", INVALID_CLIENT)
        if body.get("grant_type") != "client_credentials":
            record.outcome = "bad_request"
            return _error(400, "unsupported_grant_type", UNSUPPORTED_GRANT)
        problems = validate("token_request", body)
        if problems:
            record.outcome = "bad_request"
            record.errors = problems
            return _error(400, "invalid_request", BAD_REQUEST, problems)
        record.outcome = "token_issued"
        return web.json_response(self.issue_token())

    async def _rpo(
        self, request: web.Request, record: RecordedRequest, body: Any
    ) -> web.StreamResponse:
        problem = self._token_problem(request.headers.get("Authorization", ""))
        if problem is not None:
            record.outcome = "unauthorized"
            return _error(
                401,
                "invalid_token",
                problem,
                headers={
                    "WWW-Authenticate": (
                        f'Bearer realm="Optoro", error="invalid_token", '
                        f'error_description="{problem}"'
                    )
                },
            )
        version = request.headers.get("Api-Version")
        if version != API_VERSION:
            record.outcome = "bad_request"
            record.errors = [f"Api-Version: header must be {API_VERSION!r}, got {version!r}"]
            return _error(400, "bad_request", BAD_REQUEST, record.errors)
        if body is _UNPARSABLE:
            record.outcome = "bad_request"
            record.errors = ["<root>: body is not JSON"]
            return _error(400, "bad_request", BAD_REQUEST, record.errors)
        if self._knobs.validation:
            errors = validate("rpo_request", body) or _prose_rules(body)
            if errors:
                record.outcome = "invalid"
                record.errors = errors
                return _error(422, "unprocessable_entity", UNPROCESSABLE, errors)
        orders = _orders_of(body)
        identifiers = {order.get("identifier") for order in orders}
        if identifiers & set(self._knobs.stall_orders):
            await asyncio.sleep(self._knobs.stall_seconds)  # a hung Optoro, not a wait in a test
            record.outcome = "error"
            return _error(500, "internal_server_error", SERVER_ERROR)
        if identifiers & set(self._knobs.fail_orders):
            record.outcome = "error"
            return _error(500, "internal_server_error", SERVER_ERROR)
        rejected = sorted(str(i) for i in identifiers & set(self._knobs.reject_orders))
        if rejected:
            record.outcome = "invalid"
            record.errors = [f"orders[identifier={i}]: cannot be processed" for i in rejected]
            return _error(422, "unprocessable_entity", UNPROCESSABLE, record.errors)
        warnings = [w for order in orders for w in self._warnings(order)]
        if warnings and self._knobs.strict:
            record.outcome = "invalid"
            record.errors = [w["message"] for w in warnings]
            return _error(422, "unprocessable_entity", UNPROCESSABLE, record.errors)
        self.warnings.extend(warnings)
        for order in orders:
            self._record(order)
        record.outcome = "accepted"
        if self._knobs.accept_then_drop_next > 0:
            self._knobs.accept_then_drop_next -= 1
            record.outcome = "accepted_then_dropped"
            raise _Drop
        return web.Response(status=200)

    def _token_problem(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return TOKEN_INVALID
        if token in self._revoked:
            return TOKEN_REVOKED
        issued = self._tokens.get(token)
        if issued is None:
            return TOKEN_INVALID
        if issued.expires_at <= self.clock():
            return TOKEN_EXPIRED
        return None

    def _warnings(self, order: dict[str, Any]) -> list[dict[str, Any]]:
        identifier = str(order.get("identifier"))
        found = [
            {
                "order": identifier,
                "rule": "header_sum",
                "message": (
                    f"order {identifier}: header {name} is {sent}, the lines sum to {lines}"
                ),
            }
            for name, (sent, lines) in header_sum_mismatches(order).items()
        ]
        for refund in _refunds_of(order):
            key = (identifier, str(refund.get("identifier")))
            before = self._refunds.get(key)
            if before is not None and before != refund:
                found.append(
                    {
                        "order": identifier,
                        "rule": "refund_changed",
                        "message": (
                            f"order {identifier}: refund {key[1]} was sent before with other "
                            "content (refund objects are not updatable)"
                        ),
                    }
                )
        return found

    def _record(self, order: dict[str, Any]) -> None:
        identifier = str(order.get("identifier"))
        self.orders.setdefault(identifier, []).append(order)
        for refund in _refunds_of(order):
            self._refunds.setdefault((identifier, str(refund.get("identifier"))), refund)

    async def control(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                changes = await request.json()
            except ValueError:
                return web.json_response({"error": "body is not JSON"}, status=400)
            if not isinstance(changes, dict):
                return web.json_response({"error": "expected a JSON object"}, status=400)
            revoke = bool(changes.pop("revoke_tokens", False))
            try:
                self.configure(**changes)
            except ValueError as exc:
                return web.json_response({"error": str(exc)}, status=400)
            if revoke:
                self.revoke_tokens()
        return web.json_response(self.state())

    async def state_view(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def orders_view(self, request: web.Request) -> web.Response:
        identifier = request.query.get("identifier")
        if identifier is not None:
            return web.json_response(self.orders.get(identifier, []))
        return web.json_response(self.orders)

    async def requests_view(self, request: web.Request) -> web.Response:
        return web.json_response([r.as_json() for r in self.requests])

    async def reset_view(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response(self.state())


_UNPARSABLE: Any = object()


def _parse_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return _UNPARSABLE


def _redacted_headers(headers: Any) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        if name.lower() == "authorization":
            scheme = value.partition(" ")[0]
            value = f"{scheme} ***"
        out[name] = value
    return out


def _redacted_body(body: Any) -> Any:
    if body is _UNPARSABLE:
        return "<not JSON>"
    if isinstance(body, dict) and "client_secret" in body:
        return {**body, "client_secret": "***"}
    return body


def _error(
    status: int,
    error: str,
    description: str,
    errors: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"error": error, "error_description": description}
    if errors is not None:
        body["errors"] = errors
    return web.json_response(body, status=status, headers=headers)


def _orders_of(body: Any) -> list[dict[str, Any]]:
    try:
        orders = body["returns_portal_order"]["orders"]
    except (KeyError, TypeError):
        return []
    return [o for o in orders if isinstance(o, dict)] if isinstance(orders, list) else []


def _refunds_of(order: dict[str, Any]) -> list[dict[str, Any]]:
    refunds = order.get("refunds")
    return [r for r in refunds if isinstance(r, dict)] if isinstance(refunds, list) else []


def _prose_rules(body: Any) -> list[str]:
    """What the description's prose says "must" be, beyond its JSON Schema."""
    problems = []
    seen_orders: set[str] = set()
    for i, order in enumerate(_orders_of(body)):
        at = f"returns_portal_order.orders[{i}]"
        identifier = order["identifier"]
        if identifier in seen_orders:
            problems.append(f"{at}.identifier: {identifier!r} appears twice in one request")
        seen_orders.add(identifier)
        seen_items: set[str] = set()
        for j, item in enumerate(order["items"]):
            where = f"{at}.items[{j}]"
            if item["identifier"] in seen_items:
                problems.append(f"{where}.identifier: {item['identifier']!r} is not unique")
            seen_items.add(item["identifier"])
            quantity, shipped = item["quantity"], item["quantity_shipped"]
            canceled = item["quantity_canceled"]
            if quantity > MAX_QUANTITY:
                problems.append(f"{where}.quantity: {quantity} is more than {MAX_QUANTITY}")
            if quantity < shipped + canceled:
                problems.append(
                    f"{where}.quantity: {quantity} is less than quantity_shipped + "
                    f"quantity_canceled ({shipped} + {canceled})"
                )
            refunded = item.get("quantity_refunded")
            if refunded is not None and refunded > shipped:
                problems.append(
                    f"{where}.quantity_refunded: {refunded} is more than quantity_shipped "
                    f"({shipped})"
                )
        for k, refund in enumerate(order["refunds"]):
            for m, line in enumerate(refund["refund_line_items"]):
                if line["order_item_identifier"] not in seen_items:
                    problems.append(
                        f"{at}.refunds[{k}].refund_line_items[{m}].order_item_identifier: "
                        f"{line['order_item_identifier']!r} is not an item of the order"
                    )
    return problems


SERVES = web.AppKey("serves", str)
"""The one Optoro path an application serves when the token server is served apart."""


def make_app(sandbox: OptoroSandbox, serves: str | None = None) -> web.Application:
    """The aiohttp application of ``sandbox``; ``serves`` (``TOKEN_PATH`` or ``RPO_PATH``):
    only that Optoro endpoint (the other answers 404), as Optoro's two hosts do."""
    app = web.Application()
    if serves is not None:
        app[SERVES] = serves
    app.router.add_get(f"{CONTROL_PREFIX}/state", sandbox.state_view)
    app.router.add_get(f"{CONTROL_PREFIX}/orders", sandbox.orders_view)
    app.router.add_get(f"{CONTROL_PREFIX}/requests", sandbox.requests_view)
    app.router.add_route("*", f"{CONTROL_PREFIX}/control", sandbox.control)
    app.router.add_post(f"{CONTROL_PREFIX}/reset", sandbox.reset_view)
    app.router.add_route("*", "/{tail:.*}", sandbox.handle)
    return app


@contextlib.asynccontextmanager
async def running_sandbox(
    host: str = "127.0.0.1", port: int = 0, *, separate_auth: bool = False, **knobs: Any
) -> AsyncIterator[OptoroSandbox]:
    """Serve a new :class:`OptoroSandbox` on ``host:port`` (0 = a free port) until the block
    ends; the sandbox's ``url`` is set (``http://host:port``). ``separate_auth``: the token
    endpoint is served on another free port (``auth_url``) and ``url`` serves orders only."""
    sandbox = OptoroSandbox(**knobs)
    if not separate_auth:
        async with serving(make_app(sandbox), host, port) as url:
            sandbox.url = url
            sandbox.auth_url = url
            yield sandbox
        return
    async with (
        serving(make_app(sandbox, RPO_PATH), host, port) as url,
        serving(make_app(sandbox, TOKEN_PATH), host, 0) as auth_url,
    ):
        sandbox.url = url
        sandbox.auth_url = auth_url
        yield sandbox


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(
    host: str = "127.0.0.1",
    port: int = 8089,
    *,
    stop: asyncio.Event | None = None,
    **knobs: Any,
) -> None:
    """Serve until ``stop`` is set or SIGINT/SIGTERM; prints the URL and the client id."""
    await serve_until_stopped(
        running_sandbox,
        lambda sandbox: [
            f"optoro sandbox listening on {sandbox.url}",
            f"  client_id: {sandbox.client_id}",
        ],
        host,
        port,
        stop=stop,
        **knobs,
    )


def serve_forever(host: str = "127.0.0.1", port: int = 8089, **knobs: Any) -> int:
    """Blocking: serve a sandbox until SIGINT/SIGTERM; returns the exit status (0)."""
    asyncio.run(serve(host, port, **knobs))
    return 0
