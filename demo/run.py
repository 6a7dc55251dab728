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
    """Wait for the shop's first scheduled ReturnLogic poll and for Optoro to have its orders."""
    started = time.monotonic()
    sync = sync_for(world.runtime, SHOP)
    while sync.last_poll is None and time.monotonic() - started < 120:  # noqa: ASYNC110
        await asyncio.sleep(0.1)  # the scheduler runs the poll; nothing to wait on but it
    await settle(world, within=120.0)
    report = sync.last_poll
    read = report.records if report is not None else 0
    numbers = (
        {o["orderNumber"] for o in world.returnlogic.orders.values()}
        if world.returnlogic
        else set()
    )
    shop_orders = len(numbers & set(world.optoro.orders))
    print(
        f"orders: {seeded} seeded in ReturnLogic, {read} read at ReturnLogic's rate limit,"
        f" {shop_orders} in Optoro's sandbox (every order, shipped or not),"
        f" {seeded - shop_orders} missing ({time.monotonic() - started:.1f}s)",
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
