"""Money is an ``int`` of the currency's minor units (ISO 4217: cents, yen, fils); major
units exist only at the edges, as ``Decimal``.

One conversion, :func:`major_to_minor`, and its inverse, :func:`minor_to_major`, both by the
currency's exponent (:func:`minor_unit_exponent`: JPY 0, USD 2, KWD 3).

Rounding rule: an amount finer than the minor unit is rounded **once**, straight from its exact
decimal value, with ``ROUND_HALF_UP`` -- halves round away from zero, so ``"0.005"`` USD is 1
cent and ``"-0.005"`` is -1; ``"19.994"`` is 1999. With ``exact=True`` such an amount is refused
instead (``MappingError`` naming the field): for documents that only ever carry whole minor
units, where a finer amount is a wrong currency, not a rounding. No ``float`` is ever involved:
a float argument is a ``TypeError`` (parse JSON numbers with ``parse_float=Decimal`` or pass the
text). Amounts must fit a signed 64-bit integer of minor units, so every store can hold them.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation

from bridge.errors import MappingError

__all__ = [
    "MAX_CENTS",
    "dollars_to_cents",
    "major_to_minor",
    "minor_to_major",
    "minor_unit_exponent",
]

MAX_CENTS = 2**63 - 1

_ONE = Decimal(1)
# Wide enough that quantizing any amount within range is exact; Inexact is never trapped
# because quantize rounds exactly once, by ROUND_HALF_UP.
_CONTEXT = Context(prec=40, rounding=ROUND_HALF_UP, traps=[InvalidOperation])


def dollars_to_cents(value: Decimal | str | int, *, field: str | None = None) -> int:
    """Two-decimal amount to cents, half up: :func:`major_to_minor` in a two-decimal currency.

    Kept for the amounts whose currency always has two decimals (the ReturnLogic orders'
    two-decimal fast path, the sandboxes' own bookkeeping); everything else names its currency.
    """
    return major_to_minor(value, "USD", field=field)


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


def major_to_minor(
    amount: Decimal | str | int,
    currency: str,
    *,
    field: str | None = None,
    exact: bool = False,
) -> int:
    """An amount in ``currency``'s major units (``Decimal("18")`` JPY, ``"1.5"`` KWD) as an
    integer of its minor units (18, 1500), rounded once, half up.

    ``exact``: an amount with more decimals than the currency has (``"18.5"`` JPY) is a
    ``MappingError`` on ``field`` instead of being rounded. Text that is not a number, NaN,
    infinities and out-of-range amounts are a ``MappingError`` on ``field`` too; ``float`` and
    ``bool`` raise ``TypeError``.
    """
    if isinstance(amount, bool) or not isinstance(amount, Decimal | str | int):
        raise TypeError(
            f"money takes Decimal, str or int, not {type(amount).__name__}"
            " (parse JSON with parse_float=Decimal)"
        )
    exponent = minor_unit_exponent(currency)
    if isinstance(amount, int):
        return _checked(amount * 10**exponent, amount, field)
    value = _parse(amount, field) if isinstance(amount, str) else amount
    if not value.is_finite():
        raise MappingError(f"amount must be a finite number, got {amount!r}", field=field)
    if value.adjusted() > 20:
        raise MappingError(f"amount out of range: {amount!r}", field=field)
    scaled = value.scaleb(exponent, context=_CONTEXT)
    minor = int(scaled.quantize(_ONE, context=_CONTEXT))
    if exact and minor != scaled:
        places = f"{exponent} decimal place{'' if exponent == 1 else 's'}"
        where = f"{field}: " if field else ""
        raise MappingError(
            f"{where}{amount} {currency.upper()} has more decimals than the currency's {places}",
            field=field,
        )
    return _checked(minor, amount, field)


def minor_to_major(minor: int, currency: str) -> Decimal:
    """The exact major units of ``minor``, with the currency's decimal places:
    ``1999 USD -> Decimal("19.99")``, ``1800 JPY -> Decimal("1800")``, ``12345 KWD -> "12.345"``."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"minor_to_major takes int, not {type(minor).__name__}")
    return Decimal(minor).scaleb(-minor_unit_exponent(currency), context=_CONTEXT)
