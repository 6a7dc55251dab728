"""Optoro's calls to the bridge, per retailer, under ``/retailers/<id>/optoro/``.

* ``POST rmas`` — the RMA webhook. Authenticated (HTTP Basic or an API-key header, as the
  retailer agreed with Optoro; 401 and nothing stored otherwise), stored durably, then
  answered 200. A message the bridge can never accept is quarantined with the reason and
  answered ``invalid_message_status`` (200 by default: Optoro retries anything else for
  32 h and asks receivers not to answer 400/422). ``X-Optiturn-Id`` is checked when
  present (the guide's samples send none; see :meth:`OptoroInbound.optiturn_problem`).
* ``GET sku/{variant_identifier}/variants`` (also ``.../exchange_variants``) — exchange
  options from the retailer's catalog, cached (single flight; stale answers served while
  the catalog fails).
* ``POST exchange_orders`` (alias ``orders``) — one exchange order per
  ``original_order_id``, ever: repeats and concurrent duplicates get the stored answer;
  so does another body for a used ``original_order_id`` (the description: "The endpoint
  should be idempotent, using original_order_id as the key. Only one exchange order can be
  placed against an original_order_id", and it documents no answer but 200): the order is
  flagged for the operator, naming that body's hash. An unavailable order system is
  a 503 with ``Retry-After`` and nothing recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from aiohttp import web

from adapters.optoro.config import OptoroConfig
from bridge.cache import SingleFlightCache
from bridge.domain import Variant
from bridge.engine import HandlerContext, Outcome
from bridge.errors import DeliveryError, MappingError, RetriableDeliveryError, StoreError
from bridge.flows import ReturnsFlows
from bridge.inbound import (
    REPLAY_AFTER_FIX,
    authenticated,
    challenge_of,
    header_text,
    json_error,
    quarantine,
    read_body,
    receive,
    refusal,
    secret_headers_of,
    unauthorized,
)
from bridge.jsonsafe import check_text
from bridge.openapi import security_of
from bridge.ports import CATALOG, EXCHANGE_ORDER_SINK, RMA_LIFECYCLE, AdapterContext, SharedKey
from bridge.store import ClaimState, InboxItem, Transaction, canonical_json
from mappings.optoro import (
    ExchangeOrderHeaders,
    ExchangeOrderIn,
    OptiturnHeaders,
    RmaIn,
    VariantsPath,
    exchange_result_to_wire,
    parse_exchange_order,
    parse_rma,
    variants_response,
)

log = logging.getLogger(__name__)

RMA_KIND = "optoro.rmas"
EXCHANGE_KIND = "optoro.exchange_orders"
OPTITURN_ID = "X-Optiturn-Id"
OPTITURN_VERSION = "X-Optiturn-Api-Version"
EXCHANGE_VERSIONS = (1, 2)
VARIANT_IDENTIFIER = r"[^/]+"
"""Any path segment (aiohttp's default refuses ``{`` and ``}``, which a SKU may hold; an encoded
``/`` arrives as ``%2F`` and is part of the identifier)."""


def inbound_key(retailer: str) -> SharedKey[OptoroInbound]:
    """The retailer's :class:`OptoroInbound` (for operators, benches and tests)."""
    return SharedKey(f"optoro.inbound:{retailer}")


class OptoroInbound:
    """The inbound endpoints and the RMA inbox handler of one retailer."""

    def __init__(self, runtime: AdapterContext, retailer: str, config: OptoroConfig) -> None:
        self.runtime = runtime
        self.retailer = retailer
        self.config = config
        self.variants_cache: SingleFlightCache[list[Variant]] = SingleFlightCache(
            ttl=config.variants_cache_ttl, stale_ttl=config.variants_stale_ttl
        )
        self.secret_headers = secret_headers_of(config.inbound_auth)

    def routes(self) -> None:
        add = self.runtime.add_route
        security = security_of(self.config.inbound_auth)
        add(
            self.retailer,
            "optoro",
            "POST",
            "rmas",
            self.rmas,
            inbox=True,
            summary="RMA webhook: stored, then applied; an invalid message is quarantined",
            body=RmaIn,
            headers=OptiturnHeaders,
            security=security,
            responses={
                503: "X-Optiturn-Id is not this retailer's (quarantined, flagged; the status"
                " is optiturn_mismatch_status)"
            },
        )
        for alias in ("variants", "exchange_variants"):
            add(
                self.retailer,
                "optoro",
                "GET",
                f"sku/{{variant_identifier:{VARIANT_IDENTIFIER}}}/{alias}",
                self.variants,
                summary="Exchange Variants: the retailer's exchange options for a variant",
                headers=OptiturnHeaders,
                path_params=VariantsPath,
                security=security,
                responses={403: "X-Optiturn-Id is not this retailer's"},
            )
        for alias in ("exchange_orders", "orders"):
            add(
                self.retailer,
                "optoro",
                "POST",
                alias,
                self.exchange_orders,
                summary="Exchange Orders: one exchange order per original_order_id, ever",
                body=ExchangeOrderIn,
                headers=ExchangeOrderHeaders,
                security=security,
                responses={
                    503: "X-Optiturn-Id is not this retailer's (quarantined, flagged; the"
                    " status is optiturn_mismatch_status)",
                    422: "the order is invalid (quarantined)",
                },
            )
        self.runtime.engine.add_handler(RMA_KIND, self.handle_rma, retailer=self.retailer)

    # authentication ----------------------------------------------------------------------

    def authenticated(self, request: web.Request) -> bool:
        return authenticated(request, self.config.inbound_auth)

    def optiturn_problem(self, request: web.Request) -> MappingError | None:
        """Why the ``X-Optiturn-Id`` of an authenticated call is not this retailer's.

        Checked when present, never required: Optoro's OpenAPI marks it required, but the
        guide's samples send none, and the stricter reading would refuse (for good: Optoro
        never retries a 403) what Optoro really sends. The credentials already say who
        calls; the id only catches a sender configured for another retailer. A refused RMA
        or exchange order is kept quarantined, flagged for an operator and answered
        ``optiturn_mismatch_status`` (503 by default: Optoro retries)."""
        try:
            given = header_text(request, OPTITURN_ID)
        except MappingError as exc:
            return exc
        if given is None:
            return None
        if given != self.config.optiturn_id:
            return MappingError(
                f"header {OPTITURN_ID} does not match this retailer's configuration",
                field=OPTITURN_ID,
            )
        return None

    def unauthorized(self) -> web.Response:
        """401, nothing stored: a caller without this retailer's credentials is nobody the
        bridge keeps anything for (Optoro re-authenticates and retries on a 401)."""
        return unauthorized(challenge_of(self.config.inbound_auth))

    @staticmethod
    def _retry_later(response: web.Response) -> web.Response:
        """A 503 (the sender should try again) says when."""
        if response.status == 503:
            response.headers.setdefault("Retry-After", "60")
        return response

    # RMA webhook -------------------------------------------------------------------------

    async def rmas(self, request: web.Request) -> web.Response:
        if not self.authenticated(request):
            return self.unauthorized()
        problem = self.optiturn_problem(request)
        if problem is not None:
            body = await read_body(request)
            if isinstance(body, web.Response):
                return body
            return self._retry_later(
                await quarantine(
                    request,
                    self.runtime.engine,
                    body,
                    retailer=self.retailer,
                    kind=RMA_KIND,
                    error=problem,
                    status=self.config.optiturn_mismatch_status,
                    secret_headers=self.secret_headers,
                    flag=REPLAY_AFTER_FIX,
                    stands_status=200,
                )
            )
        return await receive(
            request,
            self.runtime.engine,
            retailer=self.retailer,
            kind=RMA_KIND,
            validate=parse_rma,
            invalid_status=self.config.invalid_message_status,
            secret_headers=self.secret_headers,
            entity_of=lambda rma: f"rma:{self.retailer}:{rma.id}",
        )

    async def handle_rma(self, item: InboxItem, tx: Transaction, ctx: HandlerContext) -> Outcome:
        """Translate an RMA message and hand it to the retailer's RMA flow (versioning, the
        closed check, the policy step: :mod:`bridge.flows.rmas`)."""
        rma = parse_rma(item.body)
        flows: ReturnsFlows = self.runtime.service(self.retailer, RMA_LIFECYCLE)
        outcome = await flows.rmas.apply(tx, f"{self.retailer}:{rma.id}", rma, ctx)
        return outcome.inbox_outcome()

    # exchange variants -------------------------------------------------------------------

    async def variants(self, request: web.Request) -> web.Response:
        if not self.authenticated(request):
            return self.unauthorized()
        problem = self.optiturn_problem(request)
        if problem is not None:
            return json_error(403, str(problem), field=problem.field)
        try:
            variant_identifier = check_text(
                request.match_info["variant_identifier"], "variant_identifier", 256
            )
        except MappingError as exc:
            return json_error(400, str(exc), field=exc.field)
        if not self.runtime.has_service(self.retailer, CATALOG):
            return json_error(501, "no catalog is configured for this retailer (routes.catalog)")
        catalog = self.runtime.service(self.retailer, CATALOG)
        try:
            cached = await self.variants_cache.get(
                variant_identifier, lambda: catalog.variants_for(variant_identifier)
            )
        except (DeliveryError, TimeoutError) as exc:
            log.warning(
                "exchange variants unavailable",
                extra={
                    "retailer": self.retailer,
                    "variant": variant_identifier,
                    "reason": str(exc),
                },
            )
            response = json_error(503, "the catalog is unavailable, retry later")
            response.headers["Retry-After"] = "5"
            return response
        except MappingError as exc:  # the catalog's answer could not be read at all
            log.warning(
                "exchange variants unreadable",
                extra={
                    "retailer": self.retailer,
                    "variant": variant_identifier,
                    "reason": str(exc),
                },
            )
            return json_error(502, f"the catalog's answer cannot be read: {exc}", field=exc.field)
        if cached.stale:
            log.warning(
                "exchange variants served stale",
                extra={
                    "retailer": self.retailer,
                    "variant": variant_identifier,
                    "age_seconds": round(cached.age, 1),
                },
            )
        try:
            body = variants_response(cached.value, self.config.size_dimensions)
        except MappingError as exc:
            log.warning(
                "exchange variants not mappable",
                extra={
                    "retailer": self.retailer,
                    "variant": variant_identifier,
                    "reason": str(exc),
                },
            )
            return json_error(502, f"catalog data cannot be sent to Optoro: {exc}", field=exc.field)
        return web.json_response(body)

    # exchange orders ---------------------------------------------------------------------

    async def exchange_orders(self, request: web.Request) -> web.Response:
        if not self.authenticated(request):
            return self.unauthorized()
        body = await read_body(request)
        if isinstance(body, web.Response):
            return body
        optiturn = self.optiturn_problem(request)
        if optiturn is not None:
            return self._retry_later(
                await self._refuse(
                    request,
                    body,
                    optiturn,
                    self.config.optiturn_mismatch_status,
                    flag="fix optiturn_id if it is wrong: Optoro's retry then places the order"
                    " (an exchange order is placed while Optoro waits, never replayed);"
                    " resolve this flag once it is placed",
                )
            )
        problem = self._version_problem(request) or refusal(body)
        if problem is not None:
            status = 400 if problem.field == OPTITURN_VERSION else 422
            return await self._refuse(request, body, problem, status)
        if not self.runtime.has_service(self.retailer, EXCHANGE_ORDER_SINK):
            return await self._refuse(
                request,
                body,
                MappingError(
                    "no order system is configured for exchange orders (routes.exchange_order_sink)"
                ),
                501,
            )
        version = int(request.headers.get(OPTITURN_VERSION, "2").strip())
        try:
            order = parse_exchange_order(body, version, gift_card_skus=self.config.gift_card_skus)
        except MappingError as exc:
            return await self._refuse(request, body, exc, 422)
        except Exception as exc:  # a mapping bug refuses this body, never answers 500
            error = MappingError(f"body could not be mapped ({type(exc).__name__})", field="body")
            return await self._refuse(request, body, error, 422)
        request_hash = hashlib.sha256(
            canonical_json(order.model_dump(mode="json")).encode()
        ).hexdigest()
        return await self._create_once(request, body, order, request_hash)

    def _version_problem(self, request: web.Request) -> MappingError | None:
        given = request.headers.get(OPTITURN_VERSION, "2").strip()
        # ASCII digits only ("²".isdigit() is true, and int("²") raises), and few of them
        # (int() of more than 4300 digits raises too)
        numeric = given.isascii() and given.isdigit() and len(given) <= 9
        if not numeric or int(given) not in EXCHANGE_VERSIONS:
            return MappingError(
                f"header {OPTITURN_VERSION} must be one of"
                f" {', '.join(map(str, EXCHANGE_VERSIONS))}",
                field=OPTITURN_VERSION,
            )
        return None

    async def _refuse(
        self,
        request: web.Request,
        body: bytes,
        error: MappingError,
        status: int,
        *,
        flag: str | None = None,
    ) -> web.Response:
        return await quarantine(
            request,
            self.runtime.engine,
            body,
            retailer=self.retailer,
            kind=EXCHANGE_KIND,
            error=error,
            status=status,
            secret_headers=self.secret_headers,
            flag=flag,
        )

    async def _create_once(
        self, request: web.Request, body: bytes, order: Any, request_hash: str
    ) -> web.Response:
        store = self.runtime.store
        scope = f"{self.retailer}:{EXCHANGE_KIND}"
        key = order.original_order_id
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.config.exchange_wait
        while True:
            claim = await store.claim(scope, key, request_hash, lease_seconds=120.0)
            if claim.state is ClaimState.DONE:
                return web.json_response(claim.response)
            if claim.state is ClaimState.CONFLICT and claim.response is not None:
                await self._record_differing(key, body, request_hash)
                return web.json_response(claim.response)
            # CONFLICT without an answer: another body is being placed; wait for its order
            if claim.state is ClaimState.NEW:
                return await self._create(request, body, order, scope, key)
            if loop.time() >= give_up_at:
                response = json_error(
                    503, "an exchange order for this original_order_id is still being placed"
                )
                response.headers["Retry-After"] = "5"
                return response
            await asyncio.sleep(0.05)

    async def _record_differing(self, key: str, body: bytes, request_hash: str) -> None:
        """Flag the order for the operator when Optoro sends another body for an
        ``original_order_id`` already placed (the flag names the body's hash and size; the
        order is not changed)."""
        reason = (
            f"another exchange order body for original_order_id {key!r} after one was placed"
            f" (order sha256 {request_hash[:16]}, {len(body)} bytes): answered with the order"
            " placed, nothing created"
        )
        try:
            async with self.runtime.store.transaction() as tx:
                await tx.add_flag(self.retailer, "exchange_order", key, reason)
        except StoreError as exc:  # the order stands: answer it, say what was not kept
            log.error(
                "differing exchange order body not flagged",
                extra={"retailer": self.retailer, "original_order_id": key, "reason": str(exc)},
            )
        log.warning(
            "exchange order repeated with a different body",
            extra={
                "retailer": self.retailer,
                "original_order_id": key,
                "order_sha256": request_hash,
            },
        )

    async def _create(
        self, request: web.Request, body: bytes, order: Any, scope: str, key: str
    ) -> web.Response:
        store = self.runtime.store
        sink = self.runtime.service(self.retailer, EXCHANGE_ORDER_SINK)
        try:
            result = await sink.create_exchange_order(order)
        except RetriableDeliveryError as exc:
            await store.release_claim(scope, key)
            log.warning(
                "exchange order sink unavailable",
                extra={"retailer": self.retailer, "original_order_id": key, "reason": str(exc)},
            )
            response = json_error(503, "the order system is unavailable; nothing was created")
            response.headers["Retry-After"] = str(int(exc.retry_after or 5))
            return response
        except (DeliveryError, MappingError) as exc:
            await store.release_claim(scope, key)
            error = exc if isinstance(exc, MappingError) else MappingError(str(exc))
            return await self._refuse(request, body, error, 422)
        except BaseException:
            await store.release_claim(scope, key)
            raise
        answer = exchange_result_to_wire(result)
        await store.complete_claim(scope, key, answer)
        log.info(
            "exchange order placed",
            extra={"retailer": self.retailer, "original_order_id": key, "order": result.order_id},
        )
        return web.json_response(answer)
