"""kill -9 of the real daemon while Kibo creates are in flight, then settle: every
acknowledged RMA has exactly the Kibo returns its retailer's policy requires, none twice;
where the tenant keeps the bridge's returnID none is parked for an operator, and where it
assigns its own the creates whose outcome the kills hid are parked, never duplicated.

The machinery (daemon process, sandboxes, load, verdict) is in ``tests/kibo_crash.py``,
shared with ``bench/kibo_crash.py`` (the long variant). The seed is printed and can be set
with ``KIBO_CRASH_SEED``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kibo_crash import dump, main_seed, run_crash

KILLS = 26
"""Rounds ending in SIGKILL (the issue asks for at least 25), 3 of them during start-up."""


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_kill_9_with_kibo_creates_in_flight(tmp_path: Path) -> None:
    seed = main_seed()
    print(f"kibo crash test seed: KIBO_CRASH_SEED={seed}")
    verdict = await run_crash(tmp_path, KILLS, seed)
    print(verdict.summary())
    assert not verdict.unexpected_answers, verdict.unexpected_answers
    assert not verdict.tracebacks, verdict.tracebacks
    assert verdict.kills >= 25
    assert verdict.kills_with_create_in_flight >= 10, dump(verdict)
    assert verdict.acknowledged_rmas >= 100, "the load was too light to mean anything"
    assert set(verdict.inbox) <= {"done", "superseded"}, verdict.inbox  # none quarantined
    # none twice, anywhere; nothing missing that is not parked for an operator
    assert verdict.duplicates == {"kc1": 0, "kc2": 0, "kc3": 0}, dump(verdict)
    assert verdict.missing_not_parked == {"kc1": 0, "kc2": 0, "kc3": 0}, dump(verdict)
    # the tenants that keep the bridge's returnID: every return, none parked, each under
    # the id derived from its create
    for retailer in ("kc1", "kc2"):
        assert verdict.returns[retailer] == verdict.expected_returns[retailer] > 0, dump(verdict)
        assert verdict.parked[retailer] == 0, dump(verdict)
        assert verdict.foreign_return_ids[retailer] == 0, dump(verdict)
    assert verdict.settled.get("settled by Get Return", 0) >= 1, dump(verdict)
    # the tenant that assigns its own ids: parked (or settled by return_created), never
    # duplicated; the parked ones are exactly the missing returns
    assert verdict.foreign_return_ids["kc3"] == verdict.returns["kc3"] > 0  # its own ids
    assert verdict.flags == 0
    assert set(verdict.outbox) <= {"delivered", "dead"}, verdict.outbox
