"""``returns-bridge crosswalk import|show|export``: the Kibo line crosswalk of a retailer.

- ``import FILE.csv --retailer ID --config PATH``: records every row (``order_id,line_id,
  order_item_id[,kibo_order_id]``, header required) in one transaction; a file with a bad row
  imports nothing and names every bad row (exit 2). Re-importing a row overwrites it.
- ``show --retailer ID --config PATH [--order ID]``: the entries, tab-separated, with their
  source (``import`` or ``order``: recorded from the order snapshot).
- ``export --retailer ID --config PATH [--output FILE]``: the same as a CSV that ``import``
  reads back.

Dead letters of returns whose lines could not be resolved are then sent with
``returns-bridge dlq replay`` (the create body is built when sent).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from adapters.kibo.crosswalk import CROSSWALK, export_rows, import_rows
from bridge.errors import MappingError
from mappings.kibo.crosswalk import crosswalk_csv, parse_crosswalk_csv

if TYPE_CHECKING:
    from bridge.app import Runtime


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="crosswalk_command", required=True)
    imp = sub.add_parser("import", help="record Kibo item ids from a CSV")
    imp.add_argument("file", type=Path, help="CSV: order_id,line_id,order_item_id[,kibo_order_id]")
    show = sub.add_parser("show", help="list the crosswalk")
    show.add_argument("--order", help="only this order")
    export = sub.add_parser("export", help="write the crosswalk as CSV")
    export.add_argument("--output", type=Path, help="file (default: standard output)")
    for command in (imp, show, export):
        command.add_argument("--retailer", required=True)
        command.add_argument("--config", required=True)


def command(args: argparse.Namespace) -> int:
    from bridge.cli import _load, _with_runtime

    config = _load(args.config)
    retailer = config.retailers.get(args.retailer)
    if retailer is None or "kibo" not in retailer.platforms:
        print(f"retailer {args.retailer!r} has no [retailers.<id>.kibo] table", file=sys.stderr)
        return 2
    if args.crosswalk_command == "import":
        try:
            rows = parse_crosswalk_csv(args.file.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, MappingError) as exc:
            print(f"{args.file}: {exc}", file=sys.stderr)
            return 2

        async def do_import(runtime: Runtime) -> int:
            changed = await import_rows(runtime.store, args.retailer, rows)
            print(f"{len(rows)} row(s) read, {changed} recorded or changed")
            return 0

        return _with_runtime(args, do_import)

    async def listing(runtime: Runtime) -> int:
        rows = await export_rows(runtime.store, args.retailer, getattr(args, "order", None))
        if args.crosswalk_command == "export":
            text = crosswalk_csv(rows)
            if args.output is not None:
                args.output.write_text(text, encoding="utf-8")
                print(f"{len(rows)} row(s) written to {args.output}", file=sys.stderr)
            else:
                sys.stdout.write(text)
            return 0
        async with runtime.store.transaction() as tx:
            for row in rows:
                entry = await tx.get_entity(
                    CROSSWALK, f"{args.retailer}:{row.order_id}:{row.line_id}"
                )
                source = entry.data.get("source", "-") if entry is not None else "-"
                kibo_order = "-" if row.kibo_order_id is None else row.kibo_order_id
                print(f"{row.order_id}\t{row.line_id}\t{row.order_item_id}\t{kibo_order}\t{source}")
        print(f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}", file=sys.stderr)
        return 0

    return _with_runtime(args, listing)


def _register() -> None:
    from bridge.cli import register_command

    register_command(
        "crosswalk", "import, show or export a retailer's Kibo line crosswalk", configure, command
    )


_register()
