"""Per-destination rate limiting over one or more sliding windows, with priorities.

A limiter admits a call when every window (e.g. 2 per second *and* 120 per minute) has room,
measured over the last ``period`` seconds of admitted calls (a true sliding log, so no burst
at window edges can exceed the partner's count). Waiters are served by priority, then
arrival. ``pause(seconds)`` stops admissions (a 429 without headers, maintenance), and
``calibrate(remaining, period)`` lowers the known room when the partner's headers say
others are spending the same key. ``seed(ages)`` puts a previous process's calls back in the
windows at start (see :mod:`bridge.http.journal`), so a restart never overruns the partner.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum


class Priority(IntEnum):
    """Lower value is served first."""

    LIVE = 0
    RECONCILE = 1
    BACKFILL = 2


@dataclass(frozen=True)
class Window:
    limit: int
    period: float


class Slot:
    """An admitted call. Until :meth:`done` it occupies its windows as if sent *now*; after,
    it counts from when it was answered: the partner saw it somewhere in between, and a
    busy client may send it well after admission. Safe at the cost of one round trip per
    window period."""

    __slots__ = ("_clock", "_entry", "_release", "_wake")

    def __init__(
        self,
        entry: list[float | None],
        clock: Callable[[], float],
        wake: Callable[[], None] | None,
        release: Callable[[list[float | None]], None] | None = None,
    ) -> None:
        self._entry = entry
        self._clock = clock
        self._wake = wake
        self._release = release

    def done(self) -> None:
        if self._entry[0] is None:
            self._entry[0] = self._clock()
            if self._wake is not None:
                self._wake()

    def release(self) -> None:
        """Give the admission back unused: nothing was sent (e.g. no credentials yet)."""
        if self._entry[0] is None and self._release is not None:
            self._release(self._entry)
            self._release = None


class RateLimiter:
    """Sliding-log limiter over several windows; fair by priority then arrival."""

    def __init__(
        self,
        windows: list[Window] | tuple[Window, ...] = (),
        clock: Callable[[], float] = time.monotonic,
        safety: float = 0.0,
    ) -> None:
        self.windows = tuple(windows)
        self._clock = clock
        self._safety = safety
        self._log: deque[list[float | None]] = deque()
        self._paused_until = 0.0
        self._external_use: dict[float, tuple[int, float]] = {}
        self._waiters: list[tuple[int, int, asyncio.Future[list[float | None]]]] = []
        self._seq = itertools.count()
        self._wake: asyncio.TimerHandle | None = None
        self.admitted = 0

    @property
    def unlimited(self) -> bool:
        return not self.windows

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))

    @property
    def horizon(self) -> float:
        """The longest window: how far back admissions matter."""
        return max((w.period for w in self.windows), default=0.0)

    def seed(self, ages: list[float]) -> None:
        """Count calls made ``ages`` seconds ago (by a previous process) in the windows.
        Call before the first :meth:`acquire`; calls older than every window are ignored."""
        now = self._clock()
        past = sorted(now - max(0.0, age) for age in ages if age < self.horizon)
        seeded: list[list[float | None]] = [[t] for t in past]
        self._log = deque(seeded + list(self._log))

    def calibrate(self, period: float, remaining: int) -> None:
        """The partner says ``remaining`` calls are left in its ``period`` window now."""
        for window in self.windows:
            if window.period == period:
                used_here = self._count_since(self._clock() - period)
                external = max(0, window.limit - remaining - used_here)
                self._external_use[period] = (external, self._clock() + period)

    def _count_since(self, since: float) -> int:
        return sum(1 for t in self._times() if t > since)

    def _times(self) -> list[float]:
        """When each logged call counts: its answer's time, or now while it is in flight
        (the partner may receive it at any moment until it answers)."""
        now = self._clock()
        return [now if t is None else t for (t,) in self._log]

    def _delay(self) -> float:
        now = self._clock()
        delay = max(0.0, self._paused_until - now)
        horizon = max((w.period for w in self.windows), default=0.0)
        while self._log and self._log[0][0] is not None and self._log[0][0] <= now - horizon:
            self._log.popleft()
        for window in self.windows:
            external, until = self._external_use.get(window.period, (0, 0.0))
            if until <= now:
                external = 0
            in_window = sorted(t for t in self._times() if t > now - window.period)
            room = window.limit - external
            if len(in_window) >= room:
                index = len(in_window) - room
                oldest_blocking = in_window[index] if index < len(in_window) else now
                delay = max(delay, oldest_blocking + window.period - now + self._safety)
        return delay

    def ticket(self) -> int:
        """A place in line: pass it to every :meth:`acquire` of one request, so a request
        that must go again (its credential was refused and replaced) keeps its turn."""
        return next(self._seq)

    async def acquire(self, priority: Priority = Priority.LIVE, ticket: int | None = None) -> Slot:
        """Wait until a call may be made, then record it. Call :meth:`Slot.done` when the
        answer arrived: the call then counts from that moment, since the partner saw it
        somewhere between admission and answer (a busy client may send it late). Waiters
        are served by priority, then by ``ticket`` (arrival when none is given)."""
        if self.unlimited and self._paused_until <= self._clock():
            self.admitted += 1
            return Slot([self._clock()], self._clock, None)
        future: asyncio.Future[list[float | None]] = asyncio.get_running_loop().create_future()
        place = ticket if ticket is not None else next(self._seq)
        heapq.heappush(self._waiters, (int(priority), place, future))
        self._schedule()
        try:
            entry = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._log.remove(future.result())  # admitted, the caller went away: give it back
                self.admitted -= 1
            self._waiters = [w for w in self._waiters if w[2] is not future]
            heapq.heapify(self._waiters)
            self._schedule()
            raise
        return Slot(entry, self._clock, self._schedule, self._give_back)

    def _give_back(self, entry: list[float | None]) -> None:
        for index, logged in enumerate(self._log):
            if logged is entry:  # identity: entries of calls in flight are equal ([None])
                del self._log[index]
                self.admitted -= 1
                break
        self._schedule()

    def _schedule(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        while self._waiters:
            if self._waiters[0][2].done():
                heapq.heappop(self._waiters)
                continue
            delay = self._delay()
            if delay > 0:
                self._wake = asyncio.get_running_loop().call_later(delay, self._schedule)
                return
            _, _, future = heapq.heappop(self._waiters)
            entry: list[float | None] = [None]
            self._log.append(entry)
            self.admitted += 1
            future.set_result(entry)
