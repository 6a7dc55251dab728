"""Money is an ``int`` of minor units (cents); dollars exist only at the edges, as ``Decimal``.

Rounding rule: a decimal-dollar amount is rounded **once**, straight from its exact decimal value
to the cent, with ``ROUND_HALF_UP`` -- halves round away from zero, so ``"0.005"`` is 1 cent and
``"-0.005"`` is -1 cent; ``"19.994"`` is 1999. No ``float`` is ever involved: a float argument is
a ``TypeError`` (parse JSON numbers with ``parse_float=Decimal`` or pass the text). Amounts must
fit a signed 64-bit integer of cents, so every store can hold them.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

from bridge.errors import MappingError

__all__ = [
    "MAX_CENTS",
    "cents_to_dollars",
    "dollars_to_cents",
    "major_to_minor",
    "minor_unit_exponent",
]

MAX_CENTS = 2**63 - 1

_CENT = Decimal("0.01")
# Wide enough that quantizing any amount within range is exact; Inexact is never trapped
# because quantize rounds exactly once, by ROUND_HALF_UP.
_CONTEXT = Context(prec=40, rounding=ROUND_HALF_UP, traps=[InvalidOperation])


def dollars_to_cents(value: Decimal | str | int, *, field: str | None = None) -> int:
    """Convert a decimal-dollar amount to integer cents, rounding half up (away from zero).

    ``field`` names the input in the ``MappingError`` raised for text that is not a number,
    NaN, infinities and out-of-range amounts. ``float`` and ``bool`` raise ``TypeError``.
    """
    if isinstance(value, bool) or not isinstance(value, Decimal | str | int):
        raise TypeError(
            f"dollars_to_cents takes Decimal, str or int, not {type(value).__name__}"
            " (parse JSON with parse_float=Decimal)"
        )
    if isinstance(value, int):
        return _checked(value * 100, value, field)
    amount = _parse(value, field) if isinstance(value, str) else value
    if not amount.is_finite():
        raise MappingError(f"amount must be a finite number, got {value!r}", field=field)
    if amount.adjusted() > 20:
        raise MappingError(f"amount out of range: {value!r}", field=field)
    cents = int(amount.quantize(_CENT, context=_CONTEXT).scaleb(2, context=_CONTEXT))
    return _checked(cents, value, field)


def cents_to_dollars(cents: int) -> Decimal:
    """The exact dollars of ``cents``, two decimal places: ``1999 -> Decimal("19.99")``."""
    if isinstance(cents, bool) or not isinstance(cents, int):
        raise TypeError(f"cents_to_dollars takes int, not {type(cents).__name__}")
    return Decimal(cents).scaleb(-2, context=_CONTEXT)


def _parse(text: str, field: str | None) -> Decimal:
    try:
        return Decimal(text.strip(), context=_CONTEXT)
    except InvalidOperation:
        raise MappingError(f"not a decimal amount: {text!r}", field=field) from None


def _checked(cents: int, value: object, field: str | None) -> int:
    if not -MAX_CENTS <= cents <= MAX_CENTS:
        raise MappingError(f"amount out of range: {value!r}", field=field)
    return cents


# ISO 4217 minor units of the currencies that do not use two decimals (every other code has 2).
_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(
        (
            "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
            "VND", "VUV", "XAF", "XOF", "XPF",
        ),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}  # fmt: skip


def minor_unit_exponent(currency: str) -> int:
    """Decimal places of ``currency``'s minor unit (ISO 4217): JPY 0, USD 2, KWD 3, CLF 4."""
    return _MINOR_UNITS.get(currency.upper(), 2)


def major_to_minor(amount: Decimal, currency: str) -> int:
    """An exact decimal amount in major units (``Decimal("18")`` JPY, ``Decimal("1.5")`` KWD)
    as an integer of ``currency``'s minor units (18, 1500), rounded once, half up."""
    exponent = minor_unit_exponent(currency)
    quantum = Decimal(1).scaleb(-exponent)
    return int(amount.quantize(quantum, context=_CONTEXT).scaleb(exponent, context=_CONTEXT))
