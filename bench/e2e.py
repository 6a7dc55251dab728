"""End to end: Optoro RMA webhook sent -> Kibo sandbox records the Create Return, open loop.

Each round is a fresh ``returns-bridge run`` daemon (SQLite in a temp dir) and a fresh sandbox
process (Kibo with notifications posted back to the daemon, and Optoro); this process posts the
guide's express-returns RMA (a new ``rma_identifier`` and order per message) to the daemon's
real route ``/retailers/<id>/optoro/rmas`` with Basic auth, at a fixed rate for ``--seconds``
(the machinery is ``tests/e2e_load.py``, also run in CI by ``tests/test_bench_e2e.py``).
Rounds alternate the rates (and the trees, with ``--trees``), so that a shared machine's noise
falls on all of them alike; each figure is shown as min/median/max over the rounds.

    .venv/bin/python bench/e2e.py                                   # the curve, 3 x 30 s each
    .venv/bin/python bench/e2e.py --rates 50,100 --seconds 10 --rounds 2
    .venv/bin/python bench/e2e.py --saturate                        # step up until backlog grows
    .venv/bin/python bench/e2e.py --trees /work/wt/base12,. --rates 100,150,200
    .venv/bin/python bench/e2e.py --rates 200 --rounds 1 --profile  # py-spy of the daemon

Reported per rate: p50/p95/p99 latency (from the message's due time, so a late sender counts
against the daemon), creates/s inside the window, backlog growth/s (acknowledged RMAs without a
create, over the window's last 3/4), daemon CPU (``/proc/<pid>/stat``, all threads, share of
one CPU) and per RMA, the sender's and the sandboxes' CPU and the sender's start lag (to show
the load generator is not the limit), and after a drain: missing and duplicate creates.
Webhooks the daemon sheds (503 with Retry-After: its inbox backlog is over
``max_inbox_backlog``; nothing is stored and Optoro retries) are counted apart, as "shed".
Exit status 1 when any acknowledged RMA is missing, any create is duplicated or any webhook
got another answer than a 2xx or that 503.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e_load import REPO, RoundResult, run_round

DEFAULT_RATES = (50, 100, 125, 150, 200, 400)
PROFILE_HZ = 200
"""py-spy's sampling rate."""
SATURATED = 0.02
"""Backlog growth beyond this share of the offered rate (and 1/s) counts as saturated."""


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    """``min / median / max`` of ``values``."""
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def saturated(result: RoundResult) -> bool:
    return result.backlog_growth > max(1.0, SATURATED * result.rate)


def table(results: list[RoundResult]) -> str:
    by_rate: dict[float, list[RoundResult]] = {}
    for r in results:
        by_rate.setdefault(r.rate, []).append(r)
    lines = [
        "| RMA/s offered | rounds | p50 ms | p95 ms | p99 ms | creates/s | backlog growth/s"
        " | daemon CPU % | daemon CPU ms/RMA | sender CPU % | sender lag p99 ms"
        " | sandboxes CPU % | other load % | shed (503) | missing | duplicates | errors |",
        "|---:|---:|---|---|---|---|---|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for rate in sorted(by_rate):
        rs = by_rate[rate]
        lines.append(
            f"| {rate:g} | {len(rs)} | {spread([r.p(0.5) for r in rs])}"
            f" | {spread([r.p(0.95) for r in rs])} | {spread([r.p(0.99) for r in rs])}"
            f" | {spread([r.creates_per_s for r in rs])}"
            f" | {spread([r.backlog_growth for r in rs], '{:+,.0f}')}"
            f" | {spread([100 * r.daemon_cpu for r in rs])}"
            f" | {spread([r.cpu_ms_per_rma for r in rs], '{:.2f}')}"
            f" | {spread([100 * r.client_cpu for r in rs])}"
            f" | {spread([r.start_lag_p99 for r in rs], '{:.1f}')}"
            f" | {spread([100 * r.sandbox_cpu for r in rs])}"
            f" | {spread([100 * r.other_cpu for r in rs])}"
            f" | {sum(r.shed for r in rs)}"
            f" | {sum(r.missing for r in rs)} | {sum(r.duplicates for r in rs)}"
            f" | {sum(r.errors for r in rs)} |"
        )
    return "\n".join(lines)


# --- profile ---------------------------------------------------------------------------------


def pyspy() -> str:
    return str(Path(sys.executable).parent / "py-spy")


def profiler(
    seconds: float, out: Path, threads: bool
) -> Callable[[int], Coroutine[Any, Any, None]]:
    """``py-spy record --format raw`` of the daemon over the middle 80% of the window: the
    thread holding the GIL, or (``threads``) every thread that is not idle, per thread."""

    async def record(pid: int) -> None:
        await asyncio.sleep(seconds * 0.1)
        proc = await asyncio.create_subprocess_exec(
            pyspy(),
            "record",
            "--pid",
            str(pid),
            *(["--threads"] if threads else ["--gil"]),
            "--rate",
            str(PROFILE_HZ),
            "--nonblocking",
            "--duration",
            str(max(1, round(seconds * 0.8))),
            "--format",
            "raw",
            "-o",
            str(out),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await proc.wait()

    return record


def frame_name(frame: str) -> str:
    """``function (path/to/file.py:123)`` -> ``function (pkg/file.py)``: lines merged."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/bridge/", "/adapters/", "/mappings/", "/lib/python3"):
        if marker in where:
            where = marker.strip("/") + "/" + where.split(marker, 1)[1]
            break
    return f"{name} ({where})"


FRAMES = {
    "<module>",
    "_run_code",
    "_run_module_as_main",
    "main",
    "cmd_run",
    "Runner.run",
    "run",
    "BaseEventLoop.run_until_complete",
    "BaseEventLoop.run_forever",
    "BaseEventLoop._run_once",
    "Handle._run",
    "Thread._bootstrap",
    "Thread._bootstrap_inner",
    "Thread.run",
    "_fix_request_current_app.<locals>.impl",
}
"""Frames every sample of the loop (or a thread) passes through: left out of the inclusive
list, which would otherwise start with them at ~100%."""


def flame_summary(raw: Path, top: int = 15, instants: int = 0) -> str:
    """Top functions by self and by inclusive share of the samples in a py-spy raw file;
    with ``--threads`` samples, also each thread's samples (named by its deepest common
    frame) as a share of ``instants`` (the sampling instants: about its CPU share)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    roles: dict[str, Counter[str]] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        parts = [f for f in stack.split(";") if f]
        if parts and parts[0].startswith("thread ("):
            thread = parts.pop(0)
            threads[thread] += n
            role = next((frame_name(f) for f in reversed(parts) if f.split(" (")[0] in ROLES), "?")
            roles.setdefault(thread, Counter())[role] += n
        frames = [frame_name(f) for f in parts]
        total += n
        if frames:
            own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    if not total:
        return "(no samples)"
    out = [f"{total:,} samples" + ("" if threads else " (GIL held)"), ""]
    if threads:
        out += ["| thread | samples | share of sampling instants |", "|---|---:|---:|"]
        for thread, n in threads.most_common(8):
            role = roles[thread].most_common(1)[0][0]
            share = f"{100 * n / instants:.0f}%" if instants else "-"
            out.append(f"| `{role}` | {n:,} | {share} |")
        out.append("")
    out += ["| self % | function |", "|---:|---|"]
    out += [f"| {100 * n / total:.1f} | `{name}` |" for name, n in own.most_common(top)]
    out += ["", "| inclusive % | function |", "|---:|---|"]
    shown = [(k, n) for k, n in inclusive.most_common(top * 4) if k.split(" (")[0] not in FRAMES]
    out += [f"| {100 * n / total:.1f} | `{name}` |" for name, n in shown[:top]]
    return "\n".join(out)


ROLES = {"cmd_run", "_connection_worker_thread", "_worker", "Thread.run"}
"""Frames that say what a thread is: the event loop, an aiosqlite connection's thread, an
executor worker."""


# --- main ------------------------------------------------------------------------------------


Profiles = list[tuple[Path, float, Path]]


async def measure(
    args: argparse.Namespace, rates: list[float], trees: list[Path], workdir: Path
) -> tuple[dict[Path, list[RoundResult]], Profiles]:
    """Every round: the rates in turn (then stepped up with ``--saturate``), each on every
    tree in turn."""
    results: dict[Path, list[RoundResult]] = {t: [] for t in trees}
    profiles: Profiles = []
    for round_no in range(args.rounds):
        plan = list(rates)
        index = 0
        while index < len(plan):
            rate = plan[index]
            index += 1
            for tree in trees:
                on_daemon = None
                if args.profile:
                    out = workdir / f"profile-{tree.name}-{rate:g}-{round_no}.txt"
                    profiles.append((tree, rate, out))
                    on_daemon = profiler(args.seconds, out, args.profile_threads)
                result = await run_round(
                    rate, args.seconds, pin=not args.no_pin, tree=tree, on_daemon=on_daemon
                )
                results[tree].append(result)
                print(f"[round {round_no + 1}, {tree.name}] {result.line()}", file=sys.stderr)
            last = [results[t][-1] for t in trees]
            if args.saturate and index == len(plan) and not all(saturated(r) for r in last):
                plan.append(round(rate * 1.25))
    return results, profiles


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def report(
    args: argparse.Namespace,
    results: dict[Path, list[RoundResult]],
    profiles: Profiles,
    wall: float,
) -> bool:
    """Print the markdown report; whether every round was correct."""
    ok = True
    print(
        f"CPU: {cpu_model()}; {len(os.sched_getaffinity(0))} CPUs; {args.rounds} rounds x"
        f" {args.seconds:g} s per rate; pinned: {not args.no_pin}; wall {wall:.0f} s\n"
    )
    for tree, rs in results.items():
        label = "this tree" if tree == REPO else str(tree)
        print(f"### {label}\n\n{table(rs)}\n")
        sat = [r for r in rs if saturated(r)]
        if sat:
            print(
                f"saturation: creates/s at the rates whose backlog grows:"
                f" {spread([r.creates_per_s for r in sat])} (offered"
                f" {', '.join(f'{r.rate:g}' for r in sat)})\n"
            )
        ok = ok and all(r.missing == 0 and r.duplicates == 0 and r.errors == 0 for r in rs)
    for tree, rate, out in profiles:
        if out.exists():
            mode = "--threads (every busy thread)" if args.profile_threads else "--gil"
            print(f"### profile: {tree.name} at {rate:g} RMA/s (py-spy {mode})\n")
            instants = round(max(1, round(args.seconds * 0.8)) * PROFILE_HZ)
            print(flame_summary(out, instants=instants) + "\n")
    if args.json:
        rows = {
            str(t): [
                {k: v for k, v in r.__dict__.items() if k != "latencies"}
                | {"p50": r.p(0.5), "p95": r.p(0.95), "p99": r.p(0.99)}
                for r in rs
            ]
            for t, rs in results.items()
        }
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print("correctness: " + ("0 missing, 0 duplicate, 0 errors in every round" if ok else "FAILED"))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)), help="RMA/s list")
    parser.add_argument("--seconds", type=float, default=30.0, help="open-loop window per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--saturate", action="store_true", help="after the rates, step up x1.25 until saturated"
    )
    parser.add_argument(
        "--trees", default=str(REPO), help="comma-separated checkouts (each with .venv) to compare"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin daemon / sender")
    parser.add_argument("--profile", action="store_true", help="py-spy the daemon in each run")
    parser.add_argument(
        "--profile-threads",
        action="store_true",
        help="with --profile: sample every busy thread (not only the GIL holder), per thread",
    )
    parser.add_argument("--json", help="write every round's figures to this file")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="e2e-bench-"))
    results, profiles = asyncio.run(measure(args, rates, trees, workdir))
    return 0 if report(args, results, profiles, time.monotonic() - started) else 1


if __name__ == "__main__":
    sys.exit(main())
