"""Building blocks of the canonical models: the frozen base, per-platform ids, field types."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    StrictInt,
    StringConstraints,
)
from pydantic_core import core_schema

from bridge.domain.money import MAX_CENTS

Id = Annotated[str, StringConstraints(min_length=1)]
"""An identifier: any non-empty string."""
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
"""ISO 4217 code, e.g. ``USD``."""
Cents = Annotated[StrictInt, Field(ge=0, le=MAX_CENTS)]
"""A non-negative amount in cents."""
SignedCents = Annotated[StrictInt, Field(ge=-MAX_CENTS, le=MAX_CENTS)]
Quantity = Annotated[StrictInt, Field(ge=0)]
PositiveQuantity = Annotated[StrictInt, Field(ge=1)]


class Refs(Mapping[str, str]):
    """Immutable ``platform name -> id on that platform``, e.g. ``{"kibo": "8812"}``.

    Validates from and serialises to a plain ``dict``; keys and values are non-empty.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        pairs = dict(items or {})
        for platform, ref in pairs.items():
            if not isinstance(platform, str) or not isinstance(ref, str) or not platform or not ref:
                raise ValueError(f"refs need non-empty platform and id: {platform!r}: {ref!r}")
        self._items = pairs

    def __getitem__(self, platform: str) -> str:
        return self._items[platform]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._items == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"Refs({self._items!r})"

    def with_ref(self, platform: str, ref: str) -> Refs:
        return Refs({**self._items, platform: ref})

    @classmethod
    def _checked(cls, pairs: dict[str, str]) -> Refs:
        """From a dict pydantic-core already checked (non-empty string keys and values)."""
        refs = cls.__new__(cls)
        refs._items = pairs
        return refs

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        from_dict = core_schema.no_info_after_validator_function(
            cls._checked,
            core_schema.dict_schema(
                core_schema.str_schema(min_length=1), core_schema.str_schema(min_length=1)
            ),
        )
        return core_schema.json_or_python_schema(
            json_schema=from_dict,
            python_schema=core_schema.union_schema(
                [core_schema.is_instance_schema(cls), from_dict]
            ),
            serialization=core_schema.plain_serializer_function_ser_schema(
                dict,
                return_schema=core_schema.dict_schema(
                    core_schema.str_schema(), core_schema.str_schema()
                ),
            ),
        )


class DomainModel(BaseModel):
    """Frozen, closed: unknown fields are errors, fields cannot be reassigned."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class CrossReferenced(DomainModel):
    """A model with ids on several platforms."""

    refs: Refs = Field(default_factory=Refs)

    def ref(self, platform: str) -> str | None:
        return self.refs.get(platform)

    def with_ref(self, platform: str, ref: str) -> Self:
        """A copy that also knows its id on ``platform``."""
        return self.model_copy(update={"refs": self.refs.with_ref(platform, ref)})
