"""A tiny fake partner destination for tests (aiohttp), reusable by any test.

It records every request and applies each effect at most once per ``Idempotency-Key``:
a repeated key is answered 200 with the original result and counted in ``replays``
instead of being applied again (what a partner with idempotency keys does). Requests
without the header are applied every time (kept in ``unkeyed``).

Fault knobs, settable as attributes of :class:`FakeDestination` or at runtime with
``POST /_control`` (a JSON object of the same names; ``GET /_control`` shows them):

``fail_next`` / ``fail_status`` / ``fail_retry_after``
    answer the next ``fail_next`` requests with ``fail_status`` (503, 429, 400, ...) and
    optionally a ``Retry-After`` header; nothing is applied.
``latency`` / ``latency_jitter``
    seconds to wait (plus uniform jitter) *before* applying; the request is in flight
    meanwhile (``in_flight``), so a client killed now leaves the outcome unknown.
``drop_next``
    "commit then drop": apply the next ``drop_next`` effects, then close the connection
    without answering (the client sees a disconnect; the effect did happen).

Usage::

    async with running_destination() as dest:
        dest.latency = 0.01
        ... POST f"{dest.url}/effects" with an Idempotency-Key ...
        assert dest.applications["key"] == 1
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

IDEMPOTENCY_HEADER = "Idempotency-Key"
CONTROL_PATH = "/_control"
KNOBS = ("fail_next", "fail_status", "fail_retry_after", "latency", "latency_jitter", "drop_next")


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    key: str | None
    outcome: str = "pending"
    """``applied``, ``replay``, ``failed:<status>``, ``dropped`` or ``unkeyed``."""


@dataclass
class FakeDestination:
    """State and knobs of one running fake destination."""

    url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)
    applied: dict[str, Any] = field(default_factory=dict)
    """Idempotency key -> payload, in the order of first application."""
    applications: dict[str, int] = field(default_factory=dict)
    """Idempotency key -> times applied (1 unless deduplication is broken)."""
    attempts: dict[str, int] = field(default_factory=dict)
    """Idempotency key -> requests received with it (any outcome)."""
    results: dict[str, Any] = field(default_factory=dict)
    unkeyed: list[Any] = field(default_factory=list)
    replays: int = 0
    drops: int = 0
    failures: int = 0
    in_flight: int = 0
    # knobs
    fail_next: int = 0
    fail_status: int = 503
    fail_retry_after: float | None = None
    latency: float = 0.0
    latency_jitter: float = 0.0
    drop_next: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def configure(self, **knobs: Any) -> None:
        for name, value in knobs.items():
            if name not in KNOBS:
                raise ValueError(f"unknown knob {name!r}")
            setattr(self, name, value)

    def knobs(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in KNOBS}

    def summary(self) -> dict[str, Any]:
        return {
            "requests": len(self.requests),
            "applied": len(self.applied),
            "replays": self.replays,
            "drops": self.drops,
            "failures": self.failures,
            "in_flight": self.in_flight,
            **self.knobs(),
        }

    # request handling --------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        key = request.headers.get(IDEMPOTENCY_HEADER)
        record = RecordedRequest(request.method, request.path, dict(request.headers), body, key)
        self.requests.append(record)
        if key is not None:
            self.attempts[key] = self.attempts.get(key, 0) + 1
        self.in_flight += 1
        try:
            return await self._answer(request, record)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, record: RecordedRequest) -> web.StreamResponse:
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failures += 1
            record.outcome = f"failed:{self.fail_status}"
            headers = {}
            if self.fail_retry_after is not None:
                headers["Retry-After"] = f"{self.fail_retry_after:g}"
            return web.json_response(
                {"error": "injected failure"}, status=self.fail_status, headers=headers
            )
        delay = self.latency
        if self.latency_jitter:
            delay += self.rng.uniform(0, self.latency_jitter)
        if delay > 0:
            await asyncio.sleep(delay)
        # check-and-apply without an await in between: concurrent repeats of one key
        # (an old attempt still in flight and its retry) apply exactly once
        key = record.key
        if key is None:
            self.unkeyed.append(record.json)
            record.outcome = "unkeyed"
            result: Any = {"id": f"unkeyed-{len(self.unkeyed)}"}
        elif key in self.results:
            self.replays += 1
            record.outcome = "replay"
            result = self.results[key]
        else:
            result = {"id": f"applied-{len(self.applied) + 1}", "key": key}
            self.applied[key] = record.json
            self.applications[key] = self.applications.get(key, 0) + 1
            self.results[key] = result
            record.outcome = "applied"
        if self.drop_next > 0 and record.outcome in ("applied", "unkeyed"):
            self.drop_next -= 1
            self.drops += 1
            record.outcome = "dropped"
            if request.transport is not None:
                request.transport.close()
            # the client never gets an answer; aiohttp cannot write to a closed transport
            raise asyncio.CancelledError
        return web.json_response(result)

    async def control(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            try:
                self.configure(**(await request.json()))
            except (ValueError, TypeError) as exc:
                return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.summary())


def make_app(dest: FakeDestination) -> web.Application:
    """The aiohttp app of ``dest``: ``/_control`` plus a catch-all recording route."""
    app = web.Application()
    app.router.add_route("*", CONTROL_PATH, dest.control)
    app.router.add_route("*", "/{tail:.*}", dest.handle)
    return app


@contextlib.asynccontextmanager
async def running_destination(
    host: str = "127.0.0.1", seed: int | None = None
) -> AsyncIterator[FakeDestination]:
    """Serve a :class:`FakeDestination` on ``host`` and a free port until the block ends."""
    dest = FakeDestination(rng=random.Random(seed))
    runner = web.AppRunner(make_app(dest), handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, 0)
        await site.start()
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        dest.url = f"http://{host}:{port}"
        yield dest
    finally:
        await runner.cleanup()
