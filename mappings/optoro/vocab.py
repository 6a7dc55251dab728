"""Optoro's words <-> the bridge's canonical words, in one place.

Optoro speaks two vocabularies for RMAs: the one of its Returns Experience integration guide
(every sample payload, ``shared/fixtures/optoro-scenarios``) and the one of its RMAs OpenAPI
description v5. Both are **accepted**; :func:`~mappings.optoro.rmas.rma_to_wire` **sends** either,
as asked (``vocabulary="guide"`` reproduces the guide, ``"v5"`` satisfies the description).

| canonical | Optoro words accepted | sent, guide | sent, v5 |
|---|---|---|---|
| **RefundType** | | | |
| `REFUND` | `REFUND` | `REFUND` | same |
| `EVEN_EXCHANGE` | `EVEN_EXCHANGE`, `STANDARD_EXCHANGE` | `EVEN_EXCHANGE` | `STANDARD_EXCHANGE` |
| `UNEVEN_EXCHANGE` | `UNEVEN_EXCHANGE` (g) | `UNEVEN_EXCHANGE` | -- |
| `INSTANT_EXCHANGE` | `INSTANT_EXCHANGE` (v5) | `INSTANT_EXCHANGE` | same |
| `STORE_CREDIT` | `INSTANT_STORE_CREDIT` (v5) | `INSTANT_STORE_CREDIT` | same |
| `WARRANTY` | -- | -- | -- |
| **RmaStatus** | | | |
| `PENDING_EXCHANGE` | `PENDING_EXCHANGE` (v5) | `PENDING_EXCHANGE` | same |
| `CREATED` | `CREATED` | `CREATED` | same |
| `PARTIALLY_REFUNDED` | `PARTIAL_REFUND` (v5) | `PARTIAL_REFUND` | same |
| `REFUNDED` | `REFUNDED` | `REFUNDED` | same |
| `CANCELED` | `CANCELED` | `CANCELED` | same |
| `REQUESTED`, `REJECTED` | -- | -- | -- |
| **ReturnMethod** | | | |
| `MAIL_BACK` | `mail-back` | `mail-back` | same |
| `EXPRESS_RETURNS` | `express-returns`, `express-return` (g prose) | `express-returns` | same |
| `CUSTOMER_KEEP` | `customer-keep` | `customer-keep` | same |
| `HOME_PICKUP` | `home-pickup` (v5) | `home-pickup` | same |
| `OTHER` | -- | -- | -- |
| **PackageStatus** | the canonical word, or `null` (unknown) | same | same |
| | (`NOT_DROPPED_OFF` is v5 only) | | |
| **ReceivingStatus** | the canonical word, or `null` | same | same |
| **OrderStatus** (RPO) | | | |
| `CREATED` | `Created` | `Created` | |
| `SHIPPED` | `Shipped` | `Shipped` | |
| `CANCELED` | `Canceled`, `Cancelled` (g prose) | `Canceled` | |

(g) = the guide's vocabulary, (v5) = the RMAs v5 description's; -- = no word: refused inbound,
a :class:`~bridge.errors.MappingError` outbound. PackageStatus words: `NOT_DROPPED_OFF`,
`PRE_TRANSIT`, `ACCEPTED`, `TRANSIT`, `DELIVERED`, `RETURNED`, `FAILURE`; ReceivingStatus words:
`PENDING`, `RECEIVED`, `NOT_RECEIVED`.

Tags (order, item and refund ``tags`` of Returns Portal Orders) are free strings in the domain;
the ones Optoro acts on have a canonical spelling here, matched case-insensitively in both
directions (so a source platform's ``finalsale`` goes out as ``FinalSale``); any other tag passes
through unchanged. A line's ``is_gift_card`` also goes out as ``gift-card``.

| canonical tag | Optoro tag | meaning for Optoro |
|---|---|---|
| `final_sale` | `FinalSale` | not returnable |
| `gift_card` | `gift-card` | not returnable (gift card) |
| `canceled` | `canceled` | canceled |
| `third_party` | `Thirdparty` | sold by a third party, not returnable |
| `pickup_in_store` | `pickup_in_store` | bought online, picked up in store |
| `cs_required` | `cs-required` | return needs customer service |
| `shipping_rate_override` | `ShippingRateOverride` | order-level shipping override |
| `ignore_refund` | `ignore_refund` | refund tag: does not affect return eligibility |

Unknown words in an enumerated field are refused (MappingError naming the field) rather than
guessed: a new Optoro word is a mapping change, replayed from the dead letters.
"""

from __future__ import annotations

from typing import Literal

from bridge.domain import (
    OrderStatus,
    PackageStatus,
    ReceivingStatus,
    RefundType,
    ReturnMethod,
    RmaStatus,
)

__all__ = [
    "ORDER_STATUS_IN",
    "ORDER_STATUS_OUT",
    "PACKAGE_STATUS_IN",
    "PACKAGE_STATUS_OUT",
    "RECEIVING_STATUS_IN",
    "RECEIVING_STATUS_OUT",
    "REFUND_TYPE_IN",
    "REFUND_TYPE_OUT",
    "RETURN_METHOD_IN",
    "RETURN_METHOD_OUT",
    "RMA_STATUS_IN",
    "RMA_STATUS_OUT",
    "TAGS_IN",
    "TAGS_OUT",
    "RmaVocabulary",
    "tag_in",
    "tag_out",
]

RmaVocabulary = Literal["guide", "v5"]
"""Which Optoro vocabulary an RMA is written in: the integration guide's or RMAs v5's."""

# --- RMAs ------------------------------------------------------------------------------------

REFUND_TYPE_IN: dict[str, RefundType] = {
    "REFUND": RefundType.REFUND,
    "EVEN_EXCHANGE": RefundType.EVEN_EXCHANGE,  # guide
    "UNEVEN_EXCHANGE": RefundType.UNEVEN_EXCHANGE,  # guide
    "STANDARD_EXCHANGE": RefundType.EVEN_EXCHANGE,  # v5
    "INSTANT_EXCHANGE": RefundType.INSTANT_EXCHANGE,  # v5
    "INSTANT_STORE_CREDIT": RefundType.STORE_CREDIT,  # v5
}
REFUND_TYPE_OUT: dict[RmaVocabulary, dict[RefundType, str]] = {
    "guide": {
        RefundType.REFUND: "REFUND",
        RefundType.EVEN_EXCHANGE: "EVEN_EXCHANGE",
        RefundType.UNEVEN_EXCHANGE: "UNEVEN_EXCHANGE",
        RefundType.INSTANT_EXCHANGE: "INSTANT_EXCHANGE",
        RefundType.STORE_CREDIT: "INSTANT_STORE_CREDIT",
    },
    "v5": {
        RefundType.REFUND: "REFUND",
        RefundType.EVEN_EXCHANGE: "STANDARD_EXCHANGE",
        RefundType.INSTANT_EXCHANGE: "INSTANT_EXCHANGE",
        RefundType.STORE_CREDIT: "INSTANT_STORE_CREDIT",
    },
}

RMA_STATUS_IN: dict[str, RmaStatus] = {
    "PENDING_EXCHANGE": RmaStatus.PENDING_EXCHANGE,  # v5
    "CREATED": RmaStatus.CREATED,
    "PARTIAL_REFUND": RmaStatus.PARTIALLY_REFUNDED,  # v5
    "REFUNDED": RmaStatus.REFUNDED,
    "CANCELED": RmaStatus.CANCELED,
}
RMA_STATUS_OUT: dict[RmaStatus, str] = {
    RmaStatus.PENDING_EXCHANGE: "PENDING_EXCHANGE",
    RmaStatus.CREATED: "CREATED",
    RmaStatus.PARTIALLY_REFUNDED: "PARTIAL_REFUND",
    RmaStatus.REFUNDED: "REFUNDED",
    RmaStatus.CANCELED: "CANCELED",
}

RETURN_METHOD_IN: dict[str, ReturnMethod] = {
    "mail-back": ReturnMethod.MAIL_BACK,
    "express-returns": ReturnMethod.EXPRESS_RETURNS,
    "express-return": ReturnMethod.EXPRESS_RETURNS,  # the guide's prose
    "customer-keep": ReturnMethod.CUSTOMER_KEEP,
    "home-pickup": ReturnMethod.HOME_PICKUP,  # v5
}
RETURN_METHOD_OUT: dict[ReturnMethod, str] = {
    ReturnMethod.MAIL_BACK: "mail-back",
    ReturnMethod.EXPRESS_RETURNS: "express-returns",
    ReturnMethod.CUSTOMER_KEEP: "customer-keep",
    ReturnMethod.HOME_PICKUP: "home-pickup",
}

PACKAGE_STATUS_IN: dict[str, PackageStatus] = {
    "NOT_DROPPED_OFF": PackageStatus.NOT_DROPPED_OFF,  # v5
    "PRE_TRANSIT": PackageStatus.PRE_TRANSIT,
    "ACCEPTED": PackageStatus.ACCEPTED,
    "TRANSIT": PackageStatus.TRANSIT,
    "DELIVERED": PackageStatus.DELIVERED,
    "RETURNED": PackageStatus.RETURNED,
    "FAILURE": PackageStatus.FAILURE,
}
PACKAGE_STATUS_OUT: dict[PackageStatus, str] = {v: k for k, v in PACKAGE_STATUS_IN.items()}

RECEIVING_STATUS_IN: dict[str, ReceivingStatus] = {
    "PENDING": ReceivingStatus.PENDING,
    "RECEIVED": ReceivingStatus.RECEIVED,
    "NOT_RECEIVED": ReceivingStatus.NOT_RECEIVED,
}
RECEIVING_STATUS_OUT: dict[ReceivingStatus, str] = {v: k for k, v in RECEIVING_STATUS_IN.items()}

# --- Returns Portal Orders -------------------------------------------------------------------

ORDER_STATUS_IN: dict[str, OrderStatus] = {
    "Created": OrderStatus.CREATED,
    "Shipped": OrderStatus.SHIPPED,
    "Canceled": OrderStatus.CANCELED,
    "Cancelled": OrderStatus.CANCELED,  # the guide's prose
}
ORDER_STATUS_OUT: dict[OrderStatus, str] = {
    OrderStatus.CREATED: "Created",
    OrderStatus.SHIPPED: "Shipped",
    OrderStatus.CANCELED: "Canceled",
}

TAGS_OUT: dict[str, str] = {
    "final_sale": "FinalSale",
    "gift_card": "gift-card",
    "canceled": "canceled",
    "third_party": "Thirdparty",
    "pickup_in_store": "pickup_in_store",
    "cs_required": "cs-required",
    "shipping_rate_override": "ShippingRateOverride",
    "ignore_refund": "ignore_refund",
}
"""Canonical tag -> Optoro tag."""

TAGS_IN: dict[str, str] = {
    **{wire.casefold(): canonical for canonical, wire in TAGS_OUT.items()},
    **{canonical.casefold(): canonical for canonical in TAGS_OUT},
    "cancelled": "canceled",
}
"""Optoro (or canonical) tag, casefolded -> canonical tag."""

GIFT_CARD_TAG = "gift_card"


def tag_in(wire: str) -> str:
    """The canonical spelling of an Optoro tag; unknown tags unchanged."""
    return TAGS_IN.get(wire.casefold(), wire)


def tag_out(tag: str) -> str:
    """The Optoro spelling of a canonical tag; unknown tags unchanged."""
    canonical = TAGS_IN.get(tag.casefold())
    return tag if canonical is None else TAGS_OUT[canonical]
