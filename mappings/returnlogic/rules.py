"""Which ReturnLogic orders and lines get the returns tags ``FinalSale``, ``Thirdparty``,
``pickup_in_store`` and ``gift-card``: a frozen settings object passed to the order mapping.

Each tag has one :class:`TagRule`. A rule matches

* an **order** when one of the order's ``tags``, its ``sourceType``, its ``externalSource`` or
  its ``financialStatus`` is listed in ``order_tags``, ``source_types``, ``external_sources`` or
  ``financial_statuses``; the tag then goes on the order **and on every line**;
* a **line** when one of the line's tags (not in the spec, read when present) or one of its
  plain-string ``properties`` is listed in ``line_tags``, or when one of its ``name: value``
  properties matches ``properties``: an entry ``"name"`` matches that property with any value
  except a false one (empty, ``false``, ``no``, ``0``, ``off``), an entry ``"name=value"``
  matches exactly that value. A bare string property ``"name"`` counts as ``name`` set.

Every comparison ignores case and surrounding blanks. A line with ``isGiftCard: true`` is always
tagged ``gift-card``, whatever the rules.

Defaults (change them per retailer; an empty set disables that kind of evidence):

=============== ================================================================================
tag             default evidence
=============== ================================================================================
FinalSale       order or line tag ``finalsale``, ``final sale``, ``final-sale``, ``final_sale``;
                property ``final_sale``, ``_final_sale``, ``finalsale``, ``final sale``
Thirdparty      order or line tag ``thirdparty``, ``third-party``, ``third party``,
                ``third_party``; ``financialStatus`` ``ThirdParty``. No ``externalSource`` by
                default: list the marketplaces (``Amazon``, ``eBay``...) per retailer.
pickup_in_store order or line tag ``pickup_in_store``, ``pickup-in-store``, ``pickup in store``,
                ``bopis``; property ``pickup_in_store``, ``_pickup_in_store``. No
                ``sourceType`` by default: add ``pos``/``in-store`` when in-store sales must not
                be returned online.
gift-card       ``isGiftCard``; line tag ``gift-card``, ``gift_card``, ``giftcard``,
                ``gift card``
=============== ================================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.domain import Tag

__all__ = [
    "FINAL_SALE",
    "GIFT_CARD",
    "PICKUP_IN_STORE",
    "TAG_ORDER",
    "THIRD_PARTY",
    "LineEvidence",
    "TagRule",
    "TagRules",
]

FINAL_SALE = Tag.FINAL_SALE.value
THIRD_PARTY = Tag.THIRD_PARTY.value
PICKUP_IN_STORE = Tag.PICKUP_IN_STORE.value
GIFT_CARD = Tag.GIFT_CARD.value
TAG_ORDER = (FINAL_SALE, THIRD_PARTY, PICKUP_IN_STORE, GIFT_CARD)
"""Tags are always listed in this order, so equal evidence gives equal tuples (and hashes)."""

_FALSE_VALUES = frozenset({"", "false", "no", "0", "off", "n"})


def _norm(text: str) -> str:
    return text.strip().casefold()


class TagRule(BaseModel):
    """The evidence that implies one tag (see the module docstring for how it is matched)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    order_tags: frozenset[str] = Field(
        default=frozenset(), description="order tags implying the tag (order and all lines)"
    )
    source_types: frozenset[str] = Field(
        default=frozenset(), description="order sourceType values implying the tag"
    )
    external_sources: frozenset[str] = Field(
        default=frozenset(), description="order externalSource values implying the tag"
    )
    financial_statuses: frozenset[str] = Field(
        default=frozenset(), description="order financialStatus values implying the tag"
    )
    line_tags: frozenset[str] = Field(
        default=frozenset(), description="line tags or plain-string properties implying the tag"
    )
    properties: frozenset[str] = Field(
        default=frozenset(),
        description='line properties: "name" (any true value) or "name=value" (exact)',
    )

    @field_validator(
        "order_tags",
        "source_types",
        "external_sources",
        "financial_statuses",
        "line_tags",
        "properties",
        mode="after",
    )
    @classmethod
    def _normalised(cls, values: frozenset[str]) -> frozenset[str]:
        out = set()
        for value in values:
            if "=" in value:
                name, _, wanted = value.partition("=")
                out.add(f"{_norm(name)}={_norm(wanted)}")
            else:
                out.add(_norm(value))
        return frozenset(out)

    def matches_order(
        self,
        tags: frozenset[str],
        source_type: str | None,
        external_source: str | None,
        financial_status: str | None,
    ) -> bool:
        """``tags`` and the other values already normalised (stripped, casefolded)."""
        return bool(
            (self.order_tags and not self.order_tags.isdisjoint(tags))
            or (source_type is not None and source_type in self.source_types)
            or (external_source is not None and external_source in self.external_sources)
            or (financial_status is not None and financial_status in self.financial_statuses)
        )

    def matches_line(self, evidence: LineEvidence) -> bool:
        if self.line_tags and not self.line_tags.isdisjoint(evidence.flags):
            return True
        if not self.properties:
            return False
        for name, value in evidence.pairs:
            if name in self.properties and value not in _FALSE_VALUES:
                return True
            if f"{name}={value}" in self.properties:
                return True
        return False


class LineEvidence:
    """A line's tags and properties, normalised once for all rules."""

    __slots__ = ("flags", "pairs")

    def __init__(self, tags: Iterable[str], properties: Iterable[Any]) -> None:
        flags = {_norm(tag) for tag in tags if isinstance(tag, str)}
        pairs: list[tuple[str, str]] = []
        for prop in properties:
            if isinstance(prop, str):
                for separator in (":", "="):
                    if separator in prop:
                        name, _, value = prop.partition(separator)
                        pairs.append((_norm(name), _norm(value)))
                        break
                else:
                    flags.add(_norm(prop))
                    pairs.append((_norm(prop), "true"))
            elif isinstance(prop, dict):
                key = prop.get("name", prop.get("key"))
                raw = prop.get("value")
                if isinstance(key, str):
                    pairs.append((_norm(key), _norm(str(raw)) if raw is not None else ""))
        self.flags = frozenset(flags)
        self.pairs = tuple(pairs)

    @property
    def empty(self) -> bool:
        return not self.flags and not self.pairs


_FINAL_SALE_WORDS = frozenset({"finalsale", "final sale", "final-sale", "final_sale"})
_THIRD_PARTY_WORDS = frozenset({"thirdparty", "third-party", "third party", "third_party"})
_PICKUP_WORDS = frozenset({"pickup_in_store", "pickup-in-store", "pickup in store", "bopis"})


class TagRules(BaseModel):
    """Per-retailer tag rules; the defaults are documented in the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    final_sale: TagRule = Field(
        default=TagRule(
            order_tags=_FINAL_SALE_WORDS,
            line_tags=_FINAL_SALE_WORDS,
            properties=frozenset({"final_sale", "_final_sale", "finalsale", "final sale"}),
        ),
        description="evidence for the FinalSale tag",
    )
    third_party: TagRule = Field(
        default=TagRule(
            order_tags=_THIRD_PARTY_WORDS,
            line_tags=_THIRD_PARTY_WORDS,
            financial_statuses=frozenset({"thirdparty"}),
        ),
        description="evidence for the Thirdparty tag",
    )
    pickup_in_store: TagRule = Field(
        default=TagRule(
            order_tags=_PICKUP_WORDS,
            line_tags=_PICKUP_WORDS,
            properties=frozenset({"pickup_in_store", "_pickup_in_store"}),
        ),
        description="evidence for the pickup_in_store tag",
    )
    gift_card: TagRule = Field(
        default=TagRule(line_tags=frozenset({"gift-card", "gift_card", "giftcard", "gift card"})),
        description="evidence for the gift-card tag besides isGiftCard",
    )

    def pairs(self) -> tuple[tuple[str, TagRule], ...]:
        """``(tag, rule)`` in :data:`TAG_ORDER`."""
        return (
            (FINAL_SALE, self.final_sale),
            (THIRD_PARTY, self.third_party),
            (PICKUP_IN_STORE, self.pickup_in_store),
            (GIFT_CARD, self.gift_card),
        )
