"""Slow and greedy clients, back-pressure and the graceful stop, against the real daemon
process (``python -m bridge run``) on loopback, with the Kibo sandbox in this process.

* 500 sockets dripping a request head one byte a second, each from its own loopback
  address, are all answered 408 and closed by ``header_timeout`` while ``/healthz`` keeps
  answering; a dripping body is cut by ``body_timeout``; a peer over
  ``max_connections_per_peer`` is answered 503 and closed, other peers are not.
* Above ``max_inbox_backlog`` the RMA webhook answers 503 with ``Retry-After`` and stores
  nothing; the senders retry, and every RMA accepted becomes exactly one Kibo return.
* SIGTERM with one Kibo create on the wire (slow sandbox) and one waiting in the rate
  governor (paused by a 429): the first finishes within the grace period, the second is
  released as never sent (not outcome-unknown), the daemon exits 0, and the next start
  sends it at once. SIGHUP stops the same way. A delivery longer than the grace period is
  cancelled and keeps its unknown outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from adapters.kibo.sandbox import KiboSandbox
from adapters.kibo.sandbox import running_sandbox as running_kibo
from bridge.listener import BACKLOG_RECHECK, BACKLOG_REFRESH, InboxBacklog
from bridge.store import InboxStatus, NewEffect, Store
from bridge.store.base import SENT_WITHOUT_ANSWER
from bridge.store.memory import MemoryStore
from bridge.store.sqlite import SqliteStore
from tests.daemon_process import spawn_daemon

REPO = Path(__file__).resolve().parent.parent
KIBO_TOKEN = "limits-kibo-token"
WEBHOOK_USER = "optoro"
WEBHOOK_PASSWORD = "limits-hook-password"
OPTITURN_ID = "limits-optiturn"
ENV = {
    "LIMITS_OPTORO_SECRET": "limits-optoro-secret",
    "LIMITS_WEBHOOK_PASSWORD": WEBHOOK_PASSWORD,
    "LIMITS_KIBO_TOKEN": KIBO_TOKEN,
    "LIMITS_KIBO_NOTIFY": "limits-kibo-notify",
}
AUTH = {
    "Authorization": aiohttp.encode_basic_auth(WEBHOOK_USER, WEBHOOK_PASSWORD),
    "X-Optiturn-Id": OPTITURN_ID,
}

pytestmark = pytest.mark.timeout(120)


def retailer_toml(retailer: str, kibo_url: str) -> str:
    return f"""
[retailers.{retailer}]
name = "Limits {retailer}"
[retailers.{retailer}.policy]
create_return_at = {{ mail_back = "CREATED" }}
confirm_refund = "never"
reconcile_every = 3600.0
[retailers.{retailer}.optoro]
base_url = "http://127.0.0.1:9"
client_id = "limits-bridge"
client_secret = "${{LIMITS_OPTORO_SECRET}}"
optiturn_id = "{OPTITURN_ID}"
timeout = 5.0
[retailers.{retailer}.optoro.inbound_auth]
kind = "basic"
username = "{WEBHOOK_USER}"
password = "${{LIMITS_WEBHOOK_PASSWORD}}"
[retailers.{retailer}.kibo]
base_url = "{kibo_url}"
token = "${{LIMITS_KIBO_TOKEN}}"
timeout = 20.0
line_ids = "numeric"
unknown_outcome_wait = 900.0
[retailers.{retailer}.kibo.notifications]
kind = "api_key"
header = "X-Kibo-Secret"
key = "${{LIMITS_KIBO_NOTIFY}}"
"""


def rma(rma_id: str, order_id: str) -> dict[str, Any]:
    """An RMA created for one unit of line 1 of ``order_id``, mail-back."""
    return {
        "rma_identifier": rma_id,
        "status": "CREATED",
        "created_at": "2026-01-27T23:25:09Z",
        "updated_at": "2026-01-27T23:25:09Z",
        "items": [
            {
                "order_line_item_identifier": "1",
                "order_identifier": order_id,
                "exchange_order_identifier": None,
                "original_order_identifier": None,
                "return_reason": "Changed Mind",
                "is_exchange": False,
                "sku": "sku1234",
                "tracking_number": None,
                "package_tracking_status": None,
                "receiving_status": "PENDING",
                "refund_financials": {
                    "estimated_refund_amount_cents": 1000,
                    "optoro_refund_amount_cents": 0,
                    "shopper_refund_amount_cents": 1000,
                },
                "refund_type": "REFUND",
            }
        ],
        "return_method": "mail-back",
        "return_shipping_cost_cents": 0,
        "gift_refund_only": False,
        "giftee_email": None,
    }


@dataclass
class Daemon:
    proc: asyncio.subprocess.Process
    url: str
    log: Path
    db: Path

    def logs(self) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def messages(self, message: str) -> list[dict[str, Any]]:
        return [entry for entry in self.logs() if entry.get("message") == message]

    def rmas_url(self, retailer: str) -> str:
        return f"{self.url}/retailers/{retailer}/optoro/rmas"

    async def exit_code(self, within: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), within)


@contextlib.asynccontextmanager
async def daemon(
    folder: Path, server: dict[str, Any], retailers: str, name: str = "daemon"
) -> AsyncIterator[Daemon]:
    """The real daemon process on a free loopback port; killed if the test left it up."""
    settings = "".join(f"{key} = {json.dumps(value)}\n" for key, value in server.items())
    db = folder / "bridge.db"
    config = folder / f"{name}.toml"
    config.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = 0\n{settings}'
        f'[store]\nurl = "sqlite:///{db}"\n{retailers}'
    )
    log = folder / f"{name}.log"
    proc = await spawn_daemon(config, log, ENV)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if "listening on" not in line:
            raise AssertionError(f"daemon did not start: {line!r}\n{log.read_text()[-3000:]}")
        yield Daemon(proc, line.strip().rsplit(" ", 1)[1], log, db)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def wait_for(condition: Callable[[], Awaitable[bool] | bool], within: float) -> None:
    """Poll ``condition`` until it holds; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the daemon's SQLite file (WAL: readers never block the daemon)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


async def healthz(session: aiohttp.ClientSession, url: str) -> int:
    async with session.get(f"{url}/healthz") as resp:
        return resp.status


def host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


# --- slow and greedy clients ----------------------------------------------------------------

DRIPPERS = 500
HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
PEER_CAP = 8


@dataclass
class Drip:
    """One socket sending a request head (or body) a byte a second until closed."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened: float
    closed: float | None = None
    received: bytes = b""

    async def run(self, head: bytes, drip: bytes) -> None:
        self.writer.write(head)
        reading = asyncio.create_task(self.reader.read())  # until EOF
        for byte in drip:
            if reading.done():
                break
            with contextlib.suppress(ConnectionError):
                self.writer.write(bytes([byte]))
            # the input's pace (a byte a second), not a synchronisation
            await asyncio.wait({reading}, timeout=1.0)
        with contextlib.suppress(ConnectionError):
            self.received = await reading
        self.closed = time.monotonic()
        self.writer.close()


async def open_from(host: str, port: int, source: str) -> tuple[Drip, float]:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    now = time.monotonic()
    return Drip(reader, writer, now), now


def status_of(raw: bytes) -> int | None:
    first = raw.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) >= 2 and first[1].isdigit() else None


def json_body(raw: bytes) -> Any:
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


async def test_slow_and_greedy_clients(tmp_path: Path) -> None:
    server = {
        "header_timeout": HEADER_TIMEOUT,
        "body_timeout": BODY_TIMEOUT,
        "max_connections_per_peer": PEER_CAP,
    }
    async with (
        running_kibo(token=KIBO_TOKEN) as kibo,
        daemon(tmp_path, server, retailer_toml("acme", kibo.url)) as bridge,
        aiohttp.ClientSession() as session,
    ):
        host, port = host_port(bridge.url)

        # 500 sockets, each from its own address, dripping a request head
        sources = [f"127.0.{1 + n // 250}.{1 + n % 250}" for n in range(DRIPPERS)]
        opened = await asyncio.gather(*(open_from(host, port, s) for s in sources))
        drips = [drip for drip, _ in opened]
        last_open = max(at for _, at in opened)
        head = b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nX-Drip: "
        running = [asyncio.create_task(d.run(head, b"a" * 60)) for d in drips]

        # /healthz answers while all of them hang on
        assert all(d.closed is None for d in drips)
        assert await healthz(session, bridge.url) == 200

        deadline = last_open + HEADER_TIMEOUT + 3.0
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: all(d.closed is not None for d in drips), 30)
        still_open = sum(1 for d in drips if d.closed is None or d.closed > deadline)
        assert still_open == 0
        await asyncio.gather(*running)
        lifetimes = [d.closed - d.opened for d in drips if d.closed is not None]
        answered_408 = sum(1 for d in drips if status_of(d.received) == 408)
        assert answered_408 == DRIPPERS
        assert json_body(drips[0].received)["error"]["field"] == "headers"
        assert min(lifetimes) > HEADER_TIMEOUT / 2  # cut by the deadline, not at once
        print(
            f"\n{DRIPPERS} header drips: {still_open} open after {HEADER_TIMEOUT:g} s + 3 s,"
            f" closed after {min(lifetimes):.2f}-{max(lifetimes):.2f} s, {answered_408} x 408"
        )
        assert await healthz(session, bridge.url) == 200

        # on a keep-alive connection the next request's head has the same deadline
        reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.8.1", 0))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
        assert status_of(await reader.readuntil(b'{"status": "ok"}')) == 200
        second = Drip(reader, writer, time.monotonic())
        await second.run(b"GET /healthz HTTP/1.1\r\n", b"X-Drip: " + b"a" * 30)
        assert status_of(second.received) == 408
        assert second.closed is not None
        assert second.closed - second.opened < HEADER_TIMEOUT + 3.0

        # a request the HTTP parser refuses: 400, one log line, no traceback
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"POST /healthz HTTP/1.1\r\nHost: bridge\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"ZZZ-secret-looking-bytes\r\n"
        )
        assert status_of(await asyncio.wait_for(reader.read(), 5)) == 400
        writer.close()

        # a body that drips is cut
        body = json.dumps(rma("DRIP1", "ORD-DRIP")).encode()
        auth = "".join(f"{k}: {v}\r\n" for k, v in AUTH.items())
        post_head = (
            f"POST /retailers/acme/optoro/rmas HTTP/1.1\r\nHost: bridge\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        drip, _ = await open_from(host, port, "127.0.9.1")
        await drip.run(post_head, body)
        assert drip.closed is not None
        assert status_of(drip.received) == 408
        assert json_body(drip.received)["error"]["field"] == "body"
        assert drip.closed - drip.opened < BODY_TIMEOUT + 2.0 + 3.0  # + lingering
        assert query(bridge.db, "SELECT COUNT(*) FROM inbox") == [(0,)]

        # a peer at its cap: the next connection is answered 503 and closed; others go on
        async def keep_alive(source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
            answer = await reader.readuntil(b'{"status": "ok"}')
            assert status_of(answer) == 200
            return reader, writer

        held = [await keep_alive("127.0.10.1") for _ in range(PEER_CAP)]
        reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.10.1", 0))
        refused = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert status_of(refused) == 503
        assert b"Retry-After: 1" in refused
        assert "too many open connections" in json_body(refused)["error"]["message"]
        other = await keep_alive("127.0.10.2")
        other[1].close()
        held.pop()[1].close()

        async def admitted_again() -> bool:
            reader, writer = await asyncio.open_connection(host, port, local_addr=("127.0.10.1", 0))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n")
            answer = await reader.read()
            writer.close()
            return status_of(answer) == 200

        await wait_for(admitted_again, 5)
        for _, held_writer in held:
            held_writer.close()
        assert bridge.proc.returncode is None
        bridge.proc.send_signal(signal.SIGTERM)
        assert await bridge.exit_code(15) == 0
        assert bridge.messages("connection cap reached")[0]["peer"] == "127.0.10.1"
        (malformed,) = bridge.messages("malformed request refused")
        assert (malformed["error"], malformed["status"]) == ("BadHttpMessage", 400)
        assert "Traceback" not in bridge.log.read_text()
        assert "secret-looking" not in bridge.log.read_text()
        assert bridge.messages("connection cap no longer reached")[0]["refused"] >= 1


# --- back-pressure --------------------------------------------------------------------------

BACKLOG = 20
RMAS = 400
SENDERS = 50


async def test_backpressure_answers_503_and_loses_nothing(tmp_path: Path) -> None:
    server = {"max_inbox_backlog": BACKLOG, "backlog_retry_after": 1}
    async with (
        running_kibo(token=KIBO_TOKEN) as kibo,
        daemon(tmp_path, server, retailer_toml("acme", kibo.url)) as bridge,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=SENDERS)) as session,
    ):
        refusals: list[tuple[str | None, Any]] = []
        health: list[int] = []

        async def send(n: int) -> int:
            body = rma(f"BP{n:04d}", f"ORD-BP{n:04d}")
            async with session.post(bridge.rmas_url("acme"), json=body, headers=AUTH) as resp:
                if resp.status == 503:
                    refusals.append((resp.headers.get("Retry-After"), await resp.json()))
                else:
                    await resp.read()
                return resp.status

        async def probe_health() -> None:
            while len(health) < 20:
                health.append(await healthz(session, bridge.url))

        prober = asyncio.create_task(probe_health())
        statuses = await asyncio.gather(*(send(n) for n in range(RMAS)))
        await prober
        first_503 = statuses.count(503)
        assert set(statuses) <= {200, 503}
        assert first_503 > 0
        assert all(retry == "1" for retry, _ in refusals)
        assert all("retry" in body["error"]["message"] for _, body in refusals)
        assert set(health) == {200}

        # the senders retry what was refused, as Optoro does, until all is accepted
        todo = [n for n, status in enumerate(statuses) if status == 503]
        total_503 = first_503
        for _ in range(100):
            if not todo:
                break
            await wait_for(
                lambda: (
                    query(bridge.db, "SELECT COUNT(*) FROM inbox WHERE status = 'pending'")[0][0]
                    < BACKLOG
                ),
                30,
            )
            again = await asyncio.gather(*(send(n) for n in todo))
            total_503 += again.count(503)
            todo = [n for n, status in zip(todo, again, strict=True) if status == 503]
        assert todo == []

        await wait_for(lambda: len(kibo.find_returns()) >= RMAS, 60)
        await wait_for(
            lambda: (
                query(bridge.db, "SELECT COUNT(*) FROM outbox WHERE state = 'pending'") == [(0,)]
            ),
            30,
        )
        orders = sorted(r["externalOrderID"] for r in kibo.find_returns())
        assert orders == [f"ORD-BP{n:04d}" for n in range(RMAS)]  # each exactly once
        assert query(bridge.db, "SELECT status, COUNT(*) FROM inbox GROUP BY status") == [
            ("done", RMAS)
        ]
        assert query(bridge.db, "SELECT COUNT(*) FROM outbox WHERE state != 'delivered'") == [(0,)]
        print(
            f"\nback-pressure: {RMAS} RMAs at {SENDERS} concurrent, backlog limit {BACKLOG}:"
            f" {first_503} x 503 in the burst, {total_503} x 503 in all,"
            f" {len(kibo.find_returns())} Kibo returns delivered, 0 lost, 0 twice"
        )
        assert bridge.messages("inbox backlog over the limit: webhooks answered 503")
        bridge.proc.send_signal(signal.SIGTERM)
        assert await bridge.exit_code(15) == 0


# --- graceful stop ---------------------------------------------------------------------------


def creates_for(kibo: KiboSandbox, order_id: str) -> list[Any]:
    return [r for r in kibo.create_requests() if r.body.get("externalOrderID") == order_id]


async def effect_of(db: Path, destination: str) -> Any:
    store = SqliteStore(db)
    await store.open()
    try:
        (effect,) = await store.list_effects(destination=destination)
        return effect
    finally:
        await store.close()


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> None:
    async with session.post(url, json=body, headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()


async def test_sigterm_drains_on_the_wire_and_releases_unsent(tmp_path: Path) -> None:
    """r1's create is on the wire at a slow Kibo; r2's waits in its rate governor, paused by
    a bare 429 (``pause_on_429``: 30 s). SIGTERM: r1's finishes, r2's is released as never sent; the
    next start sends it at once (an unknown outcome would wait 900 s for evidence). SIGHUP
    stops it too."""
    async with running_kibo(token=KIBO_TOKEN) as kibo, aiohttp.ClientSession() as session:
        tables = retailer_toml("r1", kibo.url) + retailer_toml("r2", kibo.url)
        # r2 retries at once, but its governor holds the retry for 30 s after the bare 429
        tables += "[retailers.r2.kibo.retry]\ninitial = 0.05\ncap = 0.05\npause_on_429 = 30.0\n"
        server = {"drain_seconds": 10.0}
        async with daemon(tmp_path, server, tables, "first") as bridge:
            kibo.configure(reject_next=1, reject_status=429)
            await post(session, bridge.rmas_url("r2"), rma("RMA-B", "ORD-B"))
            await wait_for(lambda: [r.status for r in creates_for(kibo, "ORD-B")] == [429], 15)
            kibo.configure(latency=4.0)
            await post(session, bridge.rmas_url("r1"), rma("RMA-A", "ORD-A"))

            def b_leased_again() -> bool:
                rows = query(
                    bridge.db,
                    "SELECT attempts, lease_owner FROM outbox WHERE destination = ?",
                    ("kibo.returns:r2",),
                )
                return len(rows) == 1 and rows[0][0] == 2 and rows[0][1] is not None

            await wait_for(lambda: len(creates_for(kibo, "ORD-A")) == 1 and b_leased_again(), 15)
            assert creates_for(kibo, "ORD-A")[0].status is None  # still at Kibo
            host, port = host_port(bridge.url)
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
            assert status_of(await reader.readuntil(b'{"status": "ok"}')) == 200
            stopped_at = time.monotonic()
            bridge.proc.send_signal(signal.SIGTERM)

            async def refused() -> bool:
                try:
                    _, probe = await asyncio.open_connection(host, port)
                except ConnectionRefusedError:
                    return True
                probe.close()
                return False

            await wait_for(refused, 5)  # no longer listening, A still on the wire
            assert bridge.proc.returncode is None
            late = json.dumps(rma("RMA-C", "ORD-C")).encode()
            writer.write(
                b"POST /retailers/r1/optoro/rmas HTTP/1.1\r\nHost: bridge\r\n"
                + "".join(f"{k}: {v}\r\n" for k, v in AUTH.items()).encode()
                + f"Content-Length: {len(late)}\r\n\r\n".encode()
                + late
            )
            answer = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            assert status_of(answer) == 503
            assert b"Retry-After: 5" in answer
            assert "stopping" in json_body(answer)["error"]["message"]
            assert await bridge.exit_code(20) == 0
            took = time.monotonic() - stopped_at
            assert took < 10.0
            (drained,) = bridge.messages("deliveries drained")
            stopping = bridge.messages("stopping")
            assert stopping[0]["reason"] == "SIGTERM"

        a = await effect_of(bridge.db, "kibo.returns:r1")
        b = await effect_of(bridge.db, "kibo.returns:r2")
        assert drained["finished"] == [a.id]
        assert drained["released_unsent"] == [b.id]
        assert drained["cancelled_outcome_unknown"] == []
        assert a.state.value == "delivered"
        assert [r.status for r in creates_for(kibo, "ORD-A")] == [200]
        assert len(kibo.find_returns("ORD-A")) == 1
        assert b.state.value == "pending"
        assert b.attempts == 1
        assert not b.outcome_unknown
        assert [r.status for r in creates_for(kibo, "ORD-B")] == [429]  # never sent again
        assert query(bridge.db, "SELECT COUNT(*) FROM inbox") == [(2,)]  # C was not stored
        print(
            f"\nSIGTERM: exit 0 after {took:.1f} s; drained {drained['finished']},"
            f" released unsent {drained['released_unsent']}, cancelled 0"
        )

        kibo.configure(latency=0.0)
        async with daemon(tmp_path, server, tables, "second") as bridge:
            await wait_for(lambda: len(kibo.find_returns("ORD-B")) == 1, 15)
            await wait_for(
                lambda: (
                    query(
                        bridge.db,
                        "SELECT state FROM outbox WHERE destination = ?",
                        ("kibo.returns:r2",),
                    )
                    == [("delivered",)]
                ),
                10,
            )
            assert [r.status for r in creates_for(kibo, "ORD-B")] == [429, 200]
            bridge.proc.send_signal(signal.SIGHUP)
            assert await bridge.exit_code(15) == 0
            assert bridge.messages("signal received")[0]["signal"] == "SIGHUP"
            assert bridge.messages("stopping")[0]["reason"] == "SIGHUP"


async def test_a_delivery_longer_than_the_grace_period_is_cancelled_as_unknown(
    tmp_path: Path,
) -> None:
    async with (
        running_kibo(token=KIBO_TOKEN, latency=8.0) as kibo,
        aiohttp.ClientSession() as session,
    ):
        tables = retailer_toml("acme", kibo.url)
        async with daemon(tmp_path, {"drain_seconds": 1.0}, tables) as bridge:
            await post(session, bridge.rmas_url("acme"), rma("RMA-L", "ORD-L"))
            await wait_for(lambda: len(creates_for(kibo, "ORD-L")) == 1, 15)
            stopped_at = time.monotonic()
            bridge.proc.send_signal(signal.SIGINT)
            assert await bridge.exit_code(15) == 0
            took = time.monotonic() - stopped_at
            (drained,) = bridge.messages("deliveries drained")
        effect = await effect_of(bridge.db, "kibo.returns:acme")
        assert drained["cancelled_outcome_unknown"] == [effect.id]
        assert drained["finished"] == drained["released_unsent"] == []
        assert 1.0 <= took < 8.0
        assert effect.state.value == "pending"
        # recorded as sent before the call: the next lease takes it as of unknown outcome
        assert (effect.last_error, effect.outcome_unknown) == (SENT_WITHOUT_ANSWER, True)


# --- the store methods behind it, on both backends -------------------------------------------


@pytest_asyncio.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store = (
        SqliteStore(tmp_path / "bridge.db") if request.param == "sqlite" else MemoryStore()
    )
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


async def test_pending_inbox_count(store: Store) -> None:
    ids = [
        (await store.accept("acme:x", f"k{n}", b"{}" + bytes([n]), {})).inbox_id for n in range(3)
    ]
    assert await store.pending_inbox_count() == 3
    (item, *_) = await store.lease_inbox("w", 1, 60.0)
    async with store.transaction() as tx:
        await tx.finish_inbox(item.id, "w", InboxStatus.DONE)
    assert await store.pending_inbox_count() == 2
    assert item.id in ids


async def test_release_unsent_undoes_the_attempt_and_keeps_an_unknown_outcome(
    store: Store,
) -> None:
    async with store.transaction() as tx:
        assert await tx.add_effect(NewEffect("k1", "dest", "create", {}))
    (effect,) = await store.lease_effects("w", 1, 60.0)
    assert effect.attempts == 1
    await store.mark_sending(effect.id, "w")  # recorded as maybe sent, then it never left
    assert not await store.release_unsent(effect.id, "someone-else", None, False)
    assert await store.release_unsent(effect.id, "w", effect.last_error, False)
    assert not await store.release_unsent(effect.id, "w", None, False)  # no lease any more
    (again,) = await store.lease_effects("w", 1, 60.0)  # free at once, not at lease expiry
    assert (again.attempts, again.outcome_unknown) == (1, False)

    await store.schedule_retry(again.id, "w", 0.0, "timed out", outcome_unknown=True)
    (third,) = await store.lease_effects("w", 1, 60.0)
    assert (third.attempts, third.outcome_unknown) == (2, True)
    await store.mark_sending(third.id, "w")  # then cancelled before its request left
    assert await store.release_unsent(third.id, "w", third.last_error, third.outcome_unknown)
    (fourth,) = await store.lease_effects("w", 1, 60.0)
    assert (fourth.attempts, fourth.outcome_unknown) == (2, True)  # still to be settled


async def test_a_second_signal_cuts_the_drain_short(tmp_path: Path) -> None:
    async with (
        running_kibo(token=KIBO_TOKEN, latency=8.0) as kibo,
        aiohttp.ClientSession() as session,
    ):
        tables = retailer_toml("acme", kibo.url)
        async with daemon(tmp_path, {"drain_seconds": 30.0}, tables) as bridge:
            await post(session, bridge.rmas_url("acme"), rma("RMA-S", "ORD-S"))
            await wait_for(lambda: len(creates_for(kibo, "ORD-S")) == 1, 15)
            stopped_at = time.monotonic()
            bridge.proc.send_signal(signal.SIGTERM)
            await wait_for(lambda: bool(bridge.messages("stopping")), 5)
            bridge.proc.send_signal(signal.SIGINT)
            assert await bridge.exit_code(15) == 0
            took = time.monotonic() - stopped_at
            assert bridge.messages("second signal: deliveries cancelled now")
            (drained,) = bridge.messages("deliveries drained")
        effect = await effect_of(bridge.db, "kibo.returns:acme")
        assert drained["cancelled_outcome_unknown"] == [effect.id]
        assert took < 8.0  # neither the 30 s grace nor Kibo's 8 s answer was waited for


async def test_backlog_estimate_recounts_before_refusing() -> None:
    """The daemon's backlog check: accepted requests count until the next store count, and
    a 503 is answered only on a count at most ``BACKLOG_RECHECK`` old."""
    pending = [0]
    counts: list[float] = []
    now = [100.0]

    async def count() -> int:
        counts.append(now[0])
        return pending[0]

    backlog = InboxBacklog(count, limit=10, clock=lambda: now[0])
    assert not await backlog.full()
    for _ in range(10):
        backlog.accepted()
    assert await backlog.full()  # 0 counted + 10 accepted since, counted just now
    assert len(counts) == 1
    now[0] += BACKLOG_RECHECK * 1.5
    assert not await backlog.full()  # recounted: the worker handled them meanwhile
    assert len(counts) == 2
    pending[0] = 12
    now[0] += BACKLOG_REFRESH
    assert await backlog.full()
    assert backlog.refused == 2
    pending[0] = 3
    now[0] += BACKLOG_RECHECK * 1.5
    assert not await backlog.full()
    assert not await InboxBacklog(count, limit=0).full()  # 0: no limit, never counted
    assert len(counts) == 4
