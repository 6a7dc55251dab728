"""The Optoro guide's sample steps (``shared/fixtures``, read as they are) and comparison helpers.

``shared/`` sits next to the repository; without it these tests cannot mean anything, so a
missing folder stops the run instead of skipping.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parents[2].parent / "shared" / "fixtures"
SCENARIOS = FIXTURES / "optoro-scenarios"

if not (SCENARIOS / "index.json").is_file():
    raise FileNotFoundError(
        f"Optoro guide fixtures not found at {SCENARIOS}: the contract tests need"
        " shared/fixtures/optoro-scenarios next to the repository"
    )


@dataclass(frozen=True)
class Step:
    """One sample call of the guide: ``id`` is ``<scenario>-<step>``, e.g. ``06-03``."""

    id: str
    file: Path
    api: str
    title: str
    method: str
    path: str
    request: Any
    response: Any

    @property
    def kind(self) -> str:
        """What was called, from the ``path`` (step titles are unreliable: scenario 15)."""
        if self.path == "/rmas":
            return "rma"
        if self.path == "/returns_portal_orders":
            return "rpo"
        if self.path.startswith("/sku/") and self.path.endswith("/variants"):
            return "variants"
        if self.path in ("/orders", "/exchange_orders"):
            return "exchange_order"
        raise AssertionError(f"{self.id}: unknown path {self.path!r}")


def load_steps() -> list[Step]:
    steps = []
    for file in sorted(SCENARIOS.glob("*/*.json")):
        raw = json.loads(file.read_text(encoding="utf-8"))
        steps.append(
            Step(
                id=f"{file.parent.name[:2]}-{file.name[:2]}",
                file=file,
                api=raw["api"],
                title=raw["title"],
                method=raw["method"],
                path=raw["path"],
                request=raw["request"],
                response=raw["response"],
            )
        )
    return steps


STEPS = load_steps()
STEP_BY_ID = {step.id: step for step in STEPS}

TIMESTAMP_KEYS = frozenset({"created_at", "updated_at", "shipped_date", "return_policy_end_date"})
"""Keys holding ISO 8601 instants: compared as instants (``+00:00`` and ``Z`` are one thing)."""


def differences(actual: Any, expected: Any, path: str = "") -> list[str]:
    """Every place ``actual`` differs from ``expected``, timestamps compared as instants."""
    where = path or "<root>"
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = [f"{where}: unexpected key {k!r}" for k in sorted(actual.keys() - expected.keys())]
        found += [f"{where}: missing key {k!r}" for k in sorted(expected.keys() - actual.keys())]
        for key in expected.keys() & actual.keys():
            sub = f"{path}.{key}" if path else key
            if key in TIMESTAMP_KEYS and isinstance(expected[key], str):
                if not isinstance(actual[key], str) or instant(actual[key]) != instant(
                    expected[key]
                ):
                    found.append(f"{sub}: {actual[key]!r} != {expected[key]!r}")
            else:
                found += differences(actual[key], expected[key], sub)
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        if len(actual) != len(expected):
            return [f"{where}: {len(actual)} elements != {len(expected)}"]
        return [
            d
            for i, (a, e) in enumerate(zip(actual, expected, strict=True))
            for d in differences(a, e, f"{path}[{i}]")
        ]
    if type(actual) is not type(expected) or actual != expected:
        return [f"{where}: {actual!r} != {expected!r}"]
    return []


def instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    assert parsed.tzinfo is not None, f"timestamp without offset: {text!r}"
    return parsed
