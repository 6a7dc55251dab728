"""Ingest benchmark: durable webhook acks/s behind aiohttp vs a bare aiohttp handler.

Two servers, each in its own process, both on 127.0.0.1 with a free port:

* ``bare``    POST /rmas reads the body and answers 200 JSON, stores nothing;
* ``durable`` POST /rmas is :func:`bridge.inbound.receive` over ``Engine(SqliteStore)``
  (WAL, ``synchronous=FULL``, group commit): 200 only after the COMMIT holding the row.
  GET /stats returns ``store.commits`` and the inbox row count. No worker/dispatcher.

The load generator (this process) posts N distinct ~1 KB Optoro-RMA-like JSON bodies
through one aiohttp ``ClientSession`` (``TCPConnector(limit=concurrency)``), records each
request's latency, and alternates bare, durable, bare, durable... for ``--rounds`` rounds
after a warm-up; the table reports the medians over rounds. Afterwards the durable server
is killed with SIGKILL and the rows in its SQLite file are counted: they must equal the
number of acks it gave (every 200 was durable).

On a machine with >= 2 CPUs the servers are pinned to CPU 0 and the load generator to
CPU 1 (``--no-pin`` to let the scheduler decide).

    python bench/ingest.py [--requests N] [--concurrency C[,C...]] [--rounds R] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PATH = "/rmas"
RETAILER = "bench"
KIND = "optoro.rmas"


# --------------------------------------------------------------------------------------
# servers (run in a child process: ``ingest.py --serve bare|durable``)
# --------------------------------------------------------------------------------------


async def _serve(mode: str, db: str | None, profile: str | None) -> None:
    from aiohttp import web

    app = web.Application()
    store = None
    if mode == "bare":

        async def bare(request: web.Request) -> web.Response:
            await request.read()
            return web.json_response({"status": "accepted", "inbox_id": 0})

        app.router.add_post(PATH, bare)
    else:
        from bridge.engine import Engine
        from bridge.inbound import receive
        from bridge.store.sqlite import SqliteStore

        assert db is not None
        store = SqliteStore(db)
        await store.open()
        engine = Engine(store)  # worker and dispatcher deliberately not started

        async def durable(request: web.Request) -> web.Response:
            return await receive(request, engine, retailer=RETAILER, kind=KIND)

        async def stats(request: web.Request) -> web.Response:
            counts = await store.inbox_stats()
            rows = counts.pending + counts.done + counts.superseded + counts.quarantined
            return web.json_response({"commits": store.commits, "inbox": rows})

        app.router.add_post(PATH, durable)
        app.router.add_get("/stats", stats)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=1024).start()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    print(json.dumps({"port": sock.getsockname()[1], "pid": os.getpid()}), flush=True)
    await stop.wait()
    if profiler is not None and profile:
        profiler.disable()
        profiler.dump_stats(profile)
    await runner.cleanup()
    if store is not None:
        await store.close()


@dataclass
class Server:
    mode: str
    proc: subprocess.Popen[str]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_server(mode: str, db: Path | None, cpu: int | None, profile: str | None) -> Server:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", mode]
    if db is not None:
        cmd += ["--db", str(db)]
    if profile:
        cmd += ["--profile-out", profile]

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=pin, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{mode} server did not start (exit {proc.wait()})")
    return Server(mode, proc, int(json.loads(line)["port"]))


# --------------------------------------------------------------------------------------
# load generator
# --------------------------------------------------------------------------------------

_ITEM = {
    "order_line_item_identifier": "1",
    "order_identifier": "ORD1234567",
    "exchange_order_identifier": None,
    "original_order_identifier": None,
    "return_reason": "Changed Mind",
    "is_exchange": False,
    "sku": "sku1234",
    "tracking_number": "92023909899840543401202533",
    "package_tracking_status": "PRE_TRANSIT",
    "receiving_status": "PENDING",
    "refund_financials": {
        "estimated_refund_amount_cents": 13056,
        "optoro_refund_amount_cents": 0,
        "shopper_refund_amount_cents": 13056,
    },
    "refund_type": "REFUND",
}


class Bodies:
    """Distinct ~1 KB RMA webhook bodies (unique ids, so the inbox never dedupes)."""

    def __init__(self) -> None:
        self.n = 0
        self.run = f"{os.getpid():x}{int(time.time()) & 0xFFFF:04x}"

    def make(self, count: int) -> list[bytes]:
        out = []
        for _ in range(count):
            i = self.n
            self.n += 1
            order = f"ORD{i:09d}"
            items = [
                dict(_ITEM, order_identifier=order, order_line_item_identifier=str(line))
                for line in (1, 2)
            ]
            body = {
                "rma_identifier": f"R{self.run}{i:09d}",
                "status": "CREATED",
                "created_at": "2023-01-27T23:25:09Z",
                "updated_at": "2023-01-27T23:25:12Z",
                "return_method": "MAIL_BACK",
                "items": items,
            }
            out.append(json.dumps(body, separators=(",", ":")).encode())
        return out


@dataclass
class RoundResult:
    mode: str
    concurrency: int
    requests: int
    ok: int
    errors: int
    seconds: float
    latencies: list[float]
    commits: int = 0
    server_cpu: float = 0.0  # CPU seconds of the server process (all threads) / wall
    client_cpu: float = 0.0  # same for the load generator
    other_cpu: float = 0.0  # CPUs busy with other processes on the machine (noise)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def server_us(self) -> float:
        """Server CPU (all threads, user + system) per acknowledged request, microseconds."""
        return self.server_cpu / self.rps * 1e6 if self.rps else float("nan")

    def pct(self, q: float) -> float:
        lat = sorted(self.latencies)
        if not lat:
            return float("nan")
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0


async def load(
    session: Any, url: str, bodies: list[bytes], concurrency: int
) -> tuple[int, int, float, list[float]]:
    """Post every body with ``concurrency`` in flight; (ok, errors, seconds, latencies)."""
    latencies: list[float] = []
    ok = errors = 0
    it = iter(bodies)
    headers = {"Content-Type": "application/json", "X-Optiturn-Api-Version": "1"}
    perf = time.perf_counter

    async def worker() -> None:
        nonlocal ok, errors
        for body in it:
            t0 = perf()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    payload = await resp.read()
                    good = resp.status == 200 and b'"accepted"' in payload
            except Exception:
                good = False
            latencies.append(perf() - t0)
            if good:
                ok += 1
            else:
                errors += 1

    start = perf()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok, errors, perf() - start, latencies


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all CPUs), from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


async def get_stats(session: Any, server: Server) -> dict[str, int]:
    async with session.get(server.url + "/stats") as resp:
        stats: dict[str, int] = await resp.json()
    return stats


async def run_client(
    args: argparse.Namespace, servers: dict[str, Server]
) -> tuple[list[RoundResult], int]:
    import aiohttp

    bodies = Bodies()
    results: list[RoundResult] = []
    acks = 0  # every 200 the durable server gave, warm-up included
    levels = [int(c) for c in str(args.concurrency).split(",")]
    stats_session = aiohttp.ClientSession()
    try:
        for conc in levels:
            for rnd in range(-1, args.rounds):  # round -1 is the warm-up
                for mode in ("bare", "durable"):
                    server = servers[mode]
                    n = args.warmup if rnd < 0 else args.requests
                    batch = bodies.make(n)
                    connector = aiohttp.TCPConnector(limit=conc, force_close=False)
                    async with aiohttp.ClientSession(connector=connector) as session:
                        before = (
                            await get_stats(stats_session, server) if mode == "durable" else None
                        )
                        m0 = machine_busy()
                        s0, c0 = proc_cpu(server.proc.pid), time.process_time()
                        ok, errors, secs, lat = await load(session, server.url + PATH, batch, conc)
                        s1, c1 = proc_cpu(server.proc.pid), time.process_time()
                        m1 = machine_busy()
                        after = (
                            await get_stats(stats_session, server) if mode == "durable" else None
                        )
                    if mode == "durable":
                        acks += ok
                    if rnd < 0:
                        continue
                    r = RoundResult(
                        mode,
                        conc,
                        n,
                        ok,
                        errors,
                        secs,
                        lat,
                        server_cpu=(s1 - s0) / secs,
                        client_cpu=(c1 - c0) / secs,
                        other_cpu=max(0.0, (m1 - m0) - (s1 - s0) - (c1 - c0)) / secs,
                    )
                    if before is not None and after is not None:
                        r.commits = after["commits"] - before["commits"]
                    results.append(r)
                    print(
                        f"  c={conc} round {rnd + 1}/{args.rounds} {mode:7s} {r.rps:8.0f} req/s"
                        f"  p50 {r.pct(0.5):6.2f} ms  p99 {r.pct(0.99):6.2f} ms"
                        + f"  cpu server {r.server_cpu:4.0%} client {r.client_cpu:4.0%}"
                        + f" others {r.other_cpu:4.0%}"
                        + (f"  commits {r.commits}" if mode == "durable" else "")
                        + (f"  ERRORS {errors}" if errors else ""),
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        await stats_session.close()
    return results, acks


# --------------------------------------------------------------------------------------
# machine and fsync probe
# --------------------------------------------------------------------------------------


def machine_info(db_dir: Path) -> dict[str, str]:
    import aiohttp

    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    fs = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
        out = (
            subprocess.run(["df", "-T", str(db_dir)], capture_output=True, text=True, check=True)
            .stdout.splitlines()[1]
            .split()
        )
        fs = f"{out[1]} ({out[0]})"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "aiohttp": aiohttp.__version__,
        "db filesystem": fs,
    }


def fsync_probe(db_dir: Path, n: int = 200) -> dict[str, float]:
    """Median single-row COMMIT time in WAL with synchronous=FULL vs OFF (ms)."""
    out = {}
    for sync in ("FULL", "OFF"):
        path = db_dir / f"probe-{sync}.db"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={sync}")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
        blob = b"x" * 1024
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (body) VALUES (?)", (blob,))
            conn.execute("COMMIT")
            times.append(time.perf_counter() - t0)
        conn.close()
        out[sync] = statistics.median(times) * 1000.0
    return out


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def median_of(results: list[RoundResult], mode: str, conc: int, fn: Any) -> float:
    return float(
        statistics.median(fn(r) for r in results if r.mode == mode and r.concurrency == conc)
    )


def render(
    args: argparse.Namespace,
    results: list[RoundResult],
    info: dict[str, str],
    probe: dict[str, float],
    acks: int,
    rows: int,
    total_commits: int,
    elapsed: float,
) -> str:
    lines = [
        f"requests/round {args.requests}, rounds {args.rounds} (medians), warm-up {args.warmup}, "
        f"body ~{args.body_bytes} B, pinned: {args.pin_desc}",
        "",
        "| server | conc. | req/s | p50 ms | p99 ms | commits/round | acks/commit"
        " | server CPU | server CPU µs/req | client CPU | durable/bare |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for conc in sorted({r.concurrency for r in results}):
        bare = median_of(results, "bare", conc, lambda r: r.rps)
        for mode in ("bare", "durable"):

            def med(fn: Any, mode: str = mode, conc: int = conc) -> float:
                return median_of(results, mode, conc, fn)

            rps = med(lambda r: r.rps)
            cells = [
                f"{rps:,.0f}",
                f"{med(lambda r: r.pct(0.50)):.2f}",
                f"{med(lambda r: r.pct(0.99)):.2f}",
            ]
            if mode == "durable":
                name = "durable: `receive` + SqliteStore"
                cells += [
                    f"{med(lambda r: r.commits):,.0f}",
                    f"{med(lambda r: r.ok / r.commits if r.commits else 0):.1f}",
                ]
                ratio = f"**{rps / bare:.2f}x**"
            else:
                name = "bare aiohttp 200"
                cells += ["-", "-"]
                ratio = "1.00x"
            cells += [
                f"{med(lambda r: r.server_cpu):.0%}",
                f"{med(lambda r: r.server_us):.0f}",
                f"{med(lambda r: r.client_cpu):.0%}",
                ratio,
            ]
            lines.append(f"| {name} | {conc} | " + " | ".join(cells) + " |")
    others = statistics.median(r.other_cpu for r in results)
    lines.append("")
    for conc in sorted({r.concurrency for r in results}):
        bares = [r for r in results if r.mode == "bare" and r.concurrency == conc]
        durs = [r for r in results if r.mode == "durable" and r.concurrency == conc]
        paired = [d.rps / b.rps for b, d in zip(bares, durs, strict=True) if b.rps]
        if paired:
            lines.append(
                f"- c={conc}: durable/bare per round (each durable round vs the bare round just"
                f" before it): {', '.join(f'{x:.2f}' for x in paired)}"
                f" -> median {statistics.median(paired):.2f}x"
            )
        bare_us = median_of(results, "bare", conc, lambda r: r.server_us)
        dur_us = median_of(results, "durable", conc, lambda r: r.server_us)
        lines.append(
            f"- c={conc}: server CPU per request, bare {bare_us:.0f} µs vs durable {dur_us:.0f} µs:"
            f" capacity ratio on one dedicated server core {bare_us / dur_us:.2f}x"
            " (less sensitive to other load than req/s)"
        )
    errors = sum(r.errors for r in results)
    lines += [
        f"- durability check: {acks:,} acks from the durable server (warm-up included), "
        f"{rows:,} rows in its inbox after SIGKILL -> {'OK' if rows == acks else 'MISMATCH'}; "
        f"{total_commits:,} commits in all; request errors: {errors}",
        f"- single-row COMMIT (WAL) median: synchronous=FULL {probe['FULL']:.2f} ms, "
        f"synchronous=OFF {probe['OFF']:.3f} ms",
        f"- other processes on the machine used a median {others:.0%} of one CPU during the"
        f" measured rounds (noise; CPU columns are % of one CPU, server = all its threads)",
        f"- wall time: {elapsed:.0f} s",
        "",
        "| machine | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--requests", type=int, default=20_000, help="requests per round and server")
    p.add_argument("--concurrency", default="64", help="requests in flight (comma list allowed)")
    p.add_argument("--rounds", type=int, default=3, help="measured rounds per server (median)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up requests per server")
    p.add_argument("--quick", action="store_true", help="small run (3,000 requests, 2 rounds)")
    p.add_argument("--no-pin", action="store_true", help="do not pin server/client to CPUs")
    p.add_argument(
        "--dir", default=None, help="directory for the SQLite file (default: a temp dir)"
    )
    p.add_argument("--profile", action="store_true", help="cProfile the durable server")
    p.add_argument("--serve", choices=("bare", "durable"), help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.serve:
        asyncio.run(_serve(args.serve, args.db, args.profile_out))
        return 0

    if args.quick:
        args.requests, args.rounds = 3_000, 2
    if args.warmup is None:
        args.warmup = min(2_000, max(200, args.requests // 10))
    args.body_bytes = len(Bodies().make(1)[0])

    ncpu = len(os.sched_getaffinity(0))
    pin = not args.no_pin and ncpu >= 2
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0] if pin else None
    args.pin_desc = f"servers CPU {cpus[0]}, load generator CPU {cpus[1]}" if pin else "no"

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-", dir=args.dir) as tmp:
        tmpdir = Path(tmp)
        db = tmpdir / "inbox.db"
        profile = str(tmpdir / "durable.prof") if args.profile else None
        servers = {
            "bare": start_server("bare", None, server_cpu, None),
            "durable": start_server("durable", db, server_cpu, profile),
        }
        try:
            if pin:
                os.sched_setaffinity(0, {cpus[1]})
            results, acks = asyncio.run(run_client(args, servers))

            async def final_commits() -> int:
                import aiohttp

                async with aiohttp.ClientSession() as s:
                    return (await get_stats(s, servers["durable"]))["commits"]

            total_commits = asyncio.run(final_commits())
            if profile:
                servers["durable"].proc.send_signal(signal.SIGTERM)
                servers["durable"].proc.wait(timeout=30)
            else:
                # a crash right after the last ack: every acknowledged row must be there
                servers["durable"].proc.kill()
                servers["durable"].proc.wait()
        finally:
            for s in servers.values():
                if s.proc.poll() is None:
                    s.proc.terminate()
                    s.proc.wait(timeout=30)
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows = conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0]
        if profile:
            import pstats

            pstats.Stats(profile, stream=sys.stderr).sort_stats("tottime").print_stats(30)
            pstats.Stats(profile, stream=sys.stderr).sort_stats("cumulative").print_stats(40)
        info = machine_info(tmpdir)
        probe = fsync_probe(tmpdir)
    elapsed = time.perf_counter() - started
    print(render(args, results, info, probe, acks, rows, total_commits, elapsed))
    return 0 if rows == acks and all(r.errors == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
