"""ReturnLogic adapter: transport only (client, inbound handlers, sandbox)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from adapters.returnlogic.config import ReturnLogicConfig
from bridge.registry import AdapterSpec
from bridge.services import CATALOG, EXCHANGE_ORDER_SINK


def setup(runtime: Any, retailer: Any, config: ReturnLogicConfig) -> None:
    """Wire one retailer: the team (tokens, governor), the OAuth callback, readiness."""
    from adapters.returnlogic.client import RlTeam
    from adapters.returnlogic.inbound import RlCallback
    from bridge.errors import ConfigError
    from bridge.vault import TokenVault, key_from_env

    teams: dict[str, RlTeam] = runtime.extras.setdefault("returnlogic.teams", {})
    team = teams.get(config.team_id)
    if team is None:
        key, problem = None, None
        if config.static_token is None:
            try:
                key = key_from_env(config.token_key_env)
            except ConfigError as exc:
                problem = str(exc)
        team = RlTeam(
            config,
            http=lambda: runtime.http,
            vault=lambda: TokenVault(runtime.store, key) if key is not None else None,
        )
        team.broken = problem
        teams[config.team_id] = team
    runtime.extras[("returnlogic", retailer.id)] = team
    RlCallback(runtime, retailer.id, team, config).routes()

    async def ready() -> str | None:
        return team.broken

    runtime.add_readiness(f"returnlogic:{retailer.id}", ready)

    from adapters.returnlogic import backfill_jobs, catalog, orders, rmas

    orders.setup(runtime, retailer, config, team)
    backfill_jobs.setup(runtime, retailer)
    rmas.setup(runtime, retailer, config, team)
    catalog.setup(runtime, retailer, config, team)


def _sandbox_arguments(parser: Any) -> None:
    from adapters.returnlogic.sandbox.__main__ import add_arguments

    add_arguments(parser)


def _sandbox_run(args: Any) -> int:
    from adapters.returnlogic.sandbox.__main__ import run

    return run(args)


def _provides(config: BaseModel) -> frozenset[str]:
    """The catalog and the exchange-order sink, each unless disabled in its table."""
    assert isinstance(config, ReturnLogicConfig)
    enabled = {CATALOG: config.catalog.enabled, EXCHANGE_ORDER_SINK: config.exchange_orders.enabled}
    return frozenset(capability for capability, on in enabled.items() if on)


ADAPTER = AdapterSpec(
    name="returnlogic",
    config_model=ReturnLogicConfig,
    description="ReturnLogic",
    hooks={"setup": setup, "sandbox": (_sandbox_arguments, _sandbox_run)},
    capabilities=frozenset({CATALOG, EXCHANGE_ORDER_SINK}),
    provides=_provides,
)
