"""The fake ReturnLogic (adapters/returnlogic/sandbox), checked over loopback HTTP: OAuth grants,
bearer auth, both rate windows, pagination and filters, the spec's samples, the mappings on
generated data, order creation, RMA workflow, webhook delivery faults and the CLI."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from adapters.returnlogic.sandbox import (
    DEFAULT_TEAM,
    ReturnLogicSandbox,
    running_sandbox,
)
from adapters.returnlogic.sandbox.data import iso, parse_iso_ms, to_cents
from bridge.domain import Address, Customer, ExchangeKind, ExchangeOrder, ExchangeOrderItem
from mappings.returnlogic import (
    TagRules,
    dumps,
    exchange_order_number,
    exchange_to_order_create,
    order_create_response_to_result,
    order_to_canonical,
    orders_page,
    products_page,
    products_to_variants,
    rma_to_canonical,
    rmas_page,
)

SAMPLES = Path("/work/shared/fixtures/returnlogic-samples")
CLIENT_ID = "rl-client"
CLIENT_SECRET = "rl-secret"
RATE_HEADERS = (
    "X-RateLimit-Limit-Second",
    "X-RateLimit-Limit-Minute",
    "X-RateLimit-Remaining-Second",
    "X-RateLimit-Remaining-Minute",
)
RULES = TagRules()
UNLIMITED = {"rate_limit_second": 100_000, "rate_limit_minute": 1_000_000}


class FakeClock:
    """The sandbox's monotonic clock, moved by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sandbox() -> AsyncIterator[ReturnLogicSandbox]:
    """A sandbox whose rate windows do not get in the way (their own tests set them)."""
    async with running_sandbox(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **UNLIMITED) as sb:
        yield sb


@pytest.fixture
async def limited() -> AsyncIterator[ReturnLogicSandbox]:
    """A sandbox with the spec's default windows (2/s, 120/min)."""
    async with running_sandbox(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as sb:
        yield sb


async def call(
    session: aiohttp.ClientSession,
    sb: ReturnLogicSandbox,
    method: str,
    path: str,
    token: str | None = None,
    *,
    body: Any = None,
    data: bytes | None = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if data is not None:
        sent["Content-Type"] = "application/json"
    async with session.request(
        method, f"{sb.url}{path}", headers=sent, json=body, data=data, params=params
    ) as response:
        raw = await response.read()
        parsed = json.loads(raw, parse_float=Decimal) if raw else None
        return Answer(response.status, dict(response.headers), parsed)


async def oauth(session: aiohttp.ClientSession, sb: ReturnLogicSandbox, **fields: Any) -> Answer:
    body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, **fields}
    return await call(session, sb, "POST", "/v1/oauth", body=body)


def has_rate_headers(answer: Answer) -> bool:
    return all(name in answer.headers for name in RATE_HEADERS)


# --- OAuth and bearer auth -------------------------------------------------------------------


async def test_oauth_code_exchange_refresh_rotation_and_expiry(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    sandbox.clock = clock
    sandbox.token_ttl = 60
    code = sandbox.issue_code(DEFAULT_TEAM)

    first = await oauth(session, sandbox, grant_type="authorization_code", code=code)
    assert first.status == 200
    assert set(first.body) == {"bearer_token", "refresh_token"}  # the spec's answer, no more
    assert has_rate_headers(first)
    bearer, refresh = first.body["bearer_token"], first.body["refresh_token"]
    assert (await call(session, sandbox, "GET", "/v1/orders/count", bearer)).status == 200

    # a code is single-use
    again = await oauth(session, sandbox, grant_type="authorization_code", code=code)
    assert again.status == 400
    assert again.body["name"] == "ValidateError"
    assert "code" in again.body["fields"]

    # the bearer expires; a refresh token is not a bearer
    clock.advance(61)
    expired = await call(session, sandbox, "GET", "/v1/orders/count", bearer)
    assert expired.status == 401
    assert "expired" in expired.body["message"]
    assert has_rate_headers(expired)
    assert (await call(session, sandbox, "GET", "/v1/orders/count", refresh)).status == 401

    # refresh: a new pair, the used refresh token is dead (rotation)
    renewed = await oauth(session, sandbox, grant_type="refresh_token", refresh_token=refresh)
    assert renewed.status == 200
    assert renewed.body["refresh_token"] != refresh
    assert (
        await call(session, sandbox, "GET", "/v1/orders", renewed.body["bearer_token"])
    ).status == 200
    reused = await oauth(session, sandbox, grant_type="refresh_token", refresh_token=refresh)
    assert reused.status == 400
    assert reused.body["fields"]["refresh_token"]["message"] == "refresh token rotated"
    assert sandbox.refreshes == 1

    # without rotation the refresh token stays usable
    sandbox.rotate_refresh_tokens = False
    second = renewed.body["refresh_token"]
    for _ in range(2):
        kept = await oauth(session, sandbox, grant_type="refresh_token", refresh_token=second)
        assert kept.status == 200
        assert kept.body["refresh_token"] == second

    # codes expire
    late = sandbox.issue_code()
    clock.advance(sandbox.code_ttl + 1)
    assert (await oauth(session, sandbox, grant_type="authorization_code", code=late)).status == 400


async def test_oauth_refuses_bad_clients_and_bodies(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    code = sandbox.issue_code()
    wrong = await call(
        session,
        sandbox,
        "POST",
        "/v1/oauth",
        body={
            "grant_type": "authorization_code",
            "client_id": CLIENT_ID,
            "client_secret": "nope",
            "code": code,
        },
    )
    assert wrong.status == 401
    assert "nope" not in json.dumps(wrong.body)
    missing = await call(session, sandbox, "POST", "/v1/oauth", body={"grant_type": "x"})
    assert missing.status == 400
    assert set(missing.body["fields"]) >= {"grant_type", "client_id", "client_secret"}
    assert "value" not in missing.body["fields"]["client_secret"]
    not_json = await call(session, sandbox, "POST", "/v1/oauth", data=b"{")
    assert not_json.status == 400
    # the code survived the failed attempts
    ok = await oauth(session, sandbox, grant_type="authorization_code", code=code)
    assert ok.status == 200


async def test_install_redirect_and_announced_expiry(session: aiohttp.ClientSession) -> None:
    async with running_sandbox(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_url="https://bridge.example/oauth/returnlogic?x=1",
        announce_expiry=True,
        token_ttl=90,
    ) as sb:
        redirect = sb.install("team-b")
        query = parse_qs(urlsplit(redirect).query)
        assert redirect.startswith("https://bridge.example/oauth/returnlogic?x=1&")
        assert query["teamId"] == ["team-b"]
        answer = await oauth(session, sb, grant_type="authorization_code", code=query["code"][0])
        assert answer.body["expires_in"] == 90
        # the token belongs to team-b: it sees team-b's data, not the default team's
        sb.generate(orders=5, seed=1)
        count = await call(session, sb, "GET", "/v1/orders/count", answer.body["bearer_token"])
        assert count.body == {"count": 0}


async def test_401_without_a_valid_bearer(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer nope"}):
        answer = await call(session, sandbox, "GET", "/v1/orders", headers=headers)
        assert answer.status == 401
        assert answer.body["status"] == 401
        assert has_rate_headers(answer)
    revoked = sandbox.issue_tokens()["bearer_token"]
    sandbox.revoke_tokens()
    answer = await call(session, sandbox, "GET", "/v1/orders", revoked)
    assert answer.status == 401
    assert "revoked" in answer.body["message"]
    key = sandbox.issue_api_key()
    assert (await call(session, sandbox, "GET", "/v1/orders", key)).status == 200
    assert sandbox.unauthorized == 4


# --- rate windows ----------------------------------------------------------------------------


async def test_ten_quick_requests_two_pass_the_rest_get_429(
    limited: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    token = limited.issue_api_key()
    answers = await asyncio.gather(
        *(call(session, limited, "GET", "/v1/orders/count", token) for _ in range(10))
    )
    statuses = sorted(a.status for a in answers)
    assert statuses == [200, 200] + [429] * 8
    for answer in answers:
        assert has_rate_headers(answer)
        assert answer.headers["X-RateLimit-Limit-Second"] == "2"
        assert answer.headers["X-RateLimit-Limit-Minute"] == "120"
        if answer.status == 429:
            assert answer.body == {
                "status": 429,
                "name": "RateLimitExceeded",
                "message": "Rate Limit Exceeded",
            }
            assert answer.headers["X-RateLimit-Remaining-Second"] == "0"
    key = limited.key_for(token)
    assert limited.rate_limited == 8
    assert limited.max_in_any_second(key) == 10
    assert limited.max_in_any_second(key, admitted=True) == 2
    stats = limited.rate_stats(key)
    assert (stats["requests"], stats["admitted"], stats["rate_limited"]) == (10, 2, 8)


async def test_second_window_slides_with_a_fake_clock(
    limited: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    limited.clock = clock
    token = limited.issue_api_key()
    seen = []
    for _ in range(3):
        answer = await call(session, limited, "GET", "/v1/rmas/count", token)
        seen.append((answer.status, answer.headers["X-RateLimit-Remaining-Second"]))
    assert seen == [(200, "1"), (200, "0"), (429, "0")]
    clock.advance(0.5)
    assert (await call(session, limited, "GET", "/v1/rmas/count", token)).status == 429
    clock.advance(0.5)  # the first two are now a second old
    answer = await call(session, limited, "GET", "/v1/rmas/count", token)
    assert answer.status == 200
    assert answer.headers["X-RateLimit-Remaining-Minute"] == "117"
    # all tokens of a team share its window; per-token keys are separate
    other = limited.issue_api_key()
    assert (await call(session, limited, "GET", "/v1/rmas/count", other)).status == 200
    assert (await call(session, limited, "GET", "/v1/rmas/count", other)).status == 429
    limited.rate_limit_key = "token"
    assert (await call(session, limited, "GET", "/v1/rmas/count", other)).status == 200


async def test_minute_window_with_a_fake_clock(
    limited: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    limited.clock = clock
    limited.configure(rate_limit_second=10, retry_after_header=True)
    token = limited.issue_api_key()
    for _second in range(12):  # 10 a second for 12 seconds: the minute's 120
        for _ in range(10):
            assert (await call(session, limited, "GET", "/v1/orders/count", token)).status == 200
        clock.advance(1.0)
    refused = await call(session, limited, "GET", "/v1/orders/count", token)
    assert refused.status == 429
    assert refused.headers["X-RateLimit-Remaining-Minute"] == "0"
    assert refused.headers["X-RateLimit-Remaining-Second"] == "10"
    assert refused.headers["Retry-After"] == "48"  # the first second leaves the window at 60
    clock.advance(47.5)
    assert (await call(session, limited, "GET", "/v1/orders/count", token)).status == 429
    clock.advance(0.6)
    answer = await call(session, limited, "GET", "/v1/orders/count", token)
    assert answer.status == 200
    assert answer.headers["X-RateLimit-Remaining-Minute"] == "9"
    key = limited.key_for(token)
    assert limited.max_in_any_minute(key, admitted=True) == 120
    assert limited.max_in_any_minute(key) == 122
    assert limited.max_in_any_second(key) == 10
    state = (await call(session, limited, "GET", "/_sandbox/state")).body
    assert state["rate_limited"] == 2
    assert state["max_in_any_minute"] == 122


# --- lists, pagination and filters -----------------------------------------------------------


async def test_order_pagination_and_filters(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.generate(orders=600, seed=3)
    token = sandbox.issue_api_key()

    async def get(path: str, **params: Any) -> Answer:
        return await call(session, sandbox, "GET", path, token, params=params)

    assert (await get("/v1/orders/count")).body == {"count": 600}
    assert len((await get("/v1/orders")).body) == 20  # the default limit
    ids: list[int] = []
    skip = 0
    while True:
        page = (await get("/v1/orders", skip=str(skip), limit="250")).body
        ids.extend(o["rlOrderId"] for o in page)
        skip += 250
        if len(page) < 250:
            break
    assert ids == list(sandbox.orders)
    assert ids == sorted(ids)

    for params, field_name in (
        ({"limit": "251"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"skip": "-1"}, "skip"),
        ({"limit": "ten"}, "limit"),
        ({"minCreateDate": "yesterday"}, "minCreateDate"),
        ({"financialStatus": "bogus"}, "financialStatus"),
    ):
        bad = await get("/v1/orders", **params)
        assert bad.status == 400, params
        assert bad.body["name"] == "ValidateError"
        assert field_name in bad.body["fields"]

    orders = list(sandbox.orders.values())
    target = orders[123]
    found = (await get("/v1/orders", orderNumber=target["orderNumber"])).body
    assert [o["rlOrderId"] for o in found] == [target["rlOrderId"]]
    assert (await get("/v1/orders", orderName=target["orderName"])).body == found
    by_email = await get("/v1/orders", email=target["customerEmail"].upper(), limit="250")
    expected = [o["rlOrderId"] for o in orders if o["customerEmail"] == target["customerEmail"]]
    assert [o["rlOrderId"] for o in by_email.body] == expected

    low = orders[100]["createDate"]
    high = orders[199]["createDate"]
    window = await get("/v1/orders", minCreateDate=low, maxCreateDate=high, limit="250")
    assert [o["rlOrderId"] for o in window.body] == [o["rlOrderId"] for o in orders[100:200]]
    naive = iso(parse_iso_ms(low) - 1).removesuffix("Z")  # no offset: UTC
    count = await get("/v1/orders/count", minCreateDate=naive, maxCreateDate=high)
    assert count.body == {"count": 100}

    refunded = await get("/v1/orders", financialStatus="refunded", limit="250")
    expected = [o["rlOrderId"] for o in orders if o["financialStatus"] == "refunded"]
    assert expected
    assert [o["rlOrderId"] for o in refunded.body] == expected
    assert (await get("/v1/orders/count", financialStatus="refunded")).body == {
        "count": len(expected)
    }
    assert (await get("/v1/orders", unknownParam="x")).status == 200  # ignored, as the API does

    one = await get(f"/v1/orders/{target['rlOrderId']}")
    assert one.body["orderNumber"] == target["orderNumber"]
    assert (await get("/v1/orders/1")).status == 404
    assert (await get("/v1/orders/abc")).status == 400


async def test_rma_and_product_filters(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.generate(orders=800, rmas=150, seed=5)
    token = sandbox.issue_api_key()

    async def ids(path: str, **params: Any) -> list[int]:
        answer = await call(session, sandbox, "GET", path, token, params={**params, "limit": "250"})
        assert answer.status == 200, answer.body
        key = "rlRmaId" if "rmas" in path else "rlProductId"
        return [record[key] for record in answer.body]

    rmas = list(sandbox.rmas.values())
    assert len(rmas) > 100

    def expect(keep: Any) -> list[int]:
        return [r["rlRmaId"] for r in rmas if keep(r)]

    assert await ids("/v1/rmas", workflowStatus="Requested,Authorized") == expect(
        lambda r: r["workflowStatus"] in ("Requested", "Authorized")
    )
    assert await ids("/v1/rmas", returnType="exchange") == expect(
        lambda r: any(i["returnType"] == "exchange" for i in r["rmaItems"])
    )
    assert await ids("/v1/rmas", returnReasonCode="DMG,QTY") == expect(
        lambda r: any(i["returnReasonCode"] in ("DMG", "QTY") for i in r["rmaItems"])
    )
    sample = rmas[7]
    assert await ids("/v1/rmas", externalOrderNumber=sample["externalOrderNumber"]) == [
        sample["rlRmaId"]
    ]
    assert await ids("/v1/rmas", orderName=sample["orderName"]) == [sample["rlRmaId"]]
    assert await ids("/v1/rmas", email=f"x@example.com,{sample['rmaEmail'].upper()}") == expect(
        lambda r: r["rmaEmail"] == sample["rmaEmail"]
    )
    low, high = rmas[20]["timeline"]["createDate"], rmas[60]["timeline"]["createDate"]
    assert await ids("/v1/rmas", minCreateDate=low, maxCreateDate=high) == [
        r["rlRmaId"] for r in rmas[20:61]
    ]
    assert await ids("/v1/rmas", showArchived="true") == expect(lambda r: r["isArchived"])
    assert await ids("/v1/rmas", showArchived="false") == expect(lambda r: not r["isArchived"])
    assert await ids("/v1/rmas", onlyFlaggedRmas="true") == expect(lambda r: r["flagged"])
    assert await ids("/v1/rmas", thirdPartyOnly="true") == expect(lambda r: r["isThirdParty"])
    assert await ids("/v1/rmas", onlyWarrantyOutOfStock="true") == []
    count = await call(
        session, sandbox, "GET", "/v1/rmas/count", token, params={"workflowStatus": "Complete"}
    )
    assert count.body == {"count": len(expect(lambda r: r["workflowStatus"] == "Complete"))}
    bad = await call(session, sandbox, "GET", "/v1/rmas", token, params={"workflowStatus": "Lost"})
    assert bad.status == 400
    assert bad.body["fields"]["workflowStatus"]["value"] == "Lost"
    page_two = await call(
        session, sandbox, "GET", "/v1/rmas", token, params={"skip": "20", "limit": "20"}
    )
    assert [r["rlRmaId"] for r in page_two.body] == [r["rlRmaId"] for r in rmas[20:40]]

    products = list(sandbox.products.values())
    variant = products[3]["variants"][0]
    assert await ids("/v1/products", sku=variant["sku"]) == [products[3]["rlProductId"]]
    wanted = [products[1]["externalProductId"], products[4]["externalProductId"]]
    assert await ids("/v1/products", externalProductIds=",".join(wanted)) == [
        products[1]["rlProductId"],
        products[4]["rlProductId"],
    ]
    inactive = [p["rlProductId"] for p in products if not p["isActive"]]
    assert await ids("/v1/products", status="inActive") == inactive
    assert await ids("/v1/products", status="active") == [
        p["rlProductId"] for p in products if p["isActive"]
    ]
    assert await ids("/v1/products", categoryId="3") == []
    one = await call(session, sandbox, "GET", f"/v1/products/{products[2]['rlProductId']}", token)
    assert one.body["name"] == products[2]["name"]
    assert (await call(session, sandbox, "GET", "/v1/products/9", token)).status == 404


# --- the spec's samples and the mappings -----------------------------------------------------


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float | Decimal):
        return "number"
    return type(value).__name__


def assert_shape(sample: Any, actual: Any, path: str = "$") -> None:
    """Every key of the sample is in the sandbox's record, at every depth, with a value of the
    same JSON type (where both have one)."""
    if isinstance(sample, dict):
        assert isinstance(actual, dict), path
        missing = sorted(set(sample) - set(actual))
        assert not missing, f"{path}: missing {missing}"
        for key, value in sample.items():
            if value is not None and actual[key] is not None:
                assert_shape(value, actual[key], f"{path}.{key}")
    elif isinstance(sample, list):
        assert isinstance(actual, list), path
        if sample and actual:
            assert_shape(sample[0], actual[0], f"{path}[0]")
    else:
        assert _kind(sample) == _kind(actual), f"{path}: {sample!r} vs {actual!r}"


def _sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_bytes(), parse_float=Decimal)


async def test_records_have_the_shape_of_every_sample(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.generate(orders=300, rmas=80, seed=11)
    token = sandbox.issue_api_key()
    orders = (await call(session, sandbox, "GET", "/v1/orders?limit=250", token)).body
    order = next(o for o in orders if o["discounts"] and o["fulfillmentStatus"] == "fulfilled")
    assert_shape(_sample("orders-list-response.json")[0], order)

    products = (await call(session, sandbox, "GET", "/v1/products?limit=250", token)).body
    assert_shape(_sample("products-list-response.json")[0], products[1])

    rmas = (await call(session, sandbox, "GET", "/v1/rmas?limit=250", token)).body
    done = next(r for r in rmas if r["workflowStatus"] == "Complete")
    assert_shape(_sample("rmas-list-response.json")[0], done)
    delivered = next(r for r in rmas if r["workflowStatus"] == "Delivered")
    assert delivered["workflowStatusId"] == 5  # as in the sample
    assert delivered["timeline"]["deliveredUpdateDate"] is not None

    # the documented create request is accepted (with a variant the catalog has)
    request = _sample("order-create-request.json")
    variant_id = products[1]["variants"][0]["rlProductVariantId"]
    request["orderItems"][0]["rlProductVariantId"] = variant_id
    request["orderItems"][0]["quantity"] = 1
    request["shopCurrencyCode"] = "USD"
    created = await call(
        session, sandbox, "POST", "/v1/orders", token, data=dumps(request).encode()
    )
    assert created.status == 200, created.body
    assert_shape(_sample("orders-list-response.json")[0] | {"discounts": []}, created.body)
    # every list is a bare JSON array, money a JSON number
    for name in ("orders-list-response.json", "products-list-response.json"):
        assert isinstance(_sample(name), list)
    assert isinstance(orders[0]["totalPrice"], int | Decimal)


async def test_generated_data_maps_through_the_mappings(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    added = sandbox.generate(orders=1000, seed=42)
    assert (added["products"], added["orders"]) == (35, 1000)
    assert 90 <= added["rmas"] <= 100  # on distinct shipped orders, not shipped at the anchor
    token = sandbox.issue_api_key()

    async def all_pages(path: str, parse: Any) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        skip = 0
        while True:
            async with session.get(
                f"{sandbox.url}{path}",
                params={"skip": str(skip), "limit": "250"},
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                page = parse(await response.read())
            records.extend(page)
            skip += 250
            if len(page) < 250:
                return records

    orders = await all_pages("/v1/orders", orders_page)
    assert len(orders) == 1000
    statuses = set()
    for wire in orders:
        order = order_to_canonical(wire, RULES)
        statuses.add(order.status)
        if any(line.qty_shipped != line.qty for line in order.lines):
            continue  # lines carry the shipped units' discount only: totals are of the whole
        lines = sum(line.unit_price_cents * line.qty - line.discount_cents for line in order.lines)
        assert to_cents(wire["subtotalPrice"]) == lines
        assert to_cents(wire["totalPrice"]) == lines + order.shipping_cents + to_cents(
            wire["taxPrice"]
        )
    assert len(statuses) == 3  # created, shipped and canceled orders
    assert any(order_to_canonical(o, RULES).refunds for o in orders)
    assert any(order_to_canonical(o, RULES).tags for o in orders)

    rmas = await all_pages("/v1/rmas", rmas_page)
    assert len(rmas) == added["rmas"]
    kinds = {rma_to_canonical(r).status for r in rmas}
    assert len(kinds) >= 5
    by_number = {o["orderNumber"]: o for o in orders}
    for wire in rmas:
        rma = rma_to_canonical(wire)
        order = by_number[rma.units[0].order_id]
        lines = {i["externalOrderItemId"] for i in order["orderItems"]}
        assert {unit.order_line_id for unit in rma.units} <= lines

    products = await all_pages("/v1/products", products_page)
    variants = products_to_variants(products, "https://shop.example/p/{external_product_id}")
    skus = {v.sku for v in variants}
    assert {item["sku"] for o in orders for item in o["orderItems"]} <= skus
    assert any(not v.is_active for v in variants)

    # deterministic: the same seed gives the same records, another seed others
    twin = ReturnLogicSandbox()
    twin.generate(orders=1000, seed=42)
    assert json.dumps(list(twin.orders.values())) == json.dumps(list(sandbox.orders.values()))
    assert json.dumps(list(twin.rmas.values())) == json.dumps(list(sandbox.rmas.values()))
    other = ReturnLogicSandbox()
    other.generate(orders=1000, seed=43)
    assert json.dumps(list(other.orders.values())) != json.dumps(list(sandbox.orders.values()))


def test_twenty_thousand_orders_generate_quickly() -> None:
    sb = ReturnLogicSandbox()
    started = time.perf_counter()
    added = sb.generate(orders=20_000, seed=1)
    elapsed = time.perf_counter() - started
    assert added["orders"] == 20_000
    assert added["rmas"] > 1500
    assert elapsed < 10, elapsed  # about 1.5 s here


# --- creating and updating -------------------------------------------------------------------


def _exchange(sku: str) -> ExchangeOrder:
    return ExchangeOrder(
        original_order_id="1234",
        rma_id="R-9",
        currency="USD",
        items=(
            ExchangeOrderItem(
                kind=ExchangeKind.EVEN,
                sku=sku,
                qty=3,
                unit_price_cents=1999,
                discount_cents=100,
                tax_cents=100,
            ),
        ),
        customer=Customer(id="4711", email="c@example.com", phone="555-0100"),
        shipping_address=Address(
            street1="123 Fake St.",
            city="Washington",
            state="DC",
            zip_code="20001",
            country_code="US",
        ),
    )


async def test_create_order_and_duplicate_order_number(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.generate(products=5, seed=2)
    token = sandbox.issue_api_key()
    variant = next(iter(sandbox.products.values()))["variants"][0]
    number = exchange_order_number("1234")
    body = exchange_to_order_create(
        _exchange(variant["sku"]), {variant["sku"]: str(variant["rlProductVariantId"])}, number
    )

    created = await call(session, sandbox, "POST", "/v1/orders", token, data=dumps(body).encode())
    assert created.status == 200, created.body
    result = order_create_response_to_result(created.body)
    assert (result.order_id, result.total_cents, result.product_cents, result.tax_cents) == (
        number,
        5997,
        5997,
        100,
    )
    order = order_to_canonical(created.body, RULES)
    assert sum(line.qty for line in order.lines) == 3
    # nothing shipped yet: a line carries its shipped units' tax and discount, none
    assert sum(line.tax_cents for line in order.lines) == 0
    assert sum(line.discount_cents for line in order.lines) == 0
    assert {line.sku for line in order.lines} == {variant["sku"]}

    # the same orderNumber again: refused, naming the field; the client looks it up instead
    duplicate = await call(session, sandbox, "POST", "/v1/orders", token, data=dumps(body).encode())
    assert duplicate.status == 400
    assert duplicate.body["name"] == "ValidateError"
    assert duplicate.body["fields"]["orderNumber"]["value"] == number
    found = await call(session, sandbox, "GET", "/v1/orders", token, params={"orderNumber": number})
    assert [o["rlOrderId"] for o in found.body] == [created.body["rlOrderId"]]
    assert sandbox.requests[-2].outcome == "duplicate"
    sandbox.duplicate_order_status = 409
    again = await call(session, sandbox, "POST", "/v1/orders", token, data=dumps(body).encode())
    assert again.status == 409

    # every missing required field is named at once
    bad = await call(session, sandbox, "POST", "/v1/orders", token, body={"orderItems": [{}]})
    assert bad.status == 400
    assert {
        "externalOrderId",
        "orderNumber",
        "orderName",
        "tags",
        "taxesIncluded",
        "shopCurrencyCode",
        "totalPrice",
        "fees",
        "taxPrice",
        "shippingPrice",
        "refundAmount",
        "orderItems[0].externalOrderItemId",
        "orderItems[0].quantity",
    } <= set(bad.body["fields"])
    unknown_variant = dict(body, orderNumber="other", orderItems=[dict(body["orderItems"][0])])
    unknown_variant["orderItems"][0]["rlProductVariantId"] = 1
    missing = await call(
        session, sandbox, "POST", "/v1/orders", token, data=dumps(unknown_variant).encode()
    )
    assert missing.status == 400
    assert "orderItems[0].rlProductVariantId" in missing.body["fields"]


async def test_order_update_and_money_frozen_once_an_rma_exists(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.generate(orders=60, rmas=0, seed=4)
    token = sandbox.issue_api_key()
    order = next(o for o in sandbox.orders.values() if o["fulfillmentStatus"] == "fulfilled")
    path = f"/v1/orders/{order['rlOrderId']}"
    before = order["updateDate"]
    changed = await call(
        session, sandbox, "PUT", path, token, body={"tags": ["vip"], "totalPrice": 12.5}
    )
    assert changed.status == 200
    assert changed.body["tags"] == ["vip"]
    assert changed.body["totalPrice"] == Decimal("12.5")
    assert changed.body["updateDate"] > before
    sandbox.create_rma(order["orderNumber"])
    frozen = await call(session, sandbox, "PUT", path, token, body={"totalPrice": 13})
    assert frozen.status == 400
    assert "totalPrice" in frozen.body["fields"]
    same = await call(session, sandbox, "PATCH", path, token, body={"totalPrice": 12.5})
    assert same.status == 200
    bad = await call(session, sandbox, "PUT", path, token, body={"financialStatus": "nope"})
    assert bad.status == 400


async def test_rma_items_update_flag_and_workflow(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.generate(orders=80, rmas=0, seed=6)
    token = sandbox.issue_api_key()
    order = next(
        o
        for o in sandbox.orders.values()
        if o["fulfillmentStatus"] == "fulfilled" and not o["orderItems"][0]["isGiftCard"]
    )
    line = order["orderItems"][0]
    rma = sandbox.create_rma(
        order["rlOrderId"],
        [{"externalOrderItemId": line["externalOrderItemId"], "quantity": 1}],
    )
    sandbox.advance_rma(rma["rlRmaId"])  # Authorized
    assert rma["shippingLabel"]["trackingNumber"]
    path = f"/v1/rmas/{rma['rlRmaId']}"
    item_id = rma["rmaItems"][0]["rlRmaItemId"]
    update = {
        "rmaItems": [{"rlRmaItemId": item_id, "disposition": {"code": "DMG"}, "itemReceived": True}]
    }
    answer = await call(session, sandbox, "PUT", path, token, body=update)
    assert answer.status == 200
    assert answer.body["workflowStatus"] == "Received"
    assert answer.body["rmaItems"][0]["disposition"]["code"] == "DMG"
    assert rma_to_canonical(answer.body).receiving_complete is True
    flagged = await call(session, sandbox, "POST", f"{path}/flag", token)
    assert flagged.body["flagged"] is True
    unknown = await call(
        session, sandbox, "PUT", path, token, body={"rmaItems": [{"rlRmaItemId": 1}]}
    )
    assert unknown.status == 400
    assert (await call(session, sandbox, "GET", "/v1/rmas/5", token)).status == 404

    # processing refunds the refund items on the order
    refunded_before = line["refundQuantity"]
    advanced = await call(
        session, sandbox, "POST", f"/_sandbox/rmas/{rma['rlRmaId']}/advance", body={}
    )
    assert advanced.body["workflowStatus"] == "Processed"
    assert line["refundQuantity"] == refunded_before + 1
    assert to_cents(order["refundAmount"]) > 0
    assert order_to_canonical(json.loads(json.dumps(order), parse_float=Decimal), RULES).refunds
    done = await call(session, sandbox, "POST", f"/_sandbox/rmas/{rma['rlRmaId']}/advance")
    assert done.body["workflowStatus"] == "Complete"
    assert line["refundQuantity"] == refunded_before + 1  # refunded once
    final = await call(session, sandbox, "POST", f"/_sandbox/rmas/{rma['rlRmaId']}/advance")
    assert final.status == 409
    too_many = [{"externalOrderItemId": line["externalOrderItemId"], "quantity": 99}]
    with pytest.raises(ValueError, match="returnable"):
        sandbox.create_rma(order["rlOrderId"], too_many)
    with pytest.raises(ValueError, match="no line"):
        sandbox.create_rma(order["rlOrderId"], [{"externalOrderItemId": "x"}])


# --- webhooks --------------------------------------------------------------------------------


@dataclass
class Receiver:
    url: str = ""
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.received if p == path]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A tiny webhook endpoint: records every POST; paths in ``failing`` answer 500."""
    rec = Receiver()

    async def handle(request: web.Request) -> web.Response:
        rec.received.append((request.path, json.loads(await request.read(), parse_float=Decimal)))
        return web.Response(status=500 if request.path in rec.failing else 204)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    rec.url = f"http://127.0.0.1:{port}"
    try:
        yield rec
    finally:
        await runner.cleanup()


async def _register(
    session: aiohttp.ClientSession, sb: ReturnLogicSandbox, token: str, url: str, action: str
) -> dict[str, Any]:
    answer = await call(
        session, sb, "POST", "/v1/webhooks", token, body={"resourceAction": action, "endpoint": url}
    )
    assert answer.status == 200, answer.body
    return answer.body


def _shipped_orders(sb: ReturnLogicSandbox) -> list[dict[str, Any]]:
    return [
        o
        for o in sb.orders.values()
        if o["fulfillmentStatus"] == "fulfilled"
        and any(not i["isGiftCard"] and i["refundQuantity"] == 0 for i in o["orderItems"])
    ]


def _first_line(order: dict[str, Any]) -> list[dict[str, Any]]:
    line = next(i for i in order["orderItems"] if not i["isGiftCard"] and not i["refundQuantity"])
    return [{"externalOrderItemId": line["externalOrderItemId"]}]


async def test_webhooks_are_delivered_with_the_rma(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    sandbox.generate(orders=50, rmas=0, seed=8)
    token = sandbox.issue_api_key()
    for action in ("rma.requested", "rma.updated", "rma.deleted"):
        registration = await _register(session, sandbox, token, f"{receiver.url}/hooks", action)
        assert set(registration) == {
            "registrationId",
            "resourceAction",
            "endpoint",
            "active",
            "createDate",
        }
        assert registration["active"] is True
    listed = await call(session, sandbox, "GET", "/v1/webhooks", token)
    assert [r["resourceAction"] for r in listed.body] == [
        "rma.requested",
        "rma.updated",
        "rma.deleted",
    ]
    bad = await call(
        session,
        sandbox,
        "POST",
        "/v1/webhooks",
        token,
        body={"resourceAction": "order.created", "endpoint": "not a url"},
    )
    assert bad.status == 400
    assert set(bad.body["fields"]) == {"resourceAction", "endpoint"}

    order = _shipped_orders(sandbox)[0]
    created = await call(
        session,
        sandbox,
        "POST",
        "/_sandbox/rmas",
        body={"orderNumber": order["orderNumber"], "items": _first_line(order)},
    )
    assert created.status == 200, created.body
    rma_id = created.body["rlRmaId"]
    sandbox.advance_rma(rma_id)
    sandbox.delete_rma(rma_id)
    async with asyncio.timeout(5):
        await sandbox.drain()
    bodies = receiver.bodies("/hooks")
    assert [b["resourceAction"] for b in bodies] == ["rma.requested", "rma.updated", "rma.deleted"]
    for body in bodies:
        assert set(body) == {
            "eventId",
            "resourceAction",
            "registrationId",
            "teamId",
            "createDate",
            "rlRmaId",
            "data",
        }
        assert body["rlRmaId"] == rma_id
        assert body["teamId"] == DEFAULT_TEAM
        rma = rma_to_canonical(body["data"])
        assert rma.units[0].order_id == order["orderNumber"]
    assert [b["data"]["workflowStatus"] for b in bodies] == [
        "Requested",
        "Authorized",
        "Authorized",
    ]
    assert (await call(session, sandbox, "GET", f"/v1/rmas/{rma_id}", token)).status == 404
    deliveries = (await call(session, sandbox, "GET", "/_sandbox/deliveries")).body
    assert [d["outcome"] for d in deliveries] == ["delivered"] * 3


async def test_webhook_duplicates_drops_and_reordering(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    sandbox.generate(orders=120, rmas=0, seed=9)
    token = sandbox.issue_api_key()
    await _register(session, sandbox, token, f"{receiver.url}/in", "rma.requested")
    orders = iter(_shipped_orders(sandbox))

    sandbox.duplicate_rate = 1.0
    first = sandbox.create_rma(next(orders)["rlOrderId"])
    async with asyncio.timeout(5):
        await sandbox.drain()
    twice = receiver.bodies("/in")
    assert len(twice) == 2
    assert twice[0] == twice[1]  # the same message (same eventId) twice
    assert twice[0]["rlRmaId"] == first["rlRmaId"]

    sandbox.configure(duplicate_rate=0.0, drop_rate=1.0)
    sandbox.create_rma(next(orders)["rlOrderId"])
    async with asyncio.timeout(5):
        await sandbox.drain()
    assert len(receiver.bodies("/in")) == 2
    assert sandbox.deliveries[-1].outcome == "dropped"
    assert len(sandbox.events) == 2  # the event happened, its message was lost

    sandbox.configure(drop_rate=0.0, delivery_jitter=0.4, seed=3)
    emitted = [sandbox.create_rma(next(orders)["rlOrderId"])["rlRmaId"] for _ in range(6)]
    async with asyncio.timeout(5):
        await sandbox.drain()
    arrived = [b["rlRmaId"] for b in receiver.bodies("/in")[2:]]
    assert sorted(arrived) == sorted(emitted)
    assert arrived != emitted  # overtaken
    delay = {d.rl_rma_id: d.delay for d in sandbox.deliveries if d.rl_rma_id in emitted}
    for earlier, later in itertools.pairwise(arrived):
        assert delay[earlier] <= delay[later] + 0.05


async def test_failing_endpoint_is_deactivated_and_reactivated(
    session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with running_sandbox(max_failures=3, retry_delay=0.0, **UNLIMITED) as sb:
        sb.generate(orders=50, rmas=0, seed=10)
        token = sb.issue_api_key()
        receiver.failing.add("/flaky")
        registration = await _register(session, sb, token, f"{receiver.url}/flaky", "rma.updated")
        reg = sb.registrations[registration["registrationId"]]
        rma = sb.create_rma(_shipped_orders(sb)[0]["rlOrderId"])  # rma.requested: not registered

        for _ in range(3):
            sb.advance_rma(rma["rlRmaId"])
            async with asyncio.timeout(5):
                await sb.drain()
        assert len(receiver.bodies("/flaky")) == 3
        assert reg.active is False
        assert reg.error_count == 3
        listed = await call(session, sb, "GET", "/v1/webhooks", token)
        assert listed.body[0]["active"] is False

        # a change while deactivated is not queued
        receiver.failing.clear()
        skipped = sb.advance_rma(rma["rlRmaId"])["workflowStatus"]
        async with asyncio.timeout(5):
            await sb.drain()
        assert len(receiver.bodies("/flaky")) == 3
        assert len(sb.deliveries) == 3

        # set active again: error count reset, later messages only
        path = f"/v1/webhooks/{registration['registrationId']}"
        update = {"resourceAction": "rma.updated", "endpoint": f"{receiver.url}/flaky"}
        answer = await call(session, sb, "PUT", path, token, body={**update, "active": True})
        assert answer.body["active"] is True
        assert reg.error_count == 0
        sb.advance_rma(rma["rlRmaId"])
        async with asyncio.timeout(5):
            await sb.drain()
        statuses = [b["data"]["workflowStatus"] for b in receiver.bodies("/flaky")]
        assert skipped not in statuses
        assert sb.deliveries[-1].outcome == "delivered"
        assert [d.outcome for d in sb.deliveries] == ["failed"] * 3 + ["delivered"]

        # retries count as failures too
        sb.configure(delivery_retries=2, max_failures=10)
        receiver.failing.add("/flaky")
        sb.advance_rma(rma["rlRmaId"])
        async with asyncio.timeout(5):
            await sb.drain()
        assert sb.deliveries[-1].attempts == 3
        assert reg.error_count == 3
        deleted = await call(session, sb, "DELETE", path, token)
        assert deleted.status == 200
        assert sb.registrations == {}


# --- control, faults, CLI --------------------------------------------------------------------


async def test_control_state_faults_and_reset(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    token = sandbox.issue_api_key()
    generated = await call(
        session, sandbox, "POST", "/_sandbox/generate", body={"orders": 30, "seed": 1}
    )
    assert generated.body == {"products": 10, "orders": 30, "rmas": 3}

    control = await call(session, sandbox, "POST", "/_sandbox/control", body={"maintenance": True})
    assert control.body["knobs"]["maintenance"] is True
    assert control.body["knobs"]["client_secret"] == "***"
    down = await call(session, sandbox, "GET", "/v1/orders", token)
    assert down.status == 503
    assert has_rate_headers(down)
    await call(session, sandbox, "POST", "/_sandbox/control", body={"maintenance": False})

    await call(session, sandbox, "POST", "/_sandbox/control", body={"fail_next": 1})
    assert (await call(session, sandbox, "GET", "/v1/orders", token)).status == 500
    await call(session, sandbox, "POST", "/_sandbox/control", body={"rate_limit_next": 1})
    forced = await call(session, sandbox, "GET", "/v1/orders", token)
    assert forced.status == 429
    assert forced.headers["X-RateLimit-Remaining-Second"] == "0"
    assert (await call(session, sandbox, "GET", "/v1/orders", token)).status == 200
    bad = await call(session, sandbox, "POST", "/_sandbox/control", body={"nope": 1})
    assert bad.status == 400

    state = (await call(session, sandbox, "GET", "/_sandbox/state")).body
    team = state["teams"][DEFAULT_TEAM]
    assert (team["orders"], team["rmas"]) == (30, 3)
    assert state["outcomes"] == {"maintenance": 1, "error": 1, "rate_limited": 1, "ok": 1}
    assert state["rate_limited"] == 1
    logged = (await call(session, sandbox, "GET", "/_sandbox/requests")).body
    assert [r["status"] for r in logged] == [503, 500, 429, 200]
    assert all("Authorization" not in str(r) for r in logged)

    installed = await call(session, sandbox, "POST", "/_sandbox/install", body={"teamId": "t2"})
    exchanged = await oauth(
        session, sandbox, grant_type="authorization_code", code=installed.body["code"]
    )
    assert exchanged.status == 200
    key = (await call(session, sandbox, "POST", "/_sandbox/api_keys", body={"key": "k-1"})).body
    assert key == {"api_key": "k-1", "teamId": DEFAULT_TEAM}

    await call(session, sandbox, "POST", "/_sandbox/reset", body={"keep_data": True})
    assert len(sandbox.orders) == 30
    assert len(sandbox.requests) == 0
    assert (await call(session, sandbox, "GET", "/v1/orders", token)).status == 401
    await call(session, sandbox, "POST", "/_sandbox/reset")
    assert sandbox.orders == {}


async def test_module_runs_alone() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.returnlogic.sandbox",
        "--port",
        "0",
        "--orders",
        "40",
        "--seed",
        "2",
        "--api-key",
        "cli-key",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        prefix = "returnlogic sandbox listening on "
        assert line.startswith(prefix), line
        url = line.removeprefix(prefix).strip()
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": "Bearer cli-key"}
            async with session.get(f"{url}/v1/orders/count", headers=headers) as response:
                assert response.status == 200
                assert await response.json() == {"count": 40}
                assert response.headers["X-RateLimit-Limit-Second"] == "2"
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
