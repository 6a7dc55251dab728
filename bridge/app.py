"""The daemon: one aiohttp application, its resources owned through ``cleanup_ctx``.

Order of start (and reverse order of stop): store -> HTTP session -> engine tasks ->
scheduler. Adapters are wired per retailer by their ``setup`` hook, which registers
inbound routes, inbox handlers, destinations, jobs and readiness checks on the
:class:`Runtime`; the core never names a platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from pydantic import BaseModel

from bridge.config import AppConfig, RetailerConfig
from bridge.engine import Engine, EngineSettings
from bridge.errors import BridgeError, ConfigError
from bridge.http import HttpClient
from bridge.lifecycle import Lifecycle
from bridge.openapi import Operation, Security, build_document
from bridge.registry import AdapterRegistry, load_registry
from bridge.services import RMA_LIFECYCLE
from bridge.store import Store, store_from_url

log = logging.getLogger(__name__)

Readiness = Callable[[], Awaitable[str | None]]
"""Returns ``None`` when ready, else the reason it is not."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    """One inbound endpoint and what ``/openapi.json`` says about it (its models are the
    ones its handler validates with)."""

    method: str
    path: str
    handler: Handler
    name: str = ""
    operation: Operation = field(default_factory=Operation)


@dataclass
class Runtime:
    """What the daemon hands to adapters. ``store``, ``http`` are set when the app starts."""

    config: AppConfig
    registry: AdapterRegistry
    store: Store
    engine: Engine
    scheduler: AsyncIOScheduler
    routes: list[Route] = field(default_factory=list)
    readiness: dict[str, Readiness] = field(default_factory=dict)
    startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    session: aiohttp.ClientSession | None = None
    fatal: asyncio.Event = field(default_factory=asyncio.Event)
    fatal_reason: str | None = None
    services: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def http(self) -> HttpClient:
        if self.session is None:
            raise BridgeError("the HTTP session is not open yet")
        return HttpClient(self.session)

    def add_route(
        self,
        retailer: str,
        platform: str,
        method: str,
        subpath: str,
        handler: Handler,
        *,
        summary: str = "",
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        headers: type[BaseModel] | None = None,
        path_params: type[BaseModel] | None = None,
        security: tuple[Security, ...] = (),
        responses: dict[int, str] | None = None,
    ) -> str:
        """Mount ``handler`` at ``/retailers/<retailer>/<platform>/<subpath>``.

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
        self.routes.append(Route(method, path, handler, operation=operation))
        return path

    def provide(self, retailer: str, capability: str, adapter: str, service: Any) -> None:
        """``adapter`` offers ``capability`` (see :mod:`bridge.services`) for ``retailer``."""
        self.services.setdefault((retailer, capability), {})[adapter] = service

    def service(self, retailer: str, capability: str) -> Any:
        """The provider of ``capability`` for ``retailer``, as its routes choose."""
        providers = self.services.get((retailer, capability), {})
        chosen = self.config.retailers[retailer].routes.get(capability)
        if chosen is not None:
            if chosen not in providers:
                raise ConfigError(
                    f"retailers.{retailer}.routes.{capability}: adapter {chosen!r} does not"
                    f" provide it; providers: {', '.join(sorted(providers)) or 'none'}"
                )
            return providers[chosen]
        if len(providers) == 1:
            return next(iter(providers.values()))
        if not providers:
            raise ConfigError(f"retailer {retailer!r}: no configured adapter provides {capability}")
        raise ConfigError(
            f"retailers.{retailer}.routes.{capability}:"
            f" choose one of {', '.join(sorted(providers))}"
        )

    def has_service(self, retailer: str, capability: str) -> bool:
        return bool(self.services.get((retailer, capability)))

    def add_readiness(self, name: str, check: Readiness) -> None:
        self.readiness[name] = check

    def on_startup(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` once the store and HTTP session are open."""
        self.startup.append(hook)

    def watch(self, task: asyncio.Task[Any]) -> None:
        """A side task that ends with an error stops the daemon loudly."""

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


def build_runtime(
    config: AppConfig,
    registry: AdapterRegistry | None = None,
    store: Store | None = None,
    engine_settings: EngineSettings | None = None,
) -> Runtime:
    """The runtime with every enabled retailer's adapters wired, nothing opened yet."""
    registry = registry or load_registry()
    store = store or store_from_url(config.store.url)
    runtime = Runtime(
        config=config,
        registry=registry,
        store=store,
        engine=Engine(store, engine_settings, instance=config.server.instance),
        scheduler=AsyncIOScheduler(timezone="UTC"),
    )
    for retailer in config.retailers.values():
        if retailer.enabled:
            runtime.provide(
                retailer.id,
                RMA_LIFECYCLE,
                "bridge",
                Lifecycle(runtime, retailer.id, retailer.policy),
            )
            _setup_retailer(runtime, retailer)
    return runtime


def _setup_retailer(runtime: Runtime, retailer: RetailerConfig) -> None:
    for name, platform_config in retailer.platforms.items():
        setup = runtime.registry.get(name).hooks.get("setup")
        if setup is not None:
            setup(runtime, retailer, platform_config)


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
    document = runtime.extras.get("openapi.document")
    if document is None:
        document = build_document(runtime.routes, extra=DAEMON_ROUTES)
        runtime.extras["openapi.document"] = document
    return web.json_response(document)


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
    """Every error answer is JSON; an unexpected exception is a 500, never a crash."""
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
    except Exception:
        log.exception("request failed", extra={"path": request.path, "method": request.method})
        return web.json_response({"error": {"message": "internal error"}}, status=500)


def build_app(runtime: Runtime) -> web.Application:
    """The aiohttp application serving the runtime's routes and owning its resources."""
    app = web.Application(
        client_max_size=runtime.config.server.max_body_bytes, middlewares=[json_errors]
    )
    app[RUNTIME] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi_json)
    for route in runtime.routes:
        app.router.add_route(route.method, route.path, route.handler)
    app.cleanup_ctx.extend([_store_ctx, _session_ctx, _startup_ctx, _engine_ctx, _scheduler_ctx])
    return app


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    await runtime.store.open()
    yield
    await runtime.store.close()


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    runtime.session = aiohttp.ClientSession(raise_for_status=False)
    yield
    await runtime.session.close()
    runtime.session = None


async def _startup_ctx(app: web.Application) -> AsyncIterator[None]:
    for hook in app[RUNTIME].startup:
        await hook()
    yield


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    runtime = app[RUNTIME]
    await runtime.engine.take_back_leases()
    tasks = [
        asyncio.create_task(runtime.engine.run_inbox_worker(), name="inbox-worker"),
        asyncio.create_task(runtime.engine.run_dispatcher(), name="dispatcher"),
    ]
    for task in tasks:
        runtime.watch(task)
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    scheduler = app[RUNTIME].scheduler
    scheduler.start()
    yield
    scheduler.shutdown(wait=False)


async def serve(runtime: Runtime, on_listening: Callable[[str, int], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or a crashed side task (exit 1)."""
    app = build_app(runtime)
    server = runtime.config.server
    runner = web.AppRunner(app, shutdown_timeout=server.shutdown_timeout, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = web.TCPSite(runner, server.host, server.port)
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
        log.info("stopping", extra={"reason": runtime.fatal_reason or "signal"})
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    return 1 if runtime.fatal.is_set() else 0


def _bound_port(runner: web.AppRunner) -> int | None:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return None
