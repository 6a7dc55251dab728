"""Order backfill benchmark: how close a backfill runs to ReturnLogic's rate limit, and what
mapping an order costs.

* The ReturnLogic sandbox runs in a child process (``python -m adapters.returnlogic.sandbox``)
  at the real limits, 2 requests/s and 120/min per key, with ``--orders`` generated orders
  (default 20,000) spread over the 180 days before now, and an API key for the bridge.
* This process runs the real backfill, :func:`adapters.returnlogic.backfill.backfill_orders`,
  on a runtime built from a generated config (retailer ``acme``: SQLite store in a temp dir,
  ReturnLogic with the static key, page size 250, and an Optoro table whose publisher queues
  the changed orders in the outbox; nothing is delivered: no dispatcher runs, and the Optoro
  URL is a closed port). ``--no-publisher`` leaves Optoro out: orders are only stored.
* Rate: the sandbox records every ``/v1`` request with its own clock. The floor is the
  shortest possible time between the first and the last of those requests under both windows
  (a greedy schedule: ``t[k] = max(t[k-1], t[k-2] + 1 s, t[k-120] + 60 s)``); the achieved
  share of the allowed rate is floor / observed span. ``elapsed`` is the backfill's wall time
  (count call to last page stored), compared with the floor as well. The sandbox's 429 count
  and the most requests it saw in any 1 s / 60 s window are reported.
* Mapping CPU: every record the backfill read (as parsed from the pages, ``Decimal`` money) is
  mapped again with :func:`mappings.returnlogic.order_to_canonical`, timed with
  ``time.process_time``; best of ``--map-rounds`` (default 5) rounds.

    python bench/backfill.py [--orders 20000] [--seed 1] [--no-publisher] [--no-pin]

The markdown report goes to stdout, the backfill's progress bar and notes to stderr. Exit 1 if
the backfill did not read every order or the sandbox answered any 429.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RETAILER = "acme"
API_KEY = "bench-returnlogic-key"
PER_SECOND, PER_MINUTE = 2, 120
TARGET_RATE_SHARE = 0.95
TARGET_MAP_RATE = 20_000.0


def config_text(db: Path, sandbox_url: str, publisher: bool) -> str:
    text = f"""\
[server]
host = "127.0.0.1"
port = 0
[store]
url = "sqlite:///{db}"
[retailers.{RETAILER}]
name = "Acme"
[retailers.{RETAILER}.returnlogic]
base_url = "{sandbox_url}"
team_id = "fe9588ff-c78f-4aa3-a247-7163bcd88ddc"
static_token = "{API_KEY}"
timeout = 30.0
[retailers.{RETAILER}.returnlogic.orders]
enabled = false
page_size = 250
"""
    if publisher:
        text += f"""\
[retailers.{RETAILER}.optoro]
base_url = "http://127.0.0.1:9"
client_id = "acme-bridge"
client_secret = "bench-secret"
optiturn_id = "acme-optiturn"
[retailers.{RETAILER}.optoro.inbound_auth]
kind = "basic"
username = "optoro"
password = "bench-password"
"""
    return text


# --- the sandbox (child process) -------------------------------------------------------------


def serve_sandbox(args: argparse.Namespace) -> int:
    """Child process: the sandbox at the real limits with generated orders, until SIGTERM."""
    import signal

    from adapters.returnlogic.sandbox import DEFAULT_TEAM, ReturnLogicSandbox, running_sandbox

    async def serve() -> None:
        sandbox = ReturnLogicSandbox(rate_limit_second=PER_SECOND, rate_limit_minute=PER_MINUTE)
        sandbox.generate(orders=args.orders, seed=args.seed, anchor=datetime.now(UTC))
        if not args.nameless:
            # ReturnLogic documents no address name and Optoro requires one: give the
            # orders one, as a shop that sends names would, so the publisher has work to do
            for order in sandbox.orders.values():
                for key in ("shippingAddress", "billingAddress"):
                    if order.get(key):
                        order[key]["name"] = "Pat Example"
        sandbox.issue_api_key(DEFAULT_TEAM, API_KEY)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with running_sandbox("127.0.0.1", 0, sandbox=sandbox):
            print(f"listening on {sandbox.url}", flush=True)
            await stop.wait()

    asyncio.run(serve())
    return 0


def start_sandbox(args: argparse.Namespace, cpu: int | None) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve-sandbox",
        "--orders",
        str(args.orders),
        "--seed",
        str(args.seed),
    ]
    if args.nameless:
        cmd.append("--nameless")

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=pin if cpu is not None else None,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # blocks until the sandbox listens (or exits)
    if "listening on" not in line:
        stop_sandbox(proc)
        raise SystemExit(f"the sandbox did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()


def stop_sandbox(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def sandbox_get(url: str, path: str) -> Any:
    with urllib.request.urlopen(f"{url}{path}", timeout=30) as response:  # loopback only
        return json.loads(response.read())


# --- the floor -------------------------------------------------------------------------------


def floor_span(calls: int, per_second: int = PER_SECOND, per_minute: int = PER_MINUTE) -> float:
    """The shortest time from the first to the last of ``calls`` requests when no ``(t - w, t]``
    window holds more than its limit (greedy: each request as early as allowed)."""
    times: list[float] = []
    for k in range(calls):
        t = times[-1] if times else 0.0
        if k >= per_second:
            t = max(t, times[k - per_second] + 1.0)
        if k >= per_minute:
            t = max(t, times[k - per_minute] + 60.0)
        times.append(t)
    return times[-1] if times else 0.0


# --- the backfill (this process) -------------------------------------------------------------


async def run_backfill(
    work: Path, sandbox_url: str, publisher: bool
) -> tuple[Any, list[Any], float, tuple[int, int]]:
    from adapters.returnlogic.backfill import Progress, backfill_orders
    from bridge.app import build_runtime, running
    from bridge.config import load_config

    path = work / "bridge.toml"
    path.write_text(config_text(work / "bridge.db", sandbox_url, publisher))
    config = load_config(path, env={})
    runtime = build_runtime(config)
    records: list[Any] = []

    def keep(skip: int, page: list[Any], result: Any) -> None:
        records.extend(page)

    # what the command runs without a daemon: the one lifecycle, no engine, no scheduler
    async with running(runtime, engine=False, scheduler=False):
        now = datetime.now(UTC)
        cpu = time.process_time()
        report = await backfill_orders(
            runtime,
            RETAILER,
            now - timedelta(days=181),
            now,
            restart=True,
            progress=Progress(sys.stderr),
            on_page=keep,
            owner="bench",
        )
        cpu = time.process_time() - cpu
        effects = len(await runtime.store.list_effects(limit=1_000_000))
        flagged = len(await runtime.store.list_flags())
    return report, records, cpu, (effects, flagged)


def time_mapping(records: list[Any], rounds: int) -> list[float]:
    from mappings.returnlogic import TagRules, order_to_canonical

    rules = TagRules()
    seconds = []
    for _ in range(rounds):
        gc.collect()  # start each round from a clean heap, as a fresh worker would
        started = time.process_time()
        for record in records:
            order_to_canonical(record, rules)
        seconds.append(time.process_time() - started)
    return seconds


def machine_info() -> dict[str, str]:
    import sqlite3

    import aiohttp

    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "aiohttp": aiohttp.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20_000, help="orders in the sandbox")
    parser.add_argument("--seed", type=int, default=1, help="data seed")
    parser.add_argument("--map-rounds", type=int, default=5, help="mapping timing rounds")
    parser.add_argument(
        "--no-publisher", action="store_true", help="no Optoro table: store orders only"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--nameless",
        action="store_true",
        help="keep the generated addresses without a name (Optoro then refuses every order)",
    )
    parser.add_argument("--serve-sandbox", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_sandbox:
        return serve_sandbox(args)
    from bridge.logs import configure_logging

    configure_logging("ERROR")  # one warning per order Optoro refuses would drown the report

    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    if pin:
        os.sched_setaffinity(0, {1})
    started = time.monotonic()
    proc, url = start_sandbox(args, 0 if pin else None)
    took = time.monotonic() - started
    print(f"sandbox {url}: {args.orders:,} orders (ready in {took:.1f} s)", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-backfill-") as work:
            report, records, cpu, (effects, flagged) = asyncio.run(
                run_backfill(Path(work), url, not args.no_publisher)
            )
        state = sandbox_get(url, "/_sandbox/state")
        requests = [
            r for r in sandbox_get(url, "/_sandbox/requests") if r["path"].startswith("/v1/")
        ]
    finally:
        stop_sandbox(proc)

    calls = len(requests)
    span = requests[-1]["at"] - requests[0]["at"] if calls > 1 else 0.0
    floor = floor_span(calls)
    share = floor / span if span > 0 else 1.0
    page_calls = sum(1 for r in requests if r["path"] == "/v1/orders")
    statuses: dict[str, int] = {}
    for r in requests:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    rounds = time_mapping(records, args.map_rounds)
    best = min(rounds)
    map_rate = len(records) / best if best > 0 else float("inf")
    rate_ok = share >= TARGET_RATE_SHARE
    map_ok = map_rate >= TARGET_MAP_RATE
    complete = report.finished and report.records == args.orders == len(records)
    no_429 = state["rate_limited"] == 0

    out = []
    out.append(
        f"`python bench/backfill.py --orders {args.orders}` (seed {args.seed};"
        f" {'Optoro publisher queues, no delivery' if not args.no_publisher else 'no publisher'};"
        f" {'pinned: sandbox CPU 0, backfill CPU 1' if pin else 'not pinned'})\n"
    )
    out.append("| measure | value |")
    out.append("|---|---:|")
    out.append(f"| orders read / generated | {report.records:,} / {args.orders:,} |")
    out.append(f"| requests to ReturnLogic (count + pages) | {calls} (1 + {page_calls}) |")
    out.append(f"| statuses | {', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))} |")
    out.append(f"| 429 answered by the sandbox | **{state['rate_limited']}** |")
    out.append(
        f"| most requests in any 1 s / 60 s (limits {PER_SECOND} / {PER_MINUTE}) |"
        f" {state['max_in_any_second']} / {state['max_in_any_minute']} |"
    )
    out.append(f"| floor: first to last request at the limits | {floor:.2f} s |")
    out.append(f"| observed: first to last request (sandbox clock) | {span:.2f} s |")
    out.append(f"| **achieved share of the allowed rate** (floor / observed) | **{share:.1%}** |")
    out.append(
        f"| backfill wall time (count .. last page stored) | {report.elapsed:.2f} s"
        f" (floor + {report.elapsed - floor:.2f} s) |"
    )
    out.append(f"| orders/s end to end | {report.records / report.elapsed:,.0f} |")
    out.append(
        f"| publisher requests queued (outbox rows) / orders Optoro refuses (flagged) |"
        f" {report.queued:,} ({effects:,}) / {flagged:,} |"
    )
    out.append(
        f"| backfill process CPU (map + store + publish + HTTP) | {cpu:.2f} s,"
        f" {cpu / max(1, report.records) * 1e6:.0f} µs/order |"
    )
    out.append(
        f"| **mapping CPU** `order_to_canonical` (best of {len(rounds)}) |"
        f" **{best / max(1, len(records)) * 1e6:.1f} µs/order, {map_rate:,.0f} orders/s** |"
    )
    out.append("")
    out.append(
        f"- mapping rounds (s for {len(records):,} orders): "
        + ", ".join(f"{s:.3f}" for s in rounds)
        + f"; median {statistics.median(rounds):.3f}"
    )
    verdict = {True: "MET", False: "NOT MET"}
    out.append(
        f"- target >= {TARGET_RATE_SHARE:.0%} of the allowed rate: {verdict[rate_ok]}"
        f" ({share:.1%}); target 0 x 429: {verdict[no_429]};"
        f" target mapping >= {TARGET_MAP_RATE:,.0f} orders/s: {verdict[map_ok]}"
        f" ({map_rate:,.0f})"
    )
    out.append(f"- every order read: {'yes' if complete else 'NO'}")
    out.append("")
    out.append("| machine | |")
    out.append("|---|---|")
    for key, value in machine_info().items():
        out.append(f"| {key} | {value} |")
    print("\n".join(out))
    return 0 if complete and no_429 else 1


if __name__ == "__main__":
    sys.exit(main())
