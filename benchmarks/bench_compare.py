"""streamtts side by side with what users would pick instead: same server, traces, device; JSON.

Setup: one local OpenAI-compatible server (`streamtts.server.create_app`, the embedded espeak-ng
voice at 24 kHz) on 127.0.0.1; every trace is a set of ``X-Impair-*`` request headers. For each
(system, trace) a private 24 kHz PulseAudio null sink is loaded, its monitor recorded with
``parec``, and the system runs in its own process (``peers/runner.py``) with ``PULSE_SINK``
pointing at that sink, so CPU time and peak memory are its own. Systems run one after another.

How the figures are measured:

* **first sound**: from the request (``time.monotonic()`` in the system's process, just before
  the request is sent) to the first sample above -60 dBFS *in the recording of the sink's
  monitor*, i.e. measured at the device for every system alike. The recording's sample clock is
  mapped to ``time.monotonic()`` by its least-delayed chunk: for each chunk parec delivered,
  ``receipt time - samples so far / rate`` bounds the clock offset; the smallest bound is used
  (error: parec's 10 ms latency at most).
* **underruns and silence inserted**: silent runs (>= 10 ms below -60 dBFS) inside the
  recording's speech are matched, in order, with those of the reference decode of the same
  format; a run with no counterpart (or longer than its counterpart by >= 10 ms) is an underrun
  and its extra length is inserted silence. Audio missing at the end (a cut tail) is reported
  as ``truncated_ms``.
* **oracle**: `streamtts.policy.oracle_start` on the measured arrival trace (each chunk's time
  and the audio it completes, decoded after the run), 10 ms blocks: the earliest start that
  never underruns. ``first_sound - oracle`` includes the device path (output latency), which the
  oracle does not.
* **buffer level**: audio received minus audio heard, over time, from the arrival trace and the
  recording (the same method for every system); streamtts's own ``Player.stats().buffered_ms``
  is kept beside it in the JSON.
* **CPU s per audio s**: ``time.process_time()`` of the system's process (all its threads) from
  the request to the end of playback, divided by the reference's duration; **peak memory** is
  the process's ``ru_maxrss``.

Run: ``.venv/bin/python benchmarks/bench_compare.py [--full] [--systems a,b] [--traces x,y]``
(needs PulseAudio: ``scripts/pulse start``). Writes ``benchmarks/results/compare.json`` and
``compare_first_sound.png``, ``compare_underruns.png``, ``compare_buffer.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from streamtts.formats import make_reader
from streamtts.policy import oracle_start

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUNNER = ROOT / "benchmarks" / "peers" / "runner.py"
Float32 = npt.NDArray[np.float32]

#: Rate of the server's PCM/WAV (OpenAI's 24 kHz) and of every sink: recordings need no resampling.
RATE = 24_000

#: About 5 s of espeak-ng speech: long enough to reach a steady state on every trace, short
#: enough for the quick mode to run 40 plays in a few minutes.
TEXT = (
    "Streaming speech should start quickly and never stutter, however slowly the audio "
    "arrives."
)

#: "Sound" is above -60 dBFS: espeak-ng's pauses are digital silence, and decoded Opus noise in
#: them stays well below this.
SOUND_THRESHOLD = 1e-3
#: Shortest silent run compared (and shortest underrun counted): one 10 ms device block.
MIN_GAP_S = 0.010
#: A recorded silent run matches a reference one if it starts within this of it (in reference
#: time): decoders (libopus vs FFmpeg's Opus) and resamplers move the edges by a few ms.
MATCH_SLACK_S = 0.030
#: Seconds recorded after the system's process ended: the sink's latency, and a margin.
TAIL_S = 0.3
#: A run that takes longer than this is killed and reported as failed.
RUN_TIMEOUT_S = 90.0
#: Buffer-level curves are sampled this often: 4 blocks of 10 ms, fine enough to show each
#: underrun and restart, coarse enough to keep compare.json a few hundred kB.
GRID_S = 0.04


@dataclass(frozen=True)
class TraceSpec:
    """One network condition: the server's impairment headers for a request."""

    name: str
    description: str
    headers: dict[str, str]


TRACES = [
    TraceSpec("fast", "loopback, no impairment", {}),
    TraceSpec(
        "openai_like",
        "0.7 s to the first byte, 1 s Ogg pages (Opus), then 4x real time",
        {"X-Impair-First-Byte-Delay": "0.7", "X-Impair-Page-Duration": "1.0",
         "X-Impair-Realtime": "4"},
    ),
    TraceSpec(
        "slow_link",
        "44 kB/s (0.92x the 48 kB/s of 24 kHz s16 PCM), 1460-byte writes",
        {"X-Impair-Rate": "44000", "X-Impair-Chunk-Size": "1460"},
    ),
    TraceSpec("realtime_1.0", "delivery paced at exactly 1.0x real time",
              {"X-Impair-Realtime": "1.0"}),
    TraceSpec("realtime_0.8", "delivery paced at 0.8x real time (cannot keep up)",
              {"X-Impair-Realtime": "0.8"}),
    TraceSpec(
        "bursty",
        "1.5x real time, each write delayed by 0-300 ms (seeded), order kept",
        {"X-Impair-Realtime": "1.5", "X-Impair-Jitter": "0.3", "X-Impair-Seed": "7"},
    ),
    TraceSpec(
        "stall_500ms",
        "1.5x real time, then a 500 ms stall 1 s after the first byte",
        {"X-Impair-Realtime": "1.5", "X-Impair-Stall-At": "1.0", "X-Impair-Stall-For": "0.5"},
    ),
]

#: system → (response format, description)
SYSTEMS: dict[str, tuple[str, str]] = {
    "streamtts_opus": ("opus", "streamtts Player, Ogg Opus, adaptive start"),
    "streamtts_wav": ("wav", "streamtts Player, WAV, adaptive start"),
    "streamtts_pcm": ("pcm", "streamtts Player, raw PCM, adaptive start"),
    "streamtts_opus_lowlat": ("opus", "streamtts Player, Ogg Opus, device_latency='low'"),
    "openai_play_stream_pcm": ("pcm", "openai-python LocalAudioPlayer.play_stream (PCM)"),
    "openai_play_whole_pcm": ("pcm", "openai-python LocalAudioPlayer.play(response): whole body"),
    "pyav_opus": ("opus", "PyAV/FFmpeg Ogg Opus decoder thread (livekit-agents' approach)"),
    "wav_preroll_150k": ("wav", "forum recipe: 150 000 bytes of WAV, then a playback thread"),
    "pcm_preroll_0.5s": ("pcm", "pipecat-like: 0.5 s of PCM preroll, then blocking writes"),
}

#: Quick mode: every system on the three traces that tell them apart most (the low-latency
#: streamtts variant on two), the rest of the traces only for the systems whose behaviour there
#: is not obvious from the others (a fixed preroll or the whole body is the same on every
#: trace). --full runs every system on every trace.
QUICK_ALL = "all but streamtts_opus_lowlat"
QUICK_PLAN: dict[str, tuple[str, ...]] = {
    "fast": (QUICK_ALL, "streamtts_opus_lowlat"),
    "openai_like": (QUICK_ALL, "streamtts_opus_lowlat"),
    "slow_link": (QUICK_ALL,),
    "stall_500ms": ("streamtts_opus", "streamtts_pcm", "openai_play_stream_pcm", "pyav_opus",
                    "pcm_preroll_0.5s"),
    "realtime_0.8": ("streamtts_opus", "streamtts_pcm", "openai_play_stream_pcm"),
    "bursty": ("streamtts_opus", "openai_play_stream_pcm"),
}
#: Quick mode runs this many plays at once (each its own process and sink): a play mostly
#: waits for real time (a few % of a core), so two fit on 2 cores and the quick mode stays
#: within its budget. With 3 at once, overlapping process start-ups (~1 CPU s of imports each)
#: caused glitches in the recordings that the players did not cause. --full runs one at a time.
QUICK_JOBS = 2


# ------------------------------------------------------------------------- server and device


def _listening_socket() -> socket.socket:
    # IPPROTO_TCP so that asyncio sets TCP_NODELAY (no Nagle + delayed-ACK 40 ms stalls).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@contextlib.contextmanager
def serve() -> Iterator[str]:
    """The local speech server in a thread on 127.0.0.1; yields its base URL."""
    import uvicorn

    from streamtts.server import create_app

    sock = _listening_socket()
    config = uvicorn.Config(create_app(), log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _pactl(*args: str) -> str:
    proc = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=10,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pactl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip()


@contextlib.contextmanager
def null_sink(name: str) -> Iterator[str]:
    """A private 24 kHz float32 mono null sink (``norewinds=1``: see docs on PulseAudio)."""
    module = _pactl("load-module", "module-null-sink", f"sink_name={name}", f"rate={RATE}",
                    "channels=1", "format=float32le", "norewinds=1")
    try:
        yield name
    finally:
        subprocess.run(["pactl", "unload-module", module], capture_output=True, check=False)


class Recording:
    """``parec`` on a monitor, with each chunk's receipt time (to map samples to the clock)."""

    def __init__(self, source: str) -> None:
        self._chunks: list[bytes] = []
        self._marks: list[tuple[float, int]] = []  # (receipt time, bytes so far)
        self._size = 0
        self._first = threading.Event()
        self._proc = subprocess.Popen(
            ["parec", "-d", source, "--raw", "--format=float32le", f"--rate={RATE}",
             "--channels=1", "--latency-msec=10"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        if not self._first.wait(10.0):
            self._proc.kill()
            raise RuntimeError(f"parec recorded nothing from {source}")

    def _pump(self) -> None:
        stdout = self._proc.stdout
        assert isinstance(stdout, io.BufferedReader)
        while data := stdout.read1(65536):
            now = time.monotonic()
            self._chunks.append(data)
            self._size += len(data)
            self._marks.append((now, self._size))
            self._first.set()

    def stop(self) -> tuple[Float32, float]:
        """Stop; the samples and the ``time.monotonic()`` of sample 0."""
        self._proc.terminate()
        self._proc.wait(5)
        self._thread.join(5)
        raw = b"".join(self._chunks)
        x = np.frombuffer(raw[: len(raw) - len(raw) % 4], dtype=np.float32).copy()
        origin = min(t - size / 4 / RATE for t, size in self._marks)
        return x, origin


# ------------------------------------------------------------------------- analysis


def silent_runs(x: Float32, lo: int, hi: int) -> list[tuple[int, int]]:
    """``(start, length)`` of the runs of >= `MIN_GAP_S` below the threshold in ``x[lo:hi]``."""
    quiet = np.abs(x[lo:hi]) <= SOUND_THRESHOLD
    edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
    minimum = int(MIN_GAP_S * RATE)
    return [(lo + int(s), int(e - s)) for s, e in zip(edges[::2], edges[1::2], strict=True)
            if e - s >= minimum]


def sound_span(x: Float32) -> tuple[int, int] | None:
    """First and one-past-last sample above the threshold."""
    idx = np.flatnonzero(np.abs(x) > SOUND_THRESHOLD)
    return None if idx.size == 0 else (int(idx[0]), int(idx[-1]) + 1)


def inserted_silence(rec: Float32, ref: Float32) -> dict[str, Any]:
    """Underruns of the recording against the reference (see the module docstring)."""
    rec_span, ref_span = sound_span(rec), sound_span(ref)
    if rec_span is None or ref_span is None:
        return {"silent": True}
    r0, r1 = rec_span
    f0, f1 = ref_span
    ref_runs = silent_runs(ref, f0, f1)
    slack = int(MATCH_SLACK_S * RATE)
    inserted_mask = np.zeros(len(rec), dtype=bool)
    inserted = 0
    underruns: list[dict[str, float]] = []
    j = 0
    for start, length in silent_runs(rec, r0, r1):
        at = start - r0 - inserted + f0  # where this run starts in the reference
        while j < len(ref_runs) and ref_runs[j][0] + ref_runs[j][1] + slack < at:
            j += 1
        extra = length
        if j < len(ref_runs) and ref_runs[j][0] - slack <= at:
            extra = length - ref_runs[j][1]
            j += 1
        if extra >= int(MIN_GAP_S * RATE):
            inserted_mask[start + length - extra : start + length] = True
            inserted += extra
            underruns.append({"at_s": round((at - f0) / RATE, 3),
                              "silence_ms": round(1000 * extra / RATE, 1)})
    heard = (r1 - r0) - inserted
    return {
        "silent": False,
        "first": r0,
        "underruns": len(underruns),
        "inserted_ms": round(1000 * inserted / RATE, 1),
        "underrun_list": underruns,
        "truncated_ms": round(1000 * ((f1 - f0) - heard) / RATE, 1),
        "mask": inserted_mask,
    }


def decode_reference(fmt: str, body: bytes) -> Float32:
    """The whole body decoded at 24 kHz mono (the reference a run is compared with)."""
    reader = make_reader("ogg" if fmt == "opus" else fmt, sample_rate=RATE, pcm_rate=RATE)
    blocks = [*reader.feed(body), *reader.close()]
    return np.concatenate([b[:, 0] for b in blocks]).astype(np.float32)


def arrival_audio(fmt: str, body: bytes, arrivals: list[tuple[float, int]],
                  origin: float) -> list[tuple[float, float]]:
    """``(time from origin, audio seconds completed)`` per received chunk, decoded after the run."""
    reader = make_reader("ogg" if fmt == "opus" else fmt, sample_rate=RATE, pcm_rate=RATE)
    out = []
    offset = 0
    for t, n in arrivals:
        frames = sum(b.shape[0] for b in reader.feed(body[offset : offset + n]))
        offset += n
        out.append((t - origin, frames / RATE))
    tail = sum(b.shape[0] for b in reader.close())
    if tail and out:
        out[-1] = (out[-1][0], out[-1][1] + tail / RATE)
    return out


def buffer_curve(arrived: list[tuple[float, float]], rec_origin: float, requested: float,
                 ana: dict[str, Any], ref_first: int, n_rec: int, end: float) -> list[list[float]]:
    """Audio received minus audio heard, every `GRID_S` from the request to *end*."""
    times = np.array([t for t, _ in arrived])
    cum = np.cumsum([a for _, a in arrived])
    heard_mask = np.zeros(n_rec, dtype=bool)
    first = ana["first"]
    heard_mask[first:] = True
    heard_mask &= ~ana["mask"]
    heard = np.concatenate(([0], np.cumsum(heard_mask)))
    out = []
    for t in np.arange(0.0, end - requested, GRID_S):
        k = int(np.searchsorted(times, t, side="right"))
        got = float(cum[k - 1]) if k else 0.0
        i = round((requested + t - rec_origin) * RATE)
        i = min(max(i, 0), n_rec)
        played = (ref_first + heard[i]) / RATE if i > first else 0.0
        out.append([round(float(t), 3), round(max(got - played, 0.0), 3)])
    return out


# ------------------------------------------------------------------------- one run


def run_one(system: str, trace: TraceSpec, url: str, ref: Float32, tmp: Path,
            keep: Path | None = None) -> dict[str, Any]:
    """Play *trace* with *system* in its own process into its own sink; all the figures."""
    fmt = SYSTEMS[system][0]
    spec = {"system": system, "url": url, "text": TEXT, "headers": trace.headers,
            "out": str(tmp / "out.json"), "body": str(tmp / "body.bin")}
    (tmp / "spec.json").write_text(json.dumps(spec))
    name = f"streamtts_cmp_{os.getpid()}_{system.replace('.', '_')}_{trace.name.replace('.', '_')}"
    with null_sink(name):
        rec = Recording(f"{name}.monitor")
        env = {**os.environ, "PULSE_SINK": name}
        try:
            proc = subprocess.run([sys.executable, str(RUNNER), str(tmp / "spec.json")], env=env,
                                  cwd=RUNNER.parent, capture_output=True, text=True,
                                  timeout=RUN_TIMEOUT_S, check=False)
            failure = None if proc.returncode == 0 else proc.stderr[-2000:]
        except subprocess.TimeoutExpired:
            failure = f"killed after {RUN_TIMEOUT_S} s"
        time.sleep(TAIL_S)
        x, rec_origin = rec.stop()
    if failure is not None:
        return {"system": system, "trace": trace.name, "error": failure}
    if keep is not None:
        np.save(keep / f"{system}__{trace.name}.npy", x)
    got: dict[str, Any] = json.loads((tmp / "out.json").read_text())
    body = (tmp / "body.bin").read_bytes()
    requested = float(got["requested_at"])
    row: dict[str, Any] = {"system": system, "trace": trace.name, "error": got["error"]}
    arrived = arrival_audio(fmt, body, [(float(t), int(n)) for t, n in got["arrivals"]], requested)
    audio_s = len(ref) / RATE
    row.update(
        first_byte_s=round(arrived[0][0], 3) if arrived else None,
        last_byte_s=round(arrived[-1][0], 3) if arrived else None,
        audio_s=round(audio_s, 3),
        cpu_s=round(got["cpu_s"], 3),
        cpu_per_audio_s=round(got["cpu_s"] / audio_s, 4),
        peak_rss_mb=round(got["peak_rss_kb"] / 1024, 1),
        peak_rss_after_imports_mb=round(got["peak_rss_after_imports_kb"] / 1024, 1),
    )
    ana = inserted_silence(x, ref)
    if ana["silent"]:
        row["error"] = row["error"] or "nothing was heard at the device"
        return row
    first_sound = rec_origin + ana["first"] / RATE - requested
    oracle = oracle_start([a for a in arrived if a[1] > 0], 0.01) if arrived else None
    ref_span = sound_span(ref)
    assert ref_span is not None
    row.update(
        first_sound_s=round(first_sound, 3),
        oracle_start_s=None if oracle is None else round(oracle, 3),
        # the oracle starts feeding audio at its time; the first *sound* is later by the
        # reference's leading silence and the device path
        first_sound_minus_oracle_s=None if oracle is None
        else round(first_sound - oracle - ref_span[0] / RATE, 3),
        underruns=ana["underruns"],
        inserted_silence_ms=ana["inserted_ms"],
        truncated_ms=ana["truncated_ms"],
        underrun_list=ana["underrun_list"],
        buffer_level=buffer_curve(arrived, rec_origin, requested, ana, ref_span[0], len(x),
                                  float(got["ended_at"])),
        own_buffer_view=[[round(t - requested, 3), round(b, 3)] for t, b in got["buffer"]],
        own_figures=got.get("extra", {}),
    )
    return row


# ------------------------------------------------------------------------- plots


def _shown(path: Path) -> str:
    """*path* relative to the repository when it is inside it (as the docs refer to it)."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(resolved)


def plot(rows: list[dict[str, Any]], systems: list[str], traces: list[str],
         folder: Path = RESULTS) -> list[str]:
    """First-sound bars, underrun bars, buffer level over time; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {(r["system"], r["trace"]): r for r in rows}
    colors = {s: plt.get_cmap("tab10")(i) for i, s in enumerate(systems)}
    width = 0.8 / len(systems)
    paths = []
    for key, title, fname, scale in (
        ("first_sound_s", "First sound at the device (s from the request)",
         "compare_first_sound.png", 1.0),
        ("inserted_silence_ms", "Silence inserted by underruns (ms; label: count)",
         "compare_underruns.png", 1.0),
    ):
        fig, ax = plt.subplots(figsize=(13, 5))
        for i, s in enumerate(systems):
            xs, ys, labels = [], [], []
            for k, t in enumerate(traces):
                r = by.get((s, t))
                if r is None or r.get(key) is None:
                    continue
                xs.append(k + (i - (len(systems) - 1) / 2) * width)
                ys.append(r[key] * scale)
                labels.append(str(r["underruns"]) if key == "inserted_silence_ms" else "")
            bars = ax.bar(xs, ys, width, label=s, color=colors[s])
            if key == "inserted_silence_ms":
                ax.bar_label(bars, labels=labels, fontsize=7)
        ax.set_xticks(range(len(traces)), traces)
        ax.set_title(title)
        ax.legend(fontsize=8, ncol=2)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = folder / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(_shown(path))
    cols = 2
    rows_n = (len(traces) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(13, 3.2 * rows_n), squeeze=False)
    for k, t in enumerate(traces):
        ax = axes[k // cols][k % cols]
        for s in systems:
            r = by.get((s, t))
            if r is None or not r.get("buffer_level"):
                continue
            curve = np.array(r["buffer_level"])
            ax.plot(curve[:, 0], curve[:, 1], label=s, color=colors[s], lw=1.2)
        ax.set_title(f"{t}: audio received but not yet heard (s)", fontsize=9)
        ax.set_xlabel("s from the request", fontsize=8)
        ax.grid(alpha=0.3)
    for k in range(len(traces), rows_n * cols):
        axes[k // cols][k % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path = folder / "compare_buffer.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    paths.append(_shown(path))
    return paths


# ------------------------------------------------------------------------- main


def plan(full: bool, systems: list[str] | None, traces: list[str] | None) -> list[tuple[str, str]]:
    """The (system, trace) pairs to run, in order."""
    all_traces = [t.name for t in TRACES]
    chosen_s = systems or list(SYSTEMS)
    chosen_t = traces or all_traces
    pairs = []
    for t in chosen_t:
        for s in chosen_s:
            quick = QUICK_PLAN.get(t, ())
            wanted = s in quick or (QUICK_ALL in quick and s != "streamtts_opus_lowlat")
            if full or systems or traces or wanted:
                pairs.append((s, t))
    return pairs


def _compact_pairs(text: str) -> str:
    """Indented JSON with each ``[time, value]`` pair of a series on one line."""
    return re.sub(r"\[\s+(-?[\d.eE+-]+),\s+(-?[\d.eE+-]+)\s+\]", r"[\1, \2]", text)


def table(rows: list[dict[str, Any]]) -> list[str]:
    """One line per run: the summary printed at the end."""
    lines = [f"{'system':24} {'trace':13} {'1st byte':>8} {'1st snd':>8} {'oracle':>7} "
             f"{'under':>5} {'ins ms':>7} {'cut ms':>7} {'cpu/aud':>7} {'MB':>6}"]
    for r in rows:
        if r.get("first_sound_s") is None:
            lines.append(f"{r['system']:24} {r['trace']:13} ERROR {r.get('error')}"[:200])
            continue
        lines.append(
            f"{r['system']:24} {r['trace']:13} {r['first_byte_s']:8.3f} {r['first_sound_s']:8.3f}"
            f" {r['oracle_start_s']:7.3f} {r['underruns']:5d} {r['inserted_silence_ms']:7.1f}"
            f" {r['truncated_ms']:7.1f} {r['cpu_per_audio_s']:7.4f} {r['peak_rss_mb']:6.1f}"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="every system on every trace")
    parser.add_argument("--systems", help="comma-separated subset of: " + ", ".join(SYSTEMS))
    parser.add_argument("--traces", help="comma-separated subset of: "
                        + ", ".join(t.name for t in TRACES))
    parser.add_argument("--jobs", type=int, help="runs at once, each in its own sink and "
                        f"process (default: {QUICK_JOBS} quick, 1 with --full)")
    parser.add_argument("--out", type=Path, default=RESULTS / "compare.json")
    parser.add_argument("--plots", type=Path, default=RESULTS, help="folder for the PNGs")
    parser.add_argument("--keep", type=Path, help="save the recordings and references (.npy) here")
    args = parser.parse_args(argv)
    systems = args.systems.split(",") if args.systems else None
    traces = args.traces.split(",") if args.traces else None
    for s in systems or []:
        if s not in SYSTEMS:
            parser.error(f"unknown system {s!r}")
    by_name = {t.name: t for t in TRACES}
    for t in traces or []:
        if t not in by_name:
            parser.error(f"unknown trace {t!r}")
    subprocess.run([str(ROOT / "scripts" / "pulse"), "start"], check=True, capture_output=True)
    pairs = plan(args.full, systems, traces)
    jobs = args.jobs or (1 if args.full else QUICK_JOBS)
    load_before = os.getloadavg()
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    references: dict[str, dict[str, Any]] = {}
    with serve() as url, tempfile.TemporaryDirectory() as tmpdir:
        refs: dict[str, Float32] = {}
        for fmt in sorted({SYSTEMS[s][0] for s, _ in pairs}):
            body = httpx.post(f"{url}/v1/audio/speech", timeout=60, json={
                "model": "tts-1", "voice": "alloy", "input": TEXT, "response_format": fmt}).content
            refs[fmt] = decode_reference(fmt, body)
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                np.save(args.keep / f"reference_{fmt}.npy", refs[fmt])
            span = sound_span(refs[fmt])
            references[fmt] = {"bytes": len(body), "audio_s": round(len(refs[fmt]) / RATE, 3),
                               "first_sound_s": None if span is None else round(span[0] / RATE, 3)}

        def one(k: int) -> dict[str, Any]:
            system, trace = pairs[k]
            tmp = Path(tmpdir) / str(k)
            tmp.mkdir()
            return run_one(system, by_name[trace], url, refs[SYSTEMS[system][0]], tmp, args.keep)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(one, k) for k in range(len(pairs))]
            for done, future in enumerate(as_completed(futures)):
                row = future.result()
                print(f"[{done + 1}/{len(pairs)}] {table([row])[1]}", file=sys.stderr, flush=True)
            rows = [f.result() for f in futures]
    args.plots.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    used_s = [s for s in SYSTEMS if any(r["system"] == s for r in rows)]
    used_t = [t.name for t in TRACES if any(r["trace"] == t.name for r in rows)]
    plots = plot(rows, used_s, used_t, args.plots)
    result = {
        "mode": "full" if args.full else "quick",
        "concurrent_runs": jobs,
        "quick_mode_subset": None if args.full else {t: list(v) for t, v in QUICK_PLAN.items()},
        "text": TEXT,
        "sample_rate": RATE,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "wall_s": round(time.monotonic() - started, 1),
        "method": {
            "first_sound": "request (monotonic, in the system's process) to the first sample "
                           "> -60 dBFS in the null-sink monitor recording (parec), sample clock "
                           "mapped by the least-delayed parec chunk (error <= ~10 ms)",
            "underruns": "silent runs >= 10 ms inside the recorded speech with no counterpart "
                         "(or >= 10 ms longer) in the reference decode of the same format",
            "oracle": "streamtts.policy.oracle_start on the measured arrivals (10 ms blocks); "
                      "first_sound_minus_oracle also removes the reference's leading silence, "
                      "so it is the policy's delay plus the device path",
            "cpu": "time.process_time of the system's own process from request to end of "
                   "playback / audio seconds",
            "memory": "peak resident memory (VmHWM) of the system's own process; also after "
                      "its imports, before the request",
        },
        "systems": {s: SYSTEMS[s][1] for s in used_s},
        "traces": {t.name: t.description for t in TRACES if t.name in used_t},
        "trace_headers": {t.name: t.headers for t in TRACES if t.name in used_t},
        "references": references,
        "plots": plots,
        "runs": rows,
    }
    args.out.write_text(_compact_pairs(json.dumps(result, indent=1)) + "\n")
    summary = table(rows)
    print("\n".join(summary))
    print(f"load average before {result['load_average_before']}, after "
          f"{result['load_average_after']}; wrote {args.out} and {plots}")


if __name__ == "__main__":
    main()
