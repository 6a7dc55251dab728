"""The ReturnLogic installation callback is bound to the retailer: over real HTTP, the daemon
app against the ReturnLogic sandbox, with a real SQLite file.

A callback without a state the bridge issued for this retailer and team, a replayed one,
another retailer's, an expired one, or a teamId that is not the retailer's team is refused
before any call to ReturnLogic (the sandbox records no ``/v1/oauth`` request) and leaves
the tokens as they were; a URL from ``returns-bridge returnlogic install-url`` installs."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet

from adapters.optoro.sandbox import running_sandbox as running_optoro
from adapters.returnlogic import team_key
from adapters.returnlogic.config import ReturnLogicConfig
from adapters.returnlogic.install import install_url
from adapters.returnlogic.sandbox import (
    AUTHORIZE_PATH,
    OAUTH_PATH,
    ReturnLogicSandbox,
    running_sandbox,
)
from bridge.oauthstate import StateSigner
from tests.harness import ENV as HARNESS_ENV
from tests.harness import (
    OPTORO_CLIENT_ID,
    OPTORO_SECRET,
    RETAILER,
    Daemon,
    optoro_table,
    running_daemon,
)

CLIENT_ID, CLIENT_SECRET = "rl-app", "rl-app-secret-0123456789"
KEY_ENV = "RB_TEST_RL_TOKEN_KEY"
ACME_TEAM = "0a8d6c1e-acme-team"
OTHER_TEAM = "7f3b2d9a-other-team"
ATTACKER_TEAM = "e1e1e1e1-attacker-team"
ROOT = Path(__file__).resolve().parent.parent


def tables(sandbox_url: str, acme_orders: str = "enabled = false") -> str:
    def retailer(rid: str, team: str, orders: str = "enabled = false") -> str:
        return f"""
[retailers.{rid}.returnlogic]
base_url = "{sandbox_url}"
team_id = "{team}"
client_id = "{CLIENT_ID}"
client_secret = "${{RL_SECRET}}"
token_key_env = "{KEY_ENV}"
timeout = 5.0
[retailers.{rid}.returnlogic.install]
authorize_url = "{sandbox_url}{AUTHORIZE_PATH}"
[retailers.{rid}.returnlogic.orders]
{orders}
"""

    private = f"""
[retailers.private.returnlogic]
base_url = "{sandbox_url}"
team_id = "private-team"
static_token = "private-app-token-000"
"""
    return retailer(RETAILER, ACME_TEAM, acme_orders) + retailer("other", OTHER_TEAM) + private


ENV = {"RL_SECRET": CLIENT_SECRET}


@pytest.fixture
def token_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    key = Fernet.generate_key()
    monkeypatch.setenv(KEY_ENV, key.decode())
    return key


@pytest_asyncio.fixture
async def sandbox() -> AsyncIterator[ReturnLogicSandbox]:
    async with running_sandbox(client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as rl:
        yield rl


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def daemon_for(tmp_path: Path, sandbox: ReturnLogicSandbox) -> Any:
    return running_daemon(tmp_path, tables(sandbox.url), env=ENV)


def register_redirect(sandbox: ReturnLogicSandbox, daemon: Daemon) -> None:
    """The app's redirect url, as registered with ReturnLogic: the bridge's callback."""
    sandbox.redirect_url = daemon.retailer_url("returnlogic", "oauth/callback")


def oauth_calls(sandbox: ReturnLogicSandbox) -> int:
    return sum(1 for r in sandbox.requests if r.path == OAUTH_PATH)


async def tokens(daemon: Daemon, team: str = ACME_TEAM) -> tuple[bytes, int] | None:
    return await daemon.runtime.store.get_token(f"returnlogic:{team}")


async def callback(
    session: aiohttp.ClientSession, daemon: Daemon, rid: str = RETAILER, **query: str
) -> tuple[int, Any]:
    url = f"{daemon.url}/retailers/{rid}/returnlogic/oauth/callback?{urlencode(query)}"
    async with session.get(url) as response:
        return response.status, await response.json()


async def approve(
    session: aiohttp.ClientSession, url: str, as_team: str = ACME_TEAM
) -> dict[str, str]:
    """The retailer approves the installation on ReturnLogic's page: the query the sandbox
    redirects the browser to (code, teamId, state)."""
    async with session.get(f"{url}&as_team={as_team}", allow_redirects=False) as response:
        assert response.status == 302, await response.text()
        location = response.headers["Location"]
    return {k: v[-1] for k, v in parse_qs(urlsplit(location).query).items()}


def acme_config(daemon: Daemon, rid: str = RETAILER) -> ReturnLogicConfig:
    return daemon.runtime.config.retailers[rid].platform("returnlogic", ReturnLogicConfig)


async def wait_for(check: Callable[[], bool], within: float = 10.0) -> None:
    """Wait until ``check()`` holds (a condition with a deadline, not a fixed sleep)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.02)


def refused(answer: tuple[int, Any], status: int, field: str, words: str) -> None:
    code, body = answer
    assert code == status, body
    assert body["error"]["field"] == field, body
    assert words in body["error"]["message"], body


async def test_missing_forged_or_malformed_state_is_refused_without_a_call(
    tmp_path: Path,
    token_key: bytes,
    sandbox: ReturnLogicSandbox,
    session: aiohttp.ClientSession,
) -> None:
    async with daemon_for(tmp_path, sandbox) as daemon:
        code = sandbox.issue_code(ACME_TEAM)
        forged = StateSigner(Fernet.generate_key(), 600).issue(RETAILER, ACME_TEAM)

        refused(await callback(session, daemon, code=code, teamId=ACME_TEAM), 400, "state", "no")
        refused(
            await callback(session, daemon, code=code, teamId=ACME_TEAM, state=forged),
            403,
            "state",
            "bad signature",
        )
        for junk in ("v1.e30.AAAA", "x" * 5000, "v1..", "v1.\u00e9.x", forged + "x"):
            status, body = await callback(session, daemon, code=code, teamId=ACME_TEAM, state=junk)
            assert status in (400, 403), (junk[:20], body)
            assert body["error"]["field"] == "state"
        refused(await callback(session, daemon, teamId=ACME_TEAM), 400, "code", "no code")
        valid = StateSigner(token_key, 600).issue(RETAILER, ACME_TEAM)
        refused(await callback(session, daemon, code=code, state=valid), 400, "teamId", "no")
        refused(
            await callback(session, daemon, "private", code=code, teamId="private-team"),
            409,
            "code",
            "static token",
        )

        assert await tokens(daemon) is None
        assert oauth_calls(sandbox) == 0
        assert sandbox.tokens_issued == 0


async def test_other_retailers_expired_or_other_team_state_is_refused_without_a_call(
    tmp_path: Path,
    token_key: bytes,
    sandbox: ReturnLogicSandbox,
    session: aiohttp.ClientSession,
) -> None:
    async with daemon_for(tmp_path, sandbox) as daemon:
        register_redirect(sandbox, daemon)
        # a state the bridge issued, but for the other retailer (approved by its team)
        other = await approve(session, install_url("other", acme_config(daemon, "other")))
        refused(
            await callback(
                session, daemon, code=other["code"], teamId=ACME_TEAM, state=other["state"]
            ),
            403,
            "state",
            "another retailer",
        )
        # a state issued for acme an hour ago: expired
        old = StateSigner(token_key, 600, clock=lambda: time.time() - 3600).issue(
            RETAILER, ACME_TEAM
        )
        refused(
            await callback(
                session, daemon, code=sandbox.issue_code(ACME_TEAM), teamId=ACME_TEAM, state=old
            ),
            403,
            "state",
            "expired",
        )
        # acme's own fresh state, but approved by (and a code of) another team
        mine = await approve(session, install_url(RETAILER, acme_config(daemon)), ATTACKER_TEAM)
        assert mine["teamId"] == ATTACKER_TEAM
        refused(await callback(session, daemon, **mine), 403, "teamId", "configured team")
        # ... or with another team's code and this team's id, but a state for another team
        foreign = StateSigner(token_key, 600).issue(RETAILER, ATTACKER_TEAM)
        refused(
            await callback(session, daemon, code=mine["code"], teamId=ACME_TEAM, state=foreign),
            403,
            "state",
            "another account",
        )

        assert await tokens(daemon) is None
        assert await tokens(daemon, OTHER_TEAM) is None
        assert oauth_calls(sandbox) == 0

        # a refusal consumes nothing: the retailer's own approval still installs
        real = await approve(session, install_url(RETAILER, acme_config(daemon)))
        status, body = await callback(session, daemon, **real)
        assert (status, body) == (200, {"status": "installed", "team": ACME_TEAM})
        assert oauth_calls(sandbox) == 1


async def test_valid_install_once_replays_refused_concurrently_and_after_restart(
    tmp_path: Path,
    token_key: bytes,
    sandbox: ReturnLogicSandbox,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with daemon_for(tmp_path, sandbox) as daemon:
        register_redirect(sandbox, daemon)
        url = install_url(RETAILER, acme_config(daemon))
        approved = await approve(session, url)
        assert approved["teamId"] == ACME_TEAM
        # the redirect arrives twice at once (a double click, or an attacker racing it)
        second_code = sandbox.issue_code(ACME_TEAM)
        answers = await asyncio.gather(
            callback(session, daemon, **approved),
            callback(session, daemon, **{**approved, "code": second_code}),
        )
        assert sorted(status for status, _ in answers) == [200, 403]
        assert oauth_calls(sandbox) == 1
        installed = await tokens(daemon)
        assert installed is not None
        assert sandbox.tokens_issued == 1

        # the token call took no slot from the team's request budget
        team = daemon.runtime.find_shared(
            team_key(daemon.runtime.config.retailers[RETAILER].platforms["returnlogic"].team_id)
        )
        assert team is not None
        assert (team.limits.limiter.admitted, team.token_limits.limiter.admitted) == (0, 1)
        # the tokens work: the team's calls are authenticated
        response = await team.request("GET", "/v1/orders", params={"limit": 1})
        assert response.status == 200

        records = [r for r in caplog.records if r.getMessage() == "installed"]
        assert len(records) == 1
        assert getattr(records[0], "retailer", None) == RETAILER
        # (aiohttp's access log, which the daemon's logging configuration silences, aside)
        for record in (r for r in caplog.records if r.name != "aiohttp.access"):
            text = f"{record.getMessage()} {record.__dict__}"
            assert CLIENT_SECRET not in text
            assert approved["code"] not in text

        # replayed with an attacker's code: refused, tokens unchanged, no call
        replay = {**approved, "code": sandbox.issue_code(ATTACKER_TEAM)}
        refused(await callback(session, daemon, **replay), 403, "state", "used already")
        assert await tokens(daemon) == installed
        assert oauth_calls(sandbox) == 1

    async with daemon_for(tmp_path, sandbox) as restarted:
        replay = {**approved, "code": sandbox.issue_code(ATTACKER_TEAM)}
        refused(await callback(session, restarted, **replay), 403, "state", "used already")
        assert await tokens(restarted) == installed
        assert oauth_calls(sandbox) == 1


async def test_install_url_command_prints_a_url_the_callback_accepts(
    tmp_path: Path,
    token_key: bytes,
    sandbox: ReturnLogicSandbox,
    session: aiohttp.ClientSession,
) -> None:
    async with daemon_for(tmp_path, sandbox) as daemon:
        register_redirect(sandbox, daemon)
        env = {**os.environ, **ENV, KEY_ENV: token_key.decode()}

        def command(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "bridge", "returnlogic", "install-url", *args],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
                cwd=ROOT,
                check=False,
            )

        config = str(tmp_path / "bridge.toml")
        done = await asyncio.to_thread(command, "--retailer", RETAILER, "--config", config)

        assert done.returncode == 0, done.stderr
        url = done.stdout.strip()
        assert url.startswith(f"{sandbox.url}{AUTHORIZE_PATH}?")
        query = parse_qs(urlsplit(url).query)
        assert query["client_id"] == [CLIENT_ID]
        assert query["response_type"] == ["code"]
        assert CLIENT_SECRET not in done.stdout + done.stderr
        assert oauth_calls(sandbox) == 0

        status, body = await callback(session, daemon, **await approve(session, url))
        assert (status, body) == (200, {"status": "installed", "team": ACME_TEAM})
        assert await tokens(daemon) is not None
        assert oauth_calls(sandbox) == 1

        unknown = await asyncio.to_thread(command, "--retailer", "nobody", "--config", config)
        assert unknown.returncode == 2
        assert "no enabled retailer 'nobody'" in unknown.stderr
        private = await asyncio.to_thread(command, "--retailer", "private", "--config", config)
        assert private.returncode == 2
        assert "static_token" in private.stderr
        del env[KEY_ENV]
        keyless = await asyncio.to_thread(command, "--retailer", RETAILER, "--config", config)
        assert keyless.returncode == 2
        assert KEY_ENV in keyless.stderr
        assert not keyless.stdout


async def test_sandbox_installation_page(
    sandbox: ReturnLogicSandbox, session: aiohttp.ClientSession
) -> None:
    """The fake's installation page: the app's client id only, its redirect url only, the
    state handed back unchanged with a code of the approving team."""
    sandbox.redirect_url = "http://127.0.0.1:9/callback?x=1"
    page = f"{sandbox.url}{AUTHORIZE_PATH}"
    for query, status in [
        ({"client_id": "someone-else", "state": "s"}, 400),
        ({"client_id": CLIENT_ID, "response_type": "token"}, 400),
        ({"client_id": CLIENT_ID, "redirect_uri": "http://127.0.0.1:9/evil"}, 400),
    ]:
        async with session.get(f"{page}?{urlencode(query)}", allow_redirects=False) as response:
            assert response.status == status, query

    approved = await approve(session, f"{page}?client_id={CLIENT_ID}&state=s-1", OTHER_TEAM)
    assert approved["x"] == "1"
    assert (approved["state"], approved["teamId"]) == ("s-1", OTHER_TEAM)
    async with session.post(
        f"{sandbox.url}{OAUTH_PATH}",
        json={
            "grant_type": "authorization_code",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "code": approved["code"],
        },
    ) as response:
        assert response.status == 200
    assert sandbox.tokens_issued == 1


async def test_install_brings_the_first_order_poll_forward(
    tmp_path: Path,
    token_key: bytes,
    sandbox: ReturnLogicSandbox,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The poll at startup found no token; polls are an hour apart, yet the installation
    starts the first order sync at once."""
    caplog.set_level(logging.WARNING, logger="adapters.returnlogic.orders")
    async with running_optoro(client_id=OPTORO_CLIENT_ID, client_secret=OPTORO_SECRET) as optoro:
        text = tables(sandbox.url, "poll_every = 3600.0") + optoro_table(optoro.url)
        async with running_daemon(tmp_path, text, env={**HARNESS_ENV, **ENV}) as daemon:
            register_redirect(sandbox, daemon)
            job = daemon.runtime.scheduler.get_job(f"returnlogic-orders-poll:{RETAILER}")
            assert job is not None

            def orders_read() -> int:
                return sum(1 for r in sandbox.requests if r.path == "/v1/orders")

            def startup_poll_failed() -> bool:
                return any(
                    r.getMessage().startswith("returnlogic order sync failed")
                    for r in caplog.records
                )

            await wait_for(startup_poll_failed)
            url = install_url(RETAILER, acme_config(daemon))
            assert orders_read() == 0
            status, _ = await callback(session, daemon, **await approve(session, url))
            assert status == 200

            await wait_for(lambda: orders_read() >= 1)


async def test_work_that_needs_the_installation_waits_for_it_and_goes_out_at_install(
    tmp_path: Path,
    token_key: bytes,
    sandbox: ReturnLogicSandbox,
    session: aiohttp.ClientSession,
) -> None:
    """Before the retailer installs the app, a ReturnLogic webhook's RMA read cannot be made:
    it waits for a retry (never a dead letter for an operator to replay), and the
    installation sends it at once instead of at its next retry (60 s or more away)."""
    rmas = f'[retailers.{RETAILER}.returnlogic.rmas]\nenabled = true\nwebhook_secret = "hook-key"\n'
    async with running_daemon(tmp_path, tables(sandbox.url) + rmas, env=ENV) as daemon:
        register_redirect(sandbox, daemon)
        webhook = daemon.retailer_url("returnlogic", "webhooks?key=hook-key")
        event = {"eventId": "e-1", "resourceAction": "rma.updated", "rlRmaId": "424242"}
        async with session.post(webhook, json=event) as response:
            assert response.status == 200, await response.text()
        store = daemon.runtime.store
        destination = f"returnlogic.rmas:{RETAILER}"

        async def the_read() -> Any:
            (effect,) = await store.list_effects(destination=destination)
            return effect

        async def tried_once() -> bool:
            effects = await store.list_effects(destination=destination)
            return bool(effects) and "install" in (effects[0].last_error or "")

        deadline = time.monotonic() + 10
        while not await tried_once():
            assert time.monotonic() < deadline, "the read was never tried"
            await asyncio.sleep(0.02)
        waiting = await the_read()
        assert waiting.state.value == "pending"
        assert "has not installed the app" in (waiting.last_error or ""), waiting.last_error
        assert waiting.next_attempt_at >= store.clock() + 50  # the install retry, not a spin

        approved = await approve(session, install_url(RETAILER, acme_config(daemon)))
        installed_at = time.monotonic()
        assert (await callback(session, daemon, **approved))[0] == 200
        deadline = time.monotonic() + 10
        while (await the_read()).state.value == "pending":
            assert time.monotonic() < deadline, "the waiting read did not go out at install"
            await asyncio.sleep(0.02)
        done = await the_read()
        assert done.state.value == "delivered", (done.state, done.dead_reason)
        assert time.monotonic() - installed_at < 10
        reads = [r for r in sandbox.requests if r.path == "/v1/rmas/424242"]
        assert len(reads) == 1
