"""Top lines of a py-spy raw profile (``py-spy record -f raw``): share of samples per frame.

    python bench/flame_top.py PROFILE.txt [--top 15] [--within FRAME]

``self``: samples whose innermost frame is this function; ``total``: samples with this
function anywhere on the stack (counted once per sample). ``--within``: only samples with
a frame containing that text (e.g. the measured loop, leaving imports and set-up out).
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

_LINE = re.compile(r" \(([^)]*?):\d+\)$")


def _name(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``file.py:func`` (line numbers merged)."""
    match = _LINE.search(frame)
    if match is None:
        return frame.strip()
    func = frame[: match.start()].strip()
    return f"{Path(match.group(1)).name}:{func}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--within", default="", help="only samples with a frame containing this")
    args = p.parse_args(argv)
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    for line in args.profile.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        if args.within not in stack:
            continue
        frames = [_name(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            anywhere[name] += count
    print(f"{total} samples")
    print("| self | total | frame |")
    print("|---:|---:|---|")
    for name, count in own.most_common(args.top):
        print(f"| {100 * count / total:.1f}% | {100 * anywhere[name] / total:.1f}% | `{name}` |")
    print("\nlargest totals (excluding the outermost frames):")
    for name, count in anywhere.most_common(args.top + 10)[5:]:
        print(f"  {100 * count / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
