"""ReturnLogic RMAs into the RMA flow (and so into the returns sink, e.g. Kibo).

ReturnLogic's webhooks are unordered and not guaranteed, so they are only *hints*; the RMA
itself is always read from the API and applied only when it is newer than the stored one.

Webhooks, ``POST /retailers/<id>/returnlogic/webhooks`` (``rma.requested``, ``rma.updated``,
``rma.deleted``). ReturnLogic's docs define no signature and a registration holds nothing but
its ``endpoint``, so the endpoint is registered with a shared secret in its query string
(``...?key=<webhook_secret>``), compared in constant time; a wrong or missing key is a 401 and
nothing is stored. The body is committed to the inbox before the answer (durable ack). A body
that is not a webhook is quarantined and answered 200 (non-2xx answers count towards the
failures after which ReturnLogic deactivates the registration).

Fetching outside the transaction. Inbox handlers run inside a store transaction, and the
entities it reads are locked against other writers until it commits (the Store port's
per-entity lock): a partner call must never happen while they are held. The handler only
records a work item, an outbox effect ``returnlogic.rma.fetch`` (idempotency key ``<retailer>:<rma>:
<eventId>``, so a duplicated delivery collapses; ordering key per RMA, so reads of one RMA go
one at a time). Its destination (:class:`RmaFetchDestination`) reads ``GET /v1/rmas/{id}`` at
LIVE priority in ``fetch`` (a read: no transaction open, never of unknown outcome; 429/5xx are
retried by the outbox) and validates the mapping there (a record that cannot be mapped is a
dead letter, replayable after a fix); then ``apply``, which the engine runs in the transaction
that records the effect, hands the canonical Rma to the retailer's RMA flow
(:mod:`bridge.flows.rmas`: closed check, versioning, policy step; key
``<retailer>:returnlogic:<id>``), whose effects commit together with the read. A read that
started after an event was received already covers it: later events of the same RMA queued
meanwhile are settled without another request.

Deletion. ``rma.deleted`` is read too: a 404 means the RMA is gone, and the stored RMA (if
any) is canceled by the RMA flow (``raw_status`` ``Deleted``), which cancels a return not yet
created or flags one that exists. A 404 for ``rma.requested``/``updated``
changes nothing (the deletion event, or the reconciliation's check of open RMAs, settles it).

Reconciliation (every ``reconcile_every`` s, at RECONCILE priority, and at start): (1) every
open RMA (``workflowStatus`` Requested..Received), (2) RMAs created since the previous poll
(``minCreateDate`` = its start - ``reconcile_overlap``) that are already closed, (3) RMAs the
bridge holds as open but (1) no longer lists, one by one (closed meanwhile, or 404: deleted).
Each is applied like a fetched one. The cursor moves only after a complete poll.

Subscription supervisor (at start and every ``supervise_every`` s, when ``webhook_url`` and
``webhook_secret`` are set): lists the registrations; ours are those whose endpoint is
``webhook_url`` whatever its key. Per action: none -> created (a create whose answer was lost is
looked up, never sent blindly twice); deactivated, or registered with another key -> updated to
our endpoint, ``active: true``; never a duplicate. When it created or re-activated one,
ReturnLogic dropped what happened meanwhile, so a reconciliation runs at once, reaching back to
the last time the supervisor saw every registration active.

Write-back (``rmas.writeback``, on by default): when the returns sink reports the return of
a ReturnLogic RMA ``accepted`` (goods received) or ``cleared`` (received and refunded), the
RMA's items are marked received with the disposition configured for that outcome, through
ReturnLogic's "Update one or more RMA item(s)" (``PUT /v1/rmas/{id}``, ``rmaItems[]``:
``rlRmaItemId``, ``itemReceived: true``, ``disposition``), so the retailer's team sees the
RMA received (and ReturnLogic "may automatically process" it, as its settings say). Once
per RMA, the first of the two outcomes: the return-event flow offers the event
(:class:`RmaItemsWriteback`), which records the RMA as written back and queues one effect
``returnlogic.rma.items`` (key per RMA) in the transaction that records the event, so
duplicate events, replays and restarts add nothing. Its destination
(:class:`RmaItemsDestination`) sends under the team's governor at LIVE priority; the request
sets absolute values, so sending it again after an attempt of unknown outcome is harmless
(ReturnLogic has no idempotency header). A 4xx (an item ReturnLogic does not know, an RMA
canceled there meanwhile: 409) is a dead letter naming the answer, flagged in ReturnLogic
like a return's with ``flag_dead_letters``, replayable with ``dlq replay``.

Flag RMA: with ``flag_dead_letters``, dead letters caused by a ReturnLogic RMA (the returns
sink's, whose payload names the RMA key, and this adapter's own reads) get the RMA flagged in
ReturnLogic (``flag_method`` ``flag_path``, ``{id}`` = rlRmaId), once per RMA.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from aiohttp import web

from adapters.returnlogic.client import RlTeam, paginate
from adapters.returnlogic.config import ReturnLogicConfig
from bridge.config import RetailerConfig
from bridge.domain import Rma
from bridge.engine import (
    Absent,
    Fetched,
    Found,
    HandlerContext,
    HttpDestination,
    Outcome,
    ReadDestination,
    Skipped,
)
from bridge.errors import (
    BridgeError,
    DeliveryError,
    MappingError,
    NotReady,
    PermanentDeliveryError,
    RetriableDeliveryError,
)
from bridge.flows import ReturnEvent, ReturnEventKind, ReturnsFlows, is_closed
from bridge.http import OutboundRequest, Priority
from bridge.inbound import json_error, parse_json_object, receive, secret_matches
from bridge.openapi import ApiKey
from bridge.ports import RMA_LIFECYCLE, AdapterContext, SharedKey
from bridge.store import Effect, EffectState, InboxItem, InboxStatus, NewEffect, Transaction
from bridge.store.base import each_entity_key
from mappings.returnlogic import (
    RESOURCE_ACTIONS,
    WebhookIn,
    parse_webhook_body,
    rma_to_canonical,
    rmas_page,
)

log = logging.getLogger(__name__)

SOURCE = "returnlogic"
WEBHOOK_KIND = "returnlogic.webhooks"
FETCH_KIND = "returnlogic.rma.fetch"
SECRET_PARAM = "key"  # noqa: S105 (a parameter name, not a secret)
"""Query parameter of the registered endpoint that carries ``webhook_secret``."""
OPEN_STATUSES = ("Requested", "Authorized", "Active", "InTransit", "Delivered", "Received")
CLOSED_STATUSES = ("Processed", "Complete", "Canceled", "Abandoned", "Rejected")
FETCHED = "returnlogic.rma_fetched"
"""Entity per RMA key: ``{"started_at"}`` of the latest read applied (store clock)."""
OPEN_RMA = "returnlogic.open_rma"
"""Entity per ``<retailer>:<rma id>``: a ReturnLogic RMA the bridge holds as open (deleted
when it closes: one row per RMA, never a per-retailer hot set)."""
OPEN_RMAS = "returnlogic.open_rmas"
"""Before 0005: one entity per retailer with every open RMA id (folded into
:data:`OPEN_RMA` rows by the reconciler)."""
ITEMS_KIND = "returnlogic.rma.items"
"""Effect: an RMA's items marked received with a disposition (the write-back)."""
WRITTEN_BACK = "returnlogic.rma_written_back"
"""Entity per RMA key: its write-back was queued (for which outcome, which return)."""
FLAGGED = "returnlogic.rma_flagged"
"""Entity per RMA key: flagged in ReturnLogic (when, for which dead letters)."""
PAGE_SIZE = 250
DEAD_LETTER_SCAN = 10_000


# --- webhook bodies and endpoints ------------------------------------------------------------


@dataclass(frozen=True)
class WebhookEvent:
    """What a webhook says: which RMA to read, and why."""

    event_id: str
    action: str
    rma_id: str
    created: str | None = None


def parse_webhook(body: bytes) -> WebhookEvent:
    """The webhook ``{eventId, resourceAction, rlRmaId, createDate, ...}``; ``MappingError``
    naming the field otherwise (validated by :class:`mappings.returnlogic.WebhookIn`, the
    model ``/openapi.json`` shows). ``data`` is ignored: the RMA is read from the API."""
    wire = parse_webhook_body(parse_json_object(body))
    return WebhookEvent(wire.eventId, wire.resourceAction, wire.rlRmaId, wire.createDate)


def endpoint_base(endpoint: str) -> str:
    """``endpoint`` without our secret parameter (how our registrations are recognised)."""
    parts = urlsplit(endpoint.strip())
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != SECRET_PARAM]
    return urlunsplit(
        (parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", urlencode(query), "")
    )


def endpoint_with_secret(url: str, secret: str) -> str:
    """The endpoint to register: ``url`` plus ``key=<secret>``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != SECRET_PARAM]
    query.append((SECRET_PARAM, secret))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _load_record(body: bytes) -> dict[str, Any]:
    try:
        record = json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MappingError(f"GET /v1/rmas/{{id}}: body is not JSON ({type(exc).__name__})") from exc
    if not isinstance(record, dict):
        raise MappingError("GET /v1/rmas/{id}: expected a JSON object")
    return record


# --- reports ---------------------------------------------------------------------------------


@dataclass
class ReconcileReport:
    listed: int = 0
    applied: int = 0
    unmapped: int = 0
    checked: int = 0
    gone: int = 0
    effects: int = 0


@dataclass
class SuperviseReport:
    created: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    reconciled: ReconcileReport | None = None

    @property
    def restored(self) -> bool:
        """Something may have been missed: a registration was missing or inactive."""
        return bool(self.created or self.reactivated or self.updated)


# --- the RMA source --------------------------------------------------------------------------


class RlRmas:
    """One retailer's ReturnLogic RMA source: webhook receiver and handler, RMA reads,
    reconciliation, subscription supervisor and dead-letter flags."""

    def __init__(
        self, runtime: AdapterContext, retailer: str, config: ReturnLogicConfig, team: RlTeam
    ):
        self.runtime = runtime
        self.retailer = retailer
        self.config = config
        self.rmas = config.rmas
        self.team = team
        self.destination = RmaFetchDestination(f"returnlogic.rmas:{retailer}", self)
        self.writeback = RmaItemsWriteback(self)
        self.reconciles = 0
        self.last_reconcile: ReconcileReport | None = None
        self.last_supervision: SuperviseReport | None = None
        self._reconcile_lock = asyncio.Lock()
        self._supervise_lock = asyncio.Lock()
        self._flag_lock = asyncio.Lock()

    # wiring ------------------------------------------------------------------------------

    def wire(self) -> None:
        runtime, rid = self.runtime, self.retailer
        if self.rmas.writeback.enabled:
            runtime.engine.add_destination(self.writeback.destination)
            self.flows.return_events.add_writeback(self.writeback)
        runtime.add_route(
            rid,
            SOURCE,
            "POST",
            "webhooks",
            self.receive,
            inbox=True,
            summary="RMA webhooks (hints: the RMA is then read from the API)",
            body=WebhookIn,
            security=(ApiKey(SECRET_PARAM, "query"),),
        )
        runtime.engine.add_handler(WEBHOOK_KIND, self.handle, retailer=rid)
        runtime.engine.add_destination(self.destination)
        jobs = runtime.jobs
        jobs.once(f"returnlogic-rmas-start:{rid}", self.on_start)
        jobs.every(
            f"returnlogic-rmas-reconcile:{rid}",
            self._job(self.reconcile),
            self.rmas.reconcile_every,
        )
        if self.supervising:
            jobs.every(
                f"returnlogic-rmas-supervise:{rid}",
                self._job(self.supervise),
                self.rmas.supervise_every,
            )
        if self.rmas.flag_dead_letters:
            jobs.every(
                f"returnlogic-rmas-flag:{rid}",
                self._job(self.flag_dead_letters),
                self.rmas.flag_every,
            )

    @property
    def supervising(self) -> bool:
        return self.rmas.webhook_url is not None and self.rmas.webhook_secret is not None

    def _job(self, run: Callable[[], Awaitable[object]]) -> Callable[[], Awaitable[None]]:
        async def job() -> None:
            try:
                await run()
            except (BridgeError, TimeoutError) as exc:
                log.warning(
                    "returnlogic rma job failed",
                    extra={"retailer": self.retailer, "job": run.__name__, "reason": str(exc)},
                )

        job.__name__ = run.__name__
        return job

    async def on_start(self) -> None:
        """At start: the registrations (the daemon was away: maybe deactivated), then a
        reconciliation whatever they looked like (messages sent while it was down are lost)."""
        if self.supervising:
            await self._job(self.supervise)()
        await self._job(self.reconcile)()

    @property
    def flows(self) -> ReturnsFlows:
        """The retailer's returns flows (RMAs are applied there)."""
        return self.runtime.service(self.retailer, RMA_LIFECYCLE)

    def rma_key(self, rma_id: str) -> str:
        """Entity key of a ReturnLogic RMA: prefixed with the source, so that its id never
        collides with an Optoro RMA's of the same retailer."""
        return f"{self.retailer}:{SOURCE}:{rma_id}"

    # the webhook -------------------------------------------------------------------------

    def authenticated(self, request: web.Request) -> bool:
        secret = self.rmas.webhook_secret
        return secret is not None and secret_matches(
            request.query.get(SECRET_PARAM), secret.get_secret_value()
        )

    async def receive(self, request: web.Request) -> web.Response:
        if not self.authenticated(request):
            return json_error(401, "missing or wrong webhook key", field=SECRET_PARAM)
        return await receive(
            request,
            self.runtime.engine,
            retailer=self.retailer,
            kind=WEBHOOK_KIND,
            validate=parse_webhook,
            invalid_status=200,
            entity_of=lambda event: f"rma:{self.rma_key(event.rma_id)}",
        )

    async def handle(self, item: InboxItem, tx: Transaction, ctx: HandlerContext) -> Outcome:
        """Record the read of the RMA the webhook names (nothing else happens here)."""
        event = parse_webhook(item.body)
        if await self.flows.rmas.is_closed(tx, self.rma_key(event.rma_id)):
            return Outcome(InboxStatus.SUPERSEDED, note="the RMA is closed")
        return Outcome(effects=[self.fetch_effect(event)], note=f"read RMA {event.rma_id}")

    def fetch_effect(self, event: WebhookEvent) -> NewEffect:
        return NewEffect(
            idempotency_key=f"{FETCH_KIND}:{self.retailer}:{event.rma_id}:{event.event_id}",
            destination=self.destination.name,
            kind=FETCH_KIND,
            payload={
                "rma_id": event.rma_id,
                "event_id": event.event_id,
                "action": event.action,
                "event_at": event.created,
            },
            order_key=f"{FETCH_KIND}:{self.retailer}:{event.rma_id}",
            retailer=self.retailer,
        )

    # applying an RMA ---------------------------------------------------------------------

    async def apply(self, tx: Transaction, rma: Rma) -> tuple[bool, list[NewEffect]]:
        """Hand ``rma`` to the retailer's RMA flow (:mod:`bridge.flows.rmas`: closed check,
        versioning, policy step); ``(applied, effects)``. Keeps the open-RMA set in step."""
        outcome = await self.flows.rmas.apply(tx, self.rma_key(rma.id), rma)
        if outcome.applied:
            await self._track_open(tx, rma)
        return outcome.applied, outcome.effects

    async def apply_deleted(
        self, tx: Transaction, rma_id: str, when: datetime | None
    ) -> tuple[bool, list[NewEffect]]:
        """ReturnLogic no longer has the RMA: the flow cancels the stored one (``raw_status``
        ``Deleted``); either way the RMA is no longer open."""
        outcome = await self.flows.rmas.cancel(
            tx, self.rma_key(rma_id), raw_status="Deleted", when=when
        )
        await self._track_open(tx, outcome.stored if outcome.applied else None, rma_id)
        return outcome.applied, outcome.effects

    async def _track_open(self, tx: Transaction, rma: Rma | None, rma_id: str = "") -> None:
        rma_id = rma.id if rma is not None else rma_id
        key = f"{self.retailer}:{rma_id}"
        if rma is None or is_closed(rma):
            await tx.delete_entity(OPEN_RMA, key)
        elif await tx.get_entity(OPEN_RMA, key) is None:
            await tx.put_entity(OPEN_RMA, key, (0,), {"rma_id": rma_id})

    async def apply_records(
        self, records: list[dict[str, Any]], report: ReconcileReport
    ) -> set[str]:
        """Apply listed RMA records in one transaction; the ids seen. A record that cannot
        be mapped is flagged for an operator and skipped."""
        seen: set[str] = set()
        store = self.runtime.store
        async with store.transaction() as tx:
            for record in records:
                raw_id = record.get("rlRmaId")
                if raw_id is not None:
                    seen.add(str(raw_id))
                try:
                    rma = rma_to_canonical(record, self.config.currency)
                except MappingError as exc:
                    report.unmapped += 1
                    await self._flag_unmapped(tx, str(raw_id), exc)
                    continue
                applied, effects = await self.apply(tx, rma)
                report.applied += applied
                for effect in effects:
                    report.effects += await tx.add_effect(effect)
        if report.effects:
            self.runtime.engine.wake_dispatcher()
        return seen

    async def _flag_unmapped(self, tx: Transaction, rma_id: str, exc: MappingError) -> None:
        reason = f"{exc.field}: {exc}" if exc.field else str(exc)
        log.warning(
            "returnlogic rma cannot be mapped",
            extra={"retailer": self.retailer, "rma": rma_id, "reason": reason},
        )
        await tx.add_flag(
            self.retailer,
            "rma",
            self.rma_key(rma_id),
            f"ReturnLogic RMA cannot be mapped: {reason}",
        )

    # reconciliation ----------------------------------------------------------------------

    @property
    def _cursor(self) -> str:
        return f"returnlogic.rmas:{self.retailer}"

    @property
    def _supervised_cursor(self) -> str:
        return f"returnlogic.webhooks_active:{self.retailer}"

    async def reconcile(self, since: datetime | None = None) -> ReconcileReport:
        """One complete poll (see the module docstring); ``since`` reaches further back."""
        async with self._reconcile_lock:
            store = self.runtime.store
            started = datetime.now(UTC)
            cursor = _parse_time(await store.get_cursor(self._cursor))
            low = cursor or started - timedelta(seconds=self.rmas.reconcile_lookback)
            if since is not None:
                low = min(low, since)
            low -= timedelta(seconds=self.rmas.reconcile_overlap)
            report = ReconcileReport()
            seen_open: set[str] = set()
            async for records in self._pages({"workflowStatus": OPEN_STATUSES}):
                report.listed += len(records)
                seen_open |= await self.apply_records(records, report)
            params = {"workflowStatus": CLOSED_STATUSES, "minCreateDate": _iso(low)}
            async for records in self._pages(params):
                report.listed += len(records)
                await self.apply_records(records, report)
            async with store.transaction() as tx:
                legacy = await tx.get_entity(OPEN_RMAS, self.retailer)
                for legacy_id in legacy.data["ids"] if legacy else ():
                    key = f"{self.retailer}:{legacy_id}"
                    await tx.put_entity(OPEN_RMA, key, (0,), {"rma_id": legacy_id})
                await tx.delete_entity(OPEN_RMAS, self.retailer)
            prefix = f"{self.retailer}:"
            held_open = {
                key[len(prefix) :] async for key in each_entity_key(store, OPEN_RMA, prefix)
            }
            for rma_id in sorted(held_open - seen_open):
                await self._check_one(rma_id, report)
            await store.set_cursor(self._cursor, started.isoformat())
            self.reconciles += 1
            self.last_reconcile = report
            log.info(
                "returnlogic rmas reconciled",
                extra={"retailer": self.retailer, **report.__dict__},
            )
            return report

    async def _pages(self, params: Mapping[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        """RMA list pages parsed with Decimal (money stays exact); a repeated page is an
        error, not an endless loop."""

        async def fetch(skip: int) -> list[dict[str, Any]]:
            response = await self.team.request(
                "GET",
                "/v1/rmas",
                params={**params, "skip": skip, "limit": PAGE_SIZE},
                priority=Priority.RECONCILE,
            )
            return rmas_page(response.body)

        pages = paginate(fetch, page_size=PAGE_SIZE, what="GET /v1/rmas")
        async with contextlib.aclosing(pages):
            async for _, records in pages:
                yield records

    async def _check_one(self, rma_id: str, report: ReconcileReport) -> None:
        report.checked += 1
        try:
            response = await self.team.request(
                "GET", f"/v1/rmas/{quote(rma_id, safe='')}", priority=Priority.RECONCILE
            )
        except PermanentDeliveryError as exc:
            if exc.status != 404:
                raise
            report.gone += 1
            async with self.runtime.store.transaction() as tx:
                applied, effects = await self.apply_deleted(tx, rma_id, None)
                for effect in effects:
                    report.effects += await tx.add_effect(effect)
            report.applied += applied
            if effects:
                self.runtime.engine.wake_dispatcher()
            return
        await self.apply_records([_load_record(response.body)], report)

    # subscription supervisor -------------------------------------------------------------

    async def supervise(self) -> SuperviseReport:
        """Make sure each action has exactly one active registration of our endpoint; after
        restoring one, reconcile the gap."""
        report = SuperviseReport()
        if not self.supervising:
            return report
        assert self.rmas.webhook_url is not None
        assert self.rmas.webhook_secret is not None
        async with self._supervise_lock:
            base = endpoint_base(str(self.rmas.webhook_url))
            desired = endpoint_with_secret(
                str(self.rmas.webhook_url), self.rmas.webhook_secret.get_secret_value()
            )
            store = self.runtime.store
            last_active = _parse_time(await store.get_cursor(self._supervised_cursor))
            checked_at = datetime.now(UTC)
            ours = await self._our_registrations(base)
            for action in RESOURCE_ACTIONS:
                mine = [r for r in ours if r.get("resourceAction") == action]
                if not mine:
                    await self._create_registration(action, desired, base)
                    report.created.append(action)
                    continue
                if len(mine) > 1:
                    report.duplicates.append(action)
                    log.warning(
                        "returnlogic webhook registered more than once",
                        extra={"retailer": self.retailer, "action": action, "count": len(mine)},
                    )
                current = [r for r in mine if self._has_our_key(r)]
                keep = next((r for r in current if r.get("active") is True), None)
                if keep is not None:
                    continue
                keep = (current or mine)[0]
                await self.team.request(
                    "PUT",
                    f"/v1/webhooks/{quote(str(keep.get('registrationId')), safe='')}",
                    json={"resourceAction": action, "endpoint": desired, "active": True},
                    priority=Priority.RECONCILE,
                )
                (report.reactivated if keep.get("active") is not True else report.updated).append(
                    action
                )
            if report.restored:
                log.warning(
                    "returnlogic webhooks restored; reconciling the gap",
                    extra={
                        "retailer": self.retailer,
                        "registered": report.created,
                        "reactivated": report.reactivated,
                        "updated": report.updated,
                    },
                )
                report.reconciled = await self.reconcile(since=last_active)
                checked_at = datetime.now(UTC)
            await store.set_cursor(self._supervised_cursor, checked_at.isoformat())
            self.last_supervision = report
            return report

    def _has_our_key(self, registration: Mapping[str, Any]) -> bool:
        """The registration carries the current secret (compared as a value: ReturnLogic
        may write the url back in another form)."""
        secret = self.rmas.webhook_secret
        keys = [
            v
            for k, v in parse_qsl(urlsplit(str(registration.get("endpoint"))).query)
            if k == SECRET_PARAM
        ]
        return (
            secret is not None
            and len(keys) == 1
            and hmac.compare_digest(keys[0].encode(), secret.get_secret_value().encode())
        )

    async def _our_registrations(self, base: str) -> list[dict[str, Any]]:
        response = await self.team.request("GET", "/v1/webhooks", priority=Priority.RECONCILE)
        listed = response.json()
        if not isinstance(listed, list):
            raise PermanentDeliveryError("returnlogic: GET /v1/webhooks did not answer a list")
        return [
            r
            for r in listed
            if isinstance(r, dict)
            and isinstance(r.get("endpoint"), str)
            and endpoint_base(r["endpoint"]) == base
        ]

    async def _create_registration(self, action: str, endpoint: str, base: str) -> None:
        """Create once: a create that may have reached ReturnLogic is looked up, not resent."""
        body = {"resourceAction": action, "endpoint": endpoint, "active": True}
        for attempt in range(5):
            try:
                await self.team.request(
                    "POST", "/v1/webhooks", json=body, priority=Priority.RECONCILE, attempts=1
                )
                return
            except NotReady:
                raise  # not installed: nothing to register until it is
            except RetriableDeliveryError as exc:
                maybe_created = exc.outcome_unknown or (exc.status or 0) >= 500
                if maybe_created and any(
                    r.get("resourceAction") == action for r in await self._our_registrations(base)
                ):
                    return
                await asyncio.sleep(min(30.0, exc.retry_after or 0.5 * 2**attempt))
        raise RetriableDeliveryError(
            f"returnlogic: could not register the {action} webhook; retried next run"
        )

    # flags for dead letters --------------------------------------------------------------

    def _dead_rma_id(self, effect: Effect) -> str | None:
        payload = effect.payload if isinstance(effect.payload, dict) else {}
        if effect.destination == self.destination.name:
            rma_id = payload.get("rma_id")
            return str(rma_id) if rma_id is not None else None
        rma_key = payload.get("rma_key")
        prefix = self.rma_key("")
        if isinstance(rma_key, str) and rma_key.startswith(prefix) and len(rma_key) > len(prefix):
            return rma_key[len(prefix) :]
        return None

    async def flag_dead_letters(self) -> int:
        """Flag in ReturnLogic each RMA with a dead letter, once; how many were flagged."""
        path = self.rmas.flag_path
        if not self.rmas.flag_dead_letters or path is None:
            return 0
        async with self._flag_lock:
            store = self.runtime.store
            dead: dict[str, list[int]] = {}
            for effect in await store.list_effects(EffectState.DEAD, limit=DEAD_LETTER_SCAN):
                rma_id = self._dead_rma_id(effect)
                if rma_id is not None:
                    dead.setdefault(rma_id, []).append(effect.id)
            flagged = 0
            for rma_id, effect_ids in dead.items():
                key = self.rma_key(rma_id)
                async with store.transaction() as tx:
                    if await tx.get_entity(FLAGGED, key) is not None:
                        continue
                try:
                    await self.team.request(
                        self.rmas.flag_method,
                        path.replace("{id}", quote(rma_id, safe="")),
                        priority=Priority.RECONCILE,
                        attempts=3,
                    )
                except DeliveryError as exc:
                    log.error(
                        "returnlogic rma not flagged",
                        extra={"retailer": self.retailer, "rma": rma_id, "reason": str(exc)},
                    )
                    if isinstance(exc, RetriableDeliveryError):
                        break  # ReturnLogic is struggling: the next run goes on
                    continue
                flagged_at = await store.now()
                async with store.transaction() as tx:
                    await tx.put_entity(
                        FLAGGED, key, (0,), {"flagged_at": flagged_at, "effects": effect_ids}
                    )
                flagged += 1
                log.info(
                    "returnlogic rma flagged for its dead letter",
                    extra={"retailer": self.retailer, "rma": rma_id, "effects": effect_ids},
                )
            return flagged


class RmaFetchDestination(ReadDestination):
    """A read: ``GET /v1/rmas/{id}`` (outside any transaction), then the RMA applied in the
    transaction that records the effect. A read that started after this event was received
    already covers it: skipped without a request."""

    def __init__(self, name: str, source: RlRmas) -> None:
        self.name = name
        self.source = source

    def _path(self, effect: Effect) -> str:
        return f"/v1/rmas/{quote(str(effect.payload['rma_id']), safe='')}"

    async def build_request(self, effect: Effect) -> OutboundRequest:
        return OutboundRequest(
            "GET", f"{self.source.team.base}{self._path(effect)}", {"Accept": "application/json"}
        )

    async def fetch(self, effect: Effect) -> Fetched:
        """The RMA (validated: one that cannot be mapped is a dead letter, replayable after
        a fix), absent (404), or skipped when a later read covers this event."""
        source = self.source
        store = source.runtime.store
        async with store.transaction() as tx:
            marker = await tx.get_entity(FETCHED, source.rma_key(effect.payload["rma_id"]))
        if marker is not None and float(marker.data["started_at"]) >= effect.created_at:
            return Skipped("a read that started after this event applied the RMA")
        started = await store.now()
        try:
            response = await source.team.request(
                "GET", self._path(effect), priority=Priority.LIVE, attempts=3
            )
        except PermanentDeliveryError as exc:
            if exc.status != 404:
                raise
            return Absent(started)
        rma_to_canonical(_load_record(response.body), source.config.currency)
        return Found(response.body, started)

    async def apply(
        self, tx: Transaction, effect: Effect, fetched: Found | Absent
    ) -> list[NewEffect]:
        source = self.source
        payload = effect.payload
        rma_id = str(payload["rma_id"])
        key = source.rma_key(rma_id)
        marker = await tx.get_entity(FETCHED, key)
        if marker is None or float(marker.data["started_at"]) < fetched.started_at:
            await tx.put_entity(FETCHED, key, (0,), {"started_at": fetched.started_at})
        if isinstance(fetched, Absent):
            if payload["action"] != "rma.deleted":
                return []
            _, effects = await source.apply_deleted(tx, rma_id, _parse_time(payload["event_at"]))
            return effects
        try:
            rma = rma_to_canonical(_load_record(fetched.body), source.config.currency)
        except MappingError as exc:  # validated in fetch; never crash the dispatcher
            await source._flag_unmapped(tx, rma_id, exc)
            return []
        _, effects = await source.apply(tx, rma)
        return effects


class RmaItemsWriteback:
    """The return-event flow's :class:`~bridge.flows.returns.SourceWriteback` for the
    retailer's ReturnLogic RMAs: one ``returnlogic.rma.items`` effect per RMA, ever."""

    def __init__(self, source: RlRmas) -> None:
        self.source = source
        self.destination = RmaItemsDestination(f"returnlogic.rma_items:{source.retailer}", source)

    async def return_outcome(
        self, tx: Transaction, rma_key: str, rma: Rma, event: ReturnEvent
    ) -> list[NewEffect]:
        source = self.source
        if rma_key != source.rma_key(rma.id) or await tx.get_entity(WRITTEN_BACK, rma_key):
            return []
        outcome: Literal["accepted", "cleared"] = (
            "accepted" if event.kind is ReturnEventKind.ACCEPTED else "cleared"
        )
        disposition = source.rmas.writeback.dispositions[outcome]
        items = [
            {
                "rlRmaItemId": int(item_id),
                "itemReceived": True,
                "disposition": disposition.model_dump(exclude_none=True),
            }
            for item_id in dict.fromkeys(u.ref(SOURCE) for u in rma.units)
            if item_id is not None and item_id.isdigit()
        ]
        if not items:
            await tx.add_flag(
                source.retailer,
                "rma",
                rma_key,
                f"return {outcome} in the returns system, not written back to ReturnLogic:"
                " the RMA names no ReturnLogic item ids",
            )
            return []
        await tx.put_entity(
            WRITTEN_BACK, rma_key, (0,), {"outcome": outcome, "return_id": event.return_id}
        )
        return [
            NewEffect(
                idempotency_key=f"{ITEMS_KIND}:{source.retailer}:{rma.id}",
                destination=self.destination.name,
                kind=ITEMS_KIND,
                payload={
                    "rma_id": rma.id,
                    "rma_key": rma_key,
                    "outcome": outcome,
                    "rmaItems": items,
                },
                order_key=f"{ITEMS_KIND}:{source.retailer}:{rma.id}",
                retailer=source.retailer,
            )
        ]


class RmaItemsDestination(HttpDestination):
    """``PUT /v1/rmas/{rlRmaId}`` ``{"rmaItems": [...]}`` under the team's governor (LIVE
    priority) with its bearer; absolute values, so a resend after an unknown outcome is
    harmless (no idempotency header: ReturnLogic documents none)."""

    idempotency_header = None

    def __init__(self, name: str, source: RlRmas) -> None:
        team = source.team
        super().__init__(
            name,
            lambda: source.runtime.http,
            team.limits,
            priority=Priority.LIVE,
            credentials=team.credentials,
        )
        self.source = source

    async def render(self, effect: Effect) -> OutboundRequest:
        payload = effect.payload
        return OutboundRequest(
            "PUT",
            f"{self.source.team.base}/v1/rmas/{quote(str(payload['rma_id']), safe='')}",
            {"Accept": "application/json", "Content-Type": "application/json"},
            json={"rmaItems": payload["rmaItems"]},
        )


def rmas_key(retailer: str) -> SharedKey[RlRmas]:
    """The retailer's :class:`RlRmas` (for the CLI, the demo and tests)."""
    return SharedKey(f"returnlogic.rmas:{retailer}")


def setup(
    runtime: AdapterContext, retailer: RetailerConfig, config: ReturnLogicConfig, team: RlTeam
) -> None:
    """Wire the RMA source for one retailer (when ``rmas.enabled``)."""
    if not config.rmas.enabled:
        return
    source = RlRmas(runtime, retailer.id, config, team)
    runtime.shared(rmas_key(retailer.id), lambda: source)
    source.wire()


__all__ = [
    "FETCH_KIND",
    "RESOURCE_ACTIONS",
    "WEBHOOK_KIND",
    "ReconcileReport",
    "RlRmas",
    "RmaFetchDestination",
    "RmaItemsDestination",
    "RmaItemsWriteback",
    "SuperviseReport",
    "WebhookEvent",
    "endpoint_base",
    "endpoint_with_secret",
    "parse_webhook",
    "setup",
]
