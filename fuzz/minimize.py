"""Shrink a failing input of a fuzz target to a small one that fails the same way.

How it works: delta debugging (Zeller's ddmin) over bytes, then over single bytes set to zero;
a candidate is kept when ``check`` raises the same exception type with the same first line of
message (and, for assertion failures, from the same line of code) as the original input. The
result is what goes, inline, into ``tests/unit/test_fuzz_regressions.py``.

Usage::

    python fuzz/minimize.py fuzz_ogg crash-<sha1> [OUT]   # prints the input as a bytes literal
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

Check = Callable[[bytes], None]


def signature(check: Check, data: bytes) -> tuple[str, str, int] | None:
    """(exception type, first message line, line number where it was raised) or None."""
    try:
        check(data)
    except Exception as exc:  # a finding is any exception: that is what is being minimized
        frames = traceback.extract_tb(exc.__traceback__)
        line = frames[-1].lineno if frames else 0
        first = str(exc).splitlines()[0] if str(exc) else ""
        return type(exc).__name__, first, line or 0
    return None


def minimize(check: Check, data: bytes) -> bytes:
    """The smallest input found that fails ``check`` as ``data`` does."""
    target = signature(check, data)
    if target is None:
        raise ValueError("the input does not fail")

    def fails(candidate: bytes) -> bool:
        return signature(check, candidate) == target

    granularity = 2
    while len(data) >= 2:
        size = max(1, len(data) // granularity)
        reduced = False
        for start in range(0, len(data), size):
            candidate = data[:start] + data[start + size :]
            if fails(candidate):
                data = candidate
                granularity = max(granularity - 1, 2)
                reduced = True
                break
        if not reduced:
            if size == 1:
                break
            granularity = min(granularity * 2, len(data))
    for i in range(len(data)):  # simplest bytes: zero wherever the failure allows
        if data[i]:
            candidate = data[:i] + b"\0" + data[i + 1 :]
            if fails(candidate):
                data = candidate
    return data


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    check: Check = importlib.import_module(argv[1]).check
    data = minimize(check, Path(argv[2]).read_bytes())
    if len(argv) > 3:
        Path(argv[3]).write_bytes(data)
    print(f"{len(data)} bytes, fails with {signature(check, data)}")
    print(repr(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
