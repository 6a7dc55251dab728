"""ReturnLogic as the catalog (Exchange Variants) and the exchange-order sink, against the
ReturnLogic sandbox over loopback: variants of a generated product, and exactly one order per
original order when called again, concurrently, or after an answer that was lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from adapters.returnlogic.catalog import RlCatalog, RlExchangeOrders
from adapters.returnlogic.client import RlTeam
from adapters.returnlogic.config import ReturnLogicConfig
from adapters.returnlogic.sandbox import DEFAULT_TEAM, ReturnLogicSandbox, running_sandbox
from bridge.domain import Address, Customer, ExchangeKind, ExchangeOrder, ExchangeOrderItem
from bridge.errors import MappingError, RetriableDeliveryError
from bridge.http import HttpClient

RL_KEY = "rl-private-app-key"
TEMPLATE = "https://shop.example.com/products/{handle}?variant={external_variant_id}"
FALLBACK = "https://shop.example.com/placeholder.png"
FAST = {"rate_limit_second": 50, "rate_limit_minute": 3000}


@pytest_asyncio.fixture
async def rl() -> AsyncIterator[ReturnLogicSandbox]:
    async with running_sandbox(**FAST) as sandbox:
        sandbox.issue_api_key(DEFAULT_TEAM, RL_KEY)
        sandbox.generate(orders=40, products=12, rmas=0, seed=11)
        yield sandbox


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def team_for(base_url: str, session: aiohttp.ClientSession, timeout: float = 5.0) -> RlTeam:
    config = ReturnLogicConfig(
        base_url=base_url,
        team_id=DEFAULT_TEAM,
        static_token=RL_KEY,
        timeout=timeout,
        requests_per_second=50,
        requests_per_minute=3000,
        catalog={"product_url_template": TEMPLATE, "image_fallback": FALLBACK},
        exchange_orders={"order_number_prefix": "EXCH-", "external_source": "returns-bridge"},
    )
    return RlTeam(config, http=lambda: HttpClient(session), vault=lambda: None)


def sink_for(team: RlTeam, session: aiohttp.ClientSession) -> RlExchangeOrders:
    return RlExchangeOrders(team, team.config, lambda: HttpClient(session))


def product_with_options(rl: ReturnLogicSandbox, count: int) -> dict[str, Any]:
    return next(
        p
        for p in rl.products.values()
        if len(p["options"]) == count and len(p["variants"]) >= 2 and p["isActive"]
    )


# --- catalog ---------------------------------------------------------------------------------


async def test_variants_of_a_generated_product(rl: ReturnLogicSandbox, session) -> None:  # type: ignore[no-untyped-def]
    product = product_with_options(rl, 2)
    product["handle"] = "gorgeous-hoodie"
    product["variants"][0]["imageUrl"] = "https://cdn.example.com/hoodie-0.png"
    catalog = RlCatalog(team_for(rl.url, session), team_for(rl.url, session).config)

    variants = await catalog.variants_for(product["variants"][1]["sku"])

    assert [v.sku for v in variants] == [v["sku"] for v in product["variants"]]
    for variant, raw in zip(variants, product["variants"], strict=True):
        options = sorted(raw["options"], key=lambda o: o["position"])
        assert [(a.name, a.value) for a in variant.attributes] == [
            (o["name"], o["value"]) for o in options
        ]
        assert variant.unit_price_cents == int(Decimal(str(raw["price"])) * 100)
        assert variant.quantity_in_stock == raw["inventoryQuantity"]
        assert variant.variant_id == str(raw["rlProductVariantId"])
        assert variant.product_id == str(product["rlProductId"])
        assert variant.product_url == (
            f"https://shop.example.com/products/gorgeous-hoodie?variant={raw['externalVariantId']}"
        )
    assert variants[0].image_url == "https://cdn.example.com/hoodie-0.png"
    assert {v.image_url for v in variants[1:]} == {FALLBACK}
    assert variants[0].title.startswith(product["name"])

    by_product = await catalog.variants_for(product["externalProductId"])
    assert [v.sku for v in by_product] == [v.sku for v in variants]
    assert await catalog.variants_for("NO-SUCH-SKU") == []
    assert all(r.query.get("status") == "any" for r in rl.requests)


async def test_catalog_outage_is_retriable(rl: ReturnLogicSandbox, session) -> None:  # type: ignore[no-untyped-def]
    team = team_for(rl.url, session)
    rl.maintenance = True
    with pytest.raises(RetriableDeliveryError):
        await RlCatalog(team, team.config).variants_for("SNE500002-7")


# --- exchange orders -------------------------------------------------------------------------


def exchange(rl: ReturnLogicSandbox, original_order_id: str = "1001") -> ExchangeOrder:
    product = product_with_options(rl, 1)
    return ExchangeOrder(
        original_order_id=original_order_id,
        rma_id="R-1",
        currency="USD",
        items=(
            ExchangeOrderItem(
                kind=ExchangeKind.EVEN,
                sku=product["variants"][1]["sku"],
                qty=2,
                unit_price_cents=4599,
                tax_cents=367,
                original_sku=product["variants"][0]["sku"],
            ),
        ),
        customer=Customer(id="42", email="shopper@example.com"),
        shipping_address=Address(
            street1="395 St Johns Church Rd",
            city="Camp Hill",
            state="PA",
            zip_code="17011",
            country_code="US",
        ),
    )


def orders_numbered(rl: ReturnLogicSandbox, number: str) -> list[dict[str, Any]]:
    return [o for o in rl.orders.values() if o["orderNumber"] == number]


def creates(rl: ReturnLogicSandbox) -> int:
    return sum(1 for r in rl.requests if r.method == "POST" and r.path == "/v1/orders")


async def test_a_repeated_exchange_order_finds_the_first(rl: ReturnLogicSandbox, session) -> None:  # type: ignore[no-untyped-def]
    sink = sink_for(team_for(rl.url, session), session)
    order = exchange(rl)

    first = await sink.create_exchange_order(order)
    again = await sink.create_exchange_order(order)

    assert first == again
    assert first.order_id == "EXCH-1001"
    placed = orders_numbered(rl, "EXCH-1001")
    assert len(placed) == 1
    assert creates(rl) == 1
    assert (first.total_cents, first.product_cents, first.tax_cents) == (9198 + 367, 9198, 367)
    assert placed[0]["externalSource"] == "returns-bridge"
    assert "original_order:1001" in placed[0]["tags"]


async def test_concurrent_exchange_orders_create_one(rl: ReturnLogicSandbox, session) -> None:  # type: ignore[no-untyped-def]
    sink = sink_for(team_for(rl.url, session), session)
    order = exchange(rl, "2002")

    results = await asyncio.gather(*(sink.create_exchange_order(order) for _ in range(4)))

    assert len(set(results)) == 1
    assert len(orders_numbered(rl, "EXCH-2002")) == 1


class LaggingLookup(RlExchangeOrders):
    """A sink whose first lookup does not see an order that exists (a list that lags)."""

    lagged = False

    async def find_order(self, number: str) -> dict[str, Any] | None:
        if not self.lagged:
            self.lagged = True
            return None
        return await super().find_order(number)


async def test_a_taken_order_number_answers_the_existing_order(
    rl: ReturnLogicSandbox,
    session,  # type: ignore[no-untyped-def]
) -> None:
    team = team_for(rl.url, session)
    order = exchange(rl, "3003")
    first = await sink_for(team, session).create_exchange_order(order)

    lagging = LaggingLookup(team, team.config, lambda: HttpClient(session))
    assert await lagging.create_exchange_order(order) == first

    assert len(orders_numbered(rl, "EXCH-3003")) == 1
    assert [r.outcome for r in rl.requests if r.method == "POST"] == ["ok", "duplicate"]


@contextlib.asynccontextmanager
async def lossy_proxy(target: str, lose: Callable[[web.Request], bool]) -> AsyncIterator[str]:
    """Forwards to ``target``; for requests ``lose`` picks, the answer comes too late (the
    request reached ReturnLogic, the caller never hears back)."""
    async with aiohttp.ClientSession() as upstream:

        async def forward(request: web.Request) -> web.Response:
            headers = {
                k: v
                for k, v in request.headers.items()
                if k.lower() in ("authorization", "accept", "content-type")
            }
            async with upstream.request(
                request.method, target + request.path_qs, data=await request.read(), headers=headers
            ) as resp:
                body, status = await resp.read(), resp.status
                content_type = resp.headers.get("Content-Type", "application/json")
            if lose(request):
                await asyncio.sleep(1.0)
            return web.Response(status=status, body=body, headers={"Content-Type": content_type})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


async def test_a_retry_after_a_lost_answer_creates_no_second_order(
    rl: ReturnLogicSandbox,
    session,  # type: ignore[no-untyped-def]
) -> None:
    lost: list[str] = []

    def lose_first_create(request: web.Request) -> bool:
        if request.method == "POST" and request.path == "/v1/orders" and not lost:
            lost.append(request.path)
            return True
        return False

    async with lossy_proxy(rl.url, lose_first_create) as url:
        sink = sink_for(team_for(url, session, timeout=0.4), session)
        result = await sink.create_exchange_order(exchange(rl, "4004"))

    assert lost
    assert result.order_id == "EXCH-4004"
    assert len(orders_numbered(rl, "EXCH-4004")) == 1
    assert creates(rl) == 1


async def test_unknown_sku_and_outage_create_nothing(rl: ReturnLogicSandbox, session) -> None:  # type: ignore[no-untyped-def]
    sink = sink_for(team_for(rl.url, session), session)
    order = exchange(rl, "5005")
    unknown = order.model_copy(
        update={"items": (order.items[0].model_copy(update={"sku": "NOPE-1"}),)}
    )
    with pytest.raises(MappingError) as info:
        await sink.create_exchange_order(unknown)
    assert info.value.field == "items[0].sku"

    rl.maintenance = True
    with pytest.raises(RetriableDeliveryError) as retry:
        await sink.create_exchange_order(order)
    assert retry.value.retry_after
    rl.maintenance = False
    assert creates(rl) == 0
    assert not orders_numbered(rl, "EXCH-5005")
