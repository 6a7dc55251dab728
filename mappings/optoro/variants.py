"""Exchange Variants (``GET /sku/{variant_identifier}/variants``) <-> :class:`Variant`.

The response lists the variants a shopper may exchange for, each with its ``attributes``
(``Color``, ``Size``, ...). When a variant is sized along more than one dimension (the retailer
names them, e.g. ``("Size", "Variant", "Length")``), the guide wants one more attribute,
``all_size``, whose value is those dimensions' values joined with ``" | "``: ``XL | PETITE | 32``
(guide scenarios 04 and 13). Its values follow the order of the size dimensions given; it comes
last among the attributes, and is not sent when a variant has one size dimension or none.

``all_size`` is derived, so :func:`parse_variants_response` drops it and
:func:`variants_response` recomputes it: ``variants_response(parse_variants_response(r), dims)``
gives back ``r``. Inactive variants (``is_active=False``) are not offered, nor are variants
without a price: Optoro decides from ``unit_price_amount_cents`` whether to show a variant, and
the description requires it, so a catalog that has no price for a variant (ReturnLogic's
documented products carry none) cannot offer it. :func:`offered` says which are left out, for
the caller to log and count; the others are still served.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from pydantic import Field

from bridge.domain import Variant, VariantAttribute
from mappings._json import Body
from mappings.optoro._wire import (
    Cents,
    Id,
    Int,
    Str,
    WireIn,
    WireOut,
    build,
    dump_out,
    parse,
)

__all__ = [
    "ALL_SIZE",
    "SIZE_SEPARATOR",
    "AttributeIn",
    "AttributeOut",
    "VariantIn",
    "VariantOut",
    "VariantsResponseIn",
    "VariantsResponseOut",
    "all_size",
    "offered",
    "parse_variants_response",
    "variant_attributes",
    "variants_response",
]

ALL_SIZE = "all_size"
SIZE_SEPARATOR = " | "


class AttributeIn(WireIn):
    name: Str
    value: Str

    @property
    def is_all_size(self) -> bool:
        return self.name.casefold() == ALL_SIZE

    def canonical(self) -> VariantAttribute:
        return VariantAttribute(name=self.name, value=self.value)


class AttributeOut(WireOut):
    name: Str
    value: Str


class VariantIn(WireIn):
    attributes: list[AttributeIn] = Field(default_factory=list)
    quantity_in_stock: Int
    sku: Id
    title: Str
    unit_price_amount_cents: Cents
    image_url: Str | None = None
    product_url: Str | None = None


class VariantsResponseIn(WireIn):
    variants: list[VariantIn] = Field(default_factory=list)


class VariantOut(WireOut):
    attributes: list[AttributeOut]
    quantity_in_stock: Int
    sku: Str
    title: Str
    unit_price_amount_cents: Cents
    image_url: Str | None = None
    product_url: Str | None = None


class VariantsResponseOut(WireOut):
    variants: list[VariantOut]


def all_size(attributes: Sequence[VariantAttribute], size_dimensions: Sequence[str]) -> str | None:
    """The ``all_size`` value of these attributes, or None when fewer than two are sizes."""
    by_name: dict[str, str] = {}
    for attribute in attributes:
        by_name.setdefault(attribute.name.casefold(), attribute.value)
    sizes = [
        by_name[name.casefold()]
        for name in dict.fromkeys(size_dimensions)
        if by_name.get(name.casefold())
    ]
    return SIZE_SEPARATOR.join(sizes) if len(sizes) > 1 else None


def variant_attributes(variant: Variant, size_dimensions: Sequence[str]) -> list[dict[str, str]]:
    """A variant's wire attributes: its own (minus any stale ``all_size``), then ``all_size``."""
    own = [a for a in variant.attributes if a.name.casefold() != ALL_SIZE]
    wire = [{"name": a.name, "value": a.value} for a in own]
    combined = all_size(own, size_dimensions)
    if combined is not None:
        wire.append({"name": ALL_SIZE, "value": combined})
    return wire


def offered(variants: Sequence[Variant]) -> tuple[list[Variant], list[Variant]]:
    """``(offered, unpriced)``: the active variants with a price, and the active ones left out
    for having none (inactive variants are in neither: they are never offered)."""
    active = [v for v in variants if v.is_active]
    return (
        [v for v in active if v.unit_price_cents is not None],
        [v for v in active if v.unit_price_cents is None],
    )


def variants_response(
    variants: Sequence[Variant], size_dimensions: Sequence[str]
) -> dict[str, Any]:
    """The Exchange Variants response body offering ``variants`` (inactive and unpriced ones
    left out, see :func:`offered`)."""
    wire = {
        "variants": [
            {
                "attributes": variant_attributes(variant, size_dimensions),
                "quantity_in_stock": variant.quantity_in_stock,
                "sku": variant.sku,
                "title": variant.title,
                "unit_price_amount_cents": variant.unit_price_cents,
                "image_url": variant.image_url,
                "product_url": variant.product_url,
            }
            for variant in offered(variants)[0]
        ]
    }
    return dump_out(VariantsResponseOut, wire, what="exchange variants response")


def parse_variants_response(body: Body) -> list[Variant]:
    """The variants of an Exchange Variants response (``all_size`` dropped: it is derived)."""
    response = parse(VariantsResponseIn, body, what="exchange variants response")
    return [
        build(partial(_variant_in, variant), f"variants[{i}]", "exchange variants response")
        for i, variant in enumerate(response.variants)
    ]


def _variant_in(variant: VariantIn) -> Variant:
    return Variant(
        sku=variant.sku,
        title=variant.title,
        attributes=tuple(a.canonical() for a in variant.attributes if not a.is_all_size),
        quantity_in_stock=variant.quantity_in_stock,
        unit_price_cents=variant.unit_price_amount_cents,
        image_url=variant.image_url,
        product_url=variant.product_url,
    )
