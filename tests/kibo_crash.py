"""kill -9 of the real daemon while Kibo creates are in flight, shared by
``tests/test_kibo_crash_system.py`` (CI, >= 25 kills) and ``bench/kibo_crash.py`` (>= 200).

One daemon process (``python -m bridge run``, the CLI as deployed) serves three retailers on
one SQLite file, each with its own Kibo sandbox in this process (Kibo, like the sandbox, has
no idempotency key):

* ``kc1``: every return created at ``CREATED`` (one policy for every return method);
* ``kc2``: the default policy (mail-back at the carrier scan, express returns at the QR scan);
* ``kc3``: like ``kc1``, but its sandbox **assigns its own returnID** (``honour_return_id``
  off): the bridge must notice and fall back to waiting for evidence.

Lanes play RMA webhooks of the guide's scenarios (every scenario with an RMA that is not
canceled; identifiers made unique per copy) through the Optoro scenario player, each message
re-sent until it is acknowledged, as Optoro does. Each round starts the daemon, lets the load
run, waits (with a deadline) until a create is in flight at a randomly chosen sandbox and
kills the daemon with SIGKILL; a few rounds kill it while it starts. The last round re-sends
what was never acknowledged and lets the daemon settle. The verdict is read from the
sandboxes' records and the SQLite file (:class:`Verdict`).

The daemon process is driven with ``tests/test_crash.py``'s :class:`~tests.test_crash.Child`
(spawn, kill, reap, stop) and read with its :func:`~tests.test_crash.query`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from adapters.kibo.sandbox import KiboSandbox
from adapters.kibo.sandbox import running_sandbox as running_kibo
from adapters.optoro.sandbox import BasicAuth, Scenario, ScenarioPlayer, load_scenarios
from adapters.optoro.sandbox import running_sandbox as running_optoro
from adapters.optoro.sandbox.scenarios import Step
from bridge.config import load_config
from bridge.policy import reached
from mappings.kibo import derive_return_id
from mappings.optoro import parse_rma
from tests.daemon_process import spawn_daemon
from tests.test_crash import Child, child_tracebacks, query

REPO = Path(__file__).resolve().parent.parent
KIBO_TOKEN = "crash-kibo-token"
NOTIFY_SECRET = "crash-kibo-notify"
WEBHOOK_USER = "optoro"
WEBHOOK_PASSWORD = "crash-webhook-password"
OPTORO_SECRET = "crash-optoro-secret"
OPTITURN_ID = "crash-optiturn"
ENV = {
    "CRASH_OPTORO_SECRET": OPTORO_SECRET,
    "CRASH_WEBHOOK_PASSWORD": WEBHOOK_PASSWORD,
    "CRASH_KIBO_TOKEN": KIBO_TOKEN,
    "CRASH_KIBO_NOTIFY": NOTIFY_SECRET,
}
KEEPS_IDS = {"kc1": True, "kc2": True, "kc3": False}
"""Retailer -> whether its Kibo sandbox keeps the bridge's returnID."""
POLICIES = {
    "kc1": 'create_return_at = { mail_back = "CREATED", express_returns = "CREATED" }',
    "kc2": "",
    "kc3": 'create_return_at = { mail_back = "CREATED", express_returns = "CREATED" }',
}
LANES_PER_RETAILER = 4
THINK = (0.02, 0.12)
"""Seconds a lane waits between messages."""
UNKNOWN_OUTCOME_WAIT = 3.0
"""kc3's evidence wait: short, so that the parked creates are parked before the end."""
ID_FIELDS = ("rma_identifier", "order_identifier", "original_order_identifier")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config_text(db: Path, port: int, kibo_urls: dict[str, str], optoro_url: str) -> str:
    text = (
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ninstance = "kibo-crash"\n'
        f'shutdown_timeout = 2.0\n[store]\nurl = "sqlite:///{db}"\n'
    )
    for retailer, kibo_url in kibo_urls.items():
        text += f"""
[retailers.{retailer}]
[retailers.{retailer}.policy]
{POLICIES[retailer]}
confirm_refund = "never"
reconcile_every = 3600.0
[retailers.{retailer}.optoro]
base_url = "{optoro_url}"
client_id = "crash-bridge"
client_secret = "${{CRASH_OPTORO_SECRET}}"
optiturn_id = "{OPTITURN_ID}"
timeout = 5.0
[retailers.{retailer}.optoro.inbound_auth]
kind = "basic"
username = "{WEBHOOK_USER}"
password = "${{CRASH_WEBHOOK_PASSWORD}}"
[retailers.{retailer}.kibo]
base_url = "{kibo_url}"
token = "${{CRASH_KIBO_TOKEN}}"
timeout = 2.0
line_ids = "numeric"
exchange_lines_numeric = true
unknown_outcome_wait = {UNKNOWN_OUTCOME_WAIT}
[retailers.{retailer}.kibo.notifications]
kind = "api_key"
header = "X-Kibo-Secret"
key = "${{CRASH_KIBO_NOTIFY}}"
"""
    return text


class Daemon(Child):
    """The daemon as the CLI runs it; ready once it prints its ``listening on`` line."""

    base = ""

    @classmethod
    async def run(cls, config: Path, log: Path) -> Daemon:
        proc = await spawn_daemon(config, log, ENV)
        return cls(proc, log)

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if b"listening on" not in line:
            await self.reap()
            raise AssertionError(f"daemon did not start: {line!r}\n{self.stderr()}")
        self.base = line.decode().strip().rsplit(" ", 1)[1]


def rma_scenarios() -> list[Scenario]:
    """The guide's scenarios with RMA messages, none of whose RMAs ends canceled, reduced
    to their RMA messages."""
    chosen = []
    for scenario in load_scenarios():
        steps = tuple(s for s in scenario.steps if s.kind == "rma")
        if steps and not any(s.request["status"] == "CANCELED" for s in steps):
            chosen.append(replace(scenario, steps=steps))
    return chosen


def _renamed(value: Any, suffix: str) -> Any:
    if isinstance(value, dict):
        return {
            k: (f"{v}{suffix}" if k in ID_FIELDS and isinstance(v, str) else _renamed(v, suffix))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_renamed(v, suffix) for v in value]
    return value


@dataclass
class Copy:
    """One play of a scenario's RMA messages for one retailer, identifiers made unique."""

    retailer: str
    scenario: Scenario
    acked: int = 0
    """How many of its messages (in order) were acknowledged."""

    @classmethod
    def of(cls, retailer: str, scenario: Scenario, n: int) -> Copy:
        suffix = f"-c{n}"
        steps = tuple(replace(s, request=_renamed(s.request, suffix)) for s in scenario.steps)
        return cls(retailer, replace(scenario, steps=steps))

    @property
    def done(self) -> bool:
        return self.acked == len(self.scenario.steps)

    def next_message(self) -> Scenario:
        return replace(self.scenario, steps=(self.scenario.steps[self.acked],))

    def last_acked(self) -> dict[str, Step]:
        """RMA id -> its last acknowledged message."""
        last: dict[str, Step] = {}
        for step in self.scenario.steps[: self.acked]:
            last[step.request["rma_identifier"]] = step
        return last


class Load:
    """Lanes of RMA messages, each message re-sent until a 2xx, as Optoro does."""

    def __init__(self, rng: random.Random, retailers: list[str]) -> None:
        self.rng = rng
        self.scenarios = rma_scenarios()
        self.copies: list[Copy] = []
        self.lanes: list[Copy] = [
            self._new(r) for r in retailers for _ in range(LANES_PER_RETAILER)
        ]
        self.posts = 0
        self.unexpected: list[str] = []

    def _new(self, retailer: str) -> Copy:
        copy = Copy.of(retailer, self.rng.choice(self.scenarios), len(self.copies))
        self.copies.append(copy)
        return copy

    async def _lane(self, player: dict[str, ScenarioPlayer], index: int, more: bool) -> None:
        while True:
            copy = self.lanes[index]
            if copy.done:
                if not more:
                    return
                copy = self.lanes[index] = self._new(copy.retailer)
            self.posts += 1
            result = await player[copy.retailer].play(copy.next_message())
            (step,) = result.steps
            if not step.ok:
                if step.status != "error" or not more:  # not 2xx, or no kill to explain it
                    self.unexpected.append(str(step))
                return  # the daemon died: resume in the next round
            copy.acked += 1
            if more:
                await asyncio.sleep(self.rng.uniform(*THINK))

    async def run(self, base: str, more: bool = True) -> None:
        """Play until the daemon dies (``more``), or only finish the copies in flight."""
        async with aiohttp.ClientSession() as session:
            players = {
                r: ScenarioPlayer(
                    base,
                    r,
                    BasicAuth(WEBHOOK_USER, WEBHOOK_PASSWORD),
                    OPTITURN_ID,
                    3,
                    session,
                    request_timeout=10.0,
                )
                for r in KEEPS_IDS
            }
            await asyncio.gather(*(self._lane(players, i, more) for i in range(len(self.lanes))))


def creates_in_flight(sandbox: KiboSandbox) -> int:
    return sum(1 for r in sandbox.create_requests() if r.outcome == "pending")


async def until(condition: Any, within: float) -> bool:
    """Poll ``condition()`` until true or ``within`` seconds passed; whether it came true."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


@dataclass
class Verdict:
    """What the sandboxes and the store say after the last settle."""

    seed: int
    kills: int = 0
    kills_at_start: int = 0
    kills_with_create_in_flight: int = 0
    acknowledged_messages: int = 0
    acknowledged_rmas: int = 0
    expected_returns: dict[str, int] = field(default_factory=dict)
    returns: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    """Retailer -> returns beyond what the policy requires (must be 0)."""
    missing: dict[str, int] = field(default_factory=dict)
    parked: dict[str, int] = field(default_factory=dict)
    """Retailer -> creates parked for an operator (dead letters)."""
    missing_not_parked: dict[str, int] = field(default_factory=dict)
    settled: dict[str, int] = field(default_factory=dict)
    """How the daemon settled creates of unknown outcome (its log lines, counted)."""
    refused_as_taken: dict[str, int] = field(default_factory=dict)
    foreign_return_ids: dict[str, int] = field(default_factory=dict)
    """Retailer -> returns whose id is not the derived id of a delivered create."""
    creates_sent: dict[str, int] = field(default_factory=dict)
    outbox: dict[str, int] = field(default_factory=dict)
    inbox: dict[str, int] = field(default_factory=dict)
    flags: int = 0
    tracebacks: list[str] = field(default_factory=list)
    unexpected_answers: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"kibo crash: {self.kills} kills ({self.kills_at_start} at start,"
            f" {self.kills_with_create_in_flight} with a create in flight),"
            f" {self.acknowledged_rmas} RMAs / {self.acknowledged_messages} messages"
            f" acknowledged; returns {self.returns} (expected {self.expected_returns});"
            f" duplicates {self.duplicates}; parked {self.parked}; unknown outcomes"
            f" {self.settled}; creates refused as taken {self.refused_as_taken};"
            f" creates sent {self.creates_sent}; {self.seconds:.1f}s;"
            f" KIBO_CRASH_SEED={self.seed}"
        )

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "tracebacks"} | {
            "tracebacks": len(self.tracebacks)
        }


async def run_crash(folder: Path, kills: int, seed: int, start_kills: int = 3) -> Verdict:
    """``kills`` rounds ending in SIGKILL (``start_kills`` of them while the daemon
    starts), then a last round that settles; the verdict of the whole run."""
    rng = random.Random(seed)
    verdict = Verdict(seed)
    started = time.monotonic()
    db = folder / "bridge.db"
    port = free_port()
    async with contextlib.AsyncExitStack() as stack:
        optoro = await stack.enter_async_context(
            running_optoro(client_id="crash-bridge", client_secret=OPTORO_SECRET)
        )
        sandboxes: dict[str, KiboSandbox] = {}
        for retailer, keeps in KEEPS_IDS.items():
            sandboxes[retailer] = await stack.enter_async_context(
                running_kibo(
                    token=KIBO_TOKEN,
                    honour_return_id=keeps,
                    latency=0.05,
                    seed=rng.randrange(2**32),
                    notification_url=f"http://127.0.0.1:{port}/retailers/{retailer}/kibo/notifications",
                    notification_headers={"X-Kibo-Secret": NOTIFY_SECRET},
                    notification_timeout=1.0,
                )
            )
        config = folder / "bridge.toml"
        config.write_text(
            config_text(db, port, {r: s.url for r, s in sandboxes.items()}, optoro.url)
        )
        load = Load(rng, list(KEEPS_IDS))
        at_start = set(rng.sample(range(kills), min(start_kills, kills)))
        for round_no in range(kills):
            daemon = await Daemon.run(config, folder / f"child-{round_no}.log")
            sender: asyncio.Task[None] | None = None
            try:
                if round_no in at_start:
                    await asyncio.sleep(rng.uniform(0.0, 0.8))  # anywhere in start-up
                    daemon.kill()
                    verdict.kills += 1
                    verdict.kills_at_start += 1
                    continue
                await daemon.ready()
                sender = asyncio.create_task(load.run(daemon.base))
                await asyncio.sleep(rng.uniform(0.2, 1.2))  # chaos timing, not a wait
                target = sandboxes[rng.choice(list(sandboxes))]
                await until(lambda t=target: creates_in_flight(t) > 0, within=2.0)
                in_flight = sum(creates_in_flight(s) for s in sandboxes.values())
                daemon.kill()  # no await between the look and the kill
                verdict.kills += 1
                verdict.kills_with_create_in_flight += in_flight > 0
                await asyncio.wait_for(sender, 30)
            finally:
                if sender is not None and not sender.done():
                    sender.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sender
                await daemon.reap()

        daemon = await Daemon.run(config, folder / "child-final.log")
        try:
            await daemon.ready()
            await asyncio.wait_for(load.run(daemon.base, more=False), 60)
            await settle(db, daemon, within=30 + 2 * UNKNOWN_OUTCOME_WAIT)
            assert await daemon.stop() == 0, daemon.stderr()
        finally:
            await daemon.reap()
        await judge(verdict, db, load, sandboxes, folder)
    verdict.seconds = time.monotonic() - started
    return verdict


async def settle(db: Path, daemon: Daemon, within: float) -> None:
    """Wait until nothing is pending in the inbox or the outbox. Fails when ``within``
    seconds pass without progress (the pending counts unchanged): a long backlog left by
    many kills may take longer than that to work off, a stuck daemon never does."""
    deadline = time.monotonic() + within
    last: tuple[int, int] | None = None
    while True:
        (counts,) = await query(
            db,
            "SELECT (SELECT COUNT(*) FROM inbox WHERE status = 'pending'),"
            " (SELECT COUNT(*) FROM outbox WHERE state = 'pending')",
        )
        if counts == (0, 0):
            return
        if counts != last:
            last = counts
            deadline = time.monotonic() + within
        if not daemon.alive():
            raise AssertionError(f"daemon exited while settling\n{daemon.stderr()}")
        if time.monotonic() > deadline:
            pending = await query(
                db,
                "SELECT idempotency_key, attempts, last_error FROM outbox"
                " WHERE state = 'pending' LIMIT 5",
            )
            raise AssertionError(f"not settled: pending {counts}, first {pending}")
        await asyncio.sleep(0.1)


def expected_returns(load: Load, policies: dict[str, Any]) -> dict[str, Counter[str]]:
    """Retailer -> externalOrderID -> returns its policy requires for the acknowledged
    messages (one per RMA and order its refunds go against, once the policy step is
    reached)."""
    expected: dict[str, Counter[str]] = {r: Counter() for r in KEEPS_IDS}
    for copy in load.copies:
        for step in copy.last_acked().values():
            rma = parse_rma(step.request)
            if reached(rma, policies[copy.retailer].step_for(rma.return_method)):
                for order in dict.fromkeys(u.original_order_id or u.order_id for u in rma.units):
                    expected[copy.retailer][order] += 1
    return expected


def _per_retailer(rows: list[tuple[Any, ...]]) -> Iterator[tuple[str, str, str, str | None]]:
    for destination, key, state, reason in rows:
        yield destination.split(":", 1)[1], key, state, reason


async def judge(
    verdict: Verdict,
    db: Path,
    load: Load,
    sandboxes: dict[str, KiboSandbox],
    folder: Path,
) -> None:
    config = load_config(folder / "bridge.toml", env=ENV)
    policies = {r: config.retailers[r].policy for r in KEEPS_IDS}
    expected = expected_returns(load, policies)
    verdict.acknowledged_messages = sum(c.acked for c in load.copies)
    verdict.acknowledged_rmas = sum(len(c.last_acked()) for c in load.copies)
    verdict.unexpected_answers = load.unexpected[:10]
    effects = await query(
        db,
        "SELECT destination, idempotency_key, state, dead_reason FROM outbox"
        " WHERE destination LIKE 'kibo.returns:%'",
    )
    delivered: dict[str, set[str]] = {r: set() for r in KEEPS_IDS}
    parked_orders: dict[str, Counter[str]] = {r: Counter() for r in KEEPS_IDS}
    for retailer, key, state, _ in _per_retailer(effects):
        verdict.outbox[state] = verdict.outbox.get(state, 0) + 1
        if state == "delivered":
            delivered[retailer].add(key)
        elif state == "dead":
            parked_orders[retailer][key.rsplit(":", 1)[1]] += 1
    for retailer, sandbox in sandboxes.items():
        returns = sandbox.find_returns()
        actual = Counter(r["externalOrderID"] for r in returns)
        want = expected[retailer]
        verdict.expected_returns[retailer] = sum(want.values())
        verdict.returns[retailer] = len(returns)
        verdict.duplicates[retailer] = sum((actual - want).values())
        missing = want - actual
        verdict.missing[retailer] = sum(missing.values())
        verdict.parked[retailer] = sum(parked_orders[retailer].values())
        verdict.missing_not_parked[retailer] = sum((missing - parked_orders[retailer]).values())
        derived = {derive_return_id(k) for k in delivered[retailer]}
        verdict.foreign_return_ids[retailer] = sum(
            1 for r in returns if r["returnID"] not in derived
        )
        creates = sandbox.create_requests()
        verdict.refused_as_taken[retailer] = sum(1 for r in creates if r.outcome == "conflict")
        verdict.creates_sent[retailer] = len(creates)
    verdict.inbox = dict(await query(db, "SELECT status, COUNT(*) FROM inbox GROUP BY status"))
    (flags,) = await query(db, "SELECT COUNT(*) FROM flags")
    verdict.flags = int(flags[0])
    verdict.tracebacks = list(child_tracebacks(folder))
    verdict.settled = dict(settle_log_counts(folder))


SETTLE_MESSAGES = {
    "lost create answer settled by Get Return": "settled by Get Return",
    "refused create settled by Get Return": "refused, then settled by Get Return",
    "lost create not found by Get Return: sending it again": "not found, sent again",
    "lost create answer settled by an announced return": "settled by recorded evidence",
    "create of unknown outcome found by Get Return reconciliation": "found by the reconciler",
}


def settle_log_counts(folder: Path) -> Counter[str]:
    """How often each way of settling an unknown create was logged by the daemons."""
    counts: Counter[str] = Counter()
    for log in folder.glob("child-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            with contextlib.suppress(ValueError):
                what = SETTLE_MESSAGES.get(json.loads(line).get("message"))
                if what is not None:
                    counts[what] += 1
    return counts


def main_seed(env_name: str = "KIBO_CRASH_SEED") -> int:
    return int(os.environ.get(env_name, random.SystemRandom().randrange(2**32)))


def dump(verdict: Verdict) -> str:
    return json.dumps(verdict.as_json(), indent=2, sort_keys=True)
