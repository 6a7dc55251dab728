"""``returns-bridge backfill orders``: load ReturnLogic order history, resumably.

::

    returns-bridge backfill orders --config PATH --retailer ID --since 180d [--until 2025-01-01]
                                   [--restart] [--log-level WARNING]

Exit 0 done, 1 stopped (rerun to resume; also when the daemon running the job stopped), 2 bad
arguments or ``--restart`` while the job runs, 130 interrupted (rerun to resume).

How it pages. ReturnLogic's ``GET /v1/orders`` has no sort parameter (the spec lists
``skip``, ``limit``, ``minCreateDate``, ``maxCreateDate`` and a few exact-match filters) and
answers in an unspecified order, so the backfill pins one closed ``createDate`` window,
``[since, until]`` (``until`` defaults to the moment the run starts), and pages through it
with ``skip`` and ``limit`` = ``orders.page_size`` (250). ``createDate`` is set once, when
ReturnLogic creates the record, so the set of records in a window that ended in the past does
not change while it is read, and ``skip`` addresses the same records on a later run. Orders
created after ``until`` are the live poll's. ``GET /v1/orders/count`` with the same filters
gives the total for the progress bar, and lets the run stop after the last full page without
asking for an empty one. The next page is requested while the current one is mapped and
stored, so the requests go out at the rate the governor allows.

Checkpoint. After each page has been published, the store cursor
``returnlogic.backfill:<retailer>`` records the window and the ``skip`` reached (JSON). A run
that finds an unfinished checkpoint resumes it -- same window, from that ``skip`` -- whatever
``--since``/``--until`` say (it prints so); ``--restart`` drops it. A page applied but not yet
checkpointed when the run stopped is read again: unchanged snapshots are not sent twice.

Rate. Every request is made at ``Priority.BACKFILL`` through the team's governor (2/s and
120/min per key): inside one process, live and reconcile calls are served first. A governor
lives in one process, so the command never calls ReturnLogic beside a running daemon: when
the daemon's backfill runner beats in the store, the command queues the job there and
follows it, and the daemon runs it with the governor its polls use
(:mod:`adapters.returnlogic.backfill_jobs`, which says how the command knows). Without a
daemon the command runs it itself, in-process, through :func:`bridge.app.running`. A 429
pauses and retries, never fails the run. The process running a job holds it
(``owner``/``beat_at`` in the checkpoint, renewed every :data:`HOLD_BEAT` s), so no two
processes run one retailer's backfill at once.

Delivery. The backfill stores each page's canonical orders and queues the changed ones to the
retailer's order publisher in the store's outbox, in the page's transaction; it does **not**
deliver them. The daemon's dispatcher delivers them (now, if the daemon runs beside it, or when
it starts), under the Optoro rate limit it already enforces for that destination: a second
dispatcher in this process would have its own limiter and could exceed it. The store is the
same SQLite file as the daemon's (WAL and ``busy_timeout`` let the two processes write).

Records that fail mapping go to the daemon's inbox quarantine as in a poll (see
:mod:`adapters.returnlogic.orders`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from adapters.returnlogic.orders import PageResult, format_when, parse_when, sync_for
from bridge.errors import BridgeError, ConfigError
from bridge.http import Priority
from bridge.ports import ORDER_PUBLISHER, AdapterContext

log = logging.getLogger(__name__)

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def checkpoint_name(retailer: str) -> str:
    return f"returnlogic.backfill:{retailer}"


def parse_moment(text: str, now: datetime) -> datetime:
    """``180d`` / ``12h`` / ``30m`` / ``90s`` / ``2w`` before ``now``, or an ISO-8601 date or
    date-time (a date is midnight UTC, a naive time is UTC). ``ValueError`` otherwise."""
    relative = _RELATIVE.match(text)
    if relative:
        amount, unit = float(relative.group(1)), relative.group(2).lower()
        return now - timedelta(**{_UNITS[unit]: amount})
    when = parse_when(text)
    if when is None:
        raise ValueError(
            f"{text!r} is neither a duration (180d, 12h, 30m) nor an ISO-8601 date or date-time"
        )
    return when


COUNTERS = ("pages", "records", "published", "stale", "quarantined", "queued")
"""What a job has done so far, every run of it included (kept in its checkpoint)."""

HOLD_STALE_AFTER = 10.0
"""A job whose holder has not beaten for this long (s) is free: its process is gone."""

HOLD_BEAT = 2.0
"""How often (s) the process running a job renews its hold."""


@dataclass
class Checkpoint:
    """The state of one backfill job, kept in the store after every page.

    ``requested``: a command asked the daemon to run it (:mod:`adapters.returnlogic.
    backfill_jobs`). ``owner`` / ``beat_at`` (store time): the process running it now, and
    when it last said so; ``counts``: :data:`COUNTERS` over every run of the job."""

    since: str
    until: str
    skip: int = 0
    total: int | None = None
    done: bool = False
    started_at: str = ""
    requested: bool = False
    owner: str | None = None
    beat_at: float | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def held_by_other(self, owner: str | None, now: float) -> str | None:
        """The other process that runs this job now (``None``: nobody, or ``owner``)."""
        if self.owner is None or self.owner == owner or self.beat_at is None:
            return None
        return self.owner if now - self.beat_at < HOLD_STALE_AFTER else None

    def add(self, result: PageResult) -> None:
        for name in COUNTERS:
            moved = 1 if name == "pages" else int(getattr(result, name))
            self.counts[name] = self.counts.get(name, 0) + moved

    def dump(self) -> str:
        return json.dumps(
            {
                "since": self.since,
                "until": self.until,
                "skip": self.skip,
                "total": self.total,
                "done": self.done,
                "started_at": self.started_at,
                "requested": self.requested,
                "owner": self.owner,
                "beat_at": self.beat_at,
                "counts": self.counts,
            },
            sort_keys=True,
        )

    @classmethod
    def load(cls, text: str | None) -> Checkpoint | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            beat_at = data.get("beat_at")
            return cls(
                since=str(data["since"]),
                until=str(data["until"]),
                skip=int(data["skip"]),
                total=data.get("total"),
                done=bool(data.get("done")),
                started_at=str(data.get("started_at", "")),
                requested=bool(data.get("requested")),
                owner=data.get("owner"),
                beat_at=float(beat_at) if beat_at is not None else None,
                counts={str(k): int(v) for k, v in (data.get("counts") or {}).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("unreadable backfill checkpoint ignored", extra={"checkpoint": text[:200]})
            return None


class BackfillBusy(BridgeError):
    """Another process runs this retailer's backfill now; wait for it or follow it."""


class HandedOver(BridgeError):
    """A daemon started while this process ran the job: the job is now the daemon's."""


class BackfillRefused(BridgeError):
    """The request contradicts the job that runs now (e.g. ``--restart`` while it runs)."""


@dataclass
class BackfillReport:
    """What one backfill run did (this run only, not the resumed part)."""

    retailer: str
    since: str
    until: str
    total: int = 0
    start_skip: int = 0
    """Where this run started (> 0: resumed from a checkpoint)."""
    skip: int = 0
    """Records read so far in the window, earlier runs included."""
    pages: int = 0
    records: int = 0
    published: int = 0
    stale: int = 0
    quarantined: int = 0
    queued: int = 0
    elapsed: float = 0.0
    finished: bool = False
    publisher: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def resumed(self) -> bool:
        return self.start_skip > 0

    def add(self, result: PageResult) -> None:
        self.pages += 1
        self.records += result.records
        self.published += result.published
        self.stale += result.stale
        self.quarantined += result.quarantined
        self.queued += result.queued

    @classmethod
    def between(
        cls, retailer: str, first: Checkpoint, last: Checkpoint, elapsed: float, publisher: bool
    ) -> BackfillReport:
        """What a job did from checkpoint ``first`` to ``last`` (a command following a job
        that the daemon runs)."""

        def moved(counter: str) -> int:
            return last.counts.get(counter, 0) - first.counts.get(counter, 0)

        return cls(
            retailer,
            last.since,
            last.until,
            total=last.total or 0,
            start_skip=first.skip,
            skip=last.skip,
            pages=moved("pages"),
            records=moved("records"),
            published=moved("published"),
            stale=moved("stale"),
            quarantined=moved("quarantined"),
            queued=moved("queued"),
            elapsed=elapsed,
            finished=last.done,
            publisher=publisher,
        )

    def summary(self) -> str:
        rate = self.records / self.elapsed if self.elapsed > 0 else 0.0
        where = "resumed at" if self.resumed else "from"
        text = (
            f"backfill {self.retailer}: orders created {self.since} .. {self.until}:"
            f" {self.skip:,}/{self.total:,} read ({where} {self.start_skip:,});"
            f" this run {self.records:,} orders in {self.pages} pages,"
            f" {self.elapsed:.1f} s ({rate:,.0f} orders/s): {self.published:,} stored,"
            f" {self.stale:,} older than stored, {self.quarantined:,} quarantined;"
            f" {self.queued:,} publisher requests queued"
        )
        if not self.publisher:
            text += " (no order publisher: orders stored only)"
        elif self.queued:
            text += " (the daemon delivers them)"
        return text


class Progress:
    """A one-line progress bar on a terminal (``\\r`` updates): count/total, percentage,
    orders/s of this run and ETA. On anything else (a log file) one line per update at most
    every ``every`` seconds."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        width: int = 28,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.every = every
        self.clock = clock
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = 0
        self.base = 0
        self.started = clock()
        self.done = 0
        self._last_print = -1e9
        self._last_done = -1
        self._last_len = 0

    def note(self, text: str) -> None:
        """A line of its own (e.g. "resuming ..."), before the bar."""
        self.stream.write(text + "\n")
        self.stream.flush()

    def start(self, total: int, done: int) -> None:
        self.total, self.base, self.done = total, done, done
        self.started = self.clock()
        self.update(done, force=True)

    def line(self) -> str:
        total = max(self.total, self.done)
        fraction = self.done / total if total else 1.0
        filled = int(self.width * fraction)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = self.clock() - self.started
        moved = self.done - self.base
        rate = moved / elapsed if elapsed > 0 else 0.0
        eta = _duration((total - self.done) / rate) if rate > 0 else "--:--"
        return (
            f"[{bar}] {self.done:,}/{total:,} {fraction:6.1%}"
            f"  {rate:,.0f} orders/s  ETA {eta}  elapsed {_duration(elapsed)}"
        )

    def update(self, done: int, *, force: bool = False) -> None:
        self.done = done
        now = self.clock()
        if not (self.tty or force or now - self._last_print >= self.every):
            return
        if not self.tty and done == self._last_done:
            return
        self._last_print, self._last_done = now, done
        text = self.line()
        if self.tty:
            pad = " " * max(0, self._last_len - len(text))
            self.stream.write(f"\r{text}{pad}")
            self._last_len = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        self.update(self.done, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


async def backfill_orders(
    runtime: AdapterContext,
    retailer: str,
    since: datetime,
    until: datetime,
    *,
    restart: bool = False,
    progress: Progress | None = None,
    on_page: Callable[[int, list[Any], PageResult], Any] | None = None,
    owner: str | None = None,
    requested: bool = False,
    hand_over: Callable[[], Awaitable[bool]] | None = None,
) -> BackfillReport:
    """Read every order created in ``[since, until]`` at backfill priority, publish each page
    and checkpoint after it; resume an unfinished checkpoint unless ``restart``.

    ``on_page(skip, records, result)`` is called after each page is published and
    checkpointed (the benchmark uses it to keep the raw records). ``owner``: this process
    holds the job while it runs (renewed every :data:`HOLD_BEAT` s; :class:`BackfillBusy`
    when another live process holds it); ``requested``: a new job is marked as the daemon's
    to run; ``hand_over()`` true after a page: stop there and leave the job to the daemon
    (:class:`HandedOver`)."""
    sync = sync_for(runtime, retailer)
    store = runtime.store
    name = checkpoint_name(retailer)
    checkpoint = Checkpoint.load(await store.get_cursor(name))
    if checkpoint is not None and not checkpoint.done and owner is not None:
        holder = checkpoint.held_by_other(owner, await store.now())
        if holder is not None:
            raise BackfillBusy(f"the backfill of {retailer!r} is running in {holder}")
    if restart:
        checkpoint = None
    notes = []
    if checkpoint is not None and not checkpoint.done:
        notes.append(
            f"resuming the unfinished backfill of {checkpoint.since} .. {checkpoint.until}"
            f" at {checkpoint.skip:,} (--restart starts over)"
        )
    else:
        if since >= until:
            raise ConfigError(f"--since ({format_when(since)}) must be before --until")
        checkpoint = Checkpoint(
            since=format_when(since),
            until=format_when(until, round_up=True),
            started_at=format_when(datetime.now(UTC)),
            requested=requested,
        )
    checkpoint.owner = owner
    checkpoint.beat_at = await store.now() if owner is not None else None
    params = {"minCreateDate": checkpoint.since, "maxCreateDate": checkpoint.until}
    report = BackfillReport(
        retailer,
        checkpoint.since,
        checkpoint.until,
        start_skip=checkpoint.skip,
        skip=checkpoint.skip,
        publisher=runtime.has_service(retailer, ORDER_PUBLISHER),
        notes=notes,
    )
    started = time.monotonic()
    total = await sync.count(params, Priority.BACKFILL)
    checkpoint.total = report.total = total
    await store.set_cursor(name, checkpoint.dump())
    if progress is not None:
        for note in notes:
            progress.note(note)
        progress.start(total, checkpoint.skip)

    async def page_done(skip: int, records: list[Any], result: PageResult) -> None:
        assert checkpoint is not None
        checkpoint.skip = skip + len(records)
        checkpoint.add(result)
        handing_over = hand_over is not None and await hand_over()
        checkpoint.requested = checkpoint.requested or handing_over
        await store.set_cursor(name, checkpoint.dump())
        report.add(result)
        report.skip = checkpoint.skip
        report.elapsed = time.monotonic() - started
        if progress is not None:
            progress.update(checkpoint.skip)
        if on_page is not None:
            outcome = on_page(skip, records, result)
            if asyncio.iscoroutine(outcome):
                await outcome
        if handing_over:
            raise HandedOver(f"the backfill of {retailer!r} is handed over to the daemon")

    async def hold() -> None:
        assert checkpoint is not None
        while True:
            await asyncio.sleep(HOLD_BEAT)
            checkpoint.beat_at = await store.now()
            await store.set_cursor(name, checkpoint.dump())

    holding = asyncio.create_task(hold()) if owner is not None else None
    try:
        if checkpoint.skip < total:
            await sync.read(
                "backfill",
                params,
                Priority.BACKFILL,
                skip=checkpoint.skip,
                total=total,
                on_page=page_done,
            )
        checkpoint.done = True
        report.finished = True
    finally:
        if holding is not None:
            holding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holding
        report.elapsed = time.monotonic() - started
        if progress is not None:
            progress.finish()
        if checkpoint.done or owner is not None:
            checkpoint.owner = checkpoint.beat_at = None
            # best effort when the run was stopped: the store may be closing; an unreleased
            # hold goes stale after HOLD_STALE_AFTER s
            stopped = contextlib.suppress(Exception)
            with contextlib.nullcontext() if checkpoint.done else stopped:
                await store.set_cursor(name, checkpoint.dump())
    log.info(
        "returnlogic orders backfilled",
        extra={
            "retailer": retailer,
            "records": report.records,
            "queued": report.queued,
            "quarantined": report.quarantined,
        },
    )
    return report


# --- the command -----------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``returns-bridge backfill``."""
    entities = parser.add_subparsers(dest="entity", required=True, metavar="ENTITY")
    orders = entities.add_parser(
        "orders",
        help="ReturnLogic orders into the order publisher (Optoro), resumable",
        description=(
            "Page through the ReturnLogic orders created in [--since, --until] at backfill"
            " priority, publish the changed ones and checkpoint after every page; a rerun"
            " resumes an interrupted backfill. The running daemon delivers what is queued."
        ),
    )
    orders.add_argument("--config", required=True, help="TOML file or folder of TOML files")
    orders.add_argument("--retailer", required=True, help="retailer id")
    orders.add_argument(
        "--since",
        required=True,
        help="start of the createDate window: a duration back from now (180d, 12h) or an"
        " ISO-8601 date or date-time",
    )
    orders.add_argument("--until", default=None, help="end of the window (default: now)")
    orders.add_argument(
        "--restart", action="store_true", help="ignore an unfinished checkpoint and start over"
    )
    orders.add_argument("--log-level", default="WARNING", help="JSON logs on stderr (WARNING)")


def command(args: argparse.Namespace) -> int:
    """Run ``backfill orders``; 0 done, 1 stopped (rerun to resume), 2 bad arguments, 130
    interrupted (rerun to resume)."""
    from bridge.app import build_runtime, running
    from bridge.config import load_config
    from bridge.logs import configure_logging

    configure_logging(args.log_level.upper())
    now = datetime.now(UTC)
    try:
        since = parse_moment(args.since, now)
        until = parse_moment(args.until, now) if args.until else now
    except ValueError as exc:
        print(f"backfill: {exc}", file=sys.stderr)
        return 2
    config = load_config(Path(args.config))
    retailer = config.retailers.get(args.retailer)
    if retailer is None or not retailer.enabled:
        known = ", ".join(sorted(r for r, c in config.retailers.items() if c.enabled)) or "none"
        print(f"backfill: no enabled retailer {args.retailer!r} (known: {known})", file=sys.stderr)
        return 2
    if "returnlogic" not in retailer.platforms:
        print(f"backfill: retailer {args.retailer!r} has no [returnlogic] table", file=sys.stderr)
        return 2

    async def run() -> BackfillReport:
        from adapters.returnlogic import backfill_jobs as jobs

        runtime = build_runtime(config)
        progress = Progress(sys.stderr)
        async with running(runtime, engine=False, scheduler=False):
            daemon = await jobs.daemon_presence(runtime, args.retailer)
            if daemon is not None:  # its governor holds the budget: it runs the job
                job = await jobs.request_job(
                    runtime, args.retailer, since, until, restart=args.restart, progress=progress
                )
                return await jobs.follow_job(runtime, args.retailer, job, progress)

            async def daemon_started() -> bool:
                return await jobs.daemon_presence(runtime, args.retailer) is not None

            try:
                return await backfill_orders(
                    runtime,
                    args.retailer,
                    since,
                    until,
                    restart=args.restart,
                    progress=progress,
                    owner=runtime.engine.owner,
                    hand_over=daemon_started,
                )
            except HandedOver:
                progress.note("\na daemon started: it runs the rest of the backfill")
                stored = await runtime.store.get_cursor(checkpoint_name(args.retailer))
                handed = Checkpoint.load(stored)
                if handed is None:
                    raise BridgeError("the backfill checkpoint is gone") from None
                return await jobs.follow_job(runtime, args.retailer, handed, progress)

    try:
        report = asyncio.run(run())
    except KeyboardInterrupt:
        print("\nbackfill interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except ConfigError:
        raise
    except BackfillRefused as exc:
        print(f"backfill: {exc}", file=sys.stderr)
        return 2
    except BridgeError as exc:
        print(f"\nbackfill stopped: {exc}; run the same command again to resume", file=sys.stderr)
        return 1
    print(report.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m adapters.returnlogic.backfill orders ...`` (same as ``returns-bridge
    backfill orders ...``)."""
    parser = argparse.ArgumentParser(
        prog="returns-bridge backfill", description="Load history from a source platform."
    )
    configure(parser)
    args = parser.parse_args(argv)
    try:
        return command(args)
    except ConfigError as exc:
        print("\n".join(exc.problems) or str(exc), file=sys.stderr)
        return 2


def _register() -> None:
    from bridge.cli import register_command

    register_command(
        "backfill", "load history from a source platform (resumable)", configure, command
    )


_register()

if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "BackfillBusy",
    "BackfillRefused",
    "BackfillReport",
    "Checkpoint",
    "HandedOver",
    "Progress",
    "backfill_orders",
    "checkpoint_name",
    "command",
    "configure",
    "main",
    "parse_moment",
]
