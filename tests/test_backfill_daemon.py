"""``returns-bridge backfill orders`` as the operator runs it: a child process, beside a real
daemon (``python -m bridge run``, a child too) or alone, the ReturnLogic and Optoro sandboxes
on loopback in this process, one SQLite file.

Beside a daemon the command makes no ReturnLogic call: the daemon runs the job with the
governor its own polls use, so the sandbox's request log never shows more than 2 requests in
a second or 120 in a minute (see :mod:`adapters.returnlogic.backfill_jobs`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.optoro.sandbox import OptoroSandbox
from adapters.optoro.sandbox import running_sandbox as running_optoro
from adapters.returnlogic.backfill import Checkpoint, checkpoint_name
from adapters.returnlogic.backfill_jobs import Presence, presence_name
from adapters.returnlogic.sandbox import ReturnLogicSandbox
from adapters.returnlogic.sandbox import running_sandbox as running_rl
from bridge.store import Store, store_from_url
from tests.daemon_process import REPO, DaemonProcess, until
from tests.harness import ENV, OPTORO_CLIENT_ID, OPTORO_SECRET, RETAILER, config_text, optoro_table
from tests.test_returnlogic_orders import name_addresses, rl_table

ORDERS = 300
PAGE = 25


@dataclass
class Setup:
    rl: ReturnLogicSandbox
    optoro: OptoroSandbox
    config: Path
    store: Store
    tmp: Path

    async def checkpoint(self) -> Checkpoint | None:
        return Checkpoint.load(await self.store.get_cursor(checkpoint_name(RETAILER)))

    async def presence(self) -> Presence | None:
        return Presence.load(await self.store.get_cursor(presence_name(RETAILER)))

    def backfill_requests(self) -> list[Any]:
        """The backfill's requests (a closed createDate window; polls have no upper bound)."""
        return [r for r in self.rl.requests if "maxCreateDate" in r.query]

    def backfill_skips(self, since: int = 0) -> list[int]:
        return [
            int(r.query["skip"]) for r in self.backfill_requests()[since:] if r.path == "/v1/orders"
        ]

    def polls(self) -> list[Any]:
        return [
            r for r in self.rl.requests if r.path == "/v1/orders" and "maxCreateDate" not in r.query
        ]

    async def daemon(self, name: str = "daemon") -> DaemonProcess:
        return await DaemonProcess.start(self.config, self.tmp / f"{name}.log", ENV)

    async def backfill(self, *extra: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge",
            "backfill",
            "orders",
            "--config",
            str(self.config),
            "--retailer",
            RETAILER,
            "--since",
            "200d",
            *extra,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=REPO,
            env={**os.environ, **ENV},
        )

    async def daemon_beats(self) -> None:
        async def fresh() -> bool:
            presence = await self.presence()
            return presence is not None and self.store.clock() - presence.beat_at < 5

        await until(fresh, 30, "the daemon's backfill runner to beat")

    def assert_windows_kept(self) -> None:
        assert self.rl.max_in_any_second() <= 2
        assert self.rl.max_in_any_minute() <= 120
        assert self.rl.rate_limited == 0

    async def every_order_reaches_optoro(self) -> None:
        numbers = {o["orderNumber"] for o in self.rl.orders.values()}
        await until(lambda: set(self.optoro.orders) == numbers, 60, "every order in Optoro")


async def finished(proc: asyncio.subprocess.Process, within: float = 120) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def setup(tmp_path: Path, *, poll: bool, orders: int = ORDERS) -> AsyncIterator[Setup]:
    async with (
        running_rl() as rl,
        running_optoro(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as optoro,
    ):
        rl.generate(orders=orders, seed=7, anchor=datetime.now(UTC), days=180)
        for order in rl.orders.values():
            name_addresses(order)
        polls = {"enabled": "true", "poll_every": "1.0"} if poll else {}
        tables = optoro_table(optoro.url) + rl_table(
            rl.url, rl.issue_api_key(), page_size=str(PAGE), **polls
        )
        db = tmp_path / "bridge.db"
        config = tmp_path / "bridge.toml"
        config.write_text(config_text(db, tables))
        store = store_from_url(f"sqlite:///{db}")
        await store.open()  # creates the schema before any child opens the file
        try:
            yield Setup(rl, optoro, config, store, tmp_path)
        finally:
            await store.close()


async def test_backfill_beside_a_polling_daemon_is_run_by_it_within_both_windows(
    tmp_path: Path,
) -> None:
    async with setup(tmp_path, poll=True) as s:
        daemon = await s.daemon()
        try:
            await s.daemon_beats()
            await until(lambda: len(s.polls()) >= 1, 30, "the daemon's first poll")
            first = await s.backfill()

            async def job_queued() -> bool:
                job = await s.checkpoint()
                return job is not None and not job.done

            await until(job_queued, 30, "the backfill job to be requested")
            second = await s.backfill()  # joins the job: never a second one at once
            code, out, err = await finished(first)
            assert code == 0, err
            code2, out2, err2 = await finished(second)
            assert code2 == 0, err2
            assert f"{ORDERS}/{ORDERS} read" in out2

            assert "queued for the running daemon" in err
            assert f"{ORDERS}/{ORDERS} read (from 0)" in out
            assert "the daemon delivers them" in out
            assert "following the unfinished backfill" in err2
            assert f"{ORDERS}/{ORDERS}" in err2
            assert s.backfill_skips() == list(range(0, ORDERS, PAGE))  # one job, each page once
            backfill = s.backfill_requests()
            during = [p for p in s.polls() if backfill[0].at <= p.at <= backfill[-1].at]
            assert len(during) >= 2  # the daemon kept polling while it backfilled
            s.assert_windows_kept()
            await s.every_order_reaches_optoro()
        finally:
            assert await daemon.stop(signal.SIGTERM) == 0


async def test_a_daemon_restart_resumes_the_job_from_its_stored_cursor(tmp_path: Path) -> None:
    async with setup(tmp_path, poll=False) as s:
        daemon = await s.daemon()
        await s.daemon_beats()
        command = await s.backfill()

        async def midway() -> bool:
            job = await s.checkpoint()
            return job is not None and 2 * PAGE <= job.skip < ORDERS

        await until(midway, 60, "the job to be midway")
        await daemon.stop(signal.SIGKILL)
        code, _, err = await finished(command, 60)
        assert code == 1  # the command follows the job; the daemon is gone
        assert "the daemon stopped before the backfill finished" in err
        stopped = await s.checkpoint()
        assert stopped is not None
        assert not stopped.done
        before = len(s.backfill_requests())

        again = await s.daemon("daemon-again")
        try:

            async def done() -> bool:
                job = await s.checkpoint()
                return job is not None and job.done

            await until(done, 60, "the restarted daemon to finish the job")
            assert s.backfill_skips(before) == list(range(stopped.skip, ORDERS, PAGE))
            s.assert_windows_kept()
            await s.every_order_reaches_optoro()
        finally:
            assert await again.stop(signal.SIGTERM) == 0


async def test_backfill_without_a_daemon_runs_in_process_and_resumes(tmp_path: Path) -> None:
    async with setup(tmp_path, poll=False) as s:
        assert await s.presence() is None
        command = await s.backfill()

        async def midway() -> bool:
            job = await s.checkpoint()
            return job is not None and 4 * PAGE <= job.skip < ORDERS

        await until(midway, 60, "the backfill to be midway")
        command.send_signal(signal.SIGINT)
        code, _, err = await finished(command, 60)
        assert code == 130, err
        assert "run the same command again to resume" in err
        stopped = await s.checkpoint()
        assert stopped is not None
        assert not stopped.done
        assert stopped.owner is None  # released at the interruption: a rerun starts at once
        before = len(s.backfill_requests())

        code, out, err = await finished(await s.backfill())
        assert code == 0, err
        assert "resuming the unfinished backfill" in err
        assert f"{ORDERS}/{ORDERS} read (resumed at {stopped.skip:,})" in out
        assert s.backfill_skips(before) == list(range(stopped.skip, ORDERS, PAGE))
        assert s.rl.rate_limited == 0
        done = await s.checkpoint()
        assert done is not None
        assert done.done
        assert done.counts["records"] == ORDERS  # each order read once over both runs


async def test_a_daemon_started_during_an_in_process_backfill_takes_the_job_over(
    tmp_path: Path,
) -> None:
    orders = 2 * ORDERS  # 24 pages, about 12 s at 2/s: the daemon starts well before the end
    async with setup(tmp_path, poll=False, orders=orders) as s:
        command = await s.backfill()

        async def started() -> bool:
            job = await s.checkpoint()
            return job is not None and job.skip >= 2 * PAGE

        await until(started, 60, "the in-process backfill to start")
        daemon = await s.daemon()
        try:
            code, out, err = await finished(command)
            assert code == 0, err
            assert "a daemon started: it runs the rest of the backfill" in err
            assert f"{orders:,}/{orders:,} read" in out
            done = await s.checkpoint()
            assert done is not None
            assert done.done
            assert done.requested  # the daemon finished it
            assert set(s.backfill_skips()) == set(range(0, orders, PAGE))
            assert s.rl.rate_limited == 0
            await s.every_order_reaches_optoro()
        finally:
            assert await daemon.stop(signal.SIGTERM) == 0
