"""The operator's commands (dlq, inbox) as subprocesses, beside a running daemon."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from bridge.store import EffectState
from demo.world import ENV, World, running_world, scenario_retailer
from tests.test_kibo_faults import FAST, post_rma, up_to_carrier_scan, wait_for

RETAILER = scenario_retailer(1)
DESTINATION = f"kibo.returns:{RETAILER}"


async def cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "bridge",
        *args[:1],
        "--config",
        str(folder / "bridge.toml"),
        *args[1:],
    ]
    return await asyncio.to_thread(
        subprocess.run,
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **ENV},
    )


async def dead_letter(world: World) -> int:
    world.kibo.configure(reject_next=1, reject_status=400)
    await up_to_carrier_scan(world)

    async def dead() -> bool:
        return bool(await world.runtime.store.list_effects(EffectState.DEAD))

    await wait_for(dead)
    (effect,) = await world.runtime.store.list_effects(EffectState.DEAD)
    return effect.id


async def test_dlq_list_show_dry_run_and_replay(tmp_path: Path) -> None:
    async with running_world(tmp_path, [1], settings=FAST) as world:
        effect_id = await dead_letter(world)

        listed = await cli(tmp_path, "dlq", "list")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.startswith(f"{effect_id}\t{DESTINATION}\tkibo.return.create\t")
        assert "answered 400" in listed.stdout

        shown = await cli(tmp_path, "dlq", "show", str(effect_id))
        detail = json.loads(shown.stdout)
        assert detail["state"] == "dead"
        assert detail["response"]["status"] == 400
        assert "Authorization" not in detail["request"]["headers"]  # attached on admission
        assert "demo-kibo-token" not in shown.stdout + shown.stderr

        creates = len(world.kibo.create_requests())
        preview = await cli(tmp_path, "dlq", "replay", str(effect_id), "--dry-run")
        assert preview.returncode == 0, preview.stderr
        request = json.loads(preview.stdout)["request"]
        assert request["method"] == "POST"
        assert request["url"].endswith("/api/v2/return/")
        assert request["json"]["externalOrderID"] == "ORD1234567"
        assert len(world.kibo.create_requests()) == creates  # nothing sent
        assert (await world.runtime.store.get_effect(effect_id)).state is EffectState.DEAD  # type: ignore[union-attr]

        refused = await cli(tmp_path, "dlq", "replay", "--all")
        assert refused.returncode == 2  # --all needs --destination

        replayed = await cli(tmp_path, "dlq", "replay", "--all", "--destination", DESTINATION)
        assert replayed.returncode == 0, replayed.stderr
        assert f"{effect_id}\tqueued again" in replayed.stdout

        async def delivered() -> bool:
            effect = await world.runtime.store.get_effect(effect_id)
            return effect is not None and effect.state is EffectState.DELIVERED

        await wait_for(delivered)
        assert len(world.kibo.find_returns()) == 1


async def test_inbox_shows_backlog_and_quarantine_and_replays_it(tmp_path: Path) -> None:
    async with running_world(tmp_path, [1], settings=FAST) as world:
        await post_rma(world, {"rma_identifier": "broken", "status": "CREATED"})
        shown = await cli(tmp_path, "inbox")
        assert shown.returncode == 0, shown.stderr
        assert "quarantined 1" in shown.stdout
        line = next(
            x for x in shown.stdout.splitlines() if x.startswith("quarantined ") and "\t" in x
        )
        inbox_id = line.split()[1]
        assert "created_at" in line  # the reason names the missing field
        again = await cli(tmp_path, "inbox", "--replay", inbox_id)
        assert f"{inbox_id}\tqueued again" in again.stdout


async def test_flagged_rmas_are_listed(tmp_path: Path) -> None:
    async with running_world(tmp_path, [1], settings=FAST) as world:
        await up_to_carrier_scan(world)

        async def created() -> bool:
            return len(world.kibo.find_returns()) == 1

        await wait_for(created)
        (kibo_return,) = world.kibo.find_returns()
        await world.kibo.reject(kibo_return["returnID"])

        async def flagged() -> bool:
            return bool(await world.runtime.store.list_flags())

        await wait_for(flagged)
        listed = await cli(tmp_path, "dlq", "list", "--flagged")
        assert listed.returncode == 0, listed.stderr
        assert f"rma:{RETAILER}:8b3P5rCjHW" in listed.stdout
        assert "rejected" in listed.stdout

        (flag,) = await world.runtime.store.list_flags()
        resolved = await cli(tmp_path, "dlq", "resolve", str(flag.id))
        assert (resolved.returncode, resolved.stdout) == (0, f"{flag.id}\tresolved\n")
        again = await cli(tmp_path, "dlq", "resolve", str(flag.id))
        assert again.returncode == 1
        assert f"no unresolved flag {flag.id}" in again.stderr
        listed = await cli(tmp_path, "dlq", "list", "--flagged")
        assert listed.returncode == 0, listed.stderr
        assert f"rma:{RETAILER}:8b3P5rCjHW" not in listed.stdout  # resolved: not shown
        assert await world.runtime.store.list_flags() == []
        (kept,) = await world.runtime.store.list_flags(include_resolved=True)
        assert kept.resolved_at is not None


async def test_commands_run_their_own_lifecycle_when_no_daemon_runs(tmp_path: Path) -> None:
    async with running_world(tmp_path, [1], settings=FAST) as world:
        effect_id = await dead_letter(world)
    # the daemon has stopped: each command opens and closes the runtime itself

    checked = await cli(tmp_path, "check")
    assert checked.returncode == 0, checked.stderr
    listed = await cli(tmp_path, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"{effect_id}\t{DESTINATION}\t")
    replayed = await cli(tmp_path, "dlq", "replay", str(effect_id))
    assert replayed.returncode == 0, replayed.stderr
    assert f"{effect_id}\tqueued again" in replayed.stdout
    shown = await cli(tmp_path, "dlq", "show", str(effect_id))
    assert json.loads(shown.stdout)["state"] == "pending"  # the next daemon delivers it
    inbox = await cli(tmp_path, "inbox")
    assert inbox.returncode == 0, inbox.stderr
    assert inbox.stdout.startswith("pending 0")
