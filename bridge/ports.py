"""The typed ports between the core and platform adapters: everything an adapter author uses.

An adapter is an :class:`AdapterSpec` named by an entry point of the ``returns_bridge.adapters``
group (built-ins included). For every enabled retailer with a ``[retailers.<id>.<name>]`` table
the core validates that table with ``config_model`` and calls ``setup(ctx, retailer, config)``
once, before anything is opened. ``setup`` registers what the adapter offers on the
:class:`AdapterContext`: inbound routes, inbox handlers, destinations, scheduled jobs,
readiness checks, and the capabilities below (``ctx.provide``). It must not do I/O; what
needs the store or HTTP runs in an ``on_startup`` hook or later.

Capabilities (the ports the core and other adapters call) are keyed by typed :class:`Port`
objects; which adapter serves one for a retailer is that retailer's
``[retailers.<id>.routes]`` choice (the only provider when there is one).

What the core guarantees an adapter:

* **Inbox handlers** run with the raw body already stored durably; the items of one entity
  (the ``entity`` given when it was accepted) are handled one at a time, in the order they
  were stored; what the handler writes and the effects it returns commit with the item's
  outcome in one transaction. A ``MappingError`` (or any exception) quarantines that item
  alone. An item may be handled again after a crash: handlers are idempotent through the
  store (entity versions, idempotency keys).
* **Effects** are delivered at least once, in write order per ``order_key``, each with its
  idempotency key; an attempt that may have reached the partner is marked
  ``outcome_unknown`` on the next one, so the destination settles it (the partner's
  idempotency, or a lookup) before sending again. Transient failures are retried with
  capped exponential backoff until the destination's deadline, then dead-lettered.
* **Scheduled jobs** run one at a time per job id (a late run is coalesced); a job cancelled
  by the stop ends quietly and runs again at the next start.

What an adapter guarantees the core:

* its destinations make an effect idempotent on the partner's side, or look it up first
  when ``outcome_unknown`` is set; they raise ``RetriableDeliveryError`` only for failures
  worth retrying (saying whether the request may have left) and ``PermanentDeliveryError``
  or ``MappingError`` otherwise;
* the capabilities it provides keep the contracts written on each protocol below;
* it never imports another adapter: adapters meet only through these ports.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, runtime_checkable

from aiohttp import web
from pydantic import BaseModel

from bridge.domain import ExchangeOrder, ExchangeOrderResult, Order, Rma, Variant
from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.config import RetailerConfig
    from bridge.engine import Engine
    from bridge.flows import ReturnsFlows
    from bridge.http import HttpClient
    from bridge.openapi import Security
    from bridge.store import NewEffect, Store, Transaction

T = TypeVar("T")
C = TypeVar("C", bound=BaseModel)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
"""An inbound HTTP endpoint."""
Readiness = Callable[[], Awaitable[str | None]]
"""Returns ``None`` when ready, else the reason it is not."""
Job = Callable[[], Awaitable[object]]
"""A scheduled job or a start hook: a coroutine function without arguments."""


@dataclass(frozen=True)
class Port(Generic[T]):
    """A capability's typed key: ``ctx.provide(retailer, CATALOG, adapter, catalog)`` and
    ``ctx.service(retailer, CATALOG)`` agree on the type. ``name`` is what routes say."""

    name: str


# the capabilities --------------------------------------------------------------------------


@runtime_checkable
class CatalogSource(Protocol):
    """Exchange candidates for a variant: the variants of the same product.

    Called while the shopper waits (Optoro's Exchange Variants); the core caches answers
    and serves a stale one when this raises a ``DeliveryError`` or ``TimeoutError``."""

    async def variants_for(self, variant_identifier: str) -> list[Variant]: ...


@runtime_checkable
class ExchangeOrderSink(Protocol):
    """Creates the exchange order in the retailer's order system.

    The core calls it at most once at a time per ``original_order_id`` and stores the
    answer (so repeated requests get it without a call); after a failure whose outcome is
    unknown it calls again, so the sink must create at most one order per
    ``original_order_id`` (look it up, or let the order system deduplicate)."""

    async def create_exchange_order(self, order: ExchangeOrder) -> ExchangeOrderResult: ...


@runtime_checkable
class OrderPublisher(Protocol):
    """Turns changed canonical orders into outbox effects, inside the caller's transaction.

    The core calls it with the orders whose snapshot changed (never an older snapshot over
    a newer one); the publisher keys each effect by what it sends (e.g. an order and the
    number of its snapshot), never reusing a key for a later change, and marks effects
    whose loss would lose a change ``must_queue``."""

    async def publish(self, tx: Transaction, orders: Sequence[Order]) -> list[NewEffect]: ...


@runtime_checkable
class OrderSource(Protocol):
    """Reads an order again from the retailer's order system when the core learns it may
    have changed (one of its RMAs arrived), since an order system's filters may not find
    updates to older orders (ReturnLogic filters orders by creation date only).

    The effects it returns read ``order`` (found by its ``refs``) through the adapter's
    rate governor and apply what they read through the order flow (only a changed
    snapshot is published); they are keyed by order and ``reason``: one read per reason,
    ever. ``[]`` when the order did not come from this source."""

    def refresh_effects(self, retailer: str, order: Order, reason: str) -> list[NewEffect]: ...


@runtime_checkable
class ReturnsSink(Protocol):
    """Creates returns (e.g. Kibo Create Return) for an RMA that reached a policy step.

    The effects it returns are keyed by RMA, step and part (at most one return per step and
    part, ever)
    and share ``order_key`` with the refund confirmation that follows them; on success its
    destination reports a ``created`` return event to the core's return-event flow
    (``ctx.service(retailer, RMA_LIFECYCLE).return_events``)."""

    def return_effects(
        self,
        retailer: str,
        rma_key: str,
        rma: Rma,
        step: str,
        order_key: str,
        *,
        part: int = 1,
        lines: Sequence[tuple[str, str, int]] | None = None,
    ) -> list[NewEffect]:
        """The create effects for ``rma`` at ``step``. ``part`` > 1: a later batch of the
        step (units that reached it since the first); ``lines``: ``(order id, line id,
        units)`` the return is for, when not every unit of the RMA
        (:func:`bridge.policy.select_units` picks them from the RMA as stored)."""
        ...


CATALOG: Port[CatalogSource] = Port("catalog")
EXCHANGE_ORDER_SINK: Port[ExchangeOrderSink] = Port("exchange_order_sink")
ORDER_PUBLISHER: Port[OrderPublisher] = Port("order_publisher")
ORDER_SOURCE: Port[OrderSource] = Port("order_source")
RETURNS_SINK: Port[ReturnsSink] = Port("returns_sink")


RMA_LIFECYCLE: Port[ReturnsFlows] = Port("rma_lifecycle")
"""The core's returns flows of a retailer (:class:`bridge.flows.ReturnsFlows`): what RMA
sources apply RMAs to, order sources publish orders through, and returns sinks report
return events to. Provided by the core for every enabled retailer."""

CAPABILITIES = frozenset(
    port.name
    for port in (
        CATALOG,
        EXCHANGE_ORDER_SINK,
        ORDER_PUBLISHER,
        ORDER_SOURCE,
        RETURNS_SINK,
        RMA_LIFECYCLE,
    )
)
"""Every capability name a route (``[retailers.<id>.routes]``) or an adapter may use."""
CORE_PROVIDER = "bridge"
"""Reserved: the provider name of what the core provides for every enabled retailer."""
CORE_CAPABILITIES = frozenset({RMA_LIFECYCLE.name})


# what setup receives -----------------------------------------------------------------------


class Jobs(Protocol):
    """Scheduled work. Each job id runs one at a time (a late run is coalesced)."""

    def every(
        self, job_id: str, run: Job, seconds: float, *, first_at: datetime | None = None
    ) -> None:
        """Run ``run`` every ``seconds`` (first at ``first_at``; default: one period from now)."""

    def once(self, job_id: str, run: Job, *, at: datetime | None = None) -> None:
        """Run ``run`` once, at ``at`` (default: as soon as the scheduler starts)."""

    def run_soon(self, job_id: str) -> bool:
        """Bring job ``job_id``'s next run forward to now; False when there is no such job."""


@dataclass(frozen=True)
class SharedKey(Generic[T]):
    """Names an object several retailers' setups share (e.g. one ReturnLogic team)."""

    name: str


class AdapterContext(Protocol):
    """What the core hands to an adapter's ``setup``. ``store`` and ``http`` are usable once
    the daemon has started (in start hooks, handlers, destinations and jobs), not in
    ``setup`` itself."""

    @property
    def store(self) -> Store: ...

    @property
    def http(self) -> HttpClient: ...

    @property
    def engine(self) -> Engine:
        """Where inbox handlers (``add_handler``) and destinations (``add_destination``) go."""

    @property
    def jobs(self) -> Jobs: ...

    def add_route(
        self,
        retailer: str,
        platform: str,
        method: str,
        subpath: str,
        handler: Handler,
        *,
        inbox: bool = False,
        summary: str = "",
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        headers: type[BaseModel] | None = None,
        path_params: type[BaseModel] | None = None,
        security: tuple[Security, ...] = (),
        responses: dict[int, str] | None = None,
    ) -> str:
        """Mount ``handler`` at ``/retailers/<retailer>/<platform>/<subpath>`` (returns the
        path). ``inbox``: a webhook storing into the inbox (back-pressure applies to it).
        The models are what the handler validates with; ``/openapi.json`` is built from them."""

    def add_readiness(self, name: str, check: Readiness) -> None:
        """``/readyz`` answers 503 naming ``name`` while ``check`` returns a reason."""

    def on_startup(self, hook: Job) -> None:
        """Run ``hook`` once the store and HTTP session are open, before work starts."""

    def supervise(self, name: str, run: Job) -> object:
        """Run side task ``name`` for the daemon's life, restarting it when it crashes."""

    def provide(self, retailer: str, port: Port[T], adapter: str, service: T) -> None:
        """``adapter`` serves ``port`` for ``retailer`` (it must declare ``port.name``)."""

    def service(self, retailer: str, port: Port[T]) -> T:
        """The provider of ``port`` for ``retailer``, as its routes choose (``ConfigError``
        when there is none: check :meth:`has_service` first for optional ones)."""

    def has_service(self, retailer: str, port: Port[T]) -> bool: ...

    def shared(self, key: SharedKey[T], make: Callable[[], T]) -> T:
        """The object shared under ``key``, made by ``make`` the first time."""


# the adapter itself --------------------------------------------------------------------------


class SandboxCommand(Protocol):
    """``returns-bridge sandbox <name>``: the adapter's fake of its platform on loopback."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class Adapter(Protocol):
    """What the registry and the core know of any adapter (see :class:`AdapterSpec`)."""

    @property
    def name(self) -> str: ...

    @property
    def config_model(self) -> type[BaseModel]: ...

    @property
    def description(self) -> str: ...

    @property
    def capabilities(self) -> frozenset[str]: ...

    @property
    def sandbox(self) -> SandboxCommand | None: ...

    def provided(self, config: BaseModel) -> frozenset[str]: ...

    def wire(self, ctx: AdapterContext, retailer: RetailerConfig, config: BaseModel) -> None: ...


@dataclass(frozen=True)
class AdapterSpec(Generic[C]):
    """A platform adapter: its config model ``C`` and typed hooks.

    ``capabilities`` declares, statically, every port name the adapter may provide;
    ``provides``, when given, narrows that to what one retailer's config turns on (e.g. a
    catalog that can be disabled), so ``returns-bridge check`` validates routes without
    starting anything. An adapter must never provide a capability it does not declare."""

    name: str
    config_model: type[C]
    setup: Callable[[AdapterContext, RetailerConfig, C], None]
    description: str = ""
    capabilities: frozenset[str] = frozenset()
    provides: Callable[[C], Iterable[str]] | None = None
    sandbox: SandboxCommand | None = None

    def _typed(self, config: BaseModel) -> C:
        if not isinstance(config, self.config_model):
            raise ConfigError(
                f"adapter {self.name!r} got a {type(config).__name__}, expected"
                f" {self.config_model.__name__}"
            )
        return config

    def provided(self, config: BaseModel) -> frozenset[str]:
        """The capabilities this adapter provides for a retailer configured with ``config``."""
        if self.provides is None:
            return self.capabilities
        return frozenset(self.provides(self._typed(config))) & self.capabilities

    def wire(self, ctx: AdapterContext, retailer: RetailerConfig, config: BaseModel) -> None:
        """Call ``setup`` for one retailer with its validated table."""
        self.setup(ctx, retailer, self._typed(config))
