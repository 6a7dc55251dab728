"""``returns-bridge``: the operator's command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.errors import BridgeError, ConfigError

if TYPE_CHECKING:
    from bridge.app import Runtime

Command = Callable[[argparse.Namespace], int]
_EXTRA_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Command]] = {}


def register_command(
    name: str, help_text: str, configure: Callable[[argparse.ArgumentParser], None], run: Command
) -> None:
    """Let other modules (demo, sandboxes, backfill) add a sub-command."""
    _EXTRA_COMMANDS[name] = (help_text, configure, run)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="returns-bridge",
        description="Keep a retailer's platforms and Optoro's Returns Experience in step.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", required=True, help="TOML file or folder of TOML files")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate the configuration")
    check.add_argument("--config", required=True)
    check.set_defaults(func=cmd_check)

    dlq = sub.add_parser("dlq", help="inspect and replay dead letters")
    dlq.add_argument("--config", required=True)
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_sub.add_parser("list", help="list dead letters")
    dlq_list.add_argument("--destination")
    dlq_list.add_argument(
        "--flagged", action="store_true", help="list entities flagged for an operator"
    )
    dlq_list.set_defaults(func=cmd_dlq_list)
    dlq_show = dlq_sub.add_parser("show", help="show one dead letter in full")
    dlq_show.add_argument("id", type=int)
    dlq_show.set_defaults(func=cmd_dlq_show)
    dlq_replay = dlq_sub.add_parser("replay", help="re-map from stored input and send again")
    dlq_replay.add_argument("ids", type=int, nargs="*")
    dlq_replay.add_argument("--all", action="store_true")
    dlq_replay.add_argument("--destination")
    dlq_replay.add_argument(
        "--dry-run", action="store_true", help="print the request, send nothing"
    )
    dlq_replay.set_defaults(func=cmd_dlq_replay)
    dlq_resolve = dlq_sub.add_parser("resolve", help="mark a flag (dlq list --flagged) settled")
    dlq_resolve.add_argument("flag_id", type=int)
    dlq_resolve.set_defaults(func=cmd_dlq_resolve)

    inbox = sub.add_parser("inbox", help="backlog and quarantine")
    inbox.add_argument("--config", required=True)
    inbox.add_argument(
        "--replay",
        type=int,
        nargs="*",
        default=[],
        metavar="ID",
        help="re-queue quarantined items to be mapped again",
    )
    inbox.set_defaults(func=cmd_inbox)

    for name, (help_text, configure, command) in sorted(_EXTRA_COMMANDS.items()):
        extra = sub.add_parser(name, help=help_text)
        configure(extra)
        extra.set_defaults(func=command)
    return parser


def _load(path: str) -> Any:
    from bridge.config import load_config

    return load_config(Path(path))


def cmd_check(args: argparse.Namespace) -> int:
    from bridge.config import check_main

    return check_main(args.config)


def cmd_run(args: argparse.Namespace) -> int:
    from bridge.app import build_runtime, serve
    from bridge.logs import configure_logging

    configure_logging(args.log_level)
    config = _load(args.config)
    runtime = build_runtime(config)

    def announce(host: str, port: int) -> None:
        print(f"returns-bridge listening on http://{host}:{port}", flush=True)

    return asyncio.run(serve(runtime, announce))


def _with_runtime(args: argparse.Namespace, body: Callable[[Runtime], Awaitable[int]]) -> int:
    """Run ``body`` on the configured runtime, opened (store, HTTP session, startup hooks)
    and closed by :func:`bridge.app.running`, without the engine and scheduler: the daemon
    delivers what a command queues."""
    from bridge.app import build_runtime, running

    async def main() -> int:
        runtime = build_runtime(_load(args.config))
        async with running(runtime, engine=False, scheduler=False):
            return await body(runtime)

    return asyncio.run(main())


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else "-"


def cmd_dlq_list(args: argparse.Namespace) -> int:
    from bridge.store import EffectState

    async def body(runtime: Runtime) -> int:
        if args.flagged:
            for flag in await runtime.store.list_flags(include_resolved=False):
                print(
                    f"{flag.id}\t{_when(flag.created_at)}\t{flag.retailer}\t"
                    f"{flag.entity_kind}:{flag.entity_key}\t{flag.reason}"
                )
            return 0
        dead = await runtime.store.list_effects(EffectState.DEAD, args.destination)
        for e in dead:
            print(f"{e.id}\t{e.destination}\t{e.kind}\t{e.idempotency_key}\t{e.dead_reason}")
        print(f"{len(dead)} dead letter(s)", file=sys.stderr)
        return 0

    return _with_runtime(args, body)


def cmd_dlq_show(args: argparse.Namespace) -> int:
    async def body(runtime: Runtime) -> int:
        effect = await runtime.store.get_effect(args.id)
        if effect is None:
            print(f"no effect {args.id}", file=sys.stderr)
            return 1
        print(
            json.dumps(
                {
                    "id": effect.id,
                    "state": effect.state.value,
                    "destination": effect.destination,
                    "kind": effect.kind,
                    "idempotency_key": effect.idempotency_key,
                    "attempts": effect.attempts,
                    "created_at": _when(effect.created_at),
                    "reason": effect.dead_reason,
                    "request": effect.dead_request,
                    "response": effect.dead_response,
                    "payload": effect.payload,
                    "source_inbox_id": effect.source_inbox_id,
                },
                indent=2,
                default=str,
            )
        )
        return 0

    return _with_runtime(args, body)


def cmd_dlq_replay(args: argparse.Namespace) -> int:
    from bridge.store import EffectState

    if not args.ids and not (args.all and args.destination):
        print("name dead letter ids, or --all --destination NAME", file=sys.stderr)
        return 2

    async def body(runtime: Runtime) -> int:
        ids = list(args.ids)
        if args.all:
            ids += [
                e.id for e in await runtime.store.list_effects(EffectState.DEAD, args.destination)
            ]
        failures = 0
        for effect_id in ids:
            try:
                request = await runtime.engine.replay(effect_id, dry_run=args.dry_run)
            except BridgeError as exc:
                failures += 1
                print(f"{effect_id}\tnot replayed: {exc}", file=sys.stderr)
                continue
            if args.dry_run:
                print(
                    json.dumps(
                        {"id": effect_id, "request": request.describe()}, indent=2, default=str
                    )
                )
            else:
                print(f"{effect_id}\tqueued again")
        return 1 if failures else 0

    return _with_runtime(args, body)


def cmd_dlq_resolve(args: argparse.Namespace) -> int:
    async def body(runtime: Runtime) -> int:
        if await runtime.store.resolve_flag(args.flag_id):
            print(f"{args.flag_id}\tresolved")
            return 0
        print(f"no unresolved flag {args.flag_id}", file=sys.stderr)
        return 1

    return _with_runtime(args, body)


def cmd_inbox(args: argparse.Namespace) -> int:
    from bridge.store import InboxStatus

    async def body(runtime: Runtime) -> int:
        for inbox_id in args.replay:
            ok = await runtime.engine.replay_inbox(inbox_id)
            print(f"{inbox_id}\t{'queued again' if ok else 'not found'}")
        stats = await runtime.store.inbox_stats()
        print(
            f"pending {stats.pending}  done {stats.done}  superseded {stats.superseded}  "
            f"quarantined {stats.quarantined}  duplicates {stats.duplicates}"
        )
        for source, counts in sorted(stats.by_source.items()):
            print(f"  {source}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        for item in await runtime.store.list_inbox(InboxStatus.QUARANTINED):
            print(f"quarantined {item.id}\t{_when(item.received_at)}\t{item.source}\t{item.note}")
        return 0

    return _with_runtime(args, body)


def main(argv: Sequence[str] | None = None) -> int:
    _load_extra_commands()
    args = _parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print("\n".join(exc.problems) or str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


def _load_extra_commands() -> None:
    """Commands beside the core register on import: the sandboxes command, and those named
    in the ``returns_bridge.commands`` entry-point group (the demo among them)."""
    from importlib.metadata import entry_points

    import bridge.sandboxes  # noqa: F401

    for ep in entry_points(group="returns_bridge.commands"):
        ep.load()


if __name__ == "__main__":
    sys.exit(main())
