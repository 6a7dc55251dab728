"""``returns-bridge sandbox <platform>``: run an adapter's fake platform on loopback.

An adapter offers a sandbox through its ``sandbox`` (a :class:`bridge.ports.SandboxCommand`).
"""

from __future__ import annotations

import argparse
import sys

from bridge.cli import register_command
from bridge.registry import load_registry


def _configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="platform", required=True)
    for spec in load_registry().specs():
        sandbox = spec.sandbox
        if sandbox is None:
            continue
        platform = sub.add_parser(spec.name, help=f"a fake {spec.description} on loopback")
        sandbox.add_arguments(platform)
        platform.set_defaults(sandbox_run=sandbox.run)


def _run(args: argparse.Namespace) -> int:
    run = getattr(args, "sandbox_run", None)
    if run is None:  # pragma: no cover - argparse requires the platform
        print("name a platform", file=sys.stderr)
        return 2
    result: int = run(args)
    return result


register_command(
    "sandbox", "run a platform's sandbox (a faithful fake) on loopback", _configure, _run
)
