"""Child process of the kill -9 test in ``tests/test_store.py``.

Usage: ``python store_crash_child.py DB_PATH COUNT``. Accepts COUNT bodies into the SQLite
store at DB_PATH, a few at a time so that they are group-committed, and prints
``ACKED <inbox id> <n>`` (flushed) as soon as the accept of body ``n`` has returned, which
is the moment the daemon would answer 200. Then prints ``DONE`` and sleeps until killed.
"""

from __future__ import annotations

import asyncio
import sys

from bridge.store.sqlite import SqliteStore

SOURCE = "crash/test"
WAVE = 16


def crash_body(n: int) -> bytes:
    """The body accepted as number ``n`` (the test rebuilds it to compare)."""
    return f'{{"n": {n}, "pad": "{"x" * (n % 97)}"}}'.encode()


async def main(path: str, count: int) -> None:
    store = SqliteStore(path)
    await store.open()

    async def one(n: int) -> None:
        accepted = await store.accept(SOURCE, f"delivery-{n}", crash_body(n), {"x-n": str(n)})
        print(f"ACKED {accepted.inbox_id} {n}", flush=True)

    for start in range(0, count, WAVE):
        await asyncio.gather(*(one(n) for n in range(start, min(start + WAVE, count))))
    print("DONE", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
