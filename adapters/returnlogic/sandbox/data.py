"""ReturnLogic-shaped records for the sandbox: deterministic generation and the RMA workflow.

Records are plain dicts shaped exactly like the API's JSON (``GET /v1/orders``,
``/v1/products``, ``/v1/rmas`` samples), so the server serves them as they are.

Money is computed in integer cents and written as the JSON numbers the API sends
(:func:`money`: ``4000 -> 40``, ``595 -> 5.95``). A ``float`` is only ever made from whole
cents, and the shortest ``repr`` of ``cents / 100`` is the exact two-place decimal, so a client
parsing with ``parse_float=Decimal`` reads the exact amount (as from ReturnLogic, a JavaScript
service whose numbers are doubles).

Dates are ISO-8601 UTC with milliseconds and ``Z`` (``2024-10-06T17:56:38.921Z``), the API's
format; one fixed width, so comparing the text compares the instants.

:func:`generate_products`, :func:`generate_orders` and :func:`generate_rmas` draw everything from
one ``random.Random(seed)`` and take ids from an :class:`IdAllocator`, so the same seed on a
fresh sandbox gives byte-identical records. :func:`transition` moves an RMA through its workflow
(timeline, label, receipt, processing, the order's refund totals); generation and the live
sandbox both use it, so generated history and live changes look alike.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

from bridge.domain import dollars_to_cents

__all__ = [
    "DAY_MS",
    "DEFAULT_ANCHOR",
    "FINANCIAL_STATUSES",
    "FULFILLMENT_STATUSES",
    "PRODUCT_STATUSES",
    "RETURN_TYPES",
    "TERMINAL_STATUSES",
    "WAREHOUSES",
    "WORKFLOW_PATH",
    "WORKFLOW_STATUSES",
    "Catalog",
    "IdAllocator",
    "generate_orders",
    "generate_products",
    "generate_rmas",
    "is_processed",
    "iso",
    "iso_ms",
    "money",
    "new_rma",
    "parse_iso_ms",
    "refund_units",
    "rma_totals",
    "to_cents",
    "transition",
]

T = TypeVar("T")

DEFAULT_ANCHOR = datetime(2025, 1, 1, tzinfo=UTC)
"""The fixed "now" generated data is spread back from (180 days of orders before it)."""
DAY_MS = 86_400_000
HOUR_MS = 3_600_000

WORKFLOW_STATUSES: tuple[str, ...] = (
    "Abandoned",
    "Requested",
    "Authorized",
    "Canceled",
    "InTransit",
    "Delivered",
    "Active",
    "Received",
    "Processed",
    "Complete",
    "Rejected",
)
"""``RmaWorkflowStatusKey`` in the spec's order; ``workflowStatusId`` is the index (the sample's
``Delivered`` is 5)."""
WORKFLOW_PATH: tuple[str, ...] = (
    "Requested",
    "Authorized",
    "InTransit",
    "Delivered",
    "Received",
    "Processed",
    "Complete",
)
"""The main line an RMA advances along; ``Active`` sits where ``Authorized`` does."""
TERMINAL_STATUSES = frozenset({"Abandoned", "Canceled", "Rejected", "Complete"})
RETURN_TYPES: tuple[str, ...] = ("exchange", "warranty", "refund", "giftcard")
FINANCIAL_STATUSES: tuple[str, ...] = (
    "authorized",
    "paid",
    "partially_paid",
    "pending",
    "refunded",
    "voided",
    "ThirdParty",
)
FULFILLMENT_STATUSES: tuple[str, ...] = ("fulfilled", "partial", "restocked")
PRODUCT_STATUSES: tuple[str, ...] = ("active", "inActive", "any")

ADMIN_EMAIL = "admin@returnlogic.com"
ADMIN_USER_ID = "3b57f944-5d35-4167-a2b1-2a70c9c61b57"

# --- wire values -----------------------------------------------------------------------------


def money(cents: int) -> int | float:
    """Cents as the JSON number the API sends: ``4000 -> 40``, ``595 -> 5.95``."""
    whole, frac = divmod(cents, 100)
    return whole if frac == 0 else cents / 100


def to_cents(value: Any) -> int:
    """A wire amount (``int``, ``Decimal``, numeric text, or a double) in cents, half up.

    ``ValueError`` for anything else (booleans included) and for non-finite numbers.
    """
    if isinstance(value, bool):
        raise ValueError("expected a number, got bool")
    if isinstance(value, int):
        return value * 100
    if isinstance(value, float):
        value = Decimal(repr(value))
    if isinstance(value, str):
        try:
            value = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError("not a number") from None
    if not isinstance(value, Decimal):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    if not value.is_finite():
        raise ValueError("must be a finite number")
    try:
        return dollars_to_cents(value)
    except Exception as exc:  # MappingError: out of range
        raise ValueError(str(exc)) from None


def iso(ms: int) -> str:
    """Epoch milliseconds as the API writes dates: ``2024-10-06T17:56:38.921Z``."""
    seconds, millis = divmod(ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{millis:03d}Z"


def iso_ms(when: datetime) -> int:
    """An aware datetime in epoch milliseconds."""
    return int(when.timestamp() * 1000)


def parse_iso_ms(text: str) -> int:
    """ISO-8601 text (``Z``, an offset, or none = UTC) in epoch milliseconds; ``ValueError``."""
    when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return iso_ms(when)


# --- ids -------------------------------------------------------------------------------------

_ID_BASES = {
    "order": 100_001,
    "order_item": 900_001,
    "order_discount": 60_001,
    "order_number": 1001,
    "external_order": 4_500_000_001,
    "external_order_item": 13_000_000_001,
    "product": 500_001,
    "product_option": 300_001,
    "variant": 800_001,
    "variant_option": 3_000_001,
    "external_product": 7_000_001,
    "external_variant": 41_000_001,
    "external_option": 21_000_001,
    "rma": 20_001,
    "rma_item": 1_100_001,
}


@dataclass
class IdAllocator:
    """ReturnLogic's database ids, one counter per kind, shared by every team (as a database's
    sequences are)."""

    next_ids: dict[str, int] = field(default_factory=lambda: dict(_ID_BASES))

    def take(self, kind: str) -> int:
        value = self.next_ids[kind]
        self.next_ids[kind] = value + 1
        return value


class _Weighted(Generic[T]):
    """A weighted draw with the cumulative table built once (``random.choices`` rebuilds it
    on every call, which dominated generation time)."""

    def __init__(self, table: Sequence[tuple[T, int]]) -> None:
        self.values = [value for value, _ in table]
        self.cumulative = list(itertools.accumulate(weight for _, weight in table))
        self.total = self.cumulative[-1]

    def __call__(self, rng: random.Random) -> T:
        return self.values[bisect.bisect(self.cumulative, rng.random() * self.total)]


# --- pools -----------------------------------------------------------------------------------

_FIRST = (
    "Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira",
    "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor",
)  # fmt: skip
_LAST = (
    "Adams", "Brooks", "Chen", "Diaz", "Evans", "Fischer", "Garcia", "Hughes", "Ito", "Jones",
    "Khan", "Lopez", "Moreau", "Nakamura", "Okafor", "Patel", "Quist", "Rossi", "Smith", "Tran",
)  # fmt: skip
_STREETS = (
    "St Johns Church Rd", "Market St", "Oak Ave", "Maple Dr", "Elm St", "Cedar Ln",
    "Lakeview Blvd", "Harbor Way", "Sunset Blvd", "Pine St", "River Rd", "Hillcrest Ave",
)  # fmt: skip
# (city, region, regionCode, postcode, tax rate in basis points, tax on shipping)
_PLACES = (
    ("Camp Hill", "Pennsylvania", "PA", "17011", 600, True),
    ("Brooklyn", "New York", "NY", "11201", 888, True),
    ("Austin", "Texas", "TX", "78701", 825, True),
    ("Portland", "Oregon", "OR", "97205", 0, False),
    ("Denver", "Colorado", "CO", "80202", 881, False),
    ("Seattle", "Washington", "WA", "98101", 1025, True),
    ("Chicago", "Illinois", "IL", "60601", 1025, False),
    ("Miami", "Florida", "FL", "33130", 700, True),
    ("Columbus", "Ohio", "OH", "43215", 750, True),
    ("Wilmington", "Delaware", "DE", "19801", 0, False),
    ("San Diego", "California", "CA", "92101", 775, False),
    ("Atlanta", "Georgia", "GA", "30303", 890, True),
)
COUNTRY = "United States Of America"
WAREHOUSES: tuple[dict[str, str], ...] = (
    {
        "address1": "395 St Johns Church Rd",
        "address2": "",
        "city": "Camp Hill",
        "region": "Pennsylvania",
        "regionCode": "PA",
        "postcode": "17011",
        "country": COUNTRY,
        "countryCode": "US",
        "warehouseNickname": "NorthEast-3PL",
    },
    {
        "address1": "1200 Logistics Pkwy",
        "address2": "Dock 4",
        "city": "Reno",
        "region": "Nevada",
        "regionCode": "NV",
        "postcode": "89502",
        "country": COUNTRY,
        "countryCode": "US",
        "warehouseNickname": "West-DC",
    },
)
_ADJECTIVES = (
    "Licensed", "Rustic", "Handcrafted", "Sleek", "Ergonomic", "Refined", "Classic", "Modern",
    "Vintage", "Bold", "Practical", "Gorgeous",
)  # fmt: skip
_MATERIALS = (
    "Cotton", "Wool", "Linen", "Leather", "Canvas", "Bamboo", "Steel", "Ceramic", "Recycled",
)  # fmt: skip
_Kind = tuple[str, str, tuple[tuple[str, tuple[str, ...]], ...], tuple[int, int], int]
# (noun, productType, options, price range in cents, grams)
_KINDS: tuple[_Kind, ...] = (
    ("Tee", "Apparel", (("Size", ("S", "M", "L", "XL")), ("Color", ("Black", "White", "Navy"))),
     (1500, 3500), 200),
    ("Hoodie", "Apparel", (("Size", ("S", "M", "L", "XL")), ("Color", ("Gray", "Olive"))),
     (4500, 8500), 650),
    ("Sneaker", "Footwear", (("Size", ("7", "8", "9", "10", "11", "12")),), (6000, 14000), 900),
    ("Backpack", "Bags", (("Color", ("Black", "Olive", "Gray")),), (3500, 9000), 1100),
    ("Mug", "Home", (), (1200, 2400), 400),
    ("Keyboard", "Electronics", (("Layout", ("US", "UK")),), (4900, 15900), 2000),
)  # fmt: skip
_GIFT_CARD_VALUES = (("25", 2500), ("50", 5000), ("100", 10000))
_DISCOUNTS = (("SUMMERFUN", 10), ("WELCOME15", 15), ("VIP20", 20))
_REASONS = (
    ("SZ", "Too Small"),
    ("SZL", "Too Large"),
    ("DMG", "Damaged"),
    ("NLN", "No longer needed"),
    ("QTY", "Wrong quantity"),
    ("OTH", "Other"),
)
_RMA_STATUS = _Weighted(
    (
        ("Requested", 10),
        ("Authorized", 14),
        ("Active", 3),
        ("InTransit", 12),
        ("Delivered", 9),
        ("Received", 8),
        ("Processed", 8),
        ("Complete", 22),
        ("Canceled", 5),
        ("Rejected", 3),
        ("Abandoned", 4),
    )
)
_RETURN_TYPE = _Weighted((("refund", 60), ("exchange", 20), ("giftcard", 15), ("warranty", 5)))


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# --- catalog ---------------------------------------------------------------------------------


@dataclass
class Catalog:
    """The team's variants by SKU, for order and RMA items: SKU -> (product, variant)."""

    by_sku: dict[str, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)

    def add(self, product: dict[str, Any]) -> None:
        for variant in product["variants"]:
            if variant.get("sku"):
                self.by_sku[variant["sku"]] = (product, variant)

    def sellable(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [
            (p, v)
            for p, v in self.by_sku.values()
            if p.get("isActive", True) and v.get("isActive", True)
        ]


def generate_products(
    count: int, rng: random.Random, ids: IdAllocator, anchor_ms: int
) -> list[dict[str, Any]]:
    """``count`` products (the first is a gift card) with options and 1-8 variants each."""
    products = []
    for index in range(count):
        if index == 0:
            products.append(_gift_card_product(rng, ids, anchor_ms))
        else:
            products.append(_product(rng, ids, anchor_ms))
    return products


def _product_base(
    rng: random.Random, ids: IdAllocator, anchor_ms: int, name: str, product_type: str
) -> dict[str, Any]:
    created = anchor_ms - rng.randrange(200 * DAY_MS, 400 * DAY_MS)
    updated = created + rng.randrange(0, 150 * DAY_MS)
    return {
        "isActive": True,
        "rlProductId": ids.take("product"),
        "externalProductId": str(ids.take("external_product")),
        "name": name,
        "vendor": "Returnlogic",
        "productType": product_type,
        "tags": [product_type.lower()],
        "imageUrl": "",
        "createDate": iso(created),
        "updateDate": iso(updated),
        "options": [],
        "variants": [],
        "isDeleted": False,
        "isPublic": True,
    }


def _product(rng: random.Random, ids: IdAllocator, anchor_ms: int) -> dict[str, Any]:
    noun, product_type, option_defs, (low, high), grams = rng.choice(_KINDS)
    name = f"{rng.choice(_ADJECTIVES)} {rng.choice(_MATERIALS)} {noun}"
    product = _product_base(rng, ids, anchor_ms, name, product_type)
    product["isActive"] = rng.random() >= 0.04
    price = rng.randrange(low // 100, high // 100 + 1) * 100 - rng.choice((0, 1, 5, 51))
    options = []
    chosen: list[tuple[str, str, tuple[str, ...]]] = []
    for position, (option_name, values) in enumerate(option_defs, start=1):
        keep = max(1, rng.randint(len(values) - 2, len(values)))
        picked = tuple(v for v in values if v in set(rng.sample(values, keep)))
        external_option_id = str(ids.take("external_option"))
        options.append(
            {
                "rlProductOptionId": ids.take("product_option"),
                "externalOptionId": external_option_id,
                "name": option_name,
                "position": position,
            }
        )
        chosen.append((option_name, external_option_id, picked))
    product["options"] = options
    combos: list[tuple[tuple[str, str, str], ...]] = [()]
    for option_name, external_option_id, picked in chosen:
        combos = [
            (*combo, (option_name, external_option_id, value))
            for combo in combos
            for value in picked
        ]
    combos = combos[:8]
    prefix = f"{noun[:3].upper()}{product['rlProductId']}"
    for position, combo in enumerate(combos, start=1):
        values = tuple(value for _, _, value in combo)
        sku = "-".join([prefix, *(v[:3].upper() for v in values)])
        surcharge = 200 if "XL" in values else 0
        product["variants"].append(
            _variant(
                rng,
                ids,
                product,
                position=position,
                sku=sku,
                name=" / ".join(values) if values else "Default Title",
                price=price + surcharge,
                grams=grams,
                options=combo,
            )
        )
    return product


def _gift_card_product(rng: random.Random, ids: IdAllocator, anchor_ms: int) -> dict[str, Any]:
    product = _product_base(rng, ids, anchor_ms, "Gift Card", "Gift Cards")
    external_option_id = str(ids.take("external_option"))
    product["options"] = [
        {
            "rlProductOptionId": ids.take("product_option"),
            "externalOptionId": external_option_id,
            "name": "Denomination",
            "position": 1,
        }
    ]
    for position, (label, cents) in enumerate(_GIFT_CARD_VALUES, start=1):
        product["variants"].append(
            _variant(
                rng,
                ids,
                product,
                position=position,
                sku=f"GIFTCARD-{label}",
                name=f"${label}",
                price=cents,
                grams=0,
                options=(("Denomination", external_option_id, f"${label}"),),
            )
        )
    return product


def _variant(
    rng: random.Random,
    ids: IdAllocator,
    product: Mapping[str, Any],
    *,
    position: int,
    sku: str,
    name: str,
    price: int,
    grams: int,
    options: Sequence[tuple[str, str, str]],
) -> dict[str, Any]:
    variant_id = ids.take("variant")
    return {
        "externalVariantId": str(ids.take("external_variant")),
        "imageUrl": "",
        "inventoryQuantity": rng.randint(-3, 150),
        "isActive": rng.random() >= 0.03,
        "name": name,
        "position": position,
        "rlProductId": product["rlProductId"],
        "rlProductVariantId": variant_id,
        "sku": sku,
        "createDate": product["createDate"],
        "updateDate": product["updateDate"],
        "variantCreatedAt": product["createDate"],
        "variantUpdatedAt": product["updateDate"],
        "grams": grams,
        "weight": grams,
        "weightUnit": "g",
        "isDeleted": False,
        "isPublic": True,
        "price": money(price),
        "barcode": f"0{variant_id:011d}",
        "options": [
            {
                "externalOptionId": external_option_id,
                "value": value,
                "position": index,
                "rlProductVariantOptionId": ids.take("variant_option"),
                "rlProductVariantId": variant_id,
                "name": option_name,
            }
            for index, (option_name, external_option_id, value) in enumerate(options, start=1)
        ],
    }


# --- orders ----------------------------------------------------------------------------------


@dataclass
class _Customer:
    email: str
    phone: str
    address: dict[str, str]
    tax_bp: int
    tax_shipping: bool


def _customers(count: int, rng: random.Random) -> list[_Customer]:
    out = []
    for index in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        city, region, code, postcode, tax_bp, tax_shipping = rng.choice(_PLACES)
        address = {
            "address1": f"{rng.randint(10, 9999)} {rng.choice(_STREETS)}",
            "address2": rng.choice(("", "", "", f"Apt {rng.randint(1, 40)}")),
            "city": city,
            "region": region,
            "regionCode": code,
            "postcode": postcode,
            "country": COUNTRY,
            "countryCode": "US",
        }
        out.append(
            _Customer(
                email=f"{first}.{last}.{index}@example.com".lower(),
                phone=f"{rng.randint(200, 989)}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}",
                address=address,
                tax_bp=tax_bp,
                tax_shipping=tax_shipping,
            )
        )
    return out


_N_ITEMS = _Weighted(((1, 50), (2, 30), (3, 13), (4, 7)))
_QTY = _Weighted(((1, 70), (2, 22), (3, 8)))
_UNFULFILLED_FINANCIAL = _Weighted((("paid", 70), ("pending", 20), ("authorized", 10)))


def generate_orders(
    count: int,
    rng: random.Random,
    ids: IdAllocator,
    catalog: Catalog,
    anchor_ms: int,
    *,
    days: int = 180,
) -> list[dict[str, Any]]:
    """``count`` orders created over the ``days`` before ``anchor_ms``, oldest first.

    1-4 items of the catalog's sellable variants; ~72% fulfilled, 8% partial, 15% unfulfilled,
    5% restocked (canceled); some discount codes, gift cards, final-sale lines, tags, third-party
    (Amazon) orders and partial refunds. Taxes per destination; prices as the catalog has them.
    """
    sellable = catalog.sellable()
    if count and not sellable:
        raise ValueError("the catalog has no active variant to put on orders")
    gift_cards = [(p, v) for p, v in sellable if str(v.get("sku", "")).startswith("GIFTCARD-")]
    goods = [(p, v) for p, v in sellable if (p, v) not in gift_cards] or sellable
    customers = _customers(max(1, count // 3), rng)
    created_all = sorted(anchor_ms - rng.randrange(1, days * DAY_MS) for _ in range(count))
    return [
        _order(rng, ids, created, customers, goods, gift_cards, anchor_ms)
        for created in created_all
    ]


def _order(
    rng: random.Random,
    ids: IdAllocator,
    created: int,
    customers: Sequence[_Customer],
    goods: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    gift_cards: Sequence[tuple[dict[str, Any], dict[str, Any]]],
    anchor_ms: int,
) -> dict[str, Any]:
    customer = rng.choice(customers)
    rl_order_id = ids.take("order")
    external_order_id = str(ids.take("external_order"))
    number = str(ids.take("order_number"))
    r = rng.random()
    fulfillment: str | None = (
        "fulfilled" if r < 0.72 else "partial" if r < 0.80 else None if r < 0.95 else "restocked"
    )
    third_party = rng.random() < 0.03
    shipped: int | None = None
    if fulfillment in ("fulfilled", "partial"):
        shipped = min(created + rng.randrange(6 * HOUR_MS, 4 * DAY_MS), anchor_ms - 60_000)
        shipped = max(shipped, created + 1000)
    discount = rng.choice(_DISCOUNTS) if rng.random() < 0.2 else None

    n_items = _N_ITEMS(rng)
    picks = rng.sample(range(len(goods)), min(n_items, len(goods)))
    chosen = [goods[i] for i in picks]
    if gift_cards and rng.random() < 0.03:
        chosen[-1] = rng.choice(gift_cards)
    if fulfillment == "partial" and len(chosen) == 1:
        fulfillment = "fulfilled"  # a partial order needs a line left to fulfil: see below

    items = []
    line_tax = line_net = line_discount = 0
    for index, (product, variant) in enumerate(chosen):
        is_gift_card = str(variant["sku"]).startswith("GIFTCARD-")
        qty = _QTY(rng)
        price = to_cents(variant["price"])
        per_discount = 0 if is_gift_card or discount is None else price * discount[1] // 100
        actual = price - per_discount
        per_tax = 0 if is_gift_card else (actual * customer.tax_bp + 5000) // 10000
        line_status: str | None
        if fulfillment == "fulfilled":
            line_status, fulfillable = "fulfilled", 0
        elif fulfillment == "partial":
            line_status, fulfillable = ("fulfilled", 0) if index == 0 else (None, qty)
        elif fulfillment == "restocked":
            line_status, fulfillable = "restocked", 0
        else:
            line_status, fulfillable = None, qty
        properties = ["final_sale"] if not is_gift_card and rng.random() < 0.03 else []
        items.append(
            {
                "rlOrderItemId": ids.take("order_item"),
                "rlOrderId": rl_order_id,
                "externalOrderItemId": str(ids.take("external_order_item")),
                "externalProductId": product["externalProductId"],
                "createDate": iso(created),
                "updateDate": iso(shipped or created),
                "sku": variant["sku"],
                "displayName": product["name"],
                "productExists": True,
                "quantity": qty,
                "pricePerItem": money(price),
                "discountPerItem": money(per_discount),
                "actualPricePerItem": money(actual),
                "taxPerItem": money(per_tax),
                "totalPrice": money(price * qty),
                "totalDiscount": money(per_discount * qty),
                "totalTax": money(per_tax * qty),
                "isTaxable": per_tax > 0,
                "fulfillableQuantity": fulfillable,
                "fulfillmentStatus": line_status,
                "isGiftCard": is_gift_card,
                "properties": properties,
                "refundQuantity": 0,
                "grams": variant.get("grams") or 0,
                "discounts": [],
            }
        )
        line_tax += per_tax * qty
        line_net += actual * qty
        line_discount += per_discount * qty

    shipping = 0 if line_net >= 7500 else rng.choice((595, 795, 995))
    shipping_tax = (shipping * customer.tax_bp + 5000) // 10000 if customer.tax_shipping else 0
    tax = line_tax + shipping_tax
    if third_party:
        financial = "ThirdParty"
    elif fulfillment == "restocked":
        financial = rng.choice(("voided", "refunded"))
    elif fulfillment is None:
        financial = _UNFULFILLED_FINANCIAL(rng)
    else:
        financial = "paid" if rng.random() < 0.97 else "partially_paid"
    updated = (shipped or created) + rng.randrange(0, 2 * DAY_MS)
    updated = min(max(updated, created), anchor_ms)
    tags: list[str] = []
    if rng.random() < 0.05:
        tags.append("vip")
    if rng.random() < 0.02:
        tags.append("bopis")
    shipping_address = dict(customer.address)
    billing_address = dict(customer.address)
    if rng.random() < 0.1:  # a gift: shipped somewhere else
        other = rng.choice(customers).address
        shipping_address = dict(other)
    order = {
        "rlOrderId": rl_order_id,
        "externalOrderId": external_order_id,
        "externalSource": "Amazon" if third_party else "Shopify",
        "createDate": iso(created),
        "updateDate": iso(updated),
        "externalCreateDate": iso(created - rng.randrange(0, 600_000)),
        "externalUpdateDate": iso(updated),
        "billingAddress": billing_address,
        "shippingAddress": shipping_address,
        "customerEmail": customer.email,
        "customerPhone": customer.phone,
        "orderName": f"RL{number}",
        "orderNumber": number,
        "gateway": "Amazon" if third_party else rng.choice(("shopify_payments", "Paypal")),
        "flatRateBonusCreditApplied": False,
        "subtotalPrice": money(line_net),
        "totalPrice": money(line_net + shipping + tax),
        "shippingPrice": money(shipping),
        "fees": 0,
        "orderLevelDiscount": 0,
        "taxPrice": money(tax),
        "taxesIncluded": False,
        "refundAmount": 0,
        "shippedAt": iso(shipped) if shipped is not None else None,
        "shopCurrencyCode": "USD",
        "tags": tags,
        "fulfillmentStatus": fulfillment,
        "financialStatus": financial,
        "isPseudo": False,
        "discounts": [
            {
                "rlOrderDiscountId": ids.take("order_discount"),
                "rlOrderId": rl_order_id,
                "externalOrderId": external_order_id,
                "amount": money(line_discount),
                "code": discount[0],
                "isShippingDiscount": False,
            }
        ]
        if discount is not None and line_discount
        else [],
        "orderItems": items,
    }
    if fulfillment == "fulfilled" and rng.random() < 0.06:  # a refund outside any RMA
        item = rng.choice(items)
        units = rng.randint(1, item["quantity"])
        refund_units(order, item, units)
    return order


def refund_units(order: dict[str, Any], item: dict[str, Any], units: int) -> int:
    """Record ``units`` more refunded units of ``item`` (capped at its quantity) on ``order``:
    ``refundQuantity``, ``refundAmount`` (net price + tax per unit) and, when every unit is
    refunded, ``financialStatus: refunded``. Returns the cents refunded."""
    units = min(units, item["quantity"] - item["refundQuantity"])
    if units <= 0:
        return 0
    item["refundQuantity"] += units
    cents = (to_cents(item["actualPricePerItem"]) + to_cents(item["taxPerItem"])) * units
    order["refundAmount"] = money(to_cents(order["refundAmount"]) + cents)
    if all(i["refundQuantity"] >= i["quantity"] for i in order["orderItems"]):
        order["financialStatus"] = "refunded"
    return cents


# --- RMAs ------------------------------------------------------------------------------------


def _returnable(item: Mapping[str, Any]) -> int:
    """Units of an order item a shopper can still return: shipped and not refunded."""
    status = item.get("fulfillmentStatus")
    if status not in ("fulfilled", "partial") or item.get("isGiftCard"):
        return 0
    shipped = int(item["quantity"]) - int(item.get("fulfillableQuantity") or 0)
    return max(0, shipped - int(item.get("refundQuantity", 0)))


def new_rma(
    order: Mapping[str, Any],
    lines: Sequence[tuple[Mapping[str, Any], int, str, str]],
    *,
    team_id: str,
    rl_rma_id: int,
    item_ids: Iterable[int],
    created_ms: int,
    catalog: Catalog,
    rowpointer: str,
    created_by: Mapping[str, str],
    warehouse: Mapping[str, str] = WAREHOUSES[0],
) -> dict[str, Any]:
    """A ``Requested`` RMA for ``lines``: (order item, quantity, returnType, returnReasonCode)."""
    when = iso(created_ms)
    reasons = dict(_REASONS)
    rma_items = []
    for (item, qty, return_type, reason_code), item_id in zip(lines, item_ids, strict=False):
        product, variant = catalog.by_sku.get(item.get("sku") or "", ({}, {}))
        rma_items.append(
            {
                "rlRmaItemId": item_id,
                "createDate": when,
                "updateDate": when,
                "rlRmaId": rl_rma_id,
                "externalOrderLineId": item["externalOrderItemId"],
                "orderId": order["externalOrderId"],
                "quantity": qty,
                "acceptedQuantity": None,
                "rmaItemApproved": False,
                "returnReasonCode": reason_code,
                "productVariantBarcode": variant.get("barcode"),
                "sku": item.get("sku"),
                "returnReasonDescription": reasons.get(reason_code, "Other"),
                "returnType": return_type,
                "rmaItemReceived": False,
                "disposition": None,
                "rlProductId": product.get("rlProductId"),
                "rlProductVariantId": variant.get("rlProductVariantId"),
                "name": item.get("displayName") or product.get("name"),
                "variantName": variant.get("name"),
            }
        )
    order_date = parse_iso_ms(order["createDate"])
    rma = {
        "teamId": team_id,
        "rlRmaId": rl_rma_id,
        "rlOrderId": order["rlOrderId"],
        "externalOrderNumber": order["orderNumber"],
        "orderName": order["orderName"],
        "rmaEmail": order.get("customerEmail"),
        "orderEmail": order.get("customerEmail"),
        "orderUrl": "",
        "fromShipping": dict(order.get("shippingAddress") or {}),
        "toShipping": dict(warehouse),
        "workflowStatus": "Requested",
        "workflowStatusId": WORKFLOW_STATUSES.index("Requested"),
        "rowpointer": rowpointer,
        "orderDate": order["createDate"],
        "rmaExpirationDate": iso(order_date + 90 * DAY_MS),
        "isThirdParty": order.get("financialStatus") == "ThirdParty",
        "receiptImageUrl": "",
        "isArchived": False,
        "isAllProcessed": False,
        "timeline": {
            "createDate": when,
            "updateDate": when,
            "inTransitUpdateDate": None,
            "deliveredUpdateDate": None,
            "createdBy": dict(created_by),
            "authorizedBy": None,
            "authorizedDate": None,
        },
        "rmaItems": rma_items,
        "shippingLabel": None,
        "totals": {},
        "flagged": False,
    }
    rma["totals"] = rma_totals(rma, order)
    return rma


def rma_totals(
    rma: Mapping[str, Any], order: Mapping[str, Any] | None, processed: bool = False
) -> dict[str, Any]:
    """The four totals buckets of the sample, from the items' order lines (net price and tax
    per unit, times the quantity returned)."""
    sums = {"warranty": [0, 0], "refund": [0, 0], "exchange": [0, 0], "giftCard": [0, 0]}
    bucket_of = {"warranty": "warranty", "refund": "refund", "exchange": "exchange"}
    lines = {i["externalOrderItemId"]: i for i in (order or {}).get("orderItems", ())}
    for item in rma["rmaItems"]:
        line = lines.get(item["externalOrderLineId"])
        if line is None:
            continue
        name = bucket_of.get(item["returnType"], "giftCard")
        sums[name][0] += to_cents(line["actualPricePerItem"]) * item["quantity"]
        sums[name][1] += to_cents(line["taxPerItem"]) * item["quantity"]
    totals: dict[str, Any] = {}
    for name, (subtotal, tax) in sums.items():
        bucket: dict[str, Any] = {
            "subtotal": money(subtotal),
            "taxAmount": money(tax),
            "discountItemsAmount": 0,
            "shippingAmount": 0,
            "otherFeeAmount": 0,
        }
        if name == "giftCard":
            bucket["bonusAmount"] = 0
        bucket["total"] = money(subtotal + tax)
        bucket["isProcessed"] = processed and subtotal > 0
        bucket["isManuallyProcessed"] = False
        if name != "refund":
            bucket["isInitiated"] = processed and subtotal > 0
        if name == "exchange":
            bucket["bonusAmount"] = 0
        totals[name] = bucket
    return totals


def _label(rma: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "cost": 7.25,
        "trackingNumber": f"94612008{rma['rlRmaId']:014d}",
        "carrier": "USPS",
        "shippingMethod": "ParcelSelect",
    }


def transition(
    rma: dict[str, Any],
    status: str,
    when_ms: int,
    order: dict[str, Any] | None = None,
    *,
    actor: Mapping[str, str] | None = None,
) -> list[str]:
    """Move ``rma`` to ``status`` at ``when_ms``, walking the main line step by step.

    Forward along :data:`WORKFLOW_PATH` every step in between is applied (Requested -> Received
    authorises, ships and delivers). Processing (``Processed``/``Complete``) refunds the
    ``refund`` items on ``order`` once. ``Canceled``, ``Rejected`` and ``Abandoned`` end the
    RMA where it is. Returns the statuses passed through, ``ValueError`` when the move is not
    possible (from a final status, backwards, or an unknown word).
    """
    if status not in WORKFLOW_STATUSES:
        raise ValueError(f"unknown workflowStatus {status!r}")
    current = rma["workflowStatus"]
    if current in TERMINAL_STATUSES:
        raise ValueError(f"RMA {rma['rlRmaId']} is {current}: it cannot move to {status}")
    steps: list[str]
    if status in ("Canceled", "Rejected", "Abandoned"):
        steps = [status]
    else:
        here = WORKFLOW_PATH.index("Authorized" if current == "Active" else current)
        target = WORKFLOW_PATH.index("Authorized" if status == "Active" else status)
        if target < here or (target == here and status == current):
            raise ValueError(f"RMA {rma['rlRmaId']} is {current}: it cannot move to {status}")
        steps = list(WORKFLOW_PATH[here + 1 : target + 1]) or [status]
        if status == "Active":
            steps[-1] = "Active"
    when = iso(when_ms)
    timeline = rma["timeline"]
    for step in steps:
        if step in ("Authorized", "Active") and timeline.get("authorizedDate") is None:
            timeline["authorizedDate"] = when
            timeline["authorizedBy"] = dict(
                actor or {"email": ADMIN_EMAIL, "userId": ADMIN_USER_ID}
            )
            for item in rma["rmaItems"]:
                item["rmaItemApproved"] = True
            rma["shippingLabel"] = rma.get("shippingLabel") or _label(rma)
        elif step == "InTransit":
            timeline["inTransitUpdateDate"] = when
        elif step == "Delivered":
            timeline["deliveredUpdateDate"] = when
        elif step == "Received":
            for item in rma["rmaItems"]:
                _receive(item, when)
        elif step in ("Processed", "Complete"):
            if not is_processed(rma):
                _process(rma, order, when)
            rma["isAllProcessed"] = True
    rma["workflowStatus"] = steps[-1]
    rma["workflowStatusId"] = WORKFLOW_STATUSES.index(steps[-1])
    timeline["updateDate"] = when
    for item in rma["rmaItems"]:
        item["updateDate"] = when
    return steps


def _receive(item: dict[str, Any], when: str) -> None:
    item["rmaItemReceived"] = True
    item["acceptedQuantity"] = item["quantity"]
    item["disposition"] = item.get("disposition") or {
        "code": "RFS",
        "comment": "In good condition",
        "restockProcessed": False,
        "restockQuantity": item["quantity"],
    }
    item["updateDate"] = when


def is_processed(rma: Mapping[str, Any]) -> bool:
    """Processing (restock, refunds) has been applied: every item's restock is processed."""
    return all((item.get("disposition") or {}).get("restockProcessed") for item in rma["rmaItems"])


def _process(rma: dict[str, Any], order: dict[str, Any] | None, when: str) -> None:
    for item in rma["rmaItems"]:
        if not item["rmaItemReceived"]:
            _receive(item, when)
        item["disposition"]["restockProcessed"] = True
    if order is None:
        return
    rma["totals"] = rma_totals(rma, order, processed=True)
    by_line = {i["externalOrderItemId"]: i for i in order["orderItems"]}
    refunded = 0
    for item in rma["rmaItems"]:
        line = by_line.get(item["externalOrderLineId"])
        if line is not None and item["returnType"] == "refund":
            refunded += refund_units(order, line, item["quantity"])
    if refunded:
        order["updateDate"] = when


def generate_rmas(
    count: int,
    rng: random.Random,
    ids: IdAllocator,
    orders: Sequence[dict[str, Any]],
    catalog: Catalog,
    anchor_ms: int,
    team_id: str,
    *,
    taken: Callable[[dict[str, Any]], bool] = lambda order: False,
) -> list[dict[str, Any]]:
    """Up to ``count`` RMAs on distinct shipped orders, in every workflow status, ids ascending
    with their creation; processed ones refund their ``refund`` items on the order."""
    eligible = [
        o
        for o in orders
        if o.get("shippedAt") and not taken(o) and any(_returnable(i) for i in o["orderItems"])
    ]
    chosen = sorted(rng.sample(eligible, min(count, len(eligible))), key=lambda o: o["shippedAt"])
    plans = []
    for order in chosen:
        shipped = parse_iso_ms(order["shippedAt"])
        if shipped + HOUR_MS >= anchor_ms:
            continue
        created = min(shipped + rng.randrange(HOUR_MS, 30 * DAY_MS), anchor_ms - 1000)
        plans.append((created, order))
    plans.sort(key=lambda plan: plan[0])
    rmas = []
    for created, order in plans:
        candidates = [i for i in order["orderItems"] if _returnable(i)]
        lines = []
        for item in rng.sample(candidates, rng.randint(1, min(3, len(candidates)))):
            reason = rng.choice(_REASONS)[0]
            lines.append(
                (
                    item,
                    rng.randint(1, _returnable(item)),
                    _RETURN_TYPE(rng),
                    reason,
                )
            )
        rl_rma_id = ids.take("rma")
        rma = new_rma(
            order,
            lines,
            team_id=team_id,
            rl_rma_id=rl_rma_id,
            item_ids=[ids.take("rma_item") for _ in lines],
            created_ms=created,
            catalog=catalog,
            rowpointer=_uuid(rng),
            created_by={"email": order.get("customerEmail") or "", "userId": _uuid(rng)},
            warehouse=rng.choice(WAREHOUSES),
        )
        final = _RMA_STATUS(rng)
        when = created
        if final in ("Canceled", "Rejected", "Abandoned"):
            if final == "Canceled" and rng.random() < 0.5:
                when = min(when + rng.randrange(HOUR_MS, DAY_MS), anchor_ms)
                transition(rma, "Authorized", when, order)
            when = min(when + rng.randrange(HOUR_MS, 3 * DAY_MS), anchor_ms)
            transition(rma, final, when, order)
        elif final != "Requested":
            target = WORKFLOW_PATH.index("Authorized" if final == "Active" else final)
            for step in WORKFLOW_PATH[1 : target + 1]:
                when = min(when + rng.randrange(HOUR_MS, 3 * DAY_MS), anchor_ms)
                name = "Active" if final == "Active" else step
                transition(rma, name, when, order)
            if final == "Processed" and rng.random() < 0.2:
                rma["isAllProcessed"] = False
        if final == "Complete" and when < anchor_ms - 60 * DAY_MS and rng.random() < 0.5:
            rma["isArchived"] = True
        rma["flagged"] = rng.random() < 0.02
        rmas.append(rma)
    return rmas
