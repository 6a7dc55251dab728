"""kill -9 at any instant, then restart: nothing acknowledged is lost, nothing is delivered
twice.

The whole pipeline (webhook -> inbox -> handler/state -> outbox -> HTTP destination) runs
in a child process (``crash_engine_child.py``) on one SQLite file. Concurrent senders post
events to it while the test kills it with SIGKILL at random moments -- some while
deliveries are in flight at the fake partner (``destination_server.py``), which also
injects 503s, 429s with ``Retry-After`` and "applied, then connection dropped" answers --
and starts it again. At the end the child drains the store and the test checks, against
the partner's record and the SQLite file:

* every event answered 200 reached the partner, applied exactly once;
* nothing was applied that was never sent, nothing is pending, nothing is dead;
* effects whose outcome was unknown (dropped answers, kills mid-call) were re-sent with the
  same idempotency key and deduplicated by the partner, not applied twice;
* per entity, effects were applied in the order they were written, and the stored state is
  the newest version. (Events themselves may be handled out of order after a kill: an item
  leased by the killed child waits for its lease to expire while the next child handles
  the entity's later events; versioning keeps the state right, and the summary counts
  these as "events handled after a newer one".)

The random choices come from one seed, printed and settable with ``CRASH_SEED``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.destination_server import FakeDestination, running_destination

CHILD = Path(__file__).resolve().with_name("crash_engine_child.py")
REPO = CHILD.parent.parent
LOAD_KILLS = 22
"""Kills while events are being sent (the issue asks for at least 20)."""
STARTUP_KILLS = 3
"""Extra kills before the child says it is ready (opening the store, recovering)."""
LANES = 20
THINK = (0.05, 0.25)
"""Seconds a lane waits between events: about 130 events/s in all, which the child
delivers as they come (a backlog would only make the final drain long)."""
EVENT_ID_HEADER = "X-Event-Id"  # as crash_engine_child.EVENT_ID_HEADER


def effect_key(entity: str, version: int) -> str:
    return f"evt:{entity}:{version}"  # as crash_engine_child.effect_key


class Child:
    """One run of the engine child; stderr goes to a file (read when it misbehaves)."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.port: int | None = None
        self.signalled = False

    @classmethod
    async def spawn(cls, db: Path, destination_url: str, log: Path) -> Child:
        with log.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(CHILD),
                str(db),
                destination_url,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=REPO,
            )
        return cls(proc, log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-20000:]

    async def ready(self) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not line.startswith(b"READY "):
            await self.reap()
            raise AssertionError(f"child did not start: {line!r}\n{self.stderr()}")
        self.port = int(line.split()[1])

    def alive(self) -> bool:
        return self.proc.returncode is None

    def kill(self) -> None:
        if not self.alive():
            code = self.proc.returncode
            raise AssertionError(f"child exited by itself ({code})\n{self.stderr()}")
        self.signalled = True
        self.proc.send_signal(signal.SIGKILL)

    async def reap(self) -> int:
        assert self.proc.stdout is not None
        # signal only a child not signalled yet: Popen.send_signal() polls first and would
        # reap a dead child behind the back of asyncio's child watcher
        if not self.signalled and self.alive():
            self.signalled = True
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.stdout.read()
        return await self.proc.wait()

    async def stop(self) -> int:
        """SIGTERM and the exit code (the caller still reaps)."""
        self.signalled = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            raise AssertionError(f"child ignored SIGTERM\n{self.stderr()}") from None


@dataclass
class Lane:
    """One sender: events for one entity, in version order, each until acknowledged."""

    entity: str
    version: int = 1


class Load:
    """Concurrent senders; like a real webhook sender, a lane re-sends an event until it is
    answered 200 and only then sends the entity's next version."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.lanes = [Lane(f"e{i:02d}") for i in range(LANES)]
        self.events: dict[str, bytes] = {}
        """Every event ever sent: effect key -> body."""
        self.acked: set[str] = set()
        self.sends = 0
        self.duplicate_sends = 0
        self.unexpected: list[tuple[str, int, str]] = []
        self._n = 0

    def body(self, lane: Lane) -> tuple[str, bytes]:
        key = effect_key(lane.entity, lane.version)
        if key not in self.events:
            self._n += 1
            event = {"entity": lane.entity, "version": lane.version, "n": self._n}
            self.events[key] = json.dumps(event).encode()
        return key, self.events[key]

    async def post(self, http: aiohttp.ClientSession, url: str, key: str, body: bytes) -> bool:
        self.sends += 1
        try:
            async with http.post(
                url, data=body, headers={EVENT_ID_HEADER: key, "Content-Type": "application/json"}
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError):
            return False  # the child died: not acknowledged
        if status == 200:
            self.acked.add(key)
            return True
        self.unexpected.append((key, status, text))
        return False

    async def run_lane(self, http: aiohttp.ClientSession, url: str, lane: Lane, more: bool) -> None:
        while True:
            key, body = self.body(lane)
            roll = self.rng.random()
            if roll < 0.05:  # the sender's retry races the original
                self.duplicate_sends += 1
                ok = any(await asyncio.gather(*(self.post(http, url, key, body) for _ in "ab")))
            else:
                ok = await self.post(http, url, key, body)
            if not ok:
                return
            if roll > 0.92:  # re-sent after the answer (a sender that missed the 200)
                self.duplicate_sends += 1
                if not await self.post(http, url, key, body):
                    return
            lane.version += 1
            if not more:
                return
            await asyncio.sleep(self.rng.uniform(*THINK))

    async def run(self, url: str, more: bool = True) -> None:
        """Send until the child dies (``more``) or re-send each lane's unacknowledged event."""
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            lanes = [
                lane
                for lane in self.lanes
                if more or effect_key(lane.entity, lane.version) in self.events
            ]
            await asyncio.gather(*(self.run_lane(http, url, lane, more) for lane in lanes))


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    # a reader beside the child's writer is fine in WAL mode
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        return list(conn.execute(sql).fetchall())


async def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    return await asyncio.to_thread(_query, db, sql)


DRAIN_SECONDS = 40.0


async def wait_drained(db: Path, child: Child) -> None:
    deadline = time.monotonic() + DRAIN_SECONDS
    while True:
        rows = await query(
            db,
            "SELECT (SELECT COUNT(*) FROM inbox WHERE status = 'pending'),"
            " (SELECT COUNT(*) FROM outbox WHERE state = 'pending')",
        )
        if rows[0] == (0, 0):
            return
        if not child.alive():
            raise AssertionError(f"child exited while draining\n{child.stderr()}")
        if time.monotonic() > deadline:
            child.proc.send_signal(signal.SIGUSR1)  # the child prints its tasks' stacks
            await asyncio.sleep(1)
            now = time.time()
            stuck = await query(
                db,
                f"SELECT id, idempotency_key, attempts, next_attempt_at - {now},"
                f" lease_until - {now}, lease_owner, last_error FROM outbox"
                " WHERE state = 'pending' ORDER BY id LIMIT 10",
            )
            raise AssertionError(
                f"not drained after {DRAIN_SECONDS:g}s: pending inbox/outbox {rows[0]};"
                f" first pending effects {stuck}\nchild stderr:\n{child.stderr()}"
            )
        await asyncio.sleep(0.1)


def child_tracebacks(folder: Path) -> dict[str, str]:
    """Log name -> its tail, for every child that printed a traceback."""
    logs = {log.name: log.read_text(errors="replace") for log in folder.glob("child-*.log")}
    return {name: text[-4000:] for name, text in logs.items() if "Traceback" in text}


def inject_faults(dest: FakeDestination, rng: random.Random) -> None:
    """Random transient faults for the next round (all retriable: none may dead-letter)."""
    roll = rng.random()
    if roll < 0.3:
        dest.configure(fail_next=rng.randint(1, 5), fail_status=503, fail_retry_after=None)
    elif roll < 0.45:
        dest.configure(fail_next=rng.randint(1, 3), fail_status=429, fail_retry_after=1)
    if rng.random() < 0.5:
        dest.configure(drop_next=dest.drop_next + rng.randint(1, 3))


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_kill_9_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.SystemRandom().randrange(2**32)))
    print(f"crash test seed: CRASH_SEED={seed}")
    rng = random.Random(seed)
    db = tmp_path / "bridge.db"
    load = Load(rng)
    kills = load_kills = kills_in_flight = 0
    unknown_at_kill: set[str] = set()  # keys the partner was working on when a kill came
    started = time.monotonic()

    async with running_destination(seed=seed) as dest:
        dest.configure(latency=0.005, latency_jitter=0.03)
        startup_rounds = set(rng.sample(range(LOAD_KILLS + STARTUP_KILLS), STARTUP_KILLS))
        for round_no in range(LOAD_KILLS + STARTUP_KILLS):
            child = await Child.spawn(db, dest.url, tmp_path / f"child-{round_no}.log")
            senders: asyncio.Task[None] | None = None
            try:
                if round_no in startup_rounds:
                    # anywhere from interpreter start to just after the store opened
                    await asyncio.sleep(rng.uniform(0.0, 0.6))
                    child.kill()
                    kills += 1
                    continue
                await child.ready()
                inject_faults(dest, rng)
                senders = asyncio.create_task(load.run(child.url))
                await asyncio.sleep(rng.uniform(0.1, 1.2))
                if rng.random() < 0.5:  # aim at a delivery in flight at the partner
                    for _ in range(200):
                        if dest.in_flight:
                            break
                        await asyncio.sleep(0.005)
                in_flight = dest.in_flight
                unknown_at_kill.update(
                    r.key for r in dest.requests if r.outcome == "pending" and r.key
                )
                child.kill()  # no await between the check and the kill
                kills += 1
                load_kills += 1
                kills_in_flight += in_flight > 0
                await asyncio.wait_for(senders, 30)
            finally:
                if senders is not None and not senders.done():
                    senders.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await senders
                await child.reap()

        # last start: re-send what was never acknowledged, then let everything drain
        dest.configure(fail_next=0, drop_next=0)
        child = await Child.spawn(db, dest.url, tmp_path / "child-final.log")
        try:
            await child.ready()
            await asyncio.wait_for(load.run(child.url, more=False), 30)
            await wait_drained(db, child)
            assert await child.stop() == 0, child.stderr()
        finally:
            await child.reap()

    outbox = await query(db, "SELECT idempotency_key, state, attempts FROM outbox ORDER BY id")
    inbox = await query(db, "SELECT status, COUNT(*) FROM inbox GROUP BY status")
    entities = dict(await query(db, "SELECT key, version FROM entities"))

    states: dict[str, int] = {}
    for _, state, _ in outbox:
        states[state] = states.get(state, 0) + 1
    outbox_keys = {key for key, _, _ in outbox}
    applied = set(dest.applied)
    # counted by event content as well as by key, so that a key that changed between
    # re-sends shows up as a duplicate rather than hiding one
    per_event = Counter(effect_key(p["entity"], p["version"]) for p in dest.applied.values())
    lost = load.acked - set(per_event)
    duplicated = {k: n for k, n in dest.applications.items() if n != 1}
    duplicated.update({key: n for key, n in per_event.items() if n != 1})
    dropped_keys = {r.key for r in dest.requests if r.outcome == "dropped"}
    # an event handled after a newer one of its entity (its lease was held by a killed
    # child while the next child went on): the state kept the newer version
    stale = sum(1 for payload in dest.applied.values() if not payload["newest"])
    summary = (
        f"crash test: {kills} kills ({load_kills} under load, {kills_in_flight} with a delivery"
        f" in flight), {len(load.acked)} acked, {len(lost)} lost, {len(duplicated)} duplicated,"
        f" {dest.replays} re-sends deduplicated by key ({len(dropped_keys)} answers dropped"
        f" after commit, {len(unknown_at_kill)} calls cut by a kill, {dest.failures} injected"
        f" 503/429); {load.sends} webhook posts ({load.duplicate_sends} deliberate duplicates),"
        f" {stale} events handled after a newer one; {time.monotonic() - started:.1f}s,"
        f" CRASH_SEED={seed}"
    )
    print(summary)

    assert not load.unexpected, load.unexpected[:5]
    assert not child_tracebacks(tmp_path)
    assert kills >= 20
    assert load_kills >= 20
    assert kills_in_flight >= 3, "too few kills landed while a delivery was in flight"
    assert len(load.acked) > 200, "the load was too light to mean anything"
    # nothing acknowledged is lost, nothing is applied twice, nothing invented
    assert not lost, f"acknowledged but never delivered: {sorted(lost)[:10]}"
    assert not duplicated, f"applied more than once: {duplicated}"
    assert all(k == effect_key(p["entity"], p["version"]) for k, p in dest.applied.items())
    invented = applied - set(load.events)
    assert not invented, f"applied but never sent: {sorted(invented)[:10]}"
    assert not dest.unkeyed, "a delivery went out without its Idempotency-Key"
    # the store agrees: one effect per distinct stored event, all delivered, none dead
    assert states == {"delivered": len(outbox)}, states
    assert outbox_keys == applied
    assert dict(inbox) == {"done": len(outbox)}, dict(inbox)
    # an answer lost after the partner applied it was re-sent with the same key
    assert dest.replays >= len(dropped_keys)
    for key in dropped_keys:
        assert dest.attempts[key] >= 2, key
    # so was every effect in flight when its sender was killed (the partner applied it
    # after the sender died): the next child re-sent it, not knowing the outcome
    assert unknown_at_kill
    for key in unknown_at_kill:
        assert dest.attempts[key] >= 2, key
        assert dest.applications[key] == 1, key
    # per entity: effects applied in the order they were written (one order_key at a
    # time), and the stored state is the newest version whatever order events were handled
    outbox_id = {key: i for i, (key, _, _) in enumerate(outbox)}
    last: dict[str, int] = {}
    newest: dict[str, int] = {}
    for key, payload in dest.applied.items():  # insertion order = order of first application
        entity = payload["entity"]
        assert outbox_id[key] > last.get(entity, -1), f"{key} applied out of outbox order"
        last[entity] = outbox_id[key]
        newest[entity] = max(newest.get(entity, 0), payload["version"])
    assert {k: json.loads(v) for k, v in entities.items()} == {e: [v] for e, v in newest.items()}
