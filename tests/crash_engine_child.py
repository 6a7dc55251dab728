"""Child process of the kill -9 engine test in ``tests/test_crash.py``.

Usage: ``python crash_engine_child.py DB_PATH DESTINATION_URL [PORT]``.

Runs a whole bridge pipeline on the SQLite store at DB_PATH: a webhook endpoint
(``POST /events`` on 127.0.0.1, through :func:`bridge.inbound.receive`), the inbox worker
and the outbox dispatcher. Every event ``{"entity": str, "version": int, "n": int}``
updates the entity's state (newest version wins) and causes one effect, idempotency key
``evt:<entity>:<version>``, posted to ``DESTINATION_URL/effects``. Leases are short so a
killed child's work is picked up again quickly. Prints ``READY <port>`` (flushed) once it
listens; SIGTERM stops it cleanly; SIGUSR1 prints every task's await chain to stderr (for
a child that seems stuck).
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import inspect
import signal
import sys
from typing import Any

import aiohttp
from aiohttp import web

from bridge.engine import (
    Engine,
    EngineSettings,
    HandlerContext,
    HttpDestination,
    Outcome,
    apply_versioned,
)
from bridge.errors import MappingError
from bridge.http import Backoff, DestinationLimits, HttpClient, OutboundRequest
from bridge.inbound import parse_json_object, receive
from bridge.store import Effect, InboxItem, NewEffect, Transaction
from bridge.store.sqlite import SqliteStore

KIND = "test.events"
RETAILER = "crash"
DESTINATION = "partner"
ENTITY_KIND = "test.entity"
EVENT_ID_HEADER = "X-Event-Id"

SETTINGS = EngineSettings(
    inbox_batch=32,
    inbox_lease=1.0,
    effect_batch=32,
    effect_lease=2.0,
    idle_poll=0.05,
    max_concurrent_deliveries=16,
)
HTTP_TIMEOUT = 1.5


def parse_event(body: bytes) -> dict[str, Any]:
    event = parse_json_object(body)
    if not isinstance(event.get("entity"), str) or not event["entity"]:
        raise MappingError("entity must be a non-empty string", field="entity")
    for name in ("version", "n"):
        if not isinstance(event.get(name), int):
            raise MappingError(f"{name} must be an integer", field=name)
    return event


def effect_key(entity: str, version: int) -> str:
    return f"evt:{entity}:{version}"


async def handle_event(item: InboxItem, tx: Transaction, ctx: HandlerContext) -> Outcome:
    """Newest version wins for the entity state; every distinct event causes one effect."""
    event = parse_event(item.body)
    entity, version = event["entity"], event["version"]
    newest = await apply_versioned(tx, ENTITY_KIND, entity, (version,), event, ctx)
    payload = {"entity": entity, "version": version, "n": event["n"], "newest": newest}
    effect = NewEffect(
        idempotency_key=effect_key(entity, version),
        destination=DESTINATION,
        kind="test.notify",
        payload=payload,
        order_key=entity,
        retailer=RETAILER,
    )
    return Outcome(effects=(effect,))


class PartnerDestination(HttpDestination):
    """POSTs the payload; the base class adds the ``Idempotency-Key`` header."""

    def __init__(self, http: HttpClient, base_url: str) -> None:
        super().__init__(
            DESTINATION,
            http,
            DestinationLimits(DESTINATION, timeout=HTTP_TIMEOUT),
            backoff=Backoff(initial=0.05, cap=0.5),
        )
        self.base_url = base_url.rstrip("/")

    async def render(self, effect: Effect) -> OutboundRequest:
        return OutboundRequest("POST", f"{self.base_url}/effects", json=effect.payload)


def _await_chain(coro: Any) -> list[str]:
    lines = []
    while coro is not None:
        if type(coro).__name__ == "async_generator_asend":  # step into the generator
            coro = next((g for g in gc.get_referents(coro) if inspect.isasyncgen(g)), None)
            continue
        frame = (
            getattr(coro, "cr_frame", None)
            or getattr(coro, "gi_frame", None)
            or getattr(coro, "ag_frame", None)
        )
        if frame is not None:
            lines.append(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        nxt = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
        if nxt is None:
            lines.append(f"  awaiting {coro!r}")
        coro = nxt
    return lines


def dump_tasks() -> None:
    """SIGUSR1: every task's await chain and every thread's stack to stderr (the test asks
    for it when the child stalls)."""
    for task in asyncio.all_tasks():
        print(f"--- task {task.get_name()}", file=sys.stderr)
        print("\n".join(_await_chain(task.get_coro())), file=sys.stderr)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    sys.stderr.flush()


async def main(path: str, destination_url: str, port: int) -> int:
    store = SqliteStore(path)
    await store.open()
    session = aiohttp.ClientSession()
    engine = Engine(store, SETTINGS, instance="crash-child")
    await engine.take_back_leases()  # what the killed predecessor had leased resumes now
    engine.add_handler(KIND, handle_event)
    engine.add_destination(PartnerDestination(HttpClient(session), destination_url))

    async def events(request: web.Request) -> web.Response:
        return await receive(
            request,
            engine,
            retailer=RETAILER,
            kind=KIND,
            validate=parse_event,
            key=request.headers.get(EVENT_ID_HEADER),
        )

    app = web.Application()
    app.router.add_post("/events", events)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    workers = [
        asyncio.create_task(engine.run_inbox_worker(), name="inbox-worker"),
        asyncio.create_task(engine.run_dispatcher(), name="dispatcher"),
    ]
    stopper = asyncio.create_task(stop.wait())
    code = 0
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        bound = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        print(f"READY {bound}", flush=True)
        done, _ = await asyncio.wait([*workers, stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stopper:
                code = 1  # a worker died: say why and exit non-zero
                exc = task.exception()
                print(f"worker {task.get_name()} stopped: {exc!r}", file=sys.stderr, flush=True)
                if exc is not None:
                    raise exc
    finally:
        for task in [*workers, stopper]:
            task.cancel()
        await asyncio.gather(*workers, stopper, return_exceptions=True)
        await runner.cleanup()
        await session.close()
        await store.close()
    return code


if __name__ == "__main__":
    sys.exit(
        asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 0))
    )
