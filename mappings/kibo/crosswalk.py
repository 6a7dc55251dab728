"""The line crosswalk: which Kibo ``orderItemID`` (and ``orderID``) an order line is.

Kibo's ``orderItemID`` is "a unique identifier for the order item" (an integer, minimum 0) of
*Kibo's* order; the order source's line id (a Shopify line id as ReturnLogic reports it, a
guide line ``"1"``) is another system's number. The crosswalk holds, per retailer,
``(order_id, order_line_id) -> orderItemID`` (plus the order's Kibo ``orderID`` when known),
filled by:

- **import**: a CSV the retailer exports from Kibo (:func:`parse_crosswalk_csv`, columns
  ``order_id,line_id,order_item_id`` and optionally ``kibo_order_id``; a header row is
  required, extra columns are ignored, every bad row is reported by its line number);
- **the order flow**: the order snapshot the bridge stored, when the order source carries
  Kibo's ids in a line field (:func:`order_item_id_from_order`, field chosen by config:
  ``line_id`` -- ReturnLogic's ``externalOrderItemId`` when the shop is Kibo -- or
  ``returnlogic_id`` -- ``rlOrderItemId``) and its ``orderID`` in an order field
  (:func:`kibo_order_id_from_order`: ``secondary_id`` = ``externalOrderId``, or ``id``).

Only canonical decimal digits are ids (``"007"`` is not 7): nothing is guessed. Pure: no I/O.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from bridge.domain import Order
from bridge.errors import MappingError

__all__ = [
    "CROSSWALK_COLUMNS",
    "CrosswalkRow",
    "LineField",
    "OrderField",
    "crosswalk_csv",
    "exchanged_original_line",
    "kibo_order_id_from_order",
    "numeric_id",
    "order_item_id_from_order",
    "parse_crosswalk_csv",
]

LineField = Literal["none", "line_id", "returnlogic_id"]
"""Where an order snapshot's line carries Kibo's ``orderItemID``."""
OrderField = Literal["none", "secondary_id", "id"]
"""Where an order snapshot carries Kibo's ``orderID``."""

CROSSWALK_COLUMNS = ("order_id", "line_id", "order_item_id", "kibo_order_id")
_REQUIRED = CROSSWALK_COLUMNS[:3]
_DIGITS = re.compile(r"(?:0|[1-9][0-9]*)")
_MAX_ID = 2**63 - 1


def numeric_id(text: str | None, *, minimum: int = 0) -> int | None:
    """``text`` as an id when it is canonical decimal digits in ``minimum .. 2**63-1``."""
    if text is None or not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if minimum <= value <= _MAX_ID else None


@dataclass(frozen=True)
class CrosswalkRow:
    order_id: str
    line_id: str
    order_item_id: int
    kibo_order_id: int | None = None


def parse_crosswalk_csv(text: str) -> list[CrosswalkRow]:
    """The rows of a crosswalk CSV; a ``MappingError`` listing every bad row (none imported)."""
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or ()]
    missing = [name for name in _REQUIRED if name not in header]
    if missing:
        raise MappingError(
            f"crosswalk CSV: the header must name {', '.join(_REQUIRED)} (missing:"
            f" {', '.join(missing)})",
            field="header",
        )
    reader.fieldnames = header
    rows: list[CrosswalkRow] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for number, raw in enumerate(reader, start=2):
        values = {k: (v or "").strip() for k, v in raw.items() if k is not None}
        order_id, line_id = values.get("order_id", ""), values.get("line_id", "")
        item = numeric_id(values.get("order_item_id"))
        kibo_text = values.get("kibo_order_id", "")
        kibo_order = numeric_id(kibo_text, minimum=1) if kibo_text else None
        if not order_id or not line_id:
            problems.append(f"line {number}: order_id and line_id are required")
        elif item is None:
            problems.append(
                f"line {number}: order_item_id {values.get('order_item_id')!r} is not an"
                " integer >= 0"
            )
        elif kibo_text and kibo_order is None:
            problems.append(f"line {number}: kibo_order_id {kibo_text!r} is not an integer >= 1")
        elif (order_id, line_id) in seen:
            problems.append(
                f"line {number}: order {order_id!r} line {line_id!r} is also on line"
                f" {seen[(order_id, line_id)]}"
            )
        else:
            seen[(order_id, line_id)] = number
            rows.append(CrosswalkRow(order_id, line_id, item, kibo_order))
    if problems:
        raise MappingError("crosswalk CSV: " + "; ".join(problems), field="rows")
    return rows


def crosswalk_csv(rows: Iterable[CrosswalkRow]) -> str:
    """``rows`` as a CSV that :func:`parse_crosswalk_csv` reads back."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CROSSWALK_COLUMNS)
    for row in rows:
        writer.writerow(
            [
                row.order_id,
                row.line_id,
                row.order_item_id,
                "" if row.kibo_order_id is None else row.kibo_order_id,
            ]
        )
    return out.getvalue()


def order_item_id_from_order(order: Order, line_id: str, field: LineField) -> int | None:
    """Kibo's ``orderItemID`` of ``order``'s line ``line_id``, read from ``field``."""
    if field == "none":
        return None
    line = next((line for line in order.lines if line.id == line_id), None)
    if line is None:
        return None
    if field == "line_id":
        return numeric_id(line.id)
    return numeric_id(line.refs.get("returnlogic"))


def kibo_order_id_from_order(order: Order, field: OrderField) -> int | None:
    """Kibo's ``orderID`` of ``order``, read from ``field``."""
    if field == "none":
        return None
    return numeric_id(order.secondary_id if field == "secondary_id" else order.id, minimum=1)


def exchanged_original_line(lines: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """The one original ``(order_id, line_id)`` of ``lines`` (the original lines recorded as
    exchanged into an exchange order); ``None`` when none or several (then only the crosswalk
    can say: never guessed)."""
    distinct = list(dict.fromkeys(lines))
    return distinct[0] if len(distinct) == 1 else None
