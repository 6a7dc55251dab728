"""The delivery engine: inbox -> map -> state -> outbox -> dispatch."""

from __future__ import annotations

from bridge.engine.core import (
    DEFAULT_DEADLINE,
    Destination,
    Engine,
    EngineSettings,
    HandlerContext,
    InboxHandler,
    Outcome,
    apply_versioned,
    inbox_kind,
    inbox_source,
    version_is_newer,
)
from bridge.engine.destination import HttpDestination

__all__ = [
    "DEFAULT_DEADLINE",
    "Destination",
    "Engine",
    "EngineSettings",
    "HandlerContext",
    "HttpDestination",
    "InboxHandler",
    "Outcome",
    "apply_versioned",
    "inbox_kind",
    "inbox_source",
    "version_is_newer",
]
