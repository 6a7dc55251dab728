"""Countries' addressing rules: which need a region (state, province) and which have postcodes.

Partners' order schemas (Optoro's Returns Portal Orders) require ``state`` and ``zip_code`` on
every address, yet many countries have no postcode (Hong Kong, the United Arab Emirates...) and
most address without a region (Ireland's county is optional, as are the UK's and France's
regions). An address is complete when it has what its country's addressing needs; the gaps of an
incomplete one are reported (:func:`address_gaps`) so the order is still sent with what is known
and an operator sees what is missing.
"""

from __future__ import annotations

from bridge.domain import Address

__all__ = [
    "COUNTRIES_POSTCODE_OPTIONAL",
    "COUNTRIES_REQUIRING_REGION",
    "COUNTRIES_WITHOUT_POSTCODE",
    "address_gaps",
]

_NO_POSTCODE = """AE AG AN AO AW BF BI BJ BO BS BW BZ CD CF CG CI CK CM DJ DM ER FJ GA GD GH GM
GQ GY HK HM JM KE KI KM KN KP LC ML MO MR MS MW NR NU PA QA RW SB SC SL SO SR SS ST SY TD TF TG TK
TL TO TT TV UG VU YE ZW"""
COUNTRIES_WITHOUT_POSTCODE = frozenset(_NO_POSTCODE.split())
"""ISO 3166-1 alpha-2 codes of countries whose postal addresses have no postcode."""

COUNTRIES_POSTCODE_OPTIONAL = frozenset({"IE"})
"""Countries with postcodes that many addresses still go without (Ireland's Eircode)."""

_REGION = "AR AU BR CA CN ID IN IT JP MX MY US"
COUNTRIES_REQUIRING_REGION = frozenset(_REGION.split())
"""Countries whose postal addresses need a state, province or prefecture."""


def address_gaps(address: Address | None) -> list[str]:
    """What ``address`` lacks that its country's addressing needs (empty when complete)."""
    if address is None:
        return []
    country = address.country_code.upper()
    gaps = []
    if address.state is None and country in COUNTRIES_REQUIRING_REGION:
        gaps.append(f"no state, which addresses in {country} need: sent as ''")
    has_none = country in COUNTRIES_WITHOUT_POSTCODE or country in COUNTRIES_POSTCODE_OPTIONAL
    if address.zip_code is None and not has_none:
        gaps.append(f"no postcode, which addresses in {country} use: sent as ''")
    return gaps
