"""ReturnLogic orders -> the retailer's order publisher (Optoro Returns Portal Orders).

One :class:`RlOrderSync` per retailer (:func:`sync_for`):

* :meth:`~RlOrderSync.poll_once`, every ``poll_every`` seconds (and at start): the orders
  created since the cursor, at live priority;
* :meth:`~RlOrderSync.rescan_once`, every ``rescan_every`` seconds: the orders created in the
  last ``rescan_days`` days, at reconcile priority. ReturnLogic filters orders by create date
  only (``minCreateDate``/``maxCreateDate``, no update-date filter), so an update to an older
  order (shipped, refunded, canceled) is found only by reading it again;
* the backfill (:mod:`adapters.returnlogic.backfill`) pages through history with the same
  per-page step, at backfill priority.

Each page is mapped record by record (:func:`mappings.returnlogic.order_to_canonical`) and the
canonical orders are handed to the retailer's order flow (:meth:`bridge.flows.OrderFlow.publish`,
one transaction per page: the stale-snapshot check below, the snapshot, and the order
publisher's effects for the orders whose wire snapshot changed; an unchanged order sends
nothing, so reading an order twice costs a request, never a send).

Cursor and boundaries
    The cursor (store cursor ``returnlogic.orders:<retailer>``) is the newest ``createDate``
    seen by a poll. A poll asks for ``minCreateDate = cursor - overlap``; the filter is
    inclusive ("created on or after"), so:

    * **ties**: records sharing the cursor's ``createDate`` (several orders created in the same
      millisecond, some of them committed after the poll that set the cursor) are read again
      by the next poll even with ``overlap = 0``;
    * **late records**: a record that becomes visible after a poll with a ``createDate``
      *earlier* than the cursor (ReturnLogic's servers' clocks, a long write, replication lag)
      is read by the next poll if it is at most ``overlap`` older than the cursor (default 10
      minutes); an older straggler is caught by the re-scan.

    The API returns records in an unspecified order (not by ``createDate``), so a poll reads
    every page of its window and the cursor moves (forward only, to the newest ``createDate``
    seen) once the last page's publish has committed. A crash in between re-reads the window:
    duplicates, never gaps. The first poll without a cursor reads ``first_poll_days`` back;
    when a poll sees nothing the cursor stays (or is set to the start of the window read).

Refresh on RMA arrival
    Since the re-scan covers only orders created in the last ``rescan_days``, an update to an
    older order (a refund, a cancellation) would never be read. So :class:`RlOrderSync` is
    also the retailer's order source (:class:`~bridge.ports.OrderSource`): whenever one of an
    order's RMAs arrives (a new status, from Optoro's RMA webhook or ReturnLogic's RMA webhook
    or reconciliation), the RMA flow queues a read of that order (kind
    ``returnlogic.order.refresh``, one per RMA, order and status) that ``GET
    /v1/orders/{rlOrderId}`` it at live priority through the team's governor and applies it
    through the order flow (published only if changed). The bound: an order older than
    ``rescan_days`` is brought up to date only when one of its RMAs moves; a change with no
    RMA activity (e.g. a cancellation of an old order without a return) is not seen.

Stale reads
    Poll, re-scan, backfill and a backfill process beside the daemon may read the same order
    at different times. The order flow leaves out a snapshot whose ``updated_at`` is older
    than the stored one (counted as ``stale``), so a slow reader never sends Optoro an older
    version.

Bad records
    A record that fails mapping is stored in the inbox (kind ``returnlogic.order``, raw JSON)
    and the inbox worker quarantines it with the ``MappingError`` reason (the handler maps it
    again); the rest of the page is published and the cursor moves on. ``returns-bridge inbox
    --replay ID`` maps it again with the current code; a corrected record is found by the next
    poll or re-scan. The same bad body read again is a duplicate, not a second item.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from adapters.returnlogic.client import RlTeam, paginate
from adapters.returnlogic.config import ReturnLogicConfig, RlOrdersConfig
from bridge.config import RetailerConfig
from bridge.domain import Order
from bridge.engine import (
    Absent,
    Fetched,
    Found,
    HandlerContext,
    Outcome,
    ReadDestination,
)
from bridge.errors import BridgeError, MappingError, PermanentDeliveryError
from bridge.flows import ReturnsFlows
from bridge.flows.orders import parse_utc
from bridge.http import OutboundRequest, Priority
from bridge.ports import ORDER_PUBLISHER, ORDER_SOURCE, RMA_LIFECYCLE, AdapterContext, SharedKey
from bridge.store import Effect, InboxItem, InboxStatus, NewEffect, Transaction
from mappings.returnlogic import dumps, map_order, orders_page
from mappings.returnlogic.orders import MappedOrder

log = logging.getLogger(__name__)

ORDERS_PATH = "/v1/orders"
COUNT_PATH = "/v1/orders/count"
INBOX_KIND = "returnlogic.order"
"""Inbox kind of a raw order record that failed mapping (quarantined, replayable)."""
DOUBT = "ReturnLogic order data does not fit (sent with what is certain)"
"""Prefix of the operator flag raised for each doubt of an order's data."""
REFRESH_KIND = "returnlogic.order.refresh"
"""Effect kind of a read of one order by id (an order of an RMA that arrived)."""


def orders_key(retailer: str) -> SharedKey[RlOrderSync]:
    return SharedKey(f"returnlogic.orders:{retailer}")


def sync_for(runtime: AdapterContext, retailer: str) -> RlOrderSync:
    """The retailer's :class:`RlOrderSync` (``BridgeError`` when ReturnLogic is not set up)."""

    def missing() -> RlOrderSync:
        raise BridgeError(f"retailer {retailer!r} has no ReturnLogic order source configured")

    return runtime.shared(orders_key(retailer), missing)


def format_when(when: datetime, *, round_up: bool = False) -> str:
    """``2024-10-06T17:56:38.921Z``, the API's date form, to the millisecond (rounded down,
    or up for an upper bound, so an inclusive filter never loses the boundary)."""
    when = when.astimezone(UTC)
    micros = when.microsecond % 1000
    if micros:
        when -= timedelta(microseconds=micros)
        if round_up:
            when += timedelta(milliseconds=1)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def parse_when(value: object) -> datetime | None:
    """An ISO-8601 date-time as an aware UTC datetime (naive = UTC), else ``None``."""
    return parse_utc(value)


@dataclass(frozen=True)
class PageResult:
    """What applying one page did."""

    records: int
    published: int
    """Orders applied (stored; queued to the publisher when their snapshot changed)."""
    stale: int
    """Orders not applied: a newer snapshot was stored already."""
    quarantined: int
    queued: int
    """Effects (publisher requests) queued."""
    newest: datetime | None
    """The newest ``createDate`` on the page."""


@dataclass
class SyncReport:
    """The sum of the pages of one poll, re-scan or backfill run."""

    kind: str
    pages: int = 0
    records: int = 0
    published: int = 0
    stale: int = 0
    quarantined: int = 0
    queued: int = 0
    newest: datetime | None = None
    cursor: str | None = None
    """The cursor after the run (poll)."""
    window: tuple[str, str | None] = ("", None)
    """``(minCreateDate, maxCreateDate)`` read."""
    finished_at: datetime | None = None

    def add(self, page: PageResult) -> None:
        self.pages += 1
        self.records += page.records
        self.published += page.published
        self.stale += page.stale
        self.quarantined += page.quarantined
        self.queued += page.queued
        if page.newest is not None and (self.newest is None or page.newest > self.newest):
            self.newest = page.newest

    def fields(self) -> dict[str, Any]:
        return {
            "pages": self.pages,
            "records": self.records,
            "published": self.published,
            "stale": self.stale,
            "quarantined": self.quarantined,
            "queued": self.queued,
            "cursor": self.cursor,
        }


class RlOrderSync:
    """Polls, re-scans and applies ReturnLogic order pages for one retailer."""

    def __init__(
        self,
        runtime: AdapterContext,
        retailer: str,
        config: RlOrdersConfig,
        team: RlTeam,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.runtime = runtime
        self.retailer = retailer
        self.config = config
        self.team = team
        self.clock = clock or (lambda: datetime.now(UTC))
        self.last_poll: SyncReport | None = None
        self.last_rescan: SyncReport | None = None
        self._poll_lock = asyncio.Lock()
        self._rescan_lock = asyncio.Lock()

    @property
    def cursor_name(self) -> str:
        return f"returnlogic.orders:{self.retailer}"

    @property
    def rescan_cursor_name(self) -> str:
        """When the last re-scan finished (or re-scans were first scheduled), ISO-8601."""
        return f"returnlogic.orders.rescan:{self.retailer}"

    # scheduled runs ----------------------------------------------------------------------

    async def poll_once(self) -> SyncReport:
        """Read the orders created since ``cursor - overlap`` and publish them; then move the
        cursor to the newest ``createDate`` seen (see the module docstring)."""
        async with self._poll_lock:
            store = self.runtime.store
            stored = await store.get_cursor(self.cursor_name)
            cursor = parse_when(stored) if stored else None
            if cursor is not None:
                low = cursor - timedelta(seconds=self.config.overlap)
            else:
                low = self.clock() - timedelta(days=self.config.first_poll_days)
            report = await self.read("poll", {"minCreateDate": format_when(low)}, Priority.LIVE)
            newest = report.newest if report.newest is not None else (cursor or low)
            if cursor is None or newest > cursor:
                await store.set_cursor(self.cursor_name, format_when(newest))
                cursor = newest
            report.cursor = format_when(cursor)
            self.last_poll = report
            log.info(
                "returnlogic orders polled",
                extra={"retailer": self.retailer, **report.fields()},
            )
            return report

    async def rescan_once(self) -> SyncReport:
        """Read the orders created in the last ``rescan_days`` days again (reconcile
        priority) so updates to them reach the publisher; the cursor is left alone."""
        async with self._rescan_lock:
            low = self.clock() - timedelta(days=self.config.rescan_days)
            report = await self.read(
                "rescan", {"minCreateDate": format_when(low)}, Priority.RECONCILE
            )
            await self.runtime.store.set_cursor(
                self.rescan_cursor_name, format_when(report.finished_at or self.clock())
            )
            self.last_rescan = report
            log.info(
                "returnlogic orders re-scanned",
                extra={"retailer": self.retailer, **report.fields()},
            )
            return report

    async def start(self) -> None:
        """Startup hook: schedule the poll (now, then every ``poll_every``) and the re-scan
        (``rescan_every`` after the last one, which the store remembers) when the retailer
        has an order publisher."""
        if not self.runtime.has_service(self.retailer, ORDER_PUBLISHER):
            log.warning(
                "returnlogic orders not polled: the retailer has no order publisher",
                extra={"retailer": self.retailer},
            )
            return
        now = self.clock()
        last = await self.runtime.store.get_cursor(self.rescan_cursor_name)
        last_rescan = parse_when(last) if last else None
        if last_rescan is None:
            await self.runtime.store.set_cursor(self.rescan_cursor_name, format_when(now))
            last_rescan = now
        next_rescan = max(now, last_rescan + timedelta(seconds=self.config.rescan_every))
        self.runtime.jobs.every(
            f"returnlogic-orders-poll:{self.retailer}",
            self._scheduled_poll,
            self.config.poll_every,
            first_at=now,
        )
        self.runtime.jobs.every(
            f"returnlogic-orders-rescan:{self.retailer}",
            self._scheduled_rescan,
            self.config.rescan_every,
            first_at=next_rescan,
        )

    async def _scheduled_poll(self) -> None:
        await self._scheduled(self.poll_once)

    async def _scheduled_rescan(self) -> None:
        await self._scheduled(self.rescan_once)

    async def _scheduled(self, run: Callable[[], Awaitable[SyncReport]]) -> None:
        """A scheduled run: a failure (partner down, token refused) is logged and the next
        run tries again from the same cursor."""
        try:
            await run()
        except BridgeError as exc:
            log.warning(
                "returnlogic order sync failed; the next run retries",
                extra={"retailer": self.retailer, "reason": str(exc)},
            )

    # reading -----------------------------------------------------------------------------

    async def read(
        self,
        kind: str,
        params: Mapping[str, Any],
        priority: Priority,
        *,
        skip: int = 0,
        total: int | None = None,
        on_page: Callable[[int, list[Any], PageResult], Awaitable[None]] | None = None,
    ) -> SyncReport:
        """Page through ``GET /v1/orders`` with ``params`` from ``skip`` and apply every page;
        ``on_page(skip, records, result)`` runs after each page's publish committed."""
        window = (params.get("minCreateDate", ""), params.get("maxCreateDate"))
        report = SyncReport(kind, window=window)
        pages = self.pages(params, priority, skip=skip, total=total)
        async with contextlib.aclosing(pages):
            async for page_skip, records in pages:
                result = await self.apply(records)
                report.add(result)
                if on_page is not None:
                    await on_page(page_skip, records, result)
        report.finished_at = self.clock()
        return report

    async def count(self, params: Mapping[str, Any], priority: Priority) -> int:
        """``GET /v1/orders/count`` with the same filters."""
        response = await self.team.request("GET", COUNT_PATH, params=params, priority=priority)
        body = response.json()
        count = body.get("count") if isinstance(body, dict) else None
        if not isinstance(count, int) or count < 0:
            raise PermanentDeliveryError("returnlogic: GET /v1/orders/count answered no count")
        return count

    def pages(
        self,
        params: Mapping[str, Any],
        priority: Priority,
        *,
        skip: int = 0,
        total: int | None = None,
    ) -> AsyncGenerator[tuple[int, list[Any]], None]:
        """``(skip, records)`` per page until a short page (or ``skip`` reaches ``total``).

        The next page is requested while the caller applies the current one, so the rate
        governor always has a request waiting and pages arrive at the allowed rate. A page
        repeating the previous one exactly (a server ignoring ``skip``) is an error."""
        return paginate(
            lambda at: self.fetch(params, at, priority),
            page_size=self.config.page_size,
            what=f"GET {ORDERS_PATH}",
            skip=skip,
            total=total,
            prefetch=True,
        )

    async def fetch(self, params: Mapping[str, Any], skip: int, priority: Priority) -> list[Any]:
        """One page: the records as parsed with ``parse_float=Decimal``. An element that is
        not an object is kept (it is quarantined when applied); a body that is not a JSON
        array is an error of the whole request."""
        response = await self.team.request(
            "GET",
            ORDERS_PATH,
            params={**params, "skip": skip, "limit": self.config.page_size},
            priority=priority,
        )
        try:
            return orders_page(response.body)
        except MappingError as exc:
            try:
                data = _load(response.body)
            except MappingError:
                data = None
            if not isinstance(data, list):
                raise PermanentDeliveryError(
                    f"returnlogic: GET {ORDERS_PATH} did not answer a JSON array ({exc})"
                ) from exc
            return data

    # applying ----------------------------------------------------------------------------

    async def apply(self, records: Sequence[Any]) -> PageResult:
        """Map every record, keep the ones that fail in the inbox, publish the others in one
        transaction."""
        rules = self.config.tag_rules
        mapped: list[MappedOrder] = []
        newest: datetime | None = None
        quarantined = 0
        for record in records:
            if isinstance(record, dict):
                created = parse_when(record.get("createDate"))
                if created is not None and (newest is None or created > newest):
                    newest = created
            try:
                mapped.append(map_order(record, rules))
            except MappingError as exc:
                quarantined += 1
                await self._keep_bad_record(record, exc)
        orders = [m.order for m in mapped]
        queued, stale = await self.publish(orders)
        if any(m.doubts for m in mapped):
            async with self.runtime.store.transaction() as tx:
                for m in mapped:
                    await self.flag_doubts(tx, m)
        return PageResult(
            records=len(records),
            published=len(orders) - stale,
            stale=stale,
            quarantined=quarantined,
            queued=queued,
            newest=newest,
        )

    async def publish(self, orders: Sequence[Order]) -> tuple[int, int]:
        """Hand ``orders`` to the order flow (staleness, snapshot, publish, one transaction);
        ``(effects queued, orders left out as stale)``."""
        result = await self.flows.orders.publish(orders)
        return result.queued, result.stale

    @property
    def flows(self) -> ReturnsFlows:
        """The retailer's returns flows (orders are published there)."""
        flows: ReturnsFlows = self.runtime.service(self.retailer, RMA_LIFECYCLE)
        return flows

    async def flag_doubts(self, tx: Transaction, mapped: MappedOrder) -> None:
        """Flag for an operator what in an order's data did not fit (the order is still sent,
        with what is certain; see :mod:`mappings.returnlogic.orders`, "Doubts")."""
        for doubt in mapped.doubts:
            reason = f"{DOUBT}: {doubt}"[:500]
            await tx.add_flag(self.retailer, "order", mapped.order.id, reason)
            log.warning(
                "returnlogic order data does not fit; sent with what is certain",
                extra={"retailer": self.retailer, "order_id": mapped.order.id, "reason": reason},
            )

    async def _keep_bad_record(self, record: Any, exc: MappingError) -> None:
        body = dumps(record).encode()
        reason = f"{exc.field}: {exc}" if exc.field else str(exc)
        accepted = await self.runtime.engine.accept_detailed(
            self.retailer,
            INBOX_KIND,
            None,
            body,
            {"X-Source": f"GET {ORDERS_PATH}"},
            quarantine=reason,
        )
        log.warning(
            "returnlogic order record does not map; quarantined in the inbox",
            extra={
                "retailer": self.retailer,
                "rl_order_id": record.get("rlOrderId") if isinstance(record, dict) else None,
                "inbox_id": accepted.inbox_id,
                "duplicate": accepted.duplicate,
                "reason": reason,
            },
        )

    # order source ------------------------------------------------------------------------

    @property
    def refresh_destination(self) -> str:
        return f"{REFRESH_KIND}:{self.retailer}"

    def refresh_effects(self, retailer: str, order: Order, reason: str) -> list[NewEffect]:
        """The :class:`~bridge.ports.OrderSource` port: a read of ``order`` by its
        ``rlOrderId`` (``refs["returnlogic"]``), once per ``reason``; none for an order that
        did not come from ReturnLogic."""
        rl_order_id = order.refs.get("returnlogic")
        if not rl_order_id:
            return []
        return [
            NewEffect(
                idempotency_key=f"{REFRESH_KIND}:{retailer}:{order.id}:{reason}",
                destination=self.refresh_destination,
                kind=REFRESH_KIND,
                payload={"rl_order_id": rl_order_id, "order_id": order.id, "reason": reason},
                order_key=f"{REFRESH_KIND}:{retailer}:{order.id}",
                retailer=retailer,
            )
        ]

    async def handle_inbox(self, item: InboxItem, tx: Transaction, ctx: HandlerContext) -> Outcome:
        """Inbox handler of ``returnlogic.order``: map the stored record (``MappingError``
        quarantines it) and publish it unless a newer snapshot is stored."""
        record = _load(item.body)
        mapped = map_order(record, self.config.tag_rules)
        await self.flag_doubts(tx, mapped)
        outcome = await self.flows.orders.apply(tx, [mapped.order])
        if outcome.stale:
            return Outcome(InboxStatus.SUPERSEDED, note="a newer snapshot of the order is stored")
        return Outcome(effects=outcome.effects)


class OrderRefreshDestination(ReadDestination):
    """A read: ``GET /v1/orders/{rlOrderId}`` (outside any transaction, live priority), then
    the order applied through the order flow in the transaction that records the effect: a
    changed snapshot is published, an unchanged or older one sends nothing. A record that
    does not map is a dead letter naming the field (replayable after a fix); 404: nothing."""

    def __init__(self, sync: RlOrderSync) -> None:
        self.name = sync.refresh_destination
        self.sync = sync

    def _path(self, effect: Effect) -> str:
        return f"{ORDERS_PATH}/{quote(str(effect.payload['rl_order_id']), safe='')}"

    async def build_request(self, effect: Effect) -> OutboundRequest:
        return OutboundRequest(
            "GET", f"{self.sync.team.base}{self._path(effect)}", {"Accept": "application/json"}
        )

    async def fetch(self, effect: Effect) -> Fetched:
        started = await self.sync.runtime.store.now()
        try:
            response = await self.sync.team.request(
                "GET", self._path(effect), priority=Priority.LIVE, attempts=3
            )
        except PermanentDeliveryError as exc:
            if exc.status != 404:
                raise
            return Absent(started)
        map_order(_load(response.body), self.sync.config.tag_rules)  # a dead letter if not
        return Found(response.body, started)

    async def apply(
        self, tx: Transaction, effect: Effect, fetched: Found | Absent
    ) -> list[NewEffect]:
        if isinstance(fetched, Absent):
            return []
        mapped = map_order(_load(fetched.body), self.sync.config.tag_rules)
        await self.sync.flag_doubts(tx, mapped)
        return (await self.sync.flows.orders.apply(tx, [mapped.order])).effects


def _load(body: bytes | str) -> Any:
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_refuse)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MappingError(f"not JSON ({type(exc).__name__})", field="body") from None


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def setup(
    runtime: AdapterContext, retailer: RetailerConfig, config: ReturnLogicConfig, team: RlTeam
) -> None:
    """Wire the order source of one retailer: the sync object, its inbox handler (quarantined
    records), and, when ``orders.enabled``, the poll and re-scan jobs (scheduled at start, once
    every adapter has offered its services)."""
    sync = RlOrderSync(runtime, retailer.id, config.orders, team)
    runtime.shared(orders_key(retailer.id), lambda: sync)
    runtime.engine.add_handler(INBOX_KIND, sync.handle_inbox, retailer=retailer.id)
    if config.orders.enabled:
        runtime.engine.add_destination(OrderRefreshDestination(sync))
        runtime.provide(retailer.id, ORDER_SOURCE, "returnlogic", sync)
        runtime.on_startup(sync.start)


__all__ = [
    "COUNT_PATH",
    "DOUBT",
    "INBOX_KIND",
    "ORDERS_PATH",
    "REFRESH_KIND",
    "OrderRefreshDestination",
    "PageResult",
    "RlOrderSync",
    "SyncReport",
    "format_when",
    "parse_when",
    "setup",
    "sync_for",
]
