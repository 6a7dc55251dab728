"""Kibo OMS as the returns sink: Create Return, Get Return (reconciliation).

Duplicates. Kibo documents no idempotency key and no lookup of returns by order, so:

1. the effect (key ``kibo.return:<retailer>:<rma>:<step>:<order>``) is recorded before any
   request is sent, and one exists per RMA, step and order, ever;
2. an attempt that failed with an answer (a status code) is known not to have created
   anything and is simply retried;
3. an attempt whose outcome is unknown (timeout, connection lost mid-call, process killed)
   is **not** sent again blindly: the destination waits for evidence, Kibo's
   ``return_created`` notification for that order (recorded by the notification
   receiver), and takes the return it names as the result; without evidence within
   ``unknown_outcome_wait`` seconds the effect is parked as a dead letter for an operator,
   who checks Kibo and replays it (or leaves it) -- never a second return by accident.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable
from typing import Any

from adapters.kibo.config import KiboConfig
from bridge.domain import Rma
from bridge.engine import HttpDestination
from bridge.errors import MappingError, PermanentDeliveryError, RetriableDeliveryError
from bridge.http import DestinationLimits, HttpClient, OutboundRequest, Response
from bridge.lifecycle import ReturnEvent
from bridge.services import RMA_LIFECYCLE
from bridge.store import Effect, NewEffect, Store, Transaction
from mappings.kibo import MAX_ORDER_ITEM_ID, dumps, return_response_to_ref, rma_to_kibo_returns

log = logging.getLogger(__name__)
_CANONICAL_DIGITS = re.compile(r"0|[1-9][0-9]*")

RETURN_KIND = "kibo.return.create"
KIBO_RETURN = "kibo.return"
"""Entity per Kibo return id: which RMA and step it belongs to, and its state."""
OPEN_RETURNS = "kibo.open_returns"
"""Entity per retailer: Kibo returns created and not yet cleared or rejected."""
CREATED_BY_ORDER = "kibo.created_by_order"
"""Entity per external order id: returns Kibo announced (return_created) for it."""
CROSSWALK = "kibo.crosswalk"
"""Entity per ``<retailer>:<order>:<line>``: ``{"order_item_id": int}``."""
UNKNOWN_SINCE = "kibo.unknown_since"


def kibo_headers(config: KiboConfig) -> dict[str, str]:
    if config.auth == "bearer" and config.token is not None:
        return {config.auth_header: f"Bearer {config.token.get_secret_value()}"}
    if config.username is not None and config.password is not None:
        raw = f"{config.username}:{config.password.get_secret_value()}".encode()
        return {config.auth_header: f"Basic {base64.b64encode(raw).decode()}"}
    return {}


def _base(config: KiboConfig) -> str:
    return str(config.base_url).rstrip("/")


class KiboReturnsSink:
    """The ``returns_sink`` capability: one Create Return effect per order of the RMA."""

    def __init__(self, destination: str) -> None:
        self.destination = destination

    def return_effects(
        self, retailer: str, rma_key: str, rma: Rma, step: str, order_key: str
    ) -> list[NewEffect]:
        order_ids = list(dict.fromkeys(u.original_order_id or u.order_id for u in rma.units))
        return [
            NewEffect(
                idempotency_key=f"{RETURN_KIND}:{rma_key}:{step}:{order_id}",
                destination=self.destination,
                kind=RETURN_KIND,
                payload={"rma_key": rma_key, "step": step, "external_order_id": order_id},
                order_key=order_key,
                retailer=retailer,
            )
            for order_id in order_ids
        ]


class KiboReturnDestination(HttpDestination):
    """Delivers ``kibo.return.create``: the body is built when sent, from the RMA as stored
    then, so a dead letter replayed after a fix (crosswalk, config) uses the fix."""

    idempotency_header = None

    def __init__(
        self,
        name: str,
        retailer: str,
        config: KiboConfig,
        store: Callable[[], Store],
        http: Callable[[], HttpClient],
        lifecycle: Callable[[], Any],
    ) -> None:
        limits = DestinationLimits(name, timeout=config.timeout, backoff=config.retry.backoff())
        super().__init__(name, http, limits)
        self.retailer = retailer
        self.config = config
        self._store = store
        self._lifecycle = lifecycle

    async def render(self, effect: Effect) -> OutboundRequest:
        body = await self._body(effect)
        return OutboundRequest(
            "POST",
            f"{_base(self.config)}/api/v2/return/",
            {
                **kibo_headers(self.config),
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            data=dumps(body).encode(),
            json=body,
        )

    async def _body(self, effect: Effect) -> dict[str, Any]:
        payload = effect.payload
        store = self._store()
        async with store.transaction() as tx:
            stored = await tx.get_entity("rma", payload["rma_key"])
            if stored is None:
                raise MappingError(f"RMA {payload['rma_key']} is not stored", field="rma")
            rma = Rma.model_validate(stored.data)
            order_item_ids = await self._order_item_ids(tx, rma)
        bodies = rma_to_kibo_returns(
            rma,
            order_item_ids=order_item_ids,
            created_at=rma.updated_at,
            gift_card_type=self.config.gift_card_type,
        )
        for body in bodies:
            if body.get("externalOrderID") == payload["external_order_id"]:
                return body
        raise MappingError(
            f"RMA {rma.id} has no units of order {payload['external_order_id']}", field="items"
        )

    async def _order_item_ids(self, tx: Transaction, rma: Rma) -> dict[tuple[str, str], int]:
        """Per line: the crosswalk's id when one was recorded, else (``line_ids =
        "numeric"``) the line identifier itself when it is canonical digits. Anything else
        stays unresolved, and the mapping names it: never guessed."""
        ids: dict[tuple[str, str], int] = {}
        for unit in rma.units:
            key = (unit.order_id, unit.order_line_id)
            entry = await tx.get_entity(
                CROSSWALK, f"{self.retailer}:{unit.order_id}:{unit.order_line_id}"
            )
            if entry is not None:
                ids[key] = int(entry.data["order_item_id"])
            elif (
                self.config.line_ids == "numeric"
                and (unit.original_order_id is None or self.config.exchange_lines_numeric)
                and _CANONICAL_DIGITS.fullmatch(unit.order_line_id)
                and int(unit.order_line_id) <= MAX_ORDER_ITEM_ID
            ):
                ids[key] = int(unit.order_line_id)
        return ids

    async def deliver(self, effect: Effect) -> Response | None:
        if effect.outcome_unknown:
            return await self._settle_unknown(effect)
        return await self.http.send(await self.build_request(effect), self.limits, self.priority)

    async def _settle_unknown(self, effect: Effect) -> Response:
        """An earlier attempt may have created the return: find it, never create twice."""
        order_id = effect.payload["external_order_id"]
        store = self._store()
        async with store.transaction() as tx:
            announced = await tx.get_entity(CREATED_BY_ORDER, f"{self.retailer}:{order_id}")
            unclaimed = [
                r
                for r in (announced.data["returns"] if announced else [])
                if not r.get("claimed_by")
            ]
            if unclaimed:
                found = unclaimed[0]
                found["claimed_by"] = effect.idempotency_key
                await tx.put_entity(
                    CREATED_BY_ORDER,
                    f"{self.retailer}:{order_id}",
                    (0,),
                    announced.data,  # type: ignore[union-attr]
                )
                log.info(
                    "lost create answer settled by return_created",
                    extra={"effect": effect.idempotency_key, "return_id": found["return_id"]},
                )
                return Response(200, {}, dumps({"returnID": found["return_id"]}).encode())
            since = await tx.get_entity(UNKNOWN_SINCE, effect.idempotency_key)
            now = store.clock()
            if since is None:
                await tx.put_entity(UNKNOWN_SINCE, effect.idempotency_key, (0,), {"since": now})
                first = now
            else:
                first = float(since.data["since"])
        if now - first < self.config.unknown_outcome_wait:
            raise RetriableDeliveryError(
                f"kibo: the outcome of creating the return for order {order_id} is unknown;"
                " waiting for Kibo's return_created notification",
                destination=self.name,
                retry_after=min(60.0, self.config.unknown_outcome_wait / 10),
                outcome_unknown=True,
            )
        raise PermanentDeliveryError(
            f"kibo: the outcome of creating the return for order {order_id} is unknown and"
            " Kibo offers no lookup: check Kibo for a return of this order, then replay this"
            " dead letter only if there is none",
            destination=self.name,
        )

    async def on_delivered(
        self, tx: Transaction, effect: Effect, response: Response | None
    ) -> list[NewEffect]:
        """Record the Kibo return and tell the RMA lifecycle (refund confirmation)."""
        if response is None:
            return []
        ref = return_response_to_ref(response.body)
        rma_key, step = effect.payload["rma_key"], effect.payload["step"]
        await tx.put_entity(
            KIBO_RETURN,
            f"{self.retailer}:{ref.return_id}",
            (0,),
            {
                "rma_key": rma_key,
                "step": step,
                "state": "created",
                "external_order_id": effect.payload["external_order_id"],
            },
        )
        await _set_open(tx, self.retailer, ref.return_id, open_=True)
        await record_announced(
            tx,
            self.retailer,
            effect.payload["external_order_id"],
            ref.return_id,
            claimed_by=effect.idempotency_key,
        )
        lifecycle = self._lifecycle()
        effects: list[NewEffect] = await lifecycle.on_return_event(
            tx, rma_key, ReturnEvent("created", str(ref.return_id), step)
        )
        if ref.cleared:
            effects += await apply_return_event(
                tx, self.retailer, lifecycle, ref.return_id, "cleared"
            )
        return effects


async def record_announced(
    tx: Transaction, retailer: str, external_order_id: str, return_id: int, claimed_by: str | None
) -> None:
    """Note that Kibo holds ``return_id`` for the order; ``claimed_by`` names the effect it
    belongs to (``None``: not known yet, evidence for a create whose answer was lost)."""
    key = f"{retailer}:{external_order_id}"
    entity = await tx.get_entity(CREATED_BY_ORDER, key)
    returns: list[dict[str, Any]] = [dict(r) for r in entity.data["returns"]] if entity else []
    for entry in returns:
        if entry["return_id"] == return_id:
            entry["claimed_by"] = entry["claimed_by"] or claimed_by
            break
    else:
        if claimed_by is None and await tx.get_entity(KIBO_RETURN, f"{retailer}:{return_id}"):
            claimed_by = "known"
        returns.append({"return_id": return_id, "claimed_by": claimed_by})
    await tx.put_entity(CREATED_BY_ORDER, key, (0,), {"returns": returns})


async def _set_open(tx: Transaction, retailer: str, return_id: int, *, open_: bool) -> None:
    entity = await tx.get_entity(OPEN_RETURNS, retailer)
    ids: list[int] = list(entity.data["ids"]) if entity else []
    if open_ and return_id not in ids:
        ids.append(return_id)
    elif not open_ and return_id in ids:
        ids.remove(return_id)
    await tx.put_entity(OPEN_RETURNS, retailer, (0,), {"ids": ids})


async def apply_return_event(
    tx: Transaction, retailer: str, lifecycle: Any, return_id: int, kind: str
) -> list[NewEffect]:
    """A known Kibo return moved (cleared, rejected, ...): record it, tell the lifecycle.
    Returns of other systems (unknown ids) are ignored."""
    entity = await tx.get_entity(KIBO_RETURN, f"{retailer}:{return_id}")
    if entity is None:
        return []
    data = dict(entity.data)
    if data["state"] == kind:
        return []
    data["state"] = kind
    await tx.put_entity(KIBO_RETURN, f"{retailer}:{return_id}", (0,), data)
    await _set_open(tx, retailer, return_id, open_=kind in ("created", "reopened", "accepted"))
    effects: list[NewEffect] = await lifecycle.on_return_event(
        tx, data["rma_key"], ReturnEvent(kind, str(return_id), data["step"])
    )
    return effects


class KiboReconciler:
    """Reads returns created but not yet cleared or rejected (Get Return), because
    notifications can be lost; feeds what it learns to the lifecycle like a notification."""

    def __init__(self, runtime: Any, retailer: str, config: KiboConfig) -> None:
        self.runtime = runtime
        self.retailer = retailer
        self.config = config
        self.limits = DestinationLimits(f"kibo.get:{retailer}", timeout=config.timeout)
        self.checked = 0

    async def run_once(self) -> int:
        """Check every open return once; returns how many changed."""
        store = self.runtime.store
        async with store.transaction() as tx:
            entity = await tx.get_entity(OPEN_RETURNS, self.retailer)
        changed = 0
        for return_id in list(entity.data["ids"]) if entity else []:
            request = OutboundRequest(
                "GET",
                f"{_base(self.config)}/api/v2/return/{return_id}",
                {**kibo_headers(self.config), "Accept": "application/json"},
            )
            try:
                response = await self.runtime.http.call(request, self.limits, attempts=2)
                ref = return_response_to_ref(response.body)
            except (RetriableDeliveryError, PermanentDeliveryError, MappingError) as exc:
                log.warning(
                    "kibo return not reconciled",
                    extra={"retailer": self.retailer, "return_id": return_id, "reason": str(exc)},
                )
                continue
            self.checked += 1
            kind = "rejected" if ref.rejected else "cleared" if ref.cleared else None
            if kind is None:
                continue
            lifecycle = self.runtime.service(self.retailer, RMA_LIFECYCLE)
            async with store.transaction() as tx:
                effects = await apply_return_event(tx, self.retailer, lifecycle, return_id, kind)
                for effect in effects:
                    await tx.add_effect(effect)
            self.runtime.engine.wake_dispatcher()
            changed += 1
        return changed
