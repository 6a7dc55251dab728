"""Comparing what the bridge sent or answered with the guide's samples.

Two comparisons:

- :func:`json_diff` is exact (Exchange Variants and Exchange Order answers).
- :func:`rpo_order_diff` compares a Returns Portal Order the bridge sent with the guide's sample,
  normalised as ``shared/README.md`` says: the bridge sends what satisfies Optoro's description
  (the stricter contract) while the samples are as published, so

  * header ``product_amount_cents``/``tax_amount_cents``/``total_amount_cents`` of a sample whose
    header is not the sum of its lines (the refunded multi-line samples of scenarios 02, 06, 11
    and 15) are replaced by the line sums (:func:`expected_rpo_order`);
  * a field the description requires and the sample omits (``refunds[].refund_transactions``)
    may be present with any value;
  * a ``null`` the sample sends where the description wants a string (scenario 20's
    ``tracking_number``) may be left out;
  * two ISO 8601 timestamps with a UTC offset are equal when they name the same instant.

:func:`conforming_rpo_order` turns a sample into what a conforming bridge sends (used by tests to
play the bridge's part; the sandbox accepts every one of them).
"""

from __future__ import annotations

import copy
import re
from datetime import datetime
from typing import Any

from adapters.optoro.schemas import validate

__all__ = [
    "conforming_rpo_order",
    "expected_rpo_order",
    "header_sum_mismatches",
    "json_diff",
    "rpo_order_diff",
    "rpo_request",
]

_REQUIRED = re.compile(r"^(?P<path>.*): '(?P<name>[^']+)' is a required property$")
_INDEX = re.compile(r"\[\d+\]")
_MAX_REPR = 80


def rpo_request(*orders: dict[str, Any]) -> dict[str, Any]:
    """The Returns Portal Orders body carrying ``orders``."""
    return {"returns_portal_order": {"orders": list(orders)}}


def header_sum_mismatches(order: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """``{header field: (as sent, sum of the lines)}`` for product and tax amounts that differ.

    Tolerates a malformed order (missing or non-integer amounts count as 0) since it is used on
    whatever a client sent.
    """
    items = order.get("items")
    items = items if isinstance(items, list) else []
    out: dict[str, tuple[int, int]] = {}
    for name in ("product_amount_cents", "tax_amount_cents"):
        total = sum(_int(item.get(name)) for item in items if isinstance(item, dict))
        header = order.get(name)
        if isinstance(header, int) and header != total:
            out[name] = (header, total)
    return out


def expected_rpo_order(sample: dict[str, Any]) -> dict[str, Any]:
    """``sample`` with header product/tax amounts computed from its lines, where they differ.

    ``total_amount_cents`` moves by the same amounts, so shipping, shipping tax and order-level
    discounts stay as published. Samples whose header already matches come back unchanged
    (as a copy).
    """
    expected = copy.deepcopy(sample)
    for name, (header, lines) in header_sum_mismatches(sample).items():
        expected[name] = lines
        if isinstance(expected.get("total_amount_cents"), int):
            expected["total_amount_cents"] += lines - header
    return expected


def conforming_rpo_order(sample: dict[str, Any]) -> dict[str, Any]:
    """What a bridge that satisfies Optoro's description sends for ``sample``.

    Headers from the lines (:func:`expected_rpo_order`), ``refund_transactions: []`` on each
    refund lacking it, and no ``null`` values (the description types no field as nullable).
    """
    order = _drop_nulls(expected_rpo_order(sample))
    for refund in order.get("refunds") or []:
        if isinstance(refund, dict):
            refund.setdefault("refund_transactions", [])
    result: dict[str, Any] = order
    return result


def rpo_order_diff(sample: dict[str, Any], actual: Any, *, limit: int = 20) -> list[str]:
    """How ``actual`` (an order the bridge sent) differs from the guide's ``sample``, normalised
    as the module docstring says; ``[]`` when they match."""
    allowed = _required_but_missing(sample)
    diffs: list[str] = []
    _diff(expected_rpo_order(sample), actual, "", diffs, allowed=allowed, lenient=True)
    return _capped(diffs, limit)


def json_diff(expected: Any, actual: Any, *, limit: int = 20) -> list[str]:
    """Exact JSON comparison: one ``"path: ..."`` line per difference (at most ``limit``)."""
    diffs: list[str] = []
    _diff(expected, actual, "", diffs, allowed=frozenset(), lenient=False)
    return _capped(diffs, limit)


# internals ---------------------------------------------------------------------------------


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _required_but_missing(sample: dict[str, Any]) -> frozenset[tuple[str, str]]:
    """``(parent path pattern, field)`` the description requires and ``sample`` omits."""
    allowed = set()
    for problem in validate("rpo_order", sample):
        match = _REQUIRED.match(problem)
        if match:
            path = "" if match["path"] == "<root>" else match["path"]
            allowed.add((_pattern(path), match["name"]))
    return frozenset(allowed)


def _pattern(path: str) -> str:
    return _INDEX.sub("[*]", path)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def _capped(diffs: list[str], limit: int) -> list[str]:
    if len(diffs) <= limit:
        return diffs
    return [*diffs[:limit], f"... and {len(diffs) - limit} more"]


def _same_instant(a: str, b: str) -> bool:
    try:
        first, second = datetime.fromisoformat(a), datetime.fromisoformat(b)
    except ValueError:
        return False
    if "T" not in a or "T" not in b or first.tzinfo is None or second.tzinfo is None:
        return False
    return first == second


def _diff(
    expected: Any,
    actual: Any,
    path: str,
    out: list[str],
    *,
    allowed: frozenset[tuple[str, str]],
    lenient: bool,
) -> None:
    where = path or "<root>"
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key, value in expected.items():
            if key in actual:
                _diff(value, actual[key], _join(path, key), out, allowed=allowed, lenient=lenient)
            elif not (lenient and value is None):
                out.append(f"{_join(path, key)}: missing (expected {_show(value)})")
        parent = _pattern(path)
        for key in actual.keys() - expected.keys():
            if (parent, key) not in allowed:
                out.append(f"{_join(path, key)}: unexpected (got {_show(actual[key])})")
        return
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            out.append(f"{where}: expected {len(expected)} entries, got {len(actual)}")
        for i, (exp, act) in enumerate(zip(expected, actual, strict=False)):
            _diff(exp, act, f"{path}[{i}]", out, allowed=allowed, lenient=lenient)
        return
    if type(expected) is not type(actual) and not (
        isinstance(expected, int | float)
        and isinstance(actual, int | float)
        and not isinstance(expected, bool)
        and not isinstance(actual, bool)
    ):
        out.append(f"{where}: expected {_show(expected)}, got {_show(actual)}")
        return
    if expected == actual:
        return
    if lenient and isinstance(expected, str) and _same_instant(expected, actual):
        return
    out.append(f"{where}: expected {_show(expected)}, got {_show(actual)}")
