"""The RMA webhook (``POST /rmas`` from Optoro) <-> :class:`Rma`.

Optoro sends the whole RMA on every lifecycle event, one ``items`` entry per returned **unit**
(four units of a line are four items). Both vocabularies are accepted (see
:mod:`mappings.optoro.vocab`): the integration guide's (``EVEN_EXCHANGE``, ``null`` tracking
fields, no ``upc`` nor ``bonus_credit_amount_cents``) and the RMAs v5 description's
(``STANDARD_EXCHANGE``, ``INSTANT_STORE_CREDIT``, ``PENDING_EXCHANGE``, ``PARTIAL_REFUND``,
``NOT_DROPPED_OFF``, ``home-pickup``, ``upc``, ``bonus_credit_amount_cents``,
``warehouse_receipt_condition``).

:func:`rma_to_wire` writes an RMA back (the Optoro sandbox sends these): ``vocabulary="guide"``
reproduces the guide's messages (its twelve item keys always present, ``null`` when unknown);
``vocabulary="v5"`` satisfies the RMAs description (no ``null`` strings, ``upc`` and
``bonus_credit_amount_cents`` required, ``is_exchange`` only when true, as in its examples).

Ordering: Optoro does not guarantee delivery order and sends several messages with one
``updated_at`` (guide scenarios 06 and 15: tracking number, then carrier scan, same second).
:func:`bridge.flows.rma_version` orders versions of one RMA by ``updated_at``, then lifecycle
progress (:meth:`~bridge.domain.Rma.progress` breaks the ties).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Any, Literal

from pydantic import Field, JsonValue, field_validator

from bridge.domain import Rma, RmaUnit
from bridge.errors import MappingError
from mappings._json import Body
from mappings.optoro._wire import (
    Bool,
    Cents,
    Id,
    SignedCents,
    Str,
    Timestamp,
    WireIn,
    WireOut,
    build,
    dump_out,
    parse,
    timestamp,
)
from mappings.optoro.vocab import (
    PACKAGE_STATUS_IN,
    PACKAGE_STATUS_OUT,
    RECEIVING_STATUS_IN,
    RECEIVING_STATUS_OUT,
    REFUND_TYPE_IN,
    REFUND_TYPE_OUT,
    RETURN_METHOD_IN,
    RETURN_METHOD_OUT,
    RMA_STATUS_IN,
    RMA_STATUS_OUT,
    RmaVocabulary,
)

__all__ = [
    "RmaIn",
    "RmaItemIn",
    "RmaOut",
    "parse_rma",
    "rma_to_wire",
]


def _enum(table: Iterable[str], nullable: bool = False) -> Any:
    """A ``Field`` whose JSON schema lists the words ``table`` accepts (``/openapi.json``);
    the check itself is the field validator, which names the field and the accepted words."""
    words: list[JsonValue] = list(table)
    if nullable:
        return Field(default=None, json_schema_extra={"enum": [*words, None]})
    return Field(json_schema_extra={"enum": words})


def _one_of(table: Iterable[str], what: str, value: str) -> str:
    if value not in table:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(table)}")
    return value


# --- inbound ---------------------------------------------------------------------------------


class RefundFinancialsIn(WireIn):
    """Refund amounts Optoro sends: never negative (a negative share is refused at the
    webhook, not turned into a dead letter later), never above ``MAX_CENTS``."""

    estimated_refund_amount_cents: Cents
    optoro_refund_amount_cents: Cents
    shopper_refund_amount_cents: Cents


class RmaItemIn(WireIn):
    order_line_item_identifier: Id
    order_identifier: Id
    secondary_identifier: Str | None = None
    exchange_order_identifier: Str | None = None
    original_order_identifier: Str | None = None
    return_reason: Str | None = None
    is_exchange: Bool = False
    sku: Str | None = None
    upc: Str | None = None
    tracking_number: Str | None = None
    package_tracking_status: Str | None = _enum(PACKAGE_STATUS_IN, nullable=True)
    receiving_status: Str | None = _enum(RECEIVING_STATUS_IN, nullable=True)
    refund_financials: RefundFinancialsIn
    refund_type: Str = _enum(REFUND_TYPE_IN)
    warehouse_receipt_condition: Str | None = None

    @field_validator("package_tracking_status")
    @classmethod
    def _package_status(cls, value: str | None) -> str | None:
        return None if value is None else _one_of(PACKAGE_STATUS_IN, "package status", value)

    @field_validator("receiving_status")
    @classmethod
    def _receiving_status(cls, value: str | None) -> str | None:
        return None if value is None else _one_of(RECEIVING_STATUS_IN, "receiving status", value)

    @field_validator("refund_type")
    @classmethod
    def _refund_type(cls, value: str) -> str:
        return _one_of(REFUND_TYPE_IN, "refund type", value)


class RmaCustomerIn(WireIn):
    tags: list[Str] = Field(default_factory=list)


class RmaIn(WireIn):
    rma_identifier: Id
    status: Str = _enum(RMA_STATUS_IN)
    created_at: Timestamp
    updated_at: Timestamp | None = None
    """Optional in v5; the created time stands in when it is missing."""
    items: list[RmaItemIn]
    return_method: Str = _enum(RETURN_METHOD_IN)
    return_shipping_cost_cents: Cents = 0
    bonus_credit_amount_cents: Cents = 0
    """Required by v5, absent from the guide's samples."""
    gift_refund_only: Bool
    giftee_email: Str | None = None
    warehouse_id: Str | None = None
    receiving_complete: Bool | None = None
    concept: Str | None = None
    vendor: Str | None = None
    customer: RmaCustomerIn | None = None

    @field_validator("status")
    @classmethod
    def _status(cls, value: str) -> str:
        return _one_of(RMA_STATUS_IN, "RMA status", value)

    @field_validator("return_method")
    @classmethod
    def _return_method(cls, value: str) -> str:
        return _one_of(RETURN_METHOD_IN, "return method", value)


# --- outbound, RMAs v5 -----------------------------------------------------------------------


class RefundFinancialsOut(WireOut):
    estimated_refund_amount_cents: SignedCents
    optoro_refund_amount_cents: SignedCents
    shopper_refund_amount_cents: SignedCents


class RmaItemOut(WireOut):
    order_line_item_identifier: Str
    order_identifier: Str
    secondary_identifier: Str | None = None
    exchange_order_identifier: Str | None = None
    original_order_identifier: Str | None = None
    return_reason: Str
    is_exchange: Bool | None = None
    sku: Str
    upc: Str
    tracking_number: Str | None = None
    package_tracking_status: (
        Literal[
            "PRE_TRANSIT",
            "ACCEPTED",
            "TRANSIT",
            "DELIVERED",
            "RETURNED",
            "FAILURE",
            "NOT_DROPPED_OFF",
        ]
        | None
    ) = None
    receiving_status: Literal["PENDING", "RECEIVED", "NOT_RECEIVED"] | None = None
    refund_financials: RefundFinancialsOut
    refund_type: Literal["REFUND", "STANDARD_EXCHANGE", "INSTANT_EXCHANGE", "INSTANT_STORE_CREDIT"]
    warehouse_receipt_condition: Str | None = None


class RmaCustomerOut(WireOut):
    tags: list[Str] | None = None


class RmaOut(WireOut):
    """An RMA as the RMAs v5 description requires it."""

    rma_identifier: Str
    status: Literal["PENDING_EXCHANGE", "CREATED", "REFUNDED", "PARTIAL_REFUND", "CANCELED"]
    created_at: Str
    updated_at: Str | None = None
    items: list[RmaItemOut]
    return_method: Literal["mail-back", "express-returns", "customer-keep", "home-pickup"]
    return_shipping_cost_cents: SignedCents
    bonus_credit_amount_cents: SignedCents
    gift_refund_only: Bool
    giftee_email: Str | None = None
    warehouse_id: Str | None = None
    receiving_complete: Bool | None = None
    concept: Str | None = None
    vendor: Str | None = None
    customer: RmaCustomerOut | None = None


# --- wire -> canonical -----------------------------------------------------------------------


def parse_rma(body: Body) -> Rma:
    """The canonical RMA of a webhook body (JSON text or parsed), in either vocabulary.

    Raises :class:`MappingError` naming the wire field, e.g.
    ``items[0].refund_financials.estimated_refund_amount_cents``.
    """
    wire = parse(RmaIn, body, what="RMA")
    units = tuple(
        build(partial(_unit_in, item), f"items[{i}]", "RMA") for i, item in enumerate(wire.items)
    )
    return build(
        lambda: Rma(
            id=wire.rma_identifier,
            status=RMA_STATUS_IN[wire.status],
            raw_status=wire.status,
            return_method=RETURN_METHOD_IN[wire.return_method],
            units=units,
            created_at=wire.created_at,
            updated_at=wire.updated_at or wire.created_at,
            gift_refund_only=wire.gift_refund_only,
            giftee_email=wire.giftee_email,
            return_shipping_cost_cents=wire.return_shipping_cost_cents,
            bonus_credit_cents=wire.bonus_credit_amount_cents,
            warehouse_id=wire.warehouse_id,
            receiving_complete=wire.receiving_complete,
            customer_tags=tuple(wire.customer.tags) if wire.customer else (),
            vendor=wire.vendor,
            concept=wire.concept,
        ),
        "",
        "RMA",
    )


def _unit_in(item: RmaItemIn) -> RmaUnit:
    money = item.refund_financials
    package = item.package_tracking_status
    receiving = item.receiving_status
    return RmaUnit(
        order_id=item.order_identifier,
        order_line_id=item.order_line_item_identifier,
        secondary_order_id=item.secondary_identifier,
        exchange_order_id=item.exchange_order_identifier,
        original_order_id=item.original_order_identifier,
        sku=item.sku,
        upc=item.upc,
        reason=item.return_reason,
        is_exchange=item.is_exchange,
        refund_type=REFUND_TYPE_IN[item.refund_type],
        tracking_number=item.tracking_number,
        package_status=None if package is None else PACKAGE_STATUS_IN[package],
        receiving_status=None if receiving is None else RECEIVING_STATUS_IN[receiving],
        condition=item.warehouse_receipt_condition,
        estimated_refund_cents=money.estimated_refund_amount_cents,
        provider_refund_cents=money.optoro_refund_amount_cents,
        shopper_refund_cents=money.shopper_refund_amount_cents,
    )


# --- canonical -> wire -----------------------------------------------------------------------


def rma_to_wire(rma: Rma, *, vocabulary: RmaVocabulary = "guide") -> dict[str, Any]:
    """The webhook body Optoro would send for ``rma``, in the guide's or the v5 vocabulary.

    Raises :class:`MappingError` naming the field for what the vocabulary has no word for
    (e.g. a ``REQUESTED`` RMA, an ``UNEVEN_EXCHANGE`` in v5) or for units that are not single
    units, and in v5 for fields the description requires (``upc``, ``return_reason``, ``sku``).
    """
    if vocabulary not in REFUND_TYPE_OUT:
        raise ValueError(f"unknown RMA vocabulary {vocabulary!r}; expected 'guide' or 'v5'")
    guide = vocabulary == "guide"
    wire: dict[str, Any] = {
        "rma_identifier": rma.id,
        "status": _word(RMA_STATUS_OUT, rma.status, "status", rma),
        "created_at": timestamp(rma.created_at),
        "updated_at": timestamp(rma.updated_at),
        "items": [_unit_out(unit, i, vocabulary, rma) for i, unit in enumerate(rma.units)],
        "return_method": _word(RETURN_METHOD_OUT, rma.return_method, "return_method", rma),
        "return_shipping_cost_cents": rma.return_shipping_cost_cents,
        "bonus_credit_amount_cents": rma.bonus_credit_cents,
        "gift_refund_only": rma.gift_refund_only,
        "giftee_email": rma.giftee_email,
        "warehouse_id": rma.warehouse_id,
        "receiving_complete": rma.receiving_complete,
        "concept": rma.concept,
        "vendor": rma.vendor,
        "customer": {"tags": list(rma.customer_tags)} if rma.customer_tags else None,
    }
    if not guide:
        return dump_out(RmaOut, wire, what=f"RMA {rma.id!r}")
    if not rma.bonus_credit_cents:
        del wire["bonus_credit_amount_cents"]  # the guide never shows it
    return {key: value for key, value in wire.items() if value is not None or key in _GUIDE_ALWAYS}


_GUIDE_ALWAYS = frozenset(
    {
        "exchange_order_identifier",
        "original_order_identifier",
        "return_reason",
        "sku",
        "tracking_number",
        "package_tracking_status",
        "receiving_status",
    }
)
"""Item keys every guide message carries, ``null`` when unknown."""


def _unit_out(unit: RmaUnit, index: int, vocabulary: RmaVocabulary, rma: Rma) -> dict[str, Any]:
    where = f"items[{index}]"
    if unit.qty != 1:
        raise MappingError(
            f"RMA {rma.id!r}: Optoro sends one item per unit, this unit holds {unit.qty}",
            field=f"{where}.quantity",
        )
    money = {
        "estimated_refund_amount_cents": unit.estimated_refund_cents,
        "optoro_refund_amount_cents": unit.provider_refund_cents,
        "shopper_refund_amount_cents": unit.shopper_refund_cents,
    }
    for key, value in money.items():
        if value is None:
            raise MappingError(
                f"RMA {rma.id!r}: {where}.refund_financials.{key} is required",
                field=f"{where}.refund_financials.{key}",
            )
    package, receiving = unit.package_status, unit.receiving_status
    wire: dict[str, Any] = {
        "order_line_item_identifier": unit.order_line_id,
        "order_identifier": unit.order_id,
        "secondary_identifier": unit.secondary_order_id,
        "exchange_order_identifier": unit.exchange_order_id,
        "original_order_identifier": unit.original_order_id,
        "return_reason": unit.reason,
        "is_exchange": unit.is_exchange,
        "sku": unit.sku,
        "upc": unit.upc,
        "tracking_number": unit.tracking_number,
        "package_tracking_status": None if package is None else PACKAGE_STATUS_OUT[package],
        "receiving_status": None if receiving is None else RECEIVING_STATUS_OUT[receiving],
        "refund_financials": money,
        "refund_type": _word(
            REFUND_TYPE_OUT[vocabulary], unit.refund_type, f"{where}.refund_type", rma
        ),
        "warehouse_receipt_condition": unit.condition,
    }
    if vocabulary == "guide":
        return {k: v for k, v in wire.items() if v is not None or k in _GUIDE_ALWAYS}
    wire["is_exchange"] = unit.is_exchange or None  # optional in v5; its examples omit false
    return wire


def _word(table: dict[Any, str], value: Any, field: str, rma: Rma) -> str:
    try:
        return table[value]
    except KeyError:
        raise MappingError(
            f"RMA {rma.id!r}: Optoro has no word for {field} {value!s}", field=field
        ) from None
