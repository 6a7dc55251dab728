"""Kibo Return Event Notifications (Kibo calls the subscriber) -> :class:`KiboReturnEvent`.

Kibo sends ``return_created``, ``return_accepted``, ``return_rejected``, ``return_cleared``
(refunds processed), ``return_reopened`` and a return failure notification (a refund failed),
with common fields ``eventTypeID``, ``status``, ``source``, ``orderID``, ``shipmentID``,
``externalOrderID``, ``returnID``, ``manufacturerID``. Kibo warns that some tenants receive
"translated" notifications with other data, so the parser is tolerant and the event names are an
argument:

- **Event type**: the first of the fields ``eventTypeID``, ``eventType``, ``type``, ``event``
  (in that order) that holds a string or a number (numbers are read as their decimal text), at
  the top level, else inside a ``data``, ``payload``, ``return`` or ``notification`` object.
- **Names**: ``event_names`` maps the wire name to a kind (``created``, ``accepted``,
  ``rejected``, ``cleared``, ``reopened``, ``refund_failed``); matched exactly first, then
  ignoring case. Anything else -- or no event field at all -- is kind ``unknown`` (the caller
  decides; nothing is guessed). :data:`DEFAULT_EVENT_NAMES` has Kibo's documented names plus
  ``return_failure``/``return_failed``/``return_refund_failed`` for the failure notification,
  whose name the documentation summary does not give.
- **Fields**: keys are matched ignoring case, ``_`` and ``-`` (``returnID``, ``returnId``,
  ``return_id``), top level first, then the same nested objects. ``returnID`` and ``orderID``
  are integers (JSON integers or digit strings up to :data:`MAX_ID`, else ``None``);
  ``externalOrderID`` and ``status`` are text (numbers turned to text).

Only a body that is not a JSON object is an error (``MappingError``). ``raw`` keeps the parsed
body for the record.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal, cast, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bridge.errors import MappingError
from mappings._errors import mapping_error
from mappings._json import Body, load_json

__all__ = [
    "DEFAULT_EVENT_NAMES",
    "EVENT_KINDS",
    "EVENT_TYPE_FIELDS",
    "EventKind",
    "KiboNotificationIn",
    "KiboReturnEvent",
    "parse_notification",
]

EventKind = Literal[
    "created", "accepted", "rejected", "cleared", "reopened", "refund_failed", "unknown"
]
EVENT_KINDS: tuple[str, ...] = get_args(EventKind)

DEFAULT_EVENT_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "return_created": "created",
        "return_accepted": "accepted",
        "return_rejected": "rejected",
        "return_cleared": "cleared",
        "return_reopened": "reopened",
        "return_failure": "refund_failed",
        "return_failed": "refund_failed",
        "return_refund_failed": "refund_failed",
    }
)
"""Wire event name -> kind, as Kibo's documentation names the events."""

EVENT_TYPE_FIELDS = ("eventTypeID", "eventType", "type", "event")
"""Where the event type is looked for, in this order."""

_NESTED = ("data", "payload", "return", "notification")


def _documented(description: str, **extra: Any) -> Any:
    return Field(default=None, description=description, json_schema_extra=extra or None)


class KiboNotificationIn(BaseModel):
    """What the webhook accepts: any JSON object. Kibo's documented fields are listed, but
    read tolerantly (see the module): a translated notification may carry other types or
    nest them, and an unreadable field is *absent*, never a refusal, so they are typed as any
    JSON value. This model is the validation of the endpoint and its ``/openapi.json`` schema.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    eventTypeID: Any = _documented(
        "event name, e.g. return_created", examples=list(DEFAULT_EVENT_NAMES)
    )
    status: Any = _documented("the return's status (text)")
    source: Any = _documented("what raised the event (text)")
    orderID: Any = _documented("Kibo order id (integer or digit string)")
    shipmentID: Any = _documented("Kibo shipment id")
    externalOrderID: Any = _documented("the retailer's order id (text)")
    returnID: Any = _documented("Kibo return id (integer or digit string)")
    manufacturerID: Any = _documented("Kibo manufacturer id")


@dataclass(frozen=True)
class KiboReturnEvent:
    kind: EventKind
    return_id: int | None
    order_id: int | None
    external_order_id: str | None
    status: str | None
    event_type: str | None = None
    """The event name as sent (``None`` when the body carries none)."""
    source: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


def parse_notification(
    body: Body, event_names: Mapping[str, str] = DEFAULT_EVENT_NAMES
) -> KiboReturnEvent:
    """The event of a Return Event Notification body (JSON text or parsed); see the module.

    ``event_names`` (wire name -> kind) is checked: a kind outside :data:`EVENT_KINDS` is a
    ``ValueError`` (a configuration mistake, not bad input).
    """
    bad = sorted({kind for kind in event_names.values() if kind not in EVENT_KINDS})
    if bad:
        raise ValueError(f"unknown event kind(s) {', '.join(bad)}; known: {', '.join(EVENT_KINDS)}")
    data = load_json(body, what="Kibo notification")
    if not isinstance(data, Mapping):
        raise MappingError("Kibo notification: expected a JSON object")
    try:
        KiboNotificationIn.model_validate(data)
    except ValidationError as exc:
        raise mapping_error(exc, what="Kibo notification") from exc
    scopes = [data, *(v for k, v in _items(data) if k in _NESTED and isinstance(v, Mapping))]
    event_type = _event_type(scopes)
    return KiboReturnEvent(
        kind=_kind(event_type, event_names),
        return_id=_integer(_find(scopes, "returnid")),
        order_id=_integer(_find(scopes, "orderid")),
        external_order_id=_text(_find(scopes, "externalorderid")),
        status=_text(_find(scopes, "status")),
        event_type=event_type,
        source=_text(_find(scopes, "source")),
        raw=data,
    )


def _normal(key: str) -> str:
    return key.replace("_", "").replace("-", "").casefold()


def _items(scope: Mapping[Any, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in scope.items():
        if isinstance(key, str):
            yield _normal(key), value


def _find(scopes: list[Mapping[Any, Any]], name: str) -> Any:
    for scope in scopes:
        for key, value in _items(scope):
            if key == name and value is not None:
                return value
    return None


def _event_type(scopes: list[Mapping[Any, Any]]) -> str | None:
    for scope in scopes:
        for name in EVENT_TYPE_FIELDS:
            for key, value in _items(scope):
                if key == _normal(name):
                    text = _text(value)
                    if text:
                        return text
    return None


def _kind(event_type: str | None, event_names: Mapping[str, str]) -> EventKind:
    if event_type is None:
        return "unknown"
    kind = event_names.get(event_type)
    if kind is None:
        folded = event_type.casefold()
        kind = next((k for n, k in event_names.items() if n.casefold() == folded), "unknown")
    return _as_kind(kind)


def _as_kind(kind: str) -> EventKind:
    return cast(EventKind, kind) if kind in EVENT_KINDS else "unknown"


MAX_ID = 2**63 - 1
"""Kibo ids are 64-bit at most: a larger number is no id (read as absent)."""


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) <= MAX_ID else None
    if isinstance(value, Decimal) and value.is_finite():
        if value.adjusted() < 19 and value == value.to_integral_value():
            return _integer(int(value))
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 19:
            return _integer(int(text))
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | Decimal):
        return str(value)
    return None
