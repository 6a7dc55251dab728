"""ReturnLogic wire models (pydantic v2), named exactly as the API spells its fields.

Inbound models (``GET /v1/orders``, ``/v1/rmas``, ``/v1/products``, the order-create response)
ignore fields they do not know, since ReturnLogic may add fields at any time, and declare only
what the mappings read or what documents the shape. Their field types share one set of
converters (``_fields``) with the order mapping, which reads order records directly in a single
pass for speed: a field both read is read alike by :class:`RlOrder` and ``order_to_canonical``.
Fields marked "not in the spec" are read when a payload carries them and are otherwise absent, never
guessed.

The outbound model (``POST /v1/orders``) is closed: exactly the documented request shape, so a
typo is an error here and not a silently dropped field there.

The list endpoints return bare JSON arrays (no envelope object); :data:`RlOrderList` and
friends validate a whole page at once, the mappings validate record by record so a bad record
can be reported on its own.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel

from mappings.returnlogic._fields import (
    Amount,
    Count,
    Dollars,
    Flag,
    OptId,
    OptText,
    RlId,
    SignedCount,
    Strings,
    Text,
    When,
)

__all__ = [
    "RlAddress",
    "RlAddressOut",
    "RlCount",
    "RlCustomOrderItemCreate",
    "RlCustomer",
    "RlDisposition",
    "RlOrder",
    "RlOrderCreateRequest",
    "RlOrderDiscount",
    "RlOrderDiscountOut",
    "RlOrderItem",
    "RlOrderItemCreate",
    "RlOrderList",
    "RlProduct",
    "RlProductList",
    "RlProductOption",
    "RlRma",
    "RlRmaAddress",
    "RlRmaItem",
    "RlRmaList",
    "RlShippingLabel",
    "RlTimeline",
    "RlTotals",
    "RlTotalsBucket",
    "RlVariant",
    "RlVariantOption",
]


class _Inbound(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Outbound(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- orders ----------------------------------------------------------------------------------


class RlAddress(_Inbound):
    address1: OptText = None
    address2: OptText = None
    city: OptText = None
    region: OptText = None
    """Full region name (``Pennsylvania``)."""
    regionCode: OptText = None
    postcode: OptText = None
    country: OptText = None
    countryCode: OptText = None
    # not in the spec: used when present
    name: OptText = None
    firstName: OptText = None
    lastName: OptText = None
    phone: OptText = None


class RlCustomer(_Inbound):
    """A ``/v1/customers`` record; also read when an order carries one (not in the spec)."""

    rlCustomerId: OptId = None
    email: OptText = None
    externalCustomerId: OptId = None
    tags: Strings = Field(default_factory=list)
    # not in the spec: used when present
    firstName: OptText = None
    lastName: OptText = None
    phone: OptText = None


class RlOrderDiscount(_Inbound):
    rlOrderDiscountId: OptId = None
    rlOrderId: OptId = None
    externalOrderId: OptId = None
    amount: Dollars
    code: OptText = None
    isShippingDiscount: Flag = False


class RlOrderItem(_Inbound):
    rlOrderItemId: OptId = None
    rlOrderId: OptId = None
    externalOrderItemId: OptId = None
    externalProductId: OptId = None
    sku: OptText = None
    displayName: OptText = None
    quantity: Count
    pricePerItem: Dollars
    discountPerItem: Dollars | None = None
    actualPricePerItem: Dollars | None = None
    taxPerItem: Dollars | None = None
    totalPrice: Dollars | None = None
    """``pricePerItem * quantity``, before discount and tax."""
    totalDiscount: Dollars | None = None
    totalTax: Dollars | None = None
    isTaxable: Flag | None = None
    fulfillableQuantity: Count | None = None
    """Units not yet fulfilled."""
    fulfillmentStatus: OptText = None
    isGiftCard: Flag = False
    properties: list[Any] = Field(default_factory=list)
    """Strings (``"final_sale"``, ``"name: value"``) or ``{"name", "value"}`` objects."""
    refundQuantity: Count = 0
    grams: Count | None = None
    vendor: OptText = None
    # not in the spec: used when present
    rlProductVariantId: OptId = None
    tags: Strings = Field(default_factory=list)


class RlOrder(_Inbound):
    rlOrderId: RlId
    externalOrderId: OptId = None
    externalSource: OptText = None
    sourceType: OptText = None
    createDate: When | None = None
    updateDate: When | None = None
    externalCreateDate: When | None = None
    externalUpdateDate: When | None = None
    billingAddress: RlAddress | None = None
    shippingAddress: RlAddress | None = None
    customerEmail: OptText = None
    customerPhone: OptText = None
    orderName: OptText = None
    orderNumber: RlId
    gateway: OptText = None
    subtotalPrice: Dollars | None = None
    totalPrice: Dollars | None = None
    shippingPrice: Dollars
    fees: Dollars
    orderLevelDiscount: Dollars = Decimal(0)
    taxPrice: Dollars
    taxesIncluded: Flag
    refundAmount: Dollars
    shippedAt: When | None = None
    shopCurrencyCode: Text
    tags: Strings = Field(default_factory=list)
    fulfillmentStatus: OptText = None
    financialStatus: OptText = None
    isPseudo: Flag | None = None
    discounts: list[RlOrderDiscount] = Field(default_factory=list)
    orderItems: list[RlOrderItem] = Field(default_factory=list)
    # not in the spec: used when present
    customer: RlCustomer | None = None
    rlCustomerId: OptId = None
    externalCustomerId: OptId = None
    canceledAt: When | None = None
    cancelledAt: When | None = None


class RlCount(_Inbound):
    """``GET /v1/<resource>/count``."""

    count: Count


# --- RMAs ------------------------------------------------------------------------------------


class RlRmaAddress(RlAddress):
    warehouseNickname: OptText = None


class RlTimeline(_Inbound):
    createDate: When
    updateDate: When | None = None
    inTransitUpdateDate: When | None = None
    deliveredUpdateDate: When | None = None
    authorizedDate: When | None = None


class RlDisposition(_Inbound):
    code: OptText = None
    description: OptText = None
    comment: OptText = None
    restockProcessed: Flag | None = None
    restockQuantity: Count | None = None


class RlRmaItem(_Inbound):
    rlRmaItemId: RlId
    createDate: When | None = None
    updateDate: When | None = None
    rlRmaId: OptId = None
    externalOrderLineId: OptId = None
    orderId: OptId = None
    """The order's id on the shop (``externalOrderId`` of the order)."""
    quantity: Count
    acceptedQuantity: Count | None = None
    rmaItemApproved: Flag | None = None
    returnReasonCode: OptText = None
    returnReasonDescription: OptText = None
    productVariantBarcode: OptText = None
    sku: OptText = None
    returnType: Text
    rmaItemReceived: Flag | None = None
    disposition: RlDisposition | None = None
    rlProductId: OptId = None
    rlProductVariantId: OptId = None
    name: OptText = None
    variantName: OptText = None


class RlShippingLabel(_Inbound):
    cost: Dollars | None = None
    trackingNumber: OptText = None
    carrier: OptText = None
    shippingMethod: OptText = None


class RlTotalsBucket(_Inbound):
    subtotal: Dollars | None = None
    taxAmount: Dollars | None = None
    discountItemsAmount: Dollars | None = None
    shippingAmount: Dollars | None = None
    otherFeeAmount: Dollars | None = None
    bonusAmount: Dollars | None = None
    total: Dollars | None = None
    isProcessed: Flag | None = None
    isManuallyProcessed: Flag | None = None
    isInitiated: Flag | None = None


class RlTotals(_Inbound):
    warranty: RlTotalsBucket | None = None
    refund: RlTotalsBucket | None = None
    exchange: RlTotalsBucket | None = None
    giftCard: RlTotalsBucket | None = None


class RlRma(_Inbound):
    teamId: OptText = None
    rlRmaId: RlId
    rlOrderId: OptId = None
    externalOrderNumber: OptId = None
    orderName: OptText = None
    rmaEmail: OptText = None
    orderEmail: OptText = None
    fromShipping: RlAddress | None = None
    toShipping: RlRmaAddress | None = None
    workflowStatus: Text
    workflowStatusId: int | None = None
    orderDate: When | None = None
    rmaExpirationDate: When | None = None
    isThirdParty: Flag | None = None
    isArchived: Flag | None = None
    isAllProcessed: Flag | None = None
    timeline: RlTimeline
    rmaItems: list[RlRmaItem] = Field(default_factory=list)
    shippingLabel: RlShippingLabel | None = None
    totals: RlTotals | None = None
    flagged: Flag | None = None


# --- catalog ---------------------------------------------------------------------------------


class RlProductOption(_Inbound):
    rlProductOptionId: OptId = None
    externalOptionId: OptId = None
    name: OptText = None
    position: int | None = None


class RlVariantOption(_Inbound):
    rlProductVariantOptionId: OptId = None
    externalOptionId: OptId = None
    name: OptText = None
    value: OptText = None
    position: int | None = None


class RlVariant(_Inbound):
    rlProductVariantId: RlId
    rlProductId: OptId = None
    externalVariantId: OptId = None
    sku: OptText = None
    name: OptText = None
    position: int | None = None
    price: Dollars | None = None
    inventoryQuantity: SignedCount
    isActive: Flag = True
    isDeleted: Flag = False
    isPublic: Flag = True
    imageUrl: OptText = None
    barcode: OptText = None
    grams: Count | None = None
    weight: Amount | None = None
    weightUnit: OptText = None
    options: list[RlVariantOption] = Field(default_factory=list)


class RlProduct(_Inbound):
    rlProductId: RlId
    externalProductId: OptId = None
    name: OptText = None
    vendor: OptText = None
    productType: OptText = None
    tags: Strings = Field(default_factory=list)
    isActive: Flag = True
    isDeleted: Flag = False
    isPublic: Flag = True
    imageUrl: OptText = None
    price: Dollars | None = None
    options: list[RlProductOption] = Field(default_factory=list)
    variants: list[RlVariant] = Field(default_factory=list)
    # not in the spec: used when present
    handle: OptText = None


# --- list pages (bare arrays) ----------------------------------------------------------------


class RlOrderList(RootModel[list[RlOrder]]):
    pass


class RlRmaList(RootModel[list[RlRma]]):
    pass


class RlProductList(RootModel[list[RlProduct]]):
    pass


# --- POST /v1/orders (outbound, closed) ------------------------------------------------------

FulfillmentStatus = Literal["fulfilled", "partial", "restocked"]
FinancialStatus = Literal[
    "authorized", "paid", "partially_paid", "pending", "refunded", "voided", "ThirdParty"
]


class RlAddressOut(_Outbound):
    address1: str
    address2: str | None = None
    city: str
    region: str | None = None
    regionCode: str | None = None
    postcode: str | None = None
    country: str | None = None
    countryCode: str


class RlOrderDiscountOut(_Outbound):
    """``OrderDiscountAttributes``."""

    amount: Dollars
    code: str
    isShippingDiscount: bool


class RlOrderItemCreate(_Outbound):
    """``AddProductToOrderRequest``."""

    externalOrderItemId: str
    quantity: int
    isTaxable: bool
    isGiftCard: bool
    taxPerItem: Dollars
    vendor: str | None = None
    fulfillmentService: str | None = None
    fulfillmentStatus: FulfillmentStatus | None = None
    fulfillableQuantity: int | None = Field(default=None, ge=0)
    properties: list[str] | None = None
    refundQuantity: int | None = Field(default=None, ge=0)
    orderItemDiscounts: list[RlOrderDiscountOut] | None = None
    rlProductVariantId: int
    priceOverride: Dollars | None = None


class RlCustomOrderItemCreate(_Outbound):
    """``AddCustomItemToOrderRequest``: an item without a catalog product (a gift card). The
    spec names it without its fields; ``sku``, ``name`` and ``price`` stand for the product."""

    externalOrderItemId: str
    quantity: int
    isTaxable: bool
    isGiftCard: bool
    taxPerItem: Dollars
    fulfillableQuantity: int | None = Field(default=None, ge=0)
    properties: list[str] | None = None
    orderItemDiscounts: list[RlOrderDiscountOut] | None = None
    sku: str
    name: str | None = None
    price: Dollars


class RlOrderCreateRequest(_Outbound):
    externalOrderId: str
    externalCustomerId: int | None = None
    customerEmail: str | None = None
    customerPhone: str | None = None
    orderNumber: str
    orderName: str
    shippingAddress: RlAddressOut | None = None
    billingAddress: RlAddressOut | None = None
    fulfillmentStatus: FulfillmentStatus | None = None
    financialStatus: FinancialStatus | None = None
    externalSource: str | None = None
    sourceType: str | None = None
    shippedAt: AwareDatetime | None = None
    tags: list[str]
    taxesIncluded: bool
    shopCurrencyCode: str = Field(max_length=3)
    totalPrice: Dollars
    fees: Dollars
    taxPrice: Dollars
    shippingPrice: Dollars
    refundAmount: Dollars
    externalCreateDate: AwareDatetime | None = None
    externalUpdateDate: AwareDatetime | None = None
    gateway: str | None = None
    flatRateBonusCreditApplied: bool | None = None
    orderItems: list[RlOrderItemCreate | RlCustomOrderItemCreate] | None = None
    orderDiscounts: list[RlOrderDiscountOut] | None = None
