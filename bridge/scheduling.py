"""The daemon's job scheduler: APScheduler 3's asyncio scheduler, stopped quietly.

A coroutine job still running when the daemon stops is cancelled with the scheduler. APScheduler
logs such a cancellation as a job error with a traceback; here it is one info line naming the
job, since the stop is what ended it (its work is idempotent and runs again at the next start).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

log = logging.getLogger(__name__)


def quiet_on_stop(func: Callable[..., Awaitable[Any]], name: str) -> Callable[..., Awaitable[Any]]:
    """``func`` whose cancellation (by the daemon's stop) ends the run without an error."""

    @functools.wraps(func)
    async def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return await func(*args, **kwargs)
        except asyncio.CancelledError:
            log.info("scheduled job cancelled by the stop", extra={"job": name})
            return None

    return run


class Scheduler(AsyncIOScheduler):  # type: ignore[misc]  # APScheduler 3 ships no types
    """An ``AsyncIOScheduler`` (UTC) whose coroutine jobs end quietly when the daemon stops."""

    def __init__(self) -> None:
        super().__init__(timezone="UTC")

    def add_job(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        if inspect.iscoroutinefunction(func):
            name = str(kwargs.get("name") or getattr(func, "__qualname__", repr(func)))
            kwargs["name"] = name
            func = quiet_on_stop(func, name)
        return super().add_job(func, *args, **kwargs)
