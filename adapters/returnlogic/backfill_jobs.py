"""Backfill jobs the daemon runs, so one ReturnLogic rate budget serves the backfill and the
live polls.

A rate governor lives in one process: a ``backfill`` command that called ReturnLogic from its
own process beside the daemon would have a governor of its own, and the two together could
exceed the key's 2/s and 120/min. So when a daemon runs for the same store, the command makes
no partner call: it asks the daemon, through the store they share, and follows the job there.

How the command knows a daemon runs. Every daemon whose configuration has ReturnLogic for a
retailer runs that retailer's backfill runner (a scheduled job, so only ``run`` has it, never a
command), which writes a presence beat, the cursor ``returnlogic.backfill-runner:<retailer>``
(owner id and store time), every :data:`PRESENCE_BEAT` s. A beat younger than
:data:`PRESENCE_STALE_AFTER` s means a daemon on this store runs jobs for that retailer. The
store decides, not the network: the command finds the daemon that shares its data (the one
whose budget counts), whatever host and port it listens on, and needs no new endpoint.

The job is the retailer's checkpoint (``returnlogic.backfill:<retailer>``, see
:mod:`adapters.returnlogic.backfill`), marked ``requested``. Requesting is idempotent: an
unfinished job is followed, never started twice, whatever ``--since``/``--until`` say. The
runner picks up a requested, unfinished job no live process holds, holds it (renewed every
:data:`~adapters.returnlogic.backfill.HOLD_BEAT` s) and runs it with the daemon's governor, at
backfill priority; it checkpoints after every page, so a daemon stopped or killed mid-job
resumes it from the stored cursor after its restart (at once after a graceful stop, once the
old hold is stale after kill -9). The command shows the job's progress from the checkpoint and
exits when it is done, or with 1 when the daemon's beat stops (the job waits for the daemon).

Without a fresh beat the command runs the job itself, in-process, through the same lifecycle
(:func:`bridge.app.running`, without the engine and scheduler), holding the job so that a
daemon started meanwhile does not run it too. One replica per store is assumed here: several
daemons on one store would each pick the job up once its hold went stale, never two at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from adapters.returnlogic.backfill import (
    BackfillRefused,
    BackfillReport,
    Checkpoint,
    Progress,
    backfill_orders,
    checkpoint_name,
)
from adapters.returnlogic.orders import format_when, parse_when
from bridge.config import RetailerConfig
from bridge.errors import BridgeError, ConfigError
from bridge.ports import ORDER_PUBLISHER, AdapterContext

log = logging.getLogger(__name__)

PRESENCE_BEAT = 2.0
"""How often (s) a daemon's runner says it is there."""

PRESENCE_STALE_AFTER = 10.0
"""A presence beat older than this (s) means no daemon runs jobs for the retailer."""

JOB_POLL = 0.5
"""How often (s) the runner looks for a requested job, and a command for its progress."""

RETRY_CAP = 60.0
"""The longest wait (s) before a job that failed (ReturnLogic down) is tried again."""


def presence_name(retailer: str) -> str:
    return f"returnlogic.backfill-runner:{retailer}"


@dataclass(frozen=True)
class Presence:
    """A daemon's runner for one retailer, as its last beat says."""

    owner: str
    beat_at: float

    @classmethod
    def load(cls, text: str | None) -> Presence | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(owner=str(data["owner"]), beat_at=float(data["beat_at"]))
        except (ValueError, KeyError, TypeError):
            return None

    def dump(self) -> str:
        return json.dumps({"owner": self.owner, "beat_at": self.beat_at}, sort_keys=True)


async def daemon_presence(runtime: AdapterContext, retailer: str) -> Presence | None:
    """The daemon that runs ``retailer``'s backfill jobs on this store, if its beat is fresh."""
    store = runtime.store
    presence = Presence.load(await store.get_cursor(presence_name(retailer)))
    if presence is None or (await store.now()) - presence.beat_at >= PRESENCE_STALE_AFTER:
        return None
    return presence


class BackfillRunner:
    """One retailer's backfill runner inside the daemon: beats, picks up requested jobs."""

    def __init__(self, runtime: AdapterContext, retailer: str) -> None:
        self.runtime = runtime
        self.retailer = retailer
        self.owner = runtime.engine.owner  # unique per process (instance/pid/start)
        self.failures = 0

    async def start(self) -> None:
        """Startup hook: schedule :meth:`run` once, now. Only the daemon starts its scheduler,
        so a command never runs jobs behind the operator's back."""
        self.runtime.jobs.once(f"returnlogic-backfill-runner:{self.retailer}", self.run)

    async def run(self) -> None:
        """Beat and run requested jobs until the daemon stops (the scheduler cancels it)."""
        beating = asyncio.create_task(self._beat(), name=f"backfill-beat:{self.retailer}")
        try:
            while True:
                await self.run_requested()
                await asyncio.sleep(self._pause())
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating

    async def _beat(self) -> None:
        store = self.runtime.store
        while True:
            try:
                beat = Presence(self.owner, await store.now())
                await store.set_cursor(presence_name(self.retailer), beat.dump())
            except BridgeError as exc:
                log.warning(
                    "backfill runner beat not written",
                    extra={"retailer": self.retailer, "reason": str(exc)},
                )
            await asyncio.sleep(PRESENCE_BEAT)

    def _pause(self) -> float:
        if not self.failures:
            return JOB_POLL
        return min(RETRY_CAP, JOB_POLL * 2.0**self.failures)

    async def run_requested(self) -> BackfillReport | None:
        """Run the retailer's requested job, if there is one that no live process holds."""
        store = self.runtime.store
        try:
            job = Checkpoint.load(await store.get_cursor(checkpoint_name(self.retailer)))
            if job is None or job.done or not job.requested:
                return None
            if job.held_by_other(self.owner, await store.now()) is not None:
                return None
            log.info(
                "backfill job started in the daemon",
                extra={"retailer": self.retailer, "since": job.since, "skip": job.skip},
            )
            report = await backfill_orders(
                self.runtime,
                self.retailer,
                _moment(job.since),
                _moment(job.until),
                owner=self.owner,
            )
        except Exception as exc:  # one job's failure ends that run, never the runner
            self.failures += 1
            log.warning(
                "backfill job stopped; it is tried again",
                extra={
                    "retailer": self.retailer,
                    "reason": f"{type(exc).__name__}: {exc}"[:300],
                    "failures": self.failures,
                },
            )
            return None
        self.failures = 0
        return report


def _moment(text: str) -> datetime:
    when = parse_when(text)
    if when is None:
        raise ConfigError(f"backfill checkpoint: unreadable date {text!r}")
    return when


async def request_job(
    runtime: AdapterContext,
    retailer: str,
    since: datetime,
    until: datetime,
    *,
    restart: bool,
    progress: Progress,
) -> Checkpoint:
    """Ask the daemon to run the backfill of ``[since, until]``, or join the unfinished one.

    Idempotent: an unfinished job is followed as it is (``--restart`` is refused while the
    daemon or another command runs it)."""
    store = runtime.store
    name = checkpoint_name(retailer)
    job = Checkpoint.load(await store.get_cursor(name))
    now = await store.now()
    if job is not None and not job.done:
        holder = job.held_by_other(None, now)
        if restart and (job.requested or holder is not None):
            raise BackfillRefused(
                f"--restart: the backfill of {job.since} .. {job.until} is running"
                f" ({holder or 'queued for the daemon'}); let it finish, or stop the daemon"
            )
        if not restart:
            progress.note(
                f"following the unfinished backfill of {job.since} .. {job.until}"
                f" at {job.skip:,} (run by the daemon)"
            )
            if not job.requested and holder is None:
                job.requested = True
                await store.set_cursor(name, job.dump())
            return job
    if since >= until:
        raise ConfigError(f"--since ({format_when(since)}) must be before --until")
    job = Checkpoint(
        since=format_when(since),
        until=format_when(until, round_up=True),
        started_at=format_when(datetime.fromtimestamp(now, UTC)),
        requested=True,
    )
    await store.set_cursor(name, job.dump())
    progress.note(f"backfill of {job.since} .. {job.until} queued for the running daemon")
    return job


async def follow_job(
    runtime: AdapterContext, retailer: str, first: Checkpoint, progress: Progress
) -> BackfillReport:
    """Show the job's progress from its checkpoint until it is done. ``BridgeError`` when the
    daemon's beat stops first (the job resumes when the daemon starts again)."""
    store = runtime.store
    name = checkpoint_name(retailer)
    started = time.monotonic()
    shown_total = False
    publisher = runtime.has_service(retailer, ORDER_PUBLISHER)
    job = first
    try:
        while True:
            current = Checkpoint.load(await store.get_cursor(name))
            if current is not None:
                job = current
            if job.total is not None and not shown_total:
                progress.start(job.total, job.skip)
                shown_total = True
            elif shown_total:
                progress.update(job.skip)
            if job.done:
                break
            if await daemon_presence(runtime, retailer) is None and (
                job.held_by_other(None, await store.now()) is None
            ):
                raise BridgeError(
                    "the daemon stopped before the backfill finished; it resumes when the"
                    " daemon starts again (or run this command without a daemon)"
                )
            await asyncio.sleep(JOB_POLL)
    finally:
        if shown_total:
            progress.finish()
    return BackfillReport.between(
        retailer, first, job, time.monotonic() - started, publisher=publisher
    )


def setup(runtime: AdapterContext, retailer: RetailerConfig) -> None:
    """Wire ``retailer``'s backfill runner (started with the daemon's scheduler)."""
    runner = BackfillRunner(runtime, retailer.id)
    runtime.on_startup(runner.start)


__all__ = [
    "JOB_POLL",
    "PRESENCE_BEAT",
    "PRESENCE_STALE_AFTER",
    "BackfillRunner",
    "Presence",
    "daemon_presence",
    "follow_job",
    "presence_name",
    "request_job",
    "setup",
]
