"""Store micro benchmark: the inbox handling transaction on ``SqliteStore``, before/after.

One *typical inbox handling transaction* is what the engine's worker does for one item:
``lease_inbox`` (one item), then one ``transaction()`` holding ``get_entity`` x3,
``put_entity`` x2, ``add_effect`` and ``finish_inbox`` (the commit fsynced: WAL,
``synchronous=FULL``). Each round runs in a fresh process on a fresh database file: it
accepts ``--tx`` items (group-committed, not timed), then handles them one after the other
and reports transactions/s and the process's CPU per transaction (all threads: the event
loop and the store's thread).

``--mode engine`` runs the same statements as an engine inbox handler and drives
``Engine.process_available`` (lease a batch, handle it) until the inbox is empty: items/s
and CPU per item as the daemon's worker handles them.

Two sides, alternated round by round in one run (the first side swaps every round):

* ``before``: the checkout given by ``--before-root`` run by ``--before-python``
  (default: ``/work/wt/base12``, main before this work, with its own virtualenv);
* ``after``: this checkout, run by this interpreter.

    python bench/store_tx.py [--mode tx|engine] [--rounds 5] [--tx 3000] [--before-root DIR]
                             [--before-python PY] [--only after]

A child (``--child ROOT``) imports ``bridge`` from ``ROOT`` and checks it did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
DEFAULT_BEFORE = Path("/work/wt/base12")


def _entity_data(i: int) -> dict[str, Any]:
    """About the size of a mapped RMA's state (~1 KB of JSON)."""
    return {
        "rma": f"RMA-{i:08d}",
        "order": f"ORD-{i:08d}",
        "status": "created",
        "currency": "USD",
        "units": [
            {"sku": f"SKU-{i}-{n}", "qty": 1, "price": 1999 + n, "reason": "too small"}
            for n in range(6)
        ],
        "customer": {"email": f"c{i}@example.test", "name": "Sam Example", "zip": "20001"},
        "notes": "x" * 200,
    }


async def _child(tx_count: int, engine_mode: bool) -> dict[str, Any]:
    from bridge.engine import Engine, HandlerContext, Outcome
    from bridge.store import InboxItem, InboxStatus, NewEffect, Transaction
    from bridge.store.sqlite import SqliteStore

    async def handle(item: InboxItem, tx: Transaction, ctx: HandlerContext) -> Outcome:
        """The same statements as the plain transaction, as an engine handler."""
        await tx.get_entity("retailer", "r0")
        await tx.get_entity("retailer", "r1")
        current = await tx.get_entity("rma", f"rma-{item.id}")
        version = (1,) if current is None else (current.version[0] + 1,)
        await tx.put_entity("rma", f"rma-{item.id}", version, _entity_data(item.id))
        await tx.put_entity("open", f"open-{item.id}", (1,), {"rma": item.id})
        effect = NewEffect(
            f"kibo.return:{item.id}",
            "kibo.returns",
            "create_return",
            {"rma": item.id, "units": _entity_data(item.id)["units"]},
            order_key=f"rma-{item.id}",
            retailer="bench",
        )
        return Outcome(effects=[effect])

    with tempfile.TemporaryDirectory(prefix="store-tx-") as tmp:
        store = SqliteStore(Path(tmp) / "bench.db")
        await store.open()
        engine = Engine(store)
        engine.add_handler("optoro.rmas", handle)
        try:
            for start in range(0, tx_count, 500):
                await asyncio.gather(
                    *(
                        store.accept(
                            "bench:optoro.rmas", f"k{i}", json.dumps(_entity_data(i)).encode(), {}
                        )
                        for i in range(start, min(tx_count, start + 500))
                    )
                )
            for i in range(3):  # the entities every transaction reads
                async with store.transaction() as tx:
                    await tx.put_entity("retailer", f"r{i}", (1,), _entity_data(i))
            commits_before = store.commits
            cpu0, wall0 = time.process_time(), time.perf_counter()
            done = 0
            while engine_mode:
                handled = await engine.process_available()
                if not handled:
                    break
                done += handled
            while not engine_mode:
                items = await store.lease_inbox("bench/1/1", 1, 60.0)
                if not items:
                    break
                item = items[0]
                async with store.transaction() as tx:
                    await tx.get_entity("retailer", "r0")
                    await tx.get_entity("retailer", "r1")
                    current = await tx.get_entity("rma", f"rma-{item.id}")
                    version = (1,) if current is None else (current.version[0] + 1,)
                    await tx.put_entity("rma", f"rma-{item.id}", version, _entity_data(item.id))
                    await tx.put_entity("open", f"open-{item.id}", (1,), {"rma": item.id})
                    await tx.add_effect(
                        NewEffect(
                            f"kibo.return:{item.id}",
                            "kibo.returns",
                            "create_return",
                            {"rma": item.id, "units": _entity_data(item.id)["units"]},
                            order_key=f"rma-{item.id}",
                            retailer="bench",
                            source_inbox_id=item.id,
                        )
                    )
                    await tx.finish_inbox(item.id, "bench/1/1", InboxStatus.DONE)
                done += 1
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            commits = store.commits - commits_before
            pending = await store.pending_inbox_count()
        finally:
            await store.close()
    return {"tx": done, "wall": wall, "cpu": cpu, "commits": commits, "pending": pending}


def _run_side(python: str, root: Path, tx_count: int, mode: str) -> dict[str, Any]:
    child = [str(HERE / "bench" / "store_tx.py"), "--child", str(root), "--tx", str(tx_count)]
    out = subprocess.run(
        [python, *child, "--mode", mode],
        check=True,
        capture_output=True,
        text=True,
        cwd=root,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _summary(values: list[float]) -> str:
    return f"{min(values):,.0f} / {statistics.median(values):,.0f} / {max(values):,.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tx", type=int, default=3000, help="transactions per round")
    p.add_argument("--before-root", type=Path, default=DEFAULT_BEFORE)
    p.add_argument("--before-python", default=None, help="default: BEFORE_ROOT/.venv/bin/python")
    p.add_argument("--only", choices=("before", "after"), default=None)
    p.add_argument(
        "--mode",
        choices=("tx", "engine"),
        default="tx",
        help="tx: one transaction per item, by hand; engine: Engine.process_available",
    )
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child is not None:
        sys.path.insert(0, str(args.child))
        import bridge

        if not Path(bridge.__file__).resolve().is_relative_to(args.child.resolve()):
            raise SystemExit(f"bridge imported from {bridge.__file__}, not {args.child}")
        print(json.dumps(asyncio.run(_child(args.tx, args.mode == "engine"))))
        return 0

    before_python = args.before_python or str(args.before_root / ".venv" / "bin" / "python")
    sides = {"before": (before_python, args.before_root), "after": (sys.executable, HERE)}
    names = [args.only] if args.only else ["before", "after"]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_no in range(args.rounds):
        order = names if round_no % 2 == 0 else names[::-1]
        for name in order:
            r = _run_side(*sides[name], args.tx, args.mode)
            wrong_commits = args.mode == "tx" and r["commits"] not in (2 * args.tx, 2 * args.tx + 1)
            if r["tx"] != args.tx or r["pending"] != 0 or wrong_commits:
                raise SystemExit(f"{name}: wrong outcome {r}")
            results[name].append(r)
            print(
                f"round {round_no + 1} {name:6} {r['tx'] / r['wall']:8,.0f} tx/s"
                f"  {r['cpu'] / r['tx'] * 1e6:6,.0f} us CPU/tx  ({r['commits']} commits)",
                flush=True,
            )
    print(f"\nmode {args.mode}: {args.tx:,} items per round, {args.rounds} rounds")
    print("| side | items/s (min / median / max) | CPU us per item (min / median / max) |")
    print("|---|---:|---:|")
    for name, rounds in results.items():
        rate = [r["tx"] / r["wall"] for r in rounds]
        cpu = [r["cpu"] / r["tx"] * 1e6 for r in rounds]
        print(f"| {name} | {_summary(rate)} | {_summary(cpu)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
