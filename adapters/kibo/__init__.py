"""Kibo OMS adapter: transport only (client, notification receiver, sandbox)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from adapters.kibo.config import KiboConfig
from bridge.registry import AdapterSpec
from bridge.services import RETURNS_SINK


def setup(runtime: Any, retailer: Any, config: KiboConfig) -> None:
    """Wire one retailer: returns sink and its destination, notifications, reconciliation."""
    from adapters.kibo.client import KiboReconciler, KiboReturnDestination, KiboReturnsSink
    from adapters.kibo.inbound import KiboNotifications
    from bridge.services import RETURNS_SINK, RMA_LIFECYCLE

    name = f"kibo.returns:{retailer.id}"
    destination = KiboReturnDestination(
        name,
        retailer.id,
        config,
        store=lambda: runtime.store,
        http=lambda: runtime.http,
        lifecycle=lambda: runtime.service(retailer.id, RMA_LIFECYCLE),
    )
    runtime.engine.add_destination(destination)
    runtime.provide(retailer.id, RETURNS_SINK, "kibo", KiboReturnsSink(name))
    KiboNotifications(runtime, retailer.id, config).routes()
    reconciler = KiboReconciler(runtime, retailer.id, config, destination)
    runtime.extras[("kibo", retailer.id)] = reconciler
    runtime.scheduler.add_job(
        reconciler.run_once,
        "interval",
        seconds=retailer.policy.reconcile_every,
        id=f"kibo-reconcile:{retailer.id}",
        max_instances=1,
        coalesce=True,
    )
    runtime.scheduler.add_job(  # once at start: creates whose answer a crash hid
        reconciler.find_unknown_creates,
        "date",
        run_date=datetime.now(UTC),
        misfire_grace_time=None,
        id=f"kibo-unknown-creates:{retailer.id}",
    )


def _sandbox_arguments(parser: Any) -> None:
    from adapters.kibo.sandbox.__main__ import add_arguments

    add_arguments(parser)


def _sandbox_run(args: Any) -> int:
    from adapters.kibo.sandbox.__main__ import run

    return run(args)


ADAPTER = AdapterSpec(
    name="kibo",
    config_model=KiboConfig,
    description="Kibo OMS",
    hooks={"setup": setup, "sandbox": (_sandbox_arguments, _sandbox_run)},
    capabilities=frozenset({RETURNS_SINK}),
)
