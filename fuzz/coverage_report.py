"""Line coverage of the readers reached by a fuzz corpus (stdlib only: no coverage.py needed).

How it works: every input of the corpus goes through the target's ``check`` (uninstrumented)
with a ``sys.settrace`` hook that records the lines executed in the reader modules; the
executable lines are those of the modules' functions (``co_lines``; module and class bodies run
at import and are left out), writers and encoders excluded (`WRITERS`: not reader code). Prints
one JSON object: per module, lines hit, lines executable, percentage and the missed lines.

Usage::

    python fuzz/coverage_report.py fuzz_ogg fuzz/corpus/ogg [more folders…]
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The modules whose coverage is reported: the readers under test.
MODULES = ("ogg.py", "opus.py", "wav.py", "formats.py")
# Writers and encoders in those modules: not reader code, left out of the count.
WRITERS = ("build_page", "OggWriter", "OggOpusEncoder", "wav_header", "decode_opus_stream")


def _executable_lines(path: Path) -> set[int]:
    code = compile(path.read_text(), str(path), "exec")
    lines: set[int] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        if getattr(current, "co_qualname", current.co_name).split(".")[0] in WRITERS:
            continue
        if current.co_flags & inspect.CO_NEWLOCALS:  # a function, not a module or class body
            lines.update(line for _, _, line in current.co_lines() if line is not None)
            lines.discard(current.co_firstlineno)  # the def line: runs at import
        stack += [c for c in current.co_consts if isinstance(c, types.CodeType)]
    return lines


def measure(check: Callable[[bytes], None], inputs: list[bytes]) -> dict[str, dict[str, Any]]:
    """Run ``check`` on every input, tracing lines in the reader modules."""
    import streamtts

    root = Path(streamtts.__file__).parent
    paths = {str(root / name): name for name in MODULES}
    hits: dict[str, set[int]] = {name: set() for name in MODULES}

    def local(frame: types.FrameType, event: str, arg: object) -> Any:
        if event == "line":
            hits[paths[frame.f_code.co_filename]].add(frame.f_lineno)
        return local

    def global_(frame: types.FrameType, event: str, arg: object) -> Any:
        if frame.f_code.co_filename in paths:
            hits[paths[frame.f_code.co_filename]].add(frame.f_lineno)
            return local
        return None

    sys.settrace(global_)
    try:
        for data in inputs:
            try:
                check(data)
            except Exception as exc:  # a finding: report coverage anyway, name it
                print(f"input of {len(data)} bytes fails: {exc!r}", file=sys.stderr)
    finally:
        sys.settrace(None)
    report = {}
    for path, name in paths.items():
        executable = _executable_lines(Path(path))
        hit = hits[name] & executable
        if not hit:
            continue
        report[name] = {
            "lines_hit": len(hit),
            "lines_executable": len(executable),
            "percent": round(100 * len(hit) / len(executable), 1),
            "missed": sorted(executable - hit),
        }
    return report


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    check = importlib.import_module(argv[1]).check
    inputs = []
    for folder in map(Path, argv[2:]):
        inputs += [p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()]
    report = measure(check, inputs)
    print(json.dumps({"target": argv[1], "inputs": len(inputs), "modules": report}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
