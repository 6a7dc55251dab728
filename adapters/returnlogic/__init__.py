"""ReturnLogic adapter: transport only (client, inbound handlers, sandbox)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from adapters.returnlogic.config import ReturnLogicConfig
from bridge.ports import (
    CATALOG,
    EXCHANGE_ORDER_SINK,
    ORDER_SOURCE,
    AdapterContext,
    AdapterSpec,
    SharedKey,
)

if TYPE_CHECKING:
    from adapters.returnlogic.client import RlTeam
    from bridge.config import RetailerConfig


def team_key(team_id: str) -> SharedKey[RlTeam]:
    """One :class:`RlTeam` (tokens, rate governor) per ReturnLogic team, shared by the
    retailers that use it."""
    return SharedKey(f"returnlogic.team:{team_id}")


def setup(ctx: AdapterContext, retailer: RetailerConfig, config: ReturnLogicConfig) -> None:
    """Wire one retailer: the team (tokens, governor), the OAuth callback, readiness."""
    from adapters.returnlogic.client import RlTeam
    from adapters.returnlogic.inbound import RlCallback
    from bridge.errors import ConfigError
    from bridge.vault import TokenVault, key_from_env

    def make_team() -> RlTeam:
        key, problem = None, None
        if config.static_token is None:
            try:
                key = key_from_env(config.token_key_env)
            except ConfigError as exc:
                problem = str(exc)
        team = RlTeam(
            config,
            http=lambda: ctx.http,
            vault=lambda: TokenVault(ctx.store, key) if key is not None else None,
        )
        team.broken = problem
        return team

    team = ctx.shared(team_key(config.team_id), make_team)
    RlCallback(ctx, retailer.id, team, config).routes()

    async def ready() -> str | None:
        return team.broken

    ctx.add_readiness(f"returnlogic:{retailer.id}", ready)

    from adapters.returnlogic import backfill_jobs, catalog, orders, rmas

    orders.setup(ctx, retailer, config, team)
    backfill_jobs.setup(ctx, retailer)
    rmas.setup(ctx, retailer, config, team)
    catalog.setup(ctx, retailer, config, team)


class Sandbox:
    """``returns-bridge sandbox returnlogic``."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from adapters.returnlogic.sandbox.__main__ import add_arguments

        add_arguments(parser)

    def run(self, args: argparse.Namespace) -> int:
        from adapters.returnlogic.sandbox.__main__ import run

        return run(args)


def _provides(config: ReturnLogicConfig) -> frozenset[str]:
    """The catalog, the exchange-order sink and the order source (re-reads of an order),
    each unless disabled in its table."""
    enabled = {
        CATALOG.name: config.catalog.enabled,
        EXCHANGE_ORDER_SINK.name: config.exchange_orders.enabled,
        ORDER_SOURCE.name: config.orders.enabled,
    }
    return frozenset(capability for capability, on in enabled.items() if on)


ADAPTER = AdapterSpec(
    name="returnlogic",
    config_model=ReturnLogicConfig,
    setup=setup,
    description="ReturnLogic",
    capabilities=frozenset({CATALOG.name, EXCHANGE_ORDER_SINK.name, ORDER_SOURCE.name}),
    provides=_provides,
    sandbox=Sandbox(),
)
