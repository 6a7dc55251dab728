"""Go-live: international ReturnLogic orders reach Optoro: amounts in the currency's ISO 4217
minor units, addresses by their country's rules (no postcode in Hong Kong, no region code in
Ireland), and what cannot be sent as the country needs is flagged, never dropped.

End to end: the ReturnLogic sandbox -> the running daemon's order sync -> the Optoro sandbox.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.returnlogic.orders import DOUBT
from bridge.domain import Address, major_to_minor, minor_unit_exponent
from mappings._countries import address_gaps
from mappings.returnlogic import TagRules, map_order
from tests.contract.conftest import STEPS
from tests.guide_as_returnlogic import recorded_at, rl_order
from tests.test_golive_orders import sync, world

RULES = TagRules()


def guide_order() -> dict[str, Any]:
    step = next(s for s in STEPS if s.id == "01-01")
    order: dict[str, Any] = step.request["returns_portal_order"]["orders"][0]
    return order


def international(
    rl_id: int, number: str, currency: str, address: dict[str, Any], **amounts: Any
) -> dict[str, Any]:
    record = rl_order({**guide_order(), "identifier": number}, rl_id, recorded=recorded_at())
    record.update(shopCurrencyCode=currency, shippingAddress=address, billingAddress=address)
    item = record["orderItems"][0]
    item.update(
        pricePerItem=amounts["price"],
        totalTax=amounts["tax"],
        totalDiscount=0,
        discountPerItem=0,
        taxPerItem=0,
    )
    record.update(taxPrice=amounts["tax"], shippingPrice=amounts["shipping"], refundAmount=0)
    return record


HONG_KONG = {
    "address1": "1 Queen's Road Central",
    "city": "Hong Kong",
    "region": "",
    "countryCode": "HK",
}
IRELAND = {"address1": "1 Grafton Street", "city": "Dublin", "countryCode": "IE"}
IRELAND_COUNTY = {**IRELAND, "region": "County Dublin", "postcode": "D02 X285"}
US_NO_STATE = {"address1": "1001 G St NW", "city": "Washington", "countryCode": "US"}
US_NO_STATE["postcode"] = "20001"


async def test_international_orders_reach_optoro_in_minor_units_and_country_rules(
    tmp_path: Path,
) -> None:
    orders = [
        international(1, "JP-1", "JPY", HONG_KONG, price=18, tax=Decimal(7), shipping=500),
        international(
            2,
            "KW-1",
            "KWD",
            IRELAND,
            price=Decimal("1.234"),
            tax=Decimal("0.400"),
            shipping=Decimal("0.5"),
        ),
        international(3, "IE-1", "EUR", IRELAND_COUNTY, price=Decimal("12.5"), tax=0, shipping=0),
        international(4, "US-1", "USD", US_NO_STATE, price=18, tax=Decimal("1.52"), shipping=0),
    ]
    async with world(tmp_path, address_name_from_email="true") as w:
        for index, record in enumerate(orders):
            await sync(w, record, index == 0)
        sent = {number: w.optoro.latest(number) for number in ("JP-1", "KW-1", "IE-1", "US-1")}
        assert all(sent.values()), {k: v is not None for k, v in sent.items()}

        jp = sent["JP-1"]
        assert jp is not None
        item = jp["items"][0]
        assert (item["unit_price_amount_cents"], item["product_amount_cents"]) == (18, 72)
        assert jp["shipping_amount_cents"] == 500  # 500 yen, not 50000
        assert jp["tax_amount_cents"] == 7
        assert jp["total_amount_cents"] == 72 + 7 + 500
        hk = jp["shipping_address"]
        assert (hk["country_code"], hk["state"], hk["zip_code"]) == ("HK", "", "")

        kw = sent["KW-1"]
        assert kw is not None
        assert kw["items"][0]["unit_price_amount_cents"] == 1234  # fils: 3 decimals
        assert kw["shipping_amount_cents"] == 500
        assert kw["tax_amount_cents"] == 400
        ie = kw["shipping_address"]
        assert (ie["country_code"], ie["state"], ie["zip_code"]) == ("IE", "", "")

        county = sent["IE-1"]
        assert county is not None
        assert county["shipping_address"]["state"] == "County Dublin"
        assert county["shipping_address"]["zip_code"] == "D02 X285"
        assert county["items"][0]["unit_price_amount_cents"] == 1250

        us = sent["US-1"]
        assert us is not None  # sent with what is known...
        assert us["shipping_address"]["state"] == ""
        flags = await w.flags()
        # ...and flagged: a US address needs a state. Hong Kong and Ireland need nothing more.
        assert set(flags) == {"US-1"}
        assert all(reason.startswith(DOUBT) for reason in flags["US-1"])
        assert any("shippingAddress: no state" in reason for reason in flags["US-1"])


@pytest.mark.parametrize(
    ("currency", "amount", "minor"),
    [
        ("JPY", Decimal(18), 18),
        ("KRW", Decimal("1500"), 1500),
        ("USD", Decimal("18"), 1800),
        ("EUR", Decimal("0.005"), 1),  # half up, once
        ("KWD", Decimal("1.2345"), 1235),
        ("BHD", Decimal("0.1"), 100),
        ("CLF", Decimal("1.00005"), 10001),
        ("jpy", Decimal("18.5"), 19),
    ],
)
def test_minor_units(currency: str, amount: Decimal, minor: int) -> None:
    assert major_to_minor(amount, currency) == minor


def test_minor_unit_exponents() -> None:
    assert [minor_unit_exponent(c) for c in ("JPY", "USD", "KWD", "CLF", "XXX")] == [0, 2, 3, 4, 2]


def test_mapping_reads_amounts_in_the_order_currency() -> None:
    record = international(9, "JP-9", "JPY", HONG_KONG, price=18, tax=0, shipping=0)
    mapped = map_order(record, RULES)
    assert mapped.order.lines[0].unit_price_cents == 18
    assert mapped.doubts == ()


@pytest.mark.parametrize(
    ("country", "state", "zip_code", "gaps"),
    [
        ("HK", None, None, 0),
        ("AE", None, None, 0),
        ("IE", None, None, 0),
        ("GB", None, "SW1A 1AA", 0),
        ("GB", None, None, 1),
        ("US", None, "20001", 1),
        ("US", "DC", None, 1),
        ("CA", None, None, 2),
        ("JP", "Tokyo", "100-0001", 0),
    ],
)
def test_country_address_rules(
    country: str, state: str | None, zip_code: str | None, gaps: int
) -> None:
    address = Address(
        street1="1 Main St", city="City", state=state, zip_code=zip_code, country_code=country
    )
    assert len(address_gaps(address)) == gaps
