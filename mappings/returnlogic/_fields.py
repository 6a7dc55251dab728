"""Field types of the ReturnLogic wire models, and turning their errors into ``MappingError``.

ReturnLogic sends money as JSON numbers of decimal dollars. Bodies are parsed with
``json.loads(body, parse_float=Decimal)``; a ``float`` reaching a money field is refused, so no
binary fraction ever touches an amount.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import PlainValidator, ValidationError

from bridge.domain import dollars_to_cents
from bridge.errors import MappingError
from mappings._json import load_json

__all__ = [
    "DEFAULT_CURRENCY",
    "Amount",
    "Count",
    "Dollars",
    "Flag",
    "OptId",
    "OptText",
    "RlId",
    "SignedCount",
    "Strings",
    "Text",
    "When",
    "field_path",
    "load_json",
    "mapping_error",
    "page_records",
    "to_amount",
    "to_cents",
    "to_count",
    "to_datetime",
    "to_dollars",
    "to_flag",
    "to_id",
    "to_integer",
    "to_opt_id",
    "to_required_text",
    "to_strings",
    "to_text",
]

DEFAULT_CURRENCY = "USD"
"""The currency of amounts in ReturnLogic documents that name none (products, RMAs) when the
retailer configures none: the currency of every ReturnLogic sample."""

_MAX_ADJUSTED = 15
"""Amounts below 10**16 dollars: far beyond any order, well inside 64-bit cents."""
_MAX_WHOLE = 10**16
_CONTEXT = Context(prec=40)
_FLOAT_REFUSED = "float refused: parse JSON with parse_float=Decimal"

# Converters: value -> typed value, ValueError with a short reason (never the value itself).
# The pydantic field types below and the order mapping's single-pass reader both use them, so the
# wire models and the mapping accept and refuse exactly the same inputs.


def _decimal(value: object, negative: bool) -> Decimal:
    if isinstance(value, Decimal):
        amount = value
    elif type(value) is int:
        amount = Decimal(value)
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError("not a decimal number") from None
    elif isinstance(value, float):
        raise ValueError(_FLOAT_REFUSED)
    else:
        raise ValueError(f"expected a decimal number, got {type(value).__name__}")
    if not amount.is_finite():
        raise ValueError("must be a finite number")
    if amount and amount.adjusted() > _MAX_ADJUSTED:
        raise ValueError("out of range")
    if not negative and amount < 0:
        raise ValueError("must not be negative")
    return amount


def to_dollars(value: object) -> Decimal:
    """Non-negative decimal dollars from ``Decimal``, ``int`` or numeric text; never ``float``."""
    return _decimal(value, False)


def to_amount(value: object) -> Decimal:
    """A decimal number of any sign; never ``float``."""
    return _decimal(value, True)


_HUNDRED = Decimal(100)


def to_cents(value: object) -> int:
    """A two-decimal currency's non-negative amount straight to its minor units (half up,
    once, as ``dollars_to_cents``); other currencies go through ``major_to_minor``.

    The common case (at most two decimal places) is an exact multiplication; anything finer
    goes through ``dollars_to_cents`` for its rounding.
    """
    if type(value) is int:
        if value < 0:
            raise ValueError("must not be negative")
        if value >= _MAX_WHOLE:
            raise ValueError("out of range")
        return value * 100
    if (
        type(value) is Decimal
        and value.is_finite()
        and not value.is_signed()
        and value.adjusted() <= _MAX_ADJUSTED
    ):
        scaled = value * _HUNDRED
        whole = int(scaled)
        if whole == scaled:
            return whole
    amount = _decimal(value, False)
    scaled = amount.scaleb(2, _CONTEXT)
    whole = int(scaled)
    if whole == scaled:
        return whole
    return dollars_to_cents(amount)


def to_integer(value: object) -> int:
    """A whole number from ``int``, an integral ``Decimal`` (``number <double>``) or text."""
    if type(value) is int:
        return value
    if isinstance(value, Decimal | str):
        number = _decimal(value, True)
        if number != number.to_integral_value():
            raise ValueError("expected a whole number")
        return int(number)
    if isinstance(value, float):
        raise ValueError(_FLOAT_REFUSED)
    raise ValueError(f"expected an integer, got {type(value).__name__}")


def to_count(value: object) -> int:
    """A non-negative whole number."""
    if type(value) is int and value >= 0:
        return value
    number = to_integer(value)
    if number < 0:
        raise ValueError("must not be negative")
    return number


def to_id(value: object) -> str:
    """An id sent as a number or a string, kept as text; blank text is refused."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty")
        return value
    return str(to_integer(value))


def to_opt_id(value: object) -> str | None:
    """An optional id: None and blank text are absent."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return to_id(value)


def to_text(value: object) -> str | None:
    """Optional text, stripped; None and blank text are absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    return value.strip() or None


def to_required_text(value: object) -> str:
    """Text that must not be blank, stripped."""
    text = to_text(value)
    if text is None:
        raise ValueError("must not be blank")
    return text


def to_flag(value: object) -> bool:
    """A JSON boolean (no ``"true"`` strings, no 0/1)."""
    if value is True or value is False:
        return value
    raise ValueError(f"expected a boolean, got {type(value).__name__}")


def to_datetime(value: object) -> datetime:
    """An ISO-8601 date-time with an offset (``Z`` included); a naive one is refused."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO-8601 date-time") from None
    else:
        raise ValueError(f"expected an ISO-8601 date-time, got {type(value).__name__}")
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("date-time has no UTC offset")
    return when


def to_strings(value: object) -> list[str]:
    """A JSON array of strings."""
    if not isinstance(value, list):
        raise ValueError(f"expected an array, got {type(value).__name__}")
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"expected an array of strings, got a {type(item).__name__}")
    return value


Dollars = Annotated[Decimal, PlainValidator(to_dollars)]
"""Non-negative decimal dollars: ``Decimal``, ``int`` or numeric text; never ``float``."""
Amount = Annotated[Decimal, PlainValidator(to_amount)]
"""A decimal number of any sign (weights); never ``float``."""
Count = Annotated[int, PlainValidator(to_count)]
"""A non-negative whole number; ``2`` and ``Decimal("2.0")`` (a ``number <double>``) both pass."""
SignedCount = Annotated[int, PlainValidator(to_integer)]
RlId = Annotated[str, PlainValidator(to_id)]
"""An id, sent as a number or a string; kept as text."""
OptId = Annotated[str | None, PlainValidator(to_opt_id)]
"""An optional id; blank text is absent."""
OptText = Annotated[str | None, PlainValidator(to_text)]
"""Optional text, stripped; blank text is absent."""
Text = Annotated[str, PlainValidator(to_required_text)]
"""Text that must not be blank, stripped."""
Flag = Annotated[bool, PlainValidator(to_flag)]
"""A JSON boolean."""
When = Annotated[datetime, PlainValidator(to_datetime)]
"""An ISO-8601 date-time with an offset."""
Strings = Annotated[list[str], PlainValidator(to_strings)]
"""An array of strings."""


def field_path(loc: tuple[int | str, ...], prefix: str = "") -> str:
    """``("orderItems", 0, "sku")`` -> ``orderItems[0].sku``: wire names, as the API spells them."""
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def mapping_error(exc: ValidationError, prefix: str = "") -> MappingError:
    """A ``MappingError`` naming the first invalid field; messages carry no input values."""
    errors = exc.errors(include_url=False, include_input=False)
    fields = [field_path(tuple(error["loc"]), prefix) or prefix or "<root>" for error in errors]
    details = "; ".join(f"{f}: {e['msg']}" for f, e in zip(fields, errors, strict=True))
    return MappingError(f"invalid ReturnLogic {exc.title}: {details}", field=fields[0])


def page_records(body: bytes | str, what: str) -> list[dict[str, Any]]:
    """A list page's records as raw dicts, so each can be mapped (and fail) on its own.

    ReturnLogic list endpoints return a bare JSON array. Not JSON, not an array, or an element
    that is not an object: ``MappingError`` (the field names the element, ``[3]``).
    """
    data = load_json(body, what=what)
    if not isinstance(data, list):
        raise MappingError(f"{what}: expected a JSON array, got {type(data).__name__}")
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise MappingError(
                f"{what}: element {index} is {type(record).__name__}, not an object",
                field=f"[{index}]",
            )
    return data
