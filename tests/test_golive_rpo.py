"""Go-live, Returns Portal Orders: nothing sent to Optoro is lost, doubled or held back.

Every test runs the daemon's production path (the order flow, the Optoro publisher, the
engine's outbox on a real SQLite file) against the Optoro sandbox over loopback, and, for the
refresh on RMA arrival, the ReturnLogic sandbox as the order source.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.optoro.client import ISOLATE_AFTER, RPO_KIND, SNAPSHOT
from adapters.optoro.config import OptoroConfig
from adapters.optoro.sandbox import load_scenarios, running_sandbox
from adapters.returnlogic.orders import REFRESH_KIND, sync_for
from adapters.returnlogic.rmas import RlRmas, rmas_key
from adapters.returnlogic.sandbox import running_sandbox as running_rl
from bridge.domain import Order, OrderStatus
from bridge.errors import EffectKeyTaken
from bridge.flows import OrderFlow
from bridge.ports import RMA_LIFECYCLE
from bridge.store import EffectState, NewEffect, Store
from bridge.store.memory import MemoryStore
from bridge.store.sqlite import SqliteStore
from mappings.optoro import parse_rpo_request
from tests.daemon_process import until
from tests.harness import (
    OPTITURN_ID,
    OPTORO_CLIENT_ID,
    OPTORO_SECRET,
    RETAILER,
    WEBHOOK_PASSWORD,
    WEBHOOK_USER,
    Daemon,
    optoro_table,
    running_daemon,
)
from tests.test_limits_recovery import retry_table
from tests.test_optoro_rpo import guide_orders
from tests.test_returnlogic_orders import new_order, rl_table, world

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures"
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def orders_of(daemon: Daemon) -> OrderFlow:
    flow: OrderFlow = daemon.runtime.service(RETAILER, RMA_LIFECYCLE).orders
    return flow


def version(order: Order, number: int, at: int | None = None) -> Order:
    """``order`` at content version ``number`` (its tags name it), stamped ``at`` seconds
    after T0, or with one stamp for every version when ``at`` is None (a source whose update
    time does not move, or moves within its resolution: A -> B -> A is then the very same
    wire content as the first A)."""
    stamp = T0 if at is None else T0 + timedelta(seconds=at)
    return order.model_copy(update={"tags": (f"version-{number}",), "updated_at": stamp})


def sandbox_tags(sandbox: Any, order_id: str) -> list[list[str]]:
    return [v["tags"] for v in sandbox.orders.get(order_id, [])]


# --- (1) silent loss: snapshots keyed by order and sequence ---------------------------------


async def test_an_order_back_at_an_earlier_version_reaches_optoro_as_it_is_now(
    tmp_path: Path,
) -> None:
    """v1 -> v2 -> v1 (one update stamp): three snapshots queued and sent, Optoro ends with
    v1 (the content-hash key made the third effect a duplicate of the first: dropped, while
    the snapshot entity said v1 was sent, and Optoro kept v2)."""
    order = guide_orders()[0]
    async with (
        running_sandbox(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as sandbox,
        running_daemon(tmp_path, optoro_table(sandbox.url, batch_size="1")) as daemon,
    ):
        for number in (1, 2, 1):
            assert (await orders_of(daemon).publish([version(order, number)])).queued == 1
            await daemon.settle()
        assert sandbox_tags(sandbox, order.id) == [["version-1"], ["version-2"], ["version-1"]]
        async with daemon.runtime.store.transaction() as tx:
            snapshot = await tx.get_entity(SNAPSHOT, f"{RETAILER}:{order.id}")
        assert snapshot is not None
        assert snapshot.data["seq"] == 3
        keys = [e.idempotency_key for e in await daemon.runtime.store.list_effects()]
        assert keys == [f"optoro.rpo:{RETAILER}:{order.id}@{n}" for n in (1, 2, 3)]


async def _play_versions(sequences: list[list[int]], batch_size: int, advance: bool) -> None:
    """Each publish carries the next version of every order whose sequence has one left
    (several orders per publish, so batches mix them); then Optoro must hold the last one
    of each, and every effect is delivered."""
    orders = guide_orders()[: len(sequences)]
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            running_sandbox(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as sandbox,
            running_daemon(Path(tmp), optoro_table(sandbox.url, batch_size=str(batch_size))) as d,
        ):
            for step in range(max(len(s) for s in sequences)):
                batch = [
                    version(order, seq[step], step if advance else None)
                    for order, seq in zip(orders, sequences, strict=True)
                    if step < len(seq)
                ]
                await orders_of(d).publish(batch)
            await d.settle(within=30)
            for order, seq in zip(orders, sequences, strict=True):
                assert sandbox.latest(order.id)["tags"] == [f"version-{seq[-1]}"], seq
            assert await d.runtime.store.list_effects(EffectState.DEAD) == []


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    sequences=st.lists(
        st.lists(st.integers(min_value=0, max_value=2), min_size=1, max_size=6),
        min_size=1,
        max_size=3,
    ),
    batch_size=st.sampled_from([1, 2, 25]),
    advance=st.booleans(),
)
def test_any_sequence_of_versions_reaches_optoro_as_the_latest(
    sequences: list[list[int]], batch_size: int, advance: bool
) -> None:
    """Property: an order's snapshots in any sequence of versions (repeats and A -> B -> A
    included), published one after the other beside other orders, reach the Optoro sandbox
    as the latest one, whether the source's update stamp moves or not."""
    asyncio.run(_play_versions(sequences, batch_size, advance))


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_a_must_queue_effect_whose_key_exists_fails_its_transaction(
    tmp_path: Path, kind: str
) -> None:
    """``add_effect`` answers False for a duplicate; for a ``must_queue`` effect (every RPO
    snapshot) it raises instead, and nothing of the transaction is written: a change is
    never dropped silently, on either store."""
    store: Store = SqliteStore(tmp_path / "s.db") if kind == "sqlite" else MemoryStore()
    await store.open()
    try:
        effect = NewEffect("k1", "optoro.rpo:acme", RPO_KIND, {"orders": []}, must_queue=True)
        async with store.transaction() as tx:
            assert await tx.add_effect(effect)
            assert not await tx.add_effect(NewEffect("k1", "optoro.rpo:acme", RPO_KIND, {}))

        async def write_then_queue_again() -> None:
            async with store.transaction() as tx:
                await tx.put_entity("probe", "x", (1,), {"written": True})
                await tx.add_effect(effect)

        with pytest.raises(EffectKeyTaken, match="k1"):
            await write_then_queue_again()
        async with store.transaction() as tx:
            assert await tx.get_entity("probe", "x") is None
        assert len(await store.list_effects()) == 1
    finally:
        await store.close()


# --- (2) one order's failure does not hold back its batch or its lane -----------------------


async def test_an_order_optoro_refuses_with_422_leaves_its_batch_and_is_replayable(
    tmp_path: Path,
) -> None:
    """A 422 for one order of a batch: the batch is sent order by order at once, the other
    orders are delivered, only the refused order is a dead letter (naming it), and after the
    fix its replay delivers it (before: the whole batch was dead-lettered)."""
    orders = guide_orders()
    poison = orders[0].id
    async with (
        running_sandbox(
            client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET, reject_orders=[poison]
        ) as sandbox,
        running_daemon(tmp_path, optoro_table(sandbox.url, batch_size="4")) as daemon,
    ):
        store = daemon.runtime.store
        await orders_of(daemon).publish(orders)
        await daemon.settle()
        assert set(sandbox.orders) == {o.id for o in orders} - {poison}
        [dead] = await store.list_effects(EffectState.DEAD)
        assert [o["identifier"] for o in dead.payload["orders"]] == [poison]
        assert dead.order_key == f"optoro.rpo:{RETAILER}:order:{poison}"
        assert "422" in (dead.dead_reason or "")
        sandbox.reject_orders = []
        await daemon.runtime.engine.replay(dead.id)
        await daemon.settle()
        assert sandbox.latest(poison) is not None
        # the order keeps its own lane: its next snapshot follows the replayed one there
        changed = orders[0].model_copy(update={"tags": ("cs_required",)})
        assert (await orders_of(daemon).publish([changed])).queued == 1
        await daemon.settle()
        assert sandbox.latest(poison)["tags"] == ["cs-required"]
        mine = await store.list_effects(order_key=f"optoro.rpo:{RETAILER}:order:{poison}")
        assert [e.state for e in mine] == [EffectState.DELIVERED, EffectState.DELIVERED]


async def test_an_order_optoro_hangs_on_does_not_hold_back_its_batch(tmp_path: Path) -> None:
    """Optoro never answers in time for one order's payload (a timeout, no status): after
    ``ISOLATE_AFTER`` attempts the batch is sent order by order, the other orders are
    delivered and the hung order is retried alone in a lane of its own (before: a timeout
    never split the batch, which held its lane until the 72 h deadline)."""
    orders = guide_orders()
    poison = orders[0].id
    async with running_sandbox(
        client_id=OPTORO_CLIENT_ID,
        client_secret=OPTORO_SECRET,
        stall_orders=[poison],
        stall_seconds=1.5,
    ) as sandbox:
        table = optoro_table(sandbox.url).replace("timeout = 5.0", "timeout = 0.5")
        config = table + retry_table(0.05, 0.2)
        async with running_daemon(tmp_path, config) as daemon:
            store = daemon.runtime.store
            await orders_of(daemon).publish(orders)
            own_lane = f"optoro.rpo:{RETAILER}:order:{poison}"

            async def the_rest_delivered() -> bool:
                effects = [e for e in await store.list_effects() if e.kind == RPO_KIND]
                return any(e.order_key == own_lane for e in effects) and all(
                    e.state is EffectState.DELIVERED for e in effects if e.order_key != own_lane
                )

            await until(the_rest_delivered, 30, "every batch delivered but the hung order")
            alone = await store.list_effects(order_key=own_lane)
            dead = await store.list_effects(EffectState.DEAD)
        assert poison not in sandbox.orders
        assert [[o["identifier"] for o in e.payload["orders"]] for e in alone] == [[poison]]
        assert alone[0].state is EffectState.PENDING
        assert set(sandbox.orders) == {o.id for o in orders} - {poison}
        assert dead == []
        carrying = [
            r
            for r in sandbox.rpo_requests()
            if poison in {o["identifier"] for o in r.body["returns_portal_order"]["orders"]}
        ]
        assert len(carrying) >= ISOLATE_AFTER + 1  # the batch's tries, then the order alone


# --- (3) the token server apart from the orders API -----------------------------------------


def test_the_token_server_defaults_to_optoros_auth_host() -> None:
    def config(**urls: str) -> OptoroConfig:
        return OptoroConfig.model_validate(
            {
                **urls,
                "client_id": "c",
                "client_secret": "s",
                "optiturn_id": "o",
                "inbound_auth": {"kind": "basic", "username": "u", "password": "p"},
            }
        )

    assert config(base_url="https://orders.optiturn.com").token_base() == (
        "https://auth.optiturn.com"
    )
    assert config(base_url="https://orders.example.optiturn.com:8443/").token_base() == (
        "https://auth.example.optiturn.com:8443"
    )
    assert config(base_url="http://127.0.0.1:8089").token_base() == "http://127.0.0.1:8089"
    assert (
        config(base_url="https://orders.optiturn.com", auth_url="https://sso.test/").token_base()
        == "https://sso.test"
    )


async def test_the_daemon_gets_tokens_from_auth_url_and_sends_orders_to_base_url(
    tmp_path: Path,
) -> None:
    """The sandbox serves the token endpoint and the orders API on two ports (each answers
    404 for the other's path); with ``auth_url`` set, every order reaches Optoro."""
    orders = guide_orders()[:5]
    async with running_sandbox(
        client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET, separate_auth=True
    ) as sandbox:
        assert sandbox.auth_url != sandbox.url
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{sandbox.url}/oauth/token", json={}) as resp:
                assert resp.status == 404
            async with session.post(f"{sandbox.auth_url}/returns_portal_orders", json={}) as resp:
                assert resp.status == 404
        tables = optoro_table(sandbox.url, auth_url=f'"{sandbox.auth_url}"', batch_size="2")
        async with running_daemon(tmp_path, tables) as daemon:
            await orders_of(daemon).publish(orders)
            await daemon.settle()
            dead = await daemon.runtime.store.list_effects(EffectState.DEAD)
        assert dead == []
        assert set(sandbox.orders) == {o.id for o in orders}
        assert sandbox.tokens_issued == 1


# --- (4) an order canceled before anything shipped reaches Optoro ---------------------------


def guide_canceled_order() -> Order:
    """Scenario 07 step 1: "Order is fully canceled ... status as canceled, the
    quantity_shipped as 0, and the quantity_cancelled as 4"."""
    [scenario] = [s for s in load_scenarios() if s.number == 7]
    [order] = parse_rpo_request(scenario.steps[0].request)
    return order


async def test_an_order_with_nothing_shipped_reaches_optoro(tmp_path: Path) -> None:
    """The guide's full cancellation, first as an order source may still call it (status
    created, nothing shipped), then canceled: both snapshots reach Optoro (before: the
    first was held back until something shipped, which for a canceled order is never)."""
    canceled = guide_canceled_order()
    assert canceled.status is OrderStatus.CANCELED
    assert not any(line.qty_shipped for line in canceled.lines)
    created = canceled.model_copy(
        update={"status": OrderStatus.CREATED, "updated_at": canceled.updated_at - timedelta(1)}
    )
    async with (
        running_sandbox(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as sandbox,
        running_daemon(tmp_path, optoro_table(sandbox.url)) as daemon,
    ):
        assert (await orders_of(daemon).publish([created])).queued == 1
        await daemon.settle()
        assert (await orders_of(daemon).publish([canceled])).queued == 1
        await daemon.settle()
    versions = sandbox.orders[canceled.id]
    assert [v["status"] for v in versions] == ["Created", "Canceled"]
    assert [line["quantity_canceled"] for line in versions[-1]["items"]] == [4]
    assert [line["quantity_shipped"] for line in versions[-1]["items"]] == [0]


# --- (5) an order older than the re-scan window is refreshed when one of its RMAs arrives ---


def optoro_rma(order_number: str, line_id: str) -> dict[str, Any]:
    """The guide's "RMA Created" (scenario 01 step 2) for one unit of ``order_number``."""
    path = FIXTURES / "optoro-scenarios/01-single-line-full-refund-mailback/02-rma-rma-created.json"
    body: dict[str, Any] = json.loads(path.read_text())["request"]
    body["rma_identifier"] = f"RMA-{order_number}"
    body["items"] = body["items"][:1]
    for item in body["items"]:
        item["order_identifier"] = order_number
        item["order_line_item_identifier"] = line_id
    return body


async def test_an_rma_refreshes_an_order_older_than_the_rescan_window(tmp_path: Path) -> None:
    """An order created 40 days ago (re-scan: 30 days) changes in ReturnLogic; the re-scan
    does not see it; an RMA for it arrives from Optoro: the bridge reads the order by id and
    Optoro receives the new snapshot. The same RMA message again reads nothing more."""
    schedule = {"enabled": "true", "poll_every": "3600.0", "rescan_every": "3600.0"}
    async with world(tmp_path, first_poll_days="45.0", rescan_days="30.0", **schedule) as w:
        old = new_order(w.rl, "OLD-1", datetime.now(UTC) - timedelta(days=40))
        await w.sync.poll_once()
        await w.daemon.settle()
        assert w.optoro.latest("OLD-1")["shipping_address"]["city"] == "Camp Hill"

        record = w.rl.orders[old["rlOrderId"]]
        record["shippingAddress"]["city"] = "Harrisburg"
        record["updateDate"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        assert (await w.sync.rescan_once()).records == 0  # outside the re-scan window
        await w.daemon.settle()
        assert w.optoro.latest("OLD-1")["shipping_address"]["city"] == "Camp Hill"

        headers = {
            "X-Optiturn-Id": OPTITURN_ID,
            "X-Optiturn-Api-Version": "3",
            "Authorization": aiohttp.encode_basic_auth(WEBHOOK_USER, WEBHOOK_PASSWORD),
        }
        body = json.dumps(optoro_rma("OLD-1", old["orderItems"][0]["externalOrderItemId"]))
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.post(
                    w.daemon.retailer_url("optoro", "rmas"), data=body, headers=headers
                ) as resp:
                    assert resp.status == 200, await resp.text()
                await w.daemon.settle()
        assert w.optoro.latest("OLD-1")["shipping_address"]["city"] == "Harrisburg"
        reads = [r for r in w.rl.requests if r.path == f"/v1/orders/{old['rlOrderId']}"]
        assert len(reads) == 1
        refreshes = [
            e for e in await w.daemon.runtime.store.list_effects() if e.kind == REFRESH_KIND
        ]
        assert [e.state for e in refreshes] == [EffectState.DELIVERED]


async def test_a_returnlogic_rma_refreshes_its_order_too(tmp_path: Path) -> None:
    """The same refresh from the other RMA source: an RMA ReturnLogic's reconciliation finds
    for an order older than the re-scan window reads that order again, and Optoro gets its
    change."""
    async with (
        running_rl() as rl,
        running_sandbox(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as optoro,
    ):
        rl.generate(orders=0, seed=7, anchor=datetime.now(UTC), days=2)
        old = new_order(rl, "OLD-2", datetime.now(UTC) - timedelta(days=40))
        schedule = {"enabled": "true", "poll_every": "3600.0", "rescan_every": "3600.0"}
        tables = (
            optoro_table(optoro.url)
            + rl_table(rl.url, rl.issue_api_key(), first_poll_days="45.0", **schedule)
            + f"[retailers.{RETAILER}.returnlogic.rmas]\nenabled = true\n"
        )
        async with running_daemon(tmp_path, tables) as daemon:
            await sync_for(daemon.runtime, RETAILER).poll_once()
            await daemon.settle()
            assert optoro.latest("OLD-2")["shipping_address"]["city"] == "Camp Hill"
            record = rl.orders[old["rlOrderId"]]
            record["shippingAddress"]["city"] = "Harrisburg"
            record["updateDate"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            rl.create_rma("OLD-2", status="InTransit")

            def missing() -> RlRmas:
                raise AssertionError("ReturnLogic RMAs are not wired")

            report = await daemon.runtime.shared(rmas_key(RETAILER), missing).reconcile()
            assert report.applied == 1
            await daemon.settle()
        assert optoro.latest("OLD-2")["shipping_address"]["city"] == "Harrisburg"


async def test_a_replayed_dead_letter_never_overwrites_a_newer_snapshot(tmp_path: Path) -> None:
    """An order's snapshot is dead-lettered (422); after the fix a newer snapshot of it is
    sent; the operator then replays the old dead letter: it is delivered without a request,
    and Optoro keeps the newer version."""
    order = guide_orders()[0]
    async with (
        running_sandbox(
            client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET, reject_orders=[order.id]
        ) as sandbox,
        running_daemon(tmp_path, optoro_table(sandbox.url, batch_size="1")) as daemon,
    ):
        store = daemon.runtime.store
        await orders_of(daemon).publish([version(order, 1)])
        await daemon.settle()
        [dead] = await store.list_effects(EffectState.DEAD)
        sandbox.reject_orders = []
        await orders_of(daemon).publish([version(order, 2)])
        await daemon.settle()
        assert sandbox_tags(sandbox, order.id) == [["version-2"]]
        sent = len(sandbox.rpo_requests())
        await daemon.runtime.engine.replay(dead.id)
        await daemon.settle()
        assert sandbox_tags(sandbox, order.id) == [["version-2"]]
        assert len(sandbox.rpo_requests()) == sent
        replayed = await store.get_effect(dead.id)
        assert replayed is not None
        assert replayed.state is EffectState.DELIVERED
