"""Request bodies of the ReturnLogic sandbox: type checks with the API's ``ValidateError``.

:class:`BodyChecker` reads a JSON body (parsed with ``parse_float=Decimal``) field by field,
collects every problem under the field's path (``orderItems[0].rlProductVariantId``) with
tsoa-style messages (``'orderNumber' is required``, ``invalid float number``), and raises one
:class:`~adapters.returnlogic.sandbox.queries.ValidateError` at :meth:`BodyChecker.done`. Money
comes back in integer cents.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from adapters.returnlogic.sandbox.data import iso, parse_iso_ms, to_cents
from adapters.returnlogic.sandbox.queries import ValidateError

__all__ = ["ADDRESS_FIELDS", "BodyChecker", "discount"]

ADDRESS_FIELDS = (
    "address1",
    "address2",
    "city",
    "region",
    "regionCode",
    "postcode",
    "country",
    "countryCode",
)


def discount(check: BodyChecker, raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        check.fail(where, "invalid object", None)
        return {"amount": 0, "code": "", "isShippingDiscount": False}
    amount = check.money(raw, "amount", required=True, where=where)
    code = check.string(raw, "code", required=True, where=where)
    shipping = check.boolean(raw, "isShippingDiscount", required=True, where=where)
    return {"amount": amount or 0, "code": code or "", "isShippingDiscount": bool(shipping)}


_MISSING = object()


class BodyChecker:
    """Type checks on a JSON body, tsoa-style messages, every problem collected."""

    def __init__(self) -> None:
        self.fields: dict[str, dict[str, Any]] = {}

    def fail(self, path: str, message: str, value: Any) -> None:
        entry: dict[str, Any] = {"message": message}
        if value is not None:
            entry["value"] = value if isinstance(value, str | int | bool) else str(value)
        self.fields.setdefault(path, entry)

    def done(self) -> None:
        if self.fields:
            raise ValidateError(self.fields)

    def _get(
        self, obj: Mapping[str, Any], name: str, required: bool, where: str, nullable: bool
    ) -> tuple[str, Any]:
        path = f"{where}.{name}" if where else name
        value = obj.get(name, _MISSING)
        if value is _MISSING or (value is None and not nullable):
            if required:
                self.fail(path, f"'{name}' is required", None)
            return path, _MISSING
        return path, value

    def string(
        self,
        obj: Mapping[str, Any],
        name: str,
        *,
        required: bool = False,
        where: str = "",
        max_length: int | None = None,
        nullable: bool = False,
        echo: bool = True,
    ) -> str | None:
        path, value = self._get(obj, name, required, where, nullable)
        if value is _MISSING or value is None:
            return None
        if not isinstance(value, str):
            self.fail(path, "invalid string value", value if echo else None)
            return None
        if max_length is not None and len(value) > max_length:
            self.fail(path, f"maxLength {max_length}", value if echo else None)
            return None
        return value

    def choice(
        self,
        obj: Mapping[str, Any],
        name: str,
        allowed: tuple[str, ...],
        *,
        required: bool = False,
        where: str = "",
        nullable: bool = False,
        echo: bool = True,
    ) -> str | None:
        value = self.string(obj, name, required=required, where=where, nullable=nullable)
        if value is not None and value not in allowed:
            path = f"{where}.{name}" if where else name
            self.fail(
                path,
                f"should be one of the following; [{', '.join(allowed)}]",
                value if echo else None,
            )
            return None
        return value

    def boolean(
        self, obj: Mapping[str, Any], name: str, *, required: bool = False, where: str = ""
    ) -> bool | None:
        path, value = self._get(obj, name, required, where, False)
        if value is _MISSING:
            return None
        if not isinstance(value, bool):
            self.fail(path, "invalid boolean value", value)
            return None
        return value

    def money(
        self, obj: Mapping[str, Any], name: str, *, required: bool = False, where: str = ""
    ) -> int | None:
        """A ``number <double>`` of dollars, in cents."""
        path, value = self._get(obj, name, required, where, False)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            self.fail(path, "invalid float number", value)
            return None
        try:
            cents = to_cents(value)
        except ValueError:
            self.fail(path, "invalid float number", value)
            return None
        if cents < 0:
            self.fail(path, "must not be negative", value)
            return None
        return cents

    def number(
        self, obj: Mapping[str, Any], name: str, *, required: bool = False, where: str = ""
    ) -> int | float | None:
        path, value = self._get(obj, name, required, where, False)
        if value is _MISSING:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            self.fail(path, "invalid float number", value)
            return None
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        return value

    def integer(
        self,
        obj: Mapping[str, Any],
        name: str,
        *,
        required: bool = False,
        where: str = "",
        low: int | None = None,
    ) -> int | None:
        path, value = self._get(obj, name, required, where, False)
        if value is _MISSING:
            return None
        if isinstance(value, Decimal) and value == value.to_integral_value():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, "invalid integer number", value)
            return None
        if low is not None and value < low:
            self.fail(path, f"min {low}", value)
            return None
        return value

    def strings(
        self, obj: Mapping[str, Any], name: str, *, required: bool = False, where: str = ""
    ) -> list[str] | None:
        path, value = self._get(obj, name, required, where, False)
        if value is _MISSING:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(path, "invalid array", None)
            return None
        return list(value)

    def objects(
        self, obj: Mapping[str, Any], name: str, *, required: bool = False, where: str = ""
    ) -> list[dict[str, Any]]:
        path, value = self._get(obj, name, required, where, False)
        if value is _MISSING:
            return []
        if not isinstance(value, list):
            self.fail(path, "invalid array", None)
            return []
        out = []
        for index, item in enumerate(value):
            if isinstance(item, dict):
                out.append(item)
            else:
                self.fail(f"{path}[{index}]", "invalid object", None)
        return out

    def object(
        self, obj: Mapping[str, Any], name: str, *, where: str = ""
    ) -> dict[str, Any] | None:
        path, value = self._get(obj, name, False, where, False)
        if value is _MISSING:
            return None
        if not isinstance(value, dict):
            self.fail(path, "invalid object", None)
            return None
        return value

    def date(
        self,
        obj: Mapping[str, Any],
        name: str,
        *,
        required: bool = False,
        where: str = "",
        nullable: bool = False,
    ) -> str | None:
        """A date-time, stored as the API writes them."""
        path, value = self._get(obj, name, required, where, nullable)
        if value is _MISSING or value is None:
            return None
        try:
            if not isinstance(value, str):
                raise ValueError
            return iso(parse_iso_ms(value))
        except ValueError:
            self.fail(path, "invalid ISO 8601 datetime format, i.e. YYYY-MM-DDTHH:mm:ss", value)
            return None

    def address(self, obj: Mapping[str, Any], name: str) -> dict[str, Any] | None:
        found = self.object(obj, name)
        if found is None:
            return None
        address = {}
        for key in ADDRESS_FIELDS:
            address[key] = self.string(found, key, where=name, nullable=True)
        return address
