"""The real-time player: cost of the audio callback, first-sound latency, end of play(); JSON.

1. ``callback``: `DeviceOutput._callback` driven directly (no device) on 480-frame blocks from a
   fed ring, in its three situations (steady copy; running dry with a fade-out; silence while
   stalled), against the copy the callback has to do anyway (``np.copyto`` of one block) and
   against the queue handoff other players use (``queue.Queue.get_nowait`` of a block, as in
   openai-python's LocalAudioPlayer). Microseconds per block: mean and 99th percentile.
2. ``device`` (needs a sound server; the PulseAudio null sink here): a 1 s float WAV played by
   ``Player`` from bytes, per output latency: first-sound latency (``play()`` call to first
   sample at the device, device open included on the first play, not on later ones), and how
   long after the last sample's device time ``play()`` returned.
3. ``cpu_while_playing`` (needs a sound server): the process's CPU time (all threads) while
   `Player` plays a pre-buffered tone steadily, as a percentage of one core, against a bare
   sounddevice stream whose callback only copies from an array (the floor any Python player
   pays: PortAudio's and the sound server client's threads, the callback wrapper). Each
   measurement runs in a fresh process, alternating, `CPU_REPEATS` times; medians reported.
   Issue goal: ≤ 1.5 % of one core.

Run: ``.venv/bin/python benchmarks/bench_player.py`` (writes ``benchmarks/results/player.json``).
"""

from __future__ import annotations

import json
import queue
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import numpy as np

from streamtts.device import DeviceOutput
from streamtts.player import Player
from streamtts.wav import wav_header

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 480
RUNS = 20_000  # callbacks timed per case: enough for a stable 99th percentile
PLAYS = 5  # plays per latency setting
CPU_SECONDS = 8.0  # audio played per CPU measurement (the first 0.5 s is not counted)
CPU_REPEATS = 3  # measurements per system, alternating (other load on the machine varies)


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "mean_us": round(statistics.fmean(ordered) * 1e6, 2),
        "p99_us": round(ordered[int(0.99 * (len(ordered) - 1))] * 1e6, 2),
    }


def bench_callback() -> dict[str, Any]:
    dev = DeviceOutput(48000, 1)
    dev._prepare(48000)
    out = np.zeros((BLOCK, 1), dtype=np.float32)
    block = np.linspace(-0.5, 0.5, BLOCK, dtype=np.float32).reshape(-1, 1)
    info = SimpleNamespace(currentTime=0.0)
    ok = SimpleNamespace(output_underflow=False)
    results: dict[str, Any] = {}

    def run(case: str, prepare: Any) -> None:
        times = []
        for _ in range(RUNS):
            prepare()
            t = time.perf_counter()
            dev._callback(out, BLOCK, info, ok)
            times.append(time.perf_counter() - t)
        results[case] = _stats(times)

    dev.resume(fade_in=False)

    def steady() -> None:
        if dev.ring.readable() < BLOCK:
            dev.ring.write(np.tile(block, (100, 1)))
        if not dev.playing:
            dev.resume(fade_in=False)

    run("steady_copy", steady)

    def dry() -> None:
        dev.ring.write(block[: BLOCK // 2])  # half a block, then an underrun with its fade
        dev.resume(fade_in=True)

    run("run_dry_with_fade", dry)

    def stalled() -> None:
        pass

    run("silence_while_stalled", stalled)

    copy_times = []
    src = np.tile(block, (2, 1))
    for _ in range(RUNS):
        t = time.perf_counter()
        np.copyto(out, src[:BLOCK])
        copy_times.append(time.perf_counter() - t)
    results["bare_block_copy"] = _stats(copy_times)

    q: queue.Queue[np.ndarray] = queue.Queue()
    queue_times = []
    for _ in range(RUNS):
        q.put(block)
        t = time.perf_counter()
        data = q.get_nowait()
        out[:] = data
        queue_times.append(time.perf_counter() - t)
    results["queue_handoff_for_comparison"] = _stats(queue_times)
    return results


async def _plays(latency: float | str) -> dict[str, Any]:
    x = (0.3 * np.sin(np.arange(1, 48001) * 2 * np.pi * 300 / 48000)).astype(np.float32)
    wav = wav_header(48000, 1, sample_format="f32le", frames=len(x)) + x.tobytes()
    first, later, lag = [], [], []
    async with Player(device_latency=latency) as player:
        for i in range(PLAYS):
            result = await player.play(wav)
            returned = time.monotonic()
            assert result.first_sound_latency is not None
            assert result.finished_at is not None
            (first if i == 0 else later).append(result.first_sound_latency)
            lag.append(returned - result.finished_at)
        dev = player.device_output
        assert dev is not None
        reported = dev.output_latency
        underflows = dev.underflows
    return {
        "reported_output_latency_ms": round(reported * 1000, 1),
        "first_sound_ms_first_play": round(first[0] * 1000, 1),
        "first_sound_ms_later_plays_median": round(statistics.median(later) * 1000, 1),
        "return_after_last_sample_ms_median": round(statistics.median(lag) * 1000, 1),
        "device_underflows": underflows,
    }


def bench_device() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for latency in ("low", 0.04, 0.1, 0.25):
        try:
            out[str(latency)] = anyio.run(_plays, latency)
        except Exception as exc:  # no sound server: say so in the results
            return {"skipped": f"{type(exc).__name__}: {exc}"}
    return out


def _cpu_bare(x: np.ndarray) -> float:
    import sounddevice as sd

    pos = 0

    def callback(out: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
        nonlocal pos
        n = min(frames, len(x) - pos)
        out[:n, 0] = x[pos : pos + n]
        out[n:] = 0.0
        pos += n

    with sd.OutputStream(samplerate=48000, channels=1, dtype="float32", blocksize=BLOCK,
                         latency=0.1, callback=callback):
        time.sleep(0.5)
        c0, t0 = time.process_time(), time.monotonic()
        time.sleep(CPU_SECONDS - 1.0)
        c1, t1 = time.process_time(), time.monotonic()
    return (c1 - c0) / (t1 - t0)


async def _cpu_player(x: np.ndarray) -> float:
    wav = wav_header(48000, 1, sample_format="f32le", frames=len(x)) + x.tobytes()
    async with Player(sample_rate=48000) as player, anyio.create_task_group() as tg:
        tg.start_soon(player.play, wav)
        await anyio.sleep(0.5)
        c0, t0 = time.process_time(), time.monotonic()
        await anyio.sleep(CPU_SECONDS - 1.0)
        c1, t1 = time.process_time(), time.monotonic()
    return (c1 - c0) / (t1 - t0)


def _cpu_one(system: str) -> None:
    """Child process: one measurement, printed as a number (fraction of a core)."""
    frames = int(48000 * CPU_SECONDS)
    x = (0.3 * np.sin(np.arange(1, frames + 1) * 2 * np.pi * 300 / 48000)).astype(np.float32)
    print(_cpu_bare(x) if system == "bare" else anyio.run(_cpu_player, x))


def bench_cpu() -> dict[str, Any]:
    import subprocess

    got: dict[str, list[float]] = {"bare_sounddevice": [], "player": []}
    for _ in range(CPU_REPEATS):
        for name, arg in (("bare_sounddevice", "bare"), ("player", "player")):
            proc = subprocess.run([sys.executable, __file__, "--cpu-one", arg],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                return {"skipped": proc.stderr.strip().splitlines()[-1:]}
            got[name].append(100.0 * float(proc.stdout.strip().splitlines()[-1]))
    out: dict[str, Any] = {
        name: {"median_pct_of_core": round(statistics.median(v), 2),
               "runs_pct": [round(r, 2) for r in v]}
        for name, v in got.items()
    }
    out["player_minus_bare_pct"] = round(
        out["player"]["median_pct_of_core"] - out["bare_sounddevice"]["median_pct_of_core"], 2)
    out["goal_le_1.5_pct_met"] = out["player"]["median_pct_of_core"] <= 1.5
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--cpu-one":
        _cpu_one(sys.argv[2])
        return
    results = {"callback": bench_callback(), "device": bench_device(),
               "cpu_while_playing": bench_cpu()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "player.json").write_text(json.dumps(results, indent=2) + "\n")
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
