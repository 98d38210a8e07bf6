"""Soak: an hour of `Speaker.say_stream` with barge-ins and network faults; resources stay flat?

How it works: ``streamtts serve`` (the embedded espeak-ng) runs in its own process on 127.0.0.1.
One `Speaker` speaks LLM-like token streams (a few sentences each, ~30 tokens/s) back to back
into a private PulseAudio null sink, for ``--minutes``. Every `BARGE_EVERY`-th utterance is cut by
``speaker.stop()`` after a random delay once it is heard; every `FAULT_EVERY`-th runs with the
server's impairment (``X-Impair-*`` headers, alternately a stall of `STALL_FOR` s on a link
paced at `REALTIME` x real time, and a connection dropped after `DISCONNECT_AFTER` bytes).

Every ``--sample`` seconds the script samples this process's resident memory, threads, asyncio
tasks (``len(asyncio.all_tasks())``) and open file descriptors, and the server's memory. The
null sink's monitor is recorded all along (``parec``); only the peak of each 10 ms block is kept,
so an hour costs a few MB. Afterwards the recording is searched, inside each utterance (first
sound to its end), for silences longer than ``pause`` + `GAP_SLACK`; each one must be explained by
an `Underrun` the player reported around it (or by a fault or barge-in of that utterance).

Resident memory counts the heap glibc keeps after Python frees it (it is not returned to the
OS at once), so a slow RSS climb is not necessarily a leak: ``--malloc-trim`` returns that free
heap before each sample, and the RSS then follows live memory only. Each sample also records
glibc's own account (``mallinfo2``): ``heap_used_mb`` (bytes malloc has handed out and not got
back: numpy's data, Python's objects over 512 bytes and the C libraries' memory),
``heap_free_mb`` (freed bytes it keeps) and ``heap_arena_mb`` (the heaps' size, without big
mmapped blocks: it grows when live memory or fragmentation pushes the heap's top up, and is not
swayed by the buffers in flight at the sample); Python's small objects live in its own arenas,
counted by ``py_blocks`` (``sys.getallocatedblocks()``). A leak grows the first or the last;
allocator retention the second (and the arena). To name a leak:
``--tracemalloc N`` traces Python allocations (numpy's included) with N frames and reports the
largest growths between the end of the warm-up and the end of the run by traceback (and a few
of the new objects of the types that grew most, with their holders); the object counts by type
(``gc``) and Python's allocated blocks after a full collection at both moments are always
reported.

Prints JSON and writes ``benchmarks/results/soak.json`` and ``soak.png``. Not part of the test
suite. Quick check (2 minutes):

    .venv/bin/python benchmarks/soak.py --minutes 2

Needs the PulseAudio daemon (``scripts/pulse start``) and espeak-ng's loader (a project dep).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import gc
import io
import json
import os
import random
import reprlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import anyio
import httpx
import numpy as np

from streamtts.engines import OpenAIEngine
from streamtts.errors import StreamTTSError
from streamtts.events import SentenceStarted, Underrun
from streamtts.speaker import Speaker

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

#: Every n-th utterance is interrupted by ``speaker.stop()`` (barge-in).
BARGE_EVERY = 4
#: Every n-th utterance runs with a network fault (alternately a stall and a disconnect).
FAULT_EVERY = 3
#: A stall of the link: long enough to drain the player's buffer (an underrun), shorter than the
#: client's read timeout (`READ_TIMEOUT`), so speech resumes.
STALL_FOR = 1.2
#: The stalled link is paced at this multiple of real time, so the stall is felt at once.
REALTIME = 1.5
#: A dropped connection: after ~0.3 s of 24 kHz Opus (a few kB), mid-sentence.
DISCONNECT_AFTER = 2500
#: The client's read timeout: longer than the stall, so the stall is an underrun, not an error.
READ_TIMEOUT = 4.0
#: Pause between sentences (the speaker's default).
PAUSE = 0.15
#: A silence inside an utterance longer than pause + this is a gap that needs an explanation.
#: 0.35 s covers espeak-ng's own pauses at commas and the trimmer's 5 ms frames.
GAP_SLACK = 0.35
#: An underrun explains a gap if it was reported within this many seconds of the gap (the
#: event's time is when the player saw the stall; the recording's clock is parec's, ~10 ms off).
EXPLAIN_WINDOW = 0.5
#: Memory sampled after this many seconds is compared (allocators and caches settle first).
WARMUP = 20.0
#: Recording block for the gap search: 10 ms, the device's block.
BLOCK = 480
#: |sample| at or below this is silence (-60 dBFS).
QUIET = 1e-3
#: Seconds the speaker and the engine may take to close at the end; a hang there is reported
#: (``close_timed_out``) instead of losing the run.
CLOSE_TIMEOUT = 30.0
#: Tokens per second of the simulated LLM.
TOKENS_PER_SECOND = 30.0

SENTENCES = [
    "Sure, here is what I found about the weather this weekend.",
    "On Saturday it will be sunny with a light breeze from the west.",
    "Sunday looks cloudier, and there is a chance of rain in the evening.",
    "If you plan to go hiking, Saturday morning is the best time.",
    "Remember to bring water and a warm jacket for the summit.",
    "The trail to the lake takes about two hours each way.",
    "Let me know if you would like directions to the trailhead.",
]


# ---------------------------------------------------------------------- sampling


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_parts_mb() -> tuple[float, float]:
    """(anonymous, file-backed) resident memory of this process, in MiB."""
    parts = {"RssAnon:": 0.0, "RssFile:": 0.0}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0] + ":"
            if key in parts:
                parts[key] = int(line.split()[1]) / 1024
    return parts["RssAnon:"], parts["RssFile:"]


def smaps_rss() -> dict[str, float]:
    """Resident KiB of this process by kind of mapping (``/proc/self/smaps``).

    Kinds: ``[heap]`` (glibc's main arena), ``[stack]``, ``anon 1 MiB`` (CPython's small-object
    arenas are 1 MiB anonymous maps), ``anon 64 MiB+`` (glibc's per-thread arenas reserve 64 MiB),
    ``anon other`` (numpy's large arrays, thread stacks, libraries' pools), and each file by
    name (shared libraries).
    """
    out: dict[str, float] = {}
    kind = ""
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if not head:
                continue
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                name = head[5] if len(head) > 5 else ""
                if name:
                    kind = name.rsplit("/", 1)[-1]
                elif hi - lo == 2**20:
                    kind = "anon 1 MiB"
                elif hi - lo >= 2**26:
                    kind = "anon 64 MiB+"
                else:
                    kind = "anon other"
            elif head[0] == "Rss:":
                out[kind] = out.get(kind, 0.0) + int(head[1])
    return out


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class _Mallinfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (glibc >= 2.33): every field a ``size_t``."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost",
    )]


_LIBC = ctypes.CDLL("libc.so.6")
_mallinfo2 = getattr(_LIBC, "mallinfo2", None)
if _mallinfo2 is not None:
    _mallinfo2.restype = _Mallinfo2


def heap_mb() -> tuple[float, float]:
    """(bytes in use, bytes free but kept) of glibc's malloc over all arenas and mmaps, in MiB."""
    if _mallinfo2 is None:
        return float("nan"), float("nan")
    info = _mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20


def heap_arena_mb() -> float:
    """Bytes glibc's heaps take from the system (``mallinfo2.arena``; big mmapped blocks not
    included), in MiB: it grows when the heap's top moves up (live growth or fragmentation),
    without the noise of the large buffers in flight at the sample."""
    if _mallinfo2 is None:
        return float("nan")
    return float(_mallinfo2().arena) / 2**20


def type_counts() -> Counter[str]:
    """Live objects tracked by the garbage collector, by type name (after a full collection)."""
    gc.collect()
    return Counter(type(o).__qualname__ for o in gc.get_objects())


@dataclass
class Probe:
    """What is compared between the end of the warm-up and the end of the run."""

    frames: int  # tracemalloc traceback depth; 0: off
    types: Counter[str] | None = None
    snapshot: tracemalloc.Snapshot | None = None
    maps: dict[str, float] | None = None
    ids: set[int] = dataclasses.field(default_factory=set)  # objects alive at mark (tracing)
    blocks: int = 0

    def start(self) -> None:
        if self.frames:
            tracemalloc.start(self.frames)

    def mark(self) -> None:
        """The reference point (end of warm-up)."""
        self.types = type_counts()
        self.blocks = sys.getallocatedblocks()  # after the full collection: free lists emptied
        self.maps = smaps_rss()
        if self.frames:
            self.ids = {id(o) for o in gc.get_objects()}
            self.snapshot = tracemalloc.take_snapshot()

    def report(self, top: int = 25) -> dict[str, Any]:
        """Type-count growth since `mark`, and tracemalloc's largest growths by traceback."""
        now = type_counts()
        blocks = sys.getallocatedblocks()
        before = self.types or Counter()
        grown = {k: now[k] - before[k] for k in now.keys() | before.keys() if now[k] != before[k]}
        maps, maps_before = smaps_rss(), self.maps or {}
        maps_grown = {
            k: round(maps.get(k, 0.0) - maps_before.get(k, 0.0))
            for k in maps.keys() | maps_before.keys()
            if maps.get(k, 0.0) != maps_before.get(k, 0.0)
        }
        # What the objects of the most grown types are, and who holds them.
        growing = sorted((k for k in grown if grown[k] > 0), key=lambda k: -grown[k])[:3]
        examples: dict[str, list[str]] = {k: [] for k in growing} if self.ids else {}
        for o in gc.get_objects() if examples else ():
            name = type(o).__qualname__
            if name in examples and id(o) not in self.ids and len(examples[name]) < 8:
                holders = sorted({type(r).__qualname__ for r in gc.get_referrers(o)} - {"list"})
                examples[name].append(f"{reprlib.repr(o)} held by {holders}")
        out: dict[str, Any] = {
            "new_objects_of_grown_types": examples,
            "gc_objects": {"at_mark": sum(before.values()), "at_end": sum(now.values())},
            "py_blocks_after_full_gc": {"at_mark": self.blocks, "at_end": blocks},
            "gc_type_growth": dict(sorted(grown.items(), key=lambda kv: -abs(kv[1]))[:top]),
            "rss_kb_by_mapping_at_end": {
                k: round(v) for k, v in sorted(maps.items(), key=lambda kv: -kv[1])[:top]
            },
            "rss_kb_growth_by_mapping": dict(
                sorted(maps_grown.items(), key=lambda kv: -abs(kv[1]))[:top]
            ),
        }
        if self.frames and self.snapshot is not None:
            end = tracemalloc.take_snapshot()
            keep = [tracemalloc.Filter(False, tracemalloc.__file__)]
            stats = end.filter_traces(keep).compare_to(
                self.snapshot.filter_traces(keep), "traceback"
            )
            out["traced_mb"] = {
                "at_mark": round(sum(s.size for s in self.snapshot.statistics("filename"))
                                 / 2**20, 3),
                "at_end": round(sum(s.size for s in end.statistics("filename")) / 2**20, 3),
            }
            out["tracemalloc_growth"] = [
                {
                    "size_diff_kb": round(st.size_diff / 1024, 1),
                    "count_diff": st.count_diff,
                    "traceback": [f"{f.filename}:{f.lineno}" for f in st.traceback][-8:],
                }
                for st in stats[:top]
            ]
            # Small objects that pile up hide behind the ups and downs of the audio buffers
            # (large, few) in the ranking by size: rank by count too.
            by_count = sorted(stats, key=lambda st: -st.count_diff)[:top]
            out["tracemalloc_count_growth"] = [
                {
                    "count_diff": st.count_diff,
                    "size_diff_kb": round(st.size_diff / 1024, 1),
                    "traceback": [f"{f.filename}:{f.lineno}" for f in st.traceback][-8:],
                }
                for st in by_count
                if st.count_diff > 0
            ]
            tracemalloc.stop()
        return out


@dataclass
class Recorder:
    """parec on the sink's monitor; keeps the peak of each 10 ms block and the clock origin.

    The peaks go to a file (float32), not to a list in this process: an hour is 360 000 of
    them, and a Python list of floats would add ~11 MB to the very memory the soak watches.
    """

    monitor: str
    path: Path
    t0: float | None = None
    blocks: int = 0

    def start(self) -> None:
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            ["parec", "-d", self.monitor, "--raw", "--format=float32le", "--rate=48000",
             "--channels=1", "--latency-msec=10"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        stdout = self._proc.stdout
        assert isinstance(stdout, io.BufferedReader)
        self.consume(stdout, self._file)

    def consume(self, stdout: io.BufferedReader, out: BinaryIO) -> None:
        """Read float32 samples until EOF; write the peak of each complete `BLOCK` to ``out``."""
        size = BLOCK * 4
        buf = bytearray()
        while data := stdout.read1(65536):
            if self.t0 is None:
                self.t0 = time.monotonic() - len(data) / 4 / 48000
            buf += data
            usable = len(buf) - len(buf) % size
            if usable:
                block = np.frombuffer(buf, dtype="<f4", count=usable // 4).reshape(-1, BLOCK)
                out.write(np.abs(block).max(axis=1).astype("<f4").tobytes())
                self.blocks += block.shape[0]
                del block
                del buf[:usable]

    def stop(self) -> None:
        if not hasattr(self, "_proc"):
            return  # never started
        self._proc.terminate()
        self._proc.wait(5)
        self._thread.join(5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._file.close()

    def peaks(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The peak of every recorded block, in order (after `stop`)."""
        return np.fromfile(self.path, dtype="<f4")


# ---------------------------------------------------------------------- the run


@dataclass
class Utterance:
    index: int
    kind: str  # "normal", "barge-in", "stall", "disconnect"
    first_sound: float | None = None
    finished: float | None = None
    interrupted: bool = False
    error: str | None = None
    underruns: int = 0


async def llm(text: str) -> AsyncIterator[str]:
    words = text.split(" ")
    for i, word in enumerate(words):
        await anyio.sleep(1 / TOKENS_PER_SECOND)
        yield word if i == len(words) - 1 else word + " "


async def soak(
    url: str,
    server_pid: int,
    minutes: float,
    sample_s: float,
    seed: int,
    barge_every: int = BARGE_EVERY,
    fault_every: int = FAULT_EVERY,
    malloc_trim: bool = False,
    trace_frames: int = 0,
) -> dict[str, Any]:
    rng = random.Random(seed)
    probe = Probe(trace_frames)
    probe.start()
    # The samples and the utterances go to a file as JSON lines, read back at the end: kept in
    # lists, the soak's own records would grow the very memory it watches.
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by _read_log
    underruns: list[float] = []
    errors: dict[str, int] = {}
    end = time.monotonic() + minutes * 60
    start = time.monotonic()

    guard = anyio.CancelScope()  # bounds the closing of speaker and engine
    probe_report: dict[str, Any] = {}
    with guard:
        async with OpenAIEngine(
            base_url=f"{url}/v1", api_key="soak", max_retries=0, read_timeout=READ_TIMEOUT
        ) as engine, Speaker(engine, pause=PAUSE) as speaker, anyio.create_task_group() as tg:
            started = anyio.Event()

            async def watch() -> None:
                nonlocal started
                async for event in speaker.events(maxlen=4096):
                    if isinstance(event, Underrun):
                        underruns.append(event.time)
                    elif isinstance(event, SentenceStarted):
                        started.set()

            async def sample() -> None:
                trim = _LIBC.malloc_trim if malloc_trim else None
                marked = False
                while True:
                    if trim is not None:
                        trim(0)  # give freed heap back to the OS: RSS then shows live memory only
                    t = time.monotonic() - start
                    if not marked and t >= WARMUP:
                        probe.mark()
                        marked = True
                    stats = speaker.player.stats()
                    used, free = heap_mb()
                    anon, mapped = rss_parts_mb()
                    log.write(json.dumps({
                        "t": round(t, 3),
                        "rss_mb": round(rss_mb(), 2),
                        "rss_anon_mb": round(anon, 2),
                        "rss_file_mb": round(mapped, 2),
                        "heap_used_mb": round(used, 3),
                        "heap_free_mb": round(free, 3),
                        "heap_arena_mb": round(heap_arena_mb(), 3),
                        "py_blocks": sys.getallocatedblocks(),
                        "server_rss_mb": round(rss_mb(server_pid), 2),
                        "threads": threading.active_count(),
                        "tasks": len(asyncio.all_tasks()),
                        "fds": open_fds(),
                        "underruns": stats.underruns,
                        "device_underflows": stats.device_underflows,
                    }) + "\n")  # a sample: a dict without "index"
                    await anyio.sleep(sample_s)

            tg.start_soon(watch)
            tg.start_soon(sample)
            i = 0
            while time.monotonic() < end:
                kind = "normal"
                if barge_every and i % barge_every == barge_every - 1:
                    kind = "barge-in"
                elif fault_every and i % fault_every == fault_every - 1:
                    kind = "stall" if (i // fault_every) % 2 == 0 else "disconnect"
                engine.headers.clear()
                if kind == "stall":
                    engine.headers.update({
                        "X-Impair-Realtime": str(REALTIME),
                        "X-Impair-Stall-At": "0.3",
                        "X-Impair-Stall-For": str(STALL_FOR),
                    })
                elif kind == "disconnect":
                    engine.headers["X-Impair-Disconnect-After"] = str(DISCONNECT_AFTER)
                k = rng.randint(2, 4)
                first = rng.randrange(len(SENTENCES))
                text = " ".join(SENTENCES[(first + j) % len(SENTENCES)] for j in range(k))
                utt = Utterance(i, kind)
                started = anyio.Event()
                try:
                    if kind == "barge-in":
                        result_box: list[Any] = []

                        async def talk(text: str = text, box: list[Any] = result_box) -> None:
                            box.append(await speaker.say_stream(llm(text)))

                        async with anyio.create_task_group() as talker:
                            talker.start_soon(talk)
                            await started.wait()
                            await anyio.sleep(rng.uniform(0.3, 2.5))
                            await speaker.stop()
                        result = result_box[0]
                    else:
                        result = await speaker.say_stream(llm(text))
                    utt.first_sound, utt.finished = result.first_sound, result.finished
                    utt.interrupted, utt.underruns = result.interrupted, result.underruns
                except StreamTTSError as exc:
                    utt.error = type(exc).__name__
                    errors[utt.error] = errors.get(utt.error, 0) + 1
                log.write(json.dumps(dataclasses.asdict(utt)) + "\n")
                i += 1
            # before closing: what the speaker, player and engine hold after all those utterances
            probe_report = probe.report()
            guard.deadline = anyio.current_time() + CLOSE_TIMEOUT
            tg.cancel_scope.cancel()
    samples, utterances = _read_log(log)
    return {
        "close_timed_out": guard.cancelled_caught,
        "probe": probe_report,
        "samples": samples,
        "utterances": utterances,
        "underrun_times": underruns,
        "errors": errors,
    }


def _read_log(log: IO[str]) -> tuple[list[dict[str, float]], list[Utterance]]:
    """The samples and utterances written to ``log`` (which is then closed)."""
    log.seek(0)
    samples, utterances = [], []
    for line in log:
        record = json.loads(line)
        if "index" in record:
            utterances.append(Utterance(**record))
        else:
            samples.append(record)
    log.close()
    return samples, utterances


# ---------------------------------------------------------------------- analysis


def find_gaps(rec: Recorder, utterances: list[Utterance], underruns: list[float]) -> dict[str, Any]:
    """Silences inside utterances longer than pause + slack, and whether an underrun explains
    them."""
    if rec.t0 is None:
        return {"checked": 0, "gaps": 0, "explained": 0, "unexpected": []}
    peaks = rec.peaks()
    per_s = 48000 / BLOCK
    limit = round((PAUSE + GAP_SLACK) * per_s)
    gaps = explained = checked = 0
    unexpected: list[dict[str, Any]] = []
    for utt in utterances:
        if utt.first_sound is None or utt.finished is None or utt.error is not None:
            continue
        a = round((utt.first_sound - rec.t0) * per_s)
        b = round((utt.finished - rec.t0) * per_s)
        if a < 0 or b > len(peaks) or b <= a:
            continue
        checked += 1
        quiet = np.concatenate(([False], peaks[a:b] <= QUIET, [False]))
        edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
        for s, e in zip(edges[::2], edges[1::2], strict=True):
            if e - s < limit:
                continue
            gaps += 1
            t_start = rec.t0 + (a + s) / per_s
            t_end = rec.t0 + (a + e) / per_s
            if any(t_start - EXPLAIN_WINDOW <= u <= t_end + EXPLAIN_WINDOW for u in underruns):
                explained += 1
            else:
                unexpected.append({
                    "utterance": utt.index,
                    "kind": utt.kind,
                    "at_s": round(t_start - rec.t0, 3),
                    "seconds": round((e - s) / per_s, 3),
                })
    return {"checked": checked, "gaps": gaps, "explained": explained, "unexpected": unexpected}


def trend(samples: list[dict[str, float]], key: str) -> dict[str, float]:
    """First value after warm-up, last value, max after warm-up, and the growth."""
    after = [s for s in samples if s["t"] >= WARMUP] or samples
    values = [s[key] for s in after]
    return {
        "after_warmup": values[0],
        "last": values[-1],
        "max": max(values),
        "min": min(values),
        "growth": round(values[-1] - values[0], 3),
    }


def plot(samples: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    for ax, keys, title in (
        (axes[0][0], ("rss_mb", "server_rss_mb"), "resident memory (MB)"),
        (axes[0][1], ("heap_used_mb", "heap_free_mb"), "client's glibc heap (MB)"),
        (axes[1][0], ("tasks",), "asyncio tasks"),
        (axes[1][1], ("fds", "threads"), "open file descriptors, threads"),
    ):
        for key in keys:
            ax.plot(t, [s.get(key, float("nan")) for s in samples], label=key)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend()
    for ax in axes[1]:
        ax.set_xlabel("minutes")
    fig.suptitle("streamtts soak: say_stream with barge-ins and network faults")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------- main


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the run (60)")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples (5)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--barge-every", type=int, default=BARGE_EVERY,
                        help=f"every n-th utterance is cut by stop() (0: never; {BARGE_EVERY})")
    parser.add_argument("--fault-every", type=int, default=FAULT_EVERY,
                        help=f"every n-th utterance has a network fault (0: never; {FAULT_EVERY})")
    parser.add_argument("--malloc-trim", action="store_true",
                        help="call glibc malloc_trim(0) before each sample: RSS without the freed "
                        "heap glibc keeps (tells a leak from allocator retention)")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                        help="trace Python allocations with this traceback depth and report the "
                        "largest growths after warm-up (slows the run; 0: off)")
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json",
                        help="JSON result; the plot goes beside it with the suffix .png")
    args = parser.parse_args()

    subprocess.run([str(ROOT / "scripts" / "pulse"), "start"], check=True, capture_output=True)
    sink = f"streamtts_soak_{os.getpid()}"
    module = subprocess.run(
        ["pactl", "load-module", "module-null-sink", f"sink_name={sink}", "rate=48000",
         "channels=1", "format=float32le", "norewinds=1"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    os.environ["PULSE_SINK"] = sink  # read by the ALSA pulse plugin when the stream opens
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamtts.cli", "serve", "--port", str(port),
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    fd, peaks_path = tempfile.mkstemp(prefix="streamtts_soak_", suffix=".f32")
    os.close(fd)
    rec = Recorder(f"{sink}.monitor", Path(peaks_path))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("streamtts serve did not start") from None
                time.sleep(0.05)
        rec.start()
        run = anyio.run(
            soak, url, server.pid, args.minutes, args.sample, args.seed, args.barge_every,
            args.fault_every, args.malloc_trim, args.tracemalloc,
        )
    finally:
        rec.stop()
        server.terminate()
        server.wait(10)
        subprocess.run(["pactl", "unload-module", module], capture_output=True, check=False)

    utterances: list[Utterance] = run["utterances"]
    samples = run["samples"]
    try:
        silence = find_gaps(rec, utterances, run["underrun_times"])
    finally:
        os.unlink(peaks_path)
    kinds: dict[str, int] = {}
    for u in utterances:
        kinds[u.kind] = kinds.get(u.kind, 0) + 1
    summary = {
        "minutes": args.minutes,
        "barge_every": args.barge_every,
        "fault_every": args.fault_every,
        "malloc_trim": args.malloc_trim,
        "utterances": len(utterances),
        "by_kind": kinds,
        "completed": sum(1 for u in utterances if u.error is None and not u.interrupted),
        "interrupted": sum(1 for u in utterances if u.interrupted),
        "errors": run["errors"],
        "close_timed_out": run["close_timed_out"],
        "underruns": len(run["underrun_times"]),
        "device_underflows": samples[-1]["device_underflows"] if samples else 0,
        "rss_mb": trend(samples, "rss_mb"),
        "rss_anon_mb": trend(samples, "rss_anon_mb"),
        "rss_file_mb": trend(samples, "rss_file_mb"),
        "heap_used_mb": trend(samples, "heap_used_mb"),
        "heap_free_mb": trend(samples, "heap_free_mb"),
        "heap_arena_mb": trend(samples, "heap_arena_mb"),
        "py_blocks": trend(samples, "py_blocks"),
        "server_rss_mb": trend(samples, "server_rss_mb"),
        "threads": trend(samples, "threads"),
        "tasks": trend(samples, "tasks"),
        "fds": trend(samples, "fds"),
        "silence": silence,
        "recorded_s": round(rec.blocks * BLOCK / 48000, 1),
        "probe": run["probe"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**summary, "samples": samples}, indent=1))
    plot(samples, args.out.with_suffix(".png"))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
