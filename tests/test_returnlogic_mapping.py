"""ReturnLogic mappings: the doc samples as they are, the tables, bad input, and properties.

Samples come from ``shared/fixtures/returnlogic-samples`` untouched; variations are built by
copying a sample and changing the fields a test is about.
"""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from bridge.domain import (
    Address,
    Customer,
    ExchangeKind,
    ExchangeOrder,
    ExchangeOrderItem,
    OrderStatus,
    PackageStatus,
    ReceivingStatus,
    RefundType,
    ReturnMethod,
    RmaStatus,
    VariantAttribute,
    WeightUnit,
    dollars_to_cents,
)
from bridge.errors import MappingError
from bridge.flows import rma_version
from mappings.returnlogic import (
    ORDER_NUMBER_MAX_LENGTH,
    TagRule,
    TagRules,
    dumps,
    exchange_order_number,
    exchange_to_order_create,
    order_create_response_to_result,
    order_snapshot_hash,
    order_to_canonical,
    orders_page,
    products_page,
    products_to_variants,
    rma_to_canonical,
    rmas_page,
    variants_for_sku,
)
from mappings.returnlogic.wire import (
    RlOrder,
    RlOrderCreateRequest,
    RlOrderList,
    RlProductList,
    RlRmaList,
)

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "returnlogic-samples"
RULES = TagRules()


def _sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_bytes(), parse_float=Decimal)


@pytest.fixture
def order() -> dict[str, Any]:
    return orders_page((SAMPLES / "orders-list-response.json").read_bytes())[0]


@pytest.fixture
def rma() -> dict[str, Any]:
    return rmas_page((SAMPLES / "rmas-list-response.json").read_bytes())[0]


@pytest.fixture
def products() -> list[dict[str, Any]]:
    return products_page((SAMPLES / "products-list-response.json").read_bytes())


def _field(exc: pytest.ExceptionInfo[MappingError]) -> str | None:
    return exc.value.field


# --- the wire models accept the samples ------------------------------------------------------


def test_wire_models_accept_every_sample() -> None:
    orders = RlOrderList.model_validate(_sample("orders-list-response.json")).root
    assert orders[0].orderItems[0].pricePerItem == Decimal("18")
    assert orders[0].shippingPrice == Decimal("5.95")
    rmas = RlRmaList.model_validate(_sample("rmas-list-response.json")).root
    assert rmas[0].toShipping is not None
    assert rmas[0].toShipping.warehouseNickname == "NorthEast-3PL"
    products = RlProductList.model_validate(_sample("products-list-response.json")).root
    assert products[0].variants[0].inventoryQuantity == 55
    create = RlOrderCreateRequest.model_validate(_sample("order-create-request.json"))
    assert create.orderItems is not None
    assert create.orderItems[0].rlProductVariantId == 0


def test_inbound_models_ignore_unknown_fields_outbound_refuses_them(
    order: dict[str, Any],
) -> None:
    assert RlOrder.model_validate({**order, "brandNewField": {"x": 1}}).rlOrderId == "87654"
    body = {**_sample("order-create-request.json"), "brandNewField": 1}
    with pytest.raises(ValidationError, match="brandNewField"):
        RlOrderCreateRequest.model_validate(body)


def test_wire_models_refuse_float_money(order: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="parse_float=Decimal"):
        RlOrder.model_validate({**order, "shippingPrice": 5.95})


# --- orders: the sample ----------------------------------------------------------------------


def test_sample_order_header(order: dict[str, Any]) -> None:
    mapped = order_to_canonical(order, RULES)
    assert mapped.id == "1234"
    assert mapped.secondary_id == "1456032"
    assert mapped.refs == {"returnlogic": "87654"}
    assert mapped.status is OrderStatus.SHIPPED
    assert mapped.raw_status == "fulfilled"
    assert mapped.currency == "USD"
    assert mapped.created_at == datetime(2024, 10, 6, 17, 56, 38, 921000, tzinfo=UTC)
    assert mapped.updated_at == datetime(2024, 10, 8, 17, 56, 38, 921000, tzinfo=UTC)
    assert mapped.shipping_cents == 595
    assert mapped.fees_cents == 0
    assert mapped.order_discount_cents == 0
    assert mapped.taxes_included is False
    # header tax 3.55, the line carries 3.04: the other 0.51 is shipping tax
    assert mapped.tax_cents == 304
    assert mapped.shipping_tax_cents == 51
    # 36.00 - 5.50 + 5.95 + 3.04 + 0.51 == totalPrice 40
    assert mapped.total_cents == 4000
    assert mapped.refunds == ()
    assert mapped.tags == ()
    assert [(d.id, d.code, d.amount_cents, d.is_shipping) for d in mapped.discounts] == [
        ("60294", "SUMMERFUN", 500, False)
    ]


def test_sample_order_line(order: dict[str, Any]) -> None:
    (line,) = order_to_canonical(order, RULES).lines
    assert line.id == "3049177"
    assert line.refs == {"returnlogic": "913743"}
    assert line.sku == "10015204"
    assert line.title == "Keyboard"
    assert line.product_id == "4922"
    assert line.variant_id is None
    assert (line.qty, line.qty_shipped, line.qty_canceled, line.qty_refunded) == (2, 2, 0, 0)
    assert line.unit_price_cents == 1800
    assert line.discount_cents == 550
    assert line.tax_cents == 304
    assert line.is_gift_card is False
    assert line.tags == ()
    assert line.shipped_at == datetime(2024, 10, 7, 17, 56, 38, 921000, tzinfo=UTC)
    assert (line.weight, line.weight_unit) == (Decimal(2000), WeightUnit.G)


def test_sample_order_addresses_and_customer(order: dict[str, Any]) -> None:
    mapped = order_to_canonical(order, RULES)
    expected = Address(
        name=None,  # ReturnLogic addresses carry no name and the order no customer name
        street1="395 St Johns Church Rd",
        street2=None,  # "" is absent
        city="Camp Hill",
        state="PA",
        zip_code="17011",
        country_code="US",
        phone="111-111-1111",  # customerPhone
    )
    assert mapped.shipping_address == expected
    assert mapped.billing_address == expected
    assert mapped.customer is not None
    assert mapped.customer.id == "admin@returnlogic.com"  # no customer id: the email
    assert mapped.customer.email == "admin@returnlogic.com"
    assert mapped.customer.phone == "111-111-1111"
    assert (mapped.customer.first_name, mapped.customer.last_name) == (None, None)
    assert mapped.customer.refs == {}


def test_line_money_falls_back_to_per_item_amounts(order: dict[str, Any]) -> None:
    item = order["orderItems"][0]
    del item["totalDiscount"], item["totalTax"]
    item.update(quantity=3, discountPerItem=Decimal("0.335"), taxPerItem=Decimal("1.105"))
    line = order_to_canonical(order, RULES).lines[0]
    # exact product first, then one rounding: 1.005 -> 101, 3.315 -> 332
    assert (line.discount_cents, line.tax_cents) == (101, 332)


# --- orders: fallbacks -----------------------------------------------------------------------


def test_address_name_from_the_address_then_the_customer(order: dict[str, Any]) -> None:
    order["customer"] = {"rlCustomerId": 77, "firstName": "Carmine", "lastName": "Customer"}
    order["billingAddress"] = {**order["billingAddress"], "firstName": "Bill", "lastName": "Payer"}
    mapped = order_to_canonical(order, RULES)
    assert mapped.shipping_address is not None
    assert mapped.billing_address is not None
    assert mapped.shipping_address.name == "Carmine Customer"
    assert mapped.billing_address.name == "Bill Payer"
    assert mapped.customer is not None
    assert mapped.customer.id == "77"
    assert mapped.customer.refs == {"returnlogic": "77"}
    assert (mapped.customer.first_name, mapped.customer.last_name) == ("Carmine", "Customer")


def test_customer_id_chain(order: dict[str, Any]) -> None:
    order["externalCustomerId"] = "shop-9"
    customer = order_to_canonical(order, RULES).customer
    assert customer is not None
    assert customer.id == "shop-9"
    assert customer.refs == {}
    order["rlCustomerId"] = 5
    customer = order_to_canonical(order, RULES).customer
    assert customer is not None
    assert customer.id == "5"


def test_nothing_known_about_the_customer_is_no_customer(order: dict[str, Any]) -> None:
    del order["customerEmail"], order["customerPhone"]
    mapped = order_to_canonical(order, RULES)
    assert mapped.customer is None
    assert mapped.shipping_address is not None
    assert mapped.shipping_address.phone is None


def test_blank_address_is_absent(order: dict[str, Any]) -> None:
    order["shippingAddress"] = {"address1": "", "city": " ", "countryCode": None}
    order["billingAddress"] = None
    mapped = order_to_canonical(order, RULES)
    assert (mapped.shipping_address, mapped.billing_address) == (None, None)


def test_dates_fall_back(order: dict[str, Any]) -> None:
    del order["externalCreateDate"], order["updateDate"]
    mapped = order_to_canonical(order, RULES)
    assert mapped.created_at == datetime(2024, 10, 6, 17, 56, 38, 921000, tzinfo=UTC)
    assert mapped.updated_at == datetime(2024, 10, 8, 17, 56, 38, 921000, tzinfo=UTC)


# --- orders: status and quantities -----------------------------------------------------------


@pytest.mark.parametrize(
    ("fulfillment", "financial", "shipped_at", "extra", "status", "raw"),
    [
        ("fulfilled", None, "2024-10-07T17:56:38Z", {}, OrderStatus.SHIPPED, "fulfilled"),
        ("partial", "paid", None, {}, OrderStatus.SHIPPED, "partial/paid"),
        (None, "paid", None, {}, OrderStatus.CREATED, "paid"),
        (None, "pending", None, {}, OrderStatus.CREATED, "pending"),
        (None, None, None, {}, OrderStatus.CREATED, None),
        # shippedAt alone says nothing of which units shipped (a doubt): still to ship
        (None, None, "2024-10-07T17:56:38Z", {}, OrderStatus.CREATED, None),
        (None, "voided", None, {}, OrderStatus.CANCELED, "voided"),
        (  # the units shipped, whatever the payment says (a doubt): status from the lines
            "fulfilled",
            "voided",
            "2024-10-07T17:56:38Z",
            {},
            OrderStatus.SHIPPED,
            "fulfilled/voided",
        ),
        ("restocked", "refunded", None, {}, OrderStatus.CANCELED, "restocked/refunded"),
        ("restocked", None, "2024-10-07T17:56:38Z", {}, OrderStatus.SHIPPED, "restocked"),
        (
            None,
            "paid",
            None,
            {"cancelledAt": "2024-10-07T00:00:00Z"},
            OrderStatus.CANCELED,
            "paid/canceled",
        ),
    ],
)
def test_status_table(
    order: dict[str, Any],
    fulfillment: str | None,
    financial: str | None,
    shipped_at: str | None,
    extra: dict[str, str],
    status: OrderStatus,
    raw: str | None,
) -> None:
    order.update(fulfillmentStatus=fulfillment, financialStatus=financial, shippedAt=shipped_at)
    order.update(extra)
    del order["orderItems"][0]["fulfillmentStatus"]
    mapped = order_to_canonical(order, RULES)
    assert (mapped.status, mapped.raw_status) == (status, raw)


@pytest.mark.parametrize(
    ("order_status", "line_status", "fulfillable", "financial", "expected"),
    [
        ("fulfilled", "fulfilled", 0, None, (4, 4, 0)),
        ("partial", "partial", 3, None, (4, 1, 0)),
        ("partial", None, 3, None, (4, 1, 0)),  # the line takes the order's status
        ("partial", "partial", None, None, (4, 0, 0)),  # unknown split: nothing shipped
        (None, None, 4, None, (4, 0, 0)),
        (None, None, 4, "voided", (4, 0, 4)),  # canceled order: open units canceled
        ("partial", "partial", 1, "voided", (4, 3, 1)),
        ("restocked", "restocked", 0, "refunded", (4, 0, 4)),
    ],
)
def test_line_quantities(
    order: dict[str, Any],
    order_status: str | None,
    line_status: str | None,
    fulfillable: int | None,
    financial: str | None,
    expected: tuple[int, int, int],
) -> None:
    order.update(fulfillmentStatus=order_status, financialStatus=financial, shippedAt=None)
    item = order["orderItems"][0]
    item.update(quantity=4, fulfillmentStatus=line_status, fulfillableQuantity=fulfillable)
    line = order_to_canonical(order, RULES).lines[0]
    assert (line.qty, line.qty_shipped, line.qty_canceled) == expected


def test_number_double_quantities_are_whole_numbers(order: dict[str, Any]) -> None:
    order["orderItems"][0].update(fulfillableQuantity=Decimal("1.0"), refundQuantity=Decimal("1"))
    line = order_to_canonical(order, RULES).lines[0]
    assert (line.qty_shipped, line.qty_refunded) == (1, 1)


# --- orders: refunds -------------------------------------------------------------------------


def test_refunds_from_refund_amount_and_quantities(order: dict[str, Any]) -> None:
    order["refundAmount"] = Decimal("16.77")
    second = {**order["orderItems"][0], "rlOrderItemId": 2, "externalOrderItemId": "L2"}
    order["orderItems"][0]["refundQuantity"] = 1
    order["orderItems"].append(second)
    mapped = order_to_canonical(order, RULES)
    (refund,) = mapped.refunds
    assert refund.id == "returnlogic-order-87654-refunds"
    assert refund.total_cents == 1677
    assert [(rl.order_line_id, rl.qty) for rl in refund.lines] == [("3049177", 1)]
    assert refund.created_at == mapped.updated_at
    assert mapped.refunded_qty("3049177") == 1
    assert mapped.lines[0].qty_refunded == 1
    assert mapped.refunded_cents == 1677


def test_refund_amount_without_quantities(order: dict[str, Any]) -> None:
    order["refundAmount"] = 5
    (refund,) = order_to_canonical(order, RULES).refunds
    assert (refund.total_cents, refund.lines) == (500, ())


# --- orders: tags ----------------------------------------------------------------------------


def _tags(order: dict[str, Any], rules: TagRules = RULES) -> tuple[Any, ...]:
    mapped = order_to_canonical(order, rules)
    return mapped.tags, tuple(line.tags for line in mapped.lines)


def test_gift_card_line(order: dict[str, Any]) -> None:
    order["orderItems"][0]["isGiftCard"] = True
    mapped = order_to_canonical(order, RULES)
    assert mapped.tags == ()
    assert mapped.lines[0].tags == ("gift_card",)
    assert mapped.lines[0].is_gift_card is True


def test_order_tags_go_on_the_order_and_every_line(order: dict[str, Any]) -> None:
    order["tags"] = ["VIP", " Final Sale ", "BOPIS"]
    order["orderItems"].append(
        {**order["orderItems"][0], "externalOrderItemId": "L2", "isGiftCard": True}
    )
    assert _tags(order) == (
        ("final_sale", "pickup_in_store"),
        (("final_sale", "pickup_in_store"), ("final_sale", "pickup_in_store", "gift_card")),
    )


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        (["final_sale"], ("final_sale",)),
        (["Final Sale: yes"], ("final_sale",)),
        (["final_sale: false"], ()),
        ([{"name": "_pickup_in_store", "value": "true"}], ("pickup_in_store",)),
        ([{"name": "final_sale", "value": ""}], ()),
        (["third-party"], ("third_party",)),
        (["gift_card"], ("gift_card",)),
        (["engraving: J.D."], ()),
    ],
)
def test_line_properties(
    order: dict[str, Any], properties: list[Any], expected: tuple[str, ...]
) -> None:
    order["orderItems"][0]["properties"] = properties
    assert _tags(order) == ((), (expected,))


def test_line_tags_not_in_the_spec_are_read(order: dict[str, Any]) -> None:
    order["orderItems"][0]["tags"] = ["FinalSale"]
    assert _tags(order) == ((), (("final_sale",),))


def test_default_rules_thirdparty_financial_status(order: dict[str, Any]) -> None:
    order["financialStatus"] = "ThirdParty"
    assert _tags(order) == (("third_party",), (("third_party",),))


def test_configured_rules(order: dict[str, Any]) -> None:
    rules = TagRules(
        third_party=TagRule(external_sources=frozenset({"Amazon"})),
        pickup_in_store=TagRule(source_types=frozenset({"POS", "in-store"})),
        final_sale=TagRule(properties=frozenset({"clearance=Yes"})),
    )
    order.update(externalSource="amazon", sourceType="pos")
    order["orderItems"][0]["properties"] = ["clearance: yes"]
    assert _tags(order, rules) == (
        ("third_party", "pickup_in_store"),
        (("final_sale", "third_party", "pickup_in_store"),),
    )
    order["orderItems"][0]["properties"] = ["clearance: no"]
    order["tags"] = ["final_sale"]  # not evidence under these rules
    assert _tags(order, rules)[1] == (("third_party", "pickup_in_store"),)


def test_tag_rules_are_frozen_and_closed() -> None:
    with pytest.raises(ValidationError):
        TagRules(final_sale=TagRule(unknown=frozenset()))  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        RULES.final_sale = TagRule()  # type: ignore[misc]


# --- orders: bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda o: o["orderItems"][0].update(pricePerItem="abc"), "orderItems[0].pricePerItem"),
        (lambda o: o["orderItems"][0].update(pricePerItem=18.5), "orderItems[0].pricePerItem"),
        (lambda o: o["orderItems"][0].update(pricePerItem=-1), "orderItems[0].pricePerItem"),
        (lambda o: o["orderItems"][0].pop("pricePerItem"), "orderItems[0].pricePerItem"),
        (lambda o: o["orderItems"][0].update(quantity=Decimal("1.5")), "orderItems[0].quantity"),
        (lambda o: o["orderItems"][0].update(quantity=True), "orderItems[0].quantity"),
        (lambda o: o["orderItems"][0].update(totalTax=Decimal("NaN")), "orderItems[0].totalTax"),
        (
            lambda o: o["orderItems"][0].update(refundQuantity=3),
            "orderItems[0].refundQuantity",
        ),
        (
            lambda o: o["orderItems"][0].update(fulfillableQuantity=3),
            "orderItems[0].fulfillableQuantity",
        ),
        (
            lambda o: o["orderItems"][0].update(externalOrderItemId=None, rlOrderItemId=None),
            "orderItems[0].externalOrderItemId",
        ),
        (lambda o: o["orderItems"][0].update(properties="x"), "orderItems[0].properties"),
        (lambda o: o.update(orderItems=[1]), "orderItems[0]"),
        (lambda o: o.pop("orderNumber"), "orderNumber"),
        (lambda o: o.pop("rlOrderId"), "rlOrderId"),
        (lambda o: o.update(shopCurrencyCode=" "), "shopCurrencyCode"),
        (lambda o: o.update(shopCurrencyCode="dollars"), "order.currency"),
        (lambda o: o.update(shippingPrice=Decimal("1e30")), "shippingPrice"),
        (lambda o: o.update(taxesIncluded="no"), "taxesIncluded"),
        (lambda o: o.update(tags="FinalSale"), "tags"),
        (lambda o: o.update(createDate="2024-10-06T17:56:38"), "createDate"),
        (lambda o: o.update(externalCreateDate=None, createDate=None), "externalCreateDate"),
        (lambda o: o["shippingAddress"].pop("city"), "shippingAddress.city"),
        (lambda o: o.update(billingAddress="here"), "billingAddress"),
        (lambda o: o["discounts"][0].pop("code"), "discounts[0].code"),
        # values past the inlined common cases reach the generic converters
        (lambda o: o.update(shippedAt="2024-10-06T17:56:38"), "shippedAt"),
        (lambda o: o.update(updateDate="yesterday"), "updateDate"),
        (lambda o: o.update(canceledAt=5), "canceledAt"),
        (lambda o: o["orderItems"][0].update(grams=-1), "orderItems[0].grams"),
        (lambda o: o["orderItems"][0].update(grams=Decimal("2.5")), "orderItems[0].grams"),
        (lambda o: o["orderItems"][0].update(isGiftCard="true"), "orderItems[0].isGiftCard"),
        (lambda o: o["orderItems"][0].update(tags=[1]), "orderItems[0].tags"),
        (
            lambda o: o["discounts"][0].update(isShippingDiscount=1),
            "discounts[0].isShippingDiscount",
        ),
        (lambda o: o["orderItems"][0].update(sku=7), "orderItems[0].sku"),
        (
            lambda o: o["orderItems"][0].update(externalProductId=1.5),
            "orderItems[0].externalProductId",
        ),
    ],
)
def test_bad_order_names_the_field(order: dict[str, Any], change: Any, field: str) -> None:
    change(order)
    with pytest.raises(MappingError) as exc:
        order_to_canonical(order, RULES)
    assert exc.value.field is not None
    assert exc.value.field.startswith(field)


def test_values_past_the_common_cases_map_as_their_plain_forms(order: dict[str, Any]) -> None:
    """Blank text ids are absent, whole ``Decimal`` counts are counts, offsets other than ``Z``
    are kept: the same order as with the plain values."""
    item = order["orderItems"][0]
    item.update(grams=120, refundQuantity=0, fulfillableQuantity=0, rlOrderItemId=77)
    order.update(shippedAt="2024-10-07T10:00:00+02:00")
    plain = order_to_canonical(order, RULES)
    item.update(grams=Decimal("120"), refundQuantity=Decimal("0.0"), fulfillableQuantity="0")
    assert order_to_canonical(order, RULES) == plain
    item.update(externalOrderItemId="  ")
    line = order_to_canonical(order, RULES).lines[0]
    assert line.id == "77"
    assert line.shipped_at == datetime(2024, 10, 7, 8, 0, tzinfo=UTC)


def test_canonical_invariants_are_mapping_errors(order: dict[str, Any]) -> None:
    order["orderItems"].append(dict(order["orderItems"][0]))
    with pytest.raises(MappingError, match="duplicate order line id") as exc:
        order_to_canonical(order, RULES)
    assert _field(exc) == "order"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", None),
        (b"NaN", None),
        (b'{"orders": []}', None),
        (b'[{"rlOrderId": 1}, 7]', "[1]"),
    ],
)
def test_bad_pages(body: bytes, field: str | None) -> None:
    with pytest.raises(MappingError) as exc:
        orders_page(body)
    assert _field(exc) == field


def test_pages_parse_money_as_decimal() -> None:
    (record,) = orders_page(b'[{"shippingPrice": 0.1}]')
    assert record["shippingPrice"] == Decimal("0.1")


# --- snapshot hash ---------------------------------------------------------------------------


def test_snapshot_hash_is_stable_and_sensitive(order: dict[str, Any]) -> None:
    first = order_snapshot_hash(order_to_canonical(order, RULES))
    assert first == order_snapshot_hash(order_to_canonical(copy.deepcopy(order), RULES))
    assert len(first) == 64
    order["orderItems"][0]["pricePerItem"] = Decimal("18.01")
    assert order_snapshot_hash(order_to_canonical(order, RULES)) != first


# --- RMAs ------------------------------------------------------------------------------------


def test_sample_rma(rma: dict[str, Any]) -> None:
    mapped = rma_to_canonical(rma)
    assert mapped.id == "12345"
    assert mapped.refs == {"returnlogic": "12345"}
    assert mapped.status is RmaStatus.CREATED
    assert mapped.raw_status == "Delivered"
    assert mapped.return_method is ReturnMethod.MAIL_BACK
    assert mapped.created_at == datetime(2024, 10, 2, 17, 56, 38, 921000, tzinfo=UTC)
    assert mapped.updated_at == datetime(2024, 10, 8, 17, 56, 38, 921000, tzinfo=UTC)
    assert mapped.expires_at == datetime(2024, 11, 8, 17, 56, 38, 921000, tzinfo=UTC)
    assert mapped.return_shipping_cost_cents == 725
    assert mapped.carrier == "USPS"
    assert mapped.warehouse_id == "NorthEast-3PL"
    assert mapped.customer_email == "admin@returnlogic.com"
    assert mapped.gift_refund_only is False
    assert mapped.receiving_complete is False
    assert mapped.from_address is not None
    assert (mapped.from_address.street1, mapped.from_address.state) == (
        "395 St Johns Church Rd",
        "PA",
    )
    (unit,) = mapped.units
    assert unit.refs == {"returnlogic": "1108598"}
    assert (unit.order_id, unit.secondary_order_id, unit.order_line_id) == (
        "12345678",
        "2907254030433",
        "6170390691937",
    )
    assert (unit.qty, unit.accepted_qty) == (1, 1)
    assert (unit.sku, unit.upc, unit.title) == ("KITTEHCAR01", "123456789", "Kitteh Car")
    assert (unit.reason, unit.reason_code) == ("Too Small", "OTH")
    assert unit.refund_type is RefundType.REFUND
    assert unit.tracking_number == "9461200897846059728722"
    assert unit.package_status is PackageStatus.DELIVERED
    assert unit.receiving_status is ReceivingStatus.PENDING
    assert unit.condition == "RFS"
    assert unit.estimated_refund_cents is None  # totals are per return type, not per item


@pytest.mark.parametrize(
    ("word", "all_processed", "status"),
    [
        ("Requested", None, RmaStatus.REQUESTED),
        ("Authorized", None, RmaStatus.CREATED),
        ("Active", None, RmaStatus.CREATED),
        ("InTransit", None, RmaStatus.CREATED),
        ("Delivered", None, RmaStatus.CREATED),
        ("Received", None, RmaStatus.CREATED),
        ("Processed", None, RmaStatus.REFUNDED),
        ("Processed", True, RmaStatus.REFUNDED),
        ("Processed", False, RmaStatus.PARTIALLY_REFUNDED),
        ("Complete", False, RmaStatus.REFUNDED),
        ("Canceled", None, RmaStatus.CANCELED),
        ("Abandoned", None, RmaStatus.CANCELED),
        ("Rejected", None, RmaStatus.REJECTED),
        ("intransit", None, RmaStatus.CREATED),
    ],
)
def test_rma_status_table(
    rma: dict[str, Any], word: str, all_processed: bool | None, status: RmaStatus
) -> None:
    rma.update(workflowStatus=word, isAllProcessed=all_processed)
    mapped = rma_to_canonical(rma)
    assert mapped.status is status
    assert mapped.raw_status == word


@pytest.mark.parametrize(
    ("word", "timeline", "label", "package"),
    [
        ("Requested", {}, None, None),
        ("Authorized", {}, {"trackingNumber": "1Z"}, PackageStatus.PRE_TRANSIT),
        ("InTransit", {}, {"trackingNumber": "1Z"}, PackageStatus.TRANSIT),
        ("Authorized", {"inTransitUpdateDate": "2024-10-05T00:00:00Z"}, None, "TRANSIT"),
        ("Received", {}, None, PackageStatus.DELIVERED),
        ("Complete", {"deliveredUpdateDate": "2024-10-07T00:00:00Z"}, None, "DELIVERED"),
        ("Complete", {}, None, None),
    ],
)
def test_rma_package_status(
    rma: dict[str, Any],
    word: str,
    timeline: dict[str, str],
    label: dict[str, str] | None,
    package: PackageStatus | str | None,
) -> None:
    rma["workflowStatus"] = word
    rma["timeline"] = {"createDate": "2024-10-02T17:56:38.921Z", **timeline}
    rma["shippingLabel"] = label
    mapped = rma_to_canonical(rma)
    assert mapped.units[0].package_status == (PackageStatus(package) if package else None)
    assert mapped.return_method is (ReturnMethod.MAIL_BACK if label else ReturnMethod.OTHER)
    assert mapped.updated_at == mapped.created_at


@pytest.mark.parametrize(
    ("word", "refund_type"),
    [
        ("refund", RefundType.REFUND),
        ("exchange", RefundType.EVEN_EXCHANGE),
        ("giftcard", RefundType.STORE_CREDIT),
        ("warranty", RefundType.WARRANTY),
    ],
)
def test_rma_return_types(rma: dict[str, Any], word: str, refund_type: RefundType) -> None:
    rma["rmaItems"][0]["returnType"] = word
    mapped = rma_to_canonical(rma)
    assert mapped.units[0].refund_type is refund_type
    assert mapped.gift_refund_only is (refund_type is RefundType.STORE_CREDIT)


def test_rma_received_items_and_bonus(rma: dict[str, Any]) -> None:
    rma["rmaItems"][0]["rmaItemReceived"] = True
    rma["totals"]["giftCard"]["bonusAmount"] = Decimal("2.50")
    rma["totals"]["exchange"]["bonusAmount"] = 1
    mapped = rma_to_canonical(rma)
    assert mapped.units[0].receiving_status is ReceivingStatus.RECEIVED
    assert mapped.receiving_complete is True
    assert mapped.bonus_credit_cents == 350


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.update(workflowStatus="Teleported"), "workflowStatus"),
        (lambda r: r.pop("workflowStatus"), "workflowStatus"),
        (lambda r: r["rmaItems"][0].update(returnType="barter"), "rmaItems[0].returnType"),
        (lambda r: r["rmaItems"][0].update(quantity=0), "rmaItems[0].quantity"),
        (lambda r: r["rmaItems"][0].update(quantity=1.0), "rmaItems[0].quantity"),
        (
            lambda r: r["rmaItems"][0].pop("externalOrderLineId"),
            "rmaItems[0].externalOrderLineId",
        ),
        (lambda r: r.pop("externalOrderNumber"), "externalOrderNumber"),
        (lambda r: r.pop("timeline"), "timeline"),
        (lambda r: r["timeline"].update(updateDate="yesterday"), "timeline.updateDate"),
        (lambda r: r["shippingLabel"].update(cost="7,25"), "shippingLabel.cost"),
        (lambda r: r["fromShipping"].pop("countryCode"), "fromShipping.countryCode"),
    ],
)
def test_bad_rma_names_the_field(rma: dict[str, Any], change: Any, field: str) -> None:
    change(rma)
    with pytest.raises(MappingError) as exc:
        rma_to_canonical(rma)
    assert _field(exc) == field


def test_rma_version_orders_by_time_then_progress(rma: dict[str, Any]) -> None:
    delivered = rma_to_canonical(rma)
    rma["workflowStatus"] = "Complete"
    complete = rma_to_canonical(rma)
    assert rma_version(delivered)[0] == "2024-10-08T17:56:38.921000Z"
    assert rma_version(complete) > rma_version(delivered)  # same time, further along
    rma["timeline"]["updateDate"] = "2024-10-08T13:56:38.922-04:00"  # 1 ms later, other zone
    later = rma_to_canonical(rma)
    rma["workflowStatus"] = "Requested"
    rma["timeline"]["updateDate"] = "2024-10-08T17:56:38.921Z"
    assert rma_version(later) > rma_version(complete) > rma_version(rma_to_canonical(rma))


# --- catalog ---------------------------------------------------------------------------------


def _rich_product() -> dict[str, Any]:
    """The sample product with options, prices and a second variant, as the spec allows."""
    product: dict[str, Any] = _sample("products-list-response.json")[0]
    product.update(
        externalProductId="4922",
        handle="metal-bike",
        imageUrl="https://img.example.com/bike.jpg",
        price=Decimal("199.99"),
        options=[
            {"externalOptionId": "o-size", "name": "Size", "position": 2},
            {"externalOptionId": "o-color", "name": "Color", "position": 1},
        ],
    )
    first = product["variants"][0]
    first.update(
        price=Decimal("189.5"),
        barcode="0001",
        options=[
            {"externalOptionId": "o-size", "value": "L", "position": 2},
            {"value": "Red", "position": 1},
        ],
    )
    second = {
        **first,
        "rlProductVariantId": 876877,
        "externalVariantId": "12346",
        "sku": "Mouse-2",
        "name": "Licensed Metal Bike",
        "inventoryQuantity": -2,
        "isActive": False,
        "imageUrl": None,
        "weight": Decimal("1.5"),
        "weightUnit": "kg",
        "options": [
            {"name": "Color", "value": "Blue", "position": 1},
            {"name": "Size", "value": "S", "position": 2},
        ],
    }
    del second["price"]
    no_sku = {**first, "rlProductVariantId": 876878, "sku": ""}
    product["variants"] = [first, second, no_sku]
    return product


def test_sample_products_to_variants(products: list[dict[str, Any]]) -> None:
    (variant,) = products_to_variants(
        products, "https://shop.example.com/p/{product_id}?v={variant_id}", None
    )
    assert variant.sku == "Mouse"
    assert variant.title == "Licensed Metal Bike - Tuna"
    assert variant.attributes == ()
    assert variant.quantity_in_stock == 55
    assert variant.unit_price_cents is None  # the sample has no price
    assert variant.image_url is None  # "" is absent, no fallback given
    assert variant.product_url == "https://shop.example.com/p/534122?v=876876"
    assert (variant.product_id, variant.variant_id) == ("534122", "876876")
    assert variant.refs == {"returnlogic": "876876"}
    assert variant.is_active is True
    assert (variant.weight, variant.weight_unit) == (Decimal(2), WeightUnit.G)


def test_products_with_options() -> None:
    red, blue = products_to_variants(
        [_rich_product()],
        "https://shop.example.com/products/{handle}?variant={external_variant_id}",
        "https://img.example.com/placeholder.png",
    )
    assert red.attributes == (
        VariantAttribute(name="Color", value="Red"),  # name from the product option's position
        VariantAttribute(name="Size", value="L"),  # name from the product option's id
    )
    assert red.unit_price_cents == 18950
    assert red.upc == "0001"
    assert red.product_url == "https://shop.example.com/products/metal-bike?variant=12345"
    assert blue.attributes == (
        VariantAttribute(name="Color", value="Blue"),
        VariantAttribute(name="Size", value="S"),
    )
    assert blue.title == "Licensed Metal Bike"  # the variant's name is the product's
    assert blue.unit_price_cents == 19999  # the product's price
    assert blue.quantity_in_stock == -2
    assert blue.is_active is False
    assert blue.image_url == "https://img.example.com/bike.jpg"  # the product's image
    assert (blue.weight, blue.weight_unit) == (Decimal("1.5"), WeightUnit.KG)


def test_product_url_template_fields() -> None:
    product = _rich_product()
    product["handle"] = None
    (red, _) = products_to_variants([product], "https://s.example.com/{sku}/{handle}", None)
    assert red.product_url is None  # no handle: no URL rather than a made-up one
    product["variants"][0]["sku"] = "A/B C"
    (red, _) = products_to_variants([product], "https://s.example.com/{sku}", None)
    assert red.product_url == "https://s.example.com/A%2FB%20C"
    with pytest.raises(MappingError) as exc:
        products_to_variants([product], "https://s.example.com/{slug}", None)
    assert _field(exc) == "product_url_template"


def test_bad_products_name_the_field() -> None:
    product = _rich_product()
    product["variants"][1]["options"][0] = {"value": "Green", "position": 9}
    with pytest.raises(MappingError) as exc:
        products_to_variants([_rich_product(), product], None)
    assert _field(exc) == "[1].variants[1].options[0].name"
    product = _rich_product()
    product["variants"][0]["price"] = 1.5
    with pytest.raises(MappingError) as exc:
        products_to_variants([product], None)
    assert _field(exc) == "[0].variants[0].price"


def test_variants_for_sku(products: list[dict[str, Any]]) -> None:
    catalog = [*products, _rich_product()]
    other = {**catalog[0]["variants"][0], "sku": "Other", "rlProductVariantId": 1}
    catalog[0] = {**catalog[0], "variants": [{**other, "externalVariantId": "1"}]}
    for key in ("Mouse-2", "876876", "12345", "Mouse"):
        found = variants_for_sku(catalog, key)
        assert [v.sku for v in found] == ["Mouse", "Mouse-2"], key
    assert variants_for_sku(catalog, "nope") == []
    assert [v.sku for v in variants_for_sku(catalog, "Other")] == ["Other"]
    broken = [{"rlProductId": 1, "variants": [{"sku": "X", "price": "?"}]}, *catalog]
    assert len(variants_for_sku(broken, "Mouse")) == 2  # an unrelated bad record is not read
    (first, _) = variants_for_sku(
        catalog, "Mouse", product_url_template="https://s/{sku}", image_fallback="x.png"
    )
    assert first.product_url == "https://s/Mouse"


# --- exchange orders -------------------------------------------------------------------------


def _exchange(**changes: Any) -> ExchangeOrder:
    address = Address(
        name="Carmine Customer",
        street1="123 Fake St.",
        street2="Apt 4",
        city="Washington",
        state="DC",
        zip_code="20001",
        country_code="US",
        phone="555-0100",
    )
    fields: dict[str, Any] = {
        "original_order_id": "1234",
        "rma_id": "R-9",
        "currency": "USD",
        "items": (
            ExchangeOrderItem(
                kind=ExchangeKind.EVEN,
                sku="Mouse-2",
                qty=3,
                unit_price_cents=1999,
                discount_cents=100,
                tax_cents=100,
                original_sku="Mouse",
                original_line_id="3049177",
            ),
        ),
        "customer": Customer(id="4711", email="c@example.com"),
        "shipping_address": address,
    }
    fields.update(changes)
    return ExchangeOrder(**fields)


def _keys_within(payload: Any, documented: Any, path: str = "") -> None:
    """Every key of ``payload`` is a key of the documented sample, at every depth."""
    if isinstance(payload, dict):
        assert isinstance(documented, dict), path
        for key, value in payload.items():
            assert key in documented, f"{path}.{key} is not in the documented request"
            _keys_within(value, documented[key], f"{path}.{key}")
    elif isinstance(payload, list):
        for index, value in enumerate(payload):
            _keys_within(value, documented[0], f"{path}[{index}]")


def test_exchange_order_number() -> None:
    assert exchange_order_number("1234") == "EXCH-1234"
    assert exchange_order_number("1234", prefix="X_") == "X_1234"
    hashed = exchange_order_number("#1001")
    assert hashed.startswith("EXCH-1001.")
    assert hashed == exchange_order_number("#1001")  # deterministic
    assert hashed != exchange_order_number("1001") != exchange_order_number("#1001 ")
    long_id = "9" * 100
    assert len(exchange_order_number(long_id)) <= ORDER_NUMBER_MAX_LENGTH
    assert exchange_order_number(long_id) != exchange_order_number(long_id + "0")
    for bad_prefix in ("", "EX CH", "X" * 30):
        with pytest.raises(MappingError) as exc:
            exchange_order_number("1", prefix=bad_prefix)
        assert _field(exc) == "prefix"
    with pytest.raises(MappingError) as exc:
        exchange_order_number("")
    assert _field(exc) == "original_order_id"


@given(st.text(min_size=1, max_size=80))
def test_exchange_order_numbers_are_bounded_and_safe(original: str) -> None:
    number = exchange_order_number(original)
    assert len(number) <= ORDER_NUMBER_MAX_LENGTH
    assert number.isascii()
    assert number == exchange_order_number(original)


def test_exchange_to_order_create() -> None:
    ex = _exchange()
    number = exchange_order_number(ex.original_order_id)
    payload = exchange_to_order_create(ex, {"Mouse-2": "876877"}, number)
    _keys_within(payload, _sample("order-create-request.json"))
    RlOrderCreateRequest.model_validate(payload)
    assert payload["externalOrderId"] == payload["orderNumber"] == payload["orderName"] == number
    assert payload["externalCustomerId"] == 4711
    assert (payload["customerEmail"], payload["customerPhone"]) == ("c@example.com", "555-0100")
    assert payload["shippingAddress"] == {
        "address1": "123 Fake St.",
        "address2": "Apt 4",
        "city": "Washington",
        "regionCode": "DC",
        "postcode": "20001",
        "countryCode": "US",
    }
    assert "billingAddress" not in payload
    assert payload["tags"] == ["exchange", "original_order:1234", "rma:R-9"]
    assert payload["shopCurrencyCode"] == "USD"
    assert payload["taxesIncluded"] is False
    # 3 x 19.99 - 1.00 + 1.00
    assert payload["totalPrice"] == Decimal("59.97")
    assert payload["taxPrice"] == Decimal("1.00")
    assert (payload["fees"], payload["shippingPrice"], payload["refundAmount"]) == (0, 0, 0)
    # 1.00 tax over 3 units: 2 units at 0.33 and 1 at 0.34, discount shared 66/34
    first, second = payload["orderItems"]
    assert first["externalOrderItemId"] == "EXCH-1234-1"
    assert second["externalOrderItemId"] == "EXCH-1234-1-2"
    assert (first["quantity"], first["taxPerItem"]) == (2, Decimal("0.33"))
    assert (second["quantity"], second["taxPerItem"]) == (1, Decimal("0.34"))
    assert [i["orderItemDiscounts"][0]["amount"] for i in (first, second)] == [
        Decimal("0.67"),
        Decimal("0.33"),
    ]
    for item in (first, second):
        assert item["rlProductVariantId"] == 876877
        assert item["priceOverride"] == Decimal("19.99")
        assert item["isGiftCard"] is False
        assert item["isTaxable"] is True
        assert item["fulfillableQuantity"] == item["quantity"]
        assert item["properties"] == ["original_sku: Mouse", "original_line_id: 3049177"]
    tax = sum(i["taxPerItem"] * i["quantity"] for i in payload["orderItems"])
    assert tax == payload["taxPrice"]


def test_exchange_gift_card_item_and_money_as_json_numbers() -> None:
    gift_card = ExchangeOrderItem(
        kind=ExchangeKind.GIFT_CARD, sku="GC", qty=1, unit_price_cents=5000, bonus_credit_cents=500
    )
    ex = _exchange(items=(gift_card,), is_gift=True, customer=Customer(id="c@example.com"))
    payload = exchange_to_order_create(ex, {"GC": "42"}, "EXCH-1234")
    assert "externalCustomerId" not in payload  # not a number: not sent
    (item,) = payload["orderItems"]
    assert item["isGiftCard"] is True
    assert item["isTaxable"] is False
    assert item["properties"] == ["bonus_credit: 5.00"]
    assert "orderItemDiscounts" not in item
    assert payload["totalPrice"] == Decimal("50.00")  # the bonus is not billed
    assert payload["tags"][-1] == "gift"
    body = dumps(payload).encode()
    assert b'"totalPrice":50.00' in body
    assert json.loads(body, parse_float=Decimal) == payload


def test_exchange_missing_variant_names_the_sku() -> None:
    second = ExchangeOrderItem(kind=ExchangeKind.EVEN, sku="Ghost-1", qty=1)
    ex = _exchange(items=(*_exchange().items, second))
    with pytest.raises(MappingError, match="Ghost-1") as exc:
        exchange_to_order_create(ex, {"Mouse-2": "876877"}, "EXCH-1234")
    assert _field(exc) == "items[1].sku"
    with pytest.raises(MappingError, match="Mouse-2") as exc:
        exchange_to_order_create(_exchange(), {"Mouse-2": "v-1"}, "EXCH-1234")
    assert _field(exc) == "items[0].sku"


def test_dumps_refuses_floats() -> None:
    with pytest.raises(TypeError):
        dumps({"totalPrice": 1.5})
    assert dumps({"a": [None, True, 1, "é"]}).encode() == '{"a":[null,true,1,"é"]}'.encode()


def test_order_create_response_to_result(order: dict[str, Any]) -> None:
    result = order_create_response_to_result(order)
    assert result.order_id == "1234"
    assert (result.total_cents, result.product_cents, result.tax_cents) == (4000, 3600, 355)
    del order["totalPrice"]
    with pytest.raises(MappingError) as exc:
        order_create_response_to_result(order)
    assert _field(exc) == "totalPrice"
    with pytest.raises(MappingError) as exc:
        order_create_response_to_result({**order, "taxPrice": "x"})
    assert _field(exc) == "taxPrice"


# --- properties ------------------------------------------------------------------------------

CENTS = st.integers(min_value=0, max_value=99_999_99)


def _money(draw: st.DrawFn, cents: int) -> Decimal | str | int:
    """The same amount as a Decimal with 2 places, as text, or as an int when whole."""
    amount = Decimal(cents).scaleb(-2)
    forms: list[Decimal | str | int] = [amount, str(amount)]
    if cents % 100 == 0:
        forms.append(cents // 100)
    return draw(st.sampled_from(forms))


@st.composite
def rl_orders(draw: st.DrawFn) -> dict[str, Any]:
    items = []
    for index in range(draw(st.integers(min_value=1, max_value=4))):
        qty = draw(st.integers(min_value=1, max_value=6))
        price = draw(CENTS)
        per_item_discount = draw(st.integers(min_value=0, max_value=price))
        per_item_tax = draw(st.integers(min_value=0, max_value=5_000_00))
        item: dict[str, Any] = {
            "rlOrderItemId": 1000 + index,
            "externalOrderItemId": f"L{index}",
            "sku": f"SKU-{index}",
            "quantity": qty,
            "pricePerItem": _money(draw, price),
            "fulfillableQuantity": 0,
            "fulfillmentStatus": "fulfilled",
            "refundQuantity": draw(st.integers(min_value=0, max_value=qty)),
        }
        if draw(st.booleans()):  # totals given
            item["totalDiscount"] = _money(draw, per_item_discount * qty)
            item["totalTax"] = _money(draw, per_item_tax * qty)
        else:  # only per-item amounts
            item["discountPerItem"] = _money(draw, per_item_discount)
            item["taxPerItem"] = _money(draw, per_item_tax)
        item["_cents"] = (price, per_item_discount * qty, per_item_tax * qty)
        items.append(item)
    shipping, shipping_tax, fees = draw(CENTS), draw(CENTS), draw(CENTS)
    line_total = sum(p * i["quantity"] - d + t for i in items for p, d, t in [i["_cents"]])
    expected = [item.pop("_cents") for item in items]
    total = line_total + shipping + shipping_tax + fees
    tax = sum(t for _, _, t in expected) + shipping_tax
    return {
        "rlOrderId": draw(st.integers(min_value=1, max_value=10**9)),
        "orderNumber": str(draw(st.integers(min_value=1, max_value=10**6))),
        "externalOrderId": "X-1",
        "createDate": "2024-10-06T17:56:38.921Z",
        "updateDate": "2024-10-08T17:56:38.921Z",
        "shopCurrencyCode": "USD",
        "fulfillmentStatus": "fulfilled",
        "taxesIncluded": False,
        "shippingPrice": _money(draw, shipping),
        "fees": _money(draw, fees),
        "taxPrice": _money(draw, tax),
        "totalPrice": _money(draw, total),
        "refundAmount": _money(draw, draw(CENTS)),
        "tags": [],
        "orderItems": items,
        "_expected": expected,
    }


def _exact_cents(value: Decimal | str | int) -> int:
    """The Decimal definition: amount * 100, which must already be whole."""
    scaled = Decimal(value) * 100
    assert scaled == scaled.to_integral_value()
    return int(scaled)


def _shuffled(value: Any, rnd: random.Random) -> Any:
    if isinstance(value, dict):
        keys = list(value)
        rnd.shuffle(keys)
        return {key: _shuffled(value[key], rnd) for key in keys}
    if isinstance(value, list):
        return [_shuffled(item, rnd) for item in value]
    return value


@settings(max_examples=150, deadline=None)
@given(rl_orders())
def test_generated_orders_map_exactly(record: dict[str, Any]) -> None:
    expected = record.pop("_expected")
    # over the wire: Decimals as JSON numbers, text as strings; parsed back with Decimal
    (wire,) = orders_page(dumps([record]).encode())
    RlOrder.model_validate(wire)  # the wire model reads the same record
    order = order_to_canonical(wire, RULES)
    for line, item, (price, discount, tax) in zip(
        order.lines, record["orderItems"], expected, strict=True
    ):
        # no float drift: cents are the exact Decimal amount times 100
        assert line.unit_price_cents == _exact_cents(item["pricePerItem"]) == price
        assert line.discount_cents == discount
        assert line.tax_cents == tax
        assert line.qty == line.qty_shipped == item["quantity"]
        assert line.qty_refunded == item["refundQuantity"]
    # header totals are the sums of the lines
    assert order.product_cents == sum(
        p * line.qty for line, (p, _, _) in zip(order.lines, expected, strict=True)
    )
    assert order.tax_cents == sum(line.tax_cents for line in order.lines)
    assert order.discount_cents == sum(line.discount_cents for line in order.lines)
    assert order.tax_cents + order.shipping_tax_cents == _exact_cents(record["taxPrice"])
    assert order.total_cents == _exact_cents(record["totalPrice"])
    assert order.refunded_cents in (0, _exact_cents(record["refundAmount"]))


@settings(max_examples=75, deadline=None)
@given(rl_orders(), st.randoms(use_true_random=False))
def test_snapshot_hash_ignores_key_order_and_sees_prices(
    record: dict[str, Any], rnd: random.Random
) -> None:
    record.pop("_expected")
    digest = order_snapshot_hash(order_to_canonical(record, RULES))
    assert order_snapshot_hash(order_to_canonical(_shuffled(record, rnd), RULES)) == digest
    changed = copy.deepcopy(record)
    item = changed["orderItems"][rnd.randrange(len(changed["orderItems"]))]
    item["pricePerItem"] = Decimal(item["pricePerItem"]) + Decimal("0.01")
    assert order_snapshot_hash(order_to_canonical(changed, RULES)) != digest


@given(
    st.decimals(min_value=Decimal(0), max_value=Decimal(10**9), places=4, allow_nan=False).map(
        lambda d: d.normalize() if d else d
    )
)
def test_fine_amounts_round_once_half_up(amount: Decimal) -> None:
    record = {
        "rlOrderId": 1,
        "orderNumber": "1",
        "createDate": "2024-10-06T17:56:38Z",
        "shopCurrencyCode": "usd",
        "taxesIncluded": True,
        "shippingPrice": amount,
        "fees": str(amount),
        "taxPrice": 0,
        "refundAmount": 0,
    }
    order = order_to_canonical(record, RULES)
    assert order.currency == "USD"
    assert order.shipping_cents == order.fees_cents == dollars_to_cents(amount)
