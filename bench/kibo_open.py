"""Kibo open returns: CPU per delivery with a backlog of 1k, 10k, 100k open returns.

Each run: a fresh SQLite file seeded with N open Kibo returns of one retailer (a
``kibo.open_return`` and a ``kibo.return`` row each, as the daemon writes them), then the
real daemon (``python -m bridge run`` of ``--tree``, its own process) with the Kibo and
Optoro sandboxes over loopback (Kibo's notifications on, sent to the daemon). K RMA
webhooks (the guide's scenario 1, identifiers made unique) are sent, 8 at a time; the run
ends when Kibo holds K returns and the daemon's inbox and outbox are drained. Reported per
run: the daemon's CPU (``/proc/<pid>/stat``, user + system) per delivery over that window,
the largest entity row written in it and how many rows of the retailer's open set were
written, and 0 missing / 0 duplicate creates (checked, the run fails otherwise).

    .venv/bin/python bench/kibo_open.py [--sizes 1000,10000,100000] [--deliveries 300]
        [--rounds 3] [--tree new=. --tree base=/work/wt/base12]

Trees are run alternately within each round (base, new, base, new, ...), so that load from
other processes on the machine falls on both alike. ``--profile DIR`` instead runs the
daemon under cProfile once per tree and size and prints each profile's top lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.kibo.sandbox import running_sandbox as running_kibo
from adapters.optoro.sandbox import BasicAuth, ScenarioPlayer, load_scenarios
from adapters.optoro.sandbox import running_sandbox as running_optoro
from bridge.store.sqlite import SqliteStore
from tests.daemon_process import until
from tests.e2e_load import cpu_seconds

RETAILER = "ko"
KIBO_TOKEN = "bench-kibo-token"
NOTIFY_SECRET = "bench-kibo-notify"
WEBHOOK_USER = "optoro"
WEBHOOK_PASSWORD = "bench-webhook-password"
OPTORO_SECRET = "bench-optoro-secret"
OPTITURN_ID = "bench-optiturn"
ENV = {
    "BENCH_KIBO_TOKEN": KIBO_TOKEN,
    "BENCH_KIBO_NOTIFY": NOTIFY_SECRET,
    "BENCH_WEBHOOK_PASSWORD": WEBHOOK_PASSWORD,
    "BENCH_OPTORO_SECRET": OPTORO_SECRET,
}
CONCURRENCY = 8
RENDER_CHILD = """
import asyncio, json, sys, time
from adapters.kibo.client import KiboReturnDestination
from adapters.kibo.config import KiboConfig
from bridge.store import EffectState
from bridge.store.sqlite import SqliteStore

async def main(db, retailer, repeat):
    store = SqliteStore(db)
    await store.open()
    config = KiboConfig.model_validate(
        {"base_url": "http://127.0.0.1:9", "token": "unused", "line_ids": "numeric"}
    )
    destination = KiboReturnDestination(
        f"kibo.returns:{retailer}", retailer, config,
        store=lambda: store, http=lambda: None, lifecycle=lambda: None,
    )
    effects = await store.list_effects(EffectState.DELIVERED, destination.name, limit=100000)
    commits = store.commits
    per_render = []
    for _ in range(repeat):
        started = time.process_time()
        for effect in effects:
            await destination.render(effect)
        per_render.append((time.process_time() - started) * 1e6 / len(effects))
    written = store.commits - commits
    print(json.dumps({"renders": len(effects), "us": per_render, "commits": written}))
    await store.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""
"""Renders (``KiboReturnDestination.render``: the create's body, as the engine builds it
before sending) of every create a run delivered, by one tree's code, on a copy of the run's
SQLite file; prints CPU per render (process time, the SQLite thread included)."""
SEEDED_ID_BASE = 1
"""Seeded open returns have ids SEEDED_ID_BASE ... SEEDED_ID_BASE + N - 1."""


def config_text(db: Path, kibo_url: str, optoro_url: str) -> str:
    return f"""[server]
host = "127.0.0.1"
port = 0
[store]
url = "sqlite:///{db}"
[retailers.{RETAILER}]
[retailers.{RETAILER}.policy]
create_return_at = {{ mail_back = "CREATED", express_returns = "CREATED" }}
confirm_refund = "never"
reconcile_every = 3600.0
[retailers.{RETAILER}.optoro]
base_url = "{optoro_url}"
client_id = "bench-bridge"
client_secret = "${{BENCH_OPTORO_SECRET}}"
optiturn_id = "{OPTITURN_ID}"
timeout = 5.0
[retailers.{RETAILER}.optoro.inbound_auth]
kind = "basic"
username = "{WEBHOOK_USER}"
password = "${{BENCH_WEBHOOK_PASSWORD}}"
[retailers.{RETAILER}.kibo]
base_url = "{kibo_url}"
token = "${{BENCH_KIBO_TOKEN}}"
timeout = 5.0
line_ids = "numeric"
[retailers.{RETAILER}.kibo.notifications]
kind = "api_key"
header = "X-Kibo-Secret"
key = "${{BENCH_KIBO_NOTIFY}}"
"""


async def seed(db: Path, n: int) -> None:
    """The schema (this tree's migrations: the trees compared share them), then N open
    returns with their ``kibo.return`` rows, written in one transaction."""
    store = SqliteStore(db)
    await store.open()
    await store.close()
    now = time.time()
    rows: list[tuple[str, str, str, str, float]] = []
    for i in range(SEEDED_ID_BASE, SEEDED_ID_BASE + n):
        key = f"{RETAILER}:{i}"
        rows.append(("kibo.open_return", key, "[0]", json.dumps({"return_id": i}), now))
        rows.append(
            (
                "kibo.return",
                key,
                "[0]",
                json.dumps(
                    {
                        "rma_key": f"{RETAILER}:seeded{i}",
                        "step": "CREATED",
                        "external_order_id": f"SEEDED{i}",
                        "lines": {},
                        "currency": "USD",
                    }
                ),
                now,
            )
        )
    conn = sqlite3.connect(db)
    with conn:
        conn.executemany(
            "INSERT INTO entities (kind, key, version, data, updated_at) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
    conn.close()


def rma_bodies(k: int, tag: str) -> list[dict[str, Any]]:
    """Scenario 1's RMA Created, K times with a unique RMA and order identifier."""
    scenario = next(s for s in load_scenarios() if s.number == 1)
    step = next(s for s in scenario.steps if s.path == "/rmas")
    bodies = []
    for i in range(k):
        body = json.loads(json.dumps(step.request))
        body["rma_identifier"] = f"{tag}-{i}"
        for item in body["items"]:
            item["order_identifier"] = f"ORD-{tag}-{i}"
        bodies.append(body)
    return bodies


def drained(db: Path) -> bool:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        inbox = conn.execute("SELECT COUNT(*) FROM inbox WHERE status = 'pending'").fetchone()
        outbox = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()
        return bool(inbox[0] == 0 and outbox[0] == 0)
    finally:
        conn.close()


@dataclass
class Run:
    tree: str
    size: int
    cpu_ms: float
    """Daemon CPU per delivery (ms)."""
    wall: float
    largest_row: int
    """Bytes of the largest entity row written while the K deliveries ran."""
    open_set_rows_written: int
    """Rows of kind ``kibo.open_returns`` (the pre-0005 per-retailer list) written then."""


async def render_cost(tree: Path, db: Path, repeat: int = 3) -> tuple[float, int]:
    """Median CPU µs per render and write transactions committed, by ``tree``'s code."""
    copy = db.with_name(f"render-{tree.name}.db")
    conn, target = sqlite3.connect(db), sqlite3.connect(copy)
    conn.backup(target)
    conn.close()
    target.close()
    proc = await asyncio.create_subprocess_exec(
        str(tree / ".venv" / "bin" / "python"),
        "-c",
        RENDER_CHILD,
        str(copy),
        RETAILER,
        str(repeat),
        stdout=asyncio.subprocess.PIPE,
        cwd=tree,
    )
    out, _ = await proc.communicate()
    result = json.loads(out)
    return statistics.median(result["us"]), int(result["commits"])


async def run_one(
    tree_name: str,
    tree: Path,
    size: int,
    k: int,
    folder: Path,
    profile: Path | None = None,
    render_trees: list[tuple[str, Path]] | None = None,
) -> Run:
    db = folder / "bridge.db"
    await seed(db, size)
    async with (
        running_optoro(client_id="bench-bridge", client_secret=OPTORO_SECRET) as optoro,
        running_kibo(token=KIBO_TOKEN) as kibo,
        aiohttp.ClientSession() as session,
    ):
        config = folder / "bridge.toml"
        config.write_text(config_text(db, kibo.url, optoro.url))
        python = tree / ".venv" / "bin" / "python"
        with (folder / "daemon.log").open("wb") as err:
            profiled = ["-m", "cProfile", "-o", str(profile)] if profile else []
            proc = await asyncio.create_subprocess_exec(
                str(python),
                *profiled,
                "-m",
                "bridge",
                "run",
                "--config",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                cwd=tree,
                env={**os.environ, **ENV},
            )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if b"listening on" not in line:
                raise AssertionError(f"daemon did not start: {line!r}")
            base = line.decode().strip().rsplit(" ", 1)[1]
            kibo.configure(
                notification_url=f"{base}/retailers/{RETAILER}/kibo/notifications",
                notification_headers={"X-Kibo-Secret": NOTIFY_SECRET},
            )
            player = ScenarioPlayer(
                base,
                RETAILER,
                BasicAuth(WEBHOOK_USER, WEBHOOK_PASSWORD),
                OPTITURN_ID,
                3,
                session,
            )
            url = f"{base}/retailers/{RETAILER}/optoro/rmas"
            headers = {**player.headers_for("rma"), "Content-Type": "application/json"}
            bodies = rma_bodies(k, f"{tree_name}{size}")
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            for body in bodies:
                queue.put_nowait(body)

            async def lane() -> None:
                while not queue.empty():
                    body = queue.get_nowait()
                    while True:  # re-sent until acknowledged, as Optoro does
                        async with session.post(url, json=body, headers=headers) as answer:
                            if answer.status < 300:
                                break
                            await answer.read()
                        await asyncio.sleep(0.05)

            started_at = time.time()
            cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
            await asyncio.gather(*(lane() for _ in range(CONCURRENCY)))
            await until(lambda: len(kibo.returns) >= k, 120, "Kibo creates")
            await until(lambda: drained(db), 120, "daemon drained", step=0.01)
            cpu1, wall1 = cpu_seconds(proc.pid), time.monotonic()
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
        by_order = Counter(str(r.get("externalOrderID")) for r in kibo.returns.values())
        expected = {f"ORD-{tree_name}{size}-{i}" for i in range(k)}
        missing = expected - set(by_order)
        duplicates = sum(n - 1 for n in by_order.values() if n > 1)
        if missing or duplicates or len(by_order) != k:
            raise AssertionError(f"{len(missing)} missing, {duplicates} duplicate creates")
    conn = sqlite3.connect(db)
    try:
        largest = conn.execute(
            "SELECT COALESCE(MAX(length(data)), 0) FROM entities WHERE updated_at >= ?",
            (started_at,),
        ).fetchone()[0]
        legacy = conn.execute(
            "SELECT COUNT(*) FROM entities WHERE kind = 'kibo.open_returns' AND updated_at >= ?",
            (started_at,),
        ).fetchone()[0]
        opened = conn.execute(
            "SELECT COUNT(*) FROM entities WHERE kind = 'kibo.open_return'"
        ).fetchone()[0]
    finally:
        conn.close()
    if opened < size + k - 5:  # a derived id may coincide with a seeded one (1 in ~10^4)
        raise AssertionError(f"open set holds {opened} returns, expected {size + k}")
    for name, path in render_trees or ():
        us, commits = await render_cost(path, db)
        print(f"  render by {name}: {us:.0f} us CPU per create body, {commits} commits")
        RENDERS.setdefault((name, size), []).append(us)
    return Run(
        tree_name,
        size,
        (cpu1 - cpu0) * 1000 / k,
        wall1 - wall0,
        int(largest),
        int(legacy),
    )


RENDERS: dict[tuple[str, int], list[float]] = {}
"""(tree, open returns) -> median CPU µs per render of each ``--render`` run."""


def summary(runs: list[Run]) -> str:
    lines = [
        "| tree | open returns | daemon CPU ms/delivery min / median / max"
        " | largest row written (bytes) | open-list rows written |",
        "|---|---:|---|---:|---:|",
    ]
    keys = sorted({(r.tree, r.size) for r in runs}, key=lambda t: (t[0], t[1]))
    for tree, size in keys:
        mine = [r for r in runs if (r.tree, r.size) == (tree, size)]
        cpu = sorted(r.cpu_ms for r in mine)
        lines.append(
            f"| {tree} | {size:,} | {cpu[0]:.2f} / {statistics.median(cpu):.2f} / {cpu[-1]:.2f}"
            f" | {max(r.largest_row for r in mine):,}"
            f" | {max(r.open_set_rows_written for r in mine)} |"
        )
    if RENDERS:
        lines += [
            "",
            "| tree | open returns | CPU µs per create body (render) min / median / max |",
            "|---|---:|---|",
        ]
        for (tree, size), values in sorted(RENDERS.items()):
            ordered = sorted(values)
            lines.append(
                f"| {tree} | {size:,} | {ordered[0]:.0f} / {statistics.median(ordered):.0f}"
                f" / {ordered[-1]:.0f} |"
            )
    return "\n".join(lines)


async def bench(
    trees: list[tuple[str, Path]],
    sizes: list[int],
    k: int,
    rounds: int,
    profile: Path | None,
    render: bool = False,
) -> None:
    runs: list[Run] = []
    if profile is not None:  # one profiled run per tree and size (cProfile: slower)
        for size in sizes:
            for name, path in trees:
                out = profile / f"{name}-{size}.prof"
                with tempfile.TemporaryDirectory() as scratch:
                    await run_one(name, path, size, k, Path(scratch), out)
                print(f"{out}: top functions by own time")
                pstats.Stats(str(out)).sort_stats("tottime").print_stats(12)
        return
    for round_no in range(rounds):
        for size in sizes:
            order = trees if round_no % 2 == 0 else list(reversed(trees))
            for name, path in order:
                with tempfile.TemporaryDirectory() as scratch:
                    run = await run_one(
                        name, path, size, k, Path(scratch), render_trees=order if render else None
                    )
                runs.append(run)
                print(
                    f"round {round_no + 1} {name} N={size:,}: {run.cpu_ms:.2f} ms CPU/delivery,"
                    f" {run.wall:.1f} s, largest row {run.largest_row} B,"
                    f" open-list rows written {run.open_set_rows_written}",
                    flush=True,
                )
    print(summary(runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--deliveries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--render",
        action="store_true",
        help="also: after each run, every tree renders each create the run delivered (the"
        " create's body, KiboReturnDestination.render) on a copy of its SQLite file",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="instead: one run per tree and size with the daemon under cProfile, the"
        " profiles written into this folder and their top lines printed",
    )
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        help="NAME=PATH of a checkout with its .venv (default: new=this tree)",
    )
    args = parser.parse_args()
    trees = [(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.tree] or [
        ("new", Path(__file__).resolve().parent.parent)
    ]
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    asyncio.run(bench(trees, sizes, args.deliveries, args.rounds, args.profile, args.render))
    return 0


if __name__ == "__main__":
    sys.exit(main())
