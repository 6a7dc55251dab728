"""kill -9 of the real daemon while Kibo creates are in flight: the long variant.

The same run as ``tests/test_kibo_crash_system.py`` (the code is ``tests/kibo_crash.py``),
with more kills: three retailers on one daemon, two whose Kibo keeps the bridge's returnID
and one whose Kibo assigns its own; RMA webhooks of the guide's scenarios re-sent until
acknowledged; SIGKILL with a create in flight, restart, and a final settle. Prints the
verdict as JSON and exits 1 when a return is duplicated, one is missing without being
parked, or one is parked for a tenant that keeps the bridge's returnID.

    .venv/bin/python bench/kibo_crash.py --kills 200 [--seed N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.kibo_crash import dump, main_seed, run_crash


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="rounds ending in SIGKILL")
    parser.add_argument("--start-kills", type=int, default=10, help="of them during start-up")
    parser.add_argument("--seed", type=int, default=None, help="default: KIBO_CRASH_SEED or random")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the db and logs")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else main_seed()
    print(f"KIBO_CRASH_SEED={seed}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        verdict = asyncio.run(run_crash(folder, args.kills, seed, args.start_kills))
    print(verdict.summary())
    print(dump(verdict))
    failed = (
        any(verdict.duplicates.values())
        or any(verdict.missing_not_parked.values())
        or verdict.parked.get("kc1")
        or verdict.parked.get("kc2")
        or verdict.tracebacks
        or verdict.unexpected_answers
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
