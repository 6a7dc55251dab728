"""End to end under an open-loop load: Optoro RMA webhooks into the real daemon, Kibo creates
out of it, shared by ``bench/e2e.py`` (the curve) and ``tests/test_bench_e2e.py`` (a short
run in CI that asserts correctness only, never speed).

One round: a fresh daemon (``python -m bridge run``, SQLite in a temp dir) for one retailer
whose policy creates the Kibo return at ``CREATED`` for every return method, and a fresh
sandbox process (:func:`serve_sandboxes`: Kibo with its Return Event Notifications posted back
to the daemon's real route, and Optoro for the retailer's credentials). This process is
Optoro's sender: it posts the guide's express-returns RMA (scenario 10, ``CREATED``, four units
of one order) with a new ``rma_identifier`` and order per message to
``/retailers/<id>/optoro/rmas``, with the retailer's Basic auth and ``X-Optiturn-*`` headers,
at a fixed rate for a fixed time (an open loop: message ``i`` is due at ``t0 + i / rate``,
whatever the answers before it did). A message's latency runs from its due time to the moment
the Kibo sandbox receives the Create Return that carries its order; so a late sender counts
against the daemon, never for it.

At the end of the window the round waits until every acknowledged RMA has its create (or
until nothing moves for ``drain_idle`` s), then reads the sandbox's records: ``missing`` (an
acknowledged RMA without a create) and ``duplicates`` (creates beyond one per RMA) must be 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from adapters.optoro.sandbox import BasicAuth, ScenarioPlayer
from adapters.optoro.sandbox.scenarios import load_scenarios
from tests.daemon_process import spawn_daemon
from tests.kibo_crash import free_port

REPO = Path(__file__).resolve().parent.parent
RETAILER = "e2e"
KIBO_TOKEN = "e2e-kibo-token"
NOTIFY_SECRET = "e2e-kibo-notify"
WEBHOOK_USER = "optoro"
WEBHOOK_PASSWORD = "e2e-webhook-password"
OPTORO_SECRET = "e2e-optoro-secret"
OPTITURN_ID = "e2e-optiturn"
ENV = {
    "E2E_OPTORO_SECRET": OPTORO_SECRET,
    "E2E_WEBHOOK_PASSWORD": WEBHOOK_PASSWORD,
    "E2E_KIBO_TOKEN": KIBO_TOKEN,
    "E2E_KIBO_NOTIFY": NOTIFY_SECRET,
}
SCENARIO = "10-single-line-full-refund-express-returns"
"""The guide's scenario whose first RMA message (express returns, ``CREATED``) is sent."""


CREATE_AT_CREATED = 'create_return_at = { mail_back = "CREATED", express_returns = "CREATED" }'
"""The policy that creates the Kibo return as soon as the RMA is ``CREATED``."""


def config_text(
    db: Path, port: int, kibo_url: str, optoro_url: str, policy: str = CREATE_AT_CREATED
) -> str:
    """The daemon's config: one retailer (``policy``: returns created at ``CREATED``), Kibo
    notifications authenticated by an API-key header, SQLite at ``db``."""
    return f"""[server]
host = "127.0.0.1"
port = {port}
instance = "e2e-bench"
shutdown_timeout = 2.0
[store]
url = "sqlite:///{db}"

[retailers.{RETAILER}]
[retailers.{RETAILER}.policy]
{policy}
confirm_refund = "never"
reconcile_every = 3600.0
[retailers.{RETAILER}.optoro]
base_url = "{optoro_url}"
client_id = "e2e-bridge"
client_secret = "${{E2E_OPTORO_SECRET}}"
optiturn_id = "{OPTITURN_ID}"
timeout = 5.0
[retailers.{RETAILER}.optoro.inbound_auth]
kind = "basic"
username = "{WEBHOOK_USER}"
password = "${{E2E_WEBHOOK_PASSWORD}}"
[retailers.{RETAILER}.kibo]
base_url = "{kibo_url}"
token = "${{E2E_KIBO_TOKEN}}"
timeout = 5.0
line_ids = "numeric"
exchange_lines_numeric = true
[retailers.{RETAILER}.kibo.notifications]
kind = "api_key"
header = "X-Kibo-Secret"
key = "${{E2E_KIBO_NOTIFY}}"
"""


def rma_template() -> dict[str, Any]:
    """The guide's first RMA message of :data:`SCENARIO` (express returns, ``CREATED``)."""
    (scenario,) = (s for s in load_scenarios() if s.folder == SCENARIO)
    step = next(s for s in scenario.steps if s.kind == "rma")
    assert step.request["status"] == "CREATED"
    assert step.request["return_method"] == "express-returns"
    return dict(step.request)


def rma_body(template: dict[str, Any], n: int | str) -> bytes:
    """Message ``n``: the template with its own ``rma_identifier`` and order (``E2E-<n>``)."""
    order = f"E2E-{n}"
    body = {
        **template,
        "rma_identifier": f"{template['rma_identifier']}-{n}",
        "items": [{**item, "order_identifier": order} for item in template["items"]],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def order_of(n: int) -> str:
    return f"E2E-{n}"


# --- the sandbox process ---------------------------------------------------------------------


async def serve_sandboxes(notification_url: str) -> None:
    """The sandbox process: Kibo (notifications posted to ``notification_url``) and Optoro on
    free loopback ports. Prints ``{"kibo": url, "optoro": url}`` on stdout, then answers one
    command per stdin line: ``count`` (creates recorded so far), ``dump PATH`` (every Create
    Return request as ``[externalOrderID, received_at, outcome, status]``, as JSON into PATH),
    ``cpu`` (this process's CPU seconds); ``quit`` (or end of input) stops it."""
    from adapters.kibo.sandbox import RETURN_PATH
    from adapters.kibo.sandbox import running_sandbox as running_kibo
    from adapters.optoro.sandbox import running_sandbox as running_optoro

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with (
        running_optoro(client_id="e2e-bridge", client_secret=OPTORO_SECRET) as optoro,
        running_kibo(
            token=KIBO_TOKEN,
            notification_url=notification_url,
            notification_headers={"X-Kibo-Secret": NOTIFY_SECRET},
            notification_timeout=5.0,
        ) as kibo,
    ):

        def creates() -> list[Any]:
            return [
                r
                for r in kibo.requests
                if r.method == "POST" and r.path.rstrip("/") + "/" == RETURN_PATH
            ]

        print(json.dumps({"kibo": kibo.url, "optoro": optoro.url}), flush=True)
        while line := (await reader.readline()).decode().strip():
            command, _, argument = line.partition(" ")
            if command == "count":
                answer: Any = sum(1 for r in creates() if r.outcome == "created")
            elif command == "dump":
                rows = [
                    [
                        (r.body.get("externalOrderID") if isinstance(r.body, dict) else None),
                        r.at,
                        r.outcome,
                        r.status,
                    ]
                    for r in creates()
                ]
                await asyncio.to_thread(Path(argument).write_text, json.dumps(rows))
                answer = len(rows)
            elif command == "cpu":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                answer = usage.ru_utime + usage.ru_stime
            else:
                break
            print(json.dumps(answer), flush=True)


class Sandboxes:
    """The sandbox process, driven over its stdin/stdout."""

    def __init__(self, proc: asyncio.subprocess.Process, urls: dict[str, str]) -> None:
        self.proc = proc
        self.urls = urls

    @classmethod
    async def start(cls, notification_url: str, cpus: set[int] | None) -> Sandboxes:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.e2e_load",
            notification_url,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        if cpus:
            os.sched_setaffinity(proc.pid, cpus)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        return cls(proc, json.loads(line))

    async def ask(self, command: str) -> Any:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(f"{command}\n".encode())
        await self.proc.stdin.drain()
        return json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 60))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(ConnectionError):
                self.proc.stdin.write(b"quit\n")
                await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


# --- one round --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads), from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all CPUs), from ``/proc/stat``."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@dataclass
class RoundResult:
    """What one round measured (latencies in ms, CPU as a share of one CPU)."""

    rate: float
    seconds: float
    sent: int = 0
    acked: int = 0
    errors: int = 0
    shed: int = 0
    """Webhooks answered 503 + Retry-After (inbox backpressure): not stored, not acked."""
    error_samples: list[str] = field(default_factory=list)
    created_in_window: int = 0
    backlog_growth: float = 0.0
    """Acknowledged RMAs without a create: growth per second over the window's last 3/4."""
    missing: int = 0
    duplicates: int = 0
    refused_creates: int = 0
    latencies: list[float] = field(default_factory=list)
    daemon_cpu: float = 0.0
    sandbox_cpu: float = 0.0
    client_cpu: float = 0.0
    other_cpu: float = 0.0
    """CPUs busy with other processes on the machine during the window (noise)."""
    start_lag_p99: float = 0.0
    drain_seconds: float = 0.0
    daemon_pid: int = 0
    tracebacks: int = 0

    @property
    def creates_per_s(self) -> float:
        return self.created_in_window / self.seconds

    def p(self, share: float) -> float:
        return percentile(self.latencies, share)

    @property
    def cpu_ms_per_rma(self) -> float:
        return self.daemon_cpu * 1000 / max(self.creates_per_s, 1e-9)

    def line(self) -> str:
        return (
            f"{self.rate:g} RMA/s x {self.seconds:g}s: sent {self.sent}, acked {self.acked},"
            f" shed (503) {self.shed}, errors {self.errors}; p50/p95/p99 {self.p(0.5):.1f}/"
            f"{self.p(0.95):.1f}/{self.p(0.99):.1f} ms; creates/s {self.creates_per_s:.1f}; backlog"
            f" {self.backlog_growth:+.1f}/s; daemon CPU {self.daemon_cpu:.0%}"
            f" ({self.cpu_ms_per_rma:.2f} ms/RMA); sandbox {self.sandbox_cpu:.0%}, client"
            f" {self.client_cpu:.0%}, others {self.other_cpu:.0%}, start lag p99"
            f" {self.start_lag_p99:.1f} ms; missing {self.missing}, duplicates"
            f" {self.duplicates}; drain {self.drain_seconds:.1f}s"
        )


class OpenLoop:
    """Posts message ``i`` at ``t0 + i / rate`` for ``seconds``, each in its own task."""

    def __init__(self, url: str, headers: dict[str, str], rate: float, seconds: float) -> None:
        self.url = url
        self.headers = {**headers, "Content-Type": "application/json"}
        self.rate = rate
        self.seconds = seconds
        self.template = rma_template()
        self.due: dict[str, float] = {}
        """Order -> the wall-clock time its message was due."""
        self.acked: set[str] = set()
        self.errors: list[str] = []
        self.shed = 0
        """503s: the daemon's inbox backpressure (nothing stored; Optoro retries them)."""
        self.lags: list[float] = []

    async def _post(self, session: aiohttp.ClientSession, n: int, due: float) -> None:
        body = rma_body(self.template, n)
        self.lags.append((time.time() - due) * 1000)
        try:
            async with session.post(self.url, data=body, headers=self.headers) as response:
                await response.read()
                if 200 <= response.status < 300:
                    self.acked.add(order_of(n))
                elif response.status == 503 and "Retry-After" in response.headers:
                    self.shed += 1
                else:
                    self.errors.append(f"{response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.errors.append(type(exc).__name__)

    async def run(self, session: aiohttp.ClientSession, at_quarter: asyncio.Event) -> None:
        total = round(self.rate * self.seconds)
        tasks: set[asyncio.Task[None]] = set()
        start_wall, start = time.time(), time.monotonic()
        for n in range(total):
            offset = n / self.rate
            delay = start + offset - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if not at_quarter.is_set() and offset >= self.seconds / 4:
                at_quarter.set()
            due = start_wall + offset
            self.due[order_of(n)] = due
            task = asyncio.create_task(self._post(session, n, due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        end = start + self.seconds - time.monotonic()
        if end > 0:
            await asyncio.sleep(end)
        at_quarter.set()
        if tasks:
            await asyncio.wait(tasks, timeout=60)


async def run_round(
    rate: float,
    seconds: float,
    *,
    pin: bool = True,
    drain_idle: float = 15.0,
    folder: Path | None = None,
    on_daemon: Callable[[int], Coroutine[Any, Any, None]] | None = None,
    tree: Path = REPO,
) -> RoundResult:
    """One round at ``rate`` RMA/s for ``seconds`` against a fresh daemon and sandboxes.
    ``pin``: on 2+ CPUs the daemon gets CPU 0, the sandboxes and this sender CPU 1.
    ``tree``: the checkout whose daemon runs (its ``.venv``; default this one), so that two
    trees can be measured side by side in one run.
    ``on_daemon(pid)`` (optional coroutine function) runs while the load runs (a profiler)."""
    result = RoundResult(rate, seconds)
    cpus = os.sched_getaffinity(0)
    pin = pin and len(cpus) >= 2
    daemon_cpus, other_cpus = ({min(cpus)}, cpus - {min(cpus)}) if pin else (None, None)
    if other_cpus:
        os.sched_setaffinity(0, other_cpus)
    with contextlib.ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="e2e-")))
        port = free_port()
        notification_url = f"http://127.0.0.1:{port}/retailers/{RETAILER}/kibo/notifications"
        sandboxes = await Sandboxes.start(notification_url, other_cpus)
        daemon: asyncio.subprocess.Process | None = None
        try:
            config = folder / "bridge.toml"
            config.write_text(
                config_text(
                    folder / "bridge.db", port, sandboxes.urls["kibo"], sandboxes.urls["optoro"]
                )
            )
            log = folder / "daemon.log"
            daemon = await spawn_daemon(config, log, ENV, tree=tree)
            if daemon_cpus:
                os.sched_setaffinity(daemon.pid, daemon_cpus)
            assert daemon.stdout is not None
            line = await asyncio.wait_for(daemon.stdout.readline(), 30)
            if b"listening on" not in line:
                raise AssertionError(f"daemon did not start: {line!r}\n{log.read_text()[-3000:]}")
            result.daemon_pid = daemon.pid
            base = f"http://127.0.0.1:{port}"
            loop = await _load(result, daemon.pid, sandboxes, base, on_daemon)
            await _drain(result, sandboxes, drain_idle)
            await _judge(result, loop, sandboxes, folder)
        finally:
            if daemon is not None:
                if daemon.returncode is None:
                    daemon.terminate()
                assert daemon.stdout is not None
                await daemon.stdout.read()
                await asyncio.wait_for(daemon.wait(), 30)
            await sandboxes.stop()
            if other_cpus:
                os.sched_setaffinity(0, cpus)
        text = (folder / "daemon.log").read_text(errors="replace")
        result.tracebacks = text.count("Traceback (most recent call last)")
    return result


async def _load(
    result: RoundResult,
    pid: int,
    sandboxes: Sandboxes,
    base: str,
    on_daemon: Callable[[int], Coroutine[Any, Any, None]] | None,
) -> OpenLoop:
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # the URL and headers Optoro's webhook carries, as the scenario player sends them
        player = ScenarioPlayer(
            base, RETAILER, BasicAuth(WEBHOOK_USER, WEBHOOK_PASSWORD), OPTITURN_ID, 3, session
        )
        loop = OpenLoop(
            f"{player.base}/rmas", player.headers_for("rma"), result.rate, result.seconds
        )
        # warm the connection pool and the daemon's first request
        async with session.get(f"{base}/healthz") as response:
            await response.read()
        at_quarter = asyncio.Event()
        profiler = asyncio.create_task(on_daemon(pid)) if on_daemon else None
        cpu0, sandbox0, own0, busy0, wall0 = (
            cpu_seconds(pid),
            await sandboxes.ask("cpu"),
            own_cpu(),
            machine_busy(),
            time.monotonic(),
        )
        sender = asyncio.create_task(loop.run(session, at_quarter))
        await at_quarter.wait()
        backlog_q = len(loop.acked) - await sandboxes.ask("count")
        wall_q = time.monotonic()
        await asyncio.wait({sender}, timeout=result.seconds * 0.75 + 1)
        backlog_end = len(loop.acked) - await sandboxes.ask("count")
        wall_end = time.monotonic()
        cpu1, sandbox1, own1 = cpu_seconds(pid), await sandboxes.ask("cpu"), own_cpu()
        busy1 = machine_busy()
        await sender
        if profiler is not None:
            await profiler
    span = wall_end - wall0
    result.daemon_cpu = (cpu1 - cpu0) / span
    result.sandbox_cpu = (sandbox1 - sandbox0) / span
    result.client_cpu = (own1 - own0) / span
    ours = (cpu1 - cpu0) + (sandbox1 - sandbox0) + (own1 - own0)
    result.other_cpu = max(0.0, (busy1 - busy0) - ours) / span
    result.backlog_growth = (backlog_end - backlog_q) / max(wall_end - wall_q, 1e-9)
    result.sent = len(loop.due)
    result.acked = len(loop.acked)
    result.errors = len(loop.errors)
    result.shed = loop.shed
    result.error_samples = loop.errors[:5]
    result.start_lag_p99 = percentile(loop.lags, 0.99)
    return loop


async def _drain(result: RoundResult, sandboxes: Sandboxes, idle: float) -> None:
    """Wait until every acknowledged RMA has a create, or nothing moved for ``idle`` s."""
    started = time.monotonic()
    last, moved = -1, time.monotonic()
    while (count := await sandboxes.ask("count")) < result.acked:
        if count != last:
            last, moved = count, time.monotonic()
        elif time.monotonic() - moved > idle:
            break
        await asyncio.sleep(0.05)
    result.drain_seconds = time.monotonic() - started


async def _judge(result: RoundResult, loop: OpenLoop, sandboxes: Sandboxes, folder: Path) -> None:
    dump = folder / "creates.json"
    await sandboxes.ask(f"dump {dump}")
    rows = json.loads(dump.read_text())
    created = Counter(order for order, _, outcome, _ in rows if outcome == "created")
    first: dict[str, float] = {}
    for order, at, outcome, _ in rows:
        if outcome == "created" and order not in first:
            first[order] = at
    result.refused_creates = sum(1 for _, _, outcome, _ in rows if outcome != "created")
    result.missing = sum(1 for order in loop.acked if order not in created)
    result.duplicates = sum(n - 1 for n in created.values() if n > 1) + sum(
        1 for order in created if order not in loop.due
    )
    window_end = min(loop.due.values(), default=0.0) + result.seconds
    result.created_in_window = sum(1 for at in first.values() if at <= window_end)
    result.latencies = [
        (at - loop.due[order]) * 1000 for order, at in first.items() if order in loop.due
    ]


if __name__ == "__main__":
    asyncio.run(serve_sandboxes(sys.argv[1]))
