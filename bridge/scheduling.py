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
from datetime import UTC, datetime
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

    def every(
        self,
        job_id: str,
        run: Callable[[], Awaitable[object]],
        seconds: float,
        *,
        first_at: datetime | None = None,
    ) -> None:
        """Run ``run`` every ``seconds``, one run at a time, late runs coalesced (first at
        ``first_at``; default: one period after the start)."""
        self.add_job(
            run,
            "interval",
            seconds=seconds,
            id=job_id,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            replace_existing=True,
            **({"next_run_time": first_at} if first_at is not None else {}),
        )

    def run_soon(self, job_id: str) -> bool:
        """Bring job ``job_id``'s next run forward to now; False when there is no such job."""
        job = self.get_job(job_id)
        if job is None:
            return False
        job.modify(next_run_time=datetime.now(UTC))
        return True

    def once(
        self, job_id: str, run: Callable[[], Awaitable[object]], *, at: datetime | None = None
    ) -> None:
        """Run ``run`` once at ``at`` (default: when the scheduler starts), however late."""
        self.add_job(
            run,
            "date",
            run_date=at or datetime.now(UTC),
            misfire_grace_time=None,
            id=job_id,
            replace_existing=True,
        )
