"""Shared wire plumbing: base models, strict field types, JSON in, timestamps out, errors.

Inbound models (:class:`WireIn`) ignore unknown keys and accept every optional or ``null`` field
the guide shows, but never coerce types: ``"4"`` is not a quantity, ``4.0`` is not cents, ``1`` is
not ``true``. Outbound models (:class:`WireOut`) are closed and list as required exactly what
Optoro's OpenAPI descriptions require, so a domain object missing one of those fails here, as a
:class:`MappingError` naming the wire field, instead of at Optoro.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
)

from bridge.domain import WeightUnit
from bridge.errors import MappingError
from mappings._errors import dotted, mapping_error
from mappings._json import Body, load_json

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
WireOutT = TypeVar("WireOutT", bound="WireOut")


def _timestamp_text(value: object) -> object:
    if isinstance(value, str | datetime):
        return value
    raise ValueError(f"expected an ISO 8601 timestamp string, got {type(value).__name__}")


def _json_number(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(f"expected a number, got {type(value).__name__}")
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        raise ValueError("expected a finite number")
    return number


Str = StrictStr
Id = Annotated[StrictStr, StringConstraints(min_length=1)]
Currency = Annotated[StrictStr, StringConstraints(pattern=r"^[A-Z]{3}$")]
"""ISO 4217, e.g. ``USD``."""
Bool = StrictBool
Int = StrictInt
MAX_CENTS = 10**12
"""Money above ten billion (in any currency's minor unit) is refused as a typo or an attack."""
Cents = Annotated[StrictInt, Field(ge=0, le=MAX_CENTS)]
SignedCents = Annotated[StrictInt, Field(ge=-MAX_CENTS, le=MAX_CENTS)]
Count = Annotated[StrictInt, Field(ge=0)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp_text)]
"""An ISO 8601 timestamp with an offset (``Z`` or ``+00:00``); epoch numbers are refused."""
Number = Annotated[Decimal, BeforeValidator(_json_number)]
"""A JSON number (int, float or Decimal, never a string or a bool), kept exact as Decimal."""


class WireIn(BaseModel):
    """What a partner sends: unknown keys ignored, types strict, frozen."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class WireOut(BaseModel):
    """What we send: closed, frozen; dumped with ``None`` fields left out."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def wire(self) -> dict[str, Any]:
        dumped: dict[str, Any] = self.model_dump(mode="json", exclude_none=True)
        return dumped


# --- errors ----------------------------------------------------------------------------------


def parse(model: type[M], body: Body, *, what: str, prefix: str = "") -> M:
    """Validate ``body`` (JSON text or parsed) as ``model``; MappingError naming the field."""
    data = load_json(body, what=what)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise mapping_error(exc, prefix=prefix, what=what) from exc


def dump_out(model: type[WireOutT], data: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    """``data`` checked against an outbound model and dumped; MappingError naming the field."""
    try:
        return model.model_validate(data).wire()
    except ValidationError as exc:
        raise mapping_error(exc, what=what) from exc


def build(factory: Callable[[], T], where: str, what: str = "") -> T:
    """Run ``factory`` (which builds a domain model); a ValidationError names ``where``."""
    try:
        return factory()
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False)
        first = errors[0]
        message = first["msg"].removeprefix("Value error, ")
        inner = dotted(first["loc"])
        detail = f"{inner}: {message}" if inner else message
        head = f"{what}: " if what else ""
        more = f"; and {len(errors) - 1} more" if len(errors) > 1 else ""
        raise MappingError(f"{head}{where or 'body'}: {detail}{more}", field=where or None) from exc


# --- values out ------------------------------------------------------------------------------


def timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``: ``2018-08-30T15:39:42.025Z`` (fraction only when non-zero)."""
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def maybe_timestamp(value: datetime | None) -> str | None:
    return None if value is None else timestamp(value)


_POUNDS_PER_UNIT = {
    WeightUnit.LB: Decimal(1),
    WeightUnit.OZ: Decimal(1) / Decimal(16),
    WeightUnit.G: Decimal(1) / Decimal("453.59237"),
    WeightUnit.KG: Decimal(1) / Decimal("0.45359237"),
}
_LB_PLACES = Decimal("0.0001")


def pounds(weight: Decimal | None, unit: WeightUnit | None) -> float | None:
    """Optoro weights are pounds (a JSON number); other units are converted, to 0.0001 lb."""
    if weight is None:
        return None
    if unit in (None, WeightUnit.LB):
        return float(weight)
    return float((weight * _POUNDS_PER_UNIT[unit]).quantize(_LB_PLACES))


def first_not_none(*values: T | None) -> T | None:
    return next((value for value in values if value is not None), None)
