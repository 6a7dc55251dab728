"""A retailer's returns policy: when the return is created, when the refund is confirmed.

``[retailers.<id>.policy]``::

    create_return_at = { mail_back = "TRANSIT", express_returns = "ACCEPTED" }
    confirm_refund = "on_return_created"   # or "on_return_cleared" / "never"

Defaults: TRANSIT (carrier scan) for mail-back, ACCEPTED (QR scan) for express returns,
CREATED for customer-keep (nothing travels), TRANSIT for home pickup, RECEIVED otherwise.
``on_kibo_cleared`` is accepted as another name for ``on_return_cleared``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import Field, field_validator

from bridge.configbase import ConfigModel
from bridge.domain import PackageStatus, ReceivingStatus, ReturnMethod, Rma, RmaUnit


class Step(StrEnum):
    """How far a return has come, as the units' package and receiving statuses say."""

    CREATED = "CREATED"
    PRE_TRANSIT = "PRE_TRANSIT"
    TRANSIT = "TRANSIT"
    """Carrier scan (mail-back)."""
    ACCEPTED = "ACCEPTED"
    """QR scan at a drop-off point (express returns); as far along as TRANSIT."""
    RECEIVED = "RECEIVED"


class ConfirmRefund(StrEnum):
    ON_RETURN_CREATED = "on_return_created"
    ON_RETURN_CLEARED = "on_return_cleared"
    NEVER = "never"


_STEP_RANK = {
    Step.CREATED: 0,
    Step.PRE_TRANSIT: 1,
    Step.TRANSIT: 2,
    Step.ACCEPTED: 2,
    Step.RECEIVED: 3,
}
_PACKAGE_RANK = {
    PackageStatus.NOT_DROPPED_OFF: 0,
    PackageStatus.PRE_TRANSIT: 1,
    PackageStatus.ACCEPTED: 2,
    PackageStatus.TRANSIT: 2,
    PackageStatus.DELIVERED: 3,
}
DEFAULT_CREATE_AT: dict[str, Step] = {
    "mail_back": Step.TRANSIT,
    "express_returns": Step.ACCEPTED,
    "customer_keep": Step.CREATED,
    "home_pickup": Step.TRANSIT,
    "other": Step.RECEIVED,
}


def method_key(method: ReturnMethod) -> str:
    return method.value.lower()


class PolicyConfig(ConfigModel):
    """When an RMA becomes a return in the returns sink, and when its refund is confirmed."""

    create_return_at: dict[str, Step] = Field(
        default_factory=dict,
        description="return method (mail_back, express_returns, customer_keep, home_pickup,"
        " other) -> step at which the return is created; unset methods use the defaults",
    )
    confirm_refund: ConfirmRefund = Field(
        default=ConfirmRefund.ON_RETURN_CREATED,
        description="when the refund is reported back: on_return_created, on_return_cleared"
        " (on_kibo_cleared), never",
    )
    reconcile_every: float = Field(
        default=300.0, gt=0, description="seconds between checks of returns not yet cleared"
    )

    @field_validator("create_return_at", mode="before")
    @classmethod
    def _known_methods(cls, value: Any) -> Any:
        if isinstance(value, dict):
            normalised = {str(k).replace("-", "_").lower(): v for k, v in value.items()}
            unknown = sorted(set(normalised) - set(DEFAULT_CREATE_AT))
            if unknown:
                raise ValueError(
                    f"unknown return method {', '.join(unknown)};"
                    f" known: {', '.join(DEFAULT_CREATE_AT)}"
                )
            return normalised
        return value

    @field_validator("confirm_refund", mode="before")
    @classmethod
    def _alias(cls, value: Any) -> Any:
        return ConfirmRefund.ON_RETURN_CLEARED if value == "on_kibo_cleared" else value

    def step_for(self, method: ReturnMethod) -> Step:
        key = method_key(method)
        return self.create_return_at.get(key, DEFAULT_CREATE_AT.get(key, Step.RECEIVED))


def unit_rank(package: PackageStatus | None, receiving: ReceivingStatus | None) -> int:
    rank = _PACKAGE_RANK.get(package, 0) if package is not None else 0
    if receiving is ReceivingStatus.RECEIVED:
        rank = max(rank, _STEP_RANK[Step.RECEIVED])
    return rank


def reached(rma: Rma, step: Step) -> bool:
    """True when every unit of ``rma`` has come at least as far as ``step``."""
    need = _STEP_RANK[step]
    if need == 0:
        return True
    return bool(rma.units) and all(
        unit_rank(u.package_status, u.receiving_status) >= need for u in rma.units
    )


def units_reached(rma: Rma, step: Step) -> tuple[RmaUnit, ...]:
    """The units of ``rma`` that have come at least as far as ``step``, furthest first.

    A partially accepted RMA (Optoro's RMAs description: units ``NOT_DROPPED_OFF`` beside
    accepted ones, the RMA then "REFUNDED or PARTIAL_REFUND") gets its return for these."""
    need = _STEP_RANK[step]
    ranked = [(unit_rank(u.package_status, u.receiving_status), i) for i, u in enumerate(rma.units)]
    return tuple(
        rma.units[i] for rank, i in sorted(ranked, key=lambda r: (-r[0], r[1])) if rank >= need
    )


def select_units(rma: Rma, lines: Mapping[tuple[str, str], int]) -> Rma:
    """``rma`` with only ``lines`` units per ``(order id, line id)``, furthest first (a
    unit holding several units is taken whole)."""
    left = dict(lines)
    chosen = []
    for unit in units_reached(rma, Step.CREATED):
        key = (unit.order_id, unit.order_line_id)
        if left.get(key, 0) > 0:
            left[key] -= unit.qty
            chosen.append(unit)
    return rma.model_copy(update={"units": tuple(chosen)})
