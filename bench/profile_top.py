"""Where the time goes, from py-spy's collapsed stacks (`bench.ratio --profile DIR` writes them).

`python -m bench.profile_top DIR/sqlite-8-worker.txt [--top 15]` prints the share of the samples
by package or module (inclusive: a frame anywhere on the stack; each sample counted once per
name), and the functions most often on top of the stack (self time); `--busy` leaves out the
samples of threads blocked waiting (epoll, a condition, an idle pool thread)."""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def where(frame: str) -> tuple[str, str]:
    """(module or package, function) of one frame `function (path/to/file.py:line)`."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip(), frame.strip()
    path = match["file"]
    if "site-packages/" in path:
        module = path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    elif "/lib/python3" in path:
        module = "stdlib:" + path.rsplit("/lib/python3", 1)[1].split("/", 2)[1].removesuffix(".py")
    else:
        module = "/".join(Path(path).parts[-2:])
    return module, f"{match['function']} ({module})"


# a thread blocked in one of these is waiting, not working (py-spy without --native shows the
# Python frame that made the blocking call; a C call that works, like sqlite3's, shows the same way)
WAITS = {
    "EpollSelector.select (stdlib:selectors)",
    "Condition.wait (stdlib:threading)",
    "Event.wait (stdlib:threading)",
    "_worker (stdlib:concurrent)",  # a thread pool's idle thread, blocked on its queue
    "Queue.get (stdlib:queue)",
}


def summarise(path: Path, busy: bool = False) -> tuple[int, Counter[str], Counter[str]]:
    """Samples, and their counts by module (inclusive) and by function (self); `busy`: without
    the samples of threads that were waiting."""
    total, inclusive, leaf = 0, Counter[str](), Counter[str]()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [where(f) for f in stack.split(";") if f]
        if busy and frames and frames[-1][1] in WAITS:
            continue
        total += n
        for module in {m for m, _ in frames}:
            inclusive[module] += n
        if frames:
            leaf[frames[-1][1]] += n
    return total, inclusive, leaf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--busy", action="store_true", help="leave out the samples of waiting threads")
    args = parser.parse_args()
    for path in args.files:
        total, inclusive, leaf = summarise(path, args.busy)
        print(f"\n{path.name}: {total} samples")
        print("  by module, inclusive:")
        for name, n in inclusive.most_common(args.top):
            print(f"    {n / total:6.1%}  {name}")
        print("  by function, self:")
        for name, n in leaf.most_common(args.top):
            print(f"    {n / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
