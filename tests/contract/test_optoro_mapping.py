"""``mappings.optoro`` beyond the guide's samples: both vocabularies, the description's own
examples, bad input naming its field, RMA version ordering, the outbound fallback rules, and a
property test over generated orders."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.optoro.schemas import description, validate
from bridge.domain import (
    Address,
    Customer,
    Discount,
    ExchangeKind,
    Order,
    OrderLine,
    OrderStatus,
    PackageStatus,
    Payment,
    ReceivingStatus,
    Refund,
    RefundLine,
    RefundType,
    ReturnMethod,
    Rma,
    RmaStatus,
    Variant,
    VariantAttribute,
    WeightUnit,
)
from bridge.errors import MappingError
from bridge.flows import rma_version
from mappings.optoro import (
    all_size,
    exchange_order_to_wire,
    header_mismatches,
    order_to_rpo,
    parse_exchange_order,
    parse_rma,
    parse_variants_response,
    rma_to_wire,
    rpo_request,
    rpo_to_order,
    variants_response,
    vocab,
)
from mappings.optoro.variants import offered
from tests.contract.conftest import STEP_BY_ID, STEPS, differences

NOW = datetime(2023, 1, 27, 23, 25, 9, tzinfo=UTC)

# --- sample bodies ---------------------------------------------------------------------------


def rma_body(**changes: Any) -> dict[str, Any]:
    """The guide's first RMA message (scenario 01, step 2), with ``changes`` applied."""
    body: dict[str, Any] = copy.deepcopy(STEP_BY_ID["01-02"].request)
    body["items"] = body["items"][:1]
    body.update(changes)
    return body


def item_changed(body: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body["items"][0].update(changes)
    return body


def rpo_order_body() -> dict[str, Any]:
    return copy.deepcopy(STEP_BY_ID["02-06"].request["returns_portal_order"]["orders"][0])


def exchange_body() -> dict[str, Any]:
    return copy.deepcopy(STEP_BY_ID["03-04"].request)


# --- the vocabulary table --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "canonical"),
    [
        ("REFUND", RefundType.REFUND),
        ("EVEN_EXCHANGE", RefundType.EVEN_EXCHANGE),  # guide
        ("UNEVEN_EXCHANGE", RefundType.UNEVEN_EXCHANGE),  # guide
        ("STANDARD_EXCHANGE", RefundType.EVEN_EXCHANGE),  # v5
        ("INSTANT_EXCHANGE", RefundType.INSTANT_EXCHANGE),  # v5
        ("INSTANT_STORE_CREDIT", RefundType.STORE_CREDIT),  # v5
    ],
)
def test_refund_types_of_both_vocabularies(word: str, canonical: RefundType) -> None:
    (unit,) = parse_rma(item_changed(rma_body(), refund_type=word)).units
    assert unit.refund_type is canonical


@pytest.mark.parametrize(
    ("canonical", "guide", "v5"),
    [
        (RefundType.REFUND, "REFUND", "REFUND"),
        (RefundType.EVEN_EXCHANGE, "EVEN_EXCHANGE", "STANDARD_EXCHANGE"),
        (RefundType.UNEVEN_EXCHANGE, "UNEVEN_EXCHANGE", None),
        (RefundType.INSTANT_EXCHANGE, "INSTANT_EXCHANGE", "INSTANT_EXCHANGE"),
        (RefundType.STORE_CREDIT, "INSTANT_STORE_CREDIT", "INSTANT_STORE_CREDIT"),
        (RefundType.WARRANTY, None, None),
    ],
)
def test_refund_types_sent_in_each_vocabulary(
    canonical: RefundType, guide: str | None, v5: str | None
) -> None:
    rma = with_upc(parse_rma(rma_body()))
    rma = rma.model_copy(
        update={"units": tuple(u.model_copy(update={"refund_type": canonical}) for u in rma.units)}
    )
    for vocabulary, word in (("guide", guide), ("v5", v5)):
        if word is None:
            with pytest.raises(MappingError) as raised:
                rma_to_wire(rma, vocabulary=vocabulary)  # type: ignore[arg-type]
            assert raised.value.field == "items[0].refund_type"
            continue
        wire = rma_to_wire(rma, vocabulary=vocabulary)  # type: ignore[arg-type]
        assert wire["items"][0]["refund_type"] == word
        assert parse_rma(wire).units[0].refund_type is canonical


@pytest.mark.parametrize(
    ("word", "canonical"),
    [
        ("PENDING_EXCHANGE", RmaStatus.PENDING_EXCHANGE),
        ("CREATED", RmaStatus.CREATED),
        ("PARTIAL_REFUND", RmaStatus.PARTIALLY_REFUNDED),
        ("REFUNDED", RmaStatus.REFUNDED),
        ("CANCELED", RmaStatus.CANCELED),
    ],
)
def test_rma_statuses(word: str, canonical: RmaStatus) -> None:
    rma = parse_rma(rma_body(status=word))
    assert (rma.status, rma.raw_status) == (canonical, word)
    assert rma_to_wire(rma)["status"] == word
    assert rma_to_wire(with_upc(rma), vocabulary="v5")["status"] == word


@pytest.mark.parametrize("status", [RmaStatus.REQUESTED, RmaStatus.REJECTED])
def test_rma_statuses_optoro_has_no_word_for(status: RmaStatus) -> None:
    rma = parse_rma(rma_body()).model_copy(update={"status": status})
    with pytest.raises(MappingError) as raised:
        rma_to_wire(rma)
    assert raised.value.field == "status"


@pytest.mark.parametrize(
    ("word", "canonical", "sent"),
    [
        ("mail-back", ReturnMethod.MAIL_BACK, "mail-back"),
        ("express-returns", ReturnMethod.EXPRESS_RETURNS, "express-returns"),
        ("express-return", ReturnMethod.EXPRESS_RETURNS, "express-returns"),  # guide prose
        ("customer-keep", ReturnMethod.CUSTOMER_KEEP, "customer-keep"),
        ("home-pickup", ReturnMethod.HOME_PICKUP, "home-pickup"),  # v5
    ],
)
def test_return_methods(word: str, canonical: ReturnMethod, sent: str) -> None:
    rma = parse_rma(rma_body(return_method=word))
    assert rma.return_method is canonical
    assert rma_to_wire(rma)["return_method"] == sent
    assert validate("rma", rma_to_wire(with_upc(rma), vocabulary="v5")) == []


def test_return_method_other_has_no_word() -> None:
    rma = parse_rma(rma_body()).model_copy(update={"return_method": ReturnMethod.OTHER})
    with pytest.raises(MappingError) as raised:
        rma_to_wire(rma)
    assert raised.value.field == "return_method"


@pytest.mark.parametrize("word", [None, *(s.value for s in PackageStatus)])
def test_package_statuses(word: str | None) -> None:
    (unit,) = parse_rma(item_changed(rma_body(), package_tracking_status=word)).units
    assert unit.package_status == (None if word is None else PackageStatus(word))
    wire = rma_to_wire(parse_rma(item_changed(rma_body(), package_tracking_status=word)))
    assert wire["items"][0]["package_tracking_status"] == word


@pytest.mark.parametrize("word", [None, *(s.value for s in ReceivingStatus)])
def test_receiving_statuses(word: str | None) -> None:
    (unit,) = parse_rma(item_changed(rma_body(), receiving_status=word)).units
    assert unit.receiving_status == (None if word is None else ReceivingStatus(word))


def test_order_statuses() -> None:
    for word, canonical, sent in [
        ("Created", OrderStatus.CREATED, "Created"),
        ("Shipped", OrderStatus.SHIPPED, "Shipped"),
        ("Canceled", OrderStatus.CANCELED, "Canceled"),
        ("Cancelled", OrderStatus.CANCELED, "Canceled"),  # guide prose
    ]:
        body = rpo_order_body() | {"status": word}
        order = rpo_to_order(body)
        assert (order.status, order_to_rpo(order)["status"]) == (canonical, sent)


def test_the_documented_table_lists_every_word() -> None:
    doc = vocab.__doc__ or ""
    tables: list[dict[Any, Any]] = [
        vocab.REFUND_TYPE_IN,
        vocab.RMA_STATUS_IN,
        vocab.RETURN_METHOD_IN,
        vocab.PACKAGE_STATUS_IN,
        vocab.RECEIVING_STATUS_IN,
        vocab.ORDER_STATUS_IN,
        *vocab.REFUND_TYPE_OUT.values(),
        vocab.RMA_STATUS_OUT,
        vocab.RETURN_METHOD_OUT,
        vocab.ORDER_STATUS_OUT,
        vocab.TAGS_OUT,
    ]
    for table in tables:
        for key, value in table.items():
            assert f"`{key}`" in doc, key
            assert f"`{value}`" in doc, value


def test_every_out_word_comes_back_in() -> None:
    for vocabulary, table in vocab.REFUND_TYPE_OUT.items():
        for canonical, word in table.items():
            assert vocab.REFUND_TYPE_IN[word] is canonical, (vocabulary, word)
    pairs: list[tuple[dict[Any, str], dict[str, Any]]] = [
        (vocab.RMA_STATUS_OUT, vocab.RMA_STATUS_IN),
        (vocab.RETURN_METHOD_OUT, vocab.RETURN_METHOD_IN),
        (vocab.PACKAGE_STATUS_OUT, vocab.PACKAGE_STATUS_IN),
        (vocab.RECEIVING_STATUS_OUT, vocab.RECEIVING_STATUS_IN),
        (vocab.ORDER_STATUS_OUT, vocab.ORDER_STATUS_IN),
    ]
    for outbound, inbound in pairs:
        for canonical, word in outbound.items():
            assert inbound[word] is canonical


def test_tags() -> None:
    supported = ["FinalSale", "gift-card", "canceled", "Thirdparty", "pickup_in_store"]
    supported += ["cs-required", "ShippingRateOverride", "ignore_refund"]
    canonical = [vocab.tag_in(tag) for tag in supported]
    assert canonical == [
        "final_sale",
        "gift_card",
        "canceled",
        "third_party",
        "pickup_in_store",
        "cs_required",
        "shipping_rate_override",
        "ignore_refund",
    ]
    assert [vocab.tag_out(tag) for tag in canonical] == supported
    assert vocab.tag_out("FINALSALE") == "FinalSale"  # a source platform's spelling
    assert vocab.tag_out("Tier 1") == vocab.tag_in("Tier 1") == "Tier 1"


def test_a_gift_card_line_is_tagged_for_optoro() -> None:
    order = rpo_to_order(rpo_order_body())
    line = order.lines[0].model_copy(update={"is_gift_card": True, "tags": ("final_sale",)})
    wire = order_to_rpo(order.model_copy(update={"lines": (line, *order.lines[1:])}))
    assert wire["items"][0]["tags"] == ["FinalSale", "gift-card"]
    back = rpo_to_order(wire)
    assert back.lines[0].is_gift_card
    assert order_to_rpo(back)["items"][0]["tags"] == ["FinalSale", "gift-card"]


# --- the RMAs v5 description's own examples --------------------------------------------------

V5_EXAMPLES = description("rmas.json")["paths"]["/rmas"]["post"]["requestBody"]["content"][
    "application/json"
]["examples"]


@pytest.mark.parametrize("name", sorted(V5_EXAMPLES))
def test_rmas_v5_examples(name: str) -> None:
    example = V5_EXAMPLES[name]["value"]
    assert validate("rma", example) == []
    rma = parse_rma(example)
    assert differences(rma_to_wire(rma, vocabulary="v5"), example) == []


def test_v5_vocabulary_in_the_examples() -> None:
    rmas = {name: parse_rma(example["value"]) for name, example in V5_EXAMPLES.items()}
    types = {u.refund_type for rma in rmas.values() for u in rma.units}
    assert types == {
        RefundType.REFUND,
        RefundType.EVEN_EXCHANGE,
        RefundType.INSTANT_EXCHANGE,
        RefundType.STORE_CREDIT,
    }
    assert rmas["partial_refund_rma"].status is RmaStatus.PARTIALLY_REFUNDED
    assert rmas["standard_exchange_initiated_rma"].status is RmaStatus.PENDING_EXCHANGE
    accepted = rmas["partially_accepted_rma"].units
    assert accepted[0].package_status is PackageStatus.NOT_DROPPED_OFF
    assert rmas["instant_gift_card_rma"].bonus_credit_cents == 500
    assert rmas["basic_rma"].units[0].upc == "UPC1234"
    assert rmas["basic_rma"].units[0].condition == "N"
    assert rmas["basic_rma"].customer_tags == ("gold_tier_member",)


def test_the_guide_nulls_and_the_v5_omissions() -> None:
    rma = parse_rma(rma_body())
    guide = rma_to_wire(rma)["items"][0]
    assert guide["tracking_number"] is None
    assert guide["package_tracking_status"] is None
    v5 = rma_to_wire(with_upc(rma), vocabulary="v5")
    assert "tracking_number" not in v5["items"][0]
    assert v5["bonus_credit_amount_cents"] == 0
    with pytest.raises(MappingError) as raised:
        rma_to_wire(rma, vocabulary="v5")  # the guide's RMAs carry no upc
    assert raised.value.field == "items[0].upc"


def test_gift_refund_only_and_giftee() -> None:
    rma = parse_rma(STEP_BY_ID["01-02"].request)
    assert rma.gift_refund_only
    assert rma.giftee_email == "email@email.com"


# --- bad input names its field ---------------------------------------------------------------

FINANCIALS = "items[0].refund_financials.estimated_refund_amount_cents"


def without_estimate() -> dict[str, Any]:
    body = rma_body()
    del body["items"][0]["refund_financials"]["estimated_refund_amount_cents"]
    return body


def estimate(value: Any) -> dict[str, Any]:
    body = rma_body()
    body["items"][0]["refund_financials"]["estimated_refund_amount_cents"] = value
    return body


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        (without_estimate(), FINANCIALS, "required"),
        (estimate("13056"), FINANCIALS, "integer"),
        (estimate(130.56), FINANCIALS, "integer"),
        (estimate(True), FINANCIALS, "integer"),
        (estimate(None), FINANCIALS, "integer"),
        (item_changed(rma_body(), refund_type="EXCHANGE"), "items[0].refund_type", "EXCHANGE"),
        (
            item_changed(rma_body(), package_tracking_status="LOST"),
            "items[0].package_tracking_status",
            "LOST",
        ),
        (item_changed(rma_body(), is_exchange="false"), "items[0].is_exchange", "boolean"),
        (item_changed(rma_body(), order_identifier=""), "items[0].order_identifier", "1 char"),
        (rma_body(status="OPEN"), "status", "OPEN"),
        (rma_body(return_method="drop-off"), "return_method", "drop-off"),
        (rma_body(created_at=1674861909), "created_at", "timestamp"),
        (rma_body(updated_at="2023-01-27T23:25:09"), "updated_at", "timezone"),
        (rma_body(items={}), "items", "list"),
        (
            {k: v for k, v in rma_body().items() if k != "rma_identifier"},
            "rma_identifier",
            "required",
        ),
    ],
)
def test_bad_rmas_name_the_field(body: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(MappingError) as raised:
        parse_rma(json.dumps(body).encode())
    assert raised.value.field == field
    assert says.casefold() in str(raised.value).casefold()


def test_a_bad_rma_counts_its_other_errors() -> None:
    body = estimate("1")
    body["items"][0]["refund_type"] = "NOPE"
    body["status"] = "NOPE"
    with pytest.raises(MappingError) as raised:
        parse_rma(body)
    assert "and 2 more errors" in str(raised.value)


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'"rma"', b"\xff\xfe", b'{"rma_identifier": }'])
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MappingError) as raised:
        parse_rma(body)
    assert raised.value.field is None  # the whole body
    assert str(raised.value).startswith("RMA: ")


def test_bad_values_stay_out_of_messages() -> None:
    secret = "giftee-secret@example.com"
    with pytest.raises(MappingError) as raised:
        parse_rma(rma_body(giftee_email=[secret]))
    assert raised.value.field == "giftee_email"
    assert secret not in str(raised.value)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda b: b["items"][0].pop("unit_price_amount_cents"),
            "items[0].unit_price_amount_cents",
        ),
        (lambda b: b["items"][1].update(quantity="3"), "items[1].quantity"),
        (lambda b: b["items"][0].update(weight="1.12"), "items[0].weight"),
        (lambda b: b["refunds"][0].pop("refund_line_items"), "refunds[0].refund_line_items"),
        (lambda b: b["shipping_address"].pop("city"), "shipping_address.city"),
        (lambda b: b.update(status="Refunded"), "status"),
        (lambda b: b.update(currency="usd"), "currency"),
        (lambda b: b["items"][0].update(quantity_shipped=5), "items[0]"),
        (lambda b: b["refunds"][0]["refund_line_items"][0].update(order_item_identifier="9"), None),
    ],
)
def test_bad_returns_portal_orders_name_the_field(change: Any, field: str | None) -> None:
    body = rpo_order_body()
    change(body)
    with pytest.raises(MappingError) as raised:
        rpo_to_order(body)
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("change", "version", "field"),
    [
        (lambda b: b["items"][0].update(quantity="4"), 2, "items[0].quantity"),
        (lambda b: b["items"][0].update(quantity=0), 2, "items[0].quantity"),
        (lambda b: b["items"][0].update(quantity=1001), 2, "items[0].quantity"),
        (
            lambda b: b["items"][0].update(product_amount_cents=1),
            2,
            "items[0].product_amount_cents",
        ),
        (lambda b: b.update(items=[]), 2, "items"),
        (lambda b: b.pop("is_gift"), 2, "is_gift"),
        (lambda b: b.update(currency="Dollars"), 2, "currency"),
        (lambda b: b["shipping_address"].update(state="VA"), 2, "shipping_address"),
        (lambda b: b["shipping_address"].pop("street1"), 2, "shipping_address.street1"),
        (
            lambda b: b["items"][0].update(bonus_credit_amount_cents=100),
            1,
            "items[0].bonus_credit_amount_cents",
        ),
        (lambda b: None, 3, "X-Optiturn-Api-Version"),
    ],
)
def test_bad_exchange_orders_name_the_field(change: Any, version: int, field: str) -> None:
    body = exchange_body()
    change(body)
    with pytest.raises(MappingError) as raised:
        parse_exchange_order(body, api_version=version)
    assert raised.value.field == field


def test_bad_variants_name_the_field() -> None:
    body = copy.deepcopy(STEP_BY_ID["04-02"].response)
    del body["variants"][1]["quantity_in_stock"]
    with pytest.raises(MappingError) as raised:
        parse_variants_response(body)
    assert raised.value.field == "variants[1].quantity_in_stock"


# --- what we send: the description's requirements -------------------------------------------


def test_outbound_fallbacks_for_required_fields() -> None:
    order = rpo_to_order(rpo_order_body())
    line = order.lines[0].model_copy(update={"product_id": None, "variant_id": None})
    bare = order.model_copy(
        update={
            "lines": (line, *order.lines[1:]),
            "customer": Customer(email="shopper@example.com", first_name="Ben", last_name="W"),
            "billing_address": None,
            "shipping_address": order.shipping_address.model_copy(update={"name": None})
            if order.shipping_address
            else None,
        }
    )
    wire = order_to_rpo(bare)
    assert wire["customer"]["identifier"] == "shopper@example.com"  # the guide's advice
    assert wire["items"][0]["product_identifier"] == wire["items"][0]["sku"] == "sku1234"
    assert wire["items"][0]["variant_identifier"] == "sku1234"
    assert wire["billing_address"] == wire["shipping_address"]
    assert wire["shipping_address"]["name"] == "Ben W"
    assert validate("rpo_order", wire) == []


@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"customer": None}, "customer"),
        ({"customer": Customer(id="c1")}, "customer.email"),
        ({"shipping_address": None, "billing_address": None}, "shipping_address"),
        ({"lines": (OrderLine(id="1", sku="s", qty=1, unit_price_cents=1),)}, "items[0].title"),
        (
            {"lines": (OrderLine(id="1", title="t", qty=1, unit_price_cents=1),)},
            "items[0].product_identifier",  # no product id, and no SKU to stand in
        ),
        (
            {
                "lines": (
                    OrderLine(
                        id="1", title="t", product_id="p", variant_id="v", qty=1, unit_price_cents=1
                    ),
                )
            },
            "items[0]",  # neither sku nor upc
        ),
        (
            {"lines": (OrderLine(id="1", sku="s", title="t", qty=1001, unit_price_cents=1),)},
            "items[0].quantity",
        ),
        (
            {"transactions": (Payment(id="t", amount_cents=1, status="S", kind="SALE"),)},
            "transactions[0].parent_identifier",
        ),
    ],
)
def test_what_the_description_requires_is_named_when_missing(
    update: dict[str, Any], field: str
) -> None:
    order = rpo_to_order(rpo_order_body()).model_copy(update=update | {"refunds": ()})
    with pytest.raises(MappingError) as raised:
        order_to_rpo(order)
    assert raised.value.field == field


def test_a_discount_without_dates_takes_the_orders_created_at() -> None:
    order = rpo_to_order(rpo_order_body())
    order = order.model_copy(update={"discounts": (Discount(id="d", code="X", amount_cents=1),)})
    wire = order_to_rpo(order)
    assert wire["discounts"][0]["created_at"] == wire["created_at"]
    assert wire["discounts"][0].get("updated_at") is None


def test_refund_line_identifiers_are_unique_across_refunds() -> None:
    order = rpo_to_order(rpo_order_body())
    first = order.refunds[0]
    again = Refund(
        id="RET2",
        total_cents=1,
        created_at=NOW,
        lines=(RefundLine(id=first.lines[0].id, order_line_id="2", qty=0),),
    )
    with pytest.raises(MappingError) as raised:
        order_to_rpo(order.model_copy(update={"refunds": (first, again)}))
    assert raised.value.field == "refunds[1].refund_line_items[0].identifier"
    with pytest.raises(MappingError) as batch:
        rpo_request([order, order.model_copy(update={"refunds": (first, again)})])
    assert batch.value.field == (
        "returns_portal_order.orders[1].refunds[1].refund_line_items[0].identifier"
    )


def test_weights_go_out_in_pounds() -> None:
    order = rpo_to_order(rpo_order_body())
    assert order.lines[0].weight == Decimal("1.12")
    assert order.lines[0].weight_unit is WeightUnit.LB
    grams = order.lines[0].model_copy(update={"weight": Decimal(500), "weight_unit": WeightUnit.G})
    wire = order_to_rpo(order.model_copy(update={"lines": (grams, *order.lines[1:])}))
    assert wire["items"][0]["weight"] == 1.1023


def test_all_size_rule() -> None:
    dims = ("Size", "Variant", "Length")
    attrs = [VariantAttribute(name=n, value=v) for n, v in [("Color", "Blue"), ("Size", "XL")]]
    assert all_size(attrs, dims) is None  # one size dimension: no all_size
    attrs.append(VariantAttribute(name="Length", value="32"))
    assert all_size(attrs, dims) == "XL | 32"
    attrs.insert(0, VariantAttribute(name="variant", value="PETITE"))  # any case, any position
    assert all_size(attrs, dims) == "XL | PETITE | 32"  # in the order of the dimensions
    assert all_size(attrs, ()) is None

    variant = Variant(sku="s", title="t", quantity_in_stock=1, unit_price_cents=1)
    stale = variant.model_copy(
        update={"attributes": (*attrs, VariantAttribute(name="all_size", value="old"))}
    )
    inactive = variant.model_copy(update={"sku": "gone", "is_active": False})
    (sent,) = variants_response([stale, inactive], dims)["variants"]
    assert sent["attributes"][-1] == {"name": "all_size", "value": "XL | PETITE | 32"}
    assert [a["name"] for a in sent["attributes"]].count("all_size") == 1


def test_exchange_candidates_ride_along_with_their_line() -> None:
    order = rpo_to_order(rpo_order_body())
    candidate = Variant(
        sku="sku1236",
        title="Blue T-Shirt",
        attributes=(
            VariantAttribute(name="Color", value="Blue"),
            VariantAttribute(name="Size", value="XL"),
            VariantAttribute(name="Length", value="32"),
        ),
        quantity_in_stock=-2,
        unit_price_cents=12800,
        currency="USD",
        image_url="https://media.media.com/media/123.jpg",
    )
    line = order.lines[0].model_copy(update={"variants": (candidate,)})
    wire = order_to_rpo(
        order.model_copy(update={"lines": (line, *order.lines[1:])}),
        size_dimensions=("Size", "Length"),
    )
    (sent,) = wire["items"][0]["variants"]
    assert sent["attributes"][-1] == {"name": "all_size", "value": "XL | 32"}
    assert (sent["product_identifier"], sent["variant_identifier"]) == ("sku1236", "sku1236")
    assert (sent["allow_backorder"], sent["inventory_managed_by_platform"]) == (False, False)
    assert sent["product_amount_cents"] == sent["unit_price_amount_cents"] == 12800
    assert validate("rpo_order", wire) == []
    (back,) = rpo_to_order(wire).lines[0].variants
    assert back.attributes == candidate.attributes  # all_size is derived, not kept
    assert (back.sku, back.unit_price_cents, back.image_url) == (
        "sku1236",
        12800,
        candidate.image_url,
    )


def test_variants_without_a_price_are_left_out() -> None:
    """Optoro decides from the price whether to show a variant: one without is not offered,
    the others are (a MappingError for the whole list, before)."""
    unpriced = Variant(sku="s", title="t", quantity_in_stock=0)
    priced = Variant(sku="p", title="t", quantity_in_stock=1, unit_price_cents=500)
    body = variants_response([unpriced, priced], ())
    assert [v["sku"] for v in body["variants"]] == ["p"]
    assert offered([unpriced, priced]) == ([priced], [unpriced])


def test_exchange_orders_v2_gift_card_with_bonus() -> None:
    """The description's own items example: an even exchange and an instant gift card."""
    schema = description("exchange-orders.json")["components"]["schemas"]["exchange_order"]
    body = exchange_body() | {"items": schema["properties"]["items"]["example"]}
    order = parse_exchange_order(body, api_version=2)
    even, gift_card = order.items
    assert (even.kind, gift_card.kind) == (ExchangeKind.EVEN, ExchangeKind.GIFT_CARD)
    assert (gift_card.bonus_credit_cents, gift_card.return_items[0].original_line_id) == (
        200,
        "4567",
    )
    assert order.total_cents == (200 - 20 + 100) + (800 + 200)
    wire = exchange_order_to_wire(order)
    assert validate("exchange_order_request", wire) == []
    assert wire["items"][1]["bonus_credit_amount_cents"] == 200
    assert "bonus_credit_amount_cents" not in wire["items"][0]
    with pytest.raises(MappingError) as raised:
        exchange_order_to_wire(order, api_version=1)
    assert raised.value.field == "items[1].bonus_credit_amount_cents"


def test_exchange_orders_v1_gift_card_and_agreed_skus() -> None:
    body = exchange_body()
    body["items"] = [{"sku": "OPTOROGIFTCARD", "quantity": 1, "unit_price_amount_cents": 1000}]
    assert parse_exchange_order(body, api_version=1).items[0].kind is ExchangeKind.EVEN
    agreed = parse_exchange_order(body, api_version=1, gift_card_skus={"OPTOROGIFTCARD"})
    assert agreed.items[0].kind is ExchangeKind.GIFT_CARD
    assert agreed.total_cents == 1000


def test_exchange_addresses_accept_both_spellings() -> None:
    guide = parse_exchange_order(exchange_body(), api_version=2)
    described = exchange_body()
    for key in ("shipping_address", "billing_address"):
        address = described[key]
        address["postal_code"] = address.pop("zip_code")
    assert parse_exchange_order(described, api_version=2) == guide
    assert guide.shipping_address == Address(
        name="Ben Wallace",
        street1="1001 G St NW",
        city="Washington",
        state="DC",
        zip_code="20001",
        country_code="US",
        phone="3017607003",
    )


# --- RMA versions: equal updated_at ordered by progress --------------------------------------


@pytest.mark.parametrize(
    ("scenario", "tied"), [("06", ["03", "05", "06"]), ("15", ["03", "05", "06"])]
)
def test_rma_version_breaks_updated_at_ties(scenario: str, tied: list[str]) -> None:
    messages = [step for step in STEPS if step.id.startswith(scenario) and step.kind == "rma"]
    rmas = [parse_rma(step.request) for step in messages]
    tied_rmas = [rma for step, rma in zip(messages, rmas, strict=True) if step.id[3:] in tied]
    assert len(tied_rmas) == 3
    assert len({rma.updated_at for rma in tied_rmas}) == 1  # the guide's ties
    versions = [rma_version(rma) for rma in rmas]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)  # strictly increasing
    shuffled = list(zip(versions, rmas, strict=True))
    random.Random(6).shuffle(shuffled)
    assert [rma for _, rma in sorted(shuffled, key=lambda pair: pair[0])] == rmas
    assert rma_version(parse_rma(messages[0].request)) == versions[0]  # a duplicate is equal


def test_rma_version_is_utc_with_microseconds() -> None:
    rma = parse_rma(rma_body(updated_at="2023-01-28T14:42:59.23-05:00"))
    assert rma_version(rma)[0] == "2023-01-28T19:42:59.230000Z"
    assert rma_version(rma)[1:] == rma.progress()


def test_rma_without_updated_at_uses_created_at() -> None:
    body = rma_body()
    del body["updated_at"]
    rma = parse_rma(body)
    assert rma.updated_at == rma.created_at


# --- property: generated canonical orders ----------------------------------------------------

TAGS = ["final_sale", "pickup_in_store", "third_party", "cs_required", "canceled", "VIP"]
moments = st.datetimes(  # hypothesis wants naive bounds and adds the zone
    min_value=datetime(2000, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)


@st.composite
def order_lines(draw: st.DrawFn, index: int) -> OrderLine:
    qty = draw(st.integers(0, 1000))
    shipped = draw(st.integers(0, qty))
    canceled = draw(st.integers(0, qty - shipped))
    unit = draw(st.integers(0, 10_000_000))
    return OrderLine(
        id=str(index + 1),
        sku=f"sku{index}",
        title=f"Item {index}",
        qty=qty,
        qty_shipped=shipped,
        qty_canceled=canceled,
        unit_price_cents=unit,
        tax_cents=draw(st.integers(0, 1_000_000)),
        discount_cents=draw(st.integers(0, unit * shipped)),
        is_gift_card=draw(st.booleans()),
        shipped_at=draw(st.none() | moments),
        weight=draw(st.none() | st.decimals(0, 1000, places=2)),
        weight_unit=draw(st.sampled_from(list(WeightUnit))),
        tags=tuple(draw(st.lists(st.sampled_from(TAGS), unique=True, max_size=3))),
    )


@st.composite
def orders(draw: st.DrawFn) -> Order:
    count = draw(st.integers(1, 6))
    lines = tuple(draw(order_lines(i)) for i in range(count))
    address = Address(
        name="Ben Wallace",
        street1="1001 G St NW",
        city="Washington",
        state="DC",
        zip_code="20001",
        country_code="US",
    )
    return Order(
        id=draw(st.text(min_size=1, max_size=12)),
        status=draw(st.sampled_from(list(OrderStatus))),
        currency="USD",
        lines=lines,
        customer=Customer(id=draw(st.none() | st.just("c1")), email="shopper@example.com"),
        shipping_address=address,
        billing_address=draw(st.none() | st.just(address)),
        shipping_cents=draw(st.integers(0, 5_000)),
        shipping_tax_cents=draw(st.integers(0, 500)),
        fees_cents=draw(st.integers(0, 500)),
        taxes_included=draw(st.booleans()),
        tags=tuple(draw(st.lists(st.sampled_from(TAGS), unique=True, max_size=2))),
        created_at=draw(moments),
        updated_at=draw(moments),
    )


@settings(max_examples=150, deadline=None)
@given(orders())
def test_generated_orders_send_headers_summed_from_lines(order: Order) -> None:
    wire = order_to_rpo(order)
    items = wire["items"]
    assert [i["product_amount_cents"] for i in items] == [
        line.unit_price_cents * line.qty_shipped for line in order.lines
    ]
    assert wire["product_amount_cents"] == sum(i["product_amount_cents"] for i in items)
    assert wire["tax_amount_cents"] == sum(i["tax_amount_cents"] for i in items)
    assert wire["discount_amount_cents"] == sum(i["discount_amount_cents"] for i in items)
    if not any(line.qty_shipped for line in order.lines):
        # nothing shipped: the header charges nothing either (the guide's canceled order)
        zero = dict.fromkeys(("shipping_cents", "shipping_tax_cents", "order_discount_cents"), 0)
        order = order.model_copy(update={**zero, "fees_cents": 0})
    assert wire["total_amount_cents"] == order.total_cents
    assert validate("rpo_request", rpo_request([order])) == []

    back = rpo_to_order(wire)
    assert (back.product_cents, back.tax_cents, back.discount_cents) == (
        order.product_cents,
        order.tax_cents,
        order.discount_cents,
    )
    # Optoro's wire has no fees and no tax-inclusive flag: only then can the total differ
    mismatches = header_mismatches(wire)
    if order.fees_cents == 0 and not order.taxes_included:
        assert mismatches == {}
    else:
        assert set(mismatches) <= {"total_amount_cents"}


# --- helpers ---------------------------------------------------------------------------------


def with_upc(rma: Rma) -> Rma:
    units = tuple(u.model_copy(update={"upc": u.upc or "00012345678905"}) for u in rma.units)
    return rma.model_copy(update={"units": units})
