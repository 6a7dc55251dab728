"""Durable store port and its backends."""

from __future__ import annotations

from bridge.errors import ConfigError
from bridge.store.base import (
    Accepted,
    Claim,
    ClaimState,
    Effect,
    EffectState,
    Entity,
    Flag,
    InboxItem,
    InboxStats,
    InboxStatus,
    Instance,
    LeaseLost,
    NewEffect,
    Store,
    Transaction,
    canonical_json,
)

__all__ = [
    "Accepted",
    "Claim",
    "ClaimState",
    "Effect",
    "EffectState",
    "Entity",
    "Flag",
    "InboxItem",
    "InboxStats",
    "InboxStatus",
    "Instance",
    "LeaseLost",
    "NewEffect",
    "Store",
    "Transaction",
    "canonical_json",
    "store_from_url",
]


def store_from_url(url: str) -> Store:
    """A store for ``sqlite:///path`` (relative to the working directory) or ``memory://``."""
    if url.startswith("sqlite:///"):
        from bridge.store.sqlite import SqliteStore, sqlite_path_from_url

        return SqliteStore(sqlite_path_from_url(url))
    if url == "memory://":
        from bridge.store.memory import MemoryStore

        return MemoryStore()
    scheme = url.split(":", 1)[0]
    raise ConfigError(f"unsupported store url scheme (use sqlite:///PATH or memory://): {scheme}")
