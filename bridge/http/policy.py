"""What to do with a partner's response: the one overridable classifier per adapter."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from enum import StrEnum

import tenacity


class Action(StrEnum):
    DONE = "done"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    REAUTH = "reauth"


class ResponsePolicy:
    """Default: 2xx done; 408, 425, 429 and 5xx retry; 401 re-authenticate; other 4xx dead.

    Adapters subclass and override :meth:`classify` (e.g. a 409 "already exists" is done).
    """

    retry_statuses = frozenset({408, 425, 429})

    def classify(self, status: int, headers: Mapping[str, str], body: bytes) -> Action:
        if 200 <= status < 300:
            return Action.DONE
        if status == 401:
            return Action.REAUTH
        if status in self.retry_statuses or status >= 500:
            return Action.RETRY
        return Action.DEAD_LETTER

    def retry_after(self, headers: Mapping[str, str], now: float | None = None) -> float | None:
        """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or ``X-RateLimit-Reset``."""
        value = _header(headers, "Retry-After")
        if value is not None:
            value = value.strip()
            if value.isdigit():
                return float(value)
            try:
                when = email.utils.parsedate_to_datetime(value)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - (now if now is not None else time.time()))
        reset = _header(headers, "X-RateLimit-Reset")
        if reset is not None:
            try:
                number = float(reset)
            except ValueError:
                return None
            current = now if now is not None else time.time()
            return max(0.0, number - current) if number > 1e9 else number
        return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


class Backoff:
    """Capped exponential backoff with full jitter (tenacity's ``wait_random_exponential``):
    attempt ``n`` waits a random time up to ``min(cap, initial * 2**n)``."""

    def __init__(self, initial: float = 1.0, cap: float = 300.0) -> None:
        self.initial = initial
        self.cap = cap
        self._wait = tenacity.wait_random_exponential(multiplier=initial, max=cap)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before attempt ``attempt + 1``; never shorter than the partner asked."""
        state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
        state.attempt_number = max(1, attempt)
        jittered = float(self._wait(state))
        return max(jittered, retry_after or 0.0)
