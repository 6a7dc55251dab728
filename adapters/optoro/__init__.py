"""Optoro Returns Experience adapter: transport only (client, inbound handlers, sandbox)."""

from __future__ import annotations

from typing import Any

from adapters.optoro.config import OptoroConfig
from bridge.registry import AdapterSpec
from bridge.services import ORDER_PUBLISHER


def setup(runtime: Any, retailer: Any, config: OptoroConfig) -> None:
    """Wire one retailer: RPO destination and publisher, inbound routes, RMA handler."""
    from adapters.optoro.client import OptoroAuth, RpoDestination, RpoPublisher
    from adapters.optoro.inbound import OptoroInbound
    from bridge.services import ORDER_PUBLISHER

    def http() -> Any:
        return runtime.http

    destination = f"optoro.rpo:{retailer.id}"
    auth = OptoroAuth(config, http)
    runtime.engine.add_destination(RpoDestination(destination, config, auth, http))
    runtime.provide(
        retailer.id, ORDER_PUBLISHER, "optoro", RpoPublisher(retailer.id, destination, config)
    )
    inbound = OptoroInbound(runtime, retailer.id, config)
    inbound.routes()
    runtime.extras[("optoro", retailer.id)] = inbound


def _sandbox_arguments(parser: Any) -> None:
    from adapters.optoro.sandbox.__main__ import add_arguments

    add_arguments(parser)


def _sandbox_run(args: Any) -> int:
    from adapters.optoro.sandbox.__main__ import run

    return run(args)


ADAPTER = AdapterSpec(
    name="optoro",
    config_model=OptoroConfig,
    description="Optoro Returns Experience",
    hooks={"setup": setup, "sandbox": (_sandbox_arguments, _sandbox_run)},
    capabilities=frozenset({ORDER_PUBLISHER}),
)
