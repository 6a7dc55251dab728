"""Adapters are found through the ``returns_bridge.adapters`` entry-point group.

Built-in adapters are registered the same way as third-party ones (see pyproject.toml), so
``bridge`` never imports a concrete platform. An entry point names an :class:`AdapterSpec`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from bridge.errors import ConfigError

ENTRY_POINT_GROUP = "returns_bridge.adapters"


@dataclass(frozen=True)
class AdapterSpec:
    """What a platform adapter offers the core.

    ``config_model`` validates the retailer's ``[retailers.<id>.<name>]`` table.
    ``hooks`` is an open mapping of hook name to callable (setup, sandbox factory); the
    core looks hooks up by name and never by platform.

    ``capabilities`` declares, statically, every port of :mod:`bridge.services` the adapter
    can provide (``runtime.provide``); ``provides``, when given, narrows that to what one
    retailer's validated config turns on (e.g. a catalog that can be disabled). ``check``
    validates ``[retailers.<id>.routes]`` against these declarations without starting
    anything, so an adapter must never provide a capability it does not declare.
    """

    name: str
    config_model: type[BaseModel]
    description: str = ""
    hooks: dict[str, Any] = field(default_factory=dict)
    capabilities: frozenset[str] = frozenset()
    provides: Callable[[BaseModel], Iterable[str]] | None = None

    def provided(self, config: BaseModel) -> frozenset[str]:
        """The capabilities this adapter provides for a retailer configured with ``config``."""
        if self.provides is None:
            return self.capabilities
        return frozenset(self.provides(config)) & self.capabilities


class AdapterRegistry:
    """Named adapters; refuses duplicates and names the installed ones for an unknown name."""

    def __init__(self, specs: Iterable[AdapterSpec] = ()) -> None:
        self._specs: dict[str, AdapterSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: AdapterSpec) -> None:
        from bridge.services import CAPABILITIES, CORE_PROVIDER

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

    def get(self, name: str) -> AdapterSpec:
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

    def specs(self) -> list[AdapterSpec]:
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
