"""A fake Kibo OMS on loopback: Create, Get and Process Return, and Return Event Notifications.

What it serves (Kibo's paths; see ``shared/specs/kibo-*``):

``POST /api/v2/return/``
    the body is validated against the return schema rebuilt from the Create Return page
    (:mod:`adapters.kibo.sandbox.schema`: required fields, types, minimums, maximum lengths,
    enums; unknown fields refused) -> 400 with an error body. A ``returnID`` in the request is
    kept (knob ``honour_return_id``, default on, as the page allows a client-chosen id); one
    that exists already is refused with ``409`` ``DUPLICATE_RETURN_ID`` (invented, Kibo's pages
    show no such error) and creates nothing. With the knob off, or without one in the request,
    the return gets the next free id from 1000 (what a tenant that assigns its own ids does).
    Accepted returns get ``status`` ``OPEN``, item
    ``status`` ``PENDING`` unless given and a ``returnItemID``; the answer is ``200`` with the
    whole return. The sandbox never deduplicates: the same body twice is two returns, as a
    create without an idempotency key would be.
``GET /api/v2/return/{returnID}``
    the return (Get Return: same schema as the create, plus Kibo's fields), or 404.
``POST /api/v2/return/action/process/``
    ``{"returnID", "acceptedItemQuantity": [{"orderItemID", "quantityAccepted"}], ...}``: only an
    ``OPEN`` or ``PROCESSING`` return (else 409); ``quantityAccepted`` at most the item's
    quantity (else 400). Listed items with a quantity > 0 become ``ACCEPTED``, with 0
    ``REJECTED``; **items not listed are rejected** (our reading of "full or partial
    acceptance"). The return is ``CLOSED`` with ``confirmTime``; when something was accepted it
    is cleared (``clearedTime``, notification ``return_cleared``), else rejected
    (``return_rejected``). Answer: ``200`` with the return.

Orders (sandbox only, :meth:`KiboSandbox.add_order`): a create against an ``externalOrderID``
the sandbox was given as an order is checked like a tenant checks it: every ``orderItemID``
must be an item of that order, its ``quantity`` at most the item's ordered quantity (per
return: the returns of an exchange order are filed against the original order too), and an
``orderID`` sent must be the order's; else ``400``
``ORDER_ITEM_NOT_FOUND`` / ``RETURN_NOT_ALLOWED`` / ``ORDER_MISMATCH`` naming ``item[i]`` and
creating nothing. Creates against orders it was not given are accepted as before, unless the
knob ``known_orders_only`` is set (then ``400`` ``ORDER_NOT_FOUND``).

Every Kibo path needs ``Authorization``: ``Bearer <token>`` (``auth="bearer"``) or HTTP Basic
(``auth="basic"``) with the configured credentials, else ``401`` with ``WWW-Authenticate``.

Error bodies are **invented** (Kibo's pages show none): ``{"errorCode": "VALIDATION_ERROR",
"message": "...", "httpStatus": 400, "errors": [{"field": "item[0].quantity", "message":
"..."}]}``; codes ``UNAUTHORIZED``, ``VALIDATION_ERROR``, ``NOT_FOUND``, ``INVALID_STATE``,
``RETURN_NOT_ALLOWED`` (``reject_next``), ``INTERNAL_ERROR``. The success status (200) and
body of the create and process actions are assumptions too.

Return Event Notifications: when a return changes -- created (sent in the background, after the
create is answered, so it can overtake the answer as a real webhook can), and the actions
:meth:`KiboSandbox.accept`, :meth:`~KiboSandbox.clear`, :meth:`~KiboSandbox.reject`,
:meth:`~KiboSandbox.reopen`, :meth:`~KiboSandbox.fail_refund` (also
``POST /_sandbox/returns/{id}/{accept|clear|reject|reopen|fail_refund}``) -- the sandbox POSTs
``{"eventTypeID": "return_cleared", "status", "source": "sandbox", "orderID", "shipmentID",
"externalOrderID", "returnID", "manufacturerID", "eventTime", ...}`` to ``notification_url``
with ``notification_headers`` (e.g. an ``Authorization`` header), unless the kind is not in
``notify`` or ``drop_notifications`` is set (recorded as ``dropped``: exercises reconciliation).
``event_names`` (kind -> wire name; kinds it does not list keep Kibo's names) imitates a tenant's
"translated" notifications.

Inspection and control (not Kibo's; no authentication): ``GET /_sandbox/state``,
``GET /_sandbox/returns[?externalOrderID=]``, ``GET /_sandbox/returns/{id}``,
``GET /_sandbox/requests``, ``GET /_sandbox/notifications``, ``GET|POST /_sandbox/control``
(a JSON object of knobs), ``POST /_sandbox/reset``. **Kibo itself offers no documented way to
find returns by order** (only Get Return by ``returnID``): the lookup here is for tests; a client
must not rely on it to learn whether a create whose answer was lost went through.

Fault knobs (on Kibo paths only), in this order: ``latency`` (seconds before answering),
``error_rate`` (fraction answered 500, from an RNG seeded by ``seed``), then authentication, then
for creates: validation, ``reject_next`` (refuse the next N valid creates with
``reject_status`` and ``reject_message``), and after the return is stored
``timeout_after_commit_next`` (the next N creates are committed but the client never sees the
answer: ``commit_fault="stall"`` waits ``stall_seconds`` -- longer than the client's timeout --
before answering; ``"drop"`` closes the connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from adapters.kibo.sandbox.schema import validate
from bridge.sandboxkit import KnobbedState, serve_until_stopped, serving
from mappings.kibo import dumps

__all__ = [
    "ACTIONS",
    "API_PREFIX",
    "DEFAULT_WIRE_EVENT_NAMES",
    "FIRST_RETURN_ID",
    "KNOBS",
    "PROCESS_PATH",
    "RETURN_PATH",
    "KiboSandbox",
    "Knobs",
    "RecordedRequest",
    "SandboxRefused",
    "SentNotification",
    "make_app",
    "running_sandbox",
    "serve",
    "serve_forever",
]

API_PREFIX = "/api/v2/return"
RETURN_PATH = "/api/v2/return/"
PROCESS_PATH = "/api/v2/return/action/process/"
CONTROL_PREFIX = "/_sandbox"
FIRST_RETURN_ID = 1000
FIRST_RETURN_ITEM_ID = 5000
ACTIONS = ("accept", "clear", "reject", "reopen", "fail_refund")

DEFAULT_WIRE_EVENT_NAMES: dict[str, str] = {
    "created": "return_created",
    "accepted": "return_accepted",
    "rejected": "return_rejected",
    "cleared": "return_cleared",
    "reopened": "return_reopened",
    "refund_failed": "return_failure",
}
"""Event kind -> the name sent in ``eventTypeID`` (the failure name is our guess)."""


class Knobs(BaseModel):
    """The sandbox's settings and fault knobs, validated (unknown names are refused)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    auth: Literal["bearer", "basic"] = Field(default="bearer", description="accepted scheme")
    token: str = Field(default="sandbox-token", description="bearer token (auth = bearer)")
    username: str = Field(default="sandbox-user", description="user (auth = basic)")
    password: str = Field(default="sandbox-password", description="password (auth = basic)")
    validation: bool = Field(default=True, description="validate bodies against the schema")
    honour_return_id: bool = Field(
        default=True,
        description="keep a returnID given in a create (refusing one that exists, 409);"
        " off: assign the next free id whatever the request says",
    )
    latency: float = Field(default=0.0, ge=0, description="seconds before answering")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="fraction answered 500")
    reject_next: int = Field(default=0, ge=0, description="refuse the next N valid creates")
    reject_status: int = Field(default=400, ge=400, le=499, description="status of refusals")
    reject_message: str = Field(
        default="The quantity returned exceeds the returnable quantity of the order item.",
        description="message of refusals",
    )
    timeout_after_commit_next: int = Field(
        default=0, ge=0, description="store the next N creates, then never answer in time"
    )
    commit_fault: Literal["stall", "drop"] = Field(
        default="stall", description="stall past the client's timeout, or drop the connection"
    )
    stall_seconds: float = Field(default=30.0, ge=0, description="how long a stall lasts")
    notification_url: str | None = Field(default=None, description="where notifications go")
    notification_headers: dict[str, str] = Field(
        default_factory=dict, description="headers of notifications (e.g. Authorization)"
    )
    notification_timeout: float = Field(default=5.0, gt=0, description="per notification, s")
    drop_notifications: bool = Field(default=False, description="record, never send")
    notify: list[str] = Field(
        default_factory=lambda: list(DEFAULT_WIRE_EVENT_NAMES),
        description="event kinds that are sent",
    )
    event_names: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_WIRE_EVENT_NAMES),
        description="event kind -> eventTypeID sent (unlisted kinds: Kibo's names)",
    )
    manufacturer_id: int = Field(default=1, description="manufacturerID of notifications")
    known_orders_only: bool = Field(
        default=False, description="refuse creates for orders not given with add_order"
    )
    seed: int | None = Field(default=0, description="seed of the fault RNG; None = random")


KNOBS: tuple[str, ...] = tuple(Knobs.model_fields)
_SECRET_KNOBS = ("token", "password")


@dataclass(frozen=True)
class SandboxOrder:
    """An order the sandbox knows: its Kibo ``orderID`` and ``orderItemID -> quantity``."""

    order_id: int | None
    items: dict[int, int]


@dataclass
class RecordedRequest:
    """One request to a Kibo path of the sandbox (``Authorization`` redacted)."""

    seq: int
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int | None = None
    """Status answered; ``None`` when the client never got an answer (dropped)."""
    outcome: str = "pending"
    """``created``, ``created_then_stalled``, ``created_then_dropped``, ``found``,
    ``processed``, ``invalid``, ``rejected``, ``unauthorized``, ``not_found``, ``conflict``,
    ``error``, ``bad_request``."""
    errors: list[dict[str, str]] = field(default_factory=list)
    return_id: int | None = None
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
            "return_id": self.return_id,
            "at": self.at,
        }


@dataclass
class SentNotification:
    """One Return Event Notification, sent or not."""

    seq: int
    kind: str
    event_type: str
    return_id: int
    body: dict[str, Any]
    url: str | None
    outcome: str = "pending"
    """``sent`` (2xx), ``refused`` (other status), ``failed`` (no answer), ``dropped``
    (``drop_notifications``), ``not_sent`` (no URL, or the kind is not in ``notify``)."""
    status: int | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "event_type": self.event_type,
            "return_id": self.return_id,
            "body": self.body,
            "url": self.url,
            "outcome": self.outcome,
            "status": self.status,
            "error": self.error,
        }


class _Drop(Exception):
    """Close the connection without answering."""


class SandboxRefused(ValueError):
    """A request or action the fake Kibo refuses (``status``, ``code``, ``message``, ``errors``)."""

    def __init__(self, status: int, code: str, message: str, errors: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors


class KiboSandbox(KnobbedState):
    """State and knobs of one fake Kibo. Knobs are attributes (see :class:`Knobs`)."""

    knobs_model = Knobs

    url: str
    returns: dict[int, dict[str, Any]]
    """returnID -> the return as Get Return answers it."""
    requests: list[RecordedRequest]
    notifications: list[SentNotification]
    session: aiohttp.ClientSession | None
    """Sends notifications; owned by the app (see :func:`make_app`)."""
    rng: random.Random
    _initial: Knobs
    _knobs: Knobs
    _closing: asyncio.Event
    _tasks: set[asyncio.Task[SentNotification]]
    _next_return_id: int
    _next_item_id: int

    # knobs, declared for type checkers; stored in ``_knobs`` (validated on assignment)
    auth: Literal["bearer", "basic"]
    token: str
    username: str
    password: str
    validation: bool
    honour_return_id: bool
    latency: float
    error_rate: float
    reject_next: int
    reject_status: int
    reject_message: str
    timeout_after_commit_next: int
    commit_fault: Literal["stall", "drop"]
    stall_seconds: float
    notification_url: str | None
    notification_headers: dict[str, str]
    notification_timeout: float
    drop_notifications: bool
    notify: list[str]
    event_names: dict[str, str]
    manufacturer_id: int
    known_orders_only: bool
    seed: int | None
    orders: dict[str, SandboxOrder]
    """externalOrderID -> the order's Kibo ids (see :meth:`add_order`)."""

    def __init__(self, **knobs: Any) -> None:
        object.__setattr__(self, "_initial", Knobs(**knobs))
        object.__setattr__(self, "_knobs", self._initial.model_copy(deep=True))
        object.__setattr__(self, "url", "")
        object.__setattr__(self, "session", None)
        object.__setattr__(self, "_closing", asyncio.Event())
        object.__setattr__(self, "_tasks", set())
        self._clear()

    # knobs ---------------------------------------------------------------------------------

    def knobs(self) -> dict[str, Any]:
        """Current knob values, secrets and notification header values shown as ``***``."""
        values: dict[str, Any] = self._knobs.model_dump()
        for name in _SECRET_KNOBS:
            values[name] = "***"
        values["notification_headers"] = dict.fromkeys(values["notification_headers"], "***")
        return values

    # state ---------------------------------------------------------------------------------

    def _clear(self) -> None:
        self.orders = {}
        self.returns = {}
        self.requests = []
        self.notifications = []
        self._next_return_id = FIRST_RETURN_ID
        self._next_item_id = FIRST_RETURN_ITEM_ID
        self.rng = random.Random(self._knobs.seed)  # noqa: S311 (reproducible faults)

    def reset(self) -> None:
        """Forget every return, request and notification; knobs back to their initial values."""
        object.__setattr__(self, "_knobs", self._initial.model_copy(deep=True))
        self._clear()

    @property
    def return_url(self) -> str:
        return f"{self.url}{RETURN_PATH}"

    @property
    def process_url(self) -> str:
        return f"{self.url}{PROCESS_PATH}"

    def get_return(self, return_id: int) -> dict[str, Any]:
        """A copy of the return (``KeyError`` when unknown)."""
        return copy.deepcopy(self.returns[return_id])

    def find_returns(self, external_order_id: str | None = None) -> list[dict[str, Any]]:
        """Copies of the returns of ``externalOrderID`` (all returns when ``None``), in the
        order they were created (client-chosen ids are not sequential).

        Sandbox only: Kibo documents no lookup of returns by order.
        """
        return [
            copy.deepcopy(r)
            for r in self.returns.values()
            if external_order_id is None or r.get("externalOrderID") == external_order_id
        ]

    def create_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path == RETURN_PATH]

    def state(self) -> dict[str, Any]:
        outcomes: dict[str, int] = {}
        for record in self.requests:
            outcomes[record.outcome] = outcomes.get(record.outcome, 0) + 1
        notified: dict[str, int] = {}
        for note in self.notifications:
            notified[note.outcome] = notified.get(note.outcome, 0) + 1
        return {
            "url": self.url,
            "knobs": self.knobs(),
            "requests": len(self.requests),
            "outcomes": outcomes,
            "returns": {str(i): r["status"] for i, r in sorted(self.returns.items())},
            "notifications": notified,
        }

    def add_order(
        self, external_order_id: str, items: dict[int, int], order_id: int | None = None
    ) -> None:
        """Know an order: ``items`` maps each ``orderItemID`` to its ordered quantity."""
        self.orders[external_order_id] = SandboxOrder(order_id, dict(items))

    def _check_order(self, body: dict[str, Any]) -> None:
        external = body.get("externalOrderID")
        order = self.orders.get(external) if isinstance(external, str) else None
        if order is None:
            if self._knobs.known_orders_only:
                raise SandboxRefused(
                    400,
                    "ORDER_NOT_FOUND",
                    f"No order {external!r}.",
                    [{"field": "externalOrderID", "message": "unknown order"}],
                )
            return
        if order.order_id is not None and body.get("orderID") not in (None, order.order_id):
            raise SandboxRefused(
                400,
                "ORDER_MISMATCH",
                f"orderID {body.get('orderID')} is not the order {external!r}.",
                [{"field": "orderID", "message": f"expected {order.order_id}"}],
            )
        for i, item in enumerate(body.get("item") or []):
            item_id, qty = item.get("orderItemID"), item.get("quantity")
            if item_id not in order.items:
                raise SandboxRefused(
                    400,
                    "ORDER_ITEM_NOT_FOUND",
                    f"Order {external!r} has no order item {item_id}.",
                    [{"field": f"item[{i}].orderItemID", "message": "not an item of the order"}],
                )
            left = order.items[item_id]
            if isinstance(qty, int) and qty > left:
                raise SandboxRefused(
                    400,
                    "RETURN_NOT_ALLOWED",
                    f"The quantity returned exceeds the quantity ordered ({left}) of the"
                    f" order item {item_id}.",
                    [{"field": f"item[{i}].quantity", "message": f"at most {left}"}],
                )

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store a return from a (valid) create body; the stored return (not a copy).
        ``SandboxRefused`` (409) when the body asks for a ``returnID`` that exists and the
        sandbox honours client ids."""
        now = _now()
        wanted = body.get("returnID")
        if self._knobs.honour_return_id and isinstance(wanted, int) and wanted >= 1:
            if wanted in self.returns:
                raise SandboxRefused(
                    409,
                    "DUPLICATE_RETURN_ID",
                    f"A return with returnID {wanted} exists already.",
                    [{"field": "returnID", "message": "is taken"}],
                )
            return_id = wanted
        else:
            while self._next_return_id in self.returns:
                self._next_return_id += 1
            return_id = self._next_return_id
            self._next_return_id += 1
        stored: dict[str, Any] = {
            **copy.deepcopy(body),
            "returnID": return_id,
            "status": "OPEN",
            "createdTime": body.get("createdTime") or now,
            "refundType": body.get("refundType", "STANDARD"),
        }
        items = []
        for item in stored.get("item") or []:  # a list of objects unless validation is off
            if not isinstance(item, dict):
                continue
            items.append(
                {
                    **item,
                    "returnItemID": self._next_item_id,
                    "status": item.get("status", "PENDING"),
                }
            )
            self._next_item_id += 1
        stored["item"] = items
        self.returns[return_id] = stored
        return stored

    # actions -------------------------------------------------------------------------------

    async def accept(self, return_id: int) -> SentNotification:
        """Accept every pending item (return stays open); sends ``return_accepted``."""
        ret = self._open(return_id, "accept")
        for item in ret["item"]:
            if item["status"] == "PENDING":
                item["status"] = "ACCEPTED"
        ret["confirmTime"] = _now()
        return await self.notify_event("accepted", ret)

    async def clear(self, return_id: int) -> SentNotification:
        """Refund and close the return, every item not rejected accepted in full; sends
        ``return_cleared``."""
        ret = self._open(return_id, "clear")
        accepted = {
            item["orderItemID"]: (0 if item["status"] == "REJECTED" else item["quantity"])
            for item in ret["item"]
        }
        return await self._process(ret, accepted)

    async def reject(self, return_id: int) -> SentNotification:
        """Reject every item and close the return; sends ``return_rejected``."""
        ret = self._open(return_id, "reject")
        return await self._process(ret, {item["orderItemID"]: 0 for item in ret["item"]})

    async def reopen(self, return_id: int) -> SentNotification:
        """Open a closed return again (clears ``clearedTime``); sends ``return_reopened``."""
        ret = self._known(return_id)
        if ret["status"] != "CLOSED":
            raise SandboxRefused(409, "INVALID_STATE", f"return {return_id} is not CLOSED")
        ret["status"] = "OPEN"
        ret.pop("clearedTime", None)
        for item in ret["item"]:
            item["status"] = "PENDING"
            item.pop("quantityAccepted", None)
        return await self.notify_event("reopened", ret)

    async def fail_refund(self, return_id: int) -> SentNotification:
        """A refund failed while processing: the return stays as it is; sends the failure
        notification."""
        ret = self._known(return_id)
        return await self.notify_event(
            "refund_failed", ret, errorMessage="The refund transaction failed."
        )

    def _known(self, return_id: int) -> dict[str, Any]:
        ret = self.returns.get(return_id)
        if ret is None:
            raise SandboxRefused(404, "NOT_FOUND", f"return {return_id} does not exist")
        return ret

    def _open(self, return_id: int, action: str) -> dict[str, Any]:
        ret = self._known(return_id)
        if ret["status"] not in ("OPEN", "PROCESSING"):
            raise SandboxRefused(
                409, "INVALID_STATE", f"return {return_id} is {ret['status']}; cannot {action} it"
            )
        return ret

    async def _process(self, ret: dict[str, Any], accepted: dict[int, int]) -> SentNotification:
        now = _now()
        for item in ret["item"]:
            qty = accepted.get(item["orderItemID"], 0)
            item["quantityAccepted"] = qty
            item["status"] = "ACCEPTED" if qty > 0 else "REJECTED"
        ret["status"] = "CLOSED"
        ret["confirmTime"] = now
        if any(item["status"] == "ACCEPTED" for item in ret["item"]):
            ret["clearedTime"] = now
            return await self.notify_event("cleared", ret)
        return await self.notify_event("rejected", ret)

    # notifications -------------------------------------------------------------------------

    def notification_body(self, kind: str, ret: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """The Return Event Notification of ``kind`` for ``ret`` (Kibo's common fields)."""
        body: dict[str, Any] = {
            "eventTypeID": self._knobs.event_names.get(kind)
            or DEFAULT_WIRE_EVENT_NAMES.get(kind, f"return_{kind}"),
            "status": ret["status"],
            "source": "sandbox",
            "orderID": ret.get("orderID"),
            "shipmentID": ret.get("shipmentID"),
            "externalOrderID": ret.get("externalOrderID"),
            "returnID": ret["returnID"],
            "manufacturerID": self._knobs.manufacturer_id,
            "eventTime": _now(),
        }
        for name in ("returnTotal", "confirmTime", "clearedTime"):
            if ret.get(name) is not None:
                body[name] = ret[name]
        body.update(extra)
        return body

    async def notify_event(self, kind: str, ret: dict[str, Any], **extra: Any) -> SentNotification:
        """Build, record and (unless dropped or not wanted) send one notification."""
        knobs = self._knobs
        body = self.notification_body(kind, ret, **extra)
        note = SentNotification(
            seq=len(self.notifications) + 1,
            kind=kind,
            event_type=body["eventTypeID"],
            return_id=ret["returnID"],
            body=body,
            url=knobs.notification_url,
        )
        self.notifications.append(note)
        if knobs.notification_url is None or kind not in knobs.notify:
            note.outcome = "not_sent"
            return note
        if knobs.drop_notifications:
            note.outcome = "dropped"
            return note
        if self.session is None:
            note.outcome = "failed"
            note.error = "the sandbox is not running (no HTTP session)"
            return note
        try:
            async with self.session.post(
                knobs.notification_url,
                data=_dumps(body),
                headers={"Content-Type": "application/json", **knobs.notification_headers},
                timeout=aiohttp.ClientTimeout(total=knobs.notification_timeout),
            ) as response:
                await response.read()
                note.status = response.status
                note.outcome = "sent" if 200 <= response.status < 300 else "refused"
        except (aiohttp.ClientError, TimeoutError) as exc:
            note.outcome = "failed"
            note.error = type(exc).__name__
        return note

    def _notify_later(self, kind: str, ret: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self.notify_event(kind, ret))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """End stalls and wait for notifications in flight (the app's cleanup calls this)."""
        self._closing.set()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # request handling ----------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Every Kibo path: log, apply faults, authenticate, dispatch."""
        raw = await request.read()
        body = _parse_body(raw)
        record = RecordedRequest(
            seq=len(self.requests) + 1,
            method=request.method,
            path=request.path,
            headers=_redacted_headers(request.headers),
            body="<not JSON>" if body is _UNPARSABLE else body,
        )
        self.requests.append(record)
        try:
            response = await self._answer(request, record, body)
        except SandboxRefused as refused:
            response = _error(refused.status, refused.code, refused.message, refused.errors)
        except _Drop:
            record.status = None
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError from None
        record.status = response.status
        return response

    async def _answer(
        self, request: web.Request, record: RecordedRequest, body: Any
    ) -> web.StreamResponse:
        knobs = self._knobs
        if knobs.latency > 0:
            await asyncio.sleep(knobs.latency)
        if knobs.error_rate > 0 and self.rng.random() < knobs.error_rate:
            record.outcome = "error"
            return _error(500, "INTERNAL_ERROR", "An unexpected error occurred.")
        scheme = self._auth_problem(request.headers.get("Authorization", ""))
        if scheme is not None:
            record.outcome = "unauthorized"
            return _error(
                401,
                "UNAUTHORIZED",
                "Authentication is required.",
                headers={"WWW-Authenticate": f'{scheme} realm="Kibo"'},
            )
        path = request.path if request.path.endswith("/") else request.path + "/"
        try:
            if request.method == "POST" and path == RETURN_PATH:
                return await self._create(record, body)
            if request.method == "POST" and path == PROCESS_PATH:
                return await self._process_action(record, body)
            if request.method == "GET" and path.startswith(RETURN_PATH):
                return self._get(record, path.removeprefix(RETURN_PATH).rstrip("/"))
        except SandboxRefused as refused:
            record.outcome = {404: "not_found", 409: "conflict"}.get(refused.status, "invalid")
            record.errors = refused.errors or []
            raise
        record.outcome = "not_found"
        return _error(404, "NOT_FOUND", f"No resource at {request.method} {request.path}.")

    def _auth_problem(self, authorization: str) -> str | None:
        """``None`` when authorised, else the scheme to announce in ``WWW-Authenticate``."""
        knobs = self._knobs
        scheme, _, credentials = authorization.partition(" ")
        credentials = credentials.strip()
        if knobs.auth == "bearer":
            ok = scheme.lower() == "bearer" and secrets.compare_digest(
                credentials.encode(), knobs.token.encode()
            )
            return None if ok else "Bearer"
        expected = aiohttp.encode_basic_auth(knobs.username, knobs.password)
        ok = scheme.lower() == "basic" and secrets.compare_digest(
            f"Basic {credentials}".encode(), expected.encode()
        )
        return None if ok else "Basic"

    def _checked(self, kind: str, body: Any) -> dict[str, Any]:
        if body is _UNPARSABLE or body is None:
            raise SandboxRefused(400, "VALIDATION_ERROR", "The request body is not JSON.")
        if self._knobs.validation:
            problems = validate(kind, body)
            if problems:
                raise SandboxRefused(400, "VALIDATION_ERROR", "The request is invalid.", problems)
        if not isinstance(body, dict):
            raise SandboxRefused(400, "VALIDATION_ERROR", "The request body is not a JSON object.")
        return body

    async def _create(self, record: RecordedRequest, body: Any) -> web.StreamResponse:
        checked = self._checked("return", body)
        self._check_order(checked)
        knobs = self._knobs
        if knobs.reject_next > 0:
            knobs.reject_next -= 1
            record.outcome = "rejected"
            return _error(knobs.reject_status, "RETURN_NOT_ALLOWED", knobs.reject_message)
        ret = self.create(checked)
        record.return_id = ret["returnID"]
        record.outcome = "created"
        answer = copy.deepcopy(ret)
        self._notify_later("created", ret)
        if knobs.timeout_after_commit_next > 0:
            knobs.timeout_after_commit_next -= 1
            if knobs.commit_fault == "drop":
                record.outcome = "created_then_dropped"
                raise _Drop
            record.outcome = "created_then_stalled"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), knobs.stall_seconds)
            if self._closing.is_set():
                raise _Drop
        return _json(answer)

    def _get(self, record: RecordedRequest, ident: str) -> web.StreamResponse:
        ret = self.returns.get(int(ident)) if ident.isdigit() and ident.isascii() else None
        if ret is None:
            raise SandboxRefused(404, "NOT_FOUND", f"Return {ident} was not found.")
        record.outcome = "found"
        record.return_id = ret["returnID"]
        return _json(copy.deepcopy(ret))

    async def _process_action(self, record: RecordedRequest, body: Any) -> web.StreamResponse:
        checked = self._checked("process", body)
        return_id = checked["returnID"]
        record.return_id = return_id
        ret = self._open(return_id, "process")
        quantities = {item["orderItemID"]: item["quantity"] for item in ret["item"]}
        accepted: dict[int, int] = {}
        problems = []
        for i, entry in enumerate(checked["acceptedItemQuantity"]):
            where = f"acceptedItemQuantity[{i}]"
            item_id, qty = entry["orderItemID"], entry["quantityAccepted"]
            if item_id not in quantities:
                problems.append(
                    {"field": f"{where}.orderItemID", "message": "is not an item of the return"}
                )
            elif qty > quantities[item_id]:
                problems.append(
                    {
                        "field": f"{where}.quantityAccepted",
                        "message": f"must be at most the returned quantity {quantities[item_id]}",
                    }
                )
            else:
                accepted[item_id] = qty
        if problems:
            raise SandboxRefused(400, "VALIDATION_ERROR", "The request is invalid.", problems)
        override = checked.get("returnReductionOverride")
        if override is not None:
            ret["returnReductionTotal"] = override
        await self._process(ret, accepted)
        record.outcome = "processed"
        return _json(copy.deepcopy(ret))

    # inspection and control ----------------------------------------------------------------

    async def control_view(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                changes = await request.json()
            except ValueError:
                return _plain_error(400, "body is not JSON")
            if not isinstance(changes, dict):
                return _plain_error(400, "expected a JSON object")
            try:
                self.configure(**changes)
            except ValueError as exc:
                return _plain_error(400, str(exc))
        return _json(self.state())

    async def state_view(self, request: web.Request) -> web.Response:
        return _json(self.state())

    async def returns_view(self, request: web.Request) -> web.Response:
        return _json(self.find_returns(request.query.get("externalOrderID")))

    async def return_view(self, request: web.Request) -> web.Response:
        ident = request.match_info["return_id"]
        ret = self.returns.get(int(ident)) if ident.isdigit() else None
        if ret is None:
            return _plain_error(404, f"no return {ident}")
        return _json(ret)

    async def action_view(self, request: web.Request) -> web.Response:
        ident, action = request.match_info["return_id"], request.match_info["action"]
        if action not in ACTIONS or not ident.isdigit():
            return _plain_error(404, f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
        try:
            note = await getattr(self, action)(int(ident))
        except SandboxRefused as refused:
            return _error(refused.status, refused.code, refused.message)
        return _json({"return": self.returns[int(ident)], "notification": note.as_json()})

    async def requests_view(self, request: web.Request) -> web.Response:
        return _json([r.as_json() for r in self.requests])

    async def notifications_view(self, request: web.Request) -> web.Response:
        return _json([n.as_json() for n in self.notifications])

    async def reset_view(self, request: web.Request) -> web.Response:
        self.reset()
        return _json(self.state())


_UNPARSABLE: Any = object()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _parse_body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw, parse_float=Decimal)
    except ValueError:
        return _UNPARSABLE


def _redacted_headers(headers: Any) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        if name.lower() == "authorization":
            value = f"{value.partition(' ')[0]} ***"
        out[name] = value
    return out


def _exact(value: Any) -> Any:
    """``value`` with floats (knobs, timings) as Decimal, so :func:`dumps` writes them."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_exact(v) for v in value]
    return value


def _dumps(data: Any) -> str:
    """JSON with amounts exact (``330.00`` stays ``330.00``)."""
    return dumps(_exact(data))


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def _error(
    status: int,
    code: str,
    message: str,
    errors: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The (invented) Kibo error body."""
    body: dict[str, Any] = {"errorCode": code, "message": message, "httpStatus": status}
    if errors:
        body["errors"] = errors
    return _json(body, status=status, headers=headers)


def _plain_error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status=status)


_SESSION_KEY = web.AppKey("kibo_sandbox_session", aiohttp.ClientSession)


def make_app(sandbox: KiboSandbox) -> web.Application:
    """The aiohttp application of ``sandbox``; it owns the session notifications go out on."""

    async def notifications_session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[_SESSION_KEY] = session
            sandbox.session = session
            try:
                yield
            finally:
                await sandbox.close()
                sandbox.session = None

    app = web.Application()
    app.cleanup_ctx.append(notifications_session)
    app.router.add_get(f"{CONTROL_PREFIX}/state", sandbox.state_view)
    app.router.add_get(f"{CONTROL_PREFIX}/returns", sandbox.returns_view)
    app.router.add_get(f"{CONTROL_PREFIX}/returns/{{return_id}}", sandbox.return_view)
    app.router.add_post(f"{CONTROL_PREFIX}/returns/{{return_id}}/{{action}}", sandbox.action_view)
    app.router.add_get(f"{CONTROL_PREFIX}/requests", sandbox.requests_view)
    app.router.add_get(f"{CONTROL_PREFIX}/notifications", sandbox.notifications_view)
    app.router.add_route("*", f"{CONTROL_PREFIX}/control", sandbox.control_view)
    app.router.add_post(f"{CONTROL_PREFIX}/reset", sandbox.reset_view)
    app.router.add_route("*", "/{tail:.*}", sandbox.handle)
    return app


@contextlib.asynccontextmanager
async def running_sandbox(
    host: str = "127.0.0.1", port: int = 0, **knobs: Any
) -> AsyncIterator[KiboSandbox]:
    """Serve a new :class:`KiboSandbox` on ``host:port`` (0 = a free port) until the block
    ends; the sandbox's ``url`` is set (``http://host:port``)."""
    sandbox = KiboSandbox(**knobs)
    try:
        async with serving(make_app(sandbox), host, port) as url:
            sandbox.url = url
            yield sandbox
    finally:
        await sandbox.close()


async def serve(
    host: str = "127.0.0.1",
    port: int = 8091,
    *,
    stop: asyncio.Event | None = None,
    **knobs: Any,
) -> None:
    """Serve until ``stop`` is set or SIGINT/SIGTERM; prints the URL."""
    await serve_until_stopped(
        running_sandbox,
        lambda sandbox: [f"kibo sandbox listening on {sandbox.url}", f"  auth: {sandbox.auth}"],
        host,
        port,
        stop=stop,
        **knobs,
    )


def serve_forever(host: str = "127.0.0.1", port: int = 8091, **knobs: Any) -> int:
    """Blocking: serve a sandbox until SIGINT/SIGTERM; returns the exit status (0)."""
    asyncio.run(serve(host, port, **knobs))
    return 0
