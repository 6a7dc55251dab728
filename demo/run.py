"""The demo's main loop: play the guide's scenarios through the daemon, print a summary."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from pathlib import Path

from adapters.optoro.sandbox import load_scenarios
from adapters.returnlogic.orders import sync_for
from bridge.store import EffectState
from demo.scenarios import Outcome, play, settle
from demo.world import SHOP, World, running_world


async def demo(once: bool, orders: int, port: int, only: list[int] | None) -> int:
    scenarios = [s for s in load_scenarios() if not only or s.number in only]
    with tempfile.TemporaryDirectory(prefix="returns-bridge-demo-") as folder:
        async with running_world(
            Path(folder), [s.number for s in scenarios], port=port, shop_orders=orders
        ) as world:
            print(
                f"returns-bridge demo: daemon on {world.url}, Optoro sandbox {world.optoro.url},"
                f" Kibo sandbox {world.kibo.url}, ReturnLogic sandbox"
                f" {world.returnlogic.url if world.returnlogic else '-'}, SQLite in {folder}",
                flush=True,
            )
            if orders:
                await sync_shop(world, orders)
            outcomes: list[Outcome] = []
            for scenario in scenarios:
                outcome = await play(world, scenario)
                outcomes.append(outcome)
                print(outcome.line(), flush=True)
            await summary(world, outcomes)
            failed = [o for o in outcomes if not o.ok]
            print(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed", flush=True)
            if once:
                return 1 if failed else 0
            await _until_interrupted(world)
    return 0


async def sync_shop(world: World, seeded: int) -> None:
    """Poll the shop's ReturnLogic orders once and wait until Optoro has them."""
    started = time.monotonic()
    report = await sync_for(world.runtime, SHOP).poll_once()
    await settle(world, within=120.0)
    print(
        f"orders: {seeded} seeded in ReturnLogic, {report.records} read,"
        f" {report.published} published, {report.quarantined} quarantined,"
        f" {len(world.optoro.orders)} in Optoro's sandbox"
        f" ({time.monotonic() - started:.1f}s at ReturnLogic's 2 requests/s)",
        flush=True,
    )


async def summary(world: World, outcomes: list[Outcome]) -> None:
    store = world.runtime.store
    stats = await store.inbox_stats()
    dead = await store.list_effects(EffectState.DEAD)
    states: dict[str, int] = {}
    for outcome in outcomes:
        for state in outcome.rmas.values():
            states[state] = states.get(state, 0) + 1
    print(
        f"summary: orders published {len(world.optoro.orders)}, RMAs "
        + ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
        + f", Kibo returns {len(world.kibo.returns)},"
        f" refunds confirmed {sum(o.refunds for o in outcomes)},"
        f" inbox done {stats.done} superseded {stats.superseded} duplicates {stats.duplicates}"
        f" quarantined {stats.quarantined}, dead letters {len(dead)}",
        flush=True,
    )


async def _until_interrupted(world: World) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("the daemon keeps running; Ctrl-C to stop", file=sys.stderr, flush=True)
    started = time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 30)
        if not stop.is_set():
            stats = await world.runtime.store.inbox_stats()
            print(
                f"[{time.monotonic() - started:.0f}s] inbox pending {stats.pending},"
                f" done {stats.done}",
                flush=True,
            )
