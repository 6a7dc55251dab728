"""Kibo's Return Event Notifications: ``POST /retailers/<id>/kibo/notifications``.

Authenticated as the retailer configures (``[retailers.<id>.kibo.notifications]``; without
that table the endpoint answers 401 to everything), durably stored, then applied:
``return_created`` is recorded per order (the evidence that settles a create whose answer
was lost); the other events of returns the bridge created are translated into a
:class:`~bridge.flows.ReturnEvent` for the return-event flow (:mod:`bridge.flows.returns`:
refund confirmation when the policy is ``on_return_cleared``, flags for an operator on
rejection or failure).
Notifications about returns the bridge did not create are recorded and ignored.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from adapters.kibo.client import (
    KIBO_RETURN,
    apply_return_event,
    record_announced,
    return_event_kind,
    settle_effect,
)
from adapters.kibo.config import KiboConfig
from bridge.engine import HandlerContext, Outcome
from bridge.flows import ReturnEventKind, ReturnsFlows
from bridge.inbound import authenticated, receive, secret_headers_of, unauthorized
from bridge.openapi import security_of
from bridge.ports import RMA_LIFECYCLE, AdapterContext
from bridge.store import InboxItem, InboxStatus, Transaction
from mappings.kibo import (
    DEFAULT_EVENT_NAMES,
    KiboNotificationIn,
    KiboReturnEvent,
    parse_notification,
)

NOTIFICATION_KIND = "kibo.notifications"


class KiboNotifications:
    def __init__(
        self,
        runtime: AdapterContext,
        retailer: str,
        config: KiboConfig,
        read_destination: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.retailer = retailer
        self.config = config
        self.read_destination = read_destination
        """Where ``return_cleared`` is read back (Get Return) before it applies."""
        self.event_names = {**DEFAULT_EVENT_NAMES, **config.event_names}

    def routes(self) -> None:
        self.runtime.add_route(
            self.retailer,
            "kibo",
            "POST",
            "notifications",
            self.receive,
            inbox=True,
            summary="Return Event Notifications: stored, then applied",
            body=KiboNotificationIn,
            security=security_of(self.config.notifications),
        )
        self.runtime.engine.add_handler(NOTIFICATION_KIND, self.handle, retailer=self.retailer)

    def _parse(self, body: bytes) -> Any:
        return parse_notification(body, self.event_names)

    async def receive(self, request: web.Request) -> web.Response:
        auth = self.config.notifications
        if auth is None or not authenticated(request, auth):
            return unauthorized()
        return await receive(
            request,
            self.runtime.engine,
            retailer=self.retailer,
            kind=NOTIFICATION_KIND,
            validate=self._parse,
            secret_headers=secret_headers_of(auth),
            entity_of=self._entity,
        )

    def _entity(self, event: KiboReturnEvent) -> str | None:
        """One Kibo return's notifications apply one at a time (``None``: no return id)."""
        if event.return_id is None:
            return None
        return f"kibo.return:{self.retailer}:{event.return_id}"

    async def handle(self, item: InboxItem, tx: Transaction, ctx: HandlerContext) -> Outcome:
        event = self._parse(item.body)
        if event.kind == "created":
            await self._record_created(tx, event.external_order_id, event.return_id)
            return Outcome(note=f"return {event.return_id} created")
        kind = return_event_kind(event.kind)
        if event.return_id is None or kind is None:
            return Outcome(InboxStatus.DONE, note=f"{event.kind} event: nothing to do")
        if (
            kind is ReturnEventKind.CLEARED
            and self.read_destination is not None
            and await tx.get_entity(KIBO_RETURN, f"{self.retailer}:{event.return_id}")
        ):
            # the notification carries no items: Get Return says what was accepted and
            # refunded, then the cleared event applies (see KiboReturnRead)
            return Outcome(
                effects=[
                    settle_effect(self.retailer, self.read_destination, event.return_id, item.id)
                ]
            )
        flows: ReturnsFlows = self.runtime.service(self.retailer, RMA_LIFECYCLE)
        effects = await apply_return_event(tx, self.retailer, flows, event.return_id, kind)
        return Outcome(effects=effects)

    async def _record_created(
        self, tx: Transaction, external_order_id: str | None, return_id: int | None
    ) -> None:
        if external_order_id is not None and return_id is not None:
            await record_announced(tx, self.retailer, external_order_id, return_id, claimed_by=None)
