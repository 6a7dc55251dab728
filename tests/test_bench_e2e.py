"""The end-to-end bench (``bench/e2e.py``) in its short form: a few seconds at a low rate
through the real daemon and sandboxes, asserting correctness only (every acknowledged RMA has
exactly one Kibo create, every message was acknowledged), never speed."""

from __future__ import annotations

from pathlib import Path

from tests.e2e_load import run_round

RATE = 20.0
SECONDS = 3.0


async def test_short_e2e_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    result = await run_round(RATE, SECONDS, pin=False, folder=tmp_path)
    print(result.line())
    assert result.sent == round(RATE * SECONDS)
    assert result.errors == 0, result.error_samples
    assert result.shed == 0  # far below the inbox backlog limit
    assert result.acked == result.sent
    assert result.missing == 0, result.line()
    assert result.duplicates == 0, result.line()
    assert result.refused_creates == 0, result.line()
    assert len(result.latencies) == result.acked  # one create per acknowledged RMA, each timed
    assert result.tracebacks == 0, (tmp_path / "daemon.log").read_text()[-3000:]
