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
Lanes: orders are spread over ``RPO_LANES`` ordering lanes; a batch waiting for its retry
holds its lane (one order's snapshots must not overtake each other), for at most the
backoff cap while Optoro is down, and only seconds after Optoro answers again: the first
success after an outage makes every waiting batch due (``Store.expedite``). A batch that
keeps failing (5xx ``ISOLATE_AFTER`` times) is sent order by order: the orders Optoro takes
are delivered (an upsert: sending them again is harmless), and when some order alone is
refused while others pass, the batch is dead-lettered naming it, so the orders behind it
in the lane go on (an operator replays it after the fix). Two orders refused before any
is taken look like Optoro being down: the batch is retried as a whole. A one-order batch
cannot be told apart from an outage of Optoro and keeps retrying with backoff.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from pydantic import SecretStr

from adapters.optoro.config import OptoroConfig
from bridge.domain import Order
from bridge.engine import HttpDestination
from bridge.errors import (
    CredentialsRefused,
    MappingError,
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
from bridge.store import Effect, NewEffect, Transaction, canonical_json
from bridge.tokens import Token, TokenCache
from mappings.optoro import order_to_rpo

log = logging.getLogger(__name__)

RPO_KIND = "optoro.rpo.upsert"
RPO_LANES = 8
ISOLATE_AFTER = 3
"""Failed attempts (5xx) after which a batch is sent order by order, to find the order
Optoro cannot take."""


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
            f"{_base(self.config)}/oauth/token",
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


class RpoDestination(HttpDestination):
    """Delivers ``optoro.rpo.upsert`` effects: one Returns Portal Orders batch each."""

    idempotency_header = None

    def __init__(
        self, name: str, config: OptoroConfig, auth: OptoroAuth, http: Callable[[], HttpClient]
    ) -> None:
        self.config = config
        self.auth = auth
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
        """Send the batch (a 401 is handled by the client: one refresh, one resend); one
        that keeps failing with 5xx is sent order by order."""
        try:
            return await super().deliver(effect)
        except RetriableDeliveryError as exc:
            if not (
                (exc.status or 0) >= 500
                and effect.attempts >= ISOLATE_AFTER
                and len(effect.payload["orders"]) > 1
            ):
                raise
            return await self._isolate(effect, exc)

    async def _isolate(self, effect: Effect, failure: RetriableDeliveryError) -> Response:
        """Orders one by one. Two refused before any is taken looks like Optoro being down:
        stop there (at most two extra calls to a failing Optoro) and retry the batch."""
        orders = effect.payload["orders"]
        refused: list[str] = []
        answer: Response | None = None
        for order in orders:
            try:
                answer = await super().deliver(replace(effect, payload={"orders": [order]}))
            except RetriableDeliveryError as exc:
                if (exc.status or 0) < 500:
                    raise failure from exc  # rate limited or no answer: nothing learnt
                refused.append(str(order.get("identifier")))
            except CredentialsRefused:
                raise
            except PermanentDeliveryError:
                refused.append(str(order.get("identifier")))
            if answer is None and len(refused) >= 2:
                raise failure
        if answer is None:
            raise failure
        if not refused:
            return answer
        log.warning(
            "optoro refuses orders of a batch",
            extra={"effect_id": effect.id, "orders": refused, "status": failure.status},
        )
        raise PermanentDeliveryError(
            f"optoro: POST /returns_portal_orders answered {failure.status} for order(s)"
            f" {', '.join(refused)} sent alone, while it took the other"
            f" {len(orders) - len(refused)} of the batch: dead-lettered so the lane goes on"
            " (the others are delivered; a replay sends the batch again, an upsert)",
            status=failure.status,
            destination=self.name,
            body=failure.body,
        )


class RpoPublisher:
    """The ``order_publisher`` capability: changed orders become RPO upsert effects.

    An order is queued only when its wire snapshot differs from the last one queued (the
    hash is kept in entity ``optoro.rpo.snapshot``, written in the caller's transaction,
    so "queued" and "will be delivered" are the same fact). Orders are spread over
    ``RPO_LANES`` ordering lanes by identifier: one order's snapshots go out in order,
    different orders in parallel; each effect carries at most ``batch_size`` orders.
    An order that cannot be mapped is flagged for an operator and left out.
    """

    def __init__(self, retailer: str, destination: str, config: OptoroConfig) -> None:
        self.retailer = retailer
        self.destination = destination
        self.config = config

    async def publish(self, tx: Transaction, orders: Sequence[Order]) -> list[NewEffect]:
        lanes: dict[int, list[dict[str, Any]]] = {}
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
            key = f"{self.retailer}:{order.id}"
            previous = await tx.get_entity("optoro.rpo.snapshot", key)
            if previous is not None and previous.data.get("hash") == digest:
                continue
            await tx.put_entity("optoro.rpo.snapshot", key, (digest,), {"hash": digest})
            lanes.setdefault(zlib.crc32(order.id.encode()) % RPO_LANES, []).append(wire)
        effects = []
        size = self.config.batch_size
        for lane, wires in sorted(lanes.items()):
            for start in range(0, len(wires), size):
                batch = wires[start : start + size]
                digest = hashlib.sha256(canonical_json(batch).encode()).hexdigest()[:32]
                effects.append(
                    NewEffect(
                        idempotency_key=f"optoro.rpo:{self.retailer}:{digest}",
                        destination=self.destination,
                        kind=RPO_KIND,
                        payload={"orders": batch},
                        order_key=f"{self.destination}:lane{lane}",
                        retailer=self.retailer,
                    )
                )
        return effects
