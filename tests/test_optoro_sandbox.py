"""The fake Optoro (adapters/optoro/sandbox), checked over loopback HTTP against the guide's
fixtures: token flow, every Returns Portal Order sample, fault knobs, the scenario data and the
scenario player (against a tiny fake bridge defined here)."""

from __future__ import annotations

import asyncio
import copy
import json
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import pydantic
import pytest
from aiohttp import web

from adapters.optoro.sandbox import (
    BasicAuth,
    OptoroSandbox,
    Scenario,
    ScenarioPlayer,
    Step,
    conforming_rpo_order,
    expected_rpo_order,
    json_diff,
    load_scenarios,
    rpo_order_diff,
    rpo_request,
    running_sandbox,
    scenario,
)
from adapters.optoro.sandbox.compare import header_sum_mismatches
from adapters.optoro.schemas import validate

SHARED = Path("/work/shared/fixtures/optoro-scenarios")
COPY = Path(str(resources.files("adapters.optoro.scenarios")))
CLIENT_ID = "client-abc"
CLIENT_SECRET = "secret-xyz"
SCENARIOS = load_scenarios()
RPO_STEPS = [
    pytest.param(sc, st, id=f"{sc.number:02d}-{st.step}")
    for sc in SCENARIOS
    for st in sc.steps
    if st.kind == "returns_portal_order"
]
KNOWN_BAD_HEADERS = {(2, 6), (6, 7), (11, 4), (15, 7)}
"""(scenario, step) of the refunded multi-line samples whose header is not the lines' sum."""


@pytest.fixture
async def sandbox() -> AsyncIterator[OptoroSandbox]:
    async with running_sandbox(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as sb:
        yield sb


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def fetch_token(
    session: aiohttp.ClientSession, sandbox: OptoroSandbox, **overrides: Any
) -> aiohttp.ClientResponse:
    body = {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        **overrides,
    }
    async with session.post(sandbox.token_url, json=body) as response:
        await response.read()
        return response


async def token(session: aiohttp.ClientSession, sandbox: OptoroSandbox) -> str:
    response = await fetch_token(session, sandbox)
    assert response.status == 200
    body = await response.json()
    access: str = body["access_token"]
    return access


async def post_rpo(
    session: aiohttp.ClientSession,
    sandbox: OptoroSandbox,
    body: Any,
    access: str | None,
    *,
    api_version: str | None = "3",
) -> tuple[int, Any, aiohttp.ClientResponse]:
    headers = {"Content-Type": "application/json"}
    if access is not None:
        headers["Authorization"] = f"Bearer {access}"
    if api_version is not None:
        headers["Api-Version"] = api_version
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(sandbox.rpo_url, data=data, headers=headers) as response:
        text = await response.text()
        return response.status, (json.loads(text) if text else None), response


# scenario data -------------------------------------------------------------------------------


def test_copy_equals_shared_fixtures_byte_for_byte() -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.name != "__init__.py"
        }

    shared, copied = files(SHARED), files(COPY)
    assert sorted(shared) == sorted(copied)
    drifted = [name for name in shared if shared[name] != copied[name]]
    assert drifted == [], f"copy drifted from shared fixtures: {drifted}"


def test_scenarios_load_through_importlib_resources() -> None:
    assert len(SCENARIOS) == 22
    assert [s.number for s in SCENARIOS] == list(range(1, 23))
    assert sum(len(s.steps) for s in SCENARIOS) == 118
    kinds: dict[str, int] = {}
    for sc in SCENARIOS:
        for st in sc.steps:
            kinds[st.kind] = kinds.get(st.kind, 0) + 1
    assert kinds == {
        "returns_portal_order": 41,
        "rma": 61,
        "exchange_variants": 8,
        "exchange_order": 8,
    }
    first = SCENARIOS[0]
    assert first.folder == "01-single-line-full-refund-mailback"
    assert first.title == "Single-Line, Full Refund, Mailback"
    assert first.steps[0] == Step(
        1,
        "POST",
        "Returns Portal Order",
        "Create Returns Portal Order",
        "/returns_portal_orders",
        first.steps[0].request,
        None,
    )
    # the path decides what a step is, not its published api/title (scenario 10 and 15)
    assert scenario(10).steps[0].api == "Returns Portal Orders"
    assert scenario(10).steps[0].kind == "returns_portal_order"
    fifteen = scenario(15).steps
    assert (fifteen[5].api, fifteen[5].kind) == ("Returns Portal Order", "rma")
    assert (fifteen[6].api, fifteen[6].kind) == ("RMA", "returns_portal_order")


def test_loaded_payloads_are_fresh_copies() -> None:
    first = load_scenarios()[0].steps[0]
    first.request["returns_portal_order"]["orders"].clear()
    assert load_scenarios()[0].steps[0].rpo_orders()


# comparison ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("sc", "st"), RPO_STEPS)
def test_conforming_version_of_every_sample_satisfies_the_description(
    sc: Scenario, st: Step
) -> None:
    for order in st.rpo_orders():
        conforming = conforming_rpo_order(order)
        assert validate("rpo_request", rpo_request(conforming)) == []
        assert header_sum_mismatches(conforming) == {}
        assert rpo_order_diff(order, conforming) == []
        # a bridge sending the sample itself matches, except for the four known-bad headers
        assert bool(rpo_order_diff(order, order)) == ((sc.number, st.step) in KNOWN_BAD_HEADERS)


def test_header_sums_differ_in_exactly_the_four_known_samples() -> None:
    found = {
        (sc.number, st.step)
        for sc in SCENARIOS
        for st in sc.steps
        for order in st.rpo_orders()
        if header_sum_mismatches(order)
    }
    assert found == KNOWN_BAD_HEADERS
    order = scenario(2).steps[5].rpo_orders()[0]
    expected = expected_rpo_order(order)
    assert (expected["product_amount_cents"], expected["tax_amount_cents"]) == (81200, 4024)
    assert (
        expected["total_amount_cents"] == 85224 == order["refunds"][0]["total_refund_amount_cents"]
    )
    # the sample's own header is what a bridge must NOT send
    diff = rpo_order_diff(order, order)
    assert any(line.startswith("total_amount_cents: expected 85224, got 52224") for line in diff)
    assert any(line.startswith("product_amount_cents:") for line in diff)


def test_rpo_order_diff_normalisations() -> None:
    sample = scenario(1).steps[4].rpo_orders()[0]  # refunded, no refund_transactions
    sent = conforming_rpo_order(sample)
    assert sent["refunds"][0]["refund_transactions"] == []
    sent["created_at"] = "2023-01-22T11:24:21.010+00:00"  # sample: .01Z, same instant
    sent["refunds"][0]["refund_transactions"] = [{"anything": 1}]
    assert rpo_order_diff(sample, sent) == []
    sent["updated_at"] = "2023-01-28T19:42:50Z"
    sent["items"][0]["extra"] = True
    del sent["customer"]["phone"]
    diff = rpo_order_diff(sample, sent)
    assert any(line.startswith("updated_at: expected") for line in diff)
    assert "items[0].extra: unexpected (got True)" in diff
    assert "customer.phone: missing (expected '3017607003')" in diff
    # null in the sample may be left out (scenario 20's tracking_number)
    bopis = scenario(20).steps[0].rpo_orders()[0]
    assert bopis["items"][0]["tracking_number"] is None
    assert rpo_order_diff(bopis, conforming_rpo_order(bopis)) == []


def test_json_diff_is_exact() -> None:
    assert json_diff({"a": [1, {"b": "x"}]}, {"a": [1, {"b": "x"}]}) == []
    assert json_diff({"a": 1}, {"a": True}) == ["a: expected 1, got True"]
    assert json_diff({"t": "2023-01-22T11:24:21Z"}, {"t": "2023-01-22T11:24:21+00:00"}) != []
    assert json_diff([1, 2], [1]) == ["<root>: expected 2 entries, got 1"]


# token endpoint -------------------------------------------------------------------------------


async def test_token_with_good_credentials(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession
) -> None:
    before = time.time()
    response = await fetch_token(session, sandbox)
    assert response.status == 200
    body = await response.json()
    assert validate("token_response", body) == []
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 90000  # Optoro's example: 25 hours
    assert body["scope"] == "read write"
    assert before - 1 <= body["created_at"] <= time.time() + 1
    second = await token(session, sandbox)
    assert second != body["access_token"]
    assert sandbox.tokens_issued == 2
    assert sandbox.tokens_active == 2
    logged = sandbox.requests[0]
    assert logged.body["client_secret"] == "***"


async def test_token_expiry_is_configurable_and_enforced(
    session: aiohttp.ClientSession,
) -> None:
    async with running_sandbox(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, token_ttl=60
    ) as sb:
        now = [1000.0]
        sb.clock = lambda: now[0]
        response = await fetch_token(session, sb)
        assert (await response.json())["expires_in"] == 60
        access = (await response.json())["access_token"]
        sample = conforming_rpo_order(scenario(1).steps[0].rpo_orders()[0])
        status, _, _ = await post_rpo(session, sb, rpo_request(sample), access)
        assert status == 200
        now[0] += 60
        status, body, resp = await post_rpo(session, sb, rpo_request(sample), access)
        assert status == 401
        assert body == {"error": "invalid_token", "error_description": "The access token expired"}
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "someone-else"}, 401, "invalid_client"),
        ({"client_secret": None}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"scope": "admin"}, 400, "invalid_request"),  # additionalProperties: false
    ],
)
async def test_token_with_bad_requests(
    sandbox: OptoroSandbox,
    session: aiohttp.ClientSession,
    overrides: dict[str, Any],
    status: int,
    error: str,
) -> None:
    response = await fetch_token(session, sandbox, **overrides)
    assert response.status == status
    assert (await response.json())["error"] == error
    assert sandbox.tokens_issued == 0


async def test_token_needs_a_json_body(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession
) -> None:
    form = {"grant_type": "client_credentials", "client_id": CLIENT_ID}
    async with session.post(sandbox.token_url, data=form) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_request"


async def test_rpo_needs_a_valid_bearer_token(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession
) -> None:
    body = rpo_request(conforming_rpo_order(scenario(1).steps[0].rpo_orders()[0]))
    status, error, response = await post_rpo(session, sandbox, body, None)
    assert status == 401
    assert error["error"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    status, _, _ = await post_rpo(session, sandbox, body, "made-up")
    assert status == 401
    access = await token(session, sandbox)
    status, _, _ = await post_rpo(session, sandbox, body, access)
    assert status == 200
    assert sandbox.revoke_tokens() == 1
    status, error, _ = await post_rpo(session, sandbox, body, access)
    assert (status, error["error_description"]) == (401, "The access token was revoked")
    assert sandbox.tokens_revoked == 1
    assert sandbox.tokens_active == 0
    # a new token works again
    status, _, _ = await post_rpo(session, sandbox, body, await token(session, sandbox))
    assert status == 200
    assert len(sandbox.orders["ORD1234567"]) == 2
    assert [r.outcome for r in sandbox.rpo_requests()] == [
        "unauthorized",
        "unauthorized",
        "accepted",
        "unauthorized",
        "accepted",
    ]
    assert all(
        r.headers.get("Authorization", "Bearer ***") == "Bearer ***" for r in sandbox.requests
    )


@pytest.mark.parametrize("version", [None, "2", "v3"])
async def test_rpo_needs_api_version_3(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession, version: str | None
) -> None:
    body = rpo_request(conforming_rpo_order(scenario(1).steps[0].rpo_orders()[0]))
    access = await token(session, sandbox)
    status, error, _ = await post_rpo(session, sandbox, body, access, api_version=version)
    assert status == 400
    assert "Api-Version" in error["errors"][0]
    assert sandbox.orders == {}


# every Returns Portal Order sample of the guide ---------------------------------------------


@pytest.mark.parametrize(("sc", "st"), RPO_STEPS)
async def test_every_rpo_sample_is_accepted_or_lacks_what_the_description_requires(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession, sc: Scenario, st: Step
) -> None:
    access = await token(session, sandbox)
    orders = st.rpo_orders()
    lacking = set()
    if any(order["refunds"] for order in orders):
        lacking.add("refund_transactions")
    if any(item.get("tracking_number", "") is None for o in orders for item in o["items"]):
        lacking.add("tracking_number")

    status, body, _ = await post_rpo(session, sandbox, st.request, access)
    if lacking:
        assert status == 422, body
        assert body["error"] == "unprocessable_entity"
        for name in lacking:
            assert any(name in problem for problem in body["errors"]), body["errors"]
        assert sandbox.orders == {}
    else:
        assert status == 200, body
        assert body is None  # 200 Success, no body documented
        assert [sandbox.latest(o["identifier"]) for o in orders] == orders

    # adding only what the description requires makes the sample acceptable
    repaired = copy.deepcopy(st.request)
    for order in repaired["returns_portal_order"]["orders"]:
        for refund in order["refunds"]:
            refund["refund_transactions"] = []
        for item in order["items"]:
            if item.get("tracking_number", "") is None:
                del item["tracking_number"]
    status, body, _ = await post_rpo(session, sandbox, repaired, access)
    assert status == 200, body
    assert [
        sandbox.latest(o["identifier"]) for o in repaired["returns_portal_order"]["orders"]
    ] == (repaired["returns_portal_order"]["orders"])
    # the known-bad headers are accepted (Optoro takes the guide's samples) but noted
    rules = {w["rule"] for w in sandbox.warnings}
    assert rules == ({"header_sum"} if (sc.number, st.step) in KNOWN_BAD_HEADERS else set())


async def test_strict_refuses_header_sums_and_changed_refunds(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession
) -> None:
    access = await token(session, sandbox)
    order = scenario(2).steps[5].rpo_orders()[0]
    sample = copy.deepcopy(order)
    sample["refunds"][0]["refund_transactions"] = []
    sandbox.strict = True
    status, body, _ = await post_rpo(session, sandbox, rpo_request(sample), access)
    assert status == 422
    assert any("tax_amount_cents is 1024, the lines sum to 4024" in e for e in body["errors"])
    good = conforming_rpo_order(order)
    status, _, _ = await post_rpo(session, sandbox, rpo_request(good), access)
    assert status == 200
    changed = copy.deepcopy(good)
    changed["refunds"][0]["total_refund_amount_cents"] += 1
    status, body, _ = await post_rpo(session, sandbox, rpo_request(changed), access)
    assert status == 422
    assert "not updatable" in body["errors"][0]
    status, _, _ = await post_rpo(session, sandbox, rpo_request(good), access)
    assert status == 200  # the same refund again is fine


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda o: o.pop("customer"), "'customer' is a required property"),
        (lambda o: o.update(total_amount_cents="52224"), "total_amount_cents"),
        (lambda o: o.update(status="Returned"), "status"),
        (lambda o: o["items"].append(dict(o["items"][0])), "is not unique"),
        (lambda o: o["items"][0].update(quantity=1001), "more than 1000"),
        (lambda o: o["items"][0].update(quantity_shipped=5), "less than quantity_shipped"),
    ],
)
async def test_malformed_orders_get_422_with_errors(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession, mutate: Any, needle: str
) -> None:
    order = conforming_rpo_order(scenario(1).steps[0].rpo_orders()[0])
    mutate(order)
    status, body, _ = await post_rpo(
        session, sandbox, rpo_request(order), await token(session, sandbox)
    )
    assert status == 422
    assert body["error"] == "unprocessable_entity"
    assert isinstance(body["errors"], list)
    assert any(needle in e for e in body["errors"]), body["errors"]
    assert sandbox.orders == {}
    assert sandbox.requests[-1].errors == body["errors"]


async def test_malformed_bodies(sandbox: OptoroSandbox, session: aiohttp.ClientSession) -> None:
    access = await token(session, sandbox)
    status, body, _ = await post_rpo(session, sandbox, b"{not json", access)
    assert status == 400
    status, body, _ = await post_rpo(session, sandbox, {"orders": []}, access)
    assert status == 422
    assert "'returns_portal_order' is a required property" in body["errors"][0]
    sandbox.validation = False
    status, _, _ = await post_rpo(session, sandbox, {"orders": []}, access)
    assert status == 200


# fault knobs ---------------------------------------------------------------------------------


async def test_bare_429_for_the_next_n(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession
) -> None:
    access = await token(session, sandbox)
    body = rpo_request(conforming_rpo_order(scenario(1).steps[0].rpo_orders()[0]))
    sandbox.rate_limit_next = 2
    for _ in range(2):
        status, answer, response = await post_rpo(session, sandbox, body, access)
        assert status == 429
        assert answer is None
        assert "Retry-After" not in response.headers
        assert not [h for h in response.headers if h.lower().startswith("x-ratelimit")]
    status, _, _ = await post_rpo(session, sandbox, body, access)
    assert status == 200
    assert len(sandbox.orders["ORD1234567"]) == 1
    # the token endpoint is not faulted unless listed in fault_paths
    sandbox.rate_limit_rate = 1.0
    assert (await fetch_token(session, sandbox)).status == 200
    sandbox.fault_paths = ["/oauth/token", "/returns_portal_orders"]
    assert (await fetch_token(session, sandbox)).status == 429


async def test_fail_orders_answers_500_to_requests_carrying_them(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession
) -> None:
    access = await token(session, sandbox)
    order = conforming_rpo_order(scenario(1).steps[0].rpo_orders()[0])
    sandbox.fail_orders = [order["identifier"]]
    status, _, _ = await post_rpo(session, sandbox, rpo_request(order), access)
    assert status == 500
    assert sandbox.orders == {}
    sandbox.fail_orders = []
    status, _, _ = await post_rpo(session, sandbox, rpo_request(order), access)
    assert status == 200


async def test_error_rate_is_seeded_and_reproducible(session: aiohttp.ClientSession) -> None:
    body = rpo_request(conforming_rpo_order(scenario(1).steps[0].rpo_orders()[0]))

    async def statuses(sb: OptoroSandbox) -> list[int]:
        access = await token(session, sb)
        return [(await post_rpo(session, sb, body, access))[0] for _ in range(30)]

    async with running_sandbox(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, error_rate=0.5, seed=7
    ) as sb:
        first = await statuses(sb)
        assert set(first) == {200, 500}
        assert len(sb.orders["ORD1234567"]) == first.count(200)
        sb.reset()  # knobs and RNG back to where they started
        assert await statuses(sb) == first
        sb.seed = 8
        assert await statuses(sb) != first
        sb.error_rate = 0.0
        assert set(await statuses(sb)) == {200}


async def test_latency(sandbox: OptoroSandbox, session: aiohttp.ClientSession) -> None:
    access = await token(session, sandbox)
    body = rpo_request(conforming_rpo_order(scenario(1).steps[0].rpo_orders()[0]))
    sandbox.latency = 0.2
    started = time.monotonic()
    status, _, _ = await post_rpo(session, sandbox, body, access)
    assert status == 200
    assert time.monotonic() - started >= 0.19  # asyncio may wake a tick early


async def test_drop_after_n(sandbox: OptoroSandbox, session: aiohttp.ClientSession) -> None:
    access = await token(session, sandbox)
    body = rpo_request(conforming_rpo_order(scenario(1).steps[0].rpo_orders()[0]))
    sandbox.drop_after = 1
    assert (await post_rpo(session, sandbox, body, access))[0] == 200
    for _ in range(2):
        with pytest.raises(aiohttp.ClientConnectionError):
            await post_rpo(session, sandbox, body, access)
    assert len(sandbox.orders["ORD1234567"]) == 1
    assert [r.outcome for r in sandbox.rpo_requests()] == ["accepted", "dropped", "dropped"]
    assert sandbox.rpo_requests()[-1].status is None
    sandbox.drop_after = None
    assert (await post_rpo(session, sandbox, body, access))[0] == 200


async def test_accept_then_drop_records_but_the_client_sees_a_disconnect(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession
) -> None:
    access = await token(session, sandbox)
    body = rpo_request(conforming_rpo_order(scenario(1).steps[0].rpo_orders()[0]))
    sandbox.accept_then_drop_next = 1
    with pytest.raises(aiohttp.ClientConnectionError):
        await post_rpo(session, sandbox, body, access)
    assert sandbox.orders["ORD1234567"] == body["returns_portal_order"]["orders"]
    assert sandbox.rpo_requests()[-1].outcome == "accepted_then_dropped"
    assert (await post_rpo(session, sandbox, body, access))[0] == 200
    assert len(sandbox.orders["ORD1234567"]) == 2


async def test_knobs_are_validated(sandbox: OptoroSandbox) -> None:
    with pytest.raises(pydantic.ValidationError):
        sandbox.error_rate = 2.0
    with pytest.raises(ValueError, match="unknown knob"):
        sandbox.configure(eror_rate=0.1)
    with pytest.raises(ValueError, match="rate_limit_next"):
        sandbox.configure(rate_limit_next=-1, latency=0.1)
    assert sandbox.latency == 0.0  # all or nothing
    with pytest.raises(pydantic.ValidationError):
        OptoroSandbox(nonsense=1)


async def test_control_and_inspection_endpoints(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession
) -> None:
    access = await token(session, sandbox)
    order = conforming_rpo_order(scenario(1).steps[0].rpo_orders()[0])
    body = rpo_request(order)
    control = f"{sandbox.url}/_sandbox/control"
    async with session.post(control, json={"rate_limit_next": 1, "latency": 0.01}) as response:
        assert response.status == 200
        state = await response.json()
        assert state["knobs"]["rate_limit_next"] == 1
        assert state["knobs"]["client_secret"] == "***"
    assert sandbox.rate_limit_next == 1
    assert (await post_rpo(session, sandbox, body, access))[0] == 429
    assert (await post_rpo(session, sandbox, body, access))[0] == 200
    async with session.post(control, json={"error_rate": 3}) as response:
        assert response.status == 400
        assert "error_rate" in (await response.json())["error"]
    async with session.post(control, json={"bogus": 1}) as response:
        assert response.status == 400
        assert "known:" in (await response.json())["error"]
    async with session.get(f"{sandbox.url}/_sandbox/orders") as response:
        assert await response.json() == {"ORD1234567": [order]}
    async with session.get(f"{sandbox.url}/_sandbox/orders?identifier=ORD1234567") as response:
        assert await response.json() == [order]
    async with session.get(f"{sandbox.url}/_sandbox/requests") as response:
        logged = await response.json()
        assert [r["status"] for r in logged] == [200, 429, 200]
    async with session.get(f"{sandbox.url}/_sandbox/state") as response:
        state = await response.json()
    assert state["orders"] == {"ORD1234567": 1}
    assert state["tokens_issued"] == 1
    assert state["outcomes"] == {"token_issued": 1, "rate_limited": 1, "accepted": 1}
    async with session.post(control, json={"revoke_tokens": True}) as response:
        assert (await response.json())["tokens_revoked"] == 1
    assert (await post_rpo(session, sandbox, body, access))[0] == 401
    async with session.post(f"{sandbox.url}/_sandbox/reset") as response:
        state = await response.json()
    assert state["orders"] == {}
    assert state["requests"] == 0
    assert state["knobs"]["latency"] == 0.0
    assert sandbox.tokens_issued == 0
    async with session.get(f"{sandbox.url}/elsewhere") as response:
        assert response.status == 404


async def test_module_runs_alone() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.optoro.sandbox",
        "--port",
        "0",
        "--client-id",
        "cli-id",
        "--client-secret",
        "cli-secret",
        "--token-ttl",
        "120",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        prefix = "optoro sandbox listening on "
        assert line.startswith(prefix), line
        url = line.removeprefix(prefix).strip()
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            body = {
                "grant_type": "client_credentials",
                "client_id": "cli-id",
                "client_secret": "cli-secret",
            }
            async with session.post(f"{url}/oauth/token", json=body) as response:
                assert response.status == 200
                assert (await response.json())["expires_in"] == 120
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# the scenario player, against a tiny fake bridge -----------------------------------------------

RETAILER = "acme"
OPTITURN_ID = "Acme"
BASIC = BasicAuth("optoro", "hook-pass")


class FakeBridge:
    """Answers Optoro's calls from one scenario's samples; records what it received."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], Any] = {}
        self.received: list[tuple[str, str, dict[str, str], Any]] = []
        self.url = ""
        self.refuse: int | None = None

    def load(self, sc: Scenario) -> None:
        self.answers = {}
        self.received = []
        for st in sc.steps:
            if st.kind in ("exchange_variants", "exchange_order"):
                self.answers[(st.method, st.path)] = st.response

    async def handle(self, request: web.Request) -> web.Response:
        assert request.match_info["retailer"] == RETAILER
        path = "/" + request.match_info["rest"]
        body = await request.json() if request.can_read_body else None
        self.received.append((request.method, path, dict(request.headers), body))
        if self.refuse is not None:
            return web.json_response({"error": "items[0].upc: required"}, status=self.refuse)
        if path == "/rmas" and request.method == "POST":
            return web.json_response({"status": "stored"})
        answer = self.answers.get((request.method, path), {})
        return web.json_response({} if answer is None else answer)


@pytest.fixture
async def bridge() -> AsyncIterator[FakeBridge]:
    fake = FakeBridge()
    app = web.Application()
    app.router.add_route("*", "/retailers/{retailer}/optoro/{rest:.*}", fake.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        fake.url = f"http://127.0.0.1:{port}"
        yield fake
    finally:
        await runner.cleanup()


def bridge_sender(
    session: aiohttp.ClientSession, sandbox: OptoroSandbox, *, conforming: bool = True
) -> Any:
    """An ``on_outbound_step`` hook playing the bridge's part: send the step's orders."""

    async def send(step: Step) -> None:
        access = await token(session, sandbox)
        orders = [conforming_rpo_order(o) if conforming else o for o in step.rpo_orders()]
        status, body, _ = await post_rpo(session, sandbox, rpo_request(*orders), access)
        assert status in (200, 422), body

    return send


def make_player(
    bridge: FakeBridge, session: aiohttp.ClientSession, sandbox: OptoroSandbox | None, **kw: Any
) -> ScenarioPlayer:
    return ScenarioPlayer(
        bridge.url, RETAILER, kw.pop("auth", BASIC), OPTITURN_ID, 3, session, sandbox, **kw
    )


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: f"{s.number:02d}")
async def test_player_walks_every_scenario(
    sandbox: OptoroSandbox,
    session: aiohttp.ClientSession,
    bridge: FakeBridge,
    sc: Scenario,
) -> None:
    bridge.load(sc)
    player = make_player(bridge, session, sandbox, outbound_timeout=5)
    result = await player.play(sc, on_outbound_step=bridge_sender(session, sandbox))
    assert result.ok, result.summary()
    assert [r.status for r in result.steps] == ["ok"] * len(sc.steps)
    inbound = [st for st in sc.steps if not st.outbound]
    assert [(m, p) for m, p, _, _ in bridge.received] == [(st.method, st.path) for st in inbound]
    for (_, _, headers, body), st in zip(bridge.received, inbound, strict=True):
        assert headers["X-Optiturn-Id"] == OPTITURN_ID
        assert headers["X-Optiturn-Api-Version"] == ("3" if st.kind == "rma" else "1")
        assert headers["Authorization"] == BASIC.encode()
        assert body == st.request
    outbound = sum(len(st.rpo_orders()) for st in sc.steps if st.outbound)
    assert sum(len(v) for v in sandbox.orders.values()) == outbound


async def test_player_reports_a_mismatch_with_a_diff(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession, bridge: FakeBridge
) -> None:
    sc = scenario(6)
    bridge.load(sc)
    variants = copy.deepcopy(bridge.answers[("GET", "/sku/96027/variants")])
    variants["variants"][0]["quantity_in_stock"] = 0
    bridge.answers[("GET", "/sku/96027/variants")] = variants
    player = make_player(bridge, session, sandbox, outbound_timeout=5)
    result = await player.play(sc, on_outbound_step=bridge_sender(session, sandbox))
    assert not result.ok
    [failure] = result.failures
    assert failure.step.kind == "exchange_variants"
    assert failure.status == "mismatch"
    assert failure.diff == ("variants[0].quantity_in_stock: expected 10, got 0",)
    assert "quantity_in_stock" in result.summary()
    assert sum(r.status == "ok" for r in result.steps) == len(sc.steps) - 1


async def test_player_flags_the_sample_header_and_sandbox_refusals(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession, bridge: FakeBridge
) -> None:
    sc = scenario(2)
    bridge.load(sc)

    async def send_sample_headers(step: Step) -> None:
        orders = copy.deepcopy(step.rpo_orders())
        for order in orders:
            for refund in order["refunds"]:
                refund["refund_transactions"] = []
        access = await token(session, sandbox)
        await post_rpo(session, sandbox, rpo_request(*orders), access)

    player = make_player(bridge, session, sandbox, outbound_timeout=0.3)
    result = await player.play(sc, on_outbound_step=send_sample_headers)
    [failure] = result.failures
    assert (failure.step.step, failure.status) == (6, "mismatch")
    assert "total_amount_cents: expected 85224, got 52224" in "\n".join(failure.diff)

    # a bridge sending the sample verbatim is refused by the sandbox: the player says why
    sandbox.reset()
    result = await player.play(
        sc, on_outbound_step=bridge_sender(session, sandbox, conforming=False)
    )
    [failure] = result.failures
    assert (failure.step.step, failure.status) == (6, "error")
    assert "no matching version of ORD1234567" in failure.detail
    assert "refund_transactions" in failure.detail


async def test_player_accepts_orders_sent_before_their_step(
    sandbox: OptoroSandbox, session: aiohttp.ClientSession, bridge: FakeBridge
) -> None:
    sc = scenario(1)
    bridge.load(sc)
    rpo_steps = [st for st in sc.steps if st.outbound]
    send = bridge_sender(session, sandbox)

    async def send_all_at_first(step: Step) -> None:
        if step is rpo_steps[0]:
            for st in rpo_steps:
                await send(st)

    player = make_player(bridge, session, sandbox, outbound_timeout=0.3)
    result = await player.play(sc, on_outbound_step=send_all_at_first)
    assert result.ok, result.summary()
    # versions received before play() began do not count
    result = await player.play(sc)
    assert [r.status for r in result.steps if r.step.outbound] == ["error", "error"]


async def test_player_without_sandbox_and_with_api_key(
    session: aiohttp.ClientSession, bridge: FakeBridge
) -> None:
    sc = scenario(3)
    bridge.load(sc)
    answers = bridge.answers
    answers[("GET", "/sku/96027/exchange_variants")] = answers.pop(("GET", "/sku/96027/variants"))
    answers[("POST", "/exchange_orders")] = answers.pop(("POST", "/orders"))
    called: list[int] = []

    async def hook(step: Step) -> None:
        called.append(step.step)

    player = make_player(
        bridge,
        session,
        None,
        auth=("X-Api-Key", "k-123"),
        api_versions={"exchange_order": 2},
        variants_endpoint="exchange_variants",
        exchange_orders_path="/exchange_orders",
    )
    result = await player.play(sc, on_outbound_step=hook)
    assert result.ok
    assert called == [1, 7]
    assert [r.status for r in result.steps if r.step.outbound] == ["not_checked"] * 2
    seen = {(m, p): h for m, p, h, _ in bridge.received}
    assert seen[("POST", "/rmas")]["X-Api-Key"] == "k-123"
    assert "Authorization" not in seen[("POST", "/rmas")]
    assert seen[("POST", "/rmas")]["X-Optiturn-Api-Version"] == "3"
    assert seen[("GET", "/sku/96027/exchange_variants")]["X-Optiturn-Api-Version"] == "1"
    assert seen[("POST", "/exchange_orders")]["X-Optiturn-Api-Version"] == "2"


async def test_player_errors_and_stop_on_failure(session: aiohttp.ClientSession) -> None:
    # nothing listens at this bridge URL
    player = ScenarioPlayer(
        f"http://127.0.0.1:{closed_port()}",
        RETAILER,
        BASIC,
        OPTITURN_ID,
        3,
        session,
        stop_on_failure=True,
    )
    result = await player.play(scenario(1))
    statuses = [r.status for r in result.steps]
    assert statuses == ["not_checked", "error", "skipped", "skipped", "skipped", "skipped"]
    assert "ClientConnectorError" in result.steps[1].detail
    assert not result.ok


async def test_player_reports_non_2xx_from_the_bridge(
    session: aiohttp.ClientSession, bridge: FakeBridge
) -> None:
    bridge.refuse = 422
    result = await make_player(bridge, session, None).play(scenario(1))
    rma = result.steps[1]
    assert (rma.status, rma.http_status) == ("mismatch", 422)
    assert "items[0].upc" in rma.detail
