"""The Optoro guide's scenarios as data: 22 scenarios, 118 steps (``adapters/optoro/scenarios``).

The JSON files are a verbatim copy of ``shared/fixtures/optoro-scenarios`` (a test checks the
copy byte for byte). They ship as package data and are read through :mod:`importlib.resources`.

A step's ``api`` and ``title`` are kept as published, but they are not always right (scenario 10
step 1 says ``Returns Portal Orders``; scenario 15 steps 6 and 7 carry each other's titles).
What was really called is the ``path``, so :attr:`Step.kind` is derived from ``method`` and
``path``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Literal

__all__ = ["SCENARIOS_PACKAGE", "Scenario", "Step", "StepKind", "load_scenarios", "scenario"]

SCENARIOS_PACKAGE = "adapters.optoro.scenarios"
"""The package holding the scenario folders and ``index.json``."""

StepKind = Literal["returns_portal_order", "rma", "exchange_variants", "exchange_order"]

_VARIANTS_PATH = re.compile(r"^/sku/[^/]+/(?:exchange_)?variants$")


@dataclass(frozen=True)
class Step:
    """One sample call of the guide, as in its step file."""

    step: int
    method: str
    api: str
    title: str
    path: str
    request: Any
    response: Any
    file: str = field(default="", compare=False)
    """The step file's name inside its scenario folder."""

    @property
    def kind(self) -> StepKind:
        """What the call is, judged by ``method`` and ``path`` (not by the published ``api``)."""
        if self.method == "POST" and self.path == "/returns_portal_orders":
            return "returns_portal_order"
        if self.method == "POST" and self.path == "/rmas":
            return "rma"
        if self.method == "GET" and _VARIANTS_PATH.match(self.path):
            return "exchange_variants"
        if self.method == "POST" and self.path in ("/orders", "/exchange_orders"):
            return "exchange_order"
        raise ValueError(f"step {self.step} ({self.file}): unknown call {self.method} {self.path}")

    @property
    def outbound(self) -> bool:
        """True for calls the bridge makes to Optoro (Returns Portal Orders)."""
        return self.kind == "returns_portal_order"

    def rpo_orders(self) -> list[dict[str, Any]]:
        """The orders of a Returns Portal Order step (``[]`` for other steps)."""
        if self.kind != "returns_portal_order":
            return []
        orders: list[dict[str, Any]] = self.request["returns_portal_order"]["orders"]
        return orders

    def __str__(self) -> str:
        return f"{self.step}. {self.method} {self.api} - {self.title} ({self.path})"


@dataclass(frozen=True)
class Scenario:
    """One use case of the guide: its steps in the order the guide lists them."""

    number: int
    folder: str
    title: str
    steps: tuple[Step, ...]

    def __str__(self) -> str:
        return f"{self.number:02d} {self.title}"


def load_scenarios() -> list[Scenario]:
    """Every scenario of the guide, in ``index.json`` order, freshly read (payloads are plain
    JSON values the caller may change without affecting anyone else)."""
    return _load()


def scenario(number: int) -> Scenario:
    """One scenario by its number (1-22)."""
    scenarios = _load()
    for item in scenarios:
        if item.number == number:
            return item
    raise KeyError(f"no scenario {number}; there are {len(scenarios)}")


def _load() -> list[Scenario]:
    root = resources.files(SCENARIOS_PACKAGE)
    index = json.loads(root.joinpath("index.json").read_text(encoding="utf-8"))
    scenarios = []
    for entry in index:
        folder: str = entry["folder"]
        steps = _steps(root.joinpath(folder))
        if len(steps) != len(entry["steps"]):
            raise ValueError(
                f"{folder}: index.json lists {len(entry['steps'])} steps, "
                f"the folder has {len(steps)}"
            )
        number = int(folder.split("-", 1)[0])
        scenarios.append(Scenario(number, folder, entry["scenario"], steps))
    return scenarios


def _steps(folder: Traversable) -> tuple[Step, ...]:
    steps = []
    for item in folder.iterdir():
        if not item.name.endswith(".json"):
            continue
        data = json.loads(item.read_text(encoding="utf-8"))
        steps.append(
            Step(
                step=data["step"],
                method=data["method"],
                api=data["api"],
                title=data["title"],
                path=data["path"],
                request=data["request"],
                response=data["response"],
                file=item.name,
            )
        )
    steps.sort(key=lambda s: s.step)
    if [s.step for s in steps] != list(range(1, len(steps) + 1)):
        raise ValueError(f"{folder.name}: steps are not numbered 1..{len(steps)}")
    return tuple(steps)
