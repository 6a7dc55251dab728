"""ReturnLogic RMAs (``GET /v1/rmas``, ``/v1/rmas/{id}``) -> canonical :class:`~bridge.domain.Rma`.

Workflow status (``workflowStatus``; ``raw_status`` keeps the word):

============== ======================== ===========================================================
ReturnLogic    RmaStatus                note
============== ======================== ===========================================================
Requested      REQUESTED                asked for, not yet authorised
Authorized     CREATED
Active         CREATED                  in the API's enum, undocumented: an open RMA
InTransit      CREATED                  package ``TRANSIT``
Delivered      CREATED                  package ``DELIVERED``
Received       CREATED                  package ``DELIVERED``; items by ``rmaItemReceived``
Processed      REFUNDED                 ``PARTIALLY_REFUNDED`` when ``isAllProcessed`` is false
Complete       REFUNDED
Canceled       CANCELED
Abandoned      CANCELED                 the shopper never finished the request
Rejected       REJECTED
============== ======================== ===========================================================

Any other word is a ``MappingError`` on ``workflowStatus`` (case is ignored).

Return type (``rmaItems[].returnType``) -> :class:`~bridge.domain.RefundType`: ``refund`` ->
REFUND, ``exchange`` -> EVEN_EXCHANGE (ReturnLogic exchanges are variant swaps; it does not say
whether the value differs), ``giftcard`` -> STORE_CREDIT, ``warranty`` -> WARRANTY.

Package status (one label per RMA, so the same for every unit), the most advanced of:
``deliveredUpdateDate`` set or status Delivered/Received -> DELIVERED; ``inTransitUpdateDate``
set or status InTransit -> TRANSIT; a tracking number on ``shippingLabel`` -> PRE_TRANSIT
(label created); otherwise None (not derivable). Receiving per item: ``rmaItemReceived`` true ->
RECEIVED, false -> PENDING, absent -> None.

Other fields: one :class:`~bridge.domain.RmaUnit` per RMA item with ``qty`` = ``quantity``
(``accepted_qty`` = ``acceptedQuantity``); ``order_id`` = ``externalOrderNumber`` (the
canonical order id, ReturnLogic's ``orderNumber``), ``secondary_order_id`` = the item's
``orderId``, ``order_line_id`` = ``externalOrderLineId``; reason = ``returnReasonDescription``,
reason code = ``returnReasonCode``; condition = ``disposition.code``; ``upc`` =
``productVariantBarcode``. Refund estimates stay None: ReturnLogic totals are per return type,
not per item. ``return_method`` = MAIL_BACK with a shipping label, else OTHER;
``gift_refund_only`` when every item is ``giftcard``; ``return_shipping_cost`` = label ``cost``;
``bonus_credit`` = gift card + exchange ``bonusAmount``; ``warehouse_id`` =
``toShipping.warehouseNickname``; ``receiving_complete`` = every item received; dates from
``timeline`` (``updated_at`` falls back to ``createDate``).

Money: an RMA names no currency (ReturnLogic's RMA has no currency field; only the order has
``shopCurrencyCode``), so its amounts (label ``cost``, ``bonusAmount``) are read in the
``currency`` the caller passes -- the retailer's configured store currency, default
:data:`~mappings.returnlogic._fields.DEFAULT_CURRENCY` -- and converted to that currency's
ISO 4217 minor units. An amount with more decimals than the currency has (``7.25`` for a JPY
store) is a ``MappingError`` naming the field, never rounded: it means the currency is wrong,
not that a cent is spare.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from bridge.domain import (
    PackageStatus,
    ReceivingStatus,
    RefundType,
    ReturnMethod,
    Rma,
    RmaStatus,
    RmaUnit,
    major_to_minor,
)
from bridge.errors import MappingError
from mappings.returnlogic._address import from_rl_address
from mappings.returnlogic._fields import DEFAULT_CURRENCY, mapping_error, page_records
from mappings.returnlogic.wire import RlRma, RlRmaItem

__all__ = [
    "RETURN_TYPES",
    "RMA_STATUSES",
    "rma_status",
    "rma_to_canonical",
    "rmas_page",
]

RMA_STATUSES: dict[str, RmaStatus] = {
    "requested": RmaStatus.REQUESTED,
    "authorized": RmaStatus.CREATED,
    "active": RmaStatus.CREATED,
    "intransit": RmaStatus.CREATED,
    "delivered": RmaStatus.CREATED,
    "received": RmaStatus.CREATED,
    "processed": RmaStatus.REFUNDED,
    "complete": RmaStatus.REFUNDED,
    "canceled": RmaStatus.CANCELED,
    "abandoned": RmaStatus.CANCELED,
    "rejected": RmaStatus.REJECTED,
}
"""``workflowStatus`` (casefolded) -> RmaStatus; see the module docstring."""

RETURN_TYPES: dict[str, RefundType] = {
    "refund": RefundType.REFUND,
    "exchange": RefundType.EVEN_EXCHANGE,
    "giftcard": RefundType.STORE_CREDIT,
    "warranty": RefundType.WARRANTY,
}

_DELIVERED_WORDS = frozenset({"delivered", "received"})


def rmas_page(body: bytes | str) -> list[dict[str, Any]]:
    """The RMAs of one ``GET /v1/rmas`` page, as raw dicts for :func:`rma_to_canonical`."""
    return page_records(body, "GET /v1/rmas")


def rma_status(workflow_status: str, is_all_processed: bool | None = None) -> RmaStatus:
    """The status table; ``MappingError`` on ``workflowStatus`` for an unknown word."""
    word = workflow_status.strip().casefold()
    status = RMA_STATUSES.get(word)
    if status is None:
        raise MappingError(
            f"unknown RMA workflowStatus {workflow_status!r}", field="workflowStatus"
        )
    if word == "processed" and is_all_processed is False:
        return RmaStatus.PARTIALLY_REFUNDED
    return status


def rma_to_canonical(wire: dict[str, Any], currency: str = DEFAULT_CURRENCY) -> Rma:
    """Map one ReturnLogic RMA record (parsed with ``parse_float=Decimal``) to an Rma, its
    amounts read in ``currency`` (the store's: the RMA names none)."""
    try:
        rl = RlRma.model_validate(wire)
    except ValidationError as exc:
        raise mapping_error(exc) from exc
    try:
        return _rma(rl, currency)
    except ValidationError as exc:
        raise mapping_error(exc, "rma") from exc


# --- implementation --------------------------------------------------------------------------


def _package_status(rl: RlRma, word: str, tracking: str | None) -> PackageStatus | None:
    timeline = rl.timeline
    if timeline.deliveredUpdateDate is not None or word in _DELIVERED_WORDS:
        return PackageStatus.DELIVERED
    if timeline.inTransitUpdateDate is not None or word == "intransit":
        return PackageStatus.TRANSIT
    if tracking:
        return PackageStatus.PRE_TRANSIT
    return None


def _rma(rl: RlRma, currency: str) -> Rma:
    status = rma_status(rl.workflowStatus, rl.isAllProcessed)
    word = rl.workflowStatus.strip().casefold()
    if rl.externalOrderNumber is None:
        raise MappingError("RMA has no externalOrderNumber", field="externalOrderNumber")
    label = rl.shippingLabel
    tracking = label.trackingNumber if label else None
    package = _package_status(rl, word, tracking)
    units = tuple(
        _unit(item, index, rl.externalOrderNumber, tracking, package)
        for index, item in enumerate(rl.rmaItems)
    )
    bonus = 0
    if rl.totals is not None:
        for bucket, name in ((rl.totals.giftCard, "giftCard"), (rl.totals.exchange, "exchange")):
            if bucket is not None and bucket.bonusAmount is not None:
                bonus += major_to_minor(
                    bucket.bonusAmount, currency, field=f"totals.{name}.bonusAmount", exact=True
                )
    received = [item.rmaItemReceived for item in rl.rmaItems]
    return Rma(
        id=rl.rlRmaId,
        status=status,
        raw_status=rl.workflowStatus,
        return_method=ReturnMethod.MAIL_BACK if label is not None else ReturnMethod.OTHER,
        units=units,
        created_at=rl.timeline.createDate,
        updated_at=rl.timeline.updateDate or rl.timeline.createDate,
        gift_refund_only=bool(units)
        and all(unit.refund_type is RefundType.STORE_CREDIT for unit in units),
        return_shipping_cost_cents=major_to_minor(
            label.cost, currency, field="shippingLabel.cost", exact=True
        )
        if label is not None and label.cost is not None
        else 0,
        bonus_credit_cents=bonus,
        warehouse_id=rl.toShipping.warehouseNickname if rl.toShipping else None,
        receiving_complete=all(received) if received else None,
        carrier=label.carrier if label else None,
        customer_email=rl.rmaEmail or rl.orderEmail,
        from_address=from_rl_address(rl.fromShipping, "fromShipping"),
        expires_at=rl.rmaExpirationDate,
        refs={"returnlogic": rl.rlRmaId},
    )


def _unit(
    item: RlRmaItem,
    index: int,
    order_id: str,
    tracking: str | None,
    package: PackageStatus | None,
) -> RmaUnit:
    where = f"rmaItems[{index}]"
    refund_type = RETURN_TYPES.get(item.returnType.strip().casefold())
    if refund_type is None:
        raise MappingError(f"unknown returnType {item.returnType!r}", field=f"{where}.returnType")
    if item.externalOrderLineId is None:
        raise MappingError(
            "RMA item has no externalOrderLineId", field=f"{where}.externalOrderLineId"
        )
    if item.quantity < 1:
        raise MappingError("RMA item quantity must be at least 1", field=f"{where}.quantity")
    receiving = (
        None
        if item.rmaItemReceived is None
        else ReceivingStatus.RECEIVED
        if item.rmaItemReceived
        else ReceivingStatus.PENDING
    )
    try:
        return RmaUnit(
            order_id=order_id,
            order_line_id=item.externalOrderLineId,
            secondary_order_id=item.orderId,
            qty=item.quantity,
            accepted_qty=item.acceptedQuantity,
            sku=item.sku,
            upc=item.productVariantBarcode,
            title=item.name,
            reason=item.returnReasonDescription,
            reason_code=item.returnReasonCode,
            refund_type=refund_type,
            tracking_number=tracking,
            package_status=package,
            receiving_status=receiving,
            condition=item.disposition.code if item.disposition else None,
            refs={"returnlogic": item.rlRmaItemId},
        )
    except ValidationError as exc:
        raise mapping_error(exc, where) from exc
