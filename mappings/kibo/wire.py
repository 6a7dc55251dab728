"""Kibo OMS return wire models (pydantic v2), named exactly as Kibo spells its fields.

Contract: Kibo's "Create Return" page (``POST /api/v2/return/``, schema ``return.json``;
``shared/specs/kibo-create-return-api.txt``) and the summary of "Get Return", "Process Return" and
"Return Event Notifications" (``shared/specs/kibo-oms-returns-beyond-create.md``).

Outbound models (:class:`KiboReturnRequest`, :class:`KiboProcessRequest`) are closed and strict:
exactly the documented fields, the documented types (no ``"1"`` for a quantity, no ``float`` for an
amount -- amounts are ``Decimal`` major units), minimums, maximum lengths and enums. A typo or
a value Kibo would refuse fails here as a :class:`~bridge.errors.MappingError` naming the wire field
(``item[0].SKU``), before anything is sent. Two tightenings of ours, both about what we *send*:
``item`` has at least one entry (an empty return is meaningless), and ``cardIssuer`` only goes
with ``giftCardType`` ``GC`` (the page: "used for GC payment types only").

The page's own sample body sends ``"quantity": "1"`` (a string) and ``"orderItemID": 0000000``
(not valid JSON); its parameter table says integer, and the table is what we follow.

Inbound models (:class:`KiboReturn`, :class:`KiboReturnItem`: Create/Get Return responses) are
tolerant: unknown fields ignored, every field optional except ``returnID``, numbers accepted as
JSON numbers or numeric strings, ``item`` also read from ``items``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

__all__ = [
    "CARD_ISSUERS",
    "GIFT_CARD_TYPES",
    "ITEM_STATUSES",
    "MAX_EXTERNAL_ORDER_ID",
    "MAX_GIFT_CARD_EMAIL",
    "MAX_GIFT_CARD_MESSAGE",
    "MAX_GIFT_CARD_NAME",
    "MAX_PART_NUMBER",
    "MAX_SKU",
    "MAX_UPC",
    "REFUND_TYPES",
    "RETURN_STATUSES",
    "KiboAcceptedItemQuantity",
    "KiboGiftCardInfo",
    "KiboOrderItemUnit",
    "KiboProcessRequest",
    "KiboReturn",
    "KiboReturnItem",
    "KiboReturnItemRequest",
    "KiboReturnRequest",
]

MAX_SKU = 50
MAX_UPC = 50
MAX_PART_NUMBER = 50
MAX_EXTERNAL_ORDER_ID = 100
MAX_GIFT_CARD_NAME = 85
MAX_GIFT_CARD_EMAIL = 250
MAX_GIFT_CARD_MESSAGE = 400

ITEM_STATUSES = ("ACCEPTED", "PENDING", "REJECTED")
RETURN_STATUSES = ("OPEN", "PROCESSING", "CLOSED")
REFUND_TYPES = ("STANDARD", "GIFT_CARD")
GIFT_CARD_TYPES = ("GC", "GT", "GX", "IM", "M1", "M2", "M3", "VA")
CARD_ISSUERS = ("SV", "CL", "VL")

ItemStatus = Literal["ACCEPTED", "PENDING", "REJECTED"]
ReturnStatus = Literal["OPEN", "PROCESSING", "CLOSED"]
RefundTypeWord = Literal["STANDARD", "GIFT_CARD"]
GiftCardType = Literal["GC", "GT", "GX", "IM", "M1", "M2", "M3", "VA"]
CardIssuer = Literal["SV", "CL", "VL"]


def _date_time(value: str) -> str:
    """RFC 3339 date-time (JSON Schema ``format: date-time``): a date, a time and an offset."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError("expected an RFC 3339 date-time, e.g. 2023-01-27T23:25:09Z") from None
    if "T" not in value.upper() or parsed.tzinfo is None:
        raise ValueError("expected an RFC 3339 date-time with an offset, e.g. 2023-01-27T23:25:09Z")
    return value


DateTime = Annotated[str, AfterValidator(_date_time)]
"""RFC 3339 date-time text (the page: "Supports date-time format")."""
Money = Annotated[Decimal, Field(allow_inf_nan=False)]
"""Decimal major units of the return's currency (JPY 1800, USD 18.00, KWD 1.800); strict
models take a ``Decimal`` only (never ``float``)."""
NonNegativeMoney = Annotated[Decimal, Field(allow_inf_nan=False, ge=0)]
IdMin0 = Annotated[int, Field(ge=0)]
IdMin1 = Annotated[int, Field(ge=1)]


class _Out(BaseModel):
    """What we send: closed, strict, frozen; dumped without ``None`` fields, Decimals kept."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    def wire(self) -> dict[str, Any]:
        """The JSON object to send (Python values; amounts stay ``Decimal``)."""
        dumped: dict[str, Any] = self.model_dump(exclude_none=True)
        return dumped


class KiboOrderItemUnit(_Out):
    orderItemUnitID: int
    serialNumber: Money | None = None
    """A number, as the page says (a serial number is usually text; we follow the page)."""


class KiboGiftCardInfo(_Out):
    """``/item/giftCardInfo``: how the refund is paid when it is paid as a gift card."""

    toName: Annotated[str, StringConstraints(max_length=MAX_GIFT_CARD_NAME)] | None = None
    fromName: Annotated[str, StringConstraints(max_length=MAX_GIFT_CARD_NAME)] | None = None
    email: Annotated[str, StringConstraints(max_length=MAX_GIFT_CARD_EMAIL)] | None = None
    message: Annotated[str, StringConstraints(max_length=MAX_GIFT_CARD_MESSAGE)] | None = None
    deliveryDate: DateTime | None = None
    printForm: bool | None = None
    giftCardType: GiftCardType
    cardIssuer: CardIssuer | None = None
    giftCardValue: NonNegativeMoney | None = None
    """If not set, Kibo uses the item's actualPrice."""

    @model_validator(mode="after")
    def _issuer_for_gc_only(self) -> Self:
        if self.cardIssuer is not None and self.giftCardType != "GC":
            raise ValueError("cardIssuer is used for giftCardType GC only")
        return self


class KiboReturnItemRequest(_Out):
    """``/item/[object]``: one order item being returned (``orderItemID`` and ``quantity``)."""

    returnItemID: int | None = None
    orderItemID: IdMin0
    quantity: IdMin1
    returnSubtotal: Money | None = None
    """What the customer is reimbursed for this item, in major units."""
    fulfillerSubtotal: Money | None = None
    status: ItemStatus | None = None
    reason: str | None = None
    partNumber: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_PART_NUMBER)] | None
    ) = None
    UPC: Annotated[str, StringConstraints(max_length=MAX_UPC)] | None = None
    SKU: Annotated[str, StringConstraints(max_length=MAX_SKU)] | None = None
    partName: str | None = None
    orderItemUnits: list[KiboOrderItemUnit] | None = None
    options: list[str] | None = None
    giftCardInfo: KiboGiftCardInfo | None = None


class KiboReturnRequest(_Out):
    """The Create Return body (``POST /api/v2/return/``)."""

    item: Annotated[list[KiboReturnItemRequest], Field(min_length=1)]
    returnID: IdMin1 | None = None
    returnLocation: IdMin1 | None = None
    externalOrderID: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_EXTERNAL_ORDER_ID)] | None
    ) = None
    status: ReturnStatus | None = None
    returnTotal: Money | None = None
    returnReductionTotal: Money | None = None
    fulfillerTotal: Money | None = None
    createdTime: DateTime | None = None
    clearedTime: DateTime | None = None
    confirmTime: DateTime | None = None
    refundType: RefundTypeWord | None = None
    orderID: IdMin1 | None = None
    shipmentID: IdMin1 | None = None


class KiboAcceptedItemQuantity(_Out):
    orderItemID: IdMin0
    quantityAccepted: Annotated[int, Field(ge=0)]
    """0 rejects the item."""


class KiboProcessRequest(_Out):
    """The Process Return body (``POST /api/v2/return/action/process/``)."""

    returnID: IdMin1
    acceptedItemQuantity: list[KiboAcceptedItemQuantity]
    locationID: int | None = None
    returnReductionOverride: NonNegativeMoney | None = None
    orderItemUnits: list[KiboOrderItemUnit] | None = None


# --- inbound, tolerant -----------------------------------------------------------------------


def _text(value: object) -> object:
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_text)]


class _In(BaseModel):
    """What Kibo answers: unknown keys ignored, lax types, frozen."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class KiboReturnItem(_In):
    returnItemID: int | None = None
    orderItemID: int | None = None
    quantity: int | None = None
    quantityAccepted: int | None = None
    """Set once the return is processed (Process Return's ``acceptedItemQuantity``)."""
    returnSubtotal: Decimal | None = None
    fulfillerSubtotal: Decimal | None = None
    status: Text | None = None
    reason: Text | None = None
    partNumber: Text | None = None
    UPC: Text | None = None
    SKU: Text | None = None
    partName: Text | None = None


class KiboReturn(_In):
    """A Create Return or Get Return response (same schema as the request, plus Kibo's fields)."""

    returnID: int
    status: Text | None = None
    returnTotal: Decimal | None = None
    returnReductionTotal: Decimal | None = None
    fulfillerTotal: Decimal | None = None
    createdTime: Text | None = None
    confirmTime: Text | None = None
    clearedTime: Text | None = None
    refundType: Text | None = None
    orderID: int | None = None
    externalOrderID: Text | None = None
    shipmentID: int | None = None
    returnLocation: int | None = None
    item: list[KiboReturnItem] = Field(
        default_factory=list, validation_alias=AliasChoices("item", "items")
    )
