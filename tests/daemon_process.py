"""The real daemon as a child process (``python -m bridge run``), and waiting on conditions."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


async def until(condition, within: float, what: str, step: float = 0.02) -> None:  # type: ignore[no-untyped-def]
    """Wait for ``condition()`` (sync or async) to be true, or fail after ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


async def spawn_daemon(
    config: Path,
    log: Path,
    env: dict[str, str],
    *,
    append: bool = False,
    tree: Path = REPO,
) -> asyncio.subprocess.Process:
    """``python -m bridge run --config CONFIG`` as the CLI runs it: stdout piped (its first
    line says where it listens), stderr into ``log`` (appended to, or written anew).
    ``tree``: another checkout whose daemon runs, with its own ``.venv`` (benchmarks
    compare two trees side by side)."""
    python = sys.executable if tree == REPO else str(tree / ".venv" / "bin" / "python")
    with log.open("ab" if append else "wb") as err:
        return await asyncio.create_subprocess_exec(
            python,
            "-m",
            "bridge",
            "run",
            "--config",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            cwd=tree,
            env={**os.environ, **env},
        )


class DaemonProcess:
    """``python -m bridge run`` as a child process (stderr kept in a file)."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    @classmethod
    async def start(cls, config: Path, log: Path, env: dict[str, str]) -> DaemonProcess:
        proc = await spawn_daemon(config, log, env, append=True)
        daemon = cls(proc, log)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if b"listening on" not in line:
            await daemon.stop(signal.SIGKILL)
            text = await asyncio.to_thread(log.read_text)
            raise AssertionError(f"daemon did not start: {line!r}\n{text[-4000:]}")
        return daemon

    async def stop(self, sig: int) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        assert self.proc.stdout is not None
        await self.proc.stdout.read()
        return await asyncio.wait_for(self.proc.wait(), 30)
