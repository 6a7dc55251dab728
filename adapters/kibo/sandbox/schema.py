"""The Kibo return schemas as the sandbox enforces them, and a validator.

Kibo publishes ``https://integration.shopatron.com/api/v2/schema/return.json``; we do not have
its text, so :data:`RETURN_SCHEMA` is **rebuilt from the Create Return page's parameter tables**
(``shared/specs/kibo-create-return-api.txt``): the required fields, types, minimums, maximum
lengths and enums it lists, as JSON Schema 2020-12. :data:`PROCESS_SCHEMA` is rebuilt the same way
from the Process Return summary. It is written independently of the bridge's wire models
(``mappings.kibo.wire``) on purpose: the sandbox checks them, it does not share their mistakes.

Sandbox choices beyond the tables (a tenant may be laxer): unknown fields are refused
(``additionalProperties: false``, so ``"sku"`` for ``"SKU"`` is caught), ``item`` needs at least
one entry, and ``date-time`` strings are checked (RFC 3339: date, ``T``, time, offset).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from jsonschema import (  # type: ignore[import-untyped, unused-ignore]
    Draft202012Validator,
    FormatChecker,
)
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped, unused-ignore]

__all__ = ["PROCESS_SCHEMA", "RETURN_SCHEMA", "SCHEMAS", "validate"]

_DATE_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
_INT_MIN0: dict[str, Any] = {"type": "integer", "minimum": 0}
_INT_MIN1: dict[str, Any] = {"type": "integer", "minimum": 1}
_NUMBER: dict[str, Any] = {"type": "number"}

_ORDER_ITEM_UNIT: dict[str, Any] = {
    "type": "object",
    "required": ["orderItemUnitID"],
    "additionalProperties": False,
    "properties": {"orderItemUnitID": {"type": "integer"}, "serialNumber": _NUMBER},
}

_GIFT_CARD_INFO: dict[str, Any] = {
    "type": "object",
    "required": ["giftCardType"],
    "additionalProperties": False,
    "properties": {
        "toName": {"type": "string", "maxLength": 85},
        "fromName": {"type": "string", "maxLength": 85},
        "email": {"type": "string", "maxLength": 250},
        "message": {"type": "string", "maxLength": 400},
        "deliveryDate": _DATE_TIME,
        "printForm": {"type": "boolean"},
        "giftCardType": {"enum": ["GC", "GT", "GX", "IM", "M1", "M2", "M3", "VA"]},
        "cardIssuer": {"enum": ["SV", "CL", "VL"]},
        "giftCardValue": _NUMBER,
    },
}

_ITEM: dict[str, Any] = {
    "type": "object",
    "required": ["orderItemID", "quantity"],
    "additionalProperties": False,
    "properties": {
        "returnItemID": {"type": "integer"},
        "orderItemID": _INT_MIN0,
        "quantity": _INT_MIN1,
        "returnSubtotal": _NUMBER,
        "fulfillerSubtotal": _NUMBER,
        "status": {"enum": ["ACCEPTED", "PENDING", "REJECTED"]},
        "reason": {"type": "string"},
        "partNumber": {"type": "string", "minLength": 1, "maxLength": 50},
        "UPC": {"type": "string", "maxLength": 50},
        "SKU": {"type": "string", "maxLength": 50},
        "partName": {"type": "string"},
        "orderItemUnits": {"type": "array", "minItems": 0, "items": _ORDER_ITEM_UNIT},
        "options": {"type": "array", "items": {"type": "string"}},
        "giftCardInfo": _GIFT_CARD_INFO,
    },
}

RETURN_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Kibo return (rebuilt from the Create Return page)",
    "type": "object",
    "required": ["item"],
    "additionalProperties": False,
    "properties": {
        "item": {"type": "array", "minItems": 1, "items": _ITEM},
        "returnID": _INT_MIN1,
        "returnLocation": _INT_MIN1,
        "externalOrderID": {"type": "string", "minLength": 1, "maxLength": 100},
        "status": {"enum": ["OPEN", "PROCESSING", "CLOSED"]},
        "returnTotal": _NUMBER,
        "returnReductionTotal": _NUMBER,
        "fulfillerTotal": _NUMBER,
        "createdTime": _DATE_TIME,
        "clearedTime": _DATE_TIME,
        "confirmTime": _DATE_TIME,
        "refundType": {"enum": ["STANDARD", "GIFT_CARD"]},
        "orderID": _INT_MIN1,
        "shipmentID": _INT_MIN1,
    },
}

PROCESS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Kibo process return (rebuilt from the Process Return summary)",
    "type": "object",
    "required": ["returnID", "acceptedItemQuantity"],
    "additionalProperties": False,
    "properties": {
        "returnID": _INT_MIN1,
        "acceptedItemQuantity": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["orderItemID", "quantityAccepted"],
                "additionalProperties": False,
                "properties": {"orderItemID": _INT_MIN0, "quantityAccepted": _INT_MIN0},
            },
        },
        "locationID": {"type": "integer"},
        "returnReductionOverride": {"type": "number", "minimum": 0},
        "orderItemUnits": {"type": "array", "items": _ORDER_ITEM_UNIT},
    },
}

SCHEMAS: dict[str, dict[str, Any]] = {"return": RETURN_SCHEMA, "process": PROCESS_SCHEMA}

_FORMATS = FormatChecker(formats=())


@_FORMATS.checks("date-time", raises=ValueError)  # type: ignore[untyped-decorator, unused-ignore]
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    return "T" in value.upper() and parsed.tzinfo is not None


@cache
def _validator(kind: str) -> Any:
    try:
        schema = SCHEMAS[kind]
    except KeyError:
        raise ValueError(f"unknown schema {kind!r}; known: {', '.join(SCHEMAS)}") from None
    return Draft202012Validator(schema, format_checker=_FORMATS)


def validate(kind: str, payload: Any) -> list[dict[str, str]]:
    """Every way ``payload`` breaks schema ``kind`` (``return``, ``process``), sorted, as
    ``{"field": "item[0].quantity", "message": ...}``; ``[]`` when valid."""
    errors: list[ValidationError] = list(_validator(kind).iter_errors(payload))
    problems = [{"field": _path(e), "message": _message(e)} for e in errors]
    return sorted(problems, key=lambda p: (p["field"], p["message"]))


def _path(error: ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "<root>"


def _message(error: ValidationError) -> str:
    # the offending value may be personal data: say what was expected, not what was sent
    keyword = error.validator
    value = error.validator_value
    if keyword == "required":
        return str(error.message).replace("'", "")
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = sorted(str(k) for k in error.instance if k not in known)
        return f"unknown field(s): {', '.join(extra)}"
    messages = {
        "type": f"must be of type {value}",
        "minimum": f"must be at least {value}",
        "maxLength": f"must be at most {value} characters",
        "minLength": f"must be at least {value} characters",
        "minItems": f"must have at least {value} item(s)",
        "enum": f"must be one of {', '.join(map(str, value))}" if isinstance(value, list) else "",
        "format": f"must be a {value} (RFC 3339, e.g. 2023-01-27T23:25:09Z)",
    }
    return messages.get(str(keyword)) or str(error.message)
