"""Rate windows of the ReturnLogic sandbox: admission per key and what was observed.

ReturnLogic allows 2 requests per second and 120 per minute per API key. The sandbox counts
them over sliding windows: a request at ``t`` is admitted when fewer than ``limit`` admitted
requests of the same key fall in ``(t - width, t]``, for both widths. Refused requests (429)
do not use up the window, so a client that keeps knocking gets in as soon as the window
moves.

:class:`KeyWindows` also records, for the bridge's rate-governor tests, the largest number of
requests seen in any such window: over every request the key sent (``max_in_any_second``, the
governor's own discipline) and over the admitted ones only (never above the limits).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KeyWindows", "Peak", "Verdict"]


class Peak:
    """The most events in any window ``(t - width, t]``, kept incrementally (event times must
    not decrease)."""

    __slots__ = ("peak", "times", "width")

    def __init__(self, width: float) -> None:
        self.width = width
        self.times: deque[float] = deque()
        self.peak = 0

    def add(self, when: float) -> None:
        times = self.times
        times.append(when)
        edge = when - self.width
        while times[0] <= edge:
            times.popleft()
        if len(times) > self.peak:
            self.peak = len(times)

    def current(self, now: float) -> int:
        """Events in ``(now - width, now]``."""
        edge = now - self.width
        return sum(1 for t in self.times if edge < t <= now)


@dataclass(frozen=True)
class Verdict:
    admitted: bool
    limit_second: int
    limit_minute: int
    remaining_second: int
    remaining_minute: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit-Second": str(self.limit_second),
            "X-RateLimit-Limit-Minute": str(self.limit_minute),
            "X-RateLimit-Remaining-Second": str(self.remaining_second),
            "X-RateLimit-Remaining-Minute": str(self.remaining_minute),
        }


@dataclass
class KeyWindows:
    """One key's sliding windows and counters."""

    second: deque[float] = field(default_factory=deque)
    minute: deque[float] = field(default_factory=deque)
    seen_second: Peak = field(default_factory=lambda: Peak(1.0))
    seen_minute: Peak = field(default_factory=lambda: Peak(60.0))
    admitted_second: Peak = field(default_factory=lambda: Peak(1.0))
    admitted_minute: Peak = field(default_factory=lambda: Peak(60.0))
    requests: int = 0
    admitted: int = 0
    rejected: int = 0
    first_at: float | None = None
    last_at: float | None = None

    def _prune(self, now: float) -> None:
        for window, width in ((self.second, 1.0), (self.minute, 60.0)):
            edge = now - width
            while window and window[0] <= edge:
                window.popleft()

    def admit(self, now: float, per_second: int, per_minute: int, enforce: bool) -> Verdict:
        """Count a request at ``now``; admitted unless a window is full (and ``enforce``)."""
        self.requests += 1
        self.first_at = now if self.first_at is None else self.first_at
        self.last_at = now
        self.seen_second.add(now)
        self.seen_minute.add(now)
        self._prune(now)
        ok = not enforce or (len(self.second) < per_second and len(self.minute) < per_minute)
        if ok:
            self.admitted += 1
            self.second.append(now)
            self.minute.append(now)
            self.admitted_second.add(now)
            self.admitted_minute.add(now)
        else:
            self.rejected += 1
        return Verdict(
            admitted=ok,
            limit_second=per_second,
            limit_minute=per_minute,
            remaining_second=max(0, per_second - len(self.second)),
            remaining_minute=max(0, per_minute - len(self.minute)),
        )

    def peek(self, now: float, per_second: int, per_minute: int) -> Verdict:
        """The headers' view without counting a request."""
        self._prune(now)
        return Verdict(
            admitted=True,
            limit_second=per_second,
            limit_minute=per_minute,
            remaining_second=max(0, per_second - len(self.second)),
            remaining_minute=max(0, per_minute - len(self.minute)),
        )

    def stats(self, now: float) -> dict[str, Any]:
        self._prune(now)
        return {
            "requests": self.requests,
            "admitted": self.admitted,
            "rate_limited": self.rejected,
            "in_last_second": self.seen_second.current(now),
            "in_last_minute": self.seen_minute.current(now),
            "admitted_in_last_second": len(self.second),
            "admitted_in_last_minute": len(self.minute),
            "max_in_any_second": self.seen_second.peak,
            "max_in_any_minute": self.seen_minute.peak,
            "max_admitted_in_any_second": self.admitted_second.peak,
            "max_admitted_in_any_minute": self.admitted_minute.peak,
        }
