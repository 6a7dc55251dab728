"""kill -9 of the real daemon while Kibo creates are in flight: the long variant.

The same run as ``tests/test_kibo_crash_system.py`` (the code is ``tests/kibo_crash.py``),
with more kills: three retailers on one daemon, two whose Kibo keeps the bridge's returnID
and one whose Kibo assigns its own; RMA webhooks of the guide's scenarios re-sent until
acknowledged; SIGKILL with a create in flight, restart, and a final settle. Prints the
verdict as JSON and exits 1 when a return is duplicated, one is missing without being
parked, or one is parked for a tenant that keeps the bridge's returnID.

    .venv/bin/python bench/kibo_crash.py --kills 200 [--seed N] [--keep DIR]
    .venv/bin/python bench/kibo_crash.py --mark-cost    # what the sending mark costs

``--mark-cost`` instead delivers 2,000 effects to a loopback partner through the engine
and SQLite, with and without the mark the engine commits before each partner call
(``Engine.record_attempt``), twice each, and prints deliveries/s and commits per delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.engine import Engine, EngineSettings
from bridge.http import HttpClient
from bridge.store import Effect, EffectState, NewEffect
from bridge.store.sqlite import SqliteStore
from tests.destination_server import running_destination
from tests.engine_support import PartnerDestination
from tests.kibo_crash import dump, main_seed, run_crash

MARK_COST_EFFECTS = 2000


async def deliver_all(mark: bool) -> tuple[float, int]:
    """Seconds and store commits to deliver ``MARK_COST_EFFECTS`` effects."""
    with tempfile.TemporaryDirectory() as scratch:
        store = SqliteStore(Path(scratch) / "bench.db")
        await store.open()
        try:
            async with running_destination(seed=1) as dest, aiohttp.ClientSession() as session:
                engine = Engine(store, EngineSettings(idle_poll=0.01))
                engine.add_destination(PartnerDestination(dest.url, HttpClient(session)))
                if not mark:

                    async def unmarked(effect: Effect) -> None:
                        return None

                    engine.record_attempt = unmarked  # type: ignore[method-assign]
                async with store.transaction() as tx:
                    for i in range(MARK_COST_EFFECTS):
                        payload = {"entity": f"e{i}", "milestone": 1, "label": "x"}
                        await tx.add_effect(
                            NewEffect(f"k{i}", "partner", "m", payload, order_key=f"o{i}")
                        )
                before, started = store.commits, time.monotonic()
                dispatcher = asyncio.create_task(engine.run_dispatcher())
                while True:  # polled: the partner and the store have no "all done" event
                    pending = await store.list_effects(EffectState.PENDING, limit=1)
                    if len(dest.applied) >= MARK_COST_EFFECTS and not pending:
                        break
                    await asyncio.sleep(0.02)
                elapsed = time.monotonic() - started
                dispatcher.cancel()
                await asyncio.gather(dispatcher, return_exceptions=True)
                return elapsed, store.commits - before
        finally:
            await store.close()


async def mark_cost() -> None:
    for mark in (False, True, False, True):
        elapsed, commits = await deliver_all(mark)
        print(
            f"mark={mark}: {MARK_COST_EFFECTS} deliveries in {elapsed:.2f}s"
            f" ({MARK_COST_EFFECTS / elapsed:.0f}/s), {commits} commits"
            f" ({commits / MARK_COST_EFFECTS:.2f} per delivery)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="rounds ending in SIGKILL")
    parser.add_argument("--start-kills", type=int, default=10, help="of them during start-up")
    parser.add_argument("--seed", type=int, default=None, help="default: KIBO_CRASH_SEED or random")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the db and logs")
    parser.add_argument("--mark-cost", action="store_true", help="measure the sending mark")
    args = parser.parse_args()
    if args.mark_cost:
        asyncio.run(mark_cost())
        return 0
    seed = args.seed if args.seed is not None else main_seed()
    print(f"KIBO_CRASH_SEED={seed}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        verdict = asyncio.run(run_crash(folder, args.kills, seed, args.start_kills))
    print(verdict.summary())
    print(dump(verdict))
    failed = (
        any(verdict.duplicates.values())
        or any(verdict.missing_not_parked.values())
        or verdict.parked.get("kc1")
        or verdict.parked.get("kc2")
        or verdict.tracebacks
        or verdict.unexpected_answers
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
