"""ReturnLogic adapter: transport only (client, inbound handlers, sandbox)."""

from __future__ import annotations

from typing import Any

from adapters.returnlogic.config import ReturnLogicConfig
from bridge.registry import AdapterSpec


def _sandbox_arguments(parser: Any) -> None:
    from adapters.returnlogic.sandbox.__main__ import add_arguments

    add_arguments(parser)


def _sandbox_run(args: Any) -> int:
    from adapters.returnlogic.sandbox.__main__ import run

    return run(args)


ADAPTER = AdapterSpec(
    name="returnlogic",
    config_model=ReturnLogicConfig,
    description="ReturnLogic",
    hooks={"sandbox": (_sandbox_arguments, _sandbox_run)},
)
