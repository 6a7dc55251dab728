"""Run the real daemon app in-process on a loopback port, with a generated config."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.app import Runtime, build_app, build_runtime
from bridge.config import load_config
from bridge.engine import EngineSettings
from bridge.sandboxkit import serving
from bridge.store import EffectState

RETAILER = "acme"
OPTITURN_ID = "acme-optiturn"
WEBHOOK_USER = "optoro"
WEBHOOK_PASSWORD = "hook-pass-123"
OPTORO_CLIENT_ID = "acme-bridge"
OPTORO_SECRET = "optoro-secret-456"


def optoro_table(base_url: str, **extra: str) -> str:
    lines = [
        f"[retailers.{RETAILER}.optoro]",
        f'base_url = "{base_url}"',
        f'client_id = "{OPTORO_CLIENT_ID}"',
        'client_secret = "${OPTORO_SECRET}"',
        f'optiturn_id = "{OPTITURN_ID}"',
        "timeout = 5.0",
        'gift_card_skus = ["GIFTCARD"]',
        *(f"{k} = {v}" for k, v in extra.items()),
        f"[retailers.{RETAILER}.optoro.inbound_auth]",
        'kind = "basic"',
        f'username = "{WEBHOOK_USER}"',
        'password = "${WEBHOOK_PASSWORD}"',
    ]
    return "\n".join(lines) + "\n"


def config_text(db: Path, tables: str, max_body: int = 65536) -> str:
    return (
        f'[server]\nhost = "127.0.0.1"\nport = 0\nmax_body_bytes = {max_body}\n'
        f'[store]\nurl = "sqlite:///{db}"\n[retailers.{RETAILER}]\nname = "Acme"\n' + tables
    )


ENV = {"OPTORO_SECRET": OPTORO_SECRET, "WEBHOOK_PASSWORD": WEBHOOK_PASSWORD}


@dataclass
class Daemon:
    runtime: Runtime
    url: str

    def retailer_url(self, platform: str, path: str) -> str:
        return f"{self.url}/retailers/{RETAILER}/{platform}/{path.lstrip('/')}"

    async def settle(self, within: float = 15.0) -> None:
        """Wait until the inbox and the outbox have nothing pending."""
        store = self.runtime.store
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            stats = await store.inbox_stats()
            pending = await store.list_effects(EffectState.PENDING, limit=1)
            if stats.pending == 0 and not pending:
                return
            await asyncio.sleep(0.02)
        raise AssertionError("daemon did not settle")


@contextlib.asynccontextmanager
async def running_daemon(
    tmp_path: Path,
    tables: str,
    *,
    env: Mapping[str, str] | None = None,
    max_body: int = 65536,
    before_start: Callable[[Runtime], Awaitable[None] | None] | None = None,
    settings: EngineSettings | None = None,
) -> AsyncIterator[Daemon]:
    path = tmp_path / "bridge.toml"
    path.write_text(config_text(tmp_path / "bridge.db", tables, max_body))
    config = load_config(path, env={**ENV, **(env or {})})
    runtime = build_runtime(config, engine_settings=settings or EngineSettings(idle_poll=0.02))
    if before_start is not None:
        result: Any = before_start(runtime)
        if asyncio.iscoroutine(result):
            await result
    async with serving(build_app(runtime)) as url:
        yield Daemon(runtime, url)
        if runtime.fatal.is_set():
            raise AssertionError(runtime.fatal_reason)
