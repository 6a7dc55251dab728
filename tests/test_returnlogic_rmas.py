"""ReturnLogic RMAs through the real daemon over loopback, with the ReturnLogic and Kibo
sandboxes: webhooks as hints (reordered, duplicated, dropped), reconciliation, the
subscription supervisor, and Flag RMA for dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from adapters.kibo.sandbox import KiboSandbox
from adapters.kibo.sandbox import running_sandbox as running_kibo
from adapters.returnlogic.rmas import (
    FETCH_KIND,
    RESOURCE_ACTIONS,
    RlRmas,
    endpoint_base,
    endpoint_with_secret,
    parse_webhook,
    rmas_key,
)
from adapters.returnlogic.sandbox import DEFAULT_TEAM, ReturnLogicSandbox
from adapters.returnlogic.sandbox import running_sandbox as running_rl
from bridge.app import Runtime, build_app, build_runtime
from bridge.config import load_config
from bridge.domain import Rma, RmaStatus
from bridge.engine import EngineSettings
from bridge.errors import MappingError
from bridge.flows import ReturnsFlows, RmaFlow, RmaOutcome, is_closed, rma_version
from bridge.ports import CATALOG, EXCHANGE_ORDER_SINK, RMA_LIFECYCLE
from bridge.store import EffectState, InboxStatus
from mappings.returnlogic import rma_to_canonical

RETAILER = "acme"
RL_KEY = "rl-private-app-key"
HOOK_SECRET = "hook-secret-789"
KIBO_TOKEN = "kibo-token-123"
ENV = {"RL_KEY": RL_KEY, "RL_HOOK": HOOK_SECRET, "KIBO_TOKEN": KIBO_TOKEN, "KIBO_NOTIFY": "n"}
FAST = {"rate_limit_second": 50, "rate_limit_minute": 3000}
"""These tests are not about rate: the sandbox and the config allow far more than 2/s."""
REACHES_RETURN = ("InTransit", "Delivered", "Received", "Processed", "Complete")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config_text(
    tmp: Path, port: int, rl: ReturnLogicSandbox, kibo: KiboSandbox, rl_settings: str = ""
) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = {port}
[store]
url = "sqlite:///{tmp / "bridge.db"}"
[retailers.{RETAILER}]
name = "Acme"
[retailers.{RETAILER}.returnlogic]
base_url = "{rl.url}"
team_id = "{DEFAULT_TEAM}"
static_token = "${{RL_KEY}}"
timeout = 5.0
requests_per_second = 50
requests_per_minute = 3000
{rl_settings}
[retailers.{RETAILER}.returnlogic.orders]
enabled = false
[retailers.{RETAILER}.returnlogic.rmas]
enabled = true
webhook_url = "http://127.0.0.1:{port}/retailers/{RETAILER}/returnlogic/webhooks"
webhook_secret = "${{RL_HOOK}}"
flag_dead_letters = true
flag_path = "/v1/rmas/{{id}}/flag"
[retailers.{RETAILER}.kibo]
base_url = "{kibo.url}"
token = "${{KIBO_TOKEN}}"
timeout = 5.0
line_ids = "numeric"
exchange_lines_numeric = true
unknown_outcome_wait = 5.0
[retailers.{RETAILER}.kibo.notifications]
kind = "api_key"
header = "X-Kibo-Secret"
key = "${{KIBO_NOTIFY}}"
"""


class CountingRmaFlow(RmaFlow):
    """The retailer's RMA flow, recording the version of every RMA it applied."""

    def __init__(self, inner: RmaFlow) -> None:
        self.__dict__.update(inner.__dict__)
        self.calls: dict[str, list[tuple[Any, ...]]] = defaultdict(list)

    async def apply(self, tx: Any, rma_key: str, rma: Rma, *args: Any) -> RmaOutcome:
        outcome = await super().apply(tx, rma_key, rma, *args)
        if outcome.applied:
            self.calls[rma.id].append(rma_version(rma))
        return outcome


@dataclass
class World:
    rl: ReturnLogicSandbox
    kibo: KiboSandbox
    tmp: Path
    port: int
    runtime: Runtime | None = None
    lifecycle: CountingRmaFlow | None = None
    extra_config: str = ""
    """TOML appended to the daemon's configuration."""
    rl_settings: str = ""
    """TOML keys added to the ``[retailers.<id>.returnlogic]`` table."""

    @property
    def rmas(self) -> RlRmas:
        assert self.runtime is not None
        source = self.runtime.find_shared(rmas_key(RETAILER))
        assert source is not None
        return source

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextlib.asynccontextmanager
    async def daemon(self) -> AsyncIterator[Runtime]:
        """The daemon on the world's port and store file (start it again: a restart)."""
        path = self.tmp / "bridge.toml"
        config = config_text(self.tmp, self.port, self.rl, self.kibo, self.rl_settings)
        path.write_text(config + self.extra_config)
        runtime = build_runtime(
            load_config(path, env=ENV), engine_settings=EngineSettings(idle_poll=0.02)
        )
        flows: ReturnsFlows = runtime.service(RETAILER, RMA_LIFECYCLE)
        self.lifecycle = flows.rmas = CountingRmaFlow(flows.rmas)
        flows.return_events.rmas = self.lifecycle
        runner = web.AppRunner(build_app(runtime), handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        self.runtime = runtime
        try:
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            yield runtime
            assert not runtime.fatal.is_set(), runtime.fatal_reason
        finally:
            await runner.cleanup()

    async def settle(self, within: float = 20.0) -> None:
        """Webhooks delivered, then the daemon's inbox and outbox empty."""
        async with asyncio.timeout(within):
            await self.rl.drain()
        assert self.runtime is not None
        store = self.runtime.store
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            stats = await store.inbox_stats()
            pending = await store.list_effects(EffectState.PENDING, limit=1)
            if stats.pending == 0 and not pending:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("daemon did not settle")

    async def stored(self, rma_id: int | str) -> Rma | None:
        assert self.runtime is not None
        async with self.runtime.store.transaction() as tx:
            entity = await tx.get_entity("rma", f"{RETAILER}:returnlogic:{rma_id}")
        return Rma.model_validate(entity.data) if entity else None

    def ours(self) -> list[Any]:
        base = endpoint_base(f"{self.url}/retailers/{RETAILER}/returnlogic/webhooks")
        return [r for r in self.rl.registrations.values() if endpoint_base(r.endpoint) == base]

    async def assert_all_applied(self) -> None:
        """Every sandbox RMA is stored in its latest state (0 missed); once refunded or
        canceled an RMA is closed, as the lifecycle wants."""
        for rma_id, record in self.rl.rmas.items():
            stored = await self.stored(rma_id)
            assert stored is not None, f"RMA {rma_id} ({record['workflowStatus']}) missed"
            latest = rma_to_canonical(_decimal(record))
            assert stored.status is latest.status, rma_id
            if not is_closed(stored):  # a closed RMA takes no later message (Complete)
                assert stored.raw_status == record["workflowStatus"], rma_id
                assert rma_version(stored) == rma_version(latest), rma_id

    def returns_of(self, record: dict[str, Any]) -> int:
        return len(self.kibo.find_returns(record["externalOrderNumber"]))


def _decimal(record: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(json.dumps(record), parse_float=Decimal)
    return parsed


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with running_rl(**FAST) as rl, running_kibo(token=KIBO_TOKEN) as kibo:
        rl.issue_api_key(DEFAULT_TEAM, RL_KEY)
        rl.generate(orders=60, products=12, rmas=0, seed=11)
        yield World(rl, kibo, tmp_path, free_port())


def shipped_orders(rl: ReturnLogicSandbox) -> list[str]:
    return [
        o["orderNumber"]
        for o in rl.orders.values()
        if o["fulfillmentStatus"] == "fulfilled" and not o["refundAmount"]
    ]


async def wait_for(check: Callable[[], bool], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


# --- pure pieces -----------------------------------------------------------------------------


def test_webhook_bodies_and_endpoints() -> None:
    event = parse_webhook(
        b'{"eventId": "e1", "resourceAction": "rma.updated", "rlRmaId": 7,'
        b' "createDate": "2024-10-02T17:56:38.921Z", "data": {}}'
    )
    assert (event.event_id, event.action, event.rma_id) == ("e1", "rma.updated", "7")
    for body, field in (
        (b"[]", "body"),
        (b'{"eventId": "e", "resourceAction": "order.created", "rlRmaId": 1}', "resourceAction"),
        (b'{"eventId": "e", "resourceAction": "rma.deleted", "rlRmaId": "x"}', "rlRmaId"),
        (b'{"resourceAction": "rma.deleted", "rlRmaId": 3}', "eventId"),
    ):
        with pytest.raises(MappingError) as info:
            parse_webhook(body)
        assert info.value.field == field
    url = "https://bridge.example.com/retailers/acme/returnlogic/webhooks"
    registered = endpoint_with_secret(url, "s3cret&=")
    assert "s3cret" not in endpoint_base(registered)
    assert endpoint_base(registered) == endpoint_base(url)
    assert endpoint_base(endpoint_with_secret(url, "other")) == endpoint_base(registered)
    assert endpoint_base(url.replace("acme", "zeta")) != endpoint_base(url)


# --- the daemon ------------------------------------------------------------------------------


async def test_webhook_needs_the_key_and_keeps_what_it_refuses(world: World) -> None:
    async with world.daemon() as runtime, aiohttp.ClientSession() as http:
        assert runtime.has_service(RETAILER, CATALOG)
        assert runtime.has_service(RETAILER, EXCHANGE_ORDER_SINK)
        hook = f"{world.url}/retailers/{RETAILER}/returnlogic/webhooks"
        body = b'{"eventId": "e", "resourceAction": "rma.updated", "rlRmaId": 1}'
        for query in ("", "?key=wrong"):
            async with http.post(hook + query, data=body) as resp:
                assert resp.status == 401
        assert (await runtime.store.inbox_stats()).pending == 0
        async with http.post(f"{hook}?key={HOOK_SECRET}", data=b'{"rlRmaId": 1}') as resp:
            answer = await resp.json()
            assert resp.status == 200  # a non-2xx counts towards deactivation
            assert answer["error"]["field"] == "resourceAction"
            assert answer["error"]["quarantined"] is True
        assert (await runtime.store.inbox_stats()).quarantined == 1


async def test_unreliable_webhooks_end_with_every_rma_applied_once(world: World) -> None:
    rl = world.rl
    rl.configure(drop_rate=0.25, duplicate_rate=0.35, delivery_jitter=0.25, seed=7)
    plans = [
        ("Authorized", "Canceled"),
        ("Authorized", "InTransit"),
        ("Authorized", "InTransit", "Delivered", "Received"),
        ("Authorized", "InTransit", "Received", "Processed", "Complete"),
    ]
    async with world.daemon():
        await world.rmas.supervise()
        assert len(world.ours()) == 3
        numbers = shipped_orders(rl)[:13]
        created = [rl.create_rma(number)["rlRmaId"] for number in numbers]
        for step in range(5):
            for index, rma_id in enumerate(created[:12]):
                plan = plans[index % len(plans)]
                if step < len(plan):
                    rl.advance_rma(rma_id, plan[step])
            await asyncio.sleep(0.03)
        doomed = created[12]
        rl.advance_rma(doomed, "Authorized")
        await asyncio.sleep(0.4)
        rl.delete_rma(doomed)
        await world.settle()
        report = await world.rmas.reconcile()  # what the dropped webhooks did not tell
        await world.settle()

        outcomes = [d.outcome for d in rl.deliveries]
        assert outcomes.count("dropped") >= 3
        assert sum(d.copy for d in rl.deliveries) >= 3  # duplicated deliveries
        assert report.listed >= 12
        await world.assert_all_applied()
        gone = await world.stored(doomed)
        assert gone is None or (gone.status is RmaStatus.CANCELED and gone.raw_status == "Deleted")
        for rma_id, record in rl.rmas.items():
            expected = 1 if record["workflowStatus"] in REACHES_RETURN else 0
            assert world.returns_of(record) == expected, (rma_id, record["workflowStatus"])
        assert world.returns_of({"externalOrderNumber": numbers[12]}) == 0
        assert world.lifecycle is not None
        for rma_id, versions in world.lifecycle.calls.items():
            assert versions == sorted(set(versions)), f"RMA {rma_id} applied twice or stale"
        runtime = world.runtime
        assert runtime is not None
        fetched = [
            e
            for e in await runtime.store.list_effects(EffectState.DELIVERED)
            if e.kind == FETCH_KIND
        ]
        assert fetched  # the RMAs were read by the outbox, outside the inbox transaction
        assert not await runtime.store.list_effects(EffectState.DEAD)
        hooks = await runtime.store.list_inbox(InboxStatus.DONE, 1000)
        assert {i.entity for i in hooks} <= {
            f"rma:{RETAILER}:returnlogic:{rma_id}" for rma_id in created
        }  # one RMA's webhooks are handled one at a time
        assert hooks


async def test_supervisor_restores_a_deactivated_registration_and_reconciles_the_gap(
    world: World,
) -> None:
    rl = world.rl
    async with world.daemon():
        first = await world.rmas.supervise()
        assert len(world.ours()) == 3
        assert all(r.active for r in world.ours())
        assert not first.restored or first.reconciled is not None
        numbers = shipped_orders(rl)
        before = [rl.create_rma(n, status="InTransit")["rlRmaId"] for n in numbers[:3]]
        await world.settle()
        await world.assert_all_applied()

        for registration in rl.registrations.values():
            registration.active = False  # ReturnLogic deactivated them (too many failures)
        reconciles, sent = world.rmas.reconciles, len(rl.deliveries)
        during = [rl.create_rma(n, status="InTransit")["rlRmaId"] for n in numbers[3:6]]
        rl.advance_rma(before[0], "Received")
        closed = rl.create_rma(numbers[6], status="InTransit")["rlRmaId"]
        rl.advance_rma(closed, "Complete")
        await world.settle()
        assert [await world.stored(i) for i in (*during, closed)] == [None] * 4
        assert not [d for d in rl.deliveries[sent:] if d.outcome == "delivered"]

        report = await world.rmas.supervise()
        assert sorted(report.reactivated) == sorted(RESOURCE_ACTIONS)
        assert report.created == []
        assert report.reconciled is not None
        assert world.rmas.reconciles == reconciles + 1
        ours = world.ours()
        assert len(ours) == 3
        assert all(r.active for r in ours)
        await world.settle()
        await world.assert_all_applied()  # 0 RMAs missed
        for record in rl.rmas.values():
            assert world.returns_of(record) == 1

        again = await world.rmas.supervise()
        assert not again.restored
        assert again.reconciled is None
        stale = next(r for r in world.ours() if r.resource_action == "rma.updated")
        stale.endpoint = endpoint_with_secret(stale.endpoint, "an-old-secret")  # rotated
        rotated = await world.rmas.supervise()
        assert rotated.updated == ["rma.updated"]
        assert rotated.created == []
        assert len(world.ours()) == 3
        assert HOOK_SECRET in stale.endpoint
        late = rl.create_rma(numbers[7], status="InTransit")["rlRmaId"]
        await world.settle()
        assert (await world.stored(late)) is not None  # webhooks flow again


async def test_outage_deactivates_registrations_and_the_restart_catches_up(
    world: World,
) -> None:
    rl = world.rl
    rl.configure(max_failures=2, delivery_retries=1, retry_delay=0.01)
    numbers = shipped_orders(rl)
    async with world.daemon():
        await wait_for(lambda: len(world.ours()) == 3)
        await world.rmas.supervise()
        first = rl.create_rma(numbers[0], status="Authorized")["rlRmaId"]
        doomed = rl.create_rma(numbers[4], status="Authorized")["rlRmaId"]
        await world.settle()
        assert (await world.stored(first)) is not None
    # the bridge is down: deliveries fail, ReturnLogic deactivates the registrations
    rl.advance_rma(first, "InTransit")
    missed = [rl.create_rma(n, status="InTransit")["rlRmaId"] for n in numbers[1:4]]
    rl.delete_rma(doomed)
    async with asyncio.timeout(10):
        await rl.drain()
    assert not any(r.active for r in world.ours())
    async with world.daemon():
        await wait_for(lambda: world.rmas.reconciles >= 2)  # startup: supervisor, reconcile
        assert world.rmas.last_supervision is not None
        assert sorted(world.rmas.last_supervision.reactivated) == sorted(RESOURCE_ACTIONS)
        ours = world.ours()
        assert len(ours) == 3
        assert all(r.active for r in ours)
        await world.settle()
        await world.assert_all_applied()
        for rma_id in (first, *missed):
            assert world.returns_of(rl.rmas[rma_id]) == 1
        gone = await world.stored(doomed)  # its deletion was checked: 404
        assert gone is not None
        assert gone.status is RmaStatus.CANCELED
        assert gone.raw_status == "Deleted"
        supervision = world.rmas.last_supervision
        assert supervision.reconciled is not None
        assert supervision.reconciled.gone == 1


async def test_a_dead_lettered_return_flags_the_rma_in_returnlogic_once(world: World) -> None:
    rl, kibo = world.rl, world.kibo
    kibo.configure(reject_next=1)
    async with world.daemon() as runtime:
        await world.rmas.supervise()
        rma_id = rl.create_rma(shipped_orders(rl)[0], status="InTransit")["rlRmaId"]
        await world.settle()
        dead = await runtime.store.list_effects(EffectState.DEAD)
        assert len(dead) == 1
        assert dead[0].payload["rma_key"].endswith(f":returnlogic:{rma_id}")
        assert not rl.rmas[rma_id].get("flagged")

        assert await world.rmas.flag_dead_letters() == 1
        assert rl.rmas[rma_id]["flagged"] is True
        flags = [r for r in rl.requests if r.path == f"/v1/rmas/{rma_id}/flag"]
        assert [r.method for r in flags] == ["POST"]
        assert await world.rmas.flag_dead_letters() == 0  # once per RMA
        assert len([r for r in rl.requests if r.path.endswith("/flag")]) == 1
        await world.settle()  # the flag's own rma.updated webhook changes nothing
        assert (await world.stored(rma_id)) is not None
