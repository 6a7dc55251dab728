"""``returns-bridge returnlogic install-url --retailer ID --config PATH``.

Prints the URL an operator sends to a retailer to install the ReturnLogic app: the
retailer's ``[returnlogic.install] authorize_url`` with, as OAuth 2.0 asks (RFC 6749
4.1.1; ReturnLogic's documents show only the redirect back), ``response_type=code``,
``client_id``, ``redirect_uri`` when ``redirect_url`` is set, and a ``state`` signed for
this retailer and its team (:mod:`bridge.oauthstate`). The state is valid for
``state_ttl`` seconds and accepted once by the callback; nothing is stored until then, so
the command needs neither the store nor a running daemon — only the token key, in the
environment variable ``token_key_env`` names, which the daemon shares.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from adapters.returnlogic.config import ReturnLogicConfig
from adapters.returnlogic.inbound import state_signer

PLATFORM = "returnlogic"


class InstallUrlError(Exception):
    """The retailer's config does not allow an installation URL (the message says why)."""


def install_url(retailer: str, config: ReturnLogicConfig) -> str:
    """A new installation URL for ``retailer`` (a new single-use state each time)."""
    if config.static_token is not None:
        raise InstallUrlError(
            f"retailer {retailer!r} uses static_token (a private app): nothing to install"
        )
    if config.install.authorize_url is None:
        raise InstallUrlError(
            f"set authorize_url in [retailers.{retailer}.returnlogic.install]: the app's"
            " installation page, as ReturnLogic gave it"
        )
    signer = state_signer(config)
    if signer is None or config.client_id is None:  # excluded above and by the config model
        raise InstallUrlError(f"retailer {retailer!r} has no OAuth app configured")
    parts = urlsplit(str(config.install.authorize_url))
    query = [
        *parse_qsl(parts.query, keep_blank_values=True),
        ("response_type", "code"),
        ("client_id", config.client_id),
    ]
    if config.install.redirect_url is not None:
        query.append(("redirect_uri", str(config.install.redirect_url)))
    query.append(("state", signer.issue(retailer, config.team_id)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def configure(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``returns-bridge returnlogic``."""
    commands = parser.add_subparsers(dest="returnlogic_command", required=True, metavar="COMMAND")
    url = commands.add_parser(
        "install-url",
        help="print the URL a retailer installs the ReturnLogic app from",
        description=(
            "Print the URL to send to the retailer: it installs the ReturnLogic app for the"
            " retailer's configured team. It is valid for [returnlogic.install] state_ttl"
            " seconds (600) and can be used once; make a new one for every installation."
        ),
    )
    url.add_argument("--config", required=True, help="TOML file or folder of TOML files")
    url.add_argument("--retailer", required=True, help="retailer id")


def command(args: argparse.Namespace) -> int:
    """Run ``returnlogic install-url``: 0 URL printed, 2 config or arguments refused."""
    from bridge.config import load_config

    config = load_config(Path(args.config))
    retailer = config.retailers.get(args.retailer)
    if retailer is None or not retailer.enabled or PLATFORM not in retailer.platforms:
        known = ", ".join(
            sorted(r for r, c in config.retailers.items() if c.enabled and PLATFORM in c.platforms)
        )
        print(
            f"install-url: no enabled retailer {args.retailer!r} with a [returnlogic] table"
            f" (known: {known or 'none'})",
            file=sys.stderr,
        )
        return 2
    try:
        url = install_url(retailer.id, retailer.platform(PLATFORM, ReturnLogicConfig))
    except InstallUrlError as exc:
        print(f"install-url: {exc}", file=sys.stderr)
        return 2
    print(url)
    ttl = retailer.platform(PLATFORM, ReturnLogicConfig).install.state_ttl
    print(f"valid for {ttl:.0f} s, for one installation", file=sys.stderr)
    return 0


def _register() -> None:
    from bridge.cli import register_command

    register_command(PLATFORM, "ReturnLogic operations (install-url)", configure, command)


_register()
