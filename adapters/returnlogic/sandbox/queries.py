"""Query parameters of the ReturnLogic list and count endpoints: parsing and filters.

Every documented filter is applied; an unknown parameter is ignored (as the API does); a
documented one with a bad value is a :class:`ValidateError`, which the server answers as the
spec's ``400`` body (``{"status": 400, "message": "", "name": "ValidateError", "fields":
{"limit": {"message": ..., "value": ...}}}``). Parameters that take several values accept
them comma-separated (the spec's form) or repeated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from multidict import MultiMapping

from adapters.returnlogic.sandbox.data import (
    FINANCIAL_STATUSES,
    PRODUCT_STATUSES,
    RETURN_TYPES,
    WORKFLOW_STATUSES,
    iso,
    parse_iso_ms,
)

__all__ = [
    "ValidateError",
    "order_filter",
    "page",
    "product_filter",
    "rma_filter",
]

Record = Mapping[str, Any]
Predicate = Callable[[Record], bool]
Query = MultiMapping[str]


class ValidateError(Exception):
    """Bad input: ``fields`` maps a parameter (or body path) to ``{"message", "value"}``."""

    def __init__(self, fields: dict[str, dict[str, Any]], message: str = "") -> None:
        super().__init__(message or "; ".join(f"{k}: {v['message']}" for k, v in fields.items()))
        self.fields = fields
        self.message = message

    @classmethod
    def one(cls, name: str, message: str, value: Any = None) -> ValidateError:
        entry: dict[str, Any] = {"message": message}
        if value is not None:
            entry["value"] = value
        return cls({name: entry})

    def body(self) -> dict[str, Any]:
        return {
            "status": 400,
            "message": self.message,
            "name": "ValidateError",
            "fields": self.fields,
        }


class _Reader:
    """Reads parameters, collecting every problem before raising one ValidateError."""

    def __init__(self, query: Query) -> None:
        self.query = query
        self.fields: dict[str, dict[str, Any]] = {}

    def fail(self, name: str, message: str, value: Any) -> None:
        self.fields.setdefault(name, {"message": message, "value": value})

    def done(self) -> None:
        if self.fields:
            raise ValidateError(self.fields)

    def text(self, name: str) -> str | None:
        value = self.query.get(name)
        return value if value not in (None, "") else None

    def integer(self, name: str, default: int | None, low: int, high: int | None) -> int | None:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            self.fail(name, "invalid integer number", raw)
            return default
        if value < low:
            self.fail(name, f"min {low}", raw)
        elif high is not None and value > high:
            self.fail(name, f"max {high}", raw)
        return value

    def date(self, name: str) -> str | None:
        """The bound as the API's date text (fixed width, so it compares as text)."""
        raw = self.text(name)
        if raw is None:
            return None
        try:
            return iso(parse_iso_ms(raw))
        except ValueError:
            self.fail(name, "invalid ISO 8601 datetime format, i.e. YYYY-MM-DDTHH:mm:ss", raw)
            return None

    def boolean(self, name: str) -> bool | None:
        raw = self.text(name)
        if raw is None:
            return None
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        self.fail(name, "invalid boolean value", raw)
        return None

    def many(self, name: str, allowed: tuple[str, ...] | None = None) -> list[str] | None:
        values = [
            part.strip()
            for raw in self.query.getall(name, [])
            for part in raw.split(",")
            if part.strip()
        ]
        if not values:
            return None
        if allowed is not None:
            for value in values:
                if value not in allowed:
                    self.fail(
                        name, f"should be one of the following; [{', '.join(allowed)}]", value
                    )
        return values

    def choice(self, name: str, allowed: tuple[str, ...]) -> str | None:
        raw = self.text(name)
        if raw is not None and raw not in allowed:
            self.fail(name, f"should be one of the following; [{', '.join(allowed)}]", raw)
            return None
        return raw


def page(query: Query, max_limit: int) -> tuple[int, int]:
    """``(skip, limit)``: skip >= 0 (default 0), limit 1..max_limit (default 20)."""
    reader = _Reader(query)
    skip = reader.integer("skip", 0, 0, None)
    limit = reader.integer("limit", 20, 1, max_limit)
    reader.done()
    assert skip is not None
    assert limit is not None
    return skip, limit


def _all(checks: list[Predicate]) -> Predicate:
    if not checks:
        return lambda record: True
    if len(checks) == 1:
        return checks[0]
    return lambda record: all(check(record) for check in checks)


def _fold(value: Any) -> str:
    return value.casefold() if isinstance(value, str) else ""


def order_filter(query: Query) -> Predicate:
    """``orderNumber``, ``orderName``, ``email`` (case-insensitive, exact), ``minCreateDate``,
    ``maxCreateDate`` (on ``createDate``, inclusive), ``financialStatus``."""
    reader = _Reader(query)
    number = reader.text("orderNumber")
    name = reader.text("orderName")
    email = reader.text("email")
    low = reader.date("minCreateDate")
    high = reader.date("maxCreateDate")
    financial = reader.choice("financialStatus", FINANCIAL_STATUSES)
    reader.done()
    checks: list[Predicate] = []
    if number is not None:
        checks.append(lambda o: o.get("orderNumber") == number)
    if name is not None:
        checks.append(lambda o: o.get("orderName") == name)
    if email is not None:
        folded = email.casefold()
        checks.append(lambda o: _fold(o.get("customerEmail")) == folded)
    if low is not None:
        checks.append(lambda o: o["createDate"] >= low)
    if high is not None:
        checks.append(lambda o: o["createDate"] <= high)
    if financial is not None:
        checks.append(lambda o: o.get("financialStatus") == financial)
    return _all(checks)


def product_filter(query: Query) -> Predicate:
    """``sku`` (a variant's, exact), ``categoryId`` (the sandbox has no categories: nothing
    matches), ``status`` (``active``/``inActive``/``any``; default any, the spec names no
    default), ``externalProductIds``."""
    reader = _Reader(query)
    sku = reader.text("sku")
    category = reader.integer("categoryId", None, 0, None)
    status = reader.choice("status", PRODUCT_STATUSES)
    external_ids = reader.many("externalProductIds")
    reader.done()
    checks: list[Predicate] = []
    if sku is not None:
        checks.append(lambda p: any(v.get("sku") == sku for v in p.get("variants", ())))
    if category is not None:
        checks.append(lambda p: False)  # no product categories in the sandbox
    if status == "active":
        checks.append(lambda p: bool(p.get("isActive")))
    elif status == "inActive":
        checks.append(lambda p: not p.get("isActive"))
    if external_ids is not None:
        wanted = frozenset(external_ids)
        checks.append(lambda p: p.get("externalProductId") in wanted)
    return _all(checks)


_NEEDS_ACTION = frozenset({"Requested", "Received"})


def rma_filter(query: Query) -> Predicate:
    """Every documented RMA filter. ``minCreateDate``/``maxCreateDate`` on
    ``timeline.createDate``; list filters match when any value does (``returnType`` and
    ``returnReasonCode`` when any item has one); ``email`` matches ``rmaEmail`` or
    ``orderEmail``; ``showArchived`` true/false keeps only archived/non-archived ones;
    ``thirdPartyOnly``, ``onlyFlaggedRmas`` true keep only those; ``requiresAction`` (the
    spec does not say what it covers: the sandbox counts ``Requested`` RMAs awaiting
    authorisation and ``Received`` ones not yet processed); ``onlyWarrantyOutOfStock`` true
    matches nothing (the sandbox never sets that status code)."""
    reader = _Reader(query)
    low = reader.date("minCreateDate")
    high = reader.date("maxCreateDate")
    statuses = reader.many("workflowStatus", WORKFLOW_STATUSES)
    types = reader.many("returnType", RETURN_TYPES)
    reasons = reader.many("returnReasonCode")
    emails = reader.many("email")
    order_name = reader.text("orderName")
    order_number = reader.text("externalOrderNumber")
    archived = reader.boolean("showArchived")
    third_party = reader.boolean("thirdPartyOnly")
    requires_action = reader.boolean("requiresAction")
    flagged = reader.boolean("onlyFlaggedRmas")
    warranty_oos = reader.boolean("onlyWarrantyOutOfStock")
    reader.done()
    checks: list[Predicate] = []
    if low is not None:
        checks.append(lambda r: r["timeline"]["createDate"] >= low)
    if high is not None:
        checks.append(lambda r: r["timeline"]["createDate"] <= high)
    if statuses is not None:
        wanted_statuses = frozenset(statuses)
        checks.append(lambda r: r["workflowStatus"] in wanted_statuses)
    if types is not None:
        wanted_types = frozenset(types)
        checks.append(lambda r: any(i["returnType"] in wanted_types for i in r["rmaItems"]))
    if reasons is not None:
        wanted_reasons = frozenset(reasons)
        checks.append(
            lambda r: any(i.get("returnReasonCode") in wanted_reasons for i in r["rmaItems"])
        )
    if emails is not None:
        wanted_emails = frozenset(e.casefold() for e in emails)
        checks.append(
            lambda r: (
                _fold(r.get("rmaEmail")) in wanted_emails
                or _fold(r.get("orderEmail")) in wanted_emails
            )
        )
    if order_name is not None:
        checks.append(lambda r: r.get("orderName") == order_name)
    if order_number is not None:
        checks.append(lambda r: r.get("externalOrderNumber") == order_number)
    if archived is not None:
        checks.append(lambda r: bool(r.get("isArchived")) is archived)
    if third_party:
        checks.append(lambda r: bool(r.get("isThirdParty")))
    if requires_action is not None:
        checks.append(
            lambda r: (
                (r["workflowStatus"] in _NEEDS_ACTION and not r.get("isAllProcessed"))
                is requires_action
            )
        )
    if flagged:
        checks.append(lambda r: bool(r.get("flagged")))
    if warranty_oos:
        checks.append(lambda r: False)
    return _all(checks)
