"""Optoro Returns Experience adapter: transport only (client, inbound handlers, sandbox)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from adapters.optoro.config import OptoroConfig
from bridge.ports import ORDER_PUBLISHER, AdapterContext, AdapterSpec

if TYPE_CHECKING:
    from bridge.config import RetailerConfig


def setup(ctx: AdapterContext, retailer: RetailerConfig, config: OptoroConfig) -> None:
    """Wire one retailer: RPO destination and publisher, inbound routes, RMA handler."""
    from adapters.optoro.client import OptoroAuth, RpoDestination, RpoPublisher
    from adapters.optoro.inbound import OptoroInbound, inbound_key

    destination = f"optoro.rpo:{retailer.id}"
    auth = OptoroAuth(config, lambda: ctx.http)
    ctx.engine.add_destination(
        RpoDestination(destination, config, auth, lambda: ctx.http, lambda: ctx.store)
    )
    ctx.provide(
        retailer.id, ORDER_PUBLISHER, "optoro", RpoPublisher(retailer.id, destination, config)
    )
    ctx.shared(inbound_key(retailer.id), lambda: OptoroInbound(ctx, retailer.id, config)).routes()


class Sandbox:
    """``returns-bridge sandbox optoro``."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from adapters.optoro.sandbox.__main__ import add_arguments

        add_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        from adapters.optoro.sandbox.__main__ import run

        return run(args)


ADAPTER = AdapterSpec(
    name="optoro",
    config_model=OptoroConfig,
    setup=setup,
    description="Optoro Returns Experience",
    capabilities=frozenset({ORDER_PUBLISHER.name}),
    sandbox=Sandbox(),
)
