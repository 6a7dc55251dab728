"""The inbound listener's defences against slow and greedy clients, and back-pressure.

aiohttp's server closes idle keep-alive connections but has no deadline for a request
head or body, and no per-client limit. Here:

* :class:`ConnectionGuard` wraps each connection's aiohttp protocol (a thin proxy given
  to ``loop.create_server``, see :class:`GuardedSite`). It refuses a connection beyond
  ``max_connections_per_peer`` open ones from the same address with a ready-made 503
  and closes it, before aiohttp parses a byte. It gives every request head a deadline:
  ``header_timeout`` from the connection's start, or from the first byte after the
  previous response; a head still incomplete then is answered 408 and the connection
  closed. (Bytes of a pipelined request that arrive while the previous one is handled
  start no deadline; the keep-alive timeout bounds that case.)
* :func:`limits_middleware` reads every request body within ``body_timeout`` (408 and
  close otherwise) before a handler sees the request, and answers 503 while the daemon
  drains (only ``/healthz`` still answers).
* :class:`InboxBacklog` and :func:`backpressured` answer 503 with ``Retry-After`` on the
  endpoints that store into the inbox while the pending backlog is over
  ``max_inbox_backlog``: such a request stores nothing, so nothing accepted is lost, and
  Optoro and ReturnLogic retry 5xx. 503 (not 429, never 500) because the condition is
  the bridge's, not the sender's rate. The backlog is counted in the store at most every
  :data:`BACKLOG_REFRESH` seconds (every :data:`BACKLOG_RECHECK` seconds near the
  limit) and the requests accepted since are added, so a burst cannot overshoot it by
  more than the requests already in flight.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

BACKLOG_REFRESH = 1.0
"""Seconds a counted backlog is trusted while it is under the limit."""
BACKLOG_RECHECK = 0.1
"""Seconds a counted backlog is trusted once it (plus what was accepted since) reaches the
limit: the 503 is answered only on a recent count."""
LINGER_SECONDS = 2.0
"""Seconds a connection answered and half-closed waits for the client to close."""
HEALTH_PATHS = frozenset({"/healthz"})
"""Paths that still answer while the daemon drains."""


@dataclass(frozen=True)
class ListenerLimits:
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections_per_peer: int = 256
    """0: no cap."""


class ProtocolLog(logging.Logger):
    """aiohttp's server log (``logger=`` of the runner): a request the HTTP parser refuses
    (bad framing, bad header line; aiohttp answers 400) is one warning line naming the
    error class and status, never a traceback nor the bytes the client sent."""

    def __init__(self) -> None:
        super().__init__(f"{__name__}.protocol")
        self.parent = log

    def exception(
        self,
        msg: object,
        *args: object,
        exc_info: bool
        | tuple[type[BaseException], BaseException, TracebackType | None]
        | tuple[None, None, None]
        | BaseException
        | None = True,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError):
            self.warning(
                "malformed request refused",
                extra={"error": type(exc).__name__, "status": exc.code},
            )
            return
        super().exception(
            msg, *args, exc_info=exc_info, stack_info=stack_info, stacklevel=stacklevel, extra=extra
        )


def raw_json_response(
    status: int, reason: str, message: str, field: str | None = None, retry_after: int | None = None
) -> bytes:
    """A complete ``Connection: close`` HTTP/1.1 answer with a JSON error body, for
    connections refused or timed out before aiohttp has a request to answer."""
    error: dict[str, Any] = {"message": message}
    if field is not None:
        error["field"] = field
    body = json.dumps({"error": error}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if retry_after is not None:
        head += f"Retry-After: {retry_after}\r\n"
    return (head + "\r\n").encode() + body


class _GuardedProtocol(asyncio.Protocol):
    """Forwards everything to aiohttp's protocol; adds the peer cap and head deadline."""

    def __init__(self, guard: ConnectionGuard, inner: RequestHandler) -> None:
        self.guard = guard
        self.inner = inner
        self.peer = "unknown"
        self.transport: asyncio.Transport | None = None
        self.refused = False
        self.answered = False
        """A ready-made answer went out (refusal, head timeout): input is dropped now."""
        self.in_request = False
        self.awaiting_head = True
        self.last_answer_closes = False
        """The last answer ends the connection: what still arrives is its body's rest."""
        self.deadline: asyncio.TimerHandle | None = None
        self.linger: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and peername:
            self.peer = str(peername[0])
        if not self.guard.admit(self.peer):
            self.refused = True
            self._answer_and_close(transport, self.guard.refusal)
            return
        self.transport = transport
        self.guard.opened(self)
        self.inner.connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.refused or self.answered:
            return  # read and dropped: a close with unread input would reset the answer
        if not self.in_request and not self.awaiting_head and not self.last_answer_closes and data:
            self.awaiting_head = True
            self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if not self.refused and not self.answered:
            self.inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.linger is not None:
            self.linger.cancel()
            self.linger = None
        if self.refused:
            return
        self.guard.closed(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()

    # the request-head deadline ---------------------------------------------------------

    def request_started(self) -> None:
        self.in_request = True
        self.awaiting_head = False
        self._disarm()

    def request_finished(self, closes: bool) -> None:
        self.in_request = False
        self.last_answer_closes = closes

    def _arm(self) -> None:
        self._disarm()
        loop = asyncio.get_running_loop()
        self.deadline = loop.call_later(self.guard.limits.header_timeout, self._head_too_slow)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _head_too_slow(self) -> None:
        self.deadline = None
        transport = self.transport
        if not self.awaiting_head or self.in_request or transport is None:
            return
        if transport.is_closing():
            return
        self.guard.head_timeouts += 1
        if transport.get_write_buffer_size():
            transport.abort()  # the previous answer is still unread: no room for a 408
            return
        self.answered = True
        self._answer_and_close(transport, self.guard.head_timeout_answer)

    def _answer_and_close(self, transport: asyncio.Transport, answer: bytes) -> None:
        """Write ``answer``, half-close, and drop what the client still sends until it
        closes too, at most :data:`LINGER_SECONDS`: closing at once with its input unread
        would make the kernel reset the connection, and the answer could be lost."""
        transport.write(answer)
        if transport.can_write_eof():
            transport.write_eof()
        else:  # pragma: no cover - TCP transports can
            transport.close()
        self.linger = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.abort)


class ConnectionGuard:
    """Open connections per peer address, the head deadline, and counters for tests and
    metrics (``refused``, ``head_timeouts``, ``body_timeouts``)."""

    def __init__(self, limits: ListenerLimits) -> None:
        self.limits = limits
        self.open: Counter[str] = Counter()
        self.refused = 0
        self.head_timeouts = 0
        self.body_timeouts = 0
        self._capped: dict[str, int] = {}
        self._by_handler: dict[RequestHandler, _GuardedProtocol] = {}
        self.refusal = raw_json_response(
            503,
            "Service Unavailable",
            f"too many open connections from this address (at most"
            f" {limits.max_connections_per_peer})",
            retry_after=1,
        )
        self.head_timeout_answer = raw_json_response(
            408,
            "Request Timeout",
            f"request head not received within {limits.header_timeout:g} s",
            field="headers",
        )

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        """What ``loop.create_server`` calls per connection instead of ``server``."""

        def make() -> asyncio.Protocol:
            return _GuardedProtocol(self, server())

        return make

    def admit(self, peer: str) -> bool:
        cap = self.limits.max_connections_per_peer
        if cap and self.open[peer] >= cap:
            self.refused += 1
            if peer not in self._capped:
                log.warning("connection cap reached", extra={"peer": peer, "cap": cap})
                self._capped[peer] = 0
            self._capped[peer] += 1
            return False
        self.open[peer] += 1
        return True

    def opened(self, proto: _GuardedProtocol) -> None:
        self._by_handler[proto.inner] = proto

    def closed(self, proto: _GuardedProtocol) -> None:
        self._by_handler.pop(proto.inner, None)
        self.open[proto.peer] -= 1
        if self.open[proto.peer] <= 0:
            del self.open[proto.peer]
        cap = self.limits.max_connections_per_peer
        if proto.peer in self._capped and self.open[proto.peer] < cap:
            refused = self._capped.pop(proto.peer)
            log.info(
                "connection cap no longer reached", extra={"peer": proto.peer, "refused": refused}
            )

    def request_started(self, request: web.BaseRequest) -> None:
        proto = self._by_handler.get(request.protocol)
        if proto is not None:
            proto.request_started()

    def request_finished(self, request: web.BaseRequest, closes: bool = False) -> None:
        """``closes``: the answer ends the connection (no next request to wait for)."""
        proto = self._by_handler.get(request.protocol)
        if proto is not None:
            proto.request_finished(closes)


def bind_listener(host: str, port: int, backlog: int) -> socket.socket:
    """The daemon's listening socket, bound before anything else starts: a second daemon on
    a port in use fails here, before it opens the store or takes back any lease (``OSError``).
    Connections that arrive while the daemon starts wait in the backlog."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog)


class GuardedSite(web.TCPSite):
    """A ``TCPSite`` whose connections go through a :class:`ConnectionGuard`."""

    __slots__ = ("_guard", "_sock")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        sock: socket.socket | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(runner, host, port, **kw)
        self._guard = guard
        self._sock = sock

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        if self._sock is not None:  # bound and listening already (see bind_listener)
            self._server = await loop.create_server(
                self._guard.protocol_factory(server), sock=self._sock, backlog=self._backlog
            )
        else:
            self._server = await loop.create_server(
                self._guard.protocol_factory(server),
                self._host,
                self._port,
                backlog=self._backlog,
                reuse_address=self._reuse_address,
                reuse_port=self._reuse_port,
            )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]
        else:
            self._bound_port = self._port

    def stop_listening(self) -> None:
        """Accept no new connection; open ones go on until the runner shuts down."""
        if self._server is not None:
            self._server.close()


def limits_middleware(guard: ConnectionGuard, draining: asyncio.Event) -> Middleware:
    """Marks each request on its connection (head deadline off while it is handled),
    answers 503 while draining, and reads the body within ``body_timeout``."""
    body_timeout = guard.limits.body_timeout

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        guard.request_started(request)
        response: web.StreamResponse | None = None
        try:
            response = await limited(request, handler)
            return response
        finally:
            # the connection ends after this answer (aiohttp's rule: a body not read to
            # its end, or an answer that closes): its remaining bytes start no deadline
            closes = (response is not None and response.keep_alive is False) or not (
                request.content.is_eof()
            )
            guard.request_finished(request, closes)

    async def limited(request: web.Request, handler: Handler) -> web.StreamResponse:
        if draining.is_set() and request.path not in HEALTH_PATHS:
            response = web.json_response(
                {"error": {"message": "the bridge is stopping: retry later"}}, status=503
            )
            response.headers["Retry-After"] = "5"
            response.force_close()
            return response
        if request.can_read_body:
            try:
                async with asyncio.timeout(body_timeout):
                    await request.read()  # kept by aiohttp for the handler
            except TimeoutError:
                guard.body_timeouts += 1
                response = web.json_response(
                    {
                        "error": {
                            "field": "body",
                            "message": f"request body not received within {body_timeout:g} s",
                        }
                    },
                    status=408,
                )
                response.force_close()
                return response
            except ConnectionResetError:
                response = web.json_response(
                    {"error": {"field": "body", "message": "connection lost mid-body"}},
                    status=400,
                )
                response.force_close()
                return response
        return await handler(request)

    return middleware


class InboxBacklog:
    """The pending inbox backlog as the webhook endpoints see it (cheap per request)."""

    def __init__(
        self,
        count: Callable[[], Awaitable[int]],
        limit: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.count = count
        self.limit = limit
        self.clock = clock
        self.counted = 0
        self.counted_at = float("-inf")
        self.accepted_since = 0
        self.refused = 0
        """503s answered in all."""
        self.over = False
        self._refused_this_time = 0
        self._counting: asyncio.Future[None] | None = None

    @property
    def estimate(self) -> int:
        return self.counted + self.accepted_since

    async def full(self) -> bool:
        """True when a webhook should be answered 503 now."""
        if not self.limit:
            return False
        age = self.clock() - self.counted_at
        if age >= BACKLOG_REFRESH or (self.estimate >= self.limit and age >= BACKLOG_RECHECK):
            await self._recount()
        full = self.estimate >= self.limit
        if full != self.over:
            self.over = full
            if full:
                log.warning(
                    "inbox backlog over the limit: webhooks answered 503",
                    extra={"pending": self.estimate, "limit": self.limit},
                )
            else:
                log.info(
                    "inbox backlog under the limit again",
                    extra={"pending": self.estimate, "refused": self._refused_this_time},
                )
                self._refused_this_time = 0
        if full:
            self.refused += 1
            self._refused_this_time += 1
        return full

    def accepted(self) -> None:
        self.accepted_since += 1

    async def _recount(self) -> None:
        if self._counting is not None:  # one count at a time; the others wait for it
            await asyncio.shield(self._counting)
            return
        self._counting = asyncio.get_running_loop().create_future()
        try:
            counted = await self.count()
        except Exception as exc:  # the store's trouble is answered by the handler itself
            log.warning("inbox backlog not counted", extra={"reason": type(exc).__name__})
            counted = self.counted
        finally:
            self._counting.set_result(None)
            self._counting = None
        self.counted = counted
        self.counted_at = self.clock()
        self.accepted_since = 0


def backpressured(handler: Handler, backlog: InboxBacklog, retry_after: int) -> Handler:
    """``handler`` (an endpoint storing into the inbox) behind the backlog check."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if await backlog.full():
            response = web.json_response(
                {
                    "error": {
                        "message": f"the bridge has more than {backlog.limit} messages waiting:"
                        f" not stored, retry in {retry_after} s",
                        "retry_after": retry_after,
                    }
                },
                status=503,
            )
            response.headers["Retry-After"] = str(retry_after)
            return response
        answer = await handler(request)
        if answer.status < 300:
            backlog.accepted()
        return answer

    return guarded
