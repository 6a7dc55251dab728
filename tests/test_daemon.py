"""The real CLI as a subprocess: health, readiness, graceful SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_ENV = {
    "ACME_OPTORO_CLIENT_SECRET": "s3cret-optoro",
    "ACME_OPTORO_WEBHOOK_PASSWORD": "s3cret-hook",
    "ACME_RETURNLOGIC_CLIENT_SECRET": "s3cret-rl",
    "ACME_KIBO_TOKEN": "s3cret-kibo",
    "ACME_KIBO_NOTIFY_SECRET": "s3cret-notify",
    "RETURNS_BRIDGE_TOKEN_KEY": "Z4Sx3c9bQmB1xqkKjz2m3VnJg1gYV8m6wq0p6lD7dXo=",
}


def _config(tmp_path: Path) -> Path:
    text = (REPO / "config.example.toml").read_text()
    text = text.replace("port = 8080", "port = 0")
    text = text.replace(
        'url = "sqlite:///returns-bridge.db"', f'url = "sqlite:///{tmp_path}/bridge.db"'
    )
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return path


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # loopback only
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def daemon(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {**os.environ, **EXAMPLE_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--config", str(_config(tmp_path))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise AssertionError(
            f"daemon did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
    base = line.strip().rsplit(" ", 1)[1]
    yield proc, base
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


def test_health_ready_and_sigterm(daemon) -> None:  # type: ignore[no-untyped-def]
    proc, base = daemon
    assert _get(f"{base}/healthz") == (200, {"status": "ok"})
    status, body = _get(f"{base}/readyz")
    assert status == 200
    assert body["status"] == "ready"
    assert body["retailers"] == ["acme"]

    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=10)
    elapsed = time.monotonic() - started
    assert rc == 0
    assert elapsed < 10
    _, err = proc.communicate()
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(entry["message"] == "stopping" for entry in logs)
    for secret in EXAMPLE_ENV.values():
        assert secret not in err


def test_readyz_names_a_missing_token_key(tmp_path: Path) -> None:
    env = {
        k: v for k, v in {**os.environ, **EXAMPLE_ENV}.items() if k != "RETURNS_BRIDGE_TOKEN_KEY"
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "run", "--config", str(_config(tmp_path))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip().rsplit(" ", 1)[1]
        status, body = _get(f"{base}/readyz")
        assert status == 503
        assert "RETURNS_BRIDGE_TOKEN_KEY" in body["problems"]["returnlogic:acme"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def test_sigint_also_stops(daemon) -> None:  # type: ignore[no-untyped-def]
    proc, base = daemon
    assert _get(f"{base}/healthz")[0] == 200
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0


def test_unopenable_store_fails_start(tmp_path: Path) -> None:
    """A store that cannot be opened keeps the daemon from starting, loudly (exit != 0)."""
    config = (
        _config(tmp_path)
        .read_text()
        .replace(f"sqlite:///{tmp_path}/bridge.db", "sqlite:////proc/no-such-dir/bridge.db")
    )
    path = tmp_path / "bad.toml"
    path.write_text(config)
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, **EXAMPLE_ENV},
        timeout=30,
        check=False,
    )
    assert proc.returncode != 0


def test_check_cli_exit_codes(tmp_path: Path) -> None:
    env = {**os.environ, **EXAMPLE_ENV}
    ok = subprocess.run(
        [sys.executable, "-m", "bridge", "check", "--config", str(REPO / "config.example.toml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("acme")
    broken = tmp_path / "broken.toml"
    broken.write_text(
        (REPO / "config.example.toml")
        .read_text()
        .replace('base_url = "https://api.optoro.com"', 'base_url = "not a url"')
    )
    bad = subprocess.run(
        [sys.executable, "-m", "bridge", "check", "--config", str(broken)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 2
    line_no = next(
        i for i, line in enumerate(broken.read_text().splitlines(), 1) if '"not a url"' in line
    )
    assert f"{broken}:{line_no}: retailers.acme.optoro.base_url:" in bad.stdout
    for secret in EXAMPLE_ENV.values():
        assert secret not in bad.stdout + bad.stderr


def test_a_second_daemon_on_a_port_in_use_starts_nothing(tmp_path: Path, daemon) -> None:  # type: ignore[no-untyped-def]
    """A second `run` on the same config (the port is taken) exits 2 with one log line before
    it opens the store: it takes back no lease of the live daemon and starts no job."""
    proc, base = daemon
    port = base.rsplit(":", 1)[1]
    config = tmp_path / "bridge.toml"
    second = tmp_path / "second.toml"
    second.write_text(config.read_text().replace("port = 0", f"port = {port}"))
    owner = f"{socket.gethostname()}/1/live"
    with sqlite3.connect(tmp_path / "bridge.db") as db:
        db.execute(
            "INSERT INTO inbox (source, dedup_key, body_hash, body, headers, received_at,"
            " lease_owner, lease_until) VALUES ('acme:test', 'k', 'h', x'7b7d', '{}', 0, ?, ?)",
            (owner, time.time() + 3600),
        )
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(second)],
        capture_output=True,
        text=True,
        env={**os.environ, **EXAMPLE_ENV},
        timeout=30,
        check=False,
    )
    assert run.returncode == 2, run.stderr
    assert time.monotonic() - started < 20
    logs = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert [entry["message"] for entry in logs] == ["cannot listen: nothing was started"]
    assert "Traceback" not in run.stderr
    with sqlite3.connect(tmp_path / "bridge.db") as db:
        assert db.execute("SELECT lease_owner FROM inbox WHERE dedup_key = 'k'").fetchall() == [
            (owner,)
        ]
    assert _get(f"{base}/healthz") == (200, {"status": "ok"})
    assert proc.poll() is None
