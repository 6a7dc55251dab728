"""JSON in and out of partner bodies with money exact: read as ``Decimal``, written as its digits.

Partners send amounts as JSON numbers of decimal dollars. :func:`load_json` reads fractions as
``Decimal`` (``parse_float=Decimal``, never ``float``) and refuses ``NaN``/``Infinity``;
:func:`dumps` writes a ``Decimal`` as its exact digits (``Decimal("330.00")`` -> ``330.00``),
which the standard library encoder cannot do, and refuses a ``float``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from bridge.errors import MappingError

__all__ = ["Body", "dumps", "load_json"]

Body = bytes | bytearray | str | Mapping[str, Any]
"""A request or response body: raw JSON text, or an already parsed JSON object."""


def load_json(body: Body, *, what: str) -> Any:
    """``body`` parsed as JSON (fractions as ``Decimal``), or as given when already parsed.

    Not JSON (``NaN`` and ``Infinity`` included): ``MappingError`` whose text names the
    position, never a value of the body.
    """
    if isinstance(body, Mapping):
        return body
    if not isinstance(body, bytes | bytearray | str):
        raise MappingError(f"{what}: expected a JSON body, got {type(body).__name__}")
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise MappingError(
            f"{what}: body is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        ) from exc
    except ValueError as exc:  # UnicodeDecodeError, a refused constant, too many digits
        raise MappingError(f"{what}: body is not valid JSON ({type(exc).__name__})") from exc


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def dumps(value: Any) -> str:
    """Compact JSON of ``value`` (UTF-8 text, non-ASCII kept); a ``Decimal`` as its exact digits.

    Accepts what JSON holds (dict with str keys, list/tuple, str, int, bool, None) plus finite
    ``Decimal`` and ``datetime`` (ISO 8601). Anything else, a ``float`` above all, is a
    ``TypeError``.
    """
    parts: list[str] = []
    _encode(value, parts)
    return "".join(parts)


def _encode(value: Any, out: list[str]) -> None:
    if value is None or isinstance(value, bool | int):
        out.append(json.dumps(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise TypeError(f"cannot write {value!r} as JSON")
        out.append(format(value, "f"))
    elif isinstance(value, float):
        raise TypeError("floats are not written as JSON: use Decimal")
    elif isinstance(value, Mapping):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys are strings, got {type(key).__name__}")
            if index:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, datetime):
        out.append(json.dumps(value.isoformat()))
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")
