"""Adapters are found through the ``returns_bridge.adapters`` entry-point group.

Built-in adapters are registered the same way as third-party ones (see pyproject.toml), so
``bridge`` never imports a concrete platform. An entry point names an
:class:`bridge.ports.AdapterSpec`.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import entry_points

from bridge.errors import ConfigError
from bridge.ports import CAPABILITIES, CORE_PROVIDER, Adapter, AdapterSpec

ENTRY_POINT_GROUP = "returns_bridge.adapters"


class AdapterRegistry:
    """Named adapters; refuses duplicates and names the installed ones for an unknown name."""

    def __init__(self, specs: Iterable[Adapter] = ()) -> None:
        self._specs: dict[str, Adapter] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: Adapter) -> None:
        if spec.name in self._specs:
            raise ConfigError(f"adapter {spec.name!r} is registered twice")
        if spec.name == CORE_PROVIDER:
            raise ConfigError(f"adapter name {spec.name!r} is reserved for the core")
        unknown = sorted(spec.capabilities - CAPABILITIES)
        if unknown:
            raise ConfigError(
                f"adapter {spec.name!r} declares unknown capabilities {', '.join(unknown)};"
                f" known: {', '.join(sorted(CAPABILITIES))}"
            )
        self._specs[spec.name] = spec

    def get(self, name: str) -> Adapter:
        try:
            return self._specs[name]
        except KeyError:
            raise ConfigError(
                f"unknown adapter {name!r}; installed adapters: {', '.join(self.names()) or 'none'}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[Adapter]:
        return [self._specs[n] for n in self.names()]


def load_registry() -> AdapterRegistry:
    """Every adapter installed under the ``returns_bridge.adapters`` entry-point group."""
    registry = AdapterRegistry()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        spec = ep.load()
        if not isinstance(spec, AdapterSpec):
            raise ConfigError(f"entry point {ep.name!r} does not name an AdapterSpec")
        if spec.name != ep.name:
            raise ConfigError(f"entry point {ep.name!r} names adapter {spec.name!r}")
        registry.register(spec)
    return registry
