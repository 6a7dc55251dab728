"""ReturnLogic as the catalog (Exchange Variants) and the exchange-order sink.

Catalog (``catalog`` capability, when ``catalog.enabled``): ``variants_for(identifier)`` reads
``GET /v1/products?sku=<identifier>&status=any`` at LIVE priority (a shopper is waiting: few
in-call retries; the Optoro endpoint caches and serves stale answers while ReturnLogic fails)
and returns every SKU'd variant of the product holding that SKU (inactive ones flagged),
attributes from the option names and values, stock, price in the minor units of the configured
store ``currency`` (a product names none), image (``image_fallback``
when none) and ``product_url_template``. No product has that SKU: the identifier is tried as
an ``externalProductIds`` value (all of that product's variants). Still nothing and the
identifier is a whole number: it is taken as a ReturnLogic variant id (``rlProductVariantId``,
what the order sync sends Optoro as ``variant_identifier`` when an order line carries one).
The API offers no search by variant id, so the catalog keeps an index variant id -> product,
filled from every products page it reads and, on a miss, by reading the catalog page by page
(at most ``variant_scan_pages`` pages of 250, at most once per ``variant_scan_every`` seconds,
one scan at a time); the product found is read with ``GET /v1/products/{rlProductId}``.
Unknown: an empty list.

A variant without a price (ReturnLogic's documented product has none) cannot be offered to
Optoro, which decides from ``unit_price_amount_cents`` whether to show it: it is left out,
logged with its SKU and counted (:attr:`RlCatalog.unpriced`); the other variants are served.
So is a variant that cannot be mapped (a bad price, an option without a name): logged with
the field, counted (:attr:`RlCatalog.unmappable`), its siblings served.

Exchange orders (``exchange_order_sink`` capability, when ``exchange_orders.enabled``):
one ReturnLogic order per original order, ever. The order number is derived from
``original_order_id`` alone (``exchange_order_number``, prefix ``order_number_prefix``), so:

1. ``GET /v1/orders?orderNumber=<number>`` first: an order found is the answer (a repeat, or a
   retry after an answer that was lost);
2. variant ids by SKU (``GET /v1/products?sku=``), then ``POST /v1/orders`` sent once per
   attempt (never retried blindly inside the call);
3. an answer refusing the ``orderNumber`` as taken (a concurrent or earlier creation) -> the
   order is looked up and returned;
4. a failure that may have created the order (timeout, connection lost, 5xx) -> back to 1.

Retriable failures that remain raise ``RetriableDeliveryError`` (the Optoro endpoint answers
503 with ``Retry-After`` and records nothing); a body ReturnLogic refuses, or a SKU it does not
know, is a ``PermanentDeliveryError``/``MappingError`` (422 to Optoro, kept in quarantine).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from adapters.returnlogic.client import RlTeam
from adapters.returnlogic.config import ReturnLogicConfig
from bridge.domain import ExchangeOrder, ExchangeOrderResult, Variant
from bridge.errors import (
    MappingError,
    NotReady,
    PermanentDeliveryError,
    RetriableDeliveryError,
)
from bridge.http import Backoff, HttpClient, OutboundRequest, Priority, Response
from bridge.ports import CATALOG, EXCHANGE_ORDER_SINK, AdapterContext
from mappings._json import load_json
from mappings.returnlogic import (
    dumps,
    exchange_order_number,
    exchange_to_order_create,
    order_create_response_to_result,
    products_page,
    products_to_variants,
    variants_for_sku,
)
from mappings.returnlogic.catalog import variant_products

if TYPE_CHECKING:
    from bridge.config import RetailerConfig

log = logging.getLogger(__name__)

LIVE_ATTEMPTS = 3
"""In-call attempts of a read a shopper waits for."""
CREATE_ROUNDS = 3
"""Lookup-then-create rounds of one exchange order before answering 'retry later'."""


class RlCatalog:
    """The ``catalog`` capability over ReturnLogic products."""

    PAGE = 250
    """Products per page (the API's maximum)."""

    def __init__(self, team: RlTeam, config: ReturnLogicConfig) -> None:
        self.team = team
        self.config = config.catalog
        self.currency = config.currency
        self.unpriced: Counter[str] = Counter()
        """SKU -> times it was left out of an answer for having no price."""
        self.unmappable: Counter[str] = Counter()
        """Field (``[0].variants[1].price``) -> times a variant was left out as unmappable."""
        self._variant_products: dict[str, int] = {}
        self._scanned_at: float | None = None
        self._scan_lock = asyncio.Lock()

    async def _products(self, **params: str | int) -> list[dict[str, Any]]:
        response = await self.team.request(
            "GET",
            "/v1/products",
            params={"status": "any", "limit": self.PAGE, **params},
            priority=Priority.LIVE,
            attempts=LIVE_ATTEMPTS,
        )
        products = products_page(response.body)
        self._variant_products.update(variant_products(products))
        return products

    async def variants_for(self, variant_identifier: str) -> list[Variant]:
        key = variant_identifier.strip()
        if not key:
            return []
        problems: list[MappingError] = []
        found = await self._lookup(key, problems)
        for problem in problems:
            self.unmappable[problem.field or "<record>"] += 1
            log.warning(
                "returnlogic variant left out of exchange variants: not mappable",
                extra={"variant": key, "field": problem.field, "reason": str(problem)},
            )
        return self._priced(key, found)

    async def _lookup(self, key: str, problems: list[MappingError]) -> list[Variant]:
        template, fallback = self.config.product_url_template, self.config.image_fallback
        found = variants_for_sku(
            await self._products(sku=key),
            key,
            product_url_template=template,
            image_fallback=fallback,
            problems=problems,
            currency=self.currency,
        )
        if found:
            return found
        products = await self._products(externalProductIds=key)
        found = products_to_variants(
            [p for p in products if str(p.get("externalProductId")) == key][:1],
            template,
            fallback,
            problems=problems,
            currency=self.currency,
        )
        if found or not (key.isascii() and key.isdigit()):
            return found
        product_id = await self._product_of_variant(key)
        if product_id is None:
            return []
        try:
            response = await self.team.request(
                "GET",
                f"/v1/products/{product_id}",
                priority=Priority.LIVE,
                attempts=LIVE_ATTEMPTS,
            )
        except PermanentDeliveryError as exc:
            if exc.status != 404:
                raise
            self._variant_products.pop(key, None)  # the product is gone: forget the entry
            return []
        product = load_json(response.body, what="GET /v1/products/{rlProductId}")
        if not isinstance(product, dict):
            raise MappingError("GET /v1/products/{rlProductId}: expected a JSON object")
        return variants_for_sku(
            [product],
            key,
            product_url_template=template,
            image_fallback=fallback,
            problems=problems,
            currency=self.currency,
        )

    async def _product_of_variant(self, variant_id: str) -> int | None:
        """The ``rlProductId`` holding ``variant_id``, from the index, else after one scan."""
        if variant_id in self._variant_products or not self.config.variant_scan_pages:
            return self._variant_products.get(variant_id)
        async with self._scan_lock:
            fresh = (
                self._scanned_at is not None
                and time.monotonic() - self._scanned_at < self.config.variant_scan_every
            )
            if variant_id not in self._variant_products and not fresh:
                await self._scan()
        return self._variant_products.get(variant_id)

    async def _scan(self) -> None:
        for page in range(self.config.variant_scan_pages):
            products = await self._products(skip=page * self.PAGE)
            if len(products) < self.PAGE:
                break
        else:
            log.warning(
                "returnlogic catalog scan stopped at variant_scan_pages",
                extra={"pages": self.config.variant_scan_pages},
            )
        self._scanned_at = time.monotonic()

    def _priced(self, key: str, variants: list[Variant]) -> list[Variant]:
        unpriced = [v.sku for v in variants if v.unit_price_cents is None]
        if unpriced:
            self.unpriced.update(unpriced)
            log.warning(
                "returnlogic variants without a price left out of exchange variants",
                extra={"variant": key, "skus": unpriced, "count": len(unpriced)},
            )
        return [v for v in variants if v.unit_price_cents is not None]


class RlExchangeOrders:
    """The ``exchange_order_sink`` capability: ReturnLogic create order, at most once per
    ``original_order_id`` (see the module docstring)."""

    def __init__(
        self, team: RlTeam, config: ReturnLogicConfig, http: Callable[[], HttpClient]
    ) -> None:
        self.team = team
        self.config = config.exchange_orders
        self._http = http
        self.backoff = Backoff(initial=0.5, cap=5.0)

    async def create_exchange_order(self, order: ExchangeOrder) -> ExchangeOrderResult:
        number = exchange_order_number(order.original_order_id, self.config.order_number_prefix)
        last: RetriableDeliveryError | None = None
        for round_ in range(1, CREATE_ROUNDS + 1):
            try:
                existing = await self.find_order(number)
                if existing is not None:
                    log.info(
                        "returnlogic exchange order exists already",
                        extra={
                            "order_number": number,
                            "original_order_id": order.original_order_id,
                        },
                    )
                    return order_create_response_to_result(existing)
                variant_ids = await self._variant_ids([item.sku for item in order.items])
                body = exchange_to_order_create(
                    order, variant_ids, number, external_source=self.config.external_source
                )
                try:
                    response = await self._post_order(body)
                except PermanentDeliveryError as exc:
                    if not _number_taken(exc):
                        raise
                    found = await self.find_order(number)
                    if found is None:
                        raise
                    return order_create_response_to_result(found)
                return order_create_response_to_result(
                    load_json(response.body, what="POST /v1/orders")
                )
            except NotReady:
                raise  # no token: retrying in place cannot help, the caller gets 503
            except RetriableDeliveryError as exc:
                last = exc
                log.warning(
                    "returnlogic exchange order attempt failed",
                    extra={"order_number": number, "round": round_, "reason": str(exc)},
                )
                if round_ < CREATE_ROUNDS:
                    await asyncio.sleep(self.backoff.delay(round_, exc.retry_after))
        assert last is not None
        raise RetriableDeliveryError(
            f"returnlogic: exchange order {number} not confirmed: {last}",
            status=last.status,
            retry_after=last.retry_after or 5.0,
        ) from last

    async def find_order(self, number: str) -> dict[str, Any] | None:
        """The order with ``orderNumber`` = ``number``, or None."""
        response = await self.team.request(
            "GET",
            "/v1/orders",
            params={"orderNumber": number, "limit": 5},
            priority=Priority.LIVE,
            attempts=LIVE_ATTEMPTS,
        )
        orders = load_json(response.body, what="GET /v1/orders")
        if not isinstance(orders, list):
            raise MappingError("GET /v1/orders: expected a JSON array")
        return next(
            (o for o in orders if isinstance(o, dict) and o.get("orderNumber") == number), None
        )

    async def _variant_ids(self, skus: list[str]) -> dict[str, str]:
        ids: dict[str, str] = {}
        for sku in dict.fromkeys(skus):
            response = await self.team.request(
                "GET",
                "/v1/products",
                params={"sku": sku, "status": "any", "limit": 250},
                priority=Priority.LIVE,
                attempts=LIVE_ATTEMPTS,
            )
            for product in products_page(response.body):
                for variant in product.get("variants") or ():
                    if isinstance(variant, dict) and variant.get("sku") == sku:
                        ids.setdefault(sku, str(variant.get("rlProductVariantId")))
        return ids

    async def _post_order(self, body: dict[str, Any]) -> Response:
        """``POST /v1/orders`` with money as exact JSON numbers, one attempt (a 401 refreshes
        the token and sends again: a refused request created nothing). The bearer is
        attached when the team's governor admits the request."""
        team = self.team
        request = OutboundRequest(
            "POST",
            f"{team.base}/v1/orders",
            {"Accept": "application/json", "Content-Type": "application/json"},
            json=body,
            data=dumps(body).encode(),
        )
        response: Response = await self._http().send(
            request, team.limits, Priority.LIVE, credentials=team.credentials
        )
        return response


def _number_taken(exc: PermanentDeliveryError) -> bool:
    """ReturnLogic refused the create because the ``orderNumber`` exists (a 4xx naming it)."""
    if exc.status is None or not 400 <= exc.status < 500 or exc.status == 401:
        return False
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return "orderNumber" in (exc.body or "")
    fields = body.get("fields") if isinstance(body, dict) else None
    return isinstance(fields, dict) and "orderNumber" in fields


def setup(
    ctx: AdapterContext, retailer: RetailerConfig, config: ReturnLogicConfig, team: RlTeam
) -> None:
    """Provide the catalog and the exchange-order sink for one retailer, as enabled."""
    if config.catalog.enabled:
        ctx.provide(retailer.id, CATALOG, "returnlogic", RlCatalog(team, config))
    if config.exchange_orders.enabled:
        ctx.provide(
            retailer.id,
            EXCHANGE_ORDER_SINK,
            "returnlogic",
            RlExchangeOrders(team, config, lambda: ctx.http),
        )


__all__ = ["RlCatalog", "RlExchangeOrders", "setup"]
