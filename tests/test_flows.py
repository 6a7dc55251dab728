"""The returns flows of the core (bridge/flows): one RMA apply path for every source, the
return-event state machine for every state and kind, the typed lifecycle read from the rows
the untyped one wrote, and order staleness -- on a real SQLite file, with the runtime the
daemon builds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from adapters.optoro.inbound import OptoroInbound, inbound_key
from adapters.optoro.sandbox import load_scenarios
from adapters.returnlogic.rmas import RlRmas, rmas_key
from bridge.app import Runtime, build_runtime
from bridge.config import load_config
from bridge.domain import Rma
from bridge.engine import HandlerContext
from bridge.flows import (
    LIFECYCLE,
    ORDER,
    TRANSITIONS,
    RefundState,
    ReturnEvent,
    ReturnEventKind,
    ReturnsFlows,
    ReturnState,
    RmaLifecycleState,
    rma_version,
)
from bridge.flows.returns import Consequence, Transition
from bridge.policy import ConfirmRefund, PolicyConfig, Step
from bridge.ports import ORDER_PUBLISHER, RMA_LIFECYCLE, SharedKey
from bridge.store import InboxItem, InboxStatus, NewEffect
from mappings.optoro import parse_rma, parse_rpo_request

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
RETAILER = "acme"
UNUSED = "http://127.0.0.1:9"
"""No partner is called: nothing here dispatches."""
ENV = {"SECRET": "s3cret-value"}
SCENARIOS = {s.number: s for s in load_scenarios()}


def config_text(tmp: Path) -> str:
    return f"""
[server]
host = "127.0.0.1"
port = 0
[store]
url = "sqlite:///{tmp / "bridge.db"}"
[retailers.{RETAILER}]
name = "Acme"
[retailers.{RETAILER}.optoro]
base_url = "{UNUSED}"
client_id = "acme"
client_secret = "${{SECRET}}"
optiturn_id = "acme-optiturn"
[retailers.{RETAILER}.optoro.inbound_auth]
kind = "basic"
username = "optoro"
password = "${{SECRET}}"
[retailers.{RETAILER}.returnlogic]
base_url = "{UNUSED}"
team_id = "team"
static_token = "${{SECRET}}"
[retailers.{RETAILER}.returnlogic.orders]
enabled = false
[retailers.{RETAILER}.returnlogic.rmas]
enabled = true
[retailers.{RETAILER}.kibo]
base_url = "{UNUSED}"
token = "${{SECRET}}"
line_ids = "numeric"
"""


def _wired(runtime: Runtime, key: SharedKey[T]) -> T:
    found = runtime.find_shared(key)
    assert found is not None, key
    return found


@pytest_asyncio.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    path = tmp_path / "bridge.toml"
    path.write_text(config_text(tmp_path))
    runtime = build_runtime(load_config(path, env=ENV))
    await runtime.store.open()
    try:
        yield runtime
    finally:
        await runtime.store.close()


def rma_messages(number: int) -> list[dict[str, Any]]:
    return [s.request for s in SCENARIOS[number].steps if s.path == "/rmas"]


def inbox_item(body: dict[str, Any]) -> InboxItem:
    return InboxItem(
        id=1,
        source="optoro.rmas",
        retailer=RETAILER,
        dedup_key="test",
        body=json.dumps(body).encode(),
        headers={},
        received_at=0.0,
        status=InboxStatus.PENDING,
        note=None,
        attempts=0,
        duplicates=0,
    )


async def lifecycle_of(runtime: Runtime, rma_key: str) -> dict[str, Any] | None:
    async with runtime.store.transaction() as tx:
        entity = await tx.get_entity(LIFECYCLE, rma_key)
    return None if entity is None else dict(entity.data)


def shape(effects: list[NewEffect]) -> list[tuple[str, str, Any]]:
    """Effects without the RMA key they name (the two sources key one RMA differently)."""
    return [(e.kind, e.destination, e.payload["step"]) for e in effects]


# --- one RMA flow for every source -------------------------------------------------------------


def test_no_adapter_checks_an_rma_version_itself() -> None:
    """One caller of the version check per entity kind, in the core's flows."""
    callers = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "adapters").rglob("*.py"))
        if "apply_versioned" in path.read_text(encoding="utf-8")
    ]
    assert callers == []


@pytest.mark.parametrize("number", [1, 2])
async def test_optoro_and_returnlogic_rmas_go_through_the_same_flow(
    runtime: Runtime, number: int
) -> None:
    """The same canonical RMA messages, one source's handler each: the same outcomes, the
    same returns-sink effects, the same lifecycle state -- and then the same return events."""
    optoro: OptoroInbound = _wired(runtime, inbound_key(RETAILER))
    rl: RlRmas = _wired(runtime, rmas_key(RETAILER))
    messages = rma_messages(number)
    assert messages
    rma_id = parse_rma(messages[0]).id
    optoro_key, rl_key = f"{RETAILER}:{rma_id}", rl.rma_key(rma_id)
    for message in [*messages, messages[0]]:  # the repeated first one is stale for both
        rma = parse_rma(message)
        async with runtime.store.transaction() as tx:
            via_optoro = await optoro.handle_rma(inbox_item(message), tx, HandlerContext())
            applied, via_rl = await rl.apply(tx, rma)
        assert (via_optoro.status is InboxStatus.DONE) == applied
        assert shape(list(via_optoro.effects)) == shape(via_rl)
    assert await lifecycle_of(runtime, optoro_key) == await lifecycle_of(runtime, rl_key)
    flows: ReturnsFlows = runtime.service(RETAILER, RMA_LIFECYCLE)
    for key, return_id in ((optoro_key, "7001"), (rl_key, "7001")):
        async with runtime.store.transaction() as tx:
            await flows.return_events.apply(
                tx, key, ReturnEvent(ReturnEventKind.CREATED, return_id)
            )
    optoro_state = await lifecycle_of(runtime, optoro_key)
    assert optoro_state == await lifecycle_of(runtime, rl_key)
    assert optoro_state is not None
    assert optoro_state["returns"]


async def test_a_deleted_returnlogic_rma_is_a_cancellation_of_the_flow(runtime: Runtime) -> None:
    rl: RlRmas = _wired(runtime, rmas_key(RETAILER))
    rma = parse_rma(rma_messages(1)[0])
    async with runtime.store.transaction() as tx:
        applied, _ = await rl.apply(tx, rma)
        assert applied
        deleted, effects = await rl.apply_deleted(tx, rma.id, None)
        again, _ = await rl.apply_deleted(tx, rma.id, None)
    assert (deleted, effects, again) == (True, [], False)
    state = await lifecycle_of(runtime, rl.rma_key(rma.id))
    assert state is not None
    assert state["canceled"]
    assert state["closed"]


# --- the return-event state machine ------------------------------------------------------------

S, K, C = ReturnState, ReturnEventKind, Consequence
STAYS = None
DOCUMENTED: dict[ReturnState, dict[ReturnEventKind, tuple[ReturnState, Consequence] | None]] = {
    S.QUEUED: {
        K.CREATED: (S.CREATED, C.RETURN_CREATED),
        K.ACCEPTED: STAYS,
        K.CLEARED: (S.CLEARED, C.REFUNDS_PROCESSED),
        K.REJECTED: (S.REJECTED, C.FLAG),
        K.REFUND_FAILED: (S.REFUND_FAILED, C.FLAG),
        K.REOPENED: (S.CREATED, C.NONE),
    },
    S.CREATED: {
        K.CREATED: STAYS,
        K.ACCEPTED: STAYS,
        K.CLEARED: (S.CLEARED, C.REFUNDS_PROCESSED),
        K.REJECTED: (S.REJECTED, C.FLAG),
        K.REFUND_FAILED: (S.REFUND_FAILED, C.FLAG),
        K.REOPENED: STAYS,
    },
    S.CLEARED: {
        K.CREATED: STAYS,
        K.ACCEPTED: STAYS,
        K.CLEARED: STAYS,
        K.REJECTED: (S.REJECTED, C.FLAG),
        K.REFUND_FAILED: (S.REFUND_FAILED, C.FLAG),
        K.REOPENED: (S.CREATED, C.NONE),
    },
    S.REJECTED: {
        K.CREATED: STAYS,
        K.ACCEPTED: STAYS,
        K.CLEARED: (S.CLEARED, C.REFUNDS_PROCESSED),
        K.REJECTED: STAYS,
        K.REFUND_FAILED: (S.REFUND_FAILED, C.FLAG),
        K.REOPENED: (S.CREATED, C.NONE),
    },
    S.REFUND_FAILED: {
        K.CREATED: STAYS,
        K.ACCEPTED: STAYS,
        K.CLEARED: (S.CLEARED, C.REFUNDS_PROCESSED),
        K.REJECTED: (S.REJECTED, C.FLAG),
        K.REFUND_FAILED: STAYS,
        K.REOPENED: (S.CREATED, C.NONE),
    },
}
"""The table of bridge/flows/returns.py's docstring."""
PAIRS = [(state, kind) for state in ReturnState for kind in ReturnEventKind]


def test_the_transition_table_covers_every_state_and_kind_as_documented() -> None:
    assert set(TRANSITIONS) == set(PAIRS)
    for state, kind in PAIRS:
        expected = DOCUMENTED[state][kind]
        want = Transition(state) if expected is STAYS else Transition(*expected)
        assert TRANSITIONS[state, kind] == want, (state, kind)


@dataclass(frozen=True)
class Moved:
    state: ReturnState
    changed: bool
    flags: list[str]
    refund: RefundState | None


async def move(
    runtime: Runtime, policy: ConfirmRefund, before: ReturnState, kind: ReturnEventKind
) -> Moved:
    """An RMA whose return 1001 is in ``before`` (stored as the untyped lifecycle wrote it),
    then ``kind`` for that return through the flow the daemon builds, under ``policy``."""
    flows = ReturnsFlows(
        RETAILER,
        PolicyConfig(confirm_refund=policy),
        store=lambda: runtime.store,
        wake_dispatcher=runtime.engine.wake_dispatcher,
        order_publisher=lambda: runtime.service(RETAILER, ORDER_PUBLISHER),
        returns_sink=lambda: None,
    )
    rma = parse_rma(rma_messages(1)[0])
    # no refund amounts per unit: a refund confirmation is recorded as not applicable,
    # which shows it was asked for without needing the order
    rma = Rma.model_validate(
        {
            **rma.model_dump(),
            "units": [{**u.model_dump(), "estimated_refund_cents": None} for u in rma.units],
        }
    )
    key = f"{RETAILER}:{kind.value}:{before.value}:{policy.value}"
    old_row: dict[str, Any] = {
        "returns": {
            "TRANSIT": {
                "state": before.value,
                "return_ids": [] if before is ReturnState.QUEUED else ["1001"],
            }
        },
        "refund": None,
        "closed": False,
        "canceled": False,
    }
    async with runtime.store.transaction() as tx:
        await tx.put_entity("rma", key, rma_version(rma), rma.model_dump(mode="json"))
        await tx.put_entity(LIFECYCLE, key, (0,), old_row)
    async with runtime.store.transaction() as tx:
        outcome = await flows.return_events.apply(tx, key, ReturnEvent(kind, "1001", Step.TRANSIT))
    state = RmaLifecycleState.model_validate(await lifecycle_of(runtime, key))
    flags = [f.reason for f in await runtime.store.list_flags() if f.entity_key == key]
    assert state.returns[Step.TRANSIT].state_of("1001") is outcome.state
    return Moved(outcome.state, outcome.changed, flags, state.refund)


@pytest.mark.parametrize(("before", "kind"), PAIRS, ids=[f"{s}-{k}" for s, k in PAIRS])
async def test_every_kind_from_every_state(
    runtime: Runtime, before: ReturnState, kind: ReturnEventKind
) -> None:
    expected = DOCUMENTED[before][kind]
    target, consequence = (before, C.NONE) if expected is STAYS else expected
    for policy in ConfirmRefund:
        moved = await move(runtime, policy, before, kind)
        assert moved.state is target
        assert moved.changed is (target is not before)
        flagged = [f"return 1001 {kind.value.replace('_', ' ')} in the returns system"]
        assert moved.flags == (flagged if consequence is C.FLAG else [])
        confirms = (
            consequence is C.RETURN_CREATED and policy is ConfirmRefund.ON_RETURN_CREATED
        ) or (consequence is C.REFUNDS_PROCESSED and policy is ConfirmRefund.ON_RETURN_CLEARED)
        assert moved.refund is (RefundState.NOT_APPLICABLE if confirms else None), policy


async def test_a_return_created_after_the_rma_was_canceled_is_flagged(runtime: Runtime) -> None:
    flows: ReturnsFlows = runtime.service(RETAILER, RMA_LIFECYCLE)
    key = f"{RETAILER}:canceled"
    async with runtime.store.transaction() as tx:
        await tx.put_entity(
            LIFECYCLE,
            key,
            (0,),
            {
                "returns": {"CREATED": {"state": "queued", "return_ids": []}},
                "refund": None,
                "closed": True,
                "canceled": True,
            },
        )
        outcome = await flows.return_events.apply(tx, key, ReturnEvent(K.CREATED, "9"))
    assert outcome.state is S.CREATED
    assert outcome.effects == []
    reasons = [f.reason for f in await runtime.store.list_flags()]
    assert reasons == ["return created in the returns system after the RMA was canceled"]


# --- the typed lifecycle reads the untyped rows ------------------------------------------------


def test_a_row_of_the_untyped_lifecycle_reads_as_the_same_state() -> None:
    row = {
        "returns": {
            "TRANSIT": {"state": "cleared", "return_ids": ["11", "12"]},
            "RECEIVED": {"state": "queued", "return_ids": []},
        },
        "refund": "queued",
        "closed": True,
        "canceled": False,
    }
    state = RmaLifecycleState.model_validate(row)
    transit = state.returns[Step.TRANSIT]
    assert transit.state_of("11") is transit.state_of("12") is ReturnState.CLEARED
    assert state.returns[Step.RECEIVED].queued
    assert not transit.queued
    assert (state.refund, state.closed, state.canceled) == (RefundState.QUEUED, True, False)
    written = state.model_dump(mode="json")
    for step, entry in row["returns"].items():  # type: ignore[attr-defined]
        assert {k: written["returns"][step][k] for k in entry} == entry
    assert {k: written[k] for k in ("refund", "closed", "canceled")} == {
        "refund": "queued",
        "closed": True,
        "canceled": False,
    }
    assert RmaLifecycleState.model_validate(written) == state


# --- the order flow ----------------------------------------------------------------------------


async def test_an_older_order_snapshot_never_overwrites_a_newer_one(runtime: Runtime) -> None:
    flows: ReturnsFlows = runtime.service(RETAILER, RMA_LIFECYCLE)
    step = next(s for s in SCENARIOS[1].steps if s.outbound)
    newer = parse_rpo_request(step.request)[0]
    older = newer.model_copy(
        update={
            "updated_at": newer.updated_at.replace(year=newer.updated_at.year - 1),
            "tags": ("older",),
        }
    )
    first = await flows.orders.publish([newer])
    late = await flows.orders.publish([older])
    both = await flows.orders.publish([older, newer])
    assert (first.applied, first.stale) == (1, 0)
    assert (late.applied, late.stale, late.queued) == (0, 1, 0)
    assert (both.applied, both.stale, both.queued) == (1, 1, 0)  # unchanged: nothing sent
    async with runtime.store.transaction() as tx:
        stored = await tx.get_entity(ORDER, f"{RETAILER}:{newer.id}")
    assert stored is not None
    assert stored.data["tags"] == list(newer.tags)
