"""Inbound authentication as Optoro offers it, through a running daemon over loopback HTTP.

* ``X-Optiturn-Id`` is checked when present, never required (the guide's samples send none);
* an authenticated sender with another retailer's id is kept (quarantined, flagged) and
  answered a status Optoro retries; the operator's ``inbox --replay`` applies it once, and a
  late retry of the replayed body is not applied again;
* a caller without valid credentials is refused (401) and nothing is kept;
* bearer tokens authenticate; AWS SigV4 and OAuth 2 (token endpoint) are refused by
  ``returns-bridge check`` with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from bridge.store import InboxStatus
from tests.harness import (
    ENV,
    OPTITURN_ID,
    RETAILER,
    WEBHOOK_PASSWORD,
    WEBHOOK_USER,
    Daemon,
    config_text,
    optoro_table,
    running_daemon,
)
from tests.test_optoro_inbound import basic, steps, stored_rma

VERSION = {"X-Optiturn-Api-Version": "3"}
AUTH = basic(WEBHOOK_USER, WEBHOOK_PASSWORD)
BEARER_TOKEN = "optoro-bearer-token-789"
OPTORO = "http://127.0.0.1:9"


@pytest_asyncio.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def post(
    session: aiohttp.ClientSession, daemon: Daemon, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, dict[str, str], Any]:
    async with session.post(
        daemon.retailer_url("optoro", path), data=json.dumps(body).encode(), headers=headers
    ) as resp:
        return resp.status, dict(resp.headers), await resp.json()


def rma_message(suffix: str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(json.dumps(steps("RMA")[0]["request"]))
    message["rma_identifier"] = f"{message['rma_identifier']}-{suffix}"
    return message


async def cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``returns-bridge <command> --config <folder>/bridge.toml ...`` as the operator runs it."""
    command = [sys.executable, "-m", "bridge", args[0], "--config", str(folder / "bridge.toml")]
    return await asyncio.to_thread(
        subprocess.run,
        [*command, *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **ENV},
    )


async def test_rma_without_optiturn_id_is_accepted_and_applied(tmp_path: Path, session) -> None:  # type: ignore[no-untyped-def]
    """The guide's samples carry no X-Optiturn-Id: before, they were answered 403 (never
    retried by Optoro) and lost."""
    message = rma_message("no-id")
    async with running_daemon(tmp_path, optoro_table(OPTORO)) as daemon:
        status, _, body = await post(session, daemon, "rmas", message, {**VERSION, **AUTH})
        assert status == 200, body
        assert body["status"] == "accepted"
        await daemon.settle()
        rma = await stored_rma(daemon, message["rma_identifier"])
        assert rma is not None
        assert rma.status.value == message["status"]


async def test_wrong_optiturn_id_is_kept_flagged_retried_and_replayed_once(
    tmp_path: Path, session
) -> None:  # type: ignore[no-untyped-def]
    message = rma_message("wrong-id")
    wrong = {**VERSION, **AUTH, "X-Optiturn-Id": "another-retailer"}
    async with running_daemon(tmp_path, optoro_table(OPTORO)) as daemon:
        store = daemon.runtime.store
        status, headers, body = await post(session, daemon, "rmas", message, wrong)
        assert status == 503  # Optoro retries 500/502/503/504 only: it will send it again
        assert headers["Retry-After"] == "60"
        assert body["error"]["field"] == "X-Optiturn-Id"
        assert body["error"]["quarantined"] is True
        inbox_id = body["error"]["inbox_id"]
        (kept,) = await store.list_inbox(InboxStatus.QUARANTINED)
        assert kept.id == inbox_id
        assert json.loads(kept.body) == message
        assert "Authorization" not in kept.headers

        # Optoro's retry: still refused, the same item, one flag
        status, _, body = await post(session, daemon, "rmas", message, wrong)
        assert status == 503
        assert body["error"]["inbox_id"] == inbox_id
        (flag,) = await store.list_flags()
        assert (flag.entity_kind, flag.entity_key) == ("inbox", str(inbox_id))
        assert "X-Optiturn-Id" in flag.reason
        assert f"inbox --replay {inbox_id}" in flag.reason
        assert await stored_rma(daemon, message["rma_identifier"]) is None

        # the status surface shows it, and the operator replays it
        flagged = await cli(tmp_path, "dlq", "list", "--flagged")
        assert flagged.returncode == 0, flagged.stderr
        assert f"inbox:{inbox_id}" in flagged.stdout
        listed = await cli(tmp_path, "inbox")
        assert f"quarantined {inbox_id}\t" in listed.stdout
        replayed = await cli(tmp_path, "inbox", "--replay", str(inbox_id))
        assert replayed.returncode == 0, replayed.stderr
        assert f"{inbox_id}\tqueued again" in replayed.stdout

        async def applied() -> bool:
            item = await store.get_inbox(inbox_id)
            return item is not None and item.status is InboxStatus.DONE

        await wait_until(applied)
        rma = await stored_rma(daemon, message["rma_identifier"])
        assert rma is not None
        assert await store.list_flags() == []  # replayed: nothing is left for the operator
        (resolved,) = await store.list_flags(include_resolved=True)
        assert resolved.id == flag.id
        assert resolved.resolved_at is not None

        # a late retry of the replayed body: 200 (stop retrying), not applied again
        status, _, body = await post(session, daemon, "rmas", message, wrong)
        assert status == 200
        assert body["error"]["duplicate_of"] == inbox_id
        assert body["error"]["quarantined"] is False
        status, _, body = await post(
            session, daemon, "rmas", message, {**wrong, "X-Optiturn-Id": OPTITURN_ID}
        )
        assert status == 200
        await daemon.settle()
        stats = await store.inbox_stats()
        assert (stats.done, stats.quarantined, stats.pending) == (1, 0, 0)
        assert stats.duplicates == 3


async def test_a_retry_applied_after_the_fix_resolves_the_flag(tmp_path: Path, session) -> None:  # type: ignore[no-untyped-def]
    """Optoro's retry of the kept body, once it carries this retailer's id (or none), is
    applied, and the flag that asked the operator to replay it is resolved."""
    message = rma_message("retry-after-fix")
    wrong = {**VERSION, **AUTH, "X-Optiturn-Id": "another-retailer"}
    async with running_daemon(tmp_path, optoro_table(OPTORO)) as daemon:
        store = daemon.runtime.store
        status, _, body = await post(session, daemon, "rmas", message, wrong)
        assert status == 503
        inbox_id = body["error"]["inbox_id"]
        assert [f.entity_key for f in await store.list_flags()] == [str(inbox_id)]

        status, _, body = await post(session, daemon, "rmas", message, {**VERSION, **AUTH})
        assert status == 200
        assert body["inbox_id"] == inbox_id
        await daemon.settle()
        assert await stored_rma(daemon, message["rma_identifier"]) is not None
        assert await store.list_flags() == []
        flagged = await cli(tmp_path, "dlq", "list", "--flagged")
        assert f"inbox:{inbox_id}" not in flagged.stdout


async def test_wrong_optiturn_id_on_an_exchange_order_is_kept_and_flagged(
    tmp_path: Path, session
) -> None:  # type: ignore[no-untyped-def]
    order = steps("Exchange Order")[0]["request"]
    headers = {**AUTH, "X-Optiturn-Api-Version": "2", "X-Optiturn-Id": "another-retailer"}
    async with running_daemon(tmp_path, optoro_table(OPTORO)) as daemon:
        status, _, body = await post(session, daemon, "exchange_orders", order, headers)
        assert status == 503
        assert body["error"]["field"] == "X-Optiturn-Id"
        (kept,) = await daemon.runtime.store.list_inbox(InboxStatus.QUARANTINED)
        assert json.loads(kept.body) == order
        (flag,) = await daemon.runtime.store.list_flags()
        assert flag.entity_key == str(kept.id)
        assert "Optoro's retry then places the order" in flag.reason
        assert "--replay" not in flag.reason  # exchange orders are placed live, never replayed


async def test_callers_without_valid_credentials_are_refused_and_nothing_is_kept(
    tmp_path: Path, session
) -> None:  # type: ignore[no-untyped-def]
    """An attacker who knows the retailer's Optiturn id (it is no secret) but not the
    credentials: 401, nothing stored, nothing flagged, however the request is shaped."""
    message = rma_message("attacker")
    right_id = {**VERSION, "X-Optiturn-Id": OPTITURN_ID}
    attempts = [
        {**right_id, **basic(WEBHOOK_USER, "guessed")},
        {**right_id, **basic("admin", WEBHOOK_PASSWORD)},
        right_id,
        {**right_id, "Authorization": f"Bearer {WEBHOOK_PASSWORD}"},
        {**right_id, "Authorization": "Basic !!!not-base64"},
        {**VERSION, **basic(WEBHOOK_USER, "guessed"), "X-Optiturn-Id": "another-retailer"},
    ]
    async with running_daemon(tmp_path, optoro_table(OPTORO)) as daemon:
        for headers in attempts:
            for path in ("rmas", "exchange_orders"):
                status, answer_headers, body = await post(session, daemon, path, message, headers)
                assert status == 401, (path, headers, body)
                assert body["error"]["field"] == "Authorization"
                assert answer_headers["WWW-Authenticate"].startswith("Basic ")
        stats = await daemon.runtime.store.inbox_stats()
        assert stats.by_source == {}
        assert await daemon.runtime.store.list_flags(include_resolved=True) == []


def bearer_table(token_ref: str = "${OPTORO_BEARER}") -> str:
    table = optoro_table(OPTORO)
    basic_part = table[table.index(f"[retailers.{RETAILER}.optoro.inbound_auth]") :]
    return table.replace(
        basic_part,
        f'[retailers.{RETAILER}.optoro.inbound_auth]\nkind = "bearer"\ntoken = "{token_ref}"\n',
    )


async def test_bearer_token_authenticates_optoro(tmp_path: Path, session) -> None:  # type: ignore[no-untyped-def]
    message = rma_message("bearer")
    env = {"OPTORO_BEARER": BEARER_TOKEN}
    async with running_daemon(tmp_path, bearer_table(), env=env) as daemon:
        for refused in (
            {"Authorization": f"Bearer {BEARER_TOKEN}x"},
            {"Authorization": "Bearer "},
            {"Authorization": f"Basic {BEARER_TOKEN}"},
            {"Authorization": BEARER_TOKEN},
            AUTH,
            {},
        ):
            status, headers, body = await post(
                session, daemon, "rmas", message, {**VERSION, **refused}
            )
            assert status == 401, (refused, body)
            assert headers["WWW-Authenticate"].startswith("Bearer ")
            assert BEARER_TOKEN not in json.dumps(body)
        assert (await daemon.runtime.store.inbox_stats()).by_source == {}

        status, _, body = await post(
            session,
            daemon,
            "rmas",
            message,
            {**VERSION, "X-Optiturn-Id": OPTITURN_ID, "Authorization": f"bearer {BEARER_TOKEN}"},
        )
        assert status == 200, body
        await daemon.settle()
        assert await stored_rma(daemon, message["rma_identifier"]) is not None
        async with session.get(f"{daemon.url}/openapi.json") as resp:
            assert resp.status == 200
            document = await resp.json()
        schemes = document["components"]["securitySchemes"]
        assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
        (kept,) = await daemon.runtime.store.list_inbox(InboxStatus.DONE)
        assert "Authorization" not in kept.headers
        assert BEARER_TOKEN not in json.dumps(kept.headers)


async def test_check_refuses_schemes_the_bridge_cannot_verify(tmp_path: Path) -> None:
    """Optoro also offers AWS SigV4 and OAuth 2: configured, they are refused with the
    reason, at the table that names them, never accepted as if they authenticated anyone."""
    ok_config = config_text(tmp_path / "bridge.db", bearer_table(BEARER_TOKEN))
    (tmp_path / "bridge.toml").write_text(ok_config)
    ok = await cli(tmp_path, "check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for kind, words in (("aws_sigv4", "AWS SigV4"), ("oauth2", "OAuth 2")):
        text = ok_config.replace('kind = "bearer"', f'kind = "{kind}"\nregion = "us-east-1"')
        (tmp_path / "bridge.toml").write_text(text)
        refused = await cli(tmp_path, "check")
        assert refused.returncode == 2, refused.stdout
        table = f"[retailers.{RETAILER}.optoro.inbound_auth]"
        line_no = next(i for i, line in enumerate(text.splitlines(), 1) if line == table)
        output = refused.stdout + refused.stderr
        assert f"retailers.{RETAILER}.optoro.inbound_auth" in output
        assert words in output
        assert f"bridge.toml:{line_no}:" in output, output
        assert BEARER_TOKEN not in output


async def wait_until(condition: Any, within: float = 15.0) -> None:
    """Wait for ``condition()`` to hold, polling, until a deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)
