"""Kibo OMS adapter: transport only (client, notification receiver, sandbox)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from adapters.kibo.config import KiboConfig
from bridge.policy import ConfirmRefund
from bridge.ports import RETURNS_SINK, RMA_LIFECYCLE, AdapterContext, AdapterSpec

if TYPE_CHECKING:
    from bridge.config import RetailerConfig


def setup(ctx: AdapterContext, retailer: RetailerConfig, config: KiboConfig) -> None:
    """Wire one retailer: returns sink and its destination, notifications, reconciliation."""
    from adapters.kibo.client import (
        KiboReconciler,
        KiboReturnDestination,
        KiboReturnRead,
        KiboReturnsSink,
        reconciler_key,
    )
    from adapters.kibo.inbound import KiboNotifications

    name = f"kibo.returns:{retailer.id}"
    destination = KiboReturnDestination(
        name,
        retailer.id,
        config,
        store=lambda: ctx.store,
        http=lambda: ctx.http,
        lifecycle=lambda: ctx.service(retailer.id, RMA_LIFECYCLE),
    )
    ctx.engine.add_destination(destination)
    read = KiboReturnRead(
        f"kibo.returns.get:{retailer.id}",
        retailer.id,
        config,
        http=lambda: ctx.http,
        store=lambda: ctx.store,
        lifecycle=lambda: ctx.service(retailer.id, RMA_LIFECYCLE),
    )
    ctx.engine.add_destination(read)
    ctx.provide(retailer.id, RETURNS_SINK, "kibo", KiboReturnsSink(name))
    # the refund follows Kibo's word only when it is confirmed on clearing: read it back then
    reads_back = retailer.policy.confirm_refund is ConfirmRefund.ON_RETURN_CLEARED
    KiboNotifications(
        ctx, retailer.id, config, read_destination=read.name if reads_back else None
    ).routes()
    reconciler = ctx.shared(
        reconciler_key(retailer.id),
        lambda: KiboReconciler(ctx, retailer.id, config, destination),
    )
    ctx.jobs.every(
        f"kibo-reconcile:{retailer.id}", reconciler.run_once, retailer.policy.reconcile_every
    )
    # once at start: creates whose answer a crash hid
    ctx.jobs.once(f"kibo-unknown-creates:{retailer.id}", reconciler.find_unknown_creates)


class Sandbox:
    """``returns-bridge sandbox kibo``."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from adapters.kibo.sandbox.__main__ import add_arguments

        add_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        from adapters.kibo.sandbox.__main__ import run

        return run(args)


ADAPTER = AdapterSpec(
    name="kibo",
    config_model=KiboConfig,
    setup=setup,
    description="Kibo OMS",
    capabilities=frozenset({RETURNS_SINK.name}),
    sandbox=Sandbox(),
)
