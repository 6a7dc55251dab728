"""No secret in any error path: reprs of requests and responses, token call failures, and a
crash traceback all go through the redacting sink."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from adapters.optoro.sandbox import running_sandbox as optoro_sandbox
from adapters.returnlogic.sandbox import DEFAULT_TEAM
from adapters.returnlogic.sandbox import running_sandbox as rl_sandbox
from bridge.errors import RetriableDeliveryError
from bridge.http import OutboundRequest, Response
from bridge.logs import JsonFormatter, register_secret
from tests.daemon_process import DaemonProcess, until
from tests.harness import (
    OPTORO_CLIENT_ID,
    OPTORO_SECRET,
    WEBHOOK_PASSWORD,
    config_text,
    optoro_table,
)

REPO = Path(__file__).resolve().parent.parent
BEARER = "eyJhbGciOi.bearer-value-4f1c"
API_KEY = "api-key-value-9d2e77"
COOKIE = "session=cookie-value-1a2b3c"
CLIENT_SECRET = "client-secret-value-5e6f"
CODE = "auth-code-value-77aa"
ACCESS_TOKEN = "access-token-value-8c9d"
SECRETS = (BEARER, API_KEY, "cookie-value-1a2b3c", CLIENT_SECRET, CODE, ACCESS_TOKEN)


def _token_call() -> OutboundRequest:
    return OutboundRequest(
        "POST",
        "https://partner.example/oauth/token",
        {"Content-Type": "application/json"},
        json={"grant_type": "authorization_code", "code": CODE, "client_secret": CLIENT_SECRET},
        credentials_exchange=True,
    )


def test_request_and_response_reprs_redact_credentials() -> None:
    call = OutboundRequest(
        "GET",
        "https://partner.example/v1/orders?key=" + API_KEY,
        {"Authorization": f"Bearer {BEARER}", "X-Api-Key": API_KEY, "Cookie": COOKIE},
        json={"note": "plain", "client_secret": CLIENT_SECRET},
    )
    answer = Response(
        200,
        {"Set-Cookie": COOKIE},
        json.dumps({"access_token": ACCESS_TOKEN, "refresh_token": ACCESS_TOKEN}).encode(),
        credentials_exchange=True,
    )
    shown = " ".join(
        [
            repr(call),
            str(call),
            json.dumps(call.describe()),
            repr(_token_call()),
            json.dumps(_token_call().describe()),
            repr(answer),
            str(answer),
            json.dumps(answer.describe()),
            answer.text(),
        ]
    )
    for secret in SECRETS:
        assert secret not in shown
    assert "plain" in shown  # what is not a credential stays readable
    assert answer.json()["access_token"] == ACCESS_TOKEN  # the caller still gets the token


def test_an_error_raised_with_a_request_in_its_message_is_logged_redacted() -> None:
    """An exception whose message carries a request and a token (a bug that formats one),
    logged with its traceback: the line written holds none of the secrets."""
    register_secret(SecretStr(ACCESS_TOKEN))
    record: logging.LogRecord
    try:
        try:
            raise ValueError(f"token {ACCESS_TOKEN} refused")
        except ValueError as cause:
            raise RetriableDeliveryError(f"could not send {_token_call()!r}") from cause
    except RetriableDeliveryError as exc:
        record = logging.LogRecord(
            "bridge.test", logging.ERROR, __file__, 1, "failed: %s", (exc,), None
        )
        record.exc_info = (type(exc), exc, exc.__traceback__)
        record.request = _token_call().json
    line = JsonFormatter().format(record)
    for secret in SECRETS:
        assert secret not in line
    assert "RetriableDeliveryError" in json.loads(line)["error"]


CRASHER = textwrap.dedent(
    """
    import asyncio, sys
    from bridge.http import OutboundRequest
    from bridge.logs import configure_logging, install_loop_handler, register_secret

    configure_logging("INFO")
    register_secret(sys.argv[1])
    request = OutboundRequest(
        "POST", "https://partner.example/oauth/token",
        {"Authorization": "Bearer " + sys.argv[1]},
        json={"client_secret": sys.argv[1]}, credentials_exchange=True,
    )

    async def doomed():
        raise RuntimeError(f"lost {sys.argv[1]} while sending {request!r}")

    async def main():
        install_loop_handler()
        task = asyncio.get_running_loop().create_task(doomed(), name="doomed")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        del task  # never awaited: the loop reports it when it is collected
        import gc; gc.collect()
        raise KeyError(sys.argv[1])

    asyncio.run(main())
    """
)


def test_an_uncaught_exception_in_a_task_and_at_the_top_goes_through_the_sink() -> None:
    """The daemon's logging setup (``configure_logging`` + ``install_loop_handler``, as
    ``returns-bridge run`` installs them) in a real process: a task's exception nobody
    retrieved and an exception that ends the process are JSON lines without the secret."""
    secret = "crash-secret-value-31f0"
    proc = subprocess.run(
        [sys.executable, "-c", CRASHER, secret],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert secret not in proc.stderr + proc.stdout
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    messages = [entry["message"] for entry in lines]
    assert "Task exception was never retrieved" in messages
    assert "uncaught exception" in messages
    assert all("Traceback" in entry["error"] for entry in lines if "error" in entry)
    raw = [line for line in proc.stderr.splitlines() if not line.startswith("{")]
    assert not any("Traceback" in line for line in raw)


async def test_daemon_stderr_holds_no_secret_after_token_failures(tmp_path: Path) -> None:
    """The real daemon (``python -m bridge run --log-level DEBUG``): Optoro refuses its
    client secret (token call failure, dead letters), then accepts it, then revokes the
    tokens (401 on Returns Portal Orders, one refresh); ReturnLogic fails calls with 500.
    None of the configured secrets nor the tokens Optoro issued appear on stderr."""
    rl_key = "rl-static-key-secret-0b7c"
    async with (
        rl_sandbox() as rl,
        optoro_sandbox(client_id=OPTORO_CLIENT_ID, client_secret="not-what-the-bridge-has") as op,
    ):
        rl.issue_api_key(DEFAULT_TEAM, rl_key)

        def more_orders(seed: int) -> None:
            rl.generate(orders=20, seed=seed, anchor=datetime.now(UTC), days=1)

        more_orders(1)
        tables = optoro_table(op.url, batch_size="5") + (
            f'[retailers.acme.returnlogic]\nbase_url = "{rl.url}"\nteam_id = "{DEFAULT_TEAM}"\n'
            'static_token = "${RL_KEY}"\ntimeout = 5.0\n'
            "[retailers.acme.returnlogic.orders]\npoll_every = 0.5\noverlap = 200000.0\n"
            "[retailers.acme.returnlogic.retry]\ninitial = 0.05\ncap = 0.2\n"
            "[retailers.acme.optoro.retry]\ninitial = 0.05\ncap = 0.2\n"
        )
        config = tmp_path / "bridge.toml"
        config.write_text(config_text(tmp_path / "bridge.db", tables))
        env = {"RL_KEY": rl_key, "OPTORO_SECRET": OPTORO_SECRET}
        env["WEBHOOK_PASSWORD"] = WEBHOOK_PASSWORD
        log = tmp_path / "daemon.log"
        daemon = await DaemonProcess.start(config, log, env)
        try:

            def refused_token_calls() -> int:
                return sum(1 for r in op.requests if r.path == "/oauth/token" and r.status == 401)

            await until(lambda: refused_token_calls() >= 1, 30, "a refused token call")
            op.configure(client_secret=OPTORO_SECRET)
            more_orders(2)
            await until(lambda: any(r.status == 200 for r in op.rpo_requests()), 30, "an RPO")
            op.revoke_tokens()
            rl.configure(fail_next=3)
            more_orders(3)
            await until(
                lambda: (
                    sum(1 for r in op.rpo_requests() if r.status == 401) >= 1
                    and op.tokens_issued >= 2
                ),
                30,
                "a refused token and its replacement",
            )
        finally:
            assert await daemon.stop(signal.SIGTERM) == 0
        stderr = await asyncio.to_thread(log.read_text)
        issued = set(op._tokens) | set(op._revoked)  # every access token Optoro handed out
        assert issued
        for secret in (rl_key, OPTORO_SECRET, WEBHOOK_PASSWORD, *issued):
            assert secret not in stderr
        entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
        assert any(e["message"] == "effect dead-lettered" for e in entries)  # the failure ran
