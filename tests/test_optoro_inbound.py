"""Optoro's calls to a running daemon over loopback HTTP: RMAs, variants, exchange orders."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from adapters.optoro.inbound import inbound_key
from bridge.app import Runtime
from bridge.domain import Rma
from bridge.ports import CATALOG, EXCHANGE_ORDER_SINK, SharedKey
from bridge.store import InboxStatus
from demo.guide import GuideCatalog, GuideOrderSink
from tests.harness import (
    OPTITURN_ID,
    WEBHOOK_PASSWORD,
    WEBHOOK_USER,
    Daemon,
    optoro_table,
    running_daemon,
)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "optoro-scenarios"


def steps(api: str) -> list[dict[str, Any]]:
    found = []
    for path in sorted(FIXTURES.glob("*/*.json")):
        if path.name == "index.json":
            continue
        step = json.loads(path.read_text())
        if (step["path"] == "/rmas" and api == "RMA") or (api != "RMA" and step["api"] == api):
            step["scenario"] = path.parent.name
            found.append(step)
    assert found, f"no {api} fixtures under {FIXTURES}"
    return found


def fixture_sink() -> GuideOrderSink:
    return GuideOrderSink(
        {
            s["request"]["original_order_id"]: s["response"]["order_identifier"]
            for s in steps("Exchange Order")
            if s["response"]
        }
    )


def fixture_catalog(step: dict[str, Any]) -> GuideCatalog:
    catalog = GuideCatalog()
    catalog.load(step["path"], step["response"])
    return catalog


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


SINK: SharedKey[GuideOrderSink] = SharedKey("test.exchange_order_sink")
MEMORY_CATALOG: SharedKey[GuideCatalog] = SharedKey("test.catalog")


def _absent() -> Any:
    raise AssertionError("the fixture did not wire it")


HEADERS = {"X-Optiturn-Id": OPTITURN_ID, "X-Optiturn-Api-Version": "3"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


AUTH = basic(WEBHOOK_USER, WEBHOOK_PASSWORD)


@pytest_asyncio.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    sink = fixture_sink()
    catalog = fixture_catalog(steps("Exchange Variants")[0])

    def wire(runtime: Runtime) -> None:
        runtime.provide("acme", CATALOG, "memory", catalog)
        runtime.provide("acme", EXCHANGE_ORDER_SINK, "memory", sink)
        runtime.shared(SINK, lambda: sink)
        runtime.shared(MEMORY_CATALOG, lambda: catalog)

    async with running_daemon(tmp_path, optoro_table("http://127.0.0.1:9"), before_start=wire) as d:
        yield d


async def post_rma(
    session: aiohttp.ClientSession, daemon: Daemon, body: Any, **kwargs: Any
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(
        daemon.retailer_url("optoro", "rmas"),
        data=data,
        headers={**HEADERS, **(kwargs.pop("auth", AUTH) or {}), **kwargs.pop("headers", {})},
    ) as resp:
        return resp.status, await resp.json()


async def stored_rma(daemon: Daemon, rma_id: str) -> Rma | None:
    async with daemon.runtime.store.transaction() as tx:
        entity = await tx.get_entity("rma", f"acme:{rma_id}")
    return Rma.model_validate(entity.data) if entity else None


async def test_every_guide_rma_message_is_accepted_and_applied(daemon, session) -> None:  # type: ignore[no-untyped-def]
    """All 61 messages; scenarios reuse RMA ids, so each scenario's ids are made its own."""
    messages = steps("RMA")
    assert len(messages) == 61
    finals: dict[str, dict[str, Any]] = {}
    for step in messages:
        message = {**step["request"]}
        message["rma_identifier"] = f"{step['scenario'][:2]}-{message['rma_identifier']}"
        status, body = await post_rma(session, daemon, message)
        assert status == 200, (step["scenario"], body)
        assert body["status"] == "accepted"
        finals[message["rma_identifier"]] = message
    await daemon.settle()
    stats = await daemon.runtime.store.inbox_stats()
    assert stats.quarantined == 0
    assert stats.done == 61
    entities = {i.entity for i in await daemon.runtime.store.list_inbox(InboxStatus.DONE, 100)}
    assert entities == {f"rma:acme:{rma_id}" for rma_id in finals}  # leased one RMA at a time
    for rma_id, last in finals.items():
        rma = await stored_rma(daemon, rma_id)
        assert rma is not None
        assert rma.status.value == last["status"]
        assert len(rma.units) == len(last["items"])


async def test_shuffled_duplicated_rma_messages_end_in_the_newest_state(daemon, session) -> None:  # type: ignore[no-untyped-def]
    scenario = [s for s in steps("RMA") if s["scenario"].startswith("06-")]
    assert len(scenario) == 4  # created, tracking, carrier scan (same updated_at), refunded
    deliveries = scenario + random.Random(6).sample(scenario, 3)
    random.Random(60).shuffle(deliveries)
    results = await asyncio.gather(*(post_rma(session, daemon, s["request"]) for s in deliveries))
    assert all(status == 200 for status, _ in results)
    await daemon.settle()
    rma = await stored_rma(daemon, scenario[-1]["request"]["rma_identifier"])
    assert rma is not None
    assert rma.status.value == "REFUNDED"
    assert all(
        u.package_status is not None and u.package_status.value == "TRANSIT" for u in rma.units
    )
    stats = await daemon.runtime.store.inbox_stats()
    assert stats.done + stats.superseded == 4
    assert stats.duplicates == 3


async def test_credentials_and_optiturn_id_are_checked(daemon, session) -> None:  # type: ignore[no-untyped-def]
    sample = steps("RMA")[0]["request"]
    status, body = await post_rma(session, daemon, sample, auth=basic(WEBHOOK_USER, "wrong"))
    assert status == 401
    assert body["error"]["field"] == "Authorization"
    status, body = await post_rma(session, daemon, sample, auth=None)
    assert status == 401
    assert (await daemon.runtime.store.inbox_stats()).by_source == {}  # nothing stored

    status, body = await post_rma(
        session, daemon, sample, headers={"X-Optiturn-Id": "someone-else"}
    )
    assert status == 503  # optiturn_mismatch_status: Optoro retries it
    assert body["error"]["field"] == "X-Optiturn-Id"
    assert body["error"]["quarantined"] is True
    (kept,) = await daemon.runtime.store.list_inbox(InboxStatus.QUARANTINED)
    assert json.loads(kept.body) == sample
    assert "Authorization" not in kept.headers


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda m: m.pop("rma_identifier"), "rma_identifier"),
        (lambda m: m.update(status=17), "status"),
        (
            lambda m: m["items"][0]["refund_financials"].update(
                estimated_refund_amount_cents="many"
            ),
            "items[0].refund_financials.estimated_refund_amount_cents",
        ),
        (lambda m: m.update(items="none"), "items"),
    ],
)
async def test_invalid_rma_is_quarantined_and_answered_200_naming_the_field(
    daemon, session, mutate, field
) -> None:  # type: ignore[no-untyped-def]
    message = json.loads(json.dumps(steps("RMA")[0]["request"]))
    mutate(message)
    status, body = await post_rma(session, daemon, message)
    assert status == 200  # Optoro retries anything else for 32 h
    assert body["error"]["field"] == field
    assert body["error"]["quarantined"] is True
    (kept,) = await daemon.runtime.store.list_inbox(InboxStatus.QUARANTINED)
    assert json.loads(kept.body) == message
    assert field in (kept.note or "")


async def test_bad_input_gets_json_errors_and_the_daemon_keeps_serving(daemon, session) -> None:  # type: ignore[no-untyped-def]
    status, body = await post_rma(session, daemon, b"{not json")
    assert status == 200
    assert body["error"]["quarantined"] is True
    assert body["error"]["field"] == "body"
    status, body = await post_rma(session, daemon, b"[1, 2]")
    assert status == 200
    assert body["error"]["field"] == "body"
    status, body = await post_rma(session, daemon, b"x" * 70000)
    assert status == 413
    assert body["error"]["field"] == "body"
    async with session.post(
        f"{daemon.url}/retailers/nobody/optoro/rmas", data=b"{}", headers=AUTH
    ) as resp:
        assert resp.status == 404
        assert "error" in await resp.json()
    async with session.get(daemon.retailer_url("optoro", "rmas"), headers=AUTH) as resp:
        assert resp.status == 405
        assert "error" in await resp.json()
    status, body = await post_rma(session, daemon, steps("RMA")[0]["request"])
    assert status == 200
    assert body["status"] == "accepted"
    async with session.get(f"{daemon.url}/healthz") as resp:
        assert resp.status == 200


async def get_variants(
    session: aiohttp.ClientSession, daemon: Daemon, path: str
) -> tuple[int, Any]:
    async with session.get(
        daemon.retailer_url("optoro", path),
        headers={**HEADERS, "X-Optiturn-Api-Version": "1", **AUTH},
    ) as resp:
        return resp.status, await resp.json()


async def test_every_variants_sample_is_answered_from_the_catalog(daemon, session) -> None:  # type: ignore[no-untyped-def]
    catalog = daemon.runtime.shared(MEMORY_CATALOG, _absent)
    cache = daemon.runtime.shared(inbound_key("acme"), _absent).variants_cache
    samples = steps("Exchange Variants")
    assert len(samples) == 8
    for step in samples:
        cache.invalidate(catalog.load(step["path"], step["response"]))
        status, body = await get_variants(session, daemon, step["path"])
        assert status == 200
        assert body == step["response"], step["scenario"]
    status, body = await get_variants(session, daemon, "sku/96027/exchange_variants")
    assert status == 200
    assert body == samples[-1]["response"]


async def test_cold_concurrent_variants_cause_one_upstream_call_and_stale_serves_outage(
    daemon, session
) -> None:  # type: ignore[no-untyped-def]
    catalog = daemon.runtime.shared(MEMORY_CATALOG, _absent)
    path = steps("Exchange Variants")[0]["path"]
    results = await asyncio.gather(*(get_variants(session, daemon, path) for _ in range(100)))
    assert {status for status, _ in results} == {200}
    assert catalog.calls == 1
    inbound = daemon.runtime.shared(inbound_key("acme"), _absent)
    inbound.variants_cache.ttl = 0  # every request now goes upstream
    catalog.fail = True
    status, body = await get_variants(session, daemon, path)
    assert status == 200
    assert body == results[0][1]
    assert inbound.variants_cache.stats.stale_served == 1
    status, body = await get_variants(session, daemon, "sku/never-seen/variants")
    assert status == 503
    assert "error" in body


async def post_exchange(
    session: aiohttp.ClientSession,
    daemon: Daemon,
    step: dict[str, Any],
    body: Any = None,
    version: str = "2",
) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with session.post(
        daemon.retailer_url("optoro", step["path"]),
        json=body or step["request"],
        headers={**HEADERS, "X-Optiturn-Api-Version": version, **AUTH},
    ) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_every_exchange_order_sample_is_accepted_and_answered(daemon, session) -> None:  # type: ignore[no-untyped-def]
    for step in steps("Exchange Order"):
        status, body, _ = await post_exchange(session, daemon, step)
        assert status == 200, (step["scenario"], body)
        if step["response"]:
            assert body == step["response"], step["scenario"]


async def test_exchange_orders_are_idempotent_on_original_order_id(daemon, session) -> None:  # type: ignore[no-untyped-def]
    sink = daemon.runtime.shared(SINK, _absent)
    sink.delay = 0.05
    step = next(s for s in steps("Exchange Order") if s["response"])
    answers = await asyncio.gather(*(post_exchange(session, daemon, step) for _ in range(20)))
    assert {status for status, _, _ in answers} == {200}
    assert all(body == step["response"] for _, body, _ in answers)
    assert sink.calls == 1
    again = await post_exchange(session, daemon, step)
    assert again[1] == step["response"]
    assert sink.calls == 1

    changed = json.loads(json.dumps(step["request"]))
    changed["items"][0]["quantity"] += 1
    changed["items"][0]["product_amount_cents"] = (
        changed["items"][0]["unit_price_amount_cents"] * changed["items"][0]["quantity"]
    )
    status, body, _ = await post_exchange(session, daemon, step, changed)
    assert status == 200  # idempotent on original_order_id: the order placed, no 409
    assert body == step["response"]
    assert sink.calls == 1
    [flag] = await daemon.runtime.store.list_flags()
    assert (flag.entity_kind, flag.entity_key) == ("exchange_order", changed["original_order_id"])
    assert "another exchange order body" in flag.reason


async def test_unavailable_order_system_is_503_and_nothing_half_created(daemon, session) -> None:  # type: ignore[no-untyped-def]
    sink = daemon.runtime.shared(SINK, _absent)
    step = next(s for s in steps("Exchange Order") if s["response"])
    sink.fail = True
    status, body, headers = await post_exchange(session, daemon, step)
    assert status == 503
    assert headers["Retry-After"] == "7"
    assert sink.created == {}
    sink.fail = False
    status, body, _ = await post_exchange(session, daemon, step)
    assert status == 200
    assert body == step["response"]
    assert len(sink.created) == 1


async def test_invalid_exchange_order_is_quarantined_with_the_field(daemon, session) -> None:  # type: ignore[no-untyped-def]
    step = steps("Exchange Order")[0]
    broken = json.loads(json.dumps(step["request"]))
    del broken["original_order_id"]
    status, body, _ = await post_exchange(session, daemon, step, broken)
    assert status == 422
    assert body["error"]["field"] == "original_order_id"
    status, body, _ = await post_exchange(session, daemon, step, version="9")
    assert status == 400
    assert body["error"]["field"] == "X-Optiturn-Api-Version"
    assert (await daemon.runtime.store.inbox_stats()).quarantined == 2
