"""kill -9 and restart: the next process never exceeds ReturnLogic's minute window.

A file of its own because it lasts one window (about 65 s): the minute window can only be
seen to hold by waiting for it to move."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from adapters.optoro.sandbox import running_sandbox as optoro_sandbox
from adapters.returnlogic.sandbox import running_sandbox as rl_sandbox
from tests.daemon_process import DaemonProcess, until
from tests.harness import (
    OPTORO_CLIENT_ID,
    OPTORO_SECRET,
    WEBHOOK_PASSWORD,
    config_text,
    optoro_table,
)
from tests.test_limits_recovery import RL_TOKEN, api_requests, fill_rl, rl_table


@pytest.mark.slow
async def test_kill_9_never_lets_the_next_process_exceed_the_minute_window(
    tmp_path: Path,
) -> None:
    """A daemon uses its whole minute budget (10/s, 30/min at the sandbox and in the
    config), is killed with SIGKILL, and starts again at once: the new process waits for
    its predecessor's calls to leave the window instead of sending (0 x 429), then goes on.
    Lasts one window (about 65 s): the only way to see the minute window hold."""
    async with (
        rl_sandbox(rate_limit_second=10, rate_limit_minute=30) as rl,
        optoro_sandbox(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as optoro,
    ):
        fill_rl(rl)
        config = tmp_path / "bridge.toml"
        tables = optoro_table(optoro.url) + rl_table(rl.url, per_second=10, per_minute=30)
        config.write_text(config_text(tmp_path / "bridge.db", tables))
        env = {"RL_TOKEN": RL_TOKEN, "OPTORO_SECRET": OPTORO_SECRET}
        env["WEBHOOK_PASSWORD"] = WEBHOOK_PASSWORD
        log = tmp_path / "daemon.log"
        first = await DaemonProcess.start(config, log, env)
        await until(lambda: len(api_requests(rl)) >= 30, 30, "the minute budget spent")
        assert await first.stop(signal.SIGKILL) == -signal.SIGKILL
        killed_at = time.monotonic()
        second = await DaemonProcess.start(config, log, env)
        try:
            await until(lambda: len(api_requests(rl)) >= 36, 90, "calls after the window moved")
        finally:
            await second.stop(signal.SIGTERM)
        first_call = api_requests(rl)[0]
        resumed = api_requests(rl)[30]
        assert rl.rate_limited == 0
        assert rl.max_in_any_minute() <= 30
        assert rl.max_in_any_second() <= 10
        assert resumed - first_call >= 60.0  # it waited for the window, as the partner counts
        print(
            f"restart: resumed {resumed - first_call:.1f}s after the first call of the window,"
            f" {time.monotonic() - killed_at:.1f}s after the kill; 0 x 429"
        )
