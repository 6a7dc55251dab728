"""Go-live: ReturnLogic amounts in the currency's ISO 4217 minor units, through the daemon.

A JPY store (no decimals) and a KWD store (three) on the ReturnLogic sandbox: the Exchange
Variants answer's ``unit_price_amount_cents``, the exchange order placed in ReturnLogic and
the answer Optoro gets, and an RL RMA's label cost and bonus. Products and RMAs name no
currency, so the retailer's ``returnlogic.currency`` says which; an exchange order carries its
own. Before: every amount was read and written as two-decimal dollars (18 JPY became 1800,
a KWD price lost its third decimal).

The KWD exchange order's prices are whole hundredths of a dinar: the ReturnLogic sandbox keeps
order amounts in hundredths (its own bookkeeping, as a two-decimal store), so a third decimal
there would test the sandbox, not the bridge. Catalog prices and RMA amounts are served as they
are stored, so those carry the third decimal.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.kibo.sandbox import running_sandbox as running_kibo
from adapters.optoro.sandbox import running_sandbox as running_optoro
from adapters.returnlogic.catalog import RlCatalog
from adapters.returnlogic.sandbox import DEFAULT_TEAM, ReturnLogicSandbox
from adapters.returnlogic.sandbox import running_sandbox as running_rl
from bridge.domain import major_to_minor, minor_to_major
from bridge.errors import MappingError
from bridge.ports import CATALOG
from bridge.store import EffectState
from tests.harness import OPTORO_CLIENT_ID, OPTORO_SECRET, RETAILER, optoro_table, running_daemon
from tests.test_golive_exchange import FAST, World, rl_table, step
from tests.test_returnlogic_rmas import FAST as RMA_FAST
from tests.test_returnlogic_rmas import KIBO_TOKEN, RL_KEY, free_port, shipped_orders
from tests.test_returnlogic_rmas import World as RmaWorld


@contextlib.asynccontextmanager
async def store_in(tmp_path: Path, currency: str) -> AsyncIterator[World]:
    """The Optoro endpoints of a retailer whose ReturnLogic store sells in ``currency``."""
    async with (
        running_rl(**FAST) as rl,
        running_optoro(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as optoro,
        aiohttp.ClientSession() as session,
    ):
        table = rl_table(rl.url, rl.issue_api_key())
        table = table.replace("timeout = 5.0\n", f'timeout = 5.0\ncurrency = "{currency}"\n', 1)
        tables = optoro_table(optoro.url, address_name_from_email="true") + table
        async with running_daemon(tmp_path, tables) as daemon:
            yield World(rl, optoro, daemon, session)


def product(rl: ReturnLogicSandbox, sku_prices: dict[str, Decimal]) -> None:
    """One ReturnLogic product (``externalProductId`` ``P-1``) with a variant per SKU."""
    product_id = rl.ids.take("product")
    variants = []
    for position, (sku, price) in enumerate(sku_prices.items(), start=1):
        variants.append(
            {
                "rlProductId": product_id,
                "rlProductVariantId": rl.ids.take("variant"),
                "externalVariantId": f"ext-{sku}",
                "sku": sku,
                "name": sku,
                "position": position,
                "price": price,
                "inventoryQuantity": 5,
                "isActive": True,
                "isPublic": True,
                "isDeleted": False,
            }
        )
    rl.team().add_product(
        {
            "rlProductId": product_id,
            "externalProductId": "P-1",
            "name": "Tee",
            "isActive": True,
            "isPublic": True,
            "isDeleted": False,
            "variants": variants,
        }
    )


# --- the one conversion ----------------------------------------------------------------------


@given(minor=st.integers(-(10**15), 10**15), currency=st.sampled_from(["JPY", "USD", "KWD", "CLF"]))
def test_minor_units_round_trip_exactly(minor: int, currency: str) -> None:
    major = minor_to_major(minor, currency)
    assert major_to_minor(major, currency, exact=True) == minor
    assert major_to_minor(str(major), currency, exact=True) == minor


@pytest.mark.parametrize(
    ("amount", "currency"), [("18.5", "JPY"), ("1.005", "USD"), ("1.2345", "KWD")]
)
def test_an_amount_finer_than_the_currency_is_refused_when_exact(
    amount: str, currency: str
) -> None:
    with pytest.raises(MappingError) as caught:
        major_to_minor(amount, currency, field="price", exact=True)
    assert caught.value.field == "price"
    assert str(caught.value).startswith("price: ")
    # without exact, the documented rule: once, half up
    assert major_to_minor(amount, currency) == int(
        Decimal(amount)
        .scaleb({"JPY": 0, "USD": 2, "KWD": 3}[currency])
        .to_integral_value("ROUND_HALF_UP")
    )


# --- Exchange Variants -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "price", "minor"),
    [("JPY", Decimal("12800"), 12800), ("KWD", Decimal("12.345"), 12345)],
)
async def test_variant_prices_in_the_store_currency(
    tmp_path: Path, currency: str, price: Decimal, minor: int
) -> None:
    """Before: 12800 JPY answered 1280000; 12.345 KWD answered 1235 (rounded to cents)."""
    async with store_in(tmp_path, currency) as w:
        product(w.rl, {"TEE-S": price})
        status, answer = await w.variants("TEE-S")
        assert status == 200, answer
        [variant] = answer["variants"]
        assert (variant["sku"], variant["unit_price_amount_cents"]) == ("TEE-S", minor)


async def test_a_price_finer_than_the_currency_is_left_out_not_rounded(tmp_path: Path) -> None:
    """A JPY price with decimals is no yen amount: that variant is left out (logged, counted by
    its field), its sibling is served. Before: 12800.5 JPY was served as 1280050."""
    async with store_in(tmp_path, "JPY") as w:
        product(w.rl, {"TEE-S": Decimal("12800"), "TEE-M": Decimal("12800.5")})
        status, answer = await w.variants("TEE-S")
        assert status == 200, answer
        assert [(v["sku"], v["unit_price_amount_cents"]) for v in answer["variants"]] == [
            ("TEE-S", 12800)
        ]
        catalog = w.daemon.runtime.service(RETAILER, CATALOG)
        assert isinstance(catalog, RlCatalog)
        assert catalog.unmappable == {"[0].variants[1].price": 1}


# --- Exchange Orders ---------------------------------------------------------------------------


def exchange_request(currency: str, unit: int, tax: int) -> dict[str, Any]:
    """Scenario 03's exchange order (4 units of ``sku1236``), priced in ``currency``."""
    request: dict[str, Any] = copy.deepcopy(step("03", "Exchange Order")["request"])
    request["currency"] = currency
    [item] = request["items"]
    item.update(
        unit_price_amount_cents=unit,
        product_amount_cents=unit * item["quantity"],
        tax_amount_cents=tax,
    )
    return request


@pytest.mark.parametrize(
    ("currency", "unit", "tax", "price", "tax_per_item"),
    [
        ("JPY", 12800, 1024, Decimal("12800"), Decimal("256")),
        ("KWD", 12340, 1000, Decimal("12.34"), Decimal("0.25")),
    ],
)
async def test_exchange_order_placed_with_the_currency_prices(
    tmp_path: Path, currency: str, unit: int, tax: int, price: Decimal, tax_per_item: Decimal
) -> None:
    """ReturnLogic receives major units of the order's currency and Optoro gets the totals back
    in its minor units. Before: 12800 JPY was placed at 128.00, 12.340 KWD at 123.40."""
    request = exchange_request(currency, unit, tax)
    async with store_in(tmp_path, currency) as w:
        product(w.rl, {"sku1236": price})
        status, placed = await w.exchange_order(request)
        assert status == 200, placed
        assert placed == {
            "order_identifier": f"EXCH-{request['original_order_id']}",
            "total_amount_cents": unit * 4 + tax,
            "product_amount_cents": unit * 4,
            "tax_amount_cents": tax,
        }
        rl_order = w.rl_order(placed["order_identifier"])
        assert rl_order["shopCurrencyCode"] == currency
        [item] = rl_order["orderItems"]

        def amount(value: object) -> Decimal:
            return Decimal(str(value))

        assert amount(item["pricePerItem"]) == price
        assert amount(item["taxPerItem"]) == tax_per_item
        assert amount(item["totalTax"]) == tax_per_item * 4
        assert amount(rl_order["taxPrice"]) == tax_per_item * 4
        assert amount(rl_order["totalPrice"]) == price * 4 + tax_per_item * 4


# --- ReturnLogic RMAs --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def rma_store_in(tmp_path: Path, currency: str) -> AsyncIterator[RmaWorld]:
    async with running_rl(**RMA_FAST) as rl, running_kibo(token=KIBO_TOKEN) as kibo:
        rl.issue_api_key(DEFAULT_TEAM, RL_KEY)
        rl.generate(orders=20, products=6, rmas=0, seed=7)
        world = RmaWorld(rl, kibo, tmp_path, free_port(), rl_settings=f'currency = "{currency}"')
        async with world.daemon():
            await world.rmas.supervise()
            yield world


def authorized_rma(world: RmaWorld, cost: Decimal, bonus: Decimal) -> int:
    """An authorized RMA (its label bought) whose label cost and gift-card bonus ReturnLogic
    records as ``cost`` and ``bonus`` (set before the daemon reads it: no await between)."""
    rma = world.rl.create_rma(shipped_orders(world.rl)[0], status="Authorized")
    rma["shippingLabel"]["cost"] = cost
    rma["totals"]["giftCard"]["bonusAmount"] = bonus
    rma_id: int = rma["rlRmaId"]
    return rma_id


@pytest.mark.parametrize(
    ("currency", "cost", "bonus", "minor"),
    [
        ("JPY", Decimal("500"), Decimal("300"), (500, 300)),
        ("KWD", Decimal("1.250"), Decimal("0.125"), (1250, 125)),
    ],
)
async def test_rma_amounts_in_the_store_currency(
    tmp_path: Path, currency: str, cost: Decimal, bonus: Decimal, minor: tuple[int, int]
) -> None:
    """Before: 500 JPY of label became 50000; a 0.125 KWD bonus became 13."""
    async with rma_store_in(tmp_path, currency) as world:
        rma_id = authorized_rma(world, cost, bonus)
        await world.settle()
        stored = await world.stored(rma_id)
        assert stored is not None
        assert (stored.return_shipping_cost_cents, stored.bonus_credit_cents) == minor


async def test_rma_amount_finer_than_the_currency_is_refused_naming_the_field(
    tmp_path: Path,
) -> None:
    """7.25 is no yen amount: the RMA is not applied with a guessed amount; its read is a dead
    letter naming ``shippingLabel.cost`` (replayable once the currency is configured right).
    Before: it was applied with a 725 yen label."""
    async with rma_store_in(tmp_path, "JPY") as world:
        rma_id = authorized_rma(world, Decimal("7.25"), Decimal(0))
        await world.settle()
        assert await world.stored(rma_id) is None
        assert world.runtime is not None
        dead = await world.runtime.store.list_effects(
            EffectState.DEAD, f"returnlogic.rmas:{RETAILER}"
        )
        assert [str(e.payload["rma_id"]) for e in dead] == [str(rma_id)]
        [effect] = dead
        assert effect.last_error is not None
        assert "shippingLabel.cost" in effect.last_error
        assert "JPY" in effect.last_error
