"""A rate governor's recent admissions, kept in the store so limits hold across restarts.

A restarted process used to start with empty windows and could send, in its first second
and minute, what its predecessor had just sent: over the partner's limit (429s). Now every
admission of a limiter with windows is written to the store *before* the request leaves the
process, and a new process seeds its limiter from the rows of the last window.

Why this and not the alternatives:

* "start as if the last window were full" costs up to a whole window of budget per restart
  (for ReturnLogic's 120/min, up to 120 requests or a minute of waiting), every restart;
* writing admissions in batches loses the last batch at kill -9, and those are exactly the
  calls that matter to the next process.

Cost: one small write per admission, only for limited destinations (ReturnLogic: at most 2
per second); the answer time of earlier calls rides along in that same write, and rows
older than the longest window are deleted in it. Times are the store's clock (wall clock),
never the monotonic clock, which means nothing to another process.

On seed, a call counts from its answer, as the live limiter counts it; a call never answered
(the process died during it) counts from ``min(admitted + timeout, now)``: the partner saw it
by then at the latest. A wall clock stepped backwards makes the seed more cautious, never less.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from bridge.http.ratelimit import RateLimiter


class AdmissionLog(Protocol):
    """What the journal needs from the store (every :class:`~bridge.store.Store` has it)."""

    clock: Callable[[], float]

    async def record_admission(
        self, limiter: str, admitted_at: float, answered: Mapping[int, float], forget_before: float
    ) -> int:
        """Write one admission (returns its row id), the answer times of earlier rows, and
        delete this limiter's rows admitted before ``forget_before``, in one transaction."""

    async def recent_admissions(
        self, limiter: str, since: float
    ) -> Sequence[tuple[float, float | None]]:
        """``(admitted_at, answered_at)`` of ``limiter``'s rows admitted after ``since``."""


class AdmissionJournal:
    """The persisted side of one limiter: seeds it once, records each admission."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self.seeded = False
        self.seeded_calls = 0
        """How many calls of a previous process the limiter started with."""
        self._lock = asyncio.Lock()
        self._answered: dict[int, float] = {}

    async def seed(self, log: AdmissionLog, limiter: RateLimiter) -> None:
        """Put the calls of the last window back in ``limiter`` (once per process)."""
        if self.seeded or limiter.unlimited:
            self.seeded = True
            return
        async with self._lock:
            if self.seeded:
                return
            now = log.clock()
            rows = await log.recent_admissions(self.name, now - limiter.horizon - self.timeout)
            ages = []
            for admitted_at, answered_at in rows:
                counted = (
                    answered_at if answered_at is not None else min(admitted_at + self.timeout, now)
                )
                ages.append(now - counted)
            limiter.seed(ages)
            self.seeded_calls = sum(1 for age in ages if age < limiter.horizon)
            self.seeded = True

    async def admitted(self, log: AdmissionLog, limiter: RateLimiter) -> int | None:
        """Record an admission before its request is sent; ``None`` for unlimited ones."""
        if limiter.unlimited:
            return None
        answered, self._answered = self._answered, {}
        now = log.clock()
        try:
            return await log.record_admission(
                self.name, now, answered, now - limiter.horizon - self.timeout
            )
        except BaseException:
            self._answered.update(answered)  # written with the next admission instead
            raise

    def answered(self, row: int | None, at: float) -> None:
        """The call of ``row`` was answered at ``at`` (written with the next admission)."""
        if row is not None:
            self._answered[row] = at
