"""`returns-bridge demo --once`: the README's main job, as a newcomer runs it."""

from __future__ import annotations

import subprocess
import sys


def test_demo_once_plays_every_scenario_and_exits_0() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "demo", "--once"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    verdicts = [line for line in lines if line.startswith(("ok ", "FAIL"))]
    assert len(verdicts) == 22
    assert all(line.startswith("ok ") for line in verdicts)
    assert "22 passed, 0 failed" in lines
    summary = next(line for line in lines if line.startswith("summary:"))
    assert "Kibo returns 16" in summary
    assert "refunds confirmed 16" in summary
    assert "dead letters 0" in summary
