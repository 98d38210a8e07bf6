"""The real-time player: cost of the audio callback, first-sound latency, end of play(); JSON.

1. ``callback``: `DeviceOutput._callback` driven directly (no device) on 480-frame blocks from a
   fed ring, in its three situations (steady copy; running dry with a fade-out; silence while
   stalled), against the copy the callback has to do anyway (``np.copyto`` of one block) and
   against the queue handoff other players use (``queue.Queue.get_nowait`` of a block, as in
   openai-python's LocalAudioPlayer). Microseconds per block: mean and 99th percentile.
2. ``device`` (needs a sound server; the PulseAudio null sink here): a 1 s float WAV played by
   ``Player`` (no ``sample_rate``) from bytes, per output latency: first-sound latency
   (``play()`` call to first sample at the device) of the first play called at once after
   entering (the speculative device open, begun on entering, is still under way: its rest is
   included; its probe too, for the first player of the process at that latency), of the later
   plays (each called as soon as the previous one returned), and of a first play called
   `ENTRY_LEAD` after entering (a request's time to its first byte is at least that: the
   device is open by then), median of `FIRST_REPEATS` players; and how long after the last
   sample's device time ``play()`` returned.
3. ``cpu_while_playing`` (needs a sound server): the process's CPU time (all threads) while
   `Player` plays a pre-buffered tone steadily, as a percentage of one core, against a bare
   sounddevice stream whose callback only copies from an array (the floor any Python player
   pays: PortAudio's and the sound server client's threads, the callback wrapper). Each
   measurement runs in a fresh process, alternating, `CPU_REPEATS` times; medians reported,
   with the CPU and context switches (wake-ups) per second of each kind of thread (the event
   loop, PortAudio's callback thread, the sound server client's thread; see `_CpuMeter`).
   ``player_back_to_back_sources``: the same tone as `SENTENCES` sources queued at once.
   ``--load[=N]`` measures again with N cores (default 1) kept busy by spinning processes, both
   systems under the same load (``cpu_while_playing_loaded``). Issue goal: ≤ 1.5 % of one core.

Run: ``.venv/bin/python benchmarks/bench_player.py [--load[=N]] [--cpu-only]`` (writes
``benchmarks/results/player.json``; ``--cpu-only`` updates only its CPU sections;
``--device-only`` prints the device section, and updates only it with ``--write``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np

from streamtts.device import DeviceOutput
from streamtts.player import Player
from streamtts.wav import wav_header

RESULTS = Path(__file__).resolve().parent / "results"
BLOCK = 480
RUNS = 20_000  # callbacks timed per case: enough for a stable 99th percentile
PLAYS = 5  # plays per latency setting
FIRST_REPEATS = 3  # players per latency setting whose first play comes ENTRY_LEAD after entering
ENTRY_LEAD = 0.1  # seconds: a fast local server's time to the first byte is of this order
CPU_SECONDS = 8.0  # audio played per CPU measurement (the first 0.5 s is not counted)
CPU_REPEATS = 3  # measurements per system, alternating (other load on the machine varies)
#: The CPU tone also played as this many sources queued back to back (~2.7 s each, a
#: sentence's length): every source's start and end is a moment the poller must be awake for.
SENTENCES = 3


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


async def _first_plays(latency: float | str) -> float:
    x = (0.3 * np.sin(np.arange(1, 48001) * 2 * np.pi * 300 / 48000)).astype(np.float32)
    wav = wav_header(48000, 1, sample_format="f32le", frames=len(x)) + x.tobytes()
    got = []
    for _ in range(FIRST_REPEATS):
        async with Player(device_latency=latency) as player:
            await anyio.sleep(ENTRY_LEAD)
            result = await player.play(wav)
            assert result.first_sound_latency is not None
            got.append(result.first_sound_latency)
    return round(statistics.median(got) * 1000, 1)


def bench_device() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for latency in ("low", 0.04, 0.1, 0.25):
        try:
            out[str(latency)] = anyio.run(_plays, latency)
            out[str(latency)]["first_sound_ms_first_play_entered_earlier_median"] = anyio.run(
                _first_plays, latency)
        except Exception as exc:  # no sound server: say so in the results
            return {"skipped": f"{type(exc).__name__}: {exc}"}
    return out


def _tids_of_python_threads() -> set[int]:
    return {t.native_id for t in threading.enumerate() if t.native_id is not None}


def _thread_sample() -> dict[int, tuple[str, int, int, int]]:
    """Per thread of this process: (name, ns on CPU, voluntary, involuntary context switches).

    ``schedstat`` counts on-CPU time in nanoseconds (``stat``'s utime/stime tick at 10 ms, too
    coarse for a thread using ~1 ms per second); a voluntary switch is a wake-up after a sleep.
    """
    out: dict[int, tuple[str, int, int, int]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            base = f"/proc/self/task/{tid}"
            name = Path(f"{base}/comm").read_text().strip()
            ns = int(Path(f"{base}/schedstat").read_text().split()[0])
            fields = dict(line.split(":", 1) for line in
                          Path(f"{base}/status").read_text().splitlines() if ":" in line)
            out[int(tid)] = (name, ns, int(fields["voluntary_ctxt_switches"]),
                             int(fields["nonvoluntary_ctxt_switches"]))
        except (OSError, KeyError, ValueError):  # a thread that ended meanwhile
            continue
    return out


class _CpuMeter:
    """The process's CPU time over a window, in total and per kind of thread.

    Kinds: ``event_loop`` (the main thread: the player's tasks; the bare stream's sleeping
    main thread), ``python_threads`` (threads made by ``threading``: anyio's workers),
    ``pulse_client`` (libpulse's ``threaded-ml`` thread, through ALSA's pulse plugin) and
    ``portaudio`` (every other thread: PortAudio's callback thread, which runs the callback
    under the GIL, and its helpers).
    """

    def start(self) -> None:
        self._t0, self._c0 = time.monotonic(), time.process_time()
        self._threads0 = _thread_sample()

    def stop(self) -> dict[str, Any]:
        t1, c1 = time.monotonic(), time.process_time()
        threads1 = _thread_sample()
        elapsed = t1 - self._t0
        python_tids = _tids_of_python_threads()
        kinds: dict[str, list[float]] = {}
        for tid, (name, ns, vol, invol) in threads1.items():
            _, ns0, vol0, invol0 = self._threads0.get(tid, (name, 0, 0, 0))
            if tid == os.getpid():
                kind = "event_loop"
            elif name == "threaded-ml":
                kind = "pulse_client"
            elif tid in python_tids:
                kind = "python_threads"
            else:
                kind = "portaudio"
            acc = kinds.setdefault(kind, [0.0, 0.0])
            acc[0] += (ns - ns0) / 1e9 / elapsed
            acc[1] += (vol - vol0 + invol - invol0) / elapsed
        return {"cpu": (c1 - self._c0) / elapsed,
                "threads": {k: {"cpu": v[0], "switches_per_s": v[1]} for k, v in kinds.items()}}


def _cpu_bare(x: np.ndarray) -> dict[str, Any]:
    import sounddevice as sd

    pos = 0

    def callback(out: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
        nonlocal pos
        n = min(frames, len(x) - pos)
        out[:n, 0] = x[pos : pos + n]
        out[n:] = 0.0
        pos += n

    meter = _CpuMeter()
    with sd.OutputStream(samplerate=48000, channels=1, dtype="float32", blocksize=BLOCK,
                         latency=0.1, callback=callback):
        time.sleep(0.5)
        meter.start()
        time.sleep(CPU_SECONDS - 1.0)
        return meter.stop()


async def _cpu_player(x: np.ndarray, sources: int = 1) -> dict[str, Any]:
    """`Player` playing ``x`` as ``sources`` back-to-back sources, all queued at once."""
    meter = _CpuMeter()
    async with Player(sample_rate=48000) as player, anyio.create_task_group() as tg:
        for part in np.array_split(x, sources):
            wav = wav_header(48000, 1, sample_format="f32le", frames=len(part)) + part.tobytes()
            tg.start_soon(player.play, wav)
            await anyio.lowlevel.checkpoint()  # queued in this order
        await anyio.sleep(0.5)
        meter.start()
        await anyio.sleep(CPU_SECONDS - 1.0)
        result = meter.stop()
    return result


def _cpu_one(system: str) -> None:
    """Child process: one measurement, printed as one JSON line (fractions of a core)."""
    frames = int(48000 * CPU_SECONDS)
    x = (0.3 * np.sin(np.arange(1, frames + 1) * 2 * np.pi * 300 / 48000)).astype(np.float32)
    if system == "bare":
        result = _cpu_bare(x)
    else:  # "player", or "sentences": `SENTENCES` sources back to back
        result = anyio.run(_cpu_player, x, 1 if system == "player" else SENTENCES)
    print(json.dumps(result))


def _busy_cores(count: int) -> list[subprocess.Popen[bytes]]:
    """Processes spinning on the last ``count`` CPUs this process may use (a loaded machine)."""
    cores = sorted(os.sched_getaffinity(0))[-count:]
    code = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", code, str(core)]) for core in cores]


def bench_cpu(*, load: int = 0) -> dict[str, Any]:
    """CPU while playing, Player against a bare stream (see the module docstring).

    Args:
        load: Cores kept busy by spinning processes (`_busy_cores`) during every measurement,
            both systems alike.
    """
    systems = (("bare_sounddevice", "bare"), ("player", "player"),
               ("player_back_to_back_sources", "sentences"))
    got: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in systems}
    busy = _busy_cores(load) if load else []
    try:
        if busy:
            time.sleep(0.2)  # let them reach their cores
        for _ in range(CPU_REPEATS):
            for name, arg in systems:
                proc = subprocess.run([sys.executable, __file__, "--cpu-one", arg],
                                      capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    return {"skipped": proc.stderr.strip().splitlines()[-1:]}
                got[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        for spinner in busy:
            spinner.kill()
            spinner.wait()
    out: dict[str, Any] = {}
    for name, runs in got.items():
        kinds = sorted({k for r in runs for k in r["threads"]})
        out[name] = {
            "median_pct_of_core": round(100.0 * statistics.median(r["cpu"] for r in runs), 2),
            "runs_pct": [round(100.0 * r["cpu"], 2) for r in runs],
            "threads_median_pct": {
                k: round(100.0 * statistics.median(
                    r["threads"].get(k, {}).get("cpu", 0.0) for r in runs), 3)
                for k in kinds},
            "threads_median_switches_per_s": {
                k: round(statistics.median(
                    r["threads"].get(k, {}).get("switches_per_s", 0.0) for r in runs), 1)
                for k in kinds},
        }
    out["player_minus_bare_pct"] = round(
        out["player"]["median_pct_of_core"] - out["bare_sounddevice"]["median_pct_of_core"], 2)
    out["goal_le_1.5_pct_met"] = out["player"]["median_pct_of_core"] <= 1.5
    if load:
        out["load"] = f"{load} process(es) spinning, one per core, during every measurement"
    return out


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--cpu-one":  # one CPU measurement (a subprocess)
        _cpu_one(sys.argv[2])
        return
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--device-only", action="store_true",
                      help="run the device section only and print it")
    only.add_argument("--cpu-only", action="store_true",
                      help="run the CPU sections only; keep the others of player.json")
    parser.add_argument("--write", action="store_true",
                        help="with --device-only: merge the section into player.json")
    parser.add_argument("--load", type=int, nargs="?", const=1, default=0, metavar="N",
                        help="also measure the CPU with N cores kept busy (default 1)")
    args = parser.parse_args()
    if args.device_only:
        device = bench_device()
        json.dump({"device": device}, sys.stdout, indent=2)
        print()
        if args.write:
            merged = json.loads((RESULTS / "player.json").read_text())
            merged["device"] = device
            (RESULTS / "player.json").write_text(json.dumps(merged, indent=2) + "\n")
        return
    results: dict[str, Any] = {}
    if args.cpu_only:  # keep the other sections of an earlier full run
        with contextlib.suppress(OSError, ValueError):
            results = json.loads((RESULTS / "player.json").read_text())
    else:
        results = {"callback": bench_callback(), "device": bench_device()}
    results["cpu_while_playing"] = bench_cpu()
    if args.load:
        results["cpu_while_playing_loaded"] = bench_cpu(load=args.load)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "player.json").write_text(json.dumps(results, indent=2) + "\n")
    json.dump(results, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
