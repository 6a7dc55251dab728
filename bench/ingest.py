"""Ingest: durable webhook acks through the daemon's real route, beside a bare aiohttp handler.

Three servers, each in its own process on 127.0.0.1, all pinned to the same CPU:

* ``bare``    ``POST /rmas`` reads the body and answers 200 JSON; stores nothing.
* ``minimal`` ``POST /rmas`` is :func:`bridge.inbound.receive` over ``Engine(SqliteStore)``
  (WAL, ``synchronous=FULL``, group commit): 200 only after the COMMIT holding the row; no
  auth, no header check, no parsing, no worker (what this bench measured before issue 12).
* ``daemon``  the real ``python -m bridge run`` with one retailer: ``POST
  /retailers/<id>/optoro/rmas`` with HTTP Basic auth, the ``X-Optiturn-*`` headers checked,
  the RMA parsed, the durable ack, and the inbox worker, dispatcher and scheduler running
  (the retailer's default policy creates no Kibo return at ``CREATED``, so the worker applies
  each RMA to its entity and nothing leaves the machine).

Every request carries a distinct body: the guide's express-returns RMA (scenario 10) with its
own ``rma_identifier`` and order. The load generator is ``wrk`` (C, one thread, a Lua script
that numbers the bodies) pinned to the other CPU; its own CPU is reported to show it is not the
limit. Rounds alternate bare, minimal, daemon for ``--rounds`` rounds of ``--seconds`` each,
after a warm-up; every figure is min/median/max over the rounds. The server's CPU is read from
``/proc/<pid>/stat`` (all threads), so "by CPU" compares what each server spends per request.

Durability is shown by counting the server's ``fsync``/``fdatasync`` calls with ``strace -f
-c`` over a separate (untimed) load, with ``synchronous=FULL`` and with ``synchronous=OFF`` as
a control (the same server with SQLite's ``PRAGMA synchronous=FULL`` rewritten to ``OFF`` by
this script's launcher): with FULL every group commit is fsynced (syncs >= commits), with OFF
there are none. Exit status 1 when a request failed or the control does not differ.

    .venv/bin/python bench/ingest.py                      # 3 rounds x 10 s, c=64, ~2 min
    .venv/bin/python bench/ingest.py --quick              # 2 rounds x 3 s
    .venv/bin/python bench/ingest.py --concurrency 16,64,256 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from adapters.optoro.sandbox import BasicAuth  # noqa: E402
from tests.e2e_load import (  # noqa: E402
    ENV,
    OPTITURN_ID,
    RETAILER,
    WEBHOOK_PASSWORD,
    WEBHOOK_USER,
    config_text,
    cpu_seconds,
    machine_busy,
    rma_body,
    rma_template,
)

PATH = "/rmas"
KIND = "optoro.rmas"
SERVERS = ("bare", "minimal", "daemon")


# --- servers ---------------------------------------------------------------------------------


def synchronous_off() -> None:
    """The control: every SQLite connection of this process turns ``synchronous=FULL`` into
    ``OFF`` (the store's pragmas pass through ``Connection.execute``)."""

    class Off(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
            if re.fullmatch(r"\s*PRAGMA\s+synchronous\s*=\s*FULL\s*", sql, re.IGNORECASE):
                sql = "PRAGMA synchronous=OFF"
            return super().execute(sql, *args)

    connect = sqlite3.connect

    def connect_off(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs.setdefault("factory", Off)
        return connect(*args, **kwargs)

    sqlite3.connect = connect_off  # type: ignore[assignment]


async def serve_small(mode: str, db: str | None) -> None:
    """``bare`` or ``minimal`` (see the module's docstring), until SIGTERM."""
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

        async def minimal(request: web.Request) -> web.Response:
            return await receive(request, engine, retailer=RETAILER, kind=KIND)

        async def stats(request: web.Request) -> web.Response:
            return web.json_response({"commits": store.commits})

        app.router.add_post(PATH, minimal)
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
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await stop.wait()
    await runner.cleanup()
    if store is not None:
        await store.close()


@dataclass
class Server:
    mode: str
    proc: subprocess.Popen[str]
    base: str
    url: str
    db: Path | None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(mode: str, folder: Path, cpu: int | None, sync: str = "FULL") -> Server:
    """Start ``mode`` with its own SQLite file in ``folder``; ``sync="OFF"``: the control."""
    folder.mkdir(parents=True, exist_ok=True)
    db: Path | None = None
    if mode == "daemon":
        db = folder / "bridge.db"
        config = folder / "bridge.toml"
        # Kibo and Optoro on closed ports: the default policy sends nothing for these RMAs.
        # No inbox backlog limit: this measures the route, not the 503 of its backpressure
        # (which a starved worker reaches after 10,000 pending items by default).
        text = config_text(db, 0, "http://127.0.0.1:9", "http://127.0.0.1:9", policy="")
        config.write_text(text.replace("[store]", "max_inbox_backlog = 0\n[store]", 1))
        cmd = [sys.executable, "-m", "bridge", "run", "--config", str(config)]
        if sync == "OFF":
            cmd = [sys.executable, __file__, "--serve", "daemon", "--config", str(config)]
    else:
        if mode == "minimal":
            db = folder / "inbox.db"
        cmd = [sys.executable, __file__, "--serve", mode]
        cmd += ["--db", str(db)] if db else []
    if sync == "OFF":
        cmd += ["--synchronous-off"]

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=(folder / f"{mode}.log").open("ab"),
        text=True,
        preexec_fn=pin,
        cwd=ROOT,
        env={**os.environ, **ENV},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        raise RuntimeError(f"{mode} server did not start (exit {proc.wait()}): {line!r}")
    base = line.strip().rsplit(" ", 1)[1]
    url = f"{base}/retailers/{RETAILER}/optoro/rmas" if mode == "daemon" else base + PATH
    return Server(mode, proc, base, url, db)


# --- load generator: wrk ----------------------------------------------------------------------

LUA = """
local n = 0
local prefix = "%(prefix)s"
local template = [==[%(template)s]==]
wrk.method = "POST"
%(headers)s
request = function()
  n = n + 1
  local id = prefix .. n
  return wrk.format(nil, nil, nil, (template:gsub("@ID@", id)))
end
"""


def wrk_script(folder: Path, prefix: str) -> Path:
    """A Lua script that posts the guide's RMA with ``<prefix><n>`` in its identifiers."""
    template = rma_body(rma_template(), "@ID@").decode()
    headers = {
        "Content-Type": "application/json",
        "Authorization": BasicAuth(WEBHOOK_USER, WEBHOOK_PASSWORD).encode(),
        "X-Optiturn-Id": OPTITURN_ID,
        "X-Optiturn-Api-Version": "3",
    }
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    path = folder / f"wrk-{prefix}.lua"
    path.write_text(LUA % {"prefix": prefix, "template": template, "headers": lines})
    return path


@dataclass
class WrkResult:
    requests: int
    seconds: float
    non_2xx: int
    errors: int
    latency_ms: dict[str, float]
    cpu: float
    """wrk's own CPU seconds."""

    @property
    def rps(self) -> float:
        return (self.requests - self.non_2xx - self.errors) / self.seconds


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, script: Path, seconds: float, connections: int, cpu: int | None) -> WrkResult:
    duration = f"-d{max(1, round(seconds))}s"
    cmd = ["wrk", "-t1", f"-c{connections}", duration, "--latency", "-s", str(script)]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.Popen([*cmd, url], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out}")
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    assert done, out
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, re.MULTILINE))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests=int(done.group(1)),
        seconds=_ms(done.group(2) + done.group(3)) / 1000,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        errors=sum(int(x) for x in errors.groups()) if errors else 0,
        latency_ms={k: _ms(v) for k, v in latency.items()},
        cpu=usage.ru_utime + usage.ru_stime,
    )


def pending(db: Path | None) -> int | None:
    """Inbox items still pending in a server's SQLite file (read beside the server)."""
    if db is None:
        return None
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as conn:
        row = conn.execute("SELECT COUNT(*) FROM inbox WHERE status = 'pending'").fetchone()
    return int(row[0])


@dataclass
class Round:
    mode: str
    connections: int
    wrk: WrkResult
    server_cpu: float
    """Share of one CPU (all the server's threads)."""
    other_cpu: float
    pending: int | None

    @property
    def us_per_request(self) -> float:
        return self.server_cpu / self.wrk.rps * 1e6 if self.wrk.rps else float("nan")

    @property
    def client_cpu(self) -> float:
        return self.wrk.cpu / self.wrk.seconds


def measure_round(
    server: Server, script: Path, seconds: float, conns: int, cpu: int | None
) -> Round:
    m0, s0 = machine_busy(), cpu_seconds(server.proc.pid)
    result = run_wrk(server.url, script, seconds, conns, cpu)
    s1, m1 = cpu_seconds(server.proc.pid), machine_busy()
    server_s = s1 - s0
    other = max(0.0, (m1 - m0) - server_s - result.cpu) / result.seconds
    left = pending(server.db) if server.mode == "daemon" else None  # minimal has no worker
    return Round(server.mode, conns, result, server_s / result.seconds, other, left)


# --- durability: fsyncs counted ---------------------------------------------------------------


@dataclass
class SyncCount:
    mode: str
    sync: str
    acks: int
    syncs: int
    commits: int | None = None

    @property
    def per_commit(self) -> str:
        return f"{self.syncs / self.commits:.2f}" if self.commits else "-"


def count_syncs(
    mode: str, sync: str, folder: Path, seconds: float, cpus: tuple[int | None, int | None]
) -> SyncCount:
    """Serve ``mode`` with ``synchronous=sync``, load it under ``strace -f -c`` and count the
    ``fsync``/``fdatasync`` calls of all its threads."""
    server = start_server(mode, folder, cpus[0], sync)
    out = folder / f"strace-{mode}-{sync}.txt"
    try:
        strace = subprocess.Popen(
            [
                "strace",
                "-f",
                "-c",
                "-e",
                "trace=fsync,fdatasync",
                "-o",
                str(out),
                "-p",
                str(server.proc.pid),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert strace.stderr is not None
        strace.stderr.readline()  # "strace: Process N attached": it traces from here on
        commits0 = commits(server)
        result = run_wrk(server.url, wrk_script(folder, f"s{sync}{mode}"), seconds, 16, cpus[1])
        commits1 = commits(server)
        strace.send_signal(signal.SIGINT)
        strace.wait(timeout=30)
    finally:
        server.stop()
    calls = 0
    for line in out.read_text().splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync"):
            calls += int(parts[3])
    acks = result.requests - result.non_2xx - result.errors
    n = None if commits0 is None or commits1 is None else commits1 - commits0
    return SyncCount(mode, sync, acks, calls, n)


def commits(server: Server) -> int | None:
    if server.mode != "minimal":
        return None
    import urllib.request

    with urllib.request.urlopen(server.base + "/stats", timeout=10) as response:
        return int(json.loads(response.read())["commits"])


# --- report ----------------------------------------------------------------------------------


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def machine_info(db_dir: Path) -> dict[str, str]:
    import aiohttp

    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "cpu": f"{model}, {os.cpu_count()} CPUs",
        "kernel": platform.release(),
        "python / sqlite / aiohttp": (
            f"{platform.python_version()} / {sqlite3.sqlite_version} / {aiohttp.__version__}"
        ),
        "load generator": (wrk.stdout or wrk.stderr).splitlines()[0],
    }


def render(
    args: argparse.Namespace, rounds: list[Round], syncs: list[SyncCount], info: dict[str, str]
) -> str:
    lines = [
        f"{args.rounds} rounds x {args.seconds:g} s per server and concurrency (alternating"
        f" bare, minimal, daemon), pinned: {args.pin_desc}; cells are min / median / max",
        "",
        "| server | conc. | req/s | p50 ms | p99 ms | server CPU % | server CPU µs/req"
        " | wrk CPU % | other load % | pending at end | ratio by req/s | ratio by CPU |",
        "|---|---:|---|---|---|---|---|---|---|---|---|---|",
    ]
    for conns in sorted({r.connections for r in rounds}):
        bare = [r for r in rounds if r.mode == "bare" and r.connections == conns]
        for mode in SERVERS:
            rs = [r for r in rounds if r.mode == mode and r.connections == conns]
            by_rps = [r.wrk.rps / b.wrk.rps for r, b in zip(rs, bare, strict=True)]
            by_cpu = [b.us_per_request / r.us_per_request for r, b in zip(rs, bare, strict=True)]
            left = [float(r.pending) for r in rs if r.pending is not None]
            lines.append(
                f"| {mode} | {conns} | {spread([r.wrk.rps for r in rs])}"
                f" | {spread([r.wrk.latency_ms['50'] for r in rs], '{:.2f}')}"
                f" | {spread([r.wrk.latency_ms['99'] for r in rs], '{:.2f}')}"
                f" | {spread([100 * r.server_cpu for r in rs])}"
                f" | {spread([r.us_per_request for r in rs])}"
                f" | {spread([100 * r.client_cpu for r in rs])}"
                f" | {spread([100 * r.other_cpu for r in rs])}"
                f" | {spread(left) if left else '-'}"
                f" | {spread(by_rps, '{:.2f}x')} | {spread(by_cpu, '{:.2f}x')} |"
            )
    lines += [
        "",
        'Ratios are per round (each server against the bare round just before it). "pending at'
        ' end": inbox items the worker had not processed when the round ended.',
        "",
        "Durability: `fsync`/`fdatasync` calls of the server (all threads, `strace -f -c`), over"
        f" {args.sync_seconds:g} s of load at c=16 (untimed):",
        "",
        "| server | synchronous | acks | commits | fsync+fdatasync | per commit | per ack |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in syncs:
        lines.append(
            f"| {s.mode} | {s.sync} | {s.acks:,} | {s.commits if s.commits is not None else '-'}"
            f" | {s.syncs:,} | {s.per_commit} | {s.syncs / max(s.acks, 1):.3f} |"
        )
    lines += ["", "| machine | |", "|---|---|", *[f"| {k} | {v} |" for k, v in info.items()]]
    return "\n".join(lines)


def durable_ok(syncs: list[SyncCount]) -> bool:
    """FULL: at least one sync per group commit (the daemon: some); OFF: none."""
    for s in syncs:
        if s.sync == "FULL" and (s.syncs == 0 or (s.commits and s.syncs < s.commits)):
            return False
        if s.sync == "OFF" and s.syncs != 0:
            return False
    return bool(syncs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per round and server")
    p.add_argument("--concurrency", default="64", help="connections (comma list allowed)")
    p.add_argument("--rounds", type=int, default=3, help="measured rounds per server")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per server")
    p.add_argument("--sync-seconds", type=float, default=3.0, help="load under strace, s")
    p.add_argument("--quick", action="store_true", help="2 rounds x 3 s")
    p.add_argument("--no-pin", action="store_true", help="do not pin servers / wrk to CPUs")
    p.add_argument("--dir", default=None, help="directory for the SQLite files")
    p.add_argument("--serve", choices=("bare", "minimal", "daemon"), help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--synchronous-off", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.serve:
        if args.synchronous_off:
            synchronous_off()
        if args.serve == "daemon":
            from bridge.cli import main as bridge_main

            return bridge_main(["run", "--config", args.config])
        asyncio.run(serve_small(args.serve, args.db))
        return 0

    if shutil.which("wrk") is None or shutil.which("strace") is None:
        print("needs wrk and strace (apt-get install -y wrk strace)", file=sys.stderr)
        return 2
    if args.quick:
        args.seconds, args.rounds, args.warmup = 3.0, 2, 1.0
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    server_cpu, wrk_cpu = (cpus[0], cpus[1]) if pin else (None, None)
    args.pin_desc = f"servers CPU {cpus[0]}, wrk CPU {cpus[1]}" if pin else "no"
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="bench-ingest-", dir=args.dir) as tmp:
        folder = Path(tmp)
        servers = {m: start_server(m, folder / m, server_cpu) for m in SERVERS}
        try:
            for conns in (int(c) for c in args.concurrency.split(",")):
                for rnd in range(-1, args.rounds):  # -1: the warm-up
                    for mode in SERVERS:
                        script = wrk_script(folder, f"c{conns}r{rnd + 1}{mode}-")
                        seconds = args.warmup if rnd < 0 else args.seconds
                        r = measure_round(servers[mode], script, seconds, conns, wrk_cpu)
                        print(
                            f"  c={conns} round {rnd + 1}/{args.rounds} {mode:8s}"
                            f" {r.wrk.rps:8,.0f} req/s  p50 {r.wrk.latency_ms['50']:.2f} ms"
                            f"  p99 {r.wrk.latency_ms['99']:.2f} ms  server"
                            f" {r.server_cpu:4.0%} ({r.us_per_request:.0f} µs/req)  wrk"
                            f" {r.client_cpu:4.0%}  others {r.other_cpu:4.0%}"
                            f"  non-2xx {r.wrk.non_2xx} errors {r.wrk.errors}"
                            + (f"  pending {r.pending}" if r.pending is not None else ""),
                            file=sys.stderr,
                            flush=True,
                        )
                        if rnd >= 0:
                            rounds.append(r)
        finally:
            for server in servers.values():
                server.stop()
        syncs = [
            count_syncs(
                mode, sync, folder / f"sync-{mode}-{sync}", args.sync_seconds, (server_cpu, wrk_cpu)
            )
            for mode in ("minimal", "daemon")
            for sync in ("FULL", "OFF")
        ]
        for s in syncs:
            print(
                f"  {s.mode} synchronous={s.sync}: {s.acks} acks, {s.syncs} syncs,"
                f" commits {s.commits}",
                file=sys.stderr,
            )
        info = machine_info(folder)
    print(render(args, rounds, syncs, info))
    failed = sum(r.wrk.non_2xx + r.wrk.errors for r in rounds)
    ok = durable_ok(syncs)
    print(
        f"\nrequest failures: {failed}; durability (FULL fsyncs every commit, OFF none):"
        f" {'OK' if ok else 'FAILED'}"
    )
    return 0 if failed == 0 and ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
