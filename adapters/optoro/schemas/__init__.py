"""Optoro's OpenAPI descriptions (JSON, converted verbatim; see ``SOURCE.md``) and a validator.

``validate(kind, payload)`` checks a payload against the component schema of one description and
returns every problem as ``"<json path>: <message>"`` (an empty list when the payload is valid).
``$ref``s resolve inside the description they come from. OpenAPI 3.1 schema objects are JSON
Schema 2020-12; OpenAPI 3.0 ones are validated as Draft 4 after turning ``nullable: true`` into
a ``"null"`` type. Unknown ``format``s (Optoro writes ``format: int``) are annotations only.

Runtime code (the Optoro sandbox) uses this, so it needs ``jsonschema`` at runtime.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import (  # type: ignore[import-untyped, unused-ignore]
    Draft4Validator,
    Draft202012Validator,
)
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped, unused-ignore]
from jsonschema.protocols import Validator  # type: ignore[import-untyped, unused-ignore]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4, DRAFT202012

__all__ = ["KINDS", "description", "validate"]

_JSON = "application~1json"
_TOKEN = f"/paths/~1oauth~1token/post/{{}}/content/{_JSON}/schema"

KINDS: dict[str, tuple[str, str]] = {
    "rpo_request": ("returns-portal-orders.json", "/components/schemas/returns_portal_orders"),
    "rpo_order": ("returns-portal-orders.json", "/components/schemas/order"),
    "rma": ("rmas.json", "/components/schemas/rma"),
    "variants_response": ("variants.json", "/components/schemas/variants"),
    "exchange_order_request": ("exchange-orders.json", "/components/schemas/exchange_order"),
    "exchange_order_response": (
        "exchange-orders.json",
        "/components/schemas/exchange_order_response",
    ),
    "token_request": ("auth.json", _TOKEN.format("requestBody")),
    "token_response": ("auth.json", _TOKEN.format("responses/200")),
}
"""``kind -> (description file, JSON pointer of the schema inside it)``."""


@cache
def description(filename: str) -> dict[str, Any]:
    """One description, as Optoro published it (parsed JSON; do not mutate)."""
    text = resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def validate(kind: str, payload: Any) -> list[str]:
    """Every way ``payload`` breaks the ``kind`` schema, as ``"path: message"``; [] when valid."""
    validator = _validator(kind)
    problems = [f"{_path(error)}: {error.message}" for error in validator.iter_errors(payload)]
    return sorted(problems)


def _path(error: ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return path.lstrip(".") or "<root>"


@cache
def _validator(kind: str) -> Validator:
    try:
        filename, pointer = KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown schema kind {kind!r}; known: {', '.join(KINDS)}") from None
    document = description(filename)
    uri = f"urn:optoro:{filename}"
    cls: type[Draft4Validator] | type[Draft202012Validator]
    if str(document.get("openapi", "")).startswith("3.0"):
        contents, spec, cls = _nullable_to_type(document), DRAFT4, Draft4Validator
    else:
        contents, spec, cls = document, DRAFT202012, Draft202012Validator
    registry: Registry[Any] = Registry().with_resource(
        uri, Resource.from_contents(contents, default_specification=spec)
    )
    schema = {"$ref": f"{uri}#{pointer}"}
    validator: Validator = cls(schema, registry=registry)
    return validator


def _nullable_to_type(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable: true`` -> JSON Schema ``type: [t, "null"]`` (a converted copy)."""
    if isinstance(node, list):
        return [_nullable_to_type(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _nullable_to_type(value) for key, value in node.items()}
    if converted.pop("nullable", False) is True and "type" in converted:
        types = converted["type"] if isinstance(converted["type"], list) else [converted["type"]]
        converted["type"] = [*types, "null"]
        if "enum" in converted and None not in converted["enum"]:
            converted["enum"] = [*converted["enum"], None]
    return converted
