"""What ReturnLogic sends to the bridge: webhook bodies and the OAuth installation redirect.

Webhooks (``rma.requested``, ``rma.updated``, ``rma.deleted``) only say which RMA to read:
``eventId``, ``resourceAction``, ``rlRmaId`` are required, ``createDate`` is kept when it is a
string (and ignored otherwise: it is a hint), ``data`` and any other key are ignored (the RMA is
read from the API). ``rlRmaId`` is a JSON integer or a string of ASCII digits (not a boolean).

These models are both the validation of the endpoints and their ``/openapi.json`` schemas.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)

from mappings._errors import mapping_error

__all__ = ["RESOURCE_ACTIONS", "OAuthCallbackQuery", "WebhookIn", "parse_webhook_body"]

RESOURCE_ACTIONS = ("rma.requested", "rma.updated", "rma.deleted")

ResourceAction = Literal["rma.requested", "rma.updated", "rma.deleted"]


def _rma_id(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("rlRmaId is required (a whole number)")
    text = str(value).strip()
    if not text:
        raise ValueError("rlRmaId is required")
    if not text.isascii() or not text.isdigit():
        raise ValueError("rlRmaId must be a whole number")
    return text


def _hint_text(value: object) -> object:
    return value if isinstance(value, str) else None


RmaId = Annotated[
    str,
    BeforeValidator(_rma_id),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*[0-9]+\s*$"},
            ]
        }
    ),
]
"""``7`` or ``"7"``, kept as the text ``"7"``."""

EventId = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1)]


class WebhookIn(BaseModel):
    """A ReturnLogic webhook body (field order is the order errors are reported in)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    resourceAction: ResourceAction = Field(description="what happened to the RMA")
    rlRmaId: RmaId = Field(description="the RMA to read")
    eventId: EventId = Field(description="unique per event; duplicates collapse")
    createDate: Annotated[StrictStr | None, BeforeValidator(_hint_text), WithJsonSchema({})] = (
        Field(
            default=None,
            description="when the event happened (ISO 8601); a hint only: kept when a string,"
            " any other value is read as absent",
        )
    )
    data: Any = Field(default=None, description="ignored: the RMA is read from the API")


def parse_webhook_body(payload: Mapping[str, Any]) -> WebhookIn:
    """``payload`` (a parsed JSON object) as a :class:`WebhookIn`; ``MappingError`` naming
    the first bad field otherwise."""
    try:
        return WebhookIn.model_validate(payload)
    except ValidationError as exc:
        raise mapping_error(exc, what="webhook") from exc


class OAuthCallbackQuery(BaseModel):
    """The query of ReturnLogic's app-installation redirect."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    code: Annotated[StrictStr, StringConstraints(max_length=4096)] | None = Field(
        default=None, description="the authorization code to exchange at POST /v1/oauth"
    )
    teamId: Annotated[StrictStr, StringConstraints(max_length=256)] | None = Field(
        default=None, description="the installing team; must be the retailer's"
    )
    state: Annotated[StrictStr, StringConstraints(max_length=4096)] | None = Field(
        default=None,
        description="the signed state the bridge issued for this retailer (install-url)",
    )

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> OAuthCallbackQuery:
        """The query (first value of each name); ``MappingError`` naming the parameter."""
        try:
            return cls.model_validate(dict(query))
        except ValidationError as exc:
            raise mapping_error(exc, what="installation redirect") from exc
