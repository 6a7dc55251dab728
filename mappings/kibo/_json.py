"""JSON in and out for Kibo bodies, and pydantic errors as :class:`MappingError`.

Kibo amounts are JSON numbers in decimal dollars. They are read as ``Decimal``
(``parse_float=Decimal``, never ``float``) and written by :func:`dumps` as the exact digits of the
``Decimal`` (``Decimal("330.00")`` -> ``330.00``), which the standard library encoder cannot do.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from bridge.errors import MappingError
from mappings._errors import dotted, mapping_error

__all__ = ["Body", "dotted", "dumps", "load_json", "mapping_error"]

Body = bytes | bytearray | str | Mapping[str, Any]
"""A request or response body: raw JSON text, or an already parsed JSON object."""


def load_json(body: Body, *, what: str) -> Any:
    """``body`` parsed as JSON (fractions as ``Decimal``), or as given when already parsed."""
    if isinstance(body, Mapping):
        return body
    if not isinstance(body, bytes | bytearray | str):
        raise MappingError(f"{what}: expected a JSON body, got {type(body).__name__}")
    try:
        return json.loads(body, parse_float=Decimal)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise MappingError(f"{what}: body is not valid JSON: {exc}") from exc


def dumps(value: Any) -> str:
    """Compact JSON of ``value``; a ``Decimal`` is written as its exact digits, never via float.

    Accepts what JSON holds (dict with str keys, list/tuple, str, int, bool, None) plus
    ``Decimal`` (finite only). Anything else is a ``TypeError``.
    """
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts)


def _encode(value: Any, out: list[str]) -> None:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"cannot write {value!r} as JSON")
        out.append(format(value, "f"))
    elif value is None or isinstance(value, bool | int | str):
        out.append(json.dumps(value))
    elif isinstance(value, float):
        raise TypeError("floats are not written to Kibo: use Decimal")
    elif isinstance(value, Mapping):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys are strings, got {type(key).__name__}")
            if i:
                out.append(",")
            out.append(json.dumps(key))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")
