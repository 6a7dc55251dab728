"""``python -m adapters.kibo.sandbox --port 8091``: serve a fake Kibo OMS until Ctrl-C.

:func:`add_arguments` and :func:`run` are what a ``returns-bridge sandbox kibo`` sub-command
needs (``configure(parser)`` and ``run(args) -> int``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from adapters.kibo.sandbox.server import Knobs, serve_forever

__all__ = ["add_arguments", "main", "run"]


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError("expected NAME:VALUE, e.g. 'Authorization: Bearer abc'")
    return name.strip(), value.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sandbox's options (host, port, credentials, notifications, faults)."""
    defaults = Knobs()
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8091, help="port to bind (0 = a free one)")
    parser.add_argument(
        "--auth", choices=["bearer", "basic"], default=defaults.auth, help="accepted auth scheme"
    )
    parser.add_argument("--token", default=defaults.token, help="bearer token")
    parser.add_argument("--username", default=defaults.username, help="basic auth user")
    parser.add_argument("--password", default=defaults.password, help="basic auth password")
    parser.add_argument("--notification-url", default=None, help="where notifications are sent")
    parser.add_argument(
        "--notification-header",
        type=_header,
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="header sent with notifications (repeatable)",
    )
    parser.add_argument(
        "--drop-notifications", action="store_true", help="record notifications, never send"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="fault RNG seed")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 500")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answering")
    parser.add_argument(
        "--no-validation", action="store_true", help="accept bodies without validating them"
    )
    parser.add_argument(
        "--assign-return-ids",
        action="store_true",
        help="ignore a client's returnID and assign the next free one (a tenant that does not"
        " keep client ids)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM with the options of :func:`add_arguments`."""
    knobs: dict[str, Any] = {
        "auth": args.auth,
        "token": args.token,
        "username": args.username,
        "password": args.password,
        "notification_url": args.notification_url,
        "notification_headers": dict(args.notification_header),
        "drop_notifications": args.drop_notifications,
        "seed": args.seed,
        "error_rate": args.error_rate,
        "latency": args.latency,
        "validation": not args.no_validation,
        "honour_return_id": not args.assign_return_ids,
    }
    return serve_forever(args.host, args.port, **knobs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.kibo.sandbox", description="Serve a fake Kibo OMS on loopback."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
