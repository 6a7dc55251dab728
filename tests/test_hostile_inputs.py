"""The hostile-input corpus of issue 9 against the REAL daemon process and the sandboxes.

Every input that once crashed, stopped or 500'd the daemon is sent over raw loopback
sockets (so header bytes go out exactly as written, 0xff included) to a ``returns-bridge
run`` subprocess wired to the Optoro, Kibo and ReturnLogic sandboxes. After each input:
no 5xx, the process is alive, ``/healthz`` answers 200, nothing unauthenticated was stored,
and an authenticated refused input is already quarantined with its reason when the answer
arrives (read from the SQLite file). The 20-concurrent invalid-RMA race runs three rounds.
Then the daemon is stopped, the store is given rows as an older version (which stored
before validating) would have left them -- a body bomb and a lone surrogate pending, and
an item already leased three times by processes that died -- and the restarted daemon
must quarantine each with its reason without dying, and report ready.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from adapters.kibo.sandbox import running_sandbox as running_kibo
from adapters.optoro.sandbox import running_sandbox as running_optoro
from adapters.optoro.sandbox import scenario
from adapters.returnlogic.sandbox import DEFAULT_TEAM
from adapters.returnlogic.sandbox import running_sandbox as running_returnlogic

REPO = Path(__file__).resolve().parent.parent
RETAILER = "acme"
OPTITURN_ID = "acme-optiturn"
HOOK_USER = "optoro"
SECRETS = {
    "H_OPTORO_SECRET": "optoro-secret-5150",
    "H_HOOK_PASSWORD": "hook-pass-8086",
    "H_KIBO_TOKEN": "kibo-token-6502",
    "H_KIBO_NOTIFY": "kibo-notify-z80",
    "H_RL_HOOK": "rl-hook-68000",
}
DEADLINE = 30.0


def config_text(db: Path, optoro_url: str, kibo_url: str, rl_url: str, rl_key: str) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = 0
[store]
url = "sqlite:///{db}"
[retailers.{RETAILER}]
name = "Acme"
[retailers.{RETAILER}.optoro]
base_url = "{optoro_url}"
client_id = "acme-bridge"
client_secret = "${{H_OPTORO_SECRET}}"
optiturn_id = "{OPTITURN_ID}"
timeout = 5.0
[retailers.{RETAILER}.optoro.inbound_auth]
kind = "basic"
username = "{HOOK_USER}"
password = "${{H_HOOK_PASSWORD}}"
[retailers.{RETAILER}.kibo]
base_url = "{kibo_url}"
token = "${{H_KIBO_TOKEN}}"
timeout = 5.0
line_ids = "numeric"
[retailers.{RETAILER}.kibo.notifications]
kind = "api_key"
header = "X-Kibo-Secret"
key = "${{H_KIBO_NOTIFY}}"
[retailers.{RETAILER}.returnlogic]
base_url = "{rl_url}"
team_id = "{DEFAULT_TEAM}"
static_token = "{rl_key}"
timeout = 5.0
[retailers.{RETAILER}.returnlogic.orders]
enabled = false
[retailers.{RETAILER}.returnlogic.rmas]
enabled = true
webhook_secret = "${{H_RL_HOOK}}"
"""


# --- a raw HTTP/1.1 client: bytes out exactly as written -------------------------------------


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(
    port: int, method: str, target: str, headers: list[tuple[str, bytes]], body: bytes = b""
) -> Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
        for name, value in headers:
            head += name.encode() + b": " + value + b"\r\n"
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        writer.write(head + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), DEADLINE)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return Answer(int(status_line.split()[1]), payload)


def basic(user: str, password: str) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


# --- the endpoints and their credentials -----------------------------------------------------

RMA = f"/retailers/{RETAILER}/optoro/rmas"
EXCHANGE = f"/retailers/{RETAILER}/optoro/exchange_orders"
NOTIFY = f"/retailers/{RETAILER}/kibo/notifications"
RL_HOOK = f"/retailers/{RETAILER}/returnlogic/webhooks"
OPTORO_AUTH = [
    ("Authorization", basic(HOOK_USER, SECRETS["H_HOOK_PASSWORD"])),
    ("X-Optiturn-Id", OPTITURN_ID.encode()),
    ("Content-Type", b"application/json"),
]
KIBO_AUTH = [("X-Kibo-Secret", SECRETS["H_KIBO_NOTIFY"].encode())]
RL_KEY = "?key=" + SECRETS["H_RL_HOOK"]
AUTH = {RMA: OPTORO_AUTH, EXCHANGE: OPTORO_AUTH, NOTIFY: KIBO_AUTH, RL_HOOK: []}
QUERY = {RMA: "", EXCHANGE: "", NOTIFY: "", RL_HOOK: RL_KEY}


def guide_request(number: int, path: str) -> dict[str, Any]:
    step = next(s for s in scenario(number).steps if s.path == path)
    return json.loads(json.dumps(step.request))


RMA_BODY = guide_request(1, "/rmas")
EXCHANGE_BODY = guide_request(3, "/orders")
RL_BODY = {"eventId": "evt-1", "resourceAction": "rma.updated", "rlRmaId": 1001}
KIBO_BODY = {"eventTypeID": "return_created", "returnID": 77, "externalOrderID": "ORD-1"}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def nested(depth: int) -> bytes:
    return b'{"rma_identifier": ' + b"[" * depth + b"]" * depth + b"}"


def with_item_money(cents: Any) -> bytes:
    body = json.loads(json.dumps(RMA_BODY))
    body["rma_identifier"] = f"NEG-{cents}"
    body["items"][0]["refund_financials"]["shopper_refund_amount_cents"] = cents
    return dumps(body)


@dataclass
class Case:
    """One corpus input. ``reason``: a fragment of the quarantine note (authenticated
    inputs), ``None`` for an unauthenticated one (nothing may be stored)."""

    name: str
    path: str
    body: bytes
    reason: str | None
    headers: list[tuple[str, bytes]] | None = None
    query: str | None = None
    statuses: tuple[int, ...] = (200, 400, 401, 403, 422)

    def request_headers(self) -> list[tuple[str, bytes]]:
        return self.headers if self.headers is not None else AUTH[self.path]

    def target(self) -> str:
        return self.path + (self.query if self.query is not None else QUERY[self.path])


def corpus() -> list[Case]:
    cases = [
        Case(f"nesting 1000 deep on {path}", path, nested(1000), "nesting deeper than")
        for path in (RMA, EXCHANGE, NOTIFY, RL_HOOK)
    ]
    big_int = b'{"eventId": "e1", "resourceAction": "rma.updated", "rlRmaId": ' + b"9" * 4301 + b"}"
    cases += [
        Case("4301-digit integer in a ReturnLogic webhook", RL_HOOK, big_int, "4301 digits"),
        Case(
            "lone surrogate in ReturnLogic eventId",
            RL_HOOK,
            dumps({**RL_BODY, "eventId": "\ud800"}),
            "eventId: string holds a lone UTF-16 surrogate",
        ),
        Case(
            "lone surrogate in Kibo externalOrderID",
            NOTIFY,
            dumps({**KIBO_BODY, "externalOrderID": "\udfff"}),
            "externalOrderID: string holds a lone UTF-16 surrogate",
        ),
        Case(
            "NaN as a refund amount",
            RMA,
            with_item_money(float("nan")),
            "shopper_refund_amount_cents: NaN is not a JSON number",
        ),
        Case(
            "Infinity in a Kibo notification",
            NOTIFY,
            b'{"eventTypeID": "return_cleared", "returnID": Infinity}',
            "returnID: Infinity is not a JSON number",
        ),
        Case(
            "duplicate keys in an RMA",
            RMA,
            b'{"rma_identifier": "DUP1", "status": "CREATED", "status": "REFUNDED"}',
            "status: key occurs more than once",
        ),
        Case(
            "huge string in an exchange order",
            EXCHANGE,
            dumps({**EXCHANGE_BODY, "note": "x" * 100_000}),
            "note: string of 100000 characters",
        ),
        Case(
            "huge array in a Kibo notification",
            NOTIFY,
            dumps({**KIBO_BODY, "items": list(range(20_000))}),
            "items: array of 20000 elements",
        ),
        Case(
            "negative shopper share",
            RMA,
            with_item_money(-5),
            "items[0].refund_financials.shopper_refund_amount_cents",
        ),
        Case(
            "not UTF-8 at all",
            RL_HOOK,
            b'{"eventId": "\xff\xfe"}',
            "body is not UTF-8",
        ),
    ]
    hook = [("Authorization", basic(HOOK_USER, SECRETS["H_HOOK_PASSWORD"]))]
    for label, value in (("é as UTF-8", "é".encode()), ("é as Latin-1", b"\xe9")):
        cases.append(
            Case(
                f"Authorization: Basic {label}, unauthenticated",
                RMA,
                dumps(RMA_BODY),
                None,
                headers=[("Authorization", b"Basic " + value), *OPTORO_AUTH[1:]],
            )
        )
    cases += [
        Case(
            "X-Kibo-Secret: byte 0xff, unauthenticated",
            NOTIFY,
            dumps(KIBO_BODY),
            None,
            headers=[("X-Kibo-Secret", b"\xff")],
        ),
        Case(
            "Authorization: raw bytes after Basic, unauthenticated",
            EXCHANGE,
            dumps(EXCHANGE_BODY),
            None,
            headers=[("Authorization", b"Basic \xff\xfe\x80"), ("X-Optiturn-Id", b"\xff")],
        ),
        Case(
            "X-Optiturn-Api-Version: superscript two, unauthenticated",
            EXCHANGE,
            dumps(EXCHANGE_BODY),
            None,
            headers=[("X-Optiturn-Api-Version", "²".encode()), ("X-Optiturn-Id", b"x")],
        ),
        Case(
            "ReturnLogic key: byte 0xff (percent-encoded), unauthenticated",
            RL_HOOK,
            dumps(RL_BODY),
            None,
            query="?key=%ff%fe",
        ),
        Case(
            "ReturnLogic key: lone surrogate (percent-encoded CESU), unauthenticated",
            RL_HOOK,
            dumps(RL_BODY),
            None,
            query="?key=%ed%a0%80",
        ),
        Case(
            "X-Optiturn-Api-Version: superscript two, authenticated",
            EXCHANGE,
            dumps({**EXCHANGE_BODY, "original_order_id": "SUP2"}),
            "X-Optiturn-Api-Version: header X-Optiturn-Api-Version must be one of",
            headers=[*OPTORO_AUTH, ("X-Optiturn-Api-Version", "²".encode())],
        ),
        Case(
            "X-Optiturn-Id: byte 0xff, authenticated",
            RMA,
            dumps({**RMA_BODY, "rma_identifier": "OPTI-FF"}),
            "X-Optiturn-Id",
            headers=[OPTORO_AUTH[0], ("X-Optiturn-Id", b"\xff\xfe")],
            statuses=(503,),  # optiturn_mismatch_status: kept, flagged, Optoro retries
        ),
        Case(
            "Authorization with a valid scheme and user, password with 0xff",
            RMA,
            dumps(RMA_BODY),
            None,
            headers=[("Authorization", b"Basic " + base64.b64encode(b"optoro:\xff")), *hook[1:]],
        ),
    ]
    return cases


# --- the daemon process ------------------------------------------------------------------------


@dataclass
class Daemon:
    config: Path
    db: Path
    log: Path
    proc: asyncio.subprocess.Process | None = None
    port: int = 0
    runs: list[str] = field(default_factory=list)

    async def start(self) -> None:
        with self.log.open("ab") as err:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bridge",
                "run",
                "--config",
                str(self.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                env={**os.environ, **SECRETS},
                cwd=REPO,
            )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), DEADLINE)
        assert b"listening on" in line, f"daemon did not start: {line!r}\n{self.stderr()}"
        self.port = int(line.strip().rsplit(b":", 1)[1])

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-8000:]

    async def stop(self) -> int:
        assert self.proc is not None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), DEADLINE)
        assert self.proc.stdout is not None
        await self.proc.stdout.read()
        return code

    async def get(self, path: str) -> Answer:
        return await raw_request(self.port, "GET", path, [])


@contextlib.asynccontextmanager
async def running_daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with (
        running_optoro(client_id="acme-bridge", client_secret=SECRETS["H_OPTORO_SECRET"]) as o,
        running_kibo(token=SECRETS["H_KIBO_TOKEN"]) as kibo,
        running_returnlogic() as rl,
    ):
        config = tmp_path / "bridge.toml"
        db = tmp_path / "bridge.db"
        config.write_text(config_text(db, o.url, kibo.url, rl.url, rl.issue_api_key()))
        daemon = Daemon(config, db, tmp_path / "daemon.log")
        await daemon.start()
        try:
            yield daemon
        finally:
            if daemon.proc is not None and daemon.alive():
                daemon.proc.kill()
                await daemon.proc.wait()


async def operator_inbox(daemon: Daemon) -> str:
    """``returns-bridge inbox``'s output for the daemon's store (the daemon stopped)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "inbox",
        "--config",
        str(daemon.config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **SECRETS},
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(), DEADLINE)
    assert proc.returncode == 0, err.decode(errors="replace")
    return out.decode()


# --- the store, read from the SQLite file --------------------------------------------------


def inbox_rows(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM inbox ORDER BY id")]
    finally:
        conn.close()


def row_of(db: Path, body: bytes) -> dict[str, Any] | None:
    digest = hashlib.sha256(body).hexdigest()
    return next((r for r in inbox_rows(db) if r["body_hash"] == digest), None)


async def wait_until(condition: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not await condition():
        assert loop.time() < deadline, f"not reached in {DEADLINE} s: {what}"
        await asyncio.sleep(0.05)


async def check_alive(daemon: Daemon, after: str) -> None:
    assert daemon.alive(), f"daemon exited after {after}\n{daemon.stderr()}"
    health = await daemon.get("/healthz")
    assert health.status == 200, f"/healthz {health.status} after {after}"


async def send(daemon: Daemon, case: Case) -> list[str]:
    """Send one case; the problems seen (empty: it held)."""
    before = len(inbox_rows(daemon.db))
    answer = await raw_request(
        daemon.port, "POST", case.target(), case.request_headers(), case.body
    )
    problems = []
    if answer.status not in case.statuses:  # no 5xx unless the case documents one
        problems.append(f"{case.name}: answered {answer.status} {answer.body[:200]!r}")
    if answer.status >= 400:
        error = answer.json().get("error", {})
        if not error.get("field") or not error.get("message"):
            problems.append(f"{case.name}: error without field or message: {answer.body[:200]!r}")
    if case.reason is None:
        if answer.status != 401:
            problems.append(f"{case.name}: unauthenticated input answered {answer.status}")
        if len(inbox_rows(daemon.db)) != before:
            problems.append(f"{case.name}: unauthenticated input was stored")
    else:
        row = row_of(daemon.db, case.body)
        if row is None:
            problems.append(f"{case.name}: authenticated input not stored")
        elif row["status"] != "quarantined" or case.reason not in (row["note"] or ""):
            problems.append(f"{case.name}: stored {row['status']} with note {row['note']!r}")
    return problems


async def race(daemon: Daemon, rounds: int = 3, concurrent: int = 20) -> list[str]:
    """20 concurrent authenticated invalid RMAs (half the same bytes, half distinct), as the
    race that used to kill the daemon in 41-61 requests."""
    problems = []
    for round_no in range(rounds):
        bodies = [
            dumps({"rma_identifier": "BAD1", "status": "NOT_A_STATUS"})
            if i % 2 == 0
            else dumps({"rma_identifier": f"BAD-{round_no}-{i}", "status": "NOT_A_STATUS"})
            for i in range(concurrent)
        ]
        answers = await asyncio.gather(
            *(raw_request(daemon.port, "POST", RMA, OPTORO_AUTH, body) for body in bodies)
        )
        for body, answer in zip(bodies, answers, strict=True):
            if answer.status != 200 or answer.json()["error"]["quarantined"] is not True:
                problems.append(f"race round {round_no}: answered {answer.status}")
            row = row_of(daemon.db, body)
            if row is None or row["status"] != "quarantined":
                problems.append(f"race round {round_no}: stored as {row and row['status']}")
        await check_alive(daemon, f"race round {round_no}")
    return problems


def plant_rows(db: Path) -> dict[str, int]:
    """Rows an older version left behind (it stored before validating): a body bomb and a
    Kibo notification whose ``externalOrderID`` is a lone surrogate, both pending, and an
    item already leased three times by processes that died while handling it."""
    bomb = b'{"eventId": "old", "resourceAction": "rma.updated", "rlRmaId": ' + b"7" * 5000 + b"}"
    surrogate = dumps({**KIBO_BODY, "returnID": 78, "externalOrderID": "\ud800"})
    leased = dumps({**RL_BODY, "eventId": "leased-thrice"})
    rows = {
        "bomb": ("returnlogic.webhooks", bomb, 0),
        "surrogate": ("kibo.notifications", surrogate, 0),
        "leased": ("returnlogic.webhooks", leased, 3),
    }
    conn = sqlite3.connect(db)
    try:
        ids = {}
        for name, (kind, body, attempts) in rows.items():
            digest = hashlib.sha256(body).hexdigest()
            cur = conn.execute(
                "INSERT INTO inbox (source, retailer, dedup_key, body_hash, body, headers,"
                " received_at, attempts) VALUES (?, ?, ?, ?, ?, '{}', 0, ?)",
                (f"{RETAILER}:{kind}", RETAILER, f"sha256:{digest}", digest, body, attempts),
            )
            ids[name] = int(cur.lastrowid or 0)
        conn.commit()
    finally:
        conn.close()
    return ids


@pytest.mark.timeout(240)
async def test_hostile_corpus_against_the_real_daemon(tmp_path: Path) -> None:
    async with running_daemon(tmp_path) as daemon:
        problems: list[str] = []
        for case in corpus():
            problems += await send(daemon, case)
            await check_alive(daemon, case.name)
        problems += await race(daemon)
        assert not problems, "\n".join(problems)

        log_text = daemon.log.read_text(errors="replace")
        assert "Traceback" not in log_text, daemon.stderr()
        for secret in SECRETS.values():
            assert secret not in log_text

        assert await daemon.stop() == 0
        planted = plant_rows(daemon.db)
        await daemon.start()

        async def ready() -> bool:
            return (await daemon.get("/readyz")).status == 200

        await wait_until(ready, "/readyz 200 after the restart")

        async def settled() -> bool:
            rows = {r["id"]: r for r in inbox_rows(daemon.db)}
            return all(rows[i]["status"] == "quarantined" for i in planted.values())

        await wait_until(settled, "the planted rows quarantined")
        by_id = {r["id"]: r for r in inbox_rows(daemon.db)}
        notes = {name: by_id[inbox_id]["note"] for name, inbox_id in planted.items()}
        assert "rlRmaId" in notes["bomb"]
        assert "5000 digits" in notes["bomb"]
        assert notes["surrogate"].startswith("UnicodeEncodeError"), notes["surrogate"]
        assert "leased 4 times without an outcome" in notes["leased"]
        await check_alive(daemon, "the restart")
        assert (await daemon.get("/readyz")).status == 200
        assert all(r["status"] != "pending" for r in inbox_rows(daemon.db))
        assert "Traceback" not in daemon.log.read_text(errors="replace"), daemon.stderr()
        assert await daemon.stop() == 0

        listing = await operator_inbox(daemon)  # what an operator sees, with the reasons
        quarantined = len([r for r in inbox_rows(daemon.db) if r["status"] == "quarantined"])
        assert "pending 0  " in listing
        assert f"quarantined {quarantined}  " in listing
        assert "nesting deeper than 32 levels" in listing
        assert "leased 4 times without an outcome" in listing
