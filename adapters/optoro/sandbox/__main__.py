"""``python -m adapters.optoro.sandbox --port 8089``: serve a fake Optoro until Ctrl-C.

:func:`add_arguments` and :func:`run` are what a ``returns-bridge sandbox optoro`` sub-command
needs (``configure(parser)`` and ``run(args) -> int``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from adapters.optoro.sandbox.server import Knobs, serve_forever

__all__ = ["add_arguments", "main", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sandbox's options (host, port, credentials, token lifetime, faults)."""
    defaults = Knobs()
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8089, help="port to bind (0 = a free one)")
    parser.add_argument("--client-id", default=defaults.client_id, help="OAuth client id")
    parser.add_argument(
        "--client-secret", default=defaults.client_secret, help="OAuth client secret"
    )
    parser.add_argument(
        "--token-ttl", type=int, default=defaults.token_ttl, help="expires_in of tokens, s"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="fault RNG seed")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction answered 500")
    parser.add_argument(
        "--rate-limit-rate", type=float, default=0.0, help="fraction answered a bare 429"
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answering")
    parser.add_argument(
        "--no-validation", action="store_true", help="accept bodies without validating them"
    )
    parser.add_argument(
        "--strict", action="store_true", help="refuse (422) header-sum and refund-change warnings"
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM with the options of :func:`add_arguments`."""
    knobs: dict[str, Any] = {
        "client_id": args.client_id,
        "client_secret": args.client_secret,
        "token_ttl": args.token_ttl,
        "seed": args.seed,
        "error_rate": args.error_rate,
        "rate_limit_rate": args.rate_limit_rate,
        "latency": args.latency,
        "validation": not args.no_validation,
        "strict": args.strict,
    }
    return serve_forever(args.host, args.port, **knobs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.optoro.sandbox", description="Serve a fake Optoro on loopback."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
