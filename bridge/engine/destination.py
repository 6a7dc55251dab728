"""A destination that delivers effects as HTTP requests through the shared client."""

from __future__ import annotations

from abc import ABC, abstractmethod

from bridge.engine.core import DEFAULT_DEADLINE
from bridge.http import Backoff, DestinationLimits, HttpClient, OutboundRequest, Priority, Response
from bridge.store import Effect


class HttpDestination(ABC):
    """Subclasses say how an effect becomes a request; sending, rate limiting and error
    classification are shared. The effect's idempotency key is the partner's dedup key
    where the partner supports one (``idempotency_header``)."""

    idempotency_header: str | None = "Idempotency-Key"

    def __init__(
        self,
        name: str,
        http: HttpClient,
        limits: DestinationLimits | None = None,
        *,
        deadline_seconds: float = DEFAULT_DEADLINE,
        backoff: Backoff | None = None,
        priority: Priority = Priority.LIVE,
    ) -> None:
        self.name = name
        self.http = http
        self.limits = limits or DestinationLimits(name)
        self.deadline_seconds = deadline_seconds
        self.backoff = backoff or Backoff(initial=1.0, cap=3600.0)
        self.priority = priority

    @abstractmethod
    async def build_request(self, effect: Effect) -> OutboundRequest: ...

    async def deliver(self, effect: Effect) -> Response | None:
        return await self.http.send(await self.build_request(effect), self.limits, self.priority)
