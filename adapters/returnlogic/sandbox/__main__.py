"""``python -m adapters.returnlogic.sandbox --port 8090 --orders 1000 --seed 1``: serve a fake
ReturnLogic until Ctrl-C.

:func:`add_arguments` and :func:`run` are what a ``returns-bridge sandbox returnlogic``
sub-command needs (``add_arguments(parser)`` and ``run(args) -> int``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from adapters.returnlogic.sandbox.server import DEFAULT_TEAM, Knobs, serve_forever

__all__ = ["add_arguments", "main", "run"]


def _anchor(text: str) -> datetime:
    if text == "now":
        return datetime.now(UTC)
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sandbox's options (address, OAuth app, data, rate windows, faults, webhooks)."""
    defaults = Knobs()
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port to bind (0 = a free one)")
    parser.add_argument("--client-id", default=defaults.client_id, help="OAuth client id")
    parser.add_argument(
        "--client-secret", default=defaults.client_secret, help="OAuth client secret"
    )
    parser.add_argument("--redirect-url", default=None, help="the app's OAuth redirect URL")
    parser.add_argument(
        "--token-ttl", type=float, default=defaults.token_ttl, help="bearer lifetime, s"
    )
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        help="a bearer token that never expires, for --team-id (repeatable)",
    )
    parser.add_argument("--team-id", default=DEFAULT_TEAM, help="team of the generated data")
    parser.add_argument("--orders", type=int, default=0, help="orders to generate")
    parser.add_argument("--products", type=int, default=None, help="products to generate")
    parser.add_argument("--rmas", type=int, default=None, help="RMAs (default orders / 10)")
    parser.add_argument("--seed", type=int, default=0, help="data and fault RNG seed")
    parser.add_argument(
        "--anchor",
        type=_anchor,
        default=None,
        help="'now' or ISO date the 180 days of data end at (default 2025-01-01T00:00:00Z)",
    )
    parser.add_argument(
        "--rate-limit-second", type=int, default=defaults.rate_limit_second, help="per key"
    )
    parser.add_argument(
        "--rate-limit-minute", type=int, default=defaults.rate_limit_minute, help="per key"
    )
    parser.add_argument("--no-rate-limit", action="store_true", help="never answer 429")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 500")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="webhooks lost")
    parser.add_argument("--duplicate-rate", type=float, default=0.0, help="webhooks sent twice")
    parser.add_argument(
        "--delivery-jitter", type=float, default=0.0, help="random webhook delay, s (reorders)"
    )
    parser.add_argument(
        "--max-failures",
        type=int,
        default=defaults.max_failures,
        help="failed deliveries that deactivate a registration",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM with the options of :func:`add_arguments`."""
    knobs: dict[str, Any] = {
        "client_id": args.client_id,
        "client_secret": args.client_secret,
        "redirect_url": args.redirect_url,
        "token_ttl": args.token_ttl,
        "seed": args.seed,
        "rate_limit_second": args.rate_limit_second,
        "rate_limit_minute": args.rate_limit_minute,
        "rate_limit_enabled": not args.no_rate_limit,
        "error_rate": args.error_rate,
        "latency": args.latency,
        "drop_rate": args.drop_rate,
        "duplicate_rate": args.duplicate_rate,
        "delivery_jitter": args.delivery_jitter,
        "max_failures": args.max_failures,
    }
    generate = {
        "orders": args.orders,
        "products": args.products,
        "rmas": args.rmas,
        "seed": args.seed,
        "team_id": args.team_id,
        "anchor": args.anchor,
    }
    api_keys = {key: args.team_id for key in args.api_key}
    return serve_forever(args.host, args.port, generate=generate, api_keys=api_keys, **knobs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.returnlogic.sandbox",
        description="Serve a fake ReturnLogic on loopback.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
