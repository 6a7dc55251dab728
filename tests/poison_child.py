"""Child process of the poison-item test in ``tests/test_failure_isolation.py``.

Usage: ``python poison_child.py DB_PATH``. Runs the engine's inbox worker
(:meth:`Engine.run_inbox_worker`, as the daemon does, after taking back the leases of its
instance's former process) on the SQLite store at DB_PATH. Its handler dies the hardest way
(SIGKILL to itself, like an OOM kill or a segfault) on a body ``{"poison": true}`` and
handles anything else. Exits 0 once nothing is pending.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from bridge.engine import Engine, EngineSettings, HandlerContext, Outcome
from bridge.store import InboxItem, Transaction
from bridge.store.sqlite import SqliteStore

KIND = "test.poison"
INSTANCE = "poison-host"


async def handle(item: InboxItem, tx: Transaction, ctx: HandlerContext) -> Outcome:
    if json.loads(item.body).get("poison"):
        os.kill(os.getpid(), signal.SIGKILL)
    return Outcome(note="handled")


async def main(path: str) -> int:
    store = SqliteStore(path)
    await store.open()
    try:
        engine = Engine(store, EngineSettings(idle_poll=0.01), instance=INSTANCE)
        engine.add_handler(KIND, handle)
        await engine.take_back_leases()
        worker = asyncio.create_task(engine.run_inbox_worker())
        while (await store.inbox_stats()).pending:
            await asyncio.wait({worker}, timeout=0.02)
            if worker.done():
                return 3
        worker.cancel()
        return 0
    finally:
        await store.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1])))
