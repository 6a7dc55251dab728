"""Pydantic validation errors as :class:`MappingError` s naming the dotted wire path."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from pydantic import ValidationError

from bridge.errors import MappingError


def dotted(loc: Sequence[int | str], prefix: str = "") -> str:
    """``("items", 0, "sku")`` -> ``items[0].sku`` (after ``prefix``, itself dotted)."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def mapping_error(exc: ValidationError, *, what: str = "", prefix: str = "") -> MappingError:
    """The first error of ``exc`` as a :class:`MappingError` naming its dotted wire path.

    The message says how many other errors there were; ``field`` is ``None`` when the problem
    is the whole body (e.g. a JSON array where an object belongs).
    """
    errors = exc.errors(include_url=False, include_context=False)
    first = errors[0]
    field = dotted(first["loc"], prefix)
    message = first["msg"].removeprefix("Value error, ")
    head = f"{what}: " if what else ""
    text = f"{head}{field or 'body'}: {message}"
    if first["type"] not in ("missing", "extra_forbidden", "model_type"):
        text += f" (got {_kind(first.get('input'))})"
    if len(errors) > 1:
        others = len(errors) - 1
        text += f"; and {others} more error{'s' if others > 1 else ''}"
    return MappingError(text, field=field or None)


def _kind(value: object) -> str:
    """The JSON type of a bad value; the value itself may be personal data, so it stays out."""
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        Decimal: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)
