"""The guide's own catalog and order system, for the scenario retailers.

The guide's Exchange Variants and Exchange Orders answers come from the retailer's
catalog and order system; to replay a scenario exactly, these answer as the guide's
samples do (the variants of a parent variant; the exchange order number per original
order). They are ordinary providers of the ``catalog`` and ``exchange_order_sink``
capabilities, like an adapter's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from adapters.optoro.sandbox import Scenario
from bridge.domain import ExchangeOrder, ExchangeOrderResult, Variant
from bridge.errors import RetriableDeliveryError
from mappings.optoro import parse_variants_response


class GuideCatalog:
    """Exchange candidates per parent variant identifier, as the guide's samples list them."""

    def __init__(self) -> None:
        self.by_parent: dict[str, list[Variant]] = {}
        self.calls = 0
        self.fail = False
        self.delay = 0.0

    def load(self, path: str, response: Any) -> str:
        parent = path.split("/")[2]
        self.by_parent[parent] = parse_variants_response(response)
        return parent

    async def variants_for(self, variant_identifier: str) -> list[Variant]:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RetriableDeliveryError("catalog unavailable")
        return self.by_parent.get(variant_identifier, [])


class GuideOrderSink:
    """Places exchange orders under the guide's order numbers (one per original order)."""

    def __init__(self, answers: dict[str, str] | None = None) -> None:
        self.answers = dict(answers or {})
        self.created: dict[str, ExchangeOrder] = {}
        self.calls = 0
        self.fail = False
        self.delay = 0.0

    async def create_exchange_order(self, order: ExchangeOrder) -> ExchangeOrderResult:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RetriableDeliveryError("order system down", retry_after=7)
        self.created.setdefault(order.original_order_id, order)
        return ExchangeOrderResult(
            order_id=self.answers.get(order.original_order_id, f"EXCH-{order.original_order_id}"),
            total_cents=order.total_cents,
            product_cents=order.product_cents,
            tax_cents=order.tax_cents,
        )


def guide_providers(scenarios: Iterable[Scenario]) -> tuple[GuideCatalog, GuideOrderSink]:
    """A catalog and an order sink answering every variants and exchange step shown."""
    catalog, sink = GuideCatalog(), GuideOrderSink()
    for scenario in scenarios:
        for step in scenario.steps:
            if step.method == "GET" and step.response is not None:
                catalog.load(step.path, step.response)
            elif step.api == "Exchange Order" and step.response:
                sink.answers[step.request["original_order_id"]] = step.response["order_identifier"]
    return catalog, sink
