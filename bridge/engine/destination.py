"""Base classes of the two destination kinds, with the defaults adapters would repeat.

* :class:`DeliveryDestination` -- a :class:`~bridge.engine.core.Delivery` that causes
  nothing after it is delivered and never reports a recovery; :class:`HttpDestination`
  -- one that sends effects as HTTP requests through the shared client.
* :class:`ReadDestination` -- a :class:`~bridge.engine.core.Read` with the default
  deadline and backoff.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import replace
from typing import ClassVar, Literal

from bridge.engine.core import DEFAULT_DEADLINE, Absent, Fetched, Found
from bridge.http import (
    Backoff,
    Credentials,
    DestinationLimits,
    HttpClient,
    OutboundRequest,
    Priority,
    Response,
)
from bridge.store import Effect, NewEffect, Transaction


class OutboundDestination(ABC):
    """The defaults both kinds share: the engine's deadline and backoff, no health tracked."""

    name: str
    deadline_seconds: float = DEFAULT_DEADLINE
    backoff: Backoff = Backoff(initial=1.0, cap=300.0)

    @abstractmethod
    async def build_request(self, effect: Effect) -> OutboundRequest:
        """The exact request the destination sends for ``effect``."""

    def take_recovery(self) -> bool:
        """No health tracked: never a recovery."""
        return False


class DeliveryDestination(OutboundDestination):
    """A :class:`~bridge.engine.core.Delivery`: subclasses implement :meth:`build_request`
    and :meth:`deliver`; override :meth:`on_delivered` when a delivery causes state or
    follow-up effects, :meth:`take_recovery` when the destination tracks its health."""

    kind: ClassVar[Literal["delivery"]] = "delivery"

    @abstractmethod
    async def deliver(self, effect: Effect) -> Response:
        """Send once (see :class:`~bridge.engine.core.Delivery`)."""

    async def on_delivered(
        self, tx: Transaction, effect: Effect, response: Response
    ) -> list[NewEffect]:
        """Nothing follows a delivery unless a subclass says so."""
        return []


class ReadDestination(OutboundDestination):
    """A :class:`~bridge.engine.core.Read`: subclasses implement :meth:`build_request`,
    :meth:`fetch` and :meth:`apply`."""

    kind: ClassVar[Literal["read"]] = "read"

    @abstractmethod
    async def fetch(self, effect: Effect) -> Fetched:
        """Read once, outside any transaction."""

    @abstractmethod
    async def apply(
        self, tx: Transaction, effect: Effect, fetched: Found | Absent
    ) -> list[NewEffect]:
        """Apply what was read, in the transaction that records it."""


class HttpDestination(DeliveryDestination):
    """Subclasses say how an effect becomes a request (:meth:`render`); sending, rate
    limiting and error classification are shared. The effect's idempotency key goes out in
    ``idempotency_header`` (``None`` for partners without one: such a destination must
    look up before it creates when ``effect.outcome_unknown``, which holds only when the
    previous attempt may have reached the partner -- recorded as sent by
    :meth:`Engine.record_attempt` just before :meth:`deliver` and never answered, or failed
    after its request held a connection -- and, until the lookup settles it, keep failing
    with ``outcome_unknown=True``: a later failure known not to have sent anything clears
    the field).

    ``credentials`` (optional) are attached after the governor admits each request, never
    in :meth:`render`; a 401 refreshes them once when they can be refreshed and is a dead
    letter at once when they cannot (``CredentialsRefused``). ``backoff`` is the
    destination's (``limits.backoff``, configured per destination; default 1 s doubling up
    to 300 s, full jitter); after an outage the engine makes waiting retries due at once
    (:meth:`take_recovery`)."""

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

    async def deliver(self, effect: Effect) -> Response:
        return await self.http.send(
            await self.build_request(effect),
            self.limits,
            self.priority,
            credentials=self.credentials,
        )
