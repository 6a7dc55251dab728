"""ReturnLogic address -> canonical Address, shared by orders and RMAs."""

from __future__ import annotations

from bridge.domain import Address
from bridge.errors import MappingError
from mappings.returnlogic.wire import RlAddress

__all__ = ["from_rl_address", "full_name", "make_address"]


def full_name(first: str | None, last: str | None) -> str | None:
    """``"First Last"``, either part alone, or None: never made up."""
    if first and last:
        return f"{first} {last}"
    return first or last


def make_address(
    where: str,
    *,
    address1: str | None,
    address2: str | None,
    city: str | None,
    region_code: str | None,
    postcode: str | None,
    country_code: str | None,
    name: str | None,
    phone: str | None,
) -> Address | None:
    """``address1``->street1, ``address2``->street2, ``regionCode``->state, ``postcode``->zip_code,
    ``countryCode``->country_code (upper case). Callers pass ``region`` (the name) as
    ``region_code`` when there is no code (an Irish county); a country without regions or
    postcodes (Hong Kong) leaves them None (:func:`mappings._countries.address_gaps`).

    None when ``address1``, ``city`` and ``countryCode`` are all blank; ``MappingError`` naming
    the missing field (``shippingAddress.city``) when only some are.
    """
    if address1 is None and city is None and country_code is None:
        return None
    if address1 is None:
        raise MappingError(f"{where} has no address1", field=f"{where}.address1")
    if city is None:
        raise MappingError(f"{where} has no city", field=f"{where}.city")
    if country_code is None:
        raise MappingError(f"{where} has no countryCode", field=f"{where}.countryCode")
    return Address(
        name=name,
        street1=address1,
        street2=address2,
        city=city,
        state=region_code,
        zip_code=postcode,
        country_code=country_code.upper(),
        phone=phone,
    )


def from_rl_address(rl: RlAddress | None, where: str) -> Address | None:
    """A validated wire address; name from ``name``, else ``firstName lastName``."""
    if rl is None:
        return None
    return make_address(
        where,
        address1=rl.address1,
        address2=rl.address2,
        city=rl.city,
        region_code=rl.regionCode or rl.region,
        postcode=rl.postcode,
        country_code=rl.countryCode,
        name=rl.name or full_name(rl.firstName, rl.lastName),
        phone=rl.phone,
    )
