"""Calls to Optoro: OAuth client credentials and Returns Portal Orders.

Duplicates: ``POST /returns_portal_orders`` is an upsert keyed by the order
``identifier`` (Optoro keeps the latest snapshot), so a batch re-sent after an unknown
outcome changes nothing; refunds inside it are deduplicated by Optoro on their unique
``identifier``. Optoro has no idempotency header, and none is sent.
Rate limiting: Optoro answers a bare 429 without headers; the destination's limiter then
pauses for the destination's next backoff delay (``[retailers.<id>.optoro.retry]``,
growing with consecutive bare 429s) and the effect is retried with that backoff.
Credentials: the bearer token is attached after the governor admits the request
(:class:`OptoroAuth` is the destination's :class:`~bridge.http.Credentials`); a 401 drops
the token once however many requests saw it refused, and the request goes again.
Hosts: the token server (``auth_url``, Optoro's ``auth.optiturn.com``) and the orders API
(``base_url``, the guide's ``orders.{{url}}``) are configured apart; see
:meth:`OptoroConfig.token_base` for the default.
Snapshots: every order snapshot queued gets the next number of a per-order sequence (kept
with the snapshot's hash in entity ``optoro.rpo.snapshot``), and an effect's idempotency
key names its first order and that number (``optoro.rpo:<retailer>:<order>@<seq>``), so a
key is never reused: an order that goes v1 -> v2 -> v1 queues three effects and Optoro ends
with v1. The effects ``must_queue`` (a taken key fails the transaction, never drops a
change silently).
Lanes: orders are spread over ``RPO_LANES`` ordering lanes; a batch waiting for its retry
holds its lane (one order's snapshots must not overtake each other), for at most the
backoff cap while Optoro is down, and only seconds after Optoro answers again: the first
success after an outage makes every waiting batch due (``Store.expedite``).
Split: a batch Optoro refuses (4xx, at once) or that keeps failing (5xx or no answer,
``ISOLATE_AFTER`` attempts) is sent order by order. The orders Optoro takes are delivered;
each order refused alone leaves the lane: its snapshot is queued again on its own, in a
lane of that order only (``<destination>:order:<id>``, where its later snapshots follow
it), and the batch is done, so the lane goes on. There the order alone is retried or
dead-lettered naming it (an operator replays it after the fix), holding back nothing but
itself. A refused order whose newer snapshot is already queued is not queued again (the
newer one is sent); likewise every delivery (a replayed dead letter included) leaves out
the orders whose newer snapshot is queued or sent, so an old version never overwrites a
newer one at Optoro. Two orders failing transiently before any is taken look like Optoro
being down: the batch is retried as a whole; a bare 429 is retried as a whole too.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import SecretStr

from adapters.optoro.config import OptoroConfig
from bridge.domain import Order
from bridge.engine import HttpDestination
from bridge.errors import (
    CredentialsRefused,
    MappingError,
    NotReady,
    PermanentDeliveryError,
    RetriableDeliveryError,
)
from bridge.http import (
    Authorized,
    DestinationLimits,
    HttpClient,
    OutboundRequest,
    Response,
    with_headers,
)
from bridge.logs import register_secret
from bridge.store import Effect, NewEffect, Store, Transaction, canonical_json
from bridge.tokens import Token, TokenCache
from mappings.optoro import order_to_rpo

log = logging.getLogger(__name__)

RPO_KIND = "optoro.rpo.upsert"
SNAPSHOT = "optoro.rpo.snapshot"
"""Entity of an order's last queued snapshot: ``{"hash", "seq", "alone"?}``."""
RPO_LANES = 8
ISOLATE_AFTER = 3
"""Failed attempts (5xx or no answer) after which a batch is sent order by order, to find
the order Optoro cannot take (a 4xx splits it at once)."""


def _base(config: OptoroConfig) -> str:
    return str(config.base_url).rstrip("/")


class OptoroAuth:
    """Client-credentials tokens for one Optoro account, cached until near expiry; the
    :class:`~bridge.http.Credentials` of the Returns Portal Orders destination: a refused
    token is refreshed (fetched again) once."""

    refreshable = True

    def __init__(self, config: OptoroConfig, http: Callable[[], HttpClient]) -> None:
        self.config = config
        self._http = http
        self.limits = DestinationLimits("optoro.oauth", timeout=config.timeout)
        self.cache = TokenCache(self._fetch)

    async def _fetch(self) -> Token:
        request = OutboundRequest(
            "POST",
            f"{self.config.token_base()}/oauth/token",
            {"Content-Type": "application/json", "Accept": "application/json"},
            json={
                "grant_type": "client_credentials",
                "client_id": self.config.client_id,
                "client_secret": self.config.client_secret.get_secret_value(),
            },
            credentials_exchange=True,
        )
        try:
            response = await self._http().call(request, self.limits, attempts=3)
        except CredentialsRefused as exc:
            raise CredentialsRefused(
                "credentials refused (401) by optoro: POST /oauth/token refused the client"
                " credentials: fix client_id/client_secret, then replay the dead letter",
                status=401,
                destination=self.limits.name,
            ) from exc
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            raise PermanentDeliveryError("optoro: POST /oauth/token answered without access_token")
        expires_in = body.get("expires_in")
        register_secret(body["access_token"])
        return Token(
            SecretStr(body["access_token"]),
            float(expires_in) if isinstance(expires_in, int | float) else None,
        )

    async def ready(self) -> None:
        """Nothing to wait for: a refused token is dropped at once, the next caller fetches."""

    async def authorize(self, request: OutboundRequest) -> Authorized:
        token = await self.cache.get()
        bearer = {"Authorization": f"Bearer {token.get_secret_value()}"}
        return Authorized(with_headers(request, bearer), token)

    async def refused(self, credential: SecretStr) -> None:
        self.cache.invalidate(credential)


@dataclass(frozen=True)
class Snapshot:
    """One order's wire snapshot with its number in the order's sequence."""

    order_id: str
    seq: int
    wire: dict[str, Any]


def snapshot_key(retailer: str, order_id: str) -> str:
    return f"{retailer}:{order_id}"


def order_lane(destination: str, order_id: str) -> str:
    """The lane of an order that left its shared lane (refused alone once)."""
    return f"{destination}:order:{order_id}"


def shared_lane(destination: str, order_id: str) -> str:
    return f"{destination}:lane{zlib.crc32(order_id.encode()) % RPO_LANES}"


def rpo_effect(
    retailer: str, destination: str, lane: str, snapshots: Sequence[Snapshot], suffix: str = ""
) -> NewEffect:
    """The upsert effect of ``snapshots`` (one batch), keyed by its first order and that
    order's sequence number: no two effects ever share it."""
    first = snapshots[0]
    rest = f"+{len(snapshots) - 1}" if len(snapshots) > 1 else ""
    return NewEffect(
        idempotency_key=f"optoro.rpo:{retailer}:{first.order_id}@{first.seq}{rest}{suffix}",
        destination=destination,
        kind=RPO_KIND,
        payload={
            "orders": [s.wire for s in snapshots],
            "snapshots": [[s.order_id, s.seq] for s in snapshots],
        },
        order_key=lane,
        retailer=retailer,
        must_queue=True,
    )


def snapshots_of(effect: Effect) -> list[Snapshot]:
    """The snapshots an RPO effect carries (an effect queued before sequences: seq 0)."""
    orders = effect.payload["orders"]
    pairs = effect.payload.get("snapshots") or [[str(o.get("identifier")), 0] for o in orders]
    return [
        Snapshot(str(pair[0]), int(pair[1]), wire) for pair, wire in zip(pairs, orders, strict=True)
    ]


class RpoDestination(HttpDestination):
    """Delivers ``optoro.rpo.upsert`` effects: one Returns Portal Orders batch each, split
    order by order when Optoro refuses it or keeps failing (see the module docstring)."""

    idempotency_header = None

    def __init__(
        self,
        name: str,
        config: OptoroConfig,
        auth: OptoroAuth,
        http: Callable[[], HttpClient],
        store: Callable[[], Store] | None = None,
    ) -> None:
        self.config = config
        self.auth = auth
        self._store = store
        self._refused: dict[int, list[Snapshot]] = {}
        super().__init__(
            name,
            http,
            DestinationLimits(
                name,
                timeout=config.timeout,
                backoff=config.retry.backoff(),
                default_pause_on_429=config.retry.pause_on_429,
            ),
            credentials=auth,
        )

    async def render(self, effect: Effect) -> OutboundRequest:
        """The request without credentials (attached when the governor admits it)."""
        return OutboundRequest(
            "POST",
            f"{_base(self.config)}/returns_portal_orders",
            {
                "Api-Version": str(self.config.api_version),
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            json={"returns_portal_order": {"orders": effect.payload["orders"]}},
        )

    async def deliver(self, effect: Effect) -> Response:
        """Send the batch's current snapshots (a 401 is handled by the client: one refresh,
        one resend); a batch refused, or failing ``ISOLATE_AFTER`` times, is sent order by
        order."""
        self._refused.pop(effect.id, None)  # what an earlier, unrecorded attempt left
        current = await self._current(effect)
        if not current:
            log.info(
                "optoro snapshots superseded: nothing to send",
                extra={"effect_id": effect.id, "destination": self.name},
            )
            return Response(200, {}, b"")
        if len(current) < len(effect.payload["orders"]):
            effect = replace(
                effect,
                payload={
                    "orders": [s.wire for s in current],
                    "snapshots": [[s.order_id, s.seq] for s in current],
                },
            )
        several = len(current) > 1
        try:
            return await super().deliver(effect)
        except CredentialsRefused:
            raise
        except NotReady:
            raise
        except RetriableDeliveryError as exc:
            if not several or exc.status == 429 or effect.attempts < ISOLATE_AFTER:
                raise
            return await self._isolate(effect, exc)
        except PermanentDeliveryError as exc:
            if not several:
                raise
            return await self._isolate(effect, exc)

    async def _current(self, effect: Effect) -> list[Snapshot]:
        """The effect's snapshots that no newer snapshot of their order has followed (a
        replayed dead letter, or one retried for days, never overwrites a newer version at
        Optoro; the newer one is queued, or was sent)."""
        snapshots = snapshots_of(effect)
        if self._store is None or not effect.retailer:
            return snapshots
        latest: dict[str, int] = {}
        retailer = effect.retailer
        async with self._store().transaction() as tx:
            for snapshot in snapshots:
                kept = await tx.get_entity(SNAPSHOT, snapshot_key(retailer, snapshot.order_id))
                data = kept.data if kept is not None and isinstance(kept.data, dict) else {}
                latest[snapshot.order_id] = int(data.get("seq", 0))
        return [s for s in snapshots if s.seq == 0 or s.seq >= latest[s.order_id]]

    async def _isolate(self, effect: Effect, failure: Exception) -> Response:
        """Orders one by one; the refused ones are remembered for :meth:`on_delivered`. Two
        failing transiently before any is taken looks like Optoro being down: retry the
        batch (at most two extra calls to a failing Optoro)."""
        taken: Response | None = None
        refused: list[Snapshot] = []
        transient = 0
        for snapshot in snapshots_of(effect):
            alone = replace(effect, payload={"orders": [snapshot.wire]})
            try:
                taken = await super().deliver(alone)
                continue
            except CredentialsRefused:
                raise
            except RetriableDeliveryError as exc:
                if exc.status == 429 or isinstance(exc, NotReady):
                    raise  # rate limited: nothing learnt, the batch is retried
                transient += 1
                if taken is None and transient >= 2:
                    raise
                refused.append(snapshot)
            except PermanentDeliveryError:
                refused.append(snapshot)
        log.warning(
            "optoro refuses orders of a batch: each goes on alone in a lane of its own",
            extra={
                "effect_id": effect.id,
                "orders": [s.order_id for s in refused],
                "reason": str(failure)[:300],
            },
        )
        self._refused[effect.id] = refused
        return taken or Response(200, {}, b"")

    async def on_delivered(
        self, tx: Transaction, effect: Effect, response: Response
    ) -> list[NewEffect]:
        """Each order refused alone in a split, unless a newer snapshot of it is queued:
        queued again on its own lane (where its later snapshots will follow it)."""
        refused = self._refused.pop(effect.id, [])
        retailer = effect.retailer or ""
        effects = []
        for snapshot in refused:
            key = snapshot_key(retailer, snapshot.order_id)
            await tx.lock_entity(SNAPSHOT, key)
            kept = await tx.get_entity(SNAPSHOT, key)
            data = dict(kept.data) if kept is not None and isinstance(kept.data, dict) else {}
            if int(data.get("seq", 0)) > snapshot.seq:
                continue
            await tx.put_entity(SNAPSHOT, key, (snapshot.seq,), {**data, "alone": True})
            lane = order_lane(self.name, snapshot.order_id)
            effects.append(rpo_effect(retailer, self.name, lane, [snapshot], ":alone"))
        return effects


class RpoPublisher:
    """The ``order_publisher`` capability: changed orders become RPO upsert effects.

    An order is queued only when its wire snapshot differs from the last one queued (the
    hash is kept in entity ``optoro.rpo.snapshot`` with the snapshot's sequence number,
    written in the caller's transaction, so "queued" and "will be delivered" are the same
    fact). Orders are spread over ``RPO_LANES`` ordering lanes by identifier: one order's
    snapshots go out in order, different orders in parallel; each effect carries at most
    ``batch_size`` orders. An order once refused alone by Optoro keeps a lane of its own.
    An order that cannot be mapped is flagged for an operator and left out. Every order is
    sent whatever its status, a canceled order with nothing shipped included (the guide's
    full cancellation: status canceled, ``quantity_shipped`` 0).
    """

    def __init__(self, retailer: str, destination: str, config: OptoroConfig) -> None:
        self.retailer = retailer
        self.destination = destination
        self.config = config

    async def publish(self, tx: Transaction, orders: Sequence[Order]) -> list[NewEffect]:
        lanes: dict[str, list[Snapshot]] = {}
        alone: set[str] = set()
        for order in orders:
            try:
                wire = order_to_rpo(
                    order,
                    size_dimensions=self.config.size_dimensions,
                    name_from_email=self.config.address_name_from_email,
                )
            except MappingError as exc:
                reason = f"not sent to Optoro: {exc.field or 'order'}: {exc}"
                await tx.add_flag(self.retailer, "order", order.id, reason[:500])
                log.warning(
                    "order not publishable",
                    extra={"retailer": self.retailer, "order_id": order.id, "reason": reason},
                )
                continue
            digest = hashlib.sha256(canonical_json(wire).encode()).hexdigest()
            key = snapshot_key(self.retailer, order.id)
            await tx.lock_entity(SNAPSHOT, key)
            previous = await tx.get_entity(SNAPSHOT, key)
            data = dict(previous.data) if previous is not None else {}
            if data.get("hash") == digest:
                continue
            seq = int(data.get("seq", 0)) + 1
            await tx.put_entity(SNAPSHOT, key, (seq,), {**data, "hash": digest, "seq": seq})
            if data.get("alone"):
                lane = order_lane(self.destination, order.id)
                alone.add(lane)
            else:
                lane = shared_lane(self.destination, order.id)
            lanes.setdefault(lane, []).append(Snapshot(order.id, seq, wire))
        effects = []
        for lane, snapshots in sorted(lanes.items()):
            size = 1 if lane in alone else self.config.batch_size
            for start in range(0, len(snapshots), size):
                batch = snapshots[start : start + size]
                effects.append(rpo_effect(self.retailer, self.destination, lane, batch))
        return effects
