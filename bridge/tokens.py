"""Access tokens fetched on demand and shared by every caller.

:class:`TokenCache` keeps one token until shortly before it expires; concurrent callers
share one fetch (single flight). When a partner refuses a token (401), callers hand the
refused token to :meth:`TokenCache.invalidate`: only the first of many concurrent 401s
for the same token clears it, so a burst of failures causes exactly one refresh.
The lifetime counts from the moment the request was *sent*, never from the answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import SecretStr


@dataclass(frozen=True)
class Token:
    value: SecretStr
    expires_in: float | None


Fetch = Callable[[], Awaitable[Token]]


class TokenCache:
    def __init__(
        self, fetch: Fetch, margin: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._fetch = fetch
        self._margin = margin
        self._clock = clock
        self._token: SecretStr | None = None
        self._valid_until = 0.0
        self._lock = asyncio.Lock()
        self.fetches = 0

    def _fresh(self) -> SecretStr | None:
        if self._token is not None and self._clock() < self._valid_until:
            return self._token
        return None

    async def get(self) -> SecretStr:
        token = self._fresh()
        if token is not None:
            return token
        async with self._lock:
            token = self._fresh()
            if token is not None:
                return token
            requested_at = self._clock()
            fetched = await self._fetch()
            self.fetches += 1
            lifetime = fetched.expires_in if fetched.expires_in is not None else 3600.0
            self._token = fetched.value
            self._valid_until = requested_at + max(0.0, lifetime - min(self._margin, lifetime / 2))
            return fetched.value

    def invalidate(self, refused: SecretStr) -> None:
        """Forget ``refused`` if it is still the current token."""
        if self._token is not None and (
            self._token.get_secret_value() == refused.get_secret_value()
        ):
            self._token = None
            self._valid_until = 0.0
