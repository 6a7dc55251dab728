"""Whether a delivery's request may have left the process.

A graceful stop must tell a delivery that is still waiting (in the rate governor, for a
connection, building its body) from one whose bytes may already be with the partner: the
first is released as never sent, the second keeps an unknown outcome. The
:class:`SendTracker` runs each delivery in a context of its own holding a
:class:`SendRecord`, and its ``trace_config`` (installed on the daemon's one
``ClientSession``) marks the record the moment any request of that delivery holds a
connection, i.e. before its first byte can be written. Marking at the connection, not
at the first byte, errs on the safe side: a request cancelled between the two counts as
maybe sent.

The same marks tell one request's failure apart (:func:`request_record`): one that never
held a connection (refused, DNS, connect timeout, waiting for the pool) is known not to
have been sent; :class:`~bridge.http.HttpClient` reports only the others as of unknown
outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")

_CURRENT: contextvars.ContextVar[SendRecord | None] = contextvars.ContextVar(
    "bridge_send_record", default=None
)


@dataclass
class SendRecord:
    """One delivery's (or one request's) record: ``may_have_left`` once one of its
    requests got a connection; marking it marks ``within`` (the delivery it is part of)."""

    may_have_left: bool = False
    within: SendRecord | None = None

    def mark(self) -> None:
        record: SendRecord | None = self
        while record is not None:
            record.may_have_left = True
            record = record.within


def traced(session: aiohttp.ClientSession) -> bool:
    """Whether ``session`` marks records (a :class:`SendTracker`'s ``trace_config`` is
    installed on it)."""
    return any(_mark in config.on_connection_create_end for config in session.trace_configs)


@contextlib.contextmanager
def request_record() -> Iterator[SendRecord]:
    """A record for one request, marked when that request gets a connection (and marking
    the record of the delivery it runs in, if any), on a :func:`traced` session."""
    record = SendRecord(within=_CURRENT.get())
    token = _CURRENT.set(record)
    try:
        yield record
    finally:
        _CURRENT.reset(token)


class SendTracker:
    """Runs deliveries with a :class:`SendRecord` each; give ``trace_config`` to the session
    every delivery sends through (a request through another session is not seen)."""

    def __init__(self) -> None:
        self.trace_config = aiohttp.TraceConfig()
        self.trace_config.on_connection_create_end.append(_mark)
        self.trace_config.on_connection_reuseconn.append(_mark)

    def start(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None
    ) -> tuple[asyncio.Task[T], SendRecord]:
        """``coro`` as a task whose requests mark the returned record."""
        record = SendRecord()
        context = contextvars.copy_context()
        context.run(_CURRENT.set, record)
        return asyncio.create_task(coro, name=name, context=context), record


async def _mark(
    session: aiohttp.ClientSession, trace_config_ctx: SimpleNamespace, params: object
) -> None:
    record = _CURRENT.get()
    if record is not None:
        record.mark()
