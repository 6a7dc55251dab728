"""Headers and path parameters of Optoro's calls to the bridge, as models.

``X-Optiturn-Id`` (every call: which retailer Optoro believes it is calling) and
``X-Optiturn-Api-Version`` (Exchange Orders: ``1`` or ``2``, default ``2``). They are the
parameters ``/openapi.json`` shows; the inbound handlers check the same rules (a wrong id is a
403, a version outside :data:`~mappings.optoro.exchanges.API_VERSIONS` a 400).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mappings.optoro._wire import Id

__all__ = ["ExchangeOrderHeaders", "OptiturnHeaders", "VariantsPath"]


class OptiturnHeaders(BaseModel):
    """Headers of every Optoro call."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    optiturn_id: Id | None = Field(
        default=None,
        alias="X-Optiturn-Id",
        description="the retailer's Optiturn id, as configured; checked when sent (the"
        " guide's samples send none)",
    )


class ExchangeOrderHeaders(OptiturnHeaders):
    """Headers of an Exchange Orders call."""

    api_version: Literal["1", "2"] = Field(
        default="2",
        alias="X-Optiturn-Api-Version",
        description="Exchange Orders API version; 2 adds gift-card bonus credit",
    )


class VariantsPath(BaseModel):
    """Path of an Exchange Variants call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variant_identifier: Id = Field(description="the returned item's variant (SKU) identifier")
