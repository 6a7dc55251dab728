"""Optoro Returns Experience <-> the canonical domain: wire models and pure functions.

Contracts: Optoro's Returns Experience integration guide (every sample payload is in
``shared/fixtures/optoro-scenarios``) and Optoro's OpenAPI descriptions
(``adapters/optoro/schemas``). Where they disagree, what we **send** satisfies the descriptions
(the stricter contract) and what we **accept** includes everything the guide shows.

- Returns Portal Orders (bridge -> Optoro): :func:`order_to_rpo`, :func:`rpo_request`;
  inbound, for the sandbox: :func:`rpo_to_order`, :func:`parse_rpo_request`,
  :func:`header_mismatches`.
- RMAs webhook (Optoro -> bridge): :func:`parse_rma`; for the sandbox:
  :func:`rma_to_wire`.
- Exchange Variants (Optoro asks, the bridge answers): :func:`variants_response`;
  :func:`parse_variants_response`.
- Exchange Orders (Optoro asks, the bridge answers): :func:`parse_exchange_order`,
  :func:`exchange_result_to_wire`; for the sandbox: :func:`exchange_order_to_wire`,
  :func:`parse_exchange_result`.

Everything here is pure: no I/O, no clock, no configuration lookups; what a function needs
(size dimensions, gift-card SKUs, API version, vocabulary) is an argument. Bad input raises
:class:`bridge.errors.MappingError` whose ``field`` is the dotted wire path
(``items[0].refund_financials.estimated_refund_amount_cents``; ``None`` for the whole body).
The vocabulary tables are in :mod:`mappings.optoro.vocab`.
"""

from __future__ import annotations

from mappings.optoro.exchanges import (
    ExchangeOrderIn,
    exchange_order_to_wire,
    exchange_result_to_wire,
    parse_exchange_order,
    parse_exchange_result,
)
from mappings.optoro.headers import ExchangeOrderHeaders, OptiturnHeaders, VariantsPath
from mappings.optoro.orders import (
    header_mismatches,
    order_to_rpo,
    parse_rpo_request,
    rpo_request,
    rpo_to_order,
)
from mappings.optoro.rmas import RmaIn, parse_rma, rma_to_wire
from mappings.optoro.variants import all_size, parse_variants_response, variants_response
from mappings.optoro.vocab import RmaVocabulary

__all__ = [
    "ExchangeOrderHeaders",
    "ExchangeOrderIn",
    "OptiturnHeaders",
    "RmaIn",
    "RmaVocabulary",
    "VariantsPath",
    "all_size",
    "exchange_order_to_wire",
    "exchange_result_to_wire",
    "header_mismatches",
    "order_to_rpo",
    "parse_exchange_order",
    "parse_exchange_result",
    "parse_rma",
    "parse_rpo_request",
    "parse_variants_response",
    "rma_to_wire",
    "rpo_request",
    "rpo_to_order",
    "variants_response",
]
