"""A small versioned-event handler and an HTTP destination, for engine tests.

Events are ``{"entity": str, "version": int, "stage": int}``; an entity's state is the
newest version seen; each *milestone* (1..stage) reached by the state causes one effect
``<entity>:m<milestone>`` posted to the destination. Milestones only grow with version,
so every order of delivery of the same events must end in the same state and effects.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.engine import HandlerContext, HttpDestination, Outcome, apply_versioned
from bridge.errors import MappingError
from bridge.http import Backoff, DestinationLimits, HttpClient, OutboundRequest
from bridge.store import Effect, InboxItem, InboxStatus, NewEffect, Transaction

KIND = "test.events"


class MilestoneHandler:
    """``include_label`` toggles a mapping 'fix' (the field a strict partner requires)."""

    def __init__(self, include_label: bool = True) -> None:
        self.include_label = include_label

    async def __call__(self, item: InboxItem, tx: Transaction, ctx: HandlerContext) -> Outcome:
        event = parse_event(item.body)
        entity, version, stage = event["entity"], event["version"], event["stage"]
        applied = await apply_versioned(tx, "thing", entity, (version,), {"stage": stage}, ctx)
        if not applied:
            return Outcome(InboxStatus.SUPERSEDED, note="stale or duplicate version")
        effects = []
        for milestone in range(1, stage + 1):
            payload: dict[str, Any] = {"entity": entity, "milestone": milestone}
            if self.include_label:
                payload["label"] = f"{entity}/{milestone}"
            effects.append(
                NewEffect(
                    idempotency_key=f"{entity}:m{milestone}",
                    destination="partner",
                    kind="milestone",
                    payload=payload,
                    order_key=f"partner:{entity}",
                )
            )
        return Outcome(effects=effects)


def parse_event(body: bytes) -> dict[str, Any]:
    try:
        event = json.loads(body)
    except ValueError:
        raise MappingError("body is not valid JSON", field="body") from None
    if not isinstance(event, dict):
        raise MappingError("body must be a JSON object", field="body")
    for name, kind in (("entity", str), ("version", int), ("stage", int)):
        if not isinstance(event.get(name), kind):
            raise MappingError(f"{name} must be a {kind.__name__}", field=name)
    return event


def event(entity: str, version: int, stage: int | None = None) -> bytes:
    return json.dumps({"entity": entity, "version": version, "stage": stage or version}).encode()


class PartnerDestination(HttpDestination):
    """Posts each effect's payload to ``<url>/effects``; a 400 when ``label`` is missing
    is what the fake partner is told to answer in the replay tests."""

    def __init__(self, url: str, http: HttpClient, **kwargs: Any) -> None:
        kwargs.setdefault("backoff", Backoff(initial=0.01, cap=0.05))
        super().__init__("partner", http, DestinationLimits("partner", timeout=5.0), **kwargs)
        self.url = url

    async def render(self, effect: Effect) -> OutboundRequest:
        return OutboundRequest(
            "POST", f"{self.url}/effects", {"Content-Type": "application/json"}, json=effect.payload
        )
