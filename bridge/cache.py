"""A TTL cache for synchronous lookups a shopper waits on.

* concurrent misses for one key cause one upstream call (single flight);
* a fresh entry is served for ``ttl`` seconds;
* when the upstream fails, an entry up to ``stale_ttl`` old is served instead and the
  answer is marked stale (counted in :attr:`stats`), so an outage degrades to slightly
  old data rather than errors.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    loads: int = 0
    stale_served: int = 0
    errors: int = 0


@dataclass(frozen=True)
class Cached(Generic[V]):
    value: V
    stale: bool
    age: float


class SingleFlightCache(Generic[V]):
    def __init__(
        self,
        ttl: float = 300.0,
        stale_ttl: float = 86400.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, tuple[float, V]] = OrderedDict()
        self._flights: dict[Hashable, asyncio.Future[V]] = {}
        self.stats = CacheStats()

    async def get(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> Cached[V]:
        """The value for ``key``: cached, loaded once for all waiters, or stale on failure.
        Raises the loader's exception when nothing usable is cached."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and now - entry[0] < self.ttl:
            self.stats.hits += 1
            self._entries.move_to_end(key)
            return Cached(entry[1], stale=False, age=now - entry[0])
        self.stats.misses += 1
        try:
            value = await self._load_once(key, load)
        except Exception:
            self.stats.errors += 1
            entry = self._entries.get(key)
            if entry is not None and self._clock() - entry[0] < self.stale_ttl:
                self.stats.stale_served += 1
                return Cached(entry[1], stale=True, age=self._clock() - entry[0])
            raise
        return Cached(value, stale=False, age=0.0)

    async def _load_once(self, key: Hashable, load: Callable[[], Awaitable[V]]) -> V:
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            self.stats.loads += 1
            value = await load()
        except asyncio.CancelledError:
            flight.cancel()
            raise
        except Exception as exc:
            flight.set_exception(exc)
            flight.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            flight.set_result(value)
            self._store(key, value)
            return value
        finally:
            del self._flights[key]

    def _store(self, key: Hashable, value: V) -> None:
        self._entries[key] = (self._clock(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def invalidate(self, key: Hashable) -> None:
        self._entries.pop(key, None)
