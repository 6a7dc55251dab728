"""The port contract of every built-in adapter, checked on the adapter as the daemon wires it.

Each built-in adapter is set up from ``config.example.toml`` exactly as ``returns-bridge run``
does (``build_runtime``); what it provides must implement the port's protocol, every route it
mounts must live under its own prefix, its sandbox must be a working command, and its setup
signature must be typed without ``Any``.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path

import pytest

from bridge.app import Runtime, build_runtime
from bridge.config import load_config
from bridge.errors import ConfigError
from bridge.ports import (
    CATALOG,
    EXCHANGE_ORDER_SINK,
    ORDER_PUBLISHER,
    ORDER_SOURCE,
    RETURNS_SINK,
    AdapterSpec,
    CatalogSource,
    ExchangeOrderSink,
    OrderPublisher,
    OrderSource,
    ReturnsSink,
)
from bridge.registry import AdapterRegistry, load_registry
from tests.test_config_routes import EXAMPLE, EXAMPLE_ENV

BUILT_IN = ("kibo", "optoro", "returnlogic")
PROTOCOLS: dict[str, type] = {
    CATALOG.name: CatalogSource,
    EXCHANGE_ORDER_SINK.name: ExchangeOrderSink,
    ORDER_PUBLISHER.name: OrderPublisher,
    ORDER_SOURCE.name: OrderSource,
    RETURNS_SINK.name: ReturnsSink,
}


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Runtime:
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    return build_runtime(load_config(EXAMPLE))


def test_the_built_in_adapters_are_installed_through_the_entry_point_group() -> None:
    assert set(BUILT_IN) <= set(load_registry().names())


@pytest.mark.parametrize("name", BUILT_IN)
def test_setup_is_typed_without_any(name: str) -> None:
    spec = load_registry().get(name)
    assert isinstance(spec, AdapterSpec)
    signature = inspect.signature(spec.setup)
    annotations = [str(p.annotation) for p in signature.parameters.values()]
    assert len(annotations) == 3, annotations
    assert annotations[:2] == ["AdapterContext", "RetailerConfig"]
    assert annotations[2] == spec.config_model.__name__
    assert all("Any" not in a for a in [*annotations, str(signature.return_annotation)])


@pytest.mark.parametrize("name", BUILT_IN)
def test_what_an_adapter_provides_implements_the_port(runtime: Runtime, name: str) -> None:
    provided = {
        capability: providers[name]
        for (_, capability), providers in runtime.services.items()
        if name in providers
    }
    assert provided, f"{name} provides nothing in the example configuration"
    for capability, service in provided.items():
        assert capability in load_registry().get(name).capabilities
        assert isinstance(service, PROTOCOLS[capability]), (name, capability)


@pytest.mark.parametrize("name", BUILT_IN)
def test_an_adapter_mounts_routes_only_under_its_own_prefix(runtime: Runtime, name: str) -> None:
    retailers = sorted(r for r, c in runtime.config.retailers.items() if name in c.platforms)
    mine = [r.path for r in runtime.routes if f"/{name}/" in r.path]
    assert mine, f"{name} mounts no route"
    assert all(
        any(path.startswith(f"/retailers/{r}/{name}/") for r in retailers) for path in mine
    ), mine


@pytest.mark.parametrize("name", BUILT_IN)
def test_a_sandbox_is_a_working_command(name: str) -> None:
    sandbox = load_registry().get(name).sandbox
    assert sandbox is not None
    parser = argparse.ArgumentParser(prog=f"returns-bridge sandbox {name}")
    sandbox.add_arguments(parser)
    args = parser.parse_args(["--port", "0"])
    assert args.port == 0


def test_the_registry_refuses_a_second_adapter_of_one_name(tmp_path: Path) -> None:
    spec = load_registry().get("kibo")
    with pytest.raises(ConfigError, match="registered twice"):
        AdapterRegistry([spec, spec])
    with pytest.raises(ConfigError, match="installed adapters: kibo, optoro, returnlogic"):
        load_registry().get("shopify")
