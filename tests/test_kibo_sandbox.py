"""The fake Kibo OMS (adapters/kibo/sandbox) over loopback HTTP: schema validation, auth,
create/get/process, fault knobs (timeout after commit, refusals, 500s, latency), and Return
Event Notifications sent to a tiny receiver or dropped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pydantic
import pytest
from aiohttp import web

from adapters.kibo.sandbox import (
    FIRST_RETURN_ID,
    KiboSandbox,
    SandboxRefused,
    running_sandbox,
)
from adapters.kibo.sandbox.__main__ import add_arguments
from mappings.kibo import (
    dumps,
    kibo_process_request,
    numeric_order_item_ids,
    parse_notification,
    return_response_to_ref,
    rma_to_kibo_returns,
)
from mappings.optoro import parse_rma

TOKEN = "tok-123"
HOOK_AUTH = "Bearer hook-secret"
FIXTURES = Path("/work/shared/fixtures/optoro-scenarios")
S06 = "06-multi-line-partial-return-partial-exchange-mailback/08-rma-rma-refunded.json"


def scenario_06_body() -> dict[str, Any]:
    rma = parse_rma(json.loads((FIXTURES / S06).read_text())["request"])
    (body,) = rma_to_kibo_returns(
        rma,
        order_item_ids=numeric_order_item_ids(rma),
        created_at=datetime(2023, 1, 28, tzinfo=UTC),
    )
    return body


BODY = scenario_06_body()


class Receiver:
    """A tiny notification subscriber: records what arrives, answers ``status``."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], Any]] = []
        self.status = 200
        self.url = ""
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.json()))
        self.arrived.set()
        return web.Response(status=self.status)

    def kinds(self) -> list[str]:
        return [body["eventTypeID"] for _, body in self.received]

    async def wait_for(self, count: int, within: float = 5.0) -> None:
        deadline = time.monotonic() + within
        while len(self.received) < count:
            self.arrived.clear()
            left = deadline - time.monotonic()
            assert left > 0, f"expected {count} notifications, got {self.kinds()}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/kibo/notifications", recv.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
    recv.url = f"http://127.0.0.1:{port}/kibo/notifications"
    try:
        yield recv
    finally:
        await runner.cleanup()


@pytest.fixture
async def sandbox(receiver: Receiver) -> AsyncIterator[KiboSandbox]:
    async with running_sandbox(
        token=TOKEN,
        notification_url=receiver.url,
        notification_headers={"Authorization": HOOK_AUTH},
        notify=["accepted", "rejected", "cleared", "reopened", "refund_failed"],
    ) as sb:
        yield sb


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, Any, str]:
    data = None if body is None else (body if isinstance(body, str) else dumps(body))
    sent = {"Content-Type": "application/json", **(AUTH if headers is None else headers)}
    async with session.request(method, url, data=data, headers=sent, **kwargs) as response:
        text = await response.text()
        parsed = json.loads(text, parse_float=Decimal) if text else None
        return response.status, parsed, text


async def create(
    session: aiohttp.ClientSession, sandbox: KiboSandbox, body: Any = None, **kwargs: Any
) -> tuple[int, Any, str]:
    return await call(session, "POST", sandbox.return_url, BODY if body is None else body, **kwargs)


# --- create / get / process ------------------------------------------------------------------


async def test_create_and_get(sandbox: KiboSandbox, session: aiohttp.ClientSession) -> None:
    status, created, text = await create(session, sandbox)
    assert status == 200
    assert created["returnID"] == FIRST_RETURN_ID
    assert created["status"] == "OPEN"
    assert '"returnSubtotal":330.00' in text
    assert [(i["orderItemID"], i["quantity"], i["status"]) for i in created["item"]] == [
        (1, 4, "PENDING"),
        (2, 3, "PENDING"),
    ]
    assert created["item"][0]["returnItemID"] != created["item"][1]["returnItemID"]
    status, again, _ = await create(session, sandbox)  # no dedup: two creates, two returns
    assert (status, again["returnID"]) == (200, FIRST_RETURN_ID + 1)

    status, got, _ = await call(session, "GET", f"{sandbox.return_url}{FIRST_RETURN_ID}")
    assert status == 200
    assert got == created
    ref = return_response_to_ref(got)
    assert (ref.return_id, ref.status, ref.cleared, ref.rejected) == (1000, "OPEN", False, False)
    assert ref.return_total == Decimal("330.00")
    for missing in ("999", "abc"):
        status, error, _ = await call(session, "GET", f"{sandbox.return_url}{missing}")
        assert (status, error["errorCode"]) == (404, "NOT_FOUND")
    assert [r.outcome for r in sandbox.requests] == [
        "created",
        "created",
        "found",
        "not_found",
        "not_found",
    ]
    assert sandbox.requests[0].headers["Authorization"] == "Bearer ***"


async def test_process_partially_accepts_and_clears(
    sandbox: KiboSandbox, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    _, created, _ = await create(session, sandbox)
    return_id = created["returnID"]
    process = kibo_process_request(return_id, {1: 2})
    status, processed, _ = await call(session, "POST", sandbox.process_url, process)
    assert status == 200
    assert processed["status"] == "CLOSED"
    assert processed["clearedTime"]
    assert processed["confirmTime"]
    assert [(i["status"], i["quantityAccepted"]) for i in processed["item"]] == [
        ("ACCEPTED", 2),
        ("REJECTED", 0),  # not listed: rejected
    ]
    assert return_response_to_ref(processed).cleared
    await receiver.wait_for(1)
    assert receiver.kinds() == ["return_cleared"]
    status, error, _ = await call(session, "POST", sandbox.process_url, process)
    assert (status, error["errorCode"]) == (409, "INVALID_STATE")


async def test_process_refusals(sandbox: KiboSandbox, session: aiohttp.ClientSession) -> None:
    _, created, _ = await create(session, sandbox)
    return_id = created["returnID"]
    cases = [
        ({"returnID": 4242, "acceptedItemQuantity": []}, 404, None),
        (
            {
                "returnID": return_id,
                "acceptedItemQuantity": [{"orderItemID": 9, "quantityAccepted": 1}],
            },
            400,
            "acceptedItemQuantity[0].orderItemID",
        ),
        (
            {
                "returnID": return_id,
                "acceptedItemQuantity": [{"orderItemID": 2, "quantityAccepted": 4}],
            },
            400,
            "acceptedItemQuantity[0].quantityAccepted",
        ),
        ({"returnID": 0, "acceptedItemQuantity": []}, 400, "returnID"),
        ({"acceptedItemQuantity": []}, 400, "<root>"),
    ]
    for body, expected, field in cases:
        status, error, _ = await call(session, "POST", sandbox.process_url, body)
        assert status == expected, body
        if field is not None:
            assert error["errors"][0]["field"] == field
    assert sandbox.returns[return_id]["status"] == "OPEN"


# --- validation ------------------------------------------------------------------------------


ITEM = {"orderItemID": 1, "quantity": 1}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({}, "<root>", "item is a required property"),
        ({"item": []}, "item", "at least 1"),
        ({"item": [{"quantity": 1}]}, "item[0]", "orderItemID is a required property"),
        ({"item": [{"orderItemID": 1, "quantity": "1"}]}, "item[0].quantity", "integer"),
        ({"item": [{"orderItemID": 1, "quantity": 0}]}, "item[0].quantity", "at least 1"),
        ({"item": [{"orderItemID": -1, "quantity": 1}]}, "item[0].orderItemID", "at least 0"),
        ({"item": [{**ITEM, "returnSubtotal": "1.00"}]}, "item[0].returnSubtotal", "number"),
        ({"item": [{**ITEM, "SKU": "S" * 51}]}, "item[0].SKU", "at most 50"),
        ({"item": [{**ITEM, "UPC": "0" * 51}]}, "item[0].UPC", "at most 50"),
        ({"item": [{**ITEM, "partNumber": ""}]}, "item[0].partNumber", "at least 1"),
        ({"item": [{**ITEM, "status": "LOST"}]}, "item[0].status", "one of"),
        ({"item": [{**ITEM, "sku": "x"}]}, "item[0]", "unknown field(s): sku"),
        (
            {"item": [{**ITEM, "giftCardInfo": {"email": "a@b.c"}}]},
            "item[0].giftCardInfo",
            "giftCardType is a required property",
        ),
        (
            {"item": [{**ITEM, "giftCardInfo": {"giftCardType": "GC", "email": "e" * 251}}]},
            "item[0].giftCardInfo.email",
            "at most 250",
        ),
        (
            {"item": [{**ITEM, "orderItemUnits": [{"serialNumber": 1}]}]},
            "item[0].orderItemUnits[0]",
            "orderItemUnitID",
        ),
        ({"item": [ITEM], "externalOrderID": "O" * 101}, "externalOrderID", "at most 100"),
        ({"item": [ITEM], "externalOrderID": ""}, "externalOrderID", "at least 1"),
        ({"item": [ITEM], "refundType": "CASH"}, "refundType", "STANDARD, GIFT_CARD"),
        ({"item": [ITEM], "status": "DONE"}, "status", "OPEN, PROCESSING, CLOSED"),
        ({"item": [ITEM], "orderID": 0}, "orderID", "at least 1"),
        ({"item": [ITEM], "createdTime": "yesterday"}, "createdTime", "date-time"),
        ({"item": [ITEM], "createdTime": "2023-01-28T10:00:00"}, "createdTime", "date-time"),
    ],
)
async def test_schema_validation_errors(
    sandbox: KiboSandbox,
    session: aiohttp.ClientSession,
    body: dict[str, Any],
    field: str,
    message: str,
) -> None:
    status, error, _ = await create(session, sandbox, body)
    assert status == 400
    assert error["errorCode"] == "VALIDATION_ERROR"
    assert error["httpStatus"] == 400
    assert error["errors"][0]["field"] == field
    assert message in error["errors"][0]["message"]
    assert sandbox.returns == {}
    assert sandbox.requests[-1].outcome == "invalid"


async def test_the_pages_own_sample_is_refused(
    sandbox: KiboSandbox, session: aiohttp.ClientSession
) -> None:
    # the page's sample sends quantity as a string (and 0000000, which is not JSON at all)
    sample = '{"item":[{"orderItemID":0,"quantity":"1","reason":"Item did not fit."}]}'
    status, error, _ = await create(session, sandbox, sample)
    assert (status, error["errors"][0]["field"]) == (400, "item[0].quantity")
    status, error, _ = await create(session, sandbox, '{"item":[{"orderItemID":0000000}]}')
    assert (status, error["message"]) == (400, "The request body is not JSON.")
    sandbox.validation = False
    status, _, _ = await create(session, sandbox, sample)
    assert status == 200


# --- auth ------------------------------------------------------------------------------------


async def test_bearer_auth(sandbox: KiboSandbox, session: aiohttp.ClientSession) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": aiohttp.encode_basic_auth("sandbox-user", "sandbox-password")},
    ):
        status, error, _ = await create(session, sandbox, headers=headers)
        assert (status, error["errorCode"]) == (401, "UNAUTHORIZED")
    async with session.get(f"{sandbox.return_url}1000") as response:
        assert response.status == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="Kibo"'
    assert sandbox.returns == {}


async def test_basic_auth(session: aiohttp.ClientSession) -> None:
    async with running_sandbox(auth="basic", username="u", password="p:w") as sb:
        good = {"Authorization": aiohttp.encode_basic_auth("u", "p:w")}
        assert (await create(session, sb, headers=good))[0] == 200
        for headers in (
            {"Authorization": aiohttp.encode_basic_auth("u", "nope")},
            {"Authorization": f"Bearer {TOKEN}"},
            {},
        ):
            status, _, _ = await create(session, sb, headers=headers)
            assert status == 401
        async with session.post(sb.return_url, data=dumps(BODY)) as response:
            assert response.headers["WWW-Authenticate"] == 'Basic realm="Kibo"'
        assert sb.knobs()["password"] == "***"


# --- faults ----------------------------------------------------------------------------------


async def test_timeout_after_commit_stall(
    sandbox: KiboSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.configure(timeout_after_commit_next=1, stall_seconds=30)
    with pytest.raises(TimeoutError):
        await create(session, sandbox, timeout=aiohttp.ClientTimeout(total=0.3))
    # the client saw nothing, but the return exists
    (stored,) = sandbox.find_returns("ORD1234567")
    assert stored["returnID"] == FIRST_RETURN_ID
    status, found, _ = await call(
        session, "GET", f"{sandbox.url}/_sandbox/returns?externalOrderID=ORD1234567", headers={}
    )
    assert (status, [r["returnID"] for r in found]) == (200, [FIRST_RETURN_ID])
    status, found, _ = await call(
        session, "GET", f"{sandbox.url}/_sandbox/returns?externalOrderID=OTHER", headers={}
    )
    assert found == []
    assert sandbox.requests[0].outcome == "created_then_stalled"
    # a retry without a lookup duplicates the return
    status, again, _ = await create(session, sandbox)
    assert (status, again["returnID"]) == (200, FIRST_RETURN_ID + 1)
    assert len(sandbox.find_returns("ORD1234567")) == 2


async def test_timeout_after_commit_drop(
    sandbox: KiboSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.configure(timeout_after_commit_next=1, commit_fault="drop")
    with pytest.raises(aiohttp.ClientConnectionError):
        await create(session, sandbox)
    assert [r["returnID"] for r in sandbox.find_returns()] == [FIRST_RETURN_ID]
    assert sandbox.requests[-1].outcome == "created_then_dropped"
    assert sandbox.requests[-1].status is None
    assert (await create(session, sandbox))[0] == 200


async def test_reject_next(sandbox: KiboSandbox, session: aiohttp.ClientSession) -> None:
    sandbox.configure(reject_next=1, reject_status=422, reject_message="Order is not returnable.")
    status, error, _ = await create(session, sandbox)
    assert status == 422
    assert error == {
        "errorCode": "RETURN_NOT_ALLOWED",
        "message": "Order is not returnable.",
        "httpStatus": 422,
    }
    assert sandbox.returns == {}
    assert (await create(session, sandbox))[0] == 200
    # an invalid body is refused for what it is and does not use up the refusal
    sandbox.reject_next = 1
    assert (await create(session, sandbox, {"item": []}))[0] == 400
    assert (await create(session, sandbox))[0] == 422


async def test_error_rate_and_latency(sandbox: KiboSandbox, session: aiohttp.ClientSession) -> None:
    sandbox.error_rate = 1.0
    status, error, _ = await create(session, sandbox)
    assert (status, error["errorCode"]) == (500, "INTERNAL_ERROR")
    assert sandbox.returns == {}
    sandbox.configure(error_rate=0.0, latency=0.2)
    started = time.monotonic()
    assert (await create(session, sandbox))[0] == 200
    assert time.monotonic() - started >= 0.19


async def test_error_rate_is_seeded(session: aiohttp.ClientSession) -> None:
    async def statuses(seed: int) -> list[int]:
        async with running_sandbox(token=TOKEN, error_rate=0.5, seed=seed) as sb:
            return [(await create(session, sb))[0] for _ in range(12)]

    first = await statuses(3)
    assert set(first) == {200, 500}
    assert await statuses(3) == first


# --- notifications ---------------------------------------------------------------------------


async def test_clear_sends_return_cleared(
    sandbox: KiboSandbox, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    _, created, _ = await create(session, sandbox, {**BODY, "orderID": 77})
    return_id = created["returnID"]
    status, answer, _ = await call(
        session, "POST", f"{sandbox.url}/_sandbox/returns/{return_id}/clear", headers={}
    )
    assert status == 200
    assert answer["notification"]["outcome"] == "sent"
    assert answer["return"]["status"] == "CLOSED"
    await receiver.wait_for(1)
    headers, body = receiver.received[0]
    assert headers["Authorization"] == HOOK_AUTH
    assert body["eventTypeID"] == "return_cleared"
    assert body["status"] == "CLOSED"
    assert body["clearedTime"]
    assert body["returnTotal"] == 330.0
    event = parse_notification(body)
    assert (event.kind, event.return_id, event.order_id, event.external_order_id) == (
        "cleared",
        return_id,
        77,
        "ORD1234567",
    )
    # Get Return agrees (what reconciliation reads)
    _, got, _ = await call(session, "GET", f"{sandbox.return_url}{return_id}")
    assert return_response_to_ref(got).cleared
    status, error, _ = await call(
        session, "POST", f"{sandbox.url}/_sandbox/returns/{return_id}/clear", headers={}
    )
    assert (status, error["errorCode"]) == (409, "INVALID_STATE")


async def test_reject_sends_return_rejected(
    sandbox: KiboSandbox, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    _, created, _ = await create(session, sandbox)
    note = await sandbox.reject(created["returnID"])
    assert (note.outcome, note.status, note.event_type) == ("sent", 200, "return_rejected")
    _, body = receiver.received[0]
    assert parse_notification(body).kind == "rejected"
    ref = return_response_to_ref(sandbox.get_return(created["returnID"]))
    assert (ref.rejected, ref.cleared, ref.status) == (True, False, "CLOSED")


async def test_dropped_notifications_leave_reconciliation_to_get_return(
    sandbox: KiboSandbox, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    sandbox.drop_notifications = True
    _, created, _ = await create(session, sandbox)
    note = await sandbox.clear(created["returnID"])
    assert note.outcome == "dropped"
    await asyncio.sleep(0.05)
    assert receiver.received == []
    _, got, _ = await call(session, "GET", f"{sandbox.return_url}{created['returnID']}")
    assert return_response_to_ref(got).cleared
    _, notes, _ = await call(session, "GET", f"{sandbox.url}/_sandbox/notifications", headers={})
    assert [(n["kind"], n["outcome"]) for n in notes if n["kind"] != "created"] == [
        ("cleared", "dropped")
    ]


async def test_other_actions_and_translated_names(
    sandbox: KiboSandbox, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    sandbox.event_names = {"accepted": "7", "cleared": "RETURN CLEARED", "reopened": "8"}
    _, created, _ = await create(session, sandbox)
    return_id = created["returnID"]
    await sandbox.accept(return_id)
    await sandbox.clear(return_id)
    await sandbox.reopen(return_id)
    await sandbox.fail_refund(return_id)
    assert receiver.kinds() == ["7", "RETURN CLEARED", "8", "return_failure"]
    names = {"7": "accepted", "RETURN CLEARED": "cleared", "8": "reopened"}
    kinds = [parse_notification(body, names).kind for _, body in receiver.received]
    assert kinds == ["accepted", "cleared", "reopened", "unknown"]
    assert sandbox.returns[return_id]["status"] == "OPEN"
    assert "clearedTime" not in sandbox.returns[return_id]
    with pytest.raises(SandboxRefused, match="not CLOSED"):
        await sandbox.reopen(return_id)
    with pytest.raises(SandboxRefused, match="does not exist"):
        await sandbox.clear(4242)
    status, _, _ = await call(
        session, "POST", f"{sandbox.url}/_sandbox/returns/{return_id}/explode", headers={}
    )
    assert status == 404


async def test_created_notification_and_failing_receiver(
    session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    async with running_sandbox(token=TOKEN, notification_url=receiver.url) as sb:
        _, created, _ = await create(session, sb)
        await receiver.wait_for(1)
        assert receiver.kinds() == ["return_created"]
        assert receiver.received[0][1]["returnID"] == created["returnID"]
        assert "Authorization" not in receiver.received[0][0]
        receiver.status = 503
        assert (await sb.clear(created["returnID"])).outcome == "refused"
        sb.notification_url = "http://127.0.0.1:9/nowhere"
        _, second, _ = await create(session, sb)
        note = await sb.reject(second["returnID"])
        assert (note.outcome, note.error) == ("failed", "ClientConnectorError")


async def test_no_url_means_not_sent(session: aiohttp.ClientSession) -> None:
    async with running_sandbox(token=TOKEN) as sb:
        _, created, _ = await create(session, sb)
        assert (await sb.clear(created["returnID"])).outcome == "not_sent"


# --- control ---------------------------------------------------------------------------------


async def test_control_state_and_reset(
    sandbox: KiboSandbox, session: aiohttp.ClientSession
) -> None:
    control = f"{sandbox.url}/_sandbox/control"
    status, state, _ = await call(session, "POST", control, {"reject_next": 1}, headers={})
    assert status == 200
    assert state["knobs"]["reject_next"] == 1
    assert state["knobs"]["token"] == "***"
    assert state["knobs"]["notification_headers"] == {"Authorization": "***"}
    assert (await create(session, sandbox))[0] == 400
    status, error, _ = await call(session, "POST", control, {"bogus": 1}, headers={})
    assert status == 400
    assert "known:" in error["error"]
    status, error, _ = await call(session, "POST", control, {"error_rate": 3}, headers={})
    assert (status, "error_rate" in error["error"]) == (400, True)
    assert (await create(session, sandbox))[0] == 200
    status, state, _ = await call(session, "GET", f"{sandbox.url}/_sandbox/state", headers={})
    assert state["returns"] == {"1000": "OPEN"}
    assert state["outcomes"] == {"rejected": 1, "created": 1}
    status, one, _ = await call(session, "GET", f"{sandbox.url}/_sandbox/returns/1000", headers={})
    assert one["returnID"] == 1000
    status, logged, _ = await call(session, "GET", f"{sandbox.url}/_sandbox/requests", headers={})
    assert [r["status"] for r in logged] == [400, 200]
    status, state, _ = await call(session, "POST", f"{sandbox.url}/_sandbox/reset", headers={})
    assert (state["returns"], state["requests"]) == ({}, 0)
    assert (await create(session, sandbox))[1]["returnID"] == FIRST_RETURN_ID
    status, _, _ = await call(session, "GET", f"{sandbox.url}/elsewhere")
    assert status == 404


async def test_client_return_id_is_kept_once_and_get_return_finds_it(
    sandbox: KiboSandbox, session: aiohttp.ClientSession
) -> None:
    status, created, _ = await create(session, sandbox, {**BODY, "returnID": FIRST_RETURN_ID})
    assert (status, created["returnID"]) == (200, FIRST_RETURN_ID)
    status, error, _ = await create(session, sandbox, {**BODY, "returnID": FIRST_RETURN_ID})
    assert (status, error["errorCode"]) == (409, "DUPLICATE_RETURN_ID")
    assert error["errors"] == [{"field": "returnID", "message": "is taken"}]
    assert list(sandbox.returns) == [FIRST_RETURN_ID]  # the refused create made nothing
    assert sandbox.requests[-1].outcome == "conflict"
    status, own, _ = await create(session, sandbox)  # no id asked: the next free one
    assert (status, own["returnID"]) == (200, FIRST_RETURN_ID + 1)
    big = 2**53 - 1
    status, created, _ = await create(session, sandbox, {**BODY, "returnID": big})
    assert (status, created["returnID"]) == (200, big)
    status, got, _ = await call(session, "GET", f"{sandbox.return_url}{big}")
    assert (status, got) == (200, created)


async def test_a_tenant_that_assigns_its_own_return_ids(
    sandbox: KiboSandbox, session: aiohttp.ClientSession
) -> None:
    sandbox.configure(honour_return_id=False)
    for expected in (FIRST_RETURN_ID, FIRST_RETURN_ID + 1):
        status, created, _ = await create(session, sandbox, {**BODY, "returnID": 777})
        assert (status, created["returnID"]) == (200, expected)
    status, _, _ = await call(session, "GET", f"{sandbox.return_url}777")
    assert status == 404


async def test_knobs_are_validated() -> None:
    sb = KiboSandbox()
    with pytest.raises(pydantic.ValidationError):
        sb.error_rate = 2.0
    with pytest.raises(ValueError, match="reject_status"):
        sb.configure(reject_status=500, latency=0.1)
    assert sb.latency == 0.0
    with pytest.raises(pydantic.ValidationError):
        KiboSandbox(nonsense=1)


def test_cli_arguments() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--port", "0", "--auth", "basic", "--notification-header", "X-Hook: abc: def"]
    )
    assert (args.port, args.auth, args.notification_header) == (
        0,
        "basic",
        [("X-Hook", "abc: def")],
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--notification-header", "nocolon"])


async def test_module_runs_alone() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "adapters.kibo.sandbox",
        "--port",
        "0",
        "--token",
        "cli-token",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        prefix = "kibo sandbox listening on "
        assert line.startswith(prefix), line
        url = line.removeprefix(prefix).strip()
        async with aiohttp.ClientSession() as session:
            status, created, _ = await call(
                session,
                "POST",
                f"{url}/api/v2/return/",
                BODY,
                headers={"Authorization": "Bearer cli-token"},
            )
            assert (status, created["returnID"]) == (200, FIRST_RETURN_ID)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
