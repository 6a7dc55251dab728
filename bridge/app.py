"""The daemon: one aiohttp application, its resources owned through ``cleanup_ctx``.

Order of start (and reverse order of stop): store -> HTTP session -> startup hooks ->
engine tasks -> scheduler, all opened by one function, :func:`running`: the daemon's
``cleanup_ctx`` enters it, and so does every command that needs a runtime (``dlq``,
``inbox``, ``backfill``), without the engine and scheduler. Adapters are wired per
retailer by their ``setup`` hook, which registers inbound routes, inbox handlers,
destinations, jobs and readiness checks on the :class:`Runtime`; the core never names a platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import aiohttp
from aiohttp import web
from pydantic import BaseModel

from bridge.config import AppConfig, RetailerConfig
from bridge.engine import Engine, EngineSettings
from bridge.engine.core import DrainReport
from bridge.errors import BridgeError, ConfigError
from bridge.flows import ReturnsFlows
from bridge.http import HttpClient
from bridge.http.sent import SendTracker
from bridge.listener import (
    LINGER_SECONDS,
    ConnectionGuard,
    GuardedSite,
    InboxBacklog,
    ListenerLimits,
    ProtocolLog,
    backpressured,
    bind_listener,
    limits_middleware,
)
from bridge.logs import install_loop_handler, register_secrets_of
from bridge.openapi import Operation, Security, build_document
from bridge.ports import (
    ORDER_PUBLISHER,
    ORDER_SOURCE,
    RETURNS_SINK,
    RMA_LIFECYCLE,
    Handler,
    Job,
    Port,
    Readiness,
    SharedKey,
)
from bridge.registry import AdapterRegistry, load_registry
from bridge.scheduling import Scheduler
from bridge.store import Store, store_from_url

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Route:
    """One inbound endpoint and what ``/openapi.json`` says about it (its models are the
    ones its handler validates with)."""

    method: str
    path: str
    handler: Handler
    name: str = ""
    inbox: bool = False
    """The endpoint stores into the inbox: it answers 503 while the backlog is too long."""
    operation: Operation = field(default_factory=Operation)


@dataclass
class Runtime:
    """The daemon's parts; adapters see it as their :class:`bridge.ports.AdapterContext`.
    ``store`` and ``http`` are usable once the app has started."""

    config: AppConfig
    registry: AdapterRegistry
    store: Store
    engine: Engine
    scheduler: Scheduler
    routes: list[Route] = field(default_factory=list)
    readiness: dict[str, Readiness] = field(default_factory=dict)
    startup: list[Job] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None
    fatal: asyncio.Event = field(default_factory=asyncio.Event)
    fatal_reason: str | None = None
    services: dict[tuple[str, str], dict[str, object]] = field(default_factory=dict)
    shared_objects: dict[str, object] = field(default_factory=dict)
    openapi_document: dict[str, Any] | None = None
    side_task_backoff: float = 0.5
    side_task_backoff_cap: float = 30.0
    side_task_stable: float = 30.0
    side_task_restarts: dict[str, int] = field(default_factory=dict)

    @property
    def jobs(self) -> Scheduler:
        return self.scheduler

    @property
    def http(self) -> HttpClient:
        if self.session is None:
            raise BridgeError("the HTTP session is not open yet")
        return HttpClient(self.session, self.store)  # the store keeps governors' admissions

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
        """Mount ``handler`` at ``/retailers/<retailer>/<platform>/<subpath>``. ``inbox``:
        a webhook that stores into the inbox (back-pressure applies to it).

        ``body``, ``query``, ``headers`` and ``path_params`` are the pydantic models the
        handler validates its input with, ``security`` how it authenticates the caller: the
        ``/openapi.json`` document is generated from them (:mod:`bridge.openapi`)."""
        path = f"/retailers/{retailer}/{platform}/{subpath.lstrip('/')}"
        operation = Operation(
            summary=summary,
            body=body,
            query=query,
            headers=headers,
            path=path_params,
            security=security,
            responses=dict(responses or {}),
            tags=(platform,),
        )
        self.routes.append(Route(method, path, handler, inbox=inbox, operation=operation))
        return path

    def provide(self, retailer: str, port: Port[T], adapter: str, service: T) -> None:
        """``adapter`` serves ``port`` (see :mod:`bridge.ports`) for ``retailer``."""
        self.services.setdefault((retailer, port.name), {})[adapter] = service

    def service(self, retailer: str, port: Port[T]) -> T:
        """The provider of ``port`` for ``retailer``, as its routes choose."""
        capability = port.name
        providers = self.services.get((retailer, capability), {})
        chosen = self.config.retailers[retailer].routes.get(capability)
        if chosen is not None:
            if chosen not in providers:
                raise ConfigError(
                    f"retailers.{retailer}.routes.{capability}: adapter {chosen!r} does not"
                    f" provide it; providers: {', '.join(sorted(providers)) or 'none'}"
                )
            return cast(T, providers[chosen])  # stored by provide() under this typed port
        if len(providers) == 1:
            return cast(T, next(iter(providers.values())))
        if not providers:
            raise ConfigError(f"retailer {retailer!r}: no configured adapter provides {capability}")
        raise ConfigError(
            f"retailers.{retailer}.routes.{capability}:"
            f" choose one of {', '.join(sorted(providers))}"
        )

    def has_service(self, retailer: str, port: Port[T]) -> bool:
        return bool(self.services.get((retailer, port.name)))

    def shared(self, key: SharedKey[T], make: Callable[[], T]) -> T:
        """The object several retailers' setups share under ``key`` (made once)."""
        if key.name not in self.shared_objects:
            self.shared_objects[key.name] = make()
        return cast(T, self.shared_objects[key.name])  # only shared() writes under key

    def find_shared(self, key: SharedKey[T]) -> T | None:
        """The object shared under ``key``, if a setup made one (for operators and tests)."""
        return cast(T | None, self.shared_objects.get(key.name))

    def add_readiness(self, name: str, check: Readiness) -> None:
        self.readiness[name] = check

    def on_startup(self, hook: Job) -> None:
        """Run ``hook`` once the store and HTTP session are open."""
        self.startup.append(hook)

    def supervise(self, name: str, run: Job) -> asyncio.Task[None]:
        """Run side task ``name`` (``run()``) and restart it whenever it dies.

        A crash is logged with its traceback (through the redacting sink), the task is
        restarted after a capped exponential backoff (``side_task_backoff`` doubling up to
        ``side_task_backoff_cap`` s; the count resets once a run has lasted
        ``side_task_stable`` s), and ``/readyz`` names it as ``task:<name>`` until the
        restarted run has been stable that long. The one exception: when the store itself no
        longer answers, the crash stops the daemon (exit 1), as nothing can work without it.
        Cancelling the returned task stops the current run."""
        state: dict[str, Any] = {"problem": None, "since": 0.0}

        async def check() -> str | None:
            problem = state["problem"]
            if problem is None:
                return None
            if asyncio.get_running_loop().time() - state["since"] >= self.side_task_stable:
                state["problem"] = None
                return None
            return str(problem)

        async def supervised() -> None:
            loop = asyncio.get_running_loop()
            crashes = 0
            while True:
                started = loop.time()
                try:
                    await run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not await self.engine.store_usable():
                        raise
                    if loop.time() - started >= self.side_task_stable:
                        crashes = 0
                    crashes += 1
                    delay = min(
                        self.side_task_backoff_cap, self.side_task_backoff * 2 ** (crashes - 1)
                    )
                    reason = f"{type(exc).__name__}: {exc}"[:300]
                    state["problem"] = f"crashed ({reason}); restart {crashes}"
                    state["since"] = loop.time() + delay
                    self.side_task_restarts[name] = self.side_task_restarts.get(name, 0) + 1
                    log.error(
                        "side task crashed, restarting",
                        extra={"task": name, "restarts": crashes, "delay": delay},
                        exc_info=exc,
                    )
                    await asyncio.sleep(delay)

        self.add_readiness(f"task:{name}", check)
        task = asyncio.create_task(supervised(), name=name)
        self.watch(task)
        return task

    def watch(self, task: asyncio.Task[Any]) -> None:
        """A side task that ends with an error stops the daemon loudly. Supervised tasks
        (:meth:`supervise`) end so only when the store is unusable."""

        def done(t: asyncio.Task[Any]) -> None:
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                self.fatal_reason = f"{t.get_name()} crashed: {type(exc).__name__}: {exc}"
                log.critical("side task crashed", extra={"task": t.get_name()}, exc_info=exc)
                self.fatal.set()

        task.add_done_callback(done)


RUNTIME = web.AppKey("runtime", Runtime)


@dataclass
class Shutdown:
    """How the app stops gracefully: ``draining`` makes the listener answer 503 (but
    ``/healthz``), ``stop_dispatch`` makes the dispatcher drain, ``sends`` tells a
    delivery still waiting from one on the wire."""

    guard: ConnectionGuard
    backlog: InboxBacklog
    draining: asyncio.Event = field(default_factory=asyncio.Event)
    stop_dispatch: asyncio.Event = field(default_factory=asyncio.Event)
    sends: SendTracker = field(default_factory=SendTracker)
    inbox_worker: asyncio.Task[None] | None = None
    dispatcher: asyncio.Task[None] | None = None
    drain_report: DrainReport | None = None


SHUTDOWN = web.AppKey("shutdown", Shutdown)


def build_runtime(
    config: AppConfig,
    registry: AdapterRegistry | None = None,
    store: Store | None = None,
    engine_settings: EngineSettings | None = None,
) -> Runtime:
    """The runtime with every enabled retailer's adapters wired, nothing opened yet."""
    registry = registry or load_registry()
    register_secrets_of(config)  # redacted by value wherever they would be logged
    store = store or store_from_url(config.store.url)
    runtime = Runtime(
        config=config,
        registry=registry,
        store=store,
        engine=Engine(store, engine_settings, instance=config.server.instance),
        scheduler=Scheduler(),
    )
    for retailer in config.retailers.values():
        if retailer.enabled:
            runtime.provide(retailer.id, RMA_LIFECYCLE, "bridge", _flows(runtime, retailer))
            _setup_retailer(runtime, retailer)
    return runtime


def _flows(runtime: Runtime, retailer: RetailerConfig) -> ReturnsFlows:
    def service(port: Port[T]) -> T | None:
        has = runtime.has_service(retailer.id, port)
        return runtime.service(retailer.id, port) if has else None

    return ReturnsFlows(
        retailer.id,
        retailer.policy,
        store=lambda: runtime.store,
        wake_dispatcher=runtime.engine.wake_dispatcher,
        order_publisher=lambda: service(ORDER_PUBLISHER),
        returns_sink=lambda: service(RETURNS_SINK),
        order_source=lambda: service(ORDER_SOURCE),
    )


def _setup_retailer(runtime: Runtime, retailer: RetailerConfig) -> None:
    for name, platform_config in retailer.platforms.items():
        runtime.registry.get(name).wire(runtime, retailer, platform_config)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


DAEMON_ROUTES = (
    ("GET", "/healthz", "liveness: 200 while the process serves"),
    ("GET", "/readyz", "readiness: 200 when the store and every adapter are ready, else 503"),
    ("GET", "/openapi.json", "this document"),
)


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI document of every inbound endpoint, built from the registered routes."""
    runtime = request.app[RUNTIME]
    if runtime.openapi_document is None:
        runtime.openapi_document = build_document(runtime.routes, extra=DAEMON_ROUTES)
    return web.json_response(runtime.openapi_document)


async def readyz(request: web.Request) -> web.Response:
    runtime = request.app[RUNTIME]
    problems: dict[str, str] = {}
    if not await runtime.store.ping():
        problems["store"] = "store is not reachable"
    for name, check in runtime.readiness.items():
        try:
            reason = await check()
        except Exception as exc:  # a failing check is a reason, not a crash
            reason = f"check failed: {type(exc).__name__}"
        if reason:
            problems[name] = reason
    body: dict[str, Any] = {
        "status": "ready" if not problems else "not_ready",
        "retailers": sorted(r for r, c in runtime.config.retailers.items() if c.enabled),
    }
    if problems:
        body["problems"] = problems
    return web.json_response(body, status=200 if not problems else 503)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is JSON; an unexpected exception is a 500, never a crash.

    A request whose parts cannot even be decoded (a ``UnicodeError`` from a header, query
    or path value) is the sender's fault: 400 naming ``request``, logged without a
    traceback or the values."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {
            404: "no such endpoint (unknown retailer or path)",
            405: f"method {request.method} is not allowed here",
            413: "body is larger than the configured limit",
        }.get(exc.status, exc.reason)
        field_name = "body" if exc.status == 413 else None
        error: dict[str, Any] = {"message": message}
        if field_name:
            error["field"] = field_name
        return web.json_response({"error": error}, status=exc.status)
    except UnicodeError as exc:
        log.warning(
            "request not decodable", extra={"method": request.method, "error": type(exc).__name__}
        )
        return web.json_response(
            {"error": {"field": "request", "message": "request is not valid UTF-8 text"}},
            status=400,
        )
    except Exception:
        log.exception(
            "request failed", extra={"path": _safe(request.path), "method": request.method}
        )
        return web.json_response({"error": {"message": "internal error"}}, status=500)


def _safe(text: str) -> str:
    """A request part as loggable text (undecodable bytes escaped, bounded)."""
    return text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")[:300]


def _shutdown_for(runtime: Runtime) -> Shutdown:
    server = runtime.config.server
    return Shutdown(
        guard=ConnectionGuard(
            ListenerLimits(
                header_timeout=server.header_timeout,
                body_timeout=server.body_timeout,
                max_connections_per_peer=server.max_connections_per_peer,
            )
        ),
        backlog=InboxBacklog(runtime.store.pending_inbox_count, server.max_inbox_backlog),
    )


def build_app(runtime: Runtime) -> web.Application:
    """The aiohttp application serving the runtime's routes and owning its resources.

    Inbox webhooks answer 503 with ``Retry-After`` above ``[server] max_inbox_backlog``;
    every body is read within ``body_timeout`` (see :mod:`bridge.listener`)."""
    server = runtime.config.server
    shutdown = _shutdown_for(runtime)
    app = web.Application(
        client_max_size=server.max_body_bytes,
        middlewares=[json_errors, limits_middleware(shutdown.guard, shutdown.draining)],
    )
    app[RUNTIME] = runtime
    app[SHUTDOWN] = shutdown
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi_json)
    for route in runtime.routes:
        handler = route.handler
        if route.inbox:
            handler = backpressured(handler, shutdown.backlog, server.backlog_retry_after)
        app.router.add_route(route.method, route.path, handler)
    app.cleanup_ctx.append(_running_ctx)
    return app


async def _running_ctx(app: web.Application) -> AsyncIterator[None]:
    async with running(app[RUNTIME], shutdown=app[SHUTDOWN]):
        yield


@contextlib.asynccontextmanager
async def running(
    runtime: Runtime,
    *,
    engine: bool = True,
    scheduler: bool = True,
    shutdown: Shutdown | None = None,
) -> AsyncIterator[Runtime]:
    """Open the runtime's resources in order -- store, HTTP session, startup hooks, then
    (``engine``) the inbox worker and dispatcher and (``scheduler``) the scheduled jobs --
    and close them in reverse when the block ends, also on an error or a cancellation.

    The one place these are opened: the daemon (:func:`build_app`) and every command
    (``dlq``, ``inbox``, ``backfill`` without a daemon) enter it. ``shutdown`` is the
    daemon's stop state (a fresh one otherwise)."""
    shutdown = shutdown or _shutdown_for(runtime)
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(_store_ctx(runtime))
        await stack.enter_async_context(_session_ctx(runtime, shutdown))
        await stack.enter_async_context(_startup_ctx(runtime))
        if engine:
            await stack.enter_async_context(_engine_ctx(runtime, shutdown))
        if scheduler:
            await stack.enter_async_context(_scheduler_ctx(runtime))
        yield runtime


@contextlib.asynccontextmanager
async def _store_ctx(runtime: Runtime) -> AsyncIterator[None]:
    await runtime.store.open()
    try:
        yield
    finally:
        await runtime.store.close()


@contextlib.asynccontextmanager
async def _session_ctx(runtime: Runtime, shutdown: Shutdown) -> AsyncIterator[None]:
    runtime.session = aiohttp.ClientSession(
        raise_for_status=False, trace_configs=[shutdown.sends.trace_config]
    )
    try:
        yield
    finally:
        await runtime.session.close()
        runtime.session = None


@contextlib.asynccontextmanager
async def _startup_ctx(runtime: Runtime) -> AsyncIterator[None]:
    for hook in runtime.startup:
        await hook()
    yield


@contextlib.asynccontextmanager
async def _engine_ctx(runtime: Runtime, shutdown: Shutdown) -> AsyncIterator[None]:
    await runtime.engine.take_back_leases()

    async def dispatch() -> None:
        shutdown.drain_report = await runtime.engine.run_dispatcher(
            shutdown.stop_dispatch, runtime.config.server.drain_seconds, shutdown.sends
        )

    shutdown.inbox_worker = runtime.supervise("inbox-worker", runtime.engine.run_inbox_worker)
    shutdown.dispatcher = runtime.supervise("dispatcher", dispatch)
    heartbeat = runtime.supervise("heartbeat", runtime.engine.run_heartbeat)
    tasks = [shutdown.inbox_worker, shutdown.dispatcher, heartbeat]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            # a task that died has been reported (watch) and made the daemon stop already
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


@contextlib.asynccontextmanager
async def _scheduler_ctx(runtime: Runtime) -> AsyncIterator[None]:
    scheduler = runtime.scheduler
    scheduler.start()
    try:
        yield
    finally:
        scheduler.shutdown(wait=False)


LISTEN_BACKLOG = 1024

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""SIGHUP stops like SIGTERM (documented in the README): the configuration is read at
start only, so a supervisor restarts the daemon to apply a change."""


async def serve(runtime: Runtime, on_listening: Callable[[str, int], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT/SIGHUP (exit 0, after a graceful drain) or a crashed side
    task (exit 1); exit 2 at once, with one log line and nothing started, when the port
    cannot be bound (e.g. in use by another daemon).

    A graceful stop: stop listening and answer 503 on open connections (``/healthz``
    excepted), stop the scheduler and the inbox worker, let the dispatcher drain
    (``[server] drain_seconds``), then close the rest in the usual order. A second
    signal cuts the drain short (what is on the wire is cancelled at once)."""
    install_loop_handler()
    app = build_app(runtime)
    server = runtime.config.server
    runner = web.AppRunner(
        app,
        shutdown_timeout=server.shutdown_timeout,
        handle_signals=False,
        keepalive_timeout=server.keepalive_timeout,
        lingering_time=LINGER_SECONDS,  # after a 408 for a slow body, read it this long
        logger=ProtocolLog(),
    )
    stop = asyncio.Event()
    received: list[str] = []
    loop = asyncio.get_running_loop()
    shutdown = app[SHUTDOWN]

    def on_signal(sig: signal.Signals) -> None:
        if not received:
            log.info("signal received", extra={"signal": sig.name})
        elif shutdown.dispatcher is not None and not shutdown.dispatcher.done():
            log.warning("second signal: deliveries cancelled now", extra={"signal": sig.name})
            shutdown.dispatcher.cancel()
        received.append(sig.name)
        stop.set()

    try:
        sock = bind_listener(server.host, server.port, LISTEN_BACKLOG)
    except OSError as exc:
        log.error(
            "cannot listen: nothing was started",
            extra={"host": server.host, "port": server.port, "error": str(exc)},
        )
        return 2
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await runner.setup()
    except BaseException:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        sock.close()
        raise
    try:
        site = GuardedSite(
            runner, server.host, server.port, app[SHUTDOWN].guard, sock, backlog=LISTEN_BACKLOG
        )
        await site.start()
        port = _bound_port(runner) or server.port
        log.info("listening", extra={"host": server.host, "port": port})
        if on_listening is not None:
            on_listening(server.host, port)
        stopper = asyncio.create_task(stop.wait())
        fatal = asyncio.create_task(runtime.fatal.wait())
        await asyncio.wait({stopper, fatal}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        fatal.cancel()
        reason = runtime.fatal_reason or (received[0] if received else "signal")
        log.info("stopping", extra={"reason": reason})
        site.stop_listening()
        if not runtime.fatal.is_set():
            await _drain(app)
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    return 1 if runtime.fatal.is_set() else 0


async def _drain(app: web.Application) -> None:
    """Stop taking work, let the deliveries in flight finish (see
    :meth:`~bridge.engine.Engine.run_dispatcher`), log what happened."""
    runtime = app[RUNTIME]
    shutdown = app[SHUTDOWN]
    shutdown.draining.set()
    if runtime.scheduler.running:
        runtime.scheduler.pause()
    if shutdown.inbox_worker is not None:
        shutdown.inbox_worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await shutdown.inbox_worker
    dispatcher = shutdown.dispatcher
    if dispatcher is None or dispatcher.done():
        return
    shutdown.stop_dispatch.set()
    margin = 5.0  # the dispatcher keeps its own deadline; this bounds a stuck store
    done, _ = await asyncio.wait({dispatcher}, timeout=runtime.config.server.drain_seconds + margin)
    if not done:
        log.error("dispatcher did not drain in time: cancelled")
        dispatcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dispatcher
        return
    report = shutdown.drain_report
    if report is not None:
        log.info(
            "drained",
            extra={
                "finished": len(report.finished),
                "released_unsent": len(report.released_unsent),
                "cancelled_outcome_unknown": len(report.cancelled),
            },
        )


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
