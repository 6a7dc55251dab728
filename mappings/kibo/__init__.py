"""Kibo OMS <-> the canonical domain: wire models and pure functions.

Contracts: Kibo's "Create Return" page (``shared/specs/kibo-create-return-api.txt``) and the
summary of Get Return, Process Return and Return Event Notifications
(``shared/specs/kibo-oms-returns-beyond-create.md``).

- Create Return (bridge -> Kibo): :func:`rma_to_kibo_returns` (one body per order); line
  resolution is the caller's (``order_item_ids``), :func:`numeric_order_item_ids` is the
  "numeric identifier as is" strategy.
  Bodies hold ``Decimal`` major units of the return's currency: serialise them with :func:`dumps`.
- Reporting: :func:`kibo_amounts_report` (shopper, provider and estimated shares, cents).
- Process Return: :func:`kibo_process_request`.
- Create/Get Return responses: :func:`return_response_to_ref` -> :class:`KiboReturnRef`;
  :func:`return_matches` (is a found return the one a create asked for).
- Client-chosen ``returnID``: :func:`derive_return_id` (deterministic, from the effect's key).
- Return Event Notifications (Kibo -> bridge): :func:`parse_notification` ->
  :class:`KiboReturnEvent`, event names configurable (:data:`DEFAULT_EVENT_NAMES`).
- Wire models: :mod:`mappings.kibo.wire` (strict outbound, tolerant inbound).

Everything here is pure: no I/O, no clock, no configuration lookups; what a function needs
(line crosswalk, creation time, gift-card type, event names) is an argument. Bad input raises
:class:`bridge.errors.MappingError` whose ``field`` is a dotted path: the RMA's unit as Optoro
numbers its items (``items[4].order_line_item_identifier``) or the Kibo field
(``item[0].quantity``).
"""

from __future__ import annotations

from mappings._json import dumps, load_json
from mappings.kibo.events import (
    DEFAULT_EVENT_NAMES,
    EVENT_KINDS,
    EVENT_TYPE_FIELDS,
    EventKind,
    KiboNotificationIn,
    KiboReturnEvent,
    parse_notification,
)
from mappings.kibo.returns import (
    GIFT_CARD_REFUND_TYPES,
    MAX_ORDER_ITEM_ID,
    NO_REFUND_TYPES,
    RETURN_ID_BITS,
    KiboReturnRef,
    derive_return_id,
    kibo_amounts_report,
    kibo_process_request,
    numeric_order_item_ids,
    return_matches,
    return_response_to_ref,
    rma_to_kibo_returns,
)
from mappings.kibo.wire import (
    KiboProcessRequest,
    KiboReturn,
    KiboReturnItem,
    KiboReturnItemRequest,
    KiboReturnRequest,
)

__all__ = [
    "DEFAULT_EVENT_NAMES",
    "EVENT_KINDS",
    "EVENT_TYPE_FIELDS",
    "GIFT_CARD_REFUND_TYPES",
    "MAX_ORDER_ITEM_ID",
    "NO_REFUND_TYPES",
    "RETURN_ID_BITS",
    "EventKind",
    "KiboNotificationIn",
    "KiboProcessRequest",
    "KiboReturn",
    "KiboReturnEvent",
    "KiboReturnItem",
    "KiboReturnItemRequest",
    "KiboReturnRef",
    "KiboReturnRequest",
    "derive_return_id",
    "dumps",
    "kibo_amounts_report",
    "kibo_process_request",
    "load_json",
    "numeric_order_item_ids",
    "parse_notification",
    "return_matches",
    "return_response_to_ref",
    "rma_to_kibo_returns",
]
