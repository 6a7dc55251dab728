"""The delivery engine: inbox -> map -> state -> outbox -> dispatch."""

from __future__ import annotations

from bridge.engine.core import (
    DEFAULT_DEADLINE,
    INBOX_FLAG,
    Absent,
    Delivery,
    Destination,
    Engine,
    EngineSettings,
    Fetched,
    Found,
    HandlerContext,
    InboxHandler,
    Outcome,
    Read,
    Skipped,
    apply_versioned,
    inbox_kind,
    inbox_source,
    version_is_newer,
)
from bridge.engine.destination import DeliveryDestination, HttpDestination, ReadDestination

__all__ = [
    "DEFAULT_DEADLINE",
    "INBOX_FLAG",
    "Absent",
    "Delivery",
    "DeliveryDestination",
    "Destination",
    "Engine",
    "EngineSettings",
    "Fetched",
    "Found",
    "HandlerContext",
    "HttpDestination",
    "InboxHandler",
    "Outcome",
    "Read",
    "ReadDestination",
    "Skipped",
    "apply_versioned",
    "inbox_kind",
    "inbox_source",
    "version_is_newer",
]
