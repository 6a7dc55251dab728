"""Exchange Variants benchmark: cached latency/throughput and single flight on cold misses.

The REAL daemon runs in a child process: ``bridge.config.load_config`` on a generated
config (one retailer ``acme`` with an Optoro table, SQLite in a temp dir), then
``bridge.app.build_runtime`` and ``bridge.app.serve`` exactly as ``returns-bridge run``
does (JSON logs at ``--log-level``; the daemon's own logging setup keeps the aiohttp
access log at WARNING, i.e. off; inbox worker, dispatcher and scheduler running).
Two things are added before the app is built:

* the retailer's CATALOG is a :class:`BenchCatalog`: ``variants_for`` sleeps
  ``--upstream-ms`` (a realistic catalog round trip), counts its calls and returns the
  variants of the guide's fixture (``04-*/02-*.json`` through
  ``mappings.optoro.parse_variants_response``);
* ``GET /_bench/stats`` returns the catalog call counts and the variants cache's stats.

The load generator is this process (aiohttp client, one connection pool), on 127.0.0.1.
With >= 2 CPUs the daemon is pinned to CPU 0 and the load generator to CPU 1
(``--no-pin`` to let the scheduler decide). Phases:

1. cold single flight: 100 concurrent GETs for one never-seen variant (connections opened
   beforehand, so all 100 reach the daemon inside one upstream call) -> exactly one
   catalog call, 100 cache misses, all 200, identical bodies;
2. cached open loop: requests for one cached variant *scheduled* at a fixed arrival rate
   (``--rate`` req/s for ``--seconds``, after a 1 s warm-up), each started at its slot
   whether or not earlier ones finished; latency = response read - scheduled slot, so
   it includes any queueing (client pool, server backlog);
3. cached closed loop: ``--concurrency`` workers back to back for ``--closed-seconds``:
   maximum req/s.

    python bench/variants.py [--rate 500] [--seconds 10] [--upstream-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e_load import cpu_seconds, machine_busy  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures" / "optoro-scenarios"
RETAILER = "acme"
OPTITURN_ID = "acme-optiturn"
WEBHOOK_USER = "optoro"
WEBHOOK_PASSWORD = "hook-pass-123"
STATS_PATH = "/_bench/stats"
COLD_REQUESTS = 100
TARGET_P99_MS = 20.0


def fixture_step() -> dict[str, Any]:
    paths = sorted(FIXTURES.glob("04-*/02-*.json"))
    if not paths:
        raise SystemExit(f"no Exchange Variants fixture under {FIXTURES}/04-*/02-*.json")
    step: dict[str, Any] = json.loads(paths[0].read_text())
    return step


def config_text(db: Path) -> str:
    """The same shape of config as tests/harness.py writes (Optoro base URL is unused)."""
    return f"""\
[server]
host = "127.0.0.1"
port = 0
[store]
url = "sqlite:///{db}"
[retailers.{RETAILER}]
name = "Acme"
[retailers.{RETAILER}.optoro]
base_url = "http://127.0.0.1:9"
client_id = "acme-bridge"
client_secret = "${{OPTORO_SECRET}}"
optiturn_id = "{OPTITURN_ID}"
timeout = 5.0
[retailers.{RETAILER}.optoro.inbound_auth]
kind = "basic"
username = "{WEBHOOK_USER}"
password = "${{WEBHOOK_PASSWORD}}"
"""


# --------------------------------------------------------------------------------------
# the daemon (child process: ``variants.py --serve DIR``)
# --------------------------------------------------------------------------------------


class BenchCatalog:
    """A catalog one upstream round trip away; the guide's variants for every identifier."""

    def __init__(self, variants: list[Any], upstream_seconds: float) -> None:
        self.variants = variants
        self.upstream_seconds = upstream_seconds
        self.calls = 0
        self.by_variant: Counter[str] = Counter()

    async def variants_for(self, variant_identifier: str) -> list[Any]:
        self.calls += 1
        self.by_variant[variant_identifier] += 1
        await asyncio.sleep(self.upstream_seconds)
        return list(self.variants)


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from adapters.optoro.inbound import inbound_key
    from bridge.app import Route, build_runtime, serve
    from bridge.config import load_config
    from bridge.logs import configure_logging
    from bridge.ports import CATALOG
    from mappings.optoro import parse_variants_response

    configure_logging(args.log_level)
    work = Path(args.serve)
    path = work / "bridge.toml"
    path.write_text(config_text(work / "bridge.db"))
    config = load_config(
        path, env={"OPTORO_SECRET": "optoro-secret-456", "WEBHOOK_PASSWORD": WEBHOOK_PASSWORD}
    )
    runtime = build_runtime(config)
    catalog = BenchCatalog(
        parse_variants_response(fixture_step()["response"]), args.upstream_ms / 1000.0
    )
    runtime.provide(RETAILER, CATALOG, "bench", catalog)
    inbound = runtime.find_shared(inbound_key(RETAILER))
    assert inbound is not None

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "upstream_calls": catalog.calls,
                "by_variant": dict(catalog.by_variant),
                "cache": asdict(inbound.variants_cache.stats),
            }
        )

    runtime.routes.append(Route("GET", STATS_PATH, stats))

    def announce(host: str, port: int) -> None:
        print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)

    profiler = None
    if args.profile_out:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        return asyncio.run(serve(runtime, announce))
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile_out)


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def variants_url(self, variant: str) -> str:
        return f"{self.url}/retailers/{RETAILER}/optoro/sku/{variant}/variants"


def start_daemon(args: argparse.Namespace, work: Path, cpu: int | None) -> Daemon:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        str(work),
        "--upstream-ms",
        str(args.upstream_ms),
        "--log-level",
        args.log_level,
    ]
    if args.profile:
        cmd += ["--profile-out", str(Path(args.profile).resolve())]

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    log = work / "daemon.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, preexec_fn=pin, cwd=ROOT
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        code = proc.wait()
        raise RuntimeError(f"daemon did not start (exit {code}):\n{log.read_text()[-3000:]}")
    return Daemon(proc, int(json.loads(line)["port"]), log)


def stop_daemon(daemon: Daemon) -> None:
    if daemon.proc.poll() is None:
        daemon.proc.send_signal(signal.SIGTERM)
        try:
            daemon.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.proc.kill()
            daemon.proc.wait()


# --------------------------------------------------------------------------------------
# load generator
# --------------------------------------------------------------------------------------


class CpuMeter:
    """Share of one CPU used by the daemon, the load generator and everything else."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t = time.perf_counter()
        self.s, self.c, self.m = cpu_seconds(pid), time.process_time(), machine_busy()

    def read(self) -> tuple[float, float, float]:
        wall = time.perf_counter() - self.t
        s = cpu_seconds(self.pid) - self.s
        c = time.process_time() - self.c
        m = machine_busy() - self.m
        return s / wall, c / wall, max(0.0, m - s - c) / wall


@dataclass
class Phase:
    name: str
    requests: int = 0
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)  # open loop: start - scheduled slot
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    other_cpu: float = 0.0
    upstream_calls: int = 0

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float, values: list[float] | None = None) -> float:
        lat = sorted(self.latencies if values is None else values)
        if not lat:
            return float("nan")
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000.0


def headers() -> dict[str, str]:
    import aiohttp

    return {
        "Authorization": aiohttp.encode_basic_auth(WEBHOOK_USER, WEBHOOK_PASSWORD),
        "X-Optiturn-Id": OPTITURN_ID,
    }


async def get_stats(session: Any, daemon: Daemon) -> dict[str, Any]:
    async with session.get(daemon.url + STATS_PATH) as resp:
        stats: dict[str, Any] = await resp.json()
    return stats


async def cold_single_flight(daemon: Daemon, variant: str) -> tuple[Phase, dict[str, Any]]:
    """100 concurrent requests for a never-seen variant, over 100 already open connections."""
    import aiohttp

    phase = Phase("cold single flight")
    connector = aiohttp.TCPConnector(limit=COLD_REQUESTS)
    async with aiohttp.ClientSession(connector=connector, headers=headers()) as session:

        async def healthz() -> None:
            async with session.get(daemon.url + "/healthz") as resp:
                await resp.read()

        # Open the connections first (100 concurrent requests hold 100 connections).
        await asyncio.gather(*(healthz() for _ in range(COLD_REQUESTS)))
        before = await get_stats(session, daemon)
        url = daemon.variants_url(variant)
        perf = time.perf_counter

        async def one() -> tuple[int, bytes, float]:
            t0 = perf()
            async with session.get(url) as resp:
                body = await resp.read()
                return resp.status, body, perf() - t0

        meter = CpuMeter(daemon.proc.pid)
        t0 = perf()
        results = await asyncio.gather(*(one() for _ in range(COLD_REQUESTS)))
        phase.seconds = perf() - t0
        phase.server_cpu, phase.client_cpu, phase.other_cpu = meter.read()
        after = await get_stats(session, daemon)
    phase.requests = len(results)
    phase.ok = sum(1 for status, _, _ in results if status == 200)
    phase.errors = phase.requests - phase.ok
    phase.latencies = [lat for _, _, lat in results]
    bodies = {body for _, body, _ in results}
    cache_delta = {k: after["cache"][k] - before["cache"][k] for k in after["cache"]}
    proof = {
        "variant": variant,
        "upstream_calls": after["upstream_calls"] - before["upstream_calls"],
        "upstream_calls_for_variant": after["by_variant"].get(variant, 0),
        "statuses": dict(Counter(status for status, _, _ in results)),
        "distinct_bodies": len(bodies),
        "body_variants": len(json.loads(next(iter(bodies)))["variants"]) if bodies else 0,
        "cache": cache_delta,
    }
    proof["ok"] = (
        proof["upstream_calls"] == 1
        and proof["upstream_calls_for_variant"] == 1
        and phase.ok == COLD_REQUESTS
        and len(bodies) == 1
        and proof["body_variants"] > 0
    )
    return phase, proof


async def open_loop(
    session: Any, url: str, expected: bytes, rate: float, seconds: float, name: str
) -> Phase:
    """Requests scheduled every 1/rate s regardless of completion; latency from the slot."""
    phase = Phase(name)
    perf = time.perf_counter
    n = round(rate * seconds)
    interval = 1.0 / rate
    tasks: list[asyncio.Task[None]] = []
    last_done = 0.0

    async def one(slot: float) -> None:
        nonlocal last_done
        phase.lags.append(perf() - slot)
        try:
            async with session.get(url) as resp:
                body = await resp.read()
                good = resp.status == 200 and body == expected
        except Exception:
            good = False
        done = perf()
        last_done = max(last_done, done)
        phase.latencies.append(done - slot)
        if good:
            phase.ok += 1
        else:
            phase.errors += 1

    start = perf() + 0.01
    for i in range(n):
        slot = start + i * interval
        delay = slot - perf()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(slot)))
    await asyncio.wait(tasks, timeout=max(30.0, seconds))
    for task in tasks:
        if not task.done():
            task.cancel()
            phase.errors += 1
    phase.requests = n
    phase.seconds = (last_done or perf()) - start
    return phase


async def closed_loop(
    session: Any, url: str, expected: bytes, concurrency: int, seconds: float
) -> Phase:
    """``concurrency`` workers, each sending its next request when the last one is read."""
    phase = Phase(f"cached, closed loop, {concurrency} in flight")
    perf = time.perf_counter
    stop_at = perf() + seconds

    async def worker() -> None:
        while perf() < stop_at:
            t0 = perf()
            try:
                async with session.get(url) as resp:
                    body = await resp.read()
                    good = resp.status == 200 and body == expected
            except Exception:
                good = False
            phase.latencies.append(perf() - t0)
            if good:
                phase.ok += 1
            else:
                phase.errors += 1

    start = perf()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    phase.seconds = perf() - start
    phase.requests = phase.ok + phase.errors
    return phase


async def run_client(args: argparse.Namespace, daemon: Daemon) -> dict[str, Any]:
    import aiohttp

    cached_variant = fixture_step()["path"].split("/")[2]
    cold_variant = f"cold-{os.getpid()}-{time.time_ns()}"

    cold, proof = await cold_single_flight(daemon, cold_variant)
    print(f"  cold: {json.dumps(proof)}", file=sys.stderr, flush=True)

    connector = aiohttp.TCPConnector(limit=args.connections)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers(), timeout=timeout
    ) as session:
        url = daemon.variants_url(cached_variant)
        async with session.get(url) as resp:  # fills the cache (one upstream call)
            expected = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"priming request answered {resp.status}: {expected!r}")
        await open_loop(session, url, expected, args.rate, 1.0, "warm-up")
        before = await get_stats(session, daemon)
        meter = CpuMeter(daemon.proc.pid)
        opened = await open_loop(
            session,
            url,
            expected,
            args.rate,
            args.seconds,
            f"cached, open loop {args.rate:g} req/s offered, {args.seconds:g} s",
        )
        opened.server_cpu, opened.client_cpu, opened.other_cpu = meter.read()
        print(
            f"  open loop: {opened.rps:.0f} req/s p50 {opened.pct(0.5):.2f} ms"
            f" p99 {opened.pct(0.99):.2f} ms max {opened.pct(1.0):.2f} ms"
            f" errors {opened.errors}",
            file=sys.stderr,
            flush=True,
        )

        middle = await get_stats(session, daemon)
        meter = CpuMeter(daemon.proc.pid)
        closed = await closed_loop(session, url, expected, args.concurrency, args.closed_seconds)
        closed.server_cpu, closed.client_cpu, closed.other_cpu = meter.read()
        print(
            f"  closed loop: {closed.rps:.0f} req/s p50 {closed.pct(0.5):.2f} ms"
            f" p99 {closed.pct(0.99):.2f} ms errors {closed.errors}",
            file=sys.stderr,
            flush=True,
        )
        after = await get_stats(session, daemon)
    opened.upstream_calls = middle["upstream_calls"] - before["upstream_calls"]
    closed.upstream_calls = after["upstream_calls"] - middle["upstream_calls"]
    return {
        "cold": cold,
        "proof": proof,
        "open": opened,
        "closed": closed,
        "final_stats": after,
        "cached_variant": cached_variant,
        "body_bytes": len(expected),
    }


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    import aiohttp

    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
    }


def ms(x: float) -> str:
    return f"{x:.2f}"


def us_per_req(phase: Phase) -> float:
    return phase.server_cpu / phase.rps * 1e6 if phase.rps else float("nan")


def render(args: argparse.Namespace, r: dict[str, Any], info: dict[str, str]) -> str:
    cold: Phase = r["cold"]
    proof = r["proof"]
    opened: Phase = r["open"]
    closed: Phase = r["closed"]
    met = opened.errors == 0 and opened.pct(0.99) < TARGET_P99_MS
    lines = [
        f"upstream (catalog) latency {args.upstream_ms:g} ms; cached variant"
        f" `{r['cached_variant']}` ({r['body_bytes']} B JSON body); daemon log level"
        f" {args.log_level}; pinned: {args.pin_desc}; client pool {args.connections}"
        " connections",
        "",
        "| phase | requests | 200 | errors | req/s | p50 ms | p95 ms | p99 ms | max ms"
        " | upstream calls | daemon CPU | client CPU | others CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cold.upstream_calls = proof["upstream_calls"]
    for phase in (cold, opened, closed):
        name = phase.name
        if phase is cold:
            name = f"cold: {COLD_REQUESTS} concurrent, one new variant"
        calls_cell = str(phase.upstream_calls)
        lines.append(
            f"| {name} | {phase.requests} | {phase.ok} | {phase.errors} | {phase.rps:,.0f}"
            f" | {ms(phase.pct(0.50))} | {ms(phase.pct(0.95))} | {ms(phase.pct(0.99))}"
            f" | {ms(phase.pct(1.0))} | {calls_cell} | {phase.server_cpu:.0%}"
            f" | {phase.client_cpu:.0%} | {phase.other_cpu:.0%} |"
        )
    cache = proof["cache"]
    lines += [
        "",
        f"- single flight: {'PASS' if proof['ok'] else 'FAIL'} -"
        f" {proof['upstream_calls']} upstream call(s) for {COLD_REQUESTS} concurrent requests;"
        f" statuses {proof['statuses']}; {proof['distinct_bodies']} distinct body"
        f" ({proof['body_variants']} variants); cache during the burst: misses"
        f" {cache['misses']}, loads {cache['loads']}, hits {cache['hits']}"
        f" (misses = {COLD_REQUESTS} and loads = 1: every request missed and joined the"
        " one load)",
        f"- target p99 < {TARGET_P99_MS:g} ms cached at {args.rate:g} req/s:"
        f" {'MET' if met else 'NOT MET'} (p99 {ms(opened.pct(0.99))} ms, achieved"
        f" {opened.rps:,.1f} req/s, {opened.errors} errors)",
        f"- open loop: start lag behind schedule (client side) p99"
        f" {ms(opened.pct(0.99, opened.lags))} ms, max {ms(opened.pct(1.0, opened.lags))} ms;"
        " latency is measured from the scheduled slot, so it includes that lag",
        f"- daemon CPU per request: open loop {us_per_req(opened):.0f} µs, closed loop"
        f" {us_per_req(closed):.0f} µs; the daemon wrote {r.get('log_lines', 0):,} log lines"
        " (the daemon keeps aiohttp's access log at WARNING: no line per request)",
        "- CPU columns: share of one CPU during the phase (daemon = all its threads;"
        " others = every other process on the machine)",
        "",
        "| machine | |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rate", type=float, default=500.0, help="open-loop arrivals per second")
    p.add_argument("--seconds", type=float, default=10.0, help="open-loop duration")
    p.add_argument("--upstream-ms", type=float, default=50.0, help="catalog latency")
    p.add_argument("--concurrency", type=int, default=32, help="closed-loop requests in flight")
    p.add_argument("--closed-seconds", type=float, default=5.0, help="closed-loop duration")
    p.add_argument("--connections", type=int, default=64, help="client connection pool size")
    p.add_argument("--log-level", default="INFO", help="the daemon's log level (as `run`)")
    p.add_argument("--no-pin", action="store_true", help="do not pin daemon/client to CPUs")
    p.add_argument("--profile", metavar="FILE", help="cProfile the daemon into FILE")
    p.add_argument("--serve", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.serve:
        return _serve(args)

    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    args.pin_desc = "daemon CPU 0, load generator CPU 1" if pin else "no"
    if pin:
        os.sched_setaffinity(0, {1})
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-variants-") as tmp:
        daemon = start_daemon(args, Path(tmp), 0 if pin else None)
        try:
            budget = 60.0 + 3 * (args.seconds + args.closed_seconds)
            result = asyncio.run(asyncio.wait_for(run_client(args, daemon), budget))
        except BaseException:
            stop_daemon(daemon)
            print(daemon.log.read_text()[-3000:], file=sys.stderr)
            raise
        stop_daemon(daemon)
        log_lines = daemon.log.read_text().splitlines()
        problems = [
            line
            for line in log_lines
            if '"level": "error"' in line or '"level": "critical"' in line
        ]
        result["log_lines"] = len(log_lines)
    print(render(args, result, machine_info()))
    print(f"\nwall time {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if problems:
        print(f"daemon logged {len(problems)} error(s), first: {problems[0]}", file=sys.stderr)
    return 0 if result["proof"]["ok"] and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
