"""A destination that delivers effects as HTTP requests through the shared client."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace

from bridge.engine.core import DEFAULT_DEADLINE
from bridge.http import (
    Backoff,
    Credentials,
    DestinationLimits,
    HttpClient,
    OutboundRequest,
    Priority,
    Response,
)
from bridge.store import Effect


class HttpDestination(ABC):
    """Subclasses say how an effect becomes a request (:meth:`render`); sending, rate
    limiting and error classification are shared. The effect's idempotency key goes out in
    ``idempotency_header`` (``None`` for partners without one: such a destination must
    look up before it creates when ``effect.outcome_unknown``, which holds only when an
    earlier attempt was recorded as sent -- :meth:`Engine.record_attempt`, called by the
    engine just before :meth:`deliver` -- and its answer never came).

    ``credentials`` (optional) are attached after the governor admits each request, never
    in :meth:`render`. ``backoff`` is the destination's (``limits.backoff``, configured per
    destination; default 1 s doubling up to 300 s, full jitter); after an outage the
    engine makes waiting retries due at once (:meth:`take_recovery`)."""

    idempotency_header: str | None = "Idempotency-Key"

    def __init__(
        self,
        name: str,
        http: HttpClient | Callable[[], HttpClient],
        limits: DestinationLimits | None = None,
        *,
        deadline_seconds: float = DEFAULT_DEADLINE,
        backoff: Backoff | None = None,
        priority: Priority = Priority.LIVE,
        credentials: Credentials | None = None,
    ) -> None:
        self.name = name
        self._http = http if callable(http) else (lambda: http)
        self.limits = limits or DestinationLimits(name)
        self.deadline_seconds = deadline_seconds
        if backoff is not None:
            self.limits.backoff = backoff
        self.priority = priority
        self.credentials = credentials

    @property
    def backoff(self) -> Backoff:
        """The destination's retry backoff (shared with its 429 pause)."""
        return self.limits.backoff

    @backoff.setter
    def backoff(self, value: Backoff) -> None:
        self.limits.backoff = value

    def take_recovery(self) -> bool:
        """True once after the destination answers again following an outage."""
        return self.limits.health.take_recovery()

    @property
    def http(self) -> HttpClient:
        """The daemon's client, looked up at call time (the session opens after wiring)."""
        return self._http()

    @abstractmethod
    async def render(self, effect: Effect) -> OutboundRequest:
        """The partner request for ``effect`` (without the idempotency header)."""

    async def build_request(self, effect: Effect) -> OutboundRequest:
        """:meth:`render` plus the idempotency header, exactly as it will be sent."""
        request = await self.render(effect)
        if self.idempotency_header and self.idempotency_header not in request.headers:
            headers = {**request.headers, self.idempotency_header: effect.idempotency_key}
            request = replace(request, headers=headers)
        return request

    async def deliver(self, effect: Effect) -> Response | None:
        return await self.http.send(
            await self.build_request(effect),
            self.limits,
            self.priority,
            credentials=self.credentials,
        )
