"""``returns-bridge demo``: every flow on loopback, with sandboxes and SQLite, no accounts."""

from __future__ import annotations

import argparse

from bridge.cli import register_command


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="play every scenario, then exit")
    parser.add_argument("--orders", type=int, default=300, help="seeded ReturnLogic orders")
    parser.add_argument("--port", type=int, default=0, help="daemon port (0: a free one)")
    parser.add_argument("--scenario", type=int, action="append", help="play only these")


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from demo.run import demo

    return asyncio.run(demo(once=args.once, orders=args.orders, port=args.port, only=args.scenario))


register_command("demo", "run everything on loopback with sandboxes and SQLite", _configure, _run)
