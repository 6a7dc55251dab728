"""ReturnLogic catalog (``GET /v1/products``) -> canonical :class:`~bridge.domain.Variant` s,
the exchange candidates offered to the shopper.

One Variant per ReturnLogic variant that has a SKU (a variant without one cannot be ordered by
SKU and is left out):

* ``sku``; ``variant_id`` = ``rlProductVariantId``, ``product_id`` = ``rlProductId`` (the
  ReturnLogic catalog ids, the ones an order is created with); ``refs["returnlogic"]`` =
  ``rlProductVariantId``; ``upc`` = ``barcode``.
* ``title``: ``"<product name> - <variant name>"``; the product name alone when the variant has
  no name of its own (none, the same, or Shopify's ``Default Title``); else the variant name;
  else the SKU.
* ``attributes``: the variant's ``options`` in ``position`` order (ties keep list order), each
  ``(name, value)``; a name missing on the variant option is taken from the product option with
  the same ``externalOptionId``, else the same ``position``. An option without a name or value
  is a ``MappingError``.
* ``quantity_in_stock`` = ``inventoryQuantity`` (may be negative); ``unit_price_cents`` = the
  variant ``price``, else the product ``price``, else None, in the ISO 4217 minor units of
  ``currency``: a ReturnLogic product names no currency, so the caller passes the store's
  (configured; default ``USD``), also set as the
  variant's ``currency``. A price with more decimals than the currency has (``12.5`` for a
  JPY store) is a ``MappingError`` on its ``price``, never rounded.
* ``image_url``: the variant ``imageUrl``, else the product ``imageUrl``, else
  ``image_fallback``.
* ``product_url``: ``product_url_template.format(**fields)`` with the fields below, each
  URL-quoted; None when the template is None or uses a field this variant has no value for.
  A template naming any other field is a ``MappingError`` on ``product_url_template``.
* ``is_active``: product and variant both ``isActive``, ``isPublic`` and not ``isDeleted``.
* ``weight``/``weight_unit`` from ``weight``/``weightUnit`` (``lb oz g kg``), else ``grams`` in G.

Template fields: ``{product_id}`` rlProductId, ``{variant_id}`` rlProductVariantId,
``{external_product_id}`` externalProductId, ``{external_variant_id}`` externalVariantId,
``{sku}``, ``{handle}`` (the product's ``handle``: not in the spec, so only when the API sends
one). A Shopify storefront:
``https://shop.example.com/products/{handle}?variant={external_variant_id}``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from bridge.domain import Variant, VariantAttribute, WeightUnit, major_to_minor
from bridge.errors import MappingError
from mappings.returnlogic._fields import DEFAULT_CURRENCY, mapping_error, page_records
from mappings.returnlogic.wire import RlProduct, RlVariant

__all__ = [
    "TEMPLATE_FIELDS",
    "products_page",
    "products_to_variants",
    "variant_products",
    "variants_for_sku",
]

TEMPLATE_FIELDS = frozenset(
    {"product_id", "variant_id", "external_product_id", "external_variant_id", "sku", "handle"}
)

_WEIGHT_UNITS = {"lb": WeightUnit.LB, "oz": WeightUnit.OZ, "g": WeightUnit.G, "kg": WeightUnit.KG}
_DEFAULT_TITLE = "default title"


def products_page(body: bytes | str) -> list[dict[str, Any]]:
    """The products of one ``GET /v1/products`` page, as raw dicts."""
    return page_records(body, "GET /v1/products")


def products_to_variants(
    products: Sequence[Mapping[str, Any]],
    product_url_template: str | None,
    image_fallback: str | None = None,
    *,
    problems: list[MappingError] | None = None,
    currency: str = DEFAULT_CURRENCY,
) -> list[Variant]:
    """Every SKU'd variant of ``products`` (raw ``GET /v1/products`` records), in order.

    ``MappingError`` fields are prefixed with the product's index: ``[0].variants[1].price``.
    With a ``problems`` list, a variant (or product) that cannot be mapped is left out and
    its error appended there instead of raised, so one broken record ends only itself.
    """
    fields = _template_fields(product_url_template)
    variants: list[Variant] = []
    for index, product in enumerate(products):
        variants.extend(
            _product_variants(
                product,
                f"[{index}]",
                product_url_template,
                fields,
                image_fallback,
                problems,
                currency,
            )
        )
    return variants


def variants_for_sku(
    products: Sequence[Mapping[str, Any]],
    sku_or_variant_id: str,
    *,
    product_url_template: str | None = None,
    image_fallback: str | None = None,
    problems: list[MappingError] | None = None,
    currency: str = DEFAULT_CURRENCY,
) -> list[Variant]:
    """The variants of the product holding ``sku_or_variant_id``: the exchange candidates.

    The key matches a variant's ``sku``, ``rlProductVariantId`` or ``externalVariantId``; the
    first product (in list order) holding a match is used, and all its SKU'd variants are
    returned, the matched one included, inactive ones flagged ``is_active=False``. Unknown key:
    an empty list. Only the matched product is validated, so a broken unrelated record does not
    hide the candidates; ``problems`` as in :func:`products_to_variants`.
    """
    fields = _template_fields(product_url_template)
    key = sku_or_variant_id.strip()
    for index, product in enumerate(products):
        raw_variants = product.get("variants")
        if not isinstance(raw_variants, list):
            continue
        for raw in raw_variants:
            if isinstance(raw, Mapping) and key in (
                _text(raw.get("sku")),
                _text(raw.get("rlProductVariantId")),
                _text(raw.get("externalVariantId")),
            ):
                return _product_variants(
                    product,
                    f"[{index}]",
                    product_url_template,
                    fields,
                    image_fallback,
                    problems,
                    currency,
                )
    return []


def variant_products(products: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``rlProductVariantId`` -> ``rlProductId`` of every variant in ``products`` (raw records;
    ids that are not whole numbers are skipped): the index that finds a variant's product,
    which the API cannot search by variant id."""
    index: dict[str, int] = {}
    for product in products:
        product_id = _text(product.get("rlProductId"))
        raw_variants = product.get("variants")
        if product_id is None or not product_id.isdigit() or not isinstance(raw_variants, list):
            continue
        for raw in raw_variants:
            variant_id = _text(raw.get("rlProductVariantId")) if isinstance(raw, Mapping) else None
            if variant_id is not None and variant_id.isdigit():
                index.setdefault(variant_id, int(product_id))
    return index


# --- implementation --------------------------------------------------------------------------


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return str(int(value))
    return None


def _template_fields(template: str | None) -> frozenset[str]:
    if template is None:
        return frozenset()
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise MappingError(
            f"product URL template is malformed: {exc}", field="product_url_template"
        ) from exc
    unknown = sorted(set(names) - TEMPLATE_FIELDS)
    if unknown:
        raise MappingError(
            f"product URL template uses unknown field(s) {', '.join(map(repr, unknown))};"
            f" known: {', '.join(sorted(TEMPLATE_FIELDS))}",
            field="product_url_template",
        )
    return frozenset(names)


def _product_variants(
    raw: Mapping[str, Any],
    where: str,
    template: str | None,
    fields: frozenset[str],
    image_fallback: str | None,
    problems: list[MappingError] | None = None,
    currency: str = DEFAULT_CURRENCY,
) -> list[Variant]:
    def failed(error: MappingError) -> None:
        if problems is None:
            raise error
        problems.append(error)

    raw_variants = raw.get("variants")
    try:  # the product without its variants, then each variant on its own
        product = RlProduct.model_validate({**raw, "variants": []})
        if raw_variants is not None and not isinstance(raw_variants, list):
            RlProduct.model_validate(raw)  # names the field
    except ValidationError as exc:
        failed(mapping_error(exc, where))
        return []
    names_by_id = {o.externalOptionId: o.name for o in product.options if o.externalOptionId}
    names_by_position = {o.position: o.name for o in product.options if o.position is not None}
    product_active = product.isActive and product.isPublic and not product.isDeleted
    out = []
    for index, raw_variant in enumerate(raw_variants or ()):
        v_where = f"{where}.variants[{index}]"
        try:
            variant = RlVariant.model_validate(raw_variant)
            if variant.sku is None:
                continue
            out.append(
                _variant(
                    product,
                    variant,
                    v_where,
                    names_by_id,
                    names_by_position,
                    product_active,
                    template,
                    fields,
                    image_fallback,
                    currency,
                )
            )
        except ValidationError as exc:
            failed(mapping_error(exc, v_where))
        except MappingError as error:
            failed(error)
    return out


def _variant(
    product: RlProduct,
    variant: RlVariant,
    where: str,
    names_by_id: Mapping[str, str | None],
    names_by_position: Mapping[int, str | None],
    product_active: bool,
    template: str | None,
    fields: frozenset[str],
    image_fallback: str | None,
    currency: str,
) -> Variant:
    sku = variant.sku
    assert sku is not None
    attributes = []
    ordered = sorted(
        enumerate(variant.options),
        key=lambda pair: (pair[1].position is None, pair[1].position or 0, pair[0]),
    )
    for o_index, option in ordered:
        name = (
            option.name
            or (names_by_id.get(option.externalOptionId) if option.externalOptionId else None)
            or (names_by_position.get(option.position) if option.position is not None else None)
        )
        if name is None:
            raise MappingError(
                "variant option has no name (nor a matching product option)",
                field=f"{where}.options[{o_index}].name",
            )
        if option.value is None:
            raise MappingError(
                "variant option has no value", field=f"{where}.options[{o_index}].value"
            )
        attributes.append(VariantAttribute(name=name, value=option.value))

    price = variant.price if variant.price is not None else product.price

    weight: Decimal | None = None
    unit: WeightUnit | None = None
    if variant.weight is not None and variant.weightUnit is not None:
        unit = _WEIGHT_UNITS.get(variant.weightUnit.casefold())
        if unit is None:
            raise MappingError(
                f"unknown weightUnit {variant.weightUnit!r}", field=f"{where}.weightUnit"
            )
        weight = variant.weight
    elif variant.grams is not None:
        weight, unit = Decimal(variant.grams), WeightUnit.G

    return Variant(
        sku=sku,
        title=_title(product.name, variant.name, sku),
        attributes=tuple(attributes),
        quantity_in_stock=variant.inventoryQuantity,
        unit_price_cents=major_to_minor(price, currency, field=f"{where}.price", exact=True)
        if price is not None
        else None,
        currency=currency,
        upc=variant.barcode,
        image_url=variant.imageUrl or product.imageUrl or image_fallback,
        product_url=_product_url(template, fields, product, variant, sku),
        product_id=product.rlProductId,
        variant_id=variant.rlProductVariantId,
        is_active=product_active
        and variant.isActive
        and variant.isPublic
        and not variant.isDeleted,
        weight=weight,
        weight_unit=unit,
        refs={"returnlogic": variant.rlProductVariantId},
    )


def _title(product_name: str | None, variant_name: str | None, sku: str) -> str:
    own = variant_name
    if own is not None and (
        own.casefold() == _DEFAULT_TITLE
        or (product_name is not None and own.casefold() == product_name.casefold())
    ):
        own = None
    if product_name and own:
        return f"{product_name} - {own}"
    return product_name or own or sku


def _product_url(
    template: str | None,
    fields: frozenset[str],
    product: RlProduct,
    variant: RlVariant,
    sku: str,
) -> str | None:
    if template is None:
        return None
    values = {
        "product_id": product.rlProductId,
        "variant_id": variant.rlProductVariantId,
        "external_product_id": product.externalProductId,
        "external_variant_id": variant.externalVariantId,
        "sku": sku,
        "handle": product.handle,
    }
    quoted = {}
    for name in fields:
        value = values[name]
        if value is None:
            return None
        quoted[name] = quote(value, safe="")
    return template.format(**quoted)
