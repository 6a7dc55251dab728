"""The daemon's scheduler: a job cancelled by the stop ends with one info line, no error."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from bridge.scheduling import Scheduler


async def test_a_running_job_cancelled_by_the_stop_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    running = asyncio.Event()
    finished_normally: list[bool] = []

    async def reconcile() -> None:
        running.set()
        await asyncio.Event().wait()  # a long job, still running at the stop
        finished_normally.append(True)

    async def short() -> str:
        return "done"

    scheduler = Scheduler()
    scheduler.start()
    job = scheduler.add_job(reconcile, "date", id="reconcile")
    scheduler.add_job(short, "date", id="short")
    assert job.name == "test_a_running_job_cancelled_by_the_stop_logs_no_error.<locals>.reconcile"
    await asyncio.wait_for(running.wait(), 10)
    scheduler.shutdown(wait=False)

    def stopped() -> list[logging.LogRecord]:
        return [
            r for r in caplog.records if r.getMessage() == "scheduled job cancelled by the stop"
        ]

    deadline = time.monotonic() + 10
    while not stopped():
        assert time.monotonic() < deadline, "the cancelled job was never reported"
        await asyncio.sleep(0.01)
    (record,) = stopped()
    assert record.__dict__["job"] == job.name
    assert finished_normally == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
