"""Canonical vocabularies and lifecycle ranks.

These are the bridge's own words. Partner words (Optoro's ``Shipped``, ``STANDARD_EXCHANGE``,
``mail-back``, ReturnLogic's ``InTransit``, Kibo's ``OPEN``) are translated to and from these in
``mappings/``, never here.
"""

from __future__ import annotations

from enum import StrEnum


class Tag(StrEnum):
    """Return-eligibility tags on orders and lines; platforms spell them their own way
    (the mappings translate), any other tag string passes through unchanged."""

    FINAL_SALE = "final_sale"
    THIRD_PARTY = "third_party"
    PICKUP_IN_STORE = "pickup_in_store"
    GIFT_CARD = "gift_card"
    CANCELED = "canceled"
    CS_REQUIRED = "cs_required"


class OrderStatus(StrEnum):
    CREATED = "CREATED"
    SHIPPED = "SHIPPED"
    CANCELED = "CANCELED"


class RmaStatus(StrEnum):
    """Where a return authorisation is in its lifecycle (see :func:`rma_status_rank`)."""

    REQUESTED = "REQUESTED"
    """Asked for by the shopper, not yet authorised."""
    PENDING_EXCHANGE = "PENDING_EXCHANGE"
    """Authorised, waiting for its exchange order to be placed."""
    CREATED = "CREATED"
    """Authorised and open."""
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"
    """Every unit refunded or exchanged."""
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"


class ReturnMethod(StrEnum):
    MAIL_BACK = "MAIL_BACK"
    EXPRESS_RETURNS = "EXPRESS_RETURNS"
    """Dropped off unboxed at a partner location (QR code)."""
    HOME_PICKUP = "HOME_PICKUP"
    CUSTOMER_KEEP = "CUSTOMER_KEEP"
    """Refunded without sending the goods back."""
    OTHER = "OTHER"


class PackageStatus(StrEnum):
    """Carrier status of the package holding a returned unit (see :func:`package_status_rank`)."""

    NOT_DROPPED_OFF = "NOT_DROPPED_OFF"
    PRE_TRANSIT = "PRE_TRANSIT"
    """Label created, not yet with the carrier."""
    ACCEPTED = "ACCEPTED"
    """Taken in at a drop-off location or picked up (express returns, home pickup)."""
    TRANSIT = "TRANSIT"
    """Scanned by the carrier."""
    DELIVERED = "DELIVERED"
    RETURNED = "RETURNED"
    """Sent back to the shopper by the carrier."""
    FAILURE = "FAILURE"


class ReceivingStatus(StrEnum):
    """Warehouse receipt of a returned unit."""

    PENDING = "PENDING"
    RECEIVED = "RECEIVED"
    NOT_RECEIVED = "NOT_RECEIVED"


class RefundType(StrEnum):
    """How the shopper is made whole for a returned unit."""

    REFUND = "REFUND"
    """Back to the original form of payment."""
    EVEN_EXCHANGE = "EVEN_EXCHANGE"
    """For another variant of the same value, shipped by an exchange order (standard exchange)."""
    INSTANT_EXCHANGE = "INSTANT_EXCHANGE"
    """Even exchange shipped before the return arrives."""
    UNEVEN_EXCHANGE = "UNEVEN_EXCHANGE"
    """For an item of a different value."""
    STORE_CREDIT = "STORE_CREDIT"
    """Gift card or store credit, possibly with a bonus."""
    WARRANTY = "WARRANTY"

    @property
    def is_exchange(self) -> bool:
        return self in _EXCHANGE_TYPES


_EXCHANGE_TYPES = frozenset(
    {RefundType.EVEN_EXCHANGE, RefundType.INSTANT_EXCHANGE, RefundType.UNEVEN_EXCHANGE}
)


class ExchangeKind(StrEnum):
    """What an exchange order item is."""

    EVEN = "EVEN"
    """A replacement variant."""
    GIFT_CARD = "GIFT_CARD"
    """A gift card standing for the listed return items."""


class WeightUnit(StrEnum):
    LB = "LB"
    OZ = "OZ"
    G = "G"
    KG = "KG"


_RMA_STATUS_RANK: dict[RmaStatus, int] = {
    RmaStatus.REQUESTED: 0,
    RmaStatus.PENDING_EXCHANGE: 1,
    RmaStatus.CREATED: 2,
    RmaStatus.PARTIALLY_REFUNDED: 3,
    RmaStatus.REFUNDED: 4,
    RmaStatus.CANCELED: 5,
    RmaStatus.REJECTED: 5,
}

_PACKAGE_STATUS_RANK: dict[PackageStatus | None, int] = {
    None: 0,
    PackageStatus.NOT_DROPPED_OFF: 1,
    PackageStatus.PRE_TRANSIT: 1,
    PackageStatus.ACCEPTED: 2,
    PackageStatus.TRANSIT: 2,
    PackageStatus.DELIVERED: 3,
    PackageStatus.RETURNED: 3,
    PackageStatus.FAILURE: 3,
}

_RECEIVING_STATUS_RANK: dict[ReceivingStatus | None, int] = {
    None: 0,
    ReceivingStatus.PENDING: 0,
    ReceivingStatus.RECEIVED: 1,
    ReceivingStatus.NOT_RECEIVED: 1,
}


def rma_status_rank(status: RmaStatus) -> int:
    """REQUESTED < PENDING_EXCHANGE < CREATED < PARTIALLY_REFUNDED < REFUNDED < CANCELED, REJECTED.

    CANCELED and REJECTED are terminal and rank equal.
    """
    return _RMA_STATUS_RANK[status]


def package_status_rank(status: PackageStatus | None) -> int:
    """None < NOT_DROPPED_OFF/PRE_TRANSIT < ACCEPTED/TRANSIT < DELIVERED/RETURNED/FAILURE."""
    return _PACKAGE_STATUS_RANK[status]


def receiving_status_rank(status: ReceivingStatus | None) -> int:
    """None/PENDING < RECEIVED/NOT_RECEIVED."""
    return _RECEIVING_STATUS_RANK[status]
