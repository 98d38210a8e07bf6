"""Run one system for one trace in this process and write what it measured as JSON.

``python benchmarks/peers/runner.py SPEC.json``. The parent (``bench_compare.py``) routes this
process's audio to a private null sink and records it; here we measure what only the process
itself can: CPU time (``time.process_time``: all threads) from the request to the end of
playback, peak resident memory (``ru_maxrss``), the request time and every chunk's arrival.
Each system's libraries are imported before the clock starts.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from common import RunLog, Spec

#: system name → (adapter module, argument of its ``run``)
SYSTEMS: dict[str, tuple[str, str | None]] = {
    "streamtts_opus": ("streamtts_player", "opus"),
    "streamtts_wav": ("streamtts_player", "wav"),
    "streamtts_pcm": ("streamtts_player", "pcm"),
    "streamtts_opus_lowlat": ("streamtts_player", "opus-low"),
    "openai_play_stream_pcm": ("openai_player", "stream"),
    "openai_play_whole_pcm": ("openai_player", "whole"),
    "pyav_opus": ("pyav_decoder", None),
    "wav_preroll_150k": ("naive", "wav"),
    "pcm_preroll_0.5s": ("naive", "pcm"),
}


def _vm_hwm_kb() -> int:
    """Peak resident memory of this process (``VmHWM``), in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    spec = Spec.from_json(json.loads(Path(sys.argv[1]).read_text()))
    module_name, arg = SYSTEMS[spec.system]
    module = importlib.import_module(module_name)
    hwm_before = _vm_hwm_kb()
    log = RunLog()
    run: Callable[..., Awaitable[None]] = module.run
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    error: str | None = None
    try:
        if arg is None:
            anyio.run(run, spec, log)
        else:
            anyio.run(run, spec, log, arg)
    except Exception as exc:  # reported in the results, never hidden
        error = f"{type(exc).__name__}: {exc}"
    cpu = time.process_time() - cpu0
    ended_at = time.monotonic()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    hwm_kb = _vm_hwm_kb()
    Path(spec.body).write_bytes(b"".join(log.chunks))
    result: dict[str, Any] = {
        "system": spec.system,
        "error": error,
        "requested_at": log.requested_at,
        "ended_at": ended_at,
        "wall_s": ended_at - wall0,
        "cpu_s": cpu,
        # ru_maxrss survives exec (it would include the parent's size at fork): VmHWM is the
        # peak of this program's own address space.
        "peak_rss_kb": hwm_kb,
        "peak_rss_after_imports_kb": hwm_before,
        "ru_maxrss_kb": usage.ru_maxrss,
        "arrivals": log.arrivals,
        "buffer": log.buffer,
        "extra": log.extra,
    }
    Path(spec.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
