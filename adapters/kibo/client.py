"""Kibo OMS as the returns sink: Create Return, Get Return (reconciliation).

Duplicates. Kibo documents no idempotency key and no lookup of returns by order, but its
Create Return accepts a client-chosen ``returnID`` ("a unique identifier for the return",
minimum 1), so:

1. the effect (key ``kibo.return.create:<retailer>:<rma>:<step>:<order>``) is recorded
   before any request is sent, and one exists per RMA, step and order, ever;
2. every create carries ``returnID`` = :func:`~mappings.kibo.derive_return_id` of that key
   (``client_return_ids``), the same on every attempt; whether the tenant keeps it is read
   from the first answer (its ``returnID`` equals the one sent) and remembered per retailer
   in the store (entity ``kibo.return_ids``), re-checked on every answer;
3. an attempt that failed with an answer (a status code) is known not to have created
   anything and is simply retried; so is one the engine never recorded as sent (the
   process died before the call: :meth:`~bridge.engine.Engine.record_attempt`);
4. an attempt whose outcome is unknown (timeout, connection lost mid-call, process killed
   after the call began) is **not** sent again blindly. Where the tenant keeps the bridge's
   ids, Get Return on the derived id settles it: found (same ``externalOrderID``) -- it is
   the return, recorded as if the create had answered; 404 -- the create never reached
   Kibo and is sent again. A create refused with a 4xx while carrying the derived id is
   looked up the same way (the tenant may refuse an id it already holds). This is also how
   a ``return_created`` notification missed while the daemon was down is caught up with.
5. where the tenant assigns its own ids (or ``client_return_ids = false``, or whether it
   keeps them is not known yet and Get Return found nothing), the destination waits for
   evidence: Kibo's ``return_created`` notification for that order (recorded by the
   notification receiver), and takes the return it names as the result; without evidence
   within ``unknown_outcome_wait`` seconds the effect is parked as a dead letter for an
   operator, who checks Kibo and replays it (or leaves it) -- never a second return by
   accident.
"""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import SecretStr

from adapters.kibo.config import KiboConfig
from adapters.kibo.crosswalk import CROSSWALK as CROSSWALK  # re-exported
from adapters.kibo.crosswalk import LineResolver
from bridge.domain import Rma
from bridge.engine import HttpDestination
from bridge.engine.core import Absent, Fetched, Found
from bridge.engine.destination import ReadDestination
from bridge.errors import (
    CredentialsRefused,
    MappingError,
    PermanentDeliveryError,
    RetriableDeliveryError,
)
from bridge.flows import ReturnEvent, ReturnEventKind, ReturnsFlows, Settlement
from bridge.http import (
    DestinationLimits,
    HttpClient,
    OutboundRequest,
    Response,
    StaticCredentials,
)
from bridge.policy import Step, select_units
from bridge.ports import RMA_LIFECYCLE, AdapterContext, SharedKey
from bridge.store import Effect, EffectState, NewEffect, Store, Transaction
from bridge.store.base import each_entity_key
from mappings._json import Body
from mappings.kibo import (
    KiboReturnRef,
    derive_return_id,
    dumps,
    return_matches,
    return_response_to_ref,
    rma_to_kibo_returns,
)

log = logging.getLogger(__name__)

RETURN_KIND = "kibo.return.create"
KIBO_RETURN = "kibo.return"
"""Entity per Kibo return id: which RMA, step and order it belongs to, and ``lines``
(``orderItemID`` -> order id and line of its items; absent in older rows) (its state is the
RMA flow's; rows written before that also hold a ``state``, ignored)."""
OPEN_RETURN = "kibo.open_return"
"""Entity per ``<retailer>:<return id>``: a Kibo return created and not yet cleared or
rejected (deleted when it closes: one row per return, never a per-retailer hot set)."""
OPEN_RETURNS = "kibo.open_returns"
"""Before 0005: one entity per retailer with every open return id (folded into
:data:`OPEN_RETURN` rows by the reconciler)."""
CREATED_BY_ORDER = "kibo.created_by_order"
"""Entity per external order id: returns Kibo announced (return_created) for it."""
UNKNOWN_SINCE = "kibo.unknown_since"
RETURN_IDS = "kibo.return_ids"
"""Entity per retailer: ``{"kept": bool}``, whether its tenant keeps the bridge's returnID."""


@dataclass(frozen=True)
class Settled(Response):
    """A create's outcome learnt without its own answer: ``lookup`` -- Get Return's answer
    for the derived ``returnID``; ``notification`` -- what Kibo's ``return_created`` said
    (only the ``returnID``, which says nothing about whether the tenant keeps ours)."""

    settled_by: Literal["lookup", "notification"] = "lookup"


def kibo_headers(config: KiboConfig) -> dict[str, str]:
    if config.auth == "bearer" and config.token is not None:
        return {config.auth_header: f"Bearer {config.token.get_secret_value()}"}
    if config.username is not None and config.password is not None:
        raw = f"{config.username}:{config.password.get_secret_value()}".encode()
        return {config.auth_header: f"Basic {base64.b64encode(raw).decode()}"}
    return {}


def kibo_credentials(config: KiboConfig) -> StaticCredentials | None:
    """The tenant's token or basic credentials, attached on admission; they cannot be
    refreshed, so a 401 is a dead letter at once ("credentials refused")."""
    headers = kibo_headers(config)
    if not headers:
        return None
    return StaticCredentials(headers, SecretStr(headers[config.auth_header]))


def _base(config: KiboConfig) -> str:
    return str(config.base_url).rstrip("/")


class KiboReturnsSink:
    """The ``returns_sink`` capability: one Create Return effect per order of the RMA."""

    def __init__(self, destination: str) -> None:
        self.destination = destination

    def return_effects(
        self,
        retailer: str,
        rma_key: str,
        rma: Rma,
        step: str,
        order_key: str,
        *,
        part: int = 1,
        lines: Sequence[tuple[str, str, int]] | None = None,
    ) -> list[NewEffect]:
        order_ids = list(dict.fromkeys(u.original_order_id or u.order_id for u in rma.units))
        suffix = f":part{part}" if part > 1 else ""
        extra: dict[str, Any] = {"lines": [list(line) for line in lines]} if lines else {}
        if part > 1:
            extra["part"] = part
        return [
            NewEffect(
                idempotency_key=f"{RETURN_KIND}:{rma_key}:{step}:{order_id}{suffix}",
                destination=self.destination,
                kind=RETURN_KIND,
                payload={
                    "rma_key": rma_key,
                    "step": step,
                    "external_order_id": order_id,
                    **extra,
                },
                order_key=order_key,
                retailer=retailer,
            )
            for order_id in order_ids
        ]


class KiboReturnDestination(HttpDestination):
    """Delivers ``kibo.return.create``: the body is built when sent, from the RMA as stored
    then, so a dead letter replayed after a fix (crosswalk, config) uses the fix. The
    tenant's credentials are static: a 401 dead-letters the create at once."""

    idempotency_header = None

    def __init__(
        self,
        name: str,
        retailer: str,
        config: KiboConfig,
        store: Callable[[], Store],
        http: Callable[[], HttpClient],
        lifecycle: Callable[[], ReturnsFlows],
    ) -> None:
        limits = DestinationLimits(
            name,
            timeout=config.timeout,
            backoff=config.retry.backoff(),
            default_pause_on_429=config.retry.pause_on_429,
        )
        super().__init__(name, http, limits, credentials=kibo_credentials(config))
        self.retailer = retailer
        self.config = config
        self._store = store
        self._lifecycle = lifecycle
        self.lookup_limits = DestinationLimits(f"{name}.get", timeout=config.timeout)
        self._keeps_ids: bool | None = None
        """Cache of the ``kibo.return_ids`` entity (``None``: not known yet)."""
        self.lines = LineResolver(retailer, config)
        """Line, order and location resolution (:mod:`adapters.kibo.crosswalk`)."""

    def return_id_for(self, effect: Effect) -> int | None:
        """The ``returnID`` every create of ``effect`` carries (``None``: not sent)."""
        if not self.config.client_return_ids:
            return None
        return derive_return_id(effect.idempotency_key, self.config.return_id_bits)

    async def tenant_keeps_return_ids(self) -> bool | None:
        """Whether this retailer's Kibo keeps the ``returnID`` the bridge sends, as the
        answers so far showed (``None``: no answer yet)."""
        if self._keeps_ids is None:
            entity_id = (RETURN_IDS, self.retailer)
            entity = (await self._store().get_entities([entity_id])).get(entity_id)
            if entity is not None:
                self._keeps_ids = bool(entity.data["kept"])
        return self._keeps_ids

    async def render(self, effect: Effect) -> OutboundRequest:
        body = await self._body(effect)
        return OutboundRequest(
            "POST",
            f"{_base(self.config)}/api/v2/return/",
            {"Content-Type": "application/json", "Accept": "application/json"},
            data=dumps(body).encode(),
            json=body,
        )

    async def _body(self, effect: Effect) -> dict[str, Any]:
        payload = effect.payload
        store = self._store()
        rma_id = ("rma", str(payload["rma_key"]))
        stored = (await store.get_entities([rma_id])).get(rma_id)
        if stored is None:
            raise MappingError(f"RMA {payload['rma_key']} is not stored", field="rma")
        rma = Rma.model_validate(stored.data)
        if payload.get("lines"):  # a return for some of the RMA's units (partial outcome)
            rma = select_units(rma, {(o, li): n for o, li, n in payload["lines"]})
        # read without a write; a transaction only when the resolution records something
        resolution = await self.lines.read(store, rma)
        if resolution is None:
            async with store.transaction() as tx:
                resolution = await self.lines.resolve(tx, rma)
        bodies = rma_to_kibo_returns(
            rma,
            order_item_ids=resolution.order_item_ids,
            kibo_order_ids=resolution.kibo_order_ids,
            created_at=rma.updated_at,
            gift_card_type=self.config.gift_card_type,
            return_location=self.lines.return_location(rma),
            # the RMA's return shipping is deducted once: from its first return only
            reduction_cents=rma.return_shipping_cost_cents
            if self.config.deduct_return_shipping and payload.get("part", 1) == 1
            else 0,
            refund_warranty=self.config.refund_warranty,
            currency=self.config.currency,
            currencies=resolution.currencies,
        )
        for body in bodies:
            if body.get("externalOrderID") == payload["external_order_id"]:
                return_id = self.return_id_for(effect)
                return body if return_id is None else {"returnID": return_id, **body}
        raise MappingError(
            f"RMA {rma.id} has no units of order {payload['external_order_id']}", field="items"
        )

    async def deliver(self, effect: Effect) -> Response:
        """Create the return; when an earlier attempt may have created it, settle that
        first (:meth:`_settle_unknown`) and create only when none was."""
        if effect.outcome_unknown:
            settled = await self._settle_unknown(effect)
            if settled is not None:
                return settled
        return await self._create(effect)

    async def _create(self, effect: Effect) -> Response:
        request = await self.build_request(effect)
        try:
            return await self.http.send(
                request, self.limits, self.priority, credentials=self.credentials
            )
        except PermanentDeliveryError as refused:
            return_id = self.return_id_for(effect)
            if (
                return_id is None
                or isinstance(refused, CredentialsRefused)
                or refused.status is None
                or not 400 <= refused.status < 500
            ):
                raise
            # the tenant may refuse an id it holds already: an earlier attempt's return?
            try:
                found = await self.find_created(effect, return_id)
            except RetriableDeliveryError as exc:
                raise _unknown(exc) from exc
            if found is None:
                raise
            log.info(
                "refused create settled by Get Return",
                extra={"effect": effect.idempotency_key, "return_id": return_id},
            )
            return found

    async def _get_return(self, return_id: int) -> Response | None:
        """Get Return; ``None`` when Kibo holds no return with that id (404)."""
        request = OutboundRequest(
            "GET", f"{_base(self.config)}/api/v2/return/{return_id}", {"Accept": "application/json"}
        )
        try:
            return await self.http.send(
                request, self.lookup_limits, self.priority, credentials=self.credentials
            )
        except PermanentDeliveryError as exc:
            if exc.status == 404:
                return None
            raise

    async def find_created(self, effect: Effect, return_id: int) -> Response | None:
        """The return Kibo holds under ``return_id`` when it is this effect's (same order),
        as a create answer; ``None`` when there is none. A return of another order under
        that id is a collision: parked for an operator."""
        found = await self._get_return(return_id)
        if found is None:
            return None
        order_id = effect.payload["external_order_id"]
        # identity only (order, items): the amounts are read when the answer is applied
        ref = return_response_to_ref(found.body, read_amounts=False)
        if ref.external_order_id != order_id:
            raise PermanentDeliveryError(
                f"kibo: return {return_id} (the returnID derived for this create) belongs to"
                f" order {ref.external_order_id!r}, not {order_id!r}: check Kibo for a return"
                " of this order; replay this dead letter with client_return_ids = false only"
                " if there is none",
                destination=self.name,
            )
        with contextlib.suppress(MappingError):
            if not return_matches(await self._body(effect), ref):
                log.warning(
                    "kibo return found by its returnID differs from the create's items",
                    extra={"effect": effect.idempotency_key, "return_id": return_id},
                )
        return Settled(found.status, found.headers, found.body, settled_by="lookup")

    async def _settle_unknown(self, effect: Effect) -> Response | None:
        """An earlier attempt may have created the return: find it, never create twice.
        ``None`` when it is certain that no return was created (send the create again)."""
        order_id = effect.payload["external_order_id"]
        return_id = self.return_id_for(effect)
        keeps = await self.tenant_keeps_return_ids() if return_id is not None else False
        evidence = await self._claim_announced(effect, return_id if keeps is not False else None)
        if evidence is not None:
            return evidence
        if return_id is not None and keeps is not False:
            try:
                found = await self.find_created(effect, return_id)
            except RetriableDeliveryError as exc:
                raise _unknown(exc) from exc
            if found is not None:
                log.info(
                    "lost create answer settled by Get Return",
                    extra={"effect": effect.idempotency_key, "return_id": return_id},
                )
                return found
            if keeps:
                log.info(
                    "lost create not found by Get Return: sending it again",
                    extra={"effect": effect.idempotency_key, "return_id": return_id},
                )
                return None
        return await self._wait_for_evidence(effect, order_id, keeps)

    async def _claim_announced(self, effect: Effect, return_id: int | None) -> Response | None:
        """A ``return_created`` recorded for the effect's order and not claimed yet: the one
        with ``return_id`` when given (the tenant keeps the bridge's ids), else the first --
        unless another create of the same order is pending too, since an announcement that
        names only the order cannot say whose return it is (then: wait, or be parked)."""
        order_id = effect.payload["external_order_id"]
        store = self._store()
        if return_id is None:
            pending = await store.list_effects(EffectState.PENDING, destination=self.name)
            if any(
                e.id != effect.id and e.payload.get("external_order_id") == order_id
                for e in pending
            ):
                return None
        async with store.transaction() as tx:
            announced = await tx.get_entity(CREATED_BY_ORDER, f"{self.retailer}:{order_id}")
            if announced is None:
                return None
            mine = [
                r
                for r in announced.data["returns"]
                if r.get("claimed_by") in (None, effect.idempotency_key)
                and (return_id is None or r["return_id"] == return_id)
            ]
            if not mine:
                return None
            found = mine[0]
            found["claimed_by"] = effect.idempotency_key
            await tx.put_entity(
                CREATED_BY_ORDER, f"{self.retailer}:{order_id}", (0,), announced.data
            )
        log.info(
            "lost create answer settled by an announced return",
            extra={"effect": effect.idempotency_key, "return_id": found["return_id"]},
        )
        body = dumps({"returnID": found["return_id"]}).encode()
        return Settled(200, {}, body, settled_by="notification")

    async def _wait_for_evidence(
        self, effect: Effect, order_id: str, keeps: bool | None
    ) -> Response:
        store = self._store()
        async with store.transaction() as tx:
            since = await tx.get_entity(UNKNOWN_SINCE, effect.idempotency_key)
            now = await store.now()
            if since is None:
                await tx.put_entity(UNKNOWN_SINCE, effect.idempotency_key, (0,), {"since": now})
                first = now
            else:
                first = float(since.data["since"])
        wait = self.config.unknown_outcome_wait
        if now - first < wait:
            # not known yet whether the tenant keeps our ids: the next answer will say, soon
            pause = min(5.0, wait / 10) if keeps is None else min(60.0, wait / 10)
            raise RetriableDeliveryError(
                f"kibo: the outcome of creating the return for order {order_id} is unknown;"
                " waiting for Kibo's return_created notification",
                destination=self.name,
                retry_after=pause,
                outcome_unknown=True,
            )
        raise PermanentDeliveryError(
            f"kibo: the outcome of creating the return for order {order_id} is unknown and"
            " Kibo offers no lookup by order: check Kibo for a return of this order, then"
            " replay this dead letter only if there is none",
            destination=self.name,
        )

    async def on_delivered(
        self, tx: Transaction, effect: Effect, response: Response
    ) -> list[NewEffect]:
        """Record the Kibo return and tell the return-event flow (refund confirmation); learn
        from a create's answer whether the tenant keeps the bridge's ``returnID``."""
        currency = await self.lines.currency(tx, effect.payload["external_order_id"])
        ref = await read_return(tx, self.retailer, response.body, currency)
        sent = self.return_id_for(effect)
        announced = isinstance(response, Settled) and response.settled_by == "notification"
        if sent is not None and not announced:
            await self._remember_kept(tx, ref.return_id == sent, effect)
        await tx.put_entity(
            KIBO_RETURN,
            f"{self.retailer}:{ref.return_id}",
            (0,),
            {
                "rma_key": effect.payload["rma_key"],
                "step": effect.payload["step"],
                "external_order_id": effect.payload["external_order_id"],
                "lines": await self._item_lines(tx, effect),
                "currency": currency,
            },
        )
        await record_announced(
            tx,
            self.retailer,
            effect.payload["external_order_id"],
            ref.return_id,
            claimed_by=effect.idempotency_key,
        )
        flows = self._lifecycle()
        effects = await apply_return_event(
            tx, self.retailer, flows, ref.return_id, ReturnEventKind.CREATED
        )
        if ref.cleared:
            effects += await apply_return_event(
                tx, self.retailer, flows, ref.return_id, ReturnEventKind.CLEARED, ref
            )
        return effects

    async def _item_lines(self, tx: Transaction, effect: Effect) -> dict[str, list[str]]:
        """``orderItemID`` -> ``[order id, order line id]`` of the return ``effect`` created,
        to read Kibo's accepted quantities back per order line."""
        stored = await tx.get_entity("rma", effect.payload["rma_key"])
        if stored is None:
            return {}
        rma = Rma.model_validate(stored.data)
        ids = (await self.lines.resolve(tx, rma)).order_item_ids
        order_id = effect.payload["external_order_id"]
        return {
            str(ids[unit.order_id, unit.order_line_id]): [unit.order_id, unit.order_line_id]
            for unit in rma.units
            if (unit.original_order_id or unit.order_id) == order_id
            and (unit.order_id, unit.order_line_id) in ids
        }

    async def _remember_kept(self, tx: Transaction, kept: bool, effect: Effect) -> None:
        entity = await tx.get_entity(RETURN_IDS, self.retailer)
        if entity is None or bool(entity.data["kept"]) != kept:
            await tx.put_entity(
                RETURN_IDS,
                self.retailer,
                (0,),
                {"kept": kept, "learnt_from": effect.idempotency_key},
            )
            log.log(
                logging.INFO if kept else logging.WARNING,
                "kibo tenant keeps the bridge's returnID"
                if kept
                else "kibo tenant assigns its own returnID: lost create answers wait for evidence",
                extra={"retailer": self.retailer, "effect": effect.idempotency_key},
            )
        self._keeps_ids = kept


async def return_currency(
    tx: Transaction, retailer: str, return_id: int, config: KiboConfig
) -> str:
    """The currency Kibo return ``return_id``'s amounts are in: recorded when the bridge
    created it, else its order's (:meth:`LineResolver.currency`), else ``config.currency``."""
    kept = await tx.get_entity(KIBO_RETURN, f"{retailer}:{return_id}")
    if kept is not None and kept.data.get("currency"):
        return str(kept.data["currency"])
    if kept is not None and kept.data.get("external_order_id"):
        order_id = str(kept.data["external_order_id"])
        return await LineResolver(retailer, config).currency(tx, order_id)
    return config.currency


async def read_return(tx: Transaction, retailer: str, body: Body, currency: str) -> KiboReturnRef:
    """Kibo's return as read in ``currency``; when its amounts cannot be (finer than the
    currency's minor unit) the return is flagged naming the field and read without them: the
    units Kibo accepted still count, its refunded amount is unknown. Anything else unreadable
    is a ``MappingError``."""
    try:
        return return_response_to_ref(body, currency=currency)
    except MappingError as exc:
        ref = return_response_to_ref(body, currency=currency, read_amounts=False)
        await flag_unreadable(tx, retailer, ref.return_id, exc)
        return ref


async def flag_unreadable(
    tx: Transaction, retailer: str, return_id: int, exc: MappingError
) -> None:
    """Kibo's answer for ``return_id`` cannot be read (e.g. an amount finer than the
    currency's minor unit): logged and flagged for an operator, naming the field."""
    reason = f"{exc.field}: {exc}" if exc.field and exc.field not in str(exc) else str(exc)
    log.warning(
        "kibo return not read back",
        extra={"retailer": retailer, "return_id": return_id, "reason": reason},
    )
    await tx.add_flag(
        retailer, KIBO_RETURN, f"{retailer}:{return_id}", f"Kibo return not read: {reason}"
    )


def _unknown(exc: RetriableDeliveryError) -> RetriableDeliveryError:
    """``exc`` as a failure that leaves the create's outcome unknown (a lookup that failed
    settles nothing: the next attempt must look again, not create)."""
    return RetriableDeliveryError(
        f"kibo: the outcome of a create is still unknown (its lookup failed: {exc})",
        status=exc.status,
        destination=exc.destination,
        retry_after=exc.retry_after,
        outcome_unknown=True,
    )


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
    key = f"{retailer}:{return_id}"
    if open_:
        await tx.put_entity(OPEN_RETURN, key, (0,), {"return_id": return_id})
    else:
        await tx.delete_entity(OPEN_RETURN, key)


def return_event_kind(kind: str) -> ReturnEventKind | None:
    """The flow's kind for a Kibo event kind (``None``: not one the flow knows)."""
    try:
        return ReturnEventKind(kind)
    except ValueError:
        return None


async def apply_return_event(
    tx: Transaction,
    retailer: str,
    flows: ReturnsFlows,
    return_id: int,
    kind: ReturnEventKind,
    ref: KiboReturnRef | None = None,
) -> list[NewEffect]:
    """Kibo says ``return_id`` moved: the RMA flow moves the return of the RMA it belongs
    to, and the open-return set follows. Returns of other systems (unknown ids) are ignored.
    ``ref``: Kibo's return as Get Return (or the create) answered it; when it says what was
    accepted and refunded, the refund confirmed on ``cleared`` follows it."""
    entity = await tx.get_entity(KIBO_RETURN, f"{retailer}:{return_id}")
    if entity is None:
        return []
    step = entity.data.get("step")
    outcome = await flows.return_events.apply(
        tx,
        entity.data["rma_key"],
        ReturnEvent(
            kind,
            str(return_id),
            Step(step) if step else None,
            settled=_settlement(ref, entity.data.get("lines") or {}),
        ),
    )
    if outcome.changed:
        await _set_open(tx, retailer, return_id, open_=outcome.open)
    return outcome.effects


def _settlement(ref: KiboReturnRef | None, lines: dict[str, list[str]]) -> Settlement | None:
    """Kibo's accepted units per order line and refunded amount (``None``: not said, or an
    item the bridge cannot place on a line)."""
    if ref is None or ref.accepted is None or not lines:
        return None
    accepted: dict[tuple[str, str], int] = {}
    for item_id, units in ref.accepted:
        line = lines.get(str(item_id))
        if line is None:
            return None
        key = (line[0], line[1])
        accepted[key] = accepted.get(key, 0) + units
    return Settlement(accepted, ref.refunded_cents)


def get_return_request(config: KiboConfig, return_id: int) -> OutboundRequest:
    """Kibo's Get Return of ``return_id``."""
    return OutboundRequest(
        "GET",
        f"{_base(config)}/api/v2/return/{return_id}",
        {**kibo_headers(config), "Accept": "application/json"},
    )


READ_KIND = "kibo.return.get"


def settle_effect(retailer: str, destination: str, return_id: int, inbox_id: int) -> NewEffect:
    """The Get Return that settles a ``return_cleared`` notification (inbox item
    ``inbox_id``): the notification says refunds were processed, Get Return says which."""
    return NewEffect(
        idempotency_key=f"{READ_KIND}:{retailer}:{return_id}:{inbox_id}",
        destination=destination,
        kind=READ_KIND,
        payload={"return_id": return_id},
        retailer=retailer,
        source_inbox_id=inbox_id,
    )


class KiboReturnRead(ReadDestination):
    """A read: Get Return (outside any transaction) after Kibo notified ``return_cleared``,
    then the cleared event applied with what Kibo accepted and refunded. A 404 or an
    answer that says nothing item by item applies the notification's word alone."""

    def __init__(
        self,
        name: str,
        retailer: str,
        config: KiboConfig,
        http: Callable[[], HttpClient],
        store: Callable[[], Store],
        lifecycle: Callable[[], ReturnsFlows],
    ) -> None:
        self.name = name
        self.retailer = retailer
        self.config = config
        self._http = http
        self._store = store
        self._lifecycle = lifecycle
        self.limits = DestinationLimits(name, timeout=config.timeout)

    async def build_request(self, effect: Effect) -> OutboundRequest:
        return get_return_request(self.config, int(effect.payload["return_id"]))

    async def fetch(self, effect: Effect) -> Fetched:
        started = await self._store().now()
        try:
            response = await self._http().call(
                await self.build_request(effect), self.limits, attempts=2
            )
        except PermanentDeliveryError as exc:
            if exc.status != 404:
                raise
            return Absent(started)
        return Found(response.body, started)

    async def apply(
        self, tx: Transaction, effect: Effect, fetched: Found | Absent
    ) -> list[NewEffect]:
        ref: KiboReturnRef | None = None
        return_id = int(effect.payload["return_id"])
        if isinstance(fetched, Found):
            currency = await return_currency(tx, self.retailer, return_id, self.config)
            try:
                ref = await read_return(tx, self.retailer, fetched.body, currency)
            except MappingError as exc:  # Kibo's answer unreadable: the notification stands
                await flag_unreadable(tx, self.retailer, return_id, exc)
        return await apply_return_event(
            tx,
            self.retailer,
            self._lifecycle(),
            return_id,
            ReturnEventKind.CLEARED,
            ref if ref is not None and ref.cleared else None,
        )


def reconciler_key(retailer: str) -> SharedKey[KiboReconciler]:
    """The retailer's :class:`KiboReconciler` (for operators and tests)."""
    return SharedKey(f"kibo.reconciler:{retailer}")


class KiboReconciler:
    """Reads returns created but not yet cleared or rejected (Get Return), because
    notifications can be lost; feeds what it learns to the return-event flow like a
    notification.

    It runs every ``reconcile_every`` seconds, so notifications Kibo sent while the daemon
    was down are caught up with. It also looks up, by their derived ``returnID``, the
    creates whose outcome is unknown (:meth:`find_unknown_creates`, also run once at start:
    the ``return_created`` that went to a daemon that was down): a return found is recorded
    as that evidence, which settles the create at its next attempt."""

    def __init__(
        self,
        runtime: AdapterContext,
        retailer: str,
        config: KiboConfig,
        destination: KiboReturnDestination | None = None,
    ) -> None:
        self.runtime = runtime
        self.retailer = retailer
        self.config = config
        self.destination = destination
        """The retailer's create destination (its lookup and derived ids)."""
        self.limits = DestinationLimits(f"kibo.get:{retailer}", timeout=config.timeout)
        self.checked = 0

    async def run_once(self) -> int:
        """Check every open return once, then the creates waiting for evidence; returns
        how many returns changed or were found."""
        changed = await self._check_open_returns()
        return changed + await self.find_unknown_creates()

    async def find_unknown_creates(self) -> int:
        """Get Return on the derived id of each pending create of unknown outcome; a return
        found is recorded as Kibo's announcement of it. Returns how many were found."""
        destination = self.destination
        if destination is None or await destination.tenant_keeps_return_ids() is False:
            return 0
        found = 0
        store = self.runtime.store
        for effect in await store.list_effects(EffectState.PENDING, destination.name):
            return_id = destination.return_id_for(effect)
            # not leased now: its field is its last attempt's outcome
            if return_id is None or not effect.outcome_unknown:
                continue
            try:
                answer = await destination.find_created(effect, return_id)
            except (RetriableDeliveryError, PermanentDeliveryError, MappingError) as exc:
                log.warning(
                    "kibo create not reconciled",
                    extra={"effect": effect.idempotency_key, "reason": str(exc)},
                )
                continue
            if answer is None:
                continue
            async with store.transaction() as tx:
                await record_announced(
                    tx, self.retailer, effect.payload["external_order_id"], return_id, None
                )
            log.info(
                "create of unknown outcome found by Get Return reconciliation",
                extra={"effect": effect.idempotency_key, "return_id": return_id},
            )
            found += 1
        if found:
            self.runtime.engine.wake_dispatcher()
        return found

    async def _check_open_returns(self) -> int:
        store = self.runtime.store
        if await store.get_entities([(OPEN_RETURNS, self.retailer)]):  # written before 0005
            async with store.transaction() as tx:
                legacy = await tx.get_entity(OPEN_RETURNS, self.retailer)
                for legacy_id in legacy.data["ids"] if legacy else ():
                    await _set_open(tx, self.retailer, int(legacy_id), open_=True)
                await tx.delete_entity(OPEN_RETURNS, self.retailer)
        prefix = f"{self.retailer}:"
        open_ids = [
            int(key[len(prefix) :]) async for key in each_entity_key(store, OPEN_RETURN, prefix)
        ]
        changed = 0
        for return_id in open_ids:
            request = get_return_request(self.config, return_id)
            try:
                response = await self.runtime.http.call(request, self.limits, attempts=2)
                async with store.transaction() as tx:
                    currency = await return_currency(tx, self.retailer, return_id, self.config)
                    ref = await read_return(tx, self.retailer, response.body, currency)
            except (RetriableDeliveryError, PermanentDeliveryError, MappingError) as exc:
                log.warning(
                    "kibo return not reconciled",
                    extra={"retailer": self.retailer, "return_id": return_id, "reason": str(exc)},
                )
                continue
            self.checked += 1
            if ref.rejected:
                kind = ReturnEventKind.REJECTED
            elif ref.cleared:
                kind = ReturnEventKind.CLEARED
            else:
                continue
            flows: ReturnsFlows = self.runtime.service(self.retailer, RMA_LIFECYCLE)
            async with store.transaction() as tx:
                effects = await apply_return_event(tx, self.retailer, flows, return_id, kind, ref)
                for effect in effects:
                    await tx.add_effect(effect)
            self.runtime.engine.wake_dispatcher()
            changed += 1
        return changed
