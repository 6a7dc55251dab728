"""ReturnLogic <-> canonical domain: wire models and pure mapping functions.

No I/O, no clock, no configuration lookups: every rule, template and lookup result is an
argument. Bodies are parsed with ``json.loads(body, parse_float=Decimal)``; money becomes
integer cents, rounded once (half up), never through ``float``.

Orders (``GET /v1/orders`` -> Order): :func:`orders_page`, :func:`order_to_canonical`,
:func:`order_snapshot_hash`, :class:`TagRules` (see :mod:`.orders` and :mod:`.rules` for the
tables and fallbacks). RMAs (-> Rma): :func:`rmas_page`, :func:`rma_to_canonical`
(:mod:`.rmas`; the bridge's RMA flow versions them). Catalog (``GET /v1/products`` -> Variant):
:func:`products_page`, :func:`products_to_variants`, :func:`variants_for_sku` (:mod:`.catalog`).
Exchange orders (ExchangeOrder -> ``POST /v1/orders``): :func:`exchange_order_number`,
:func:`exchange_to_order_create`, :func:`order_create_response_to_result` (:mod:`.exchange`);
:func:`dumps` writes their ``Decimal`` money as exact JSON numbers.
"""

from __future__ import annotations

from mappings._json import dumps
from mappings.returnlogic.catalog import (
    TEMPLATE_FIELDS,
    products_page,
    products_to_variants,
    variants_for_sku,
)
from mappings.returnlogic.exchange import (
    ORDER_NUMBER_MAX_LENGTH,
    exchange_order_number,
    exchange_to_order_create,
    order_create_response_to_result,
)
from mappings.returnlogic.orders import (
    line_quantities,
    map_order,
    order_snapshot_hash,
    order_to_canonical,
    orders_page,
    status_of,
)
from mappings.returnlogic.rmas import (
    RETURN_TYPES,
    RMA_STATUSES,
    rma_status,
    rma_to_canonical,
    rmas_page,
)
from mappings.returnlogic.rules import (
    FINAL_SALE,
    GIFT_CARD,
    PICKUP_IN_STORE,
    THIRD_PARTY,
    TagRule,
    TagRules,
)
from mappings.returnlogic.webhooks import (
    RESOURCE_ACTIONS,
    OAuthCallbackQuery,
    WebhookIn,
    parse_webhook_body,
)

__all__ = [
    "FINAL_SALE",
    "GIFT_CARD",
    "ORDER_NUMBER_MAX_LENGTH",
    "PICKUP_IN_STORE",
    "RESOURCE_ACTIONS",
    "RETURN_TYPES",
    "RMA_STATUSES",
    "TEMPLATE_FIELDS",
    "THIRD_PARTY",
    "OAuthCallbackQuery",
    "TagRule",
    "TagRules",
    "WebhookIn",
    "dumps",
    "exchange_order_number",
    "exchange_to_order_create",
    "line_quantities",
    "map_order",
    "order_create_response_to_result",
    "order_snapshot_hash",
    "order_to_canonical",
    "orders_page",
    "parse_webhook_body",
    "products_page",
    "products_to_variants",
    "rma_status",
    "rma_to_canonical",
    "rmas_page",
    "status_of",
    "variants_for_sku",
]
