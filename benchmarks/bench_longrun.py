"""A long stream through `Player`: memory must stay flat, CPU per audio second; JSON and a plot.

How it works: a ~10 s Ogg Opus clip is synthesized once (the embedded espeak-ng engine, 24 kHz,
1 s pages as OpenAI sends them), and the same bytes are repeated as one chained Ogg stream (each
repetition is a new logical stream: new OpusHead, new decoder, no gap, as concatenated
responses are) and handed to a single ``Player.play()`` call as an async iterator of 4 kB
chunks. The player's back-pressure paces the source at real time, so the run lasts as long as
the audio. Every `SAMPLE_S` the resident memory (``/proc/self/statm``, not the peak), the CPU
time of the process (all threads) and the player's counters are sampled.

Pass criteria, reported in the JSON (not asserted: this is a benchmark):

* memory growth after warm-up <= `MAX_GROWTH_MB` (largest RSS after warm-up minus RSS at the end
  of warm-up); the warm-up lets allocators, numpy buffers and the ring reach their steady state;
* no underruns (the source is always ahead of the device).

The audio goes to a private 48 kHz null sink (``PULSE_SINK``), so other runs are not disturbed.
Run: ``.venv/bin/python benchmarks/bench_longrun.py [--seconds 90] [--full]`` (quick mode: five
minutes; ``--full``: one hour). Writes ``benchmarks/results/longrun.json`` and
``longrun_memory.png`` (``--out``/``--plot`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from streamtts.engines.espeak import EspeakEngine
from streamtts.player import Player

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

#: Quick mode: the issue's five minutes (~30 chained links; a slow climb of a few kB per link
#: shows over that many). It plays in real time and needs ~4 % of a core, so ``benchmarks/run``
#: runs it in the background beside the other quick benchmarks.
QUICK_SECONDS = 300.0
#: --full: the hour the issue asks for.
FULL_SECONDS = 3600.0
#: Warm-up excluded from the growth figure: a couple of links (each new decoder, the ring
#: filling, numpy's and the allocator's first pools). 15 s quick; 60 s in a one-hour run.
QUICK_WARMUP_S = 15.0
FULL_WARMUP_S = 60.0
#: Memory may grow at most this much after warm-up (the issue's figure).
MAX_GROWTH_MB = 2.0
#: Sampling period: a few hundred points in the quick run, 3600 in the hour.
SAMPLE_S = 1.0
#: Bytes per source chunk: a typical network read.
CHUNK = 4096
#: The clip (about 10 s of speech): repeated to the run's length.
CLIP_TEXT = (
    "This is a long running playback test. The same clip is chained again and again, as "
    "concatenated responses are, while the memory and the processor time are sampled every "
    "second."
)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    """Resident memory of this process now, in MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_SIZE / 2**20


def peak_rss_mb() -> float:
    """Peak resident memory of this process (``VmHWM``), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


async def make_clip() -> tuple[bytes, float]:
    """The clip as Ogg Opus bytes and its duration in seconds."""
    from streamtts.opus import decode_opus_stream

    engine = EspeakEngine(sample_rate=24_000)
    chunks = []
    async with engine.stream(CLIP_TEXT, format="opus", page_ms=1000.0) as audio:
        async for chunk in audio.aiter_bytes():
            chunks.append(chunk)
    clip = b"".join(chunks)
    return clip, len(decode_opus_stream([clip], 24_000)) / 24_000


async def chained(clip: bytes, links: int) -> AsyncIterator[bytes]:
    """The clip repeated *links* times, in `CHUNK`-byte pieces."""
    for _ in range(links):
        for i in range(0, len(clip), CHUNK):
            yield clip[i : i + CHUNK]


class SampleTable:
    """The sampled series, in a table allocated (and written through) before the run starts.

    A list of one dict per sample grows by ~0.5 kB a second: 1.6 MB of the hour's 2 MB limit
    (measured), a straight line that was the script's own records, not the player's.
    """

    FIELDS = ("t", "rss_mb", "cpu_s", "audio_s", "buffered_ms", "underruns")
    #: Decimals kept per field in the JSON.
    DIGITS = (2, 3, 3, 2, 1, 0)

    def __init__(self, capacity: int) -> None:
        # np.full writes every page now: they are resident before the warm-up ends.
        self._rows = np.full((capacity, len(self.FIELDS)), np.nan)
        self._n = 0
        self.dropped = 0

    def add(self, *values: float) -> None:
        if self._n == len(self._rows):
            self.dropped += 1
            return
        self._rows[self._n] = values
        self._n += 1

    def as_dicts(self) -> list[dict[str, float]]:
        out = []
        for row in self._rows[: self._n]:
            out.append({
                k: (int(v) if d == 0 else round(float(v), d))
                for k, v, d in zip(self.FIELDS, row, self.DIGITS, strict=True)
            })
        return out


async def run(seconds: float, warmup: float) -> dict[str, Any]:
    """Play about *seconds* of chained audio; the sampled series and the verdicts."""
    clip, clip_s = await make_clip()
    links = max(1, round(seconds / clip_s))
    # room for the audio (links rounded up), plus the drain and a loaded machine's slow ticks
    table = SampleTable(math.ceil(1.2 * (links + 1) * clip_s / SAMPLE_S) + 60)
    async with Player() as player:
        t0 = time.monotonic()
        cpu0 = time.process_time()
        finished = anyio.Event()

        async def sample() -> None:
            while not finished.is_set():
                stats = player.stats()
                rate = stats.sample_rate or 1
                table.add(
                    time.monotonic() - t0,
                    rss_mb(),
                    time.process_time() - cpu0,
                    stats.frames_played / rate,
                    stats.buffered_ms,
                    stats.underruns,
                )
                await anyio.sleep(SAMPLE_S)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            result = await player.play(chained(clip, links), format="ogg")
            finished.set()
        device_underflows = player.stats().device_underflows
        wall = time.monotonic() - t0
        cpu = time.process_time() - cpu0
    samples = table.as_dicts()
    after = [s["rss_mb"] for s in samples if s["t"] >= warmup]
    at_warmup = after[0] if after else samples[-1]["rss_mb"]
    growth = (max(after) - at_warmup) if after else 0.0
    end_growth = (after[-1] - at_warmup) if after else 0.0
    return {
        "clip_s": round(clip_s, 3),
        "links": links,
        "audio_s": round(result.duration, 2),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "cpu_per_audio_s": round(cpu / result.duration, 4) if result.duration else None,
        "underruns": result.underruns,
        "underrun_ms": round(result.underrun_ms, 1),
        # late callbacks PortAudio reported (output_underflow): glitches of the sound server or a
        # loaded machine, not of the source; the player's own underruns are counted above
        "device_underflows": device_underflows,
        "warmup_s": warmup,
        "rss_at_warmup_mb": round(at_warmup, 2),
        "rss_growth_after_warmup_mb": round(growth, 3),
        "rss_end_minus_warmup_mb": round(end_growth, 3),
        "peak_rss_mb": round(peak_rss_mb(), 2),
        "memory_flat": growth <= MAX_GROWTH_MB,
        "max_growth_mb": MAX_GROWTH_MB,
        "samples_dropped": table.dropped,
        "samples": samples,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Memory (and CPU seconds) over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t"] for s in result["samples"]]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(t, [s["rss_mb"] for s in result["samples"]], label="resident memory (MB)")
    ax.axvline(result["warmup_s"], color="grey", ls=":", label="end of warm-up")
    ax.axhline(result["rss_at_warmup_mb"] + MAX_GROWTH_MB, color="red", ls="--",
               label=f"warm-up + {MAX_GROWTH_MB} MB")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MB")
    ax2 = ax.twinx()
    ax2.plot(t, [s["cpu_s"] for s in result["samples"]], color="tab:green", lw=0.8,
             label="CPU seconds")
    ax2.set_ylabel("CPU s")
    ax.set_title(f"Player, {result['audio_s']:.0f} s chained Ogg Opus: memory growth "
                 f"{result['rss_growth_after_warmup_mb']:.2f} MB after warm-up, "
                 f"{result['cpu_per_audio_s']:.4f} CPU s per audio s", fontsize=9)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help=f"{FULL_SECONDS:.0f} s")
    parser.add_argument("--seconds", type=float, help="length of the run (overrides --full)")
    parser.add_argument("--out", type=Path, default=RESULTS / "longrun.json")
    parser.add_argument("--plot", type=Path, default=RESULTS / "longrun_memory.png")
    args = parser.parse_args(argv)
    seconds = args.seconds or (FULL_SECONDS if args.full else QUICK_SECONDS)
    warmup = FULL_WARMUP_S if seconds >= 10 * FULL_WARMUP_S else QUICK_WARMUP_S
    subprocess.run([str(ROOT / "scripts" / "pulse"), "start"], check=True, capture_output=True)
    sink = f"streamtts_longrun_{os.getpid()}"
    module = subprocess.run(
        ["pactl", "load-module", "module-null-sink", f"sink_name={sink}", "rate=48000",
         "channels=1", "format=float32le", "norewinds=1"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    os.environ["PULSE_SINK"] = sink  # read by the ALSA pulse plugin when the stream opens
    load_before = os.getloadavg()
    try:
        result = anyio.run(run, seconds, warmup)
    finally:
        subprocess.run(["pactl", "unload-module", module], capture_output=True, check=False)
    result["load_average_before"] = [round(v, 2) for v in load_before]
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    result["mode"] = "full" if seconds >= FULL_SECONDS else "quick"
    RESULTS.mkdir(exist_ok=True)
    plot(result, args.plot)
    plot_path = args.plot.resolve()
    result["plot"] = str(
        plot_path.relative_to(ROOT) if plot_path.is_relative_to(ROOT) else plot_path
    )
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    summary = {k: v for k, v in result.items() if k != "samples"}
    json.dump(summary, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
