"""Speaker: CPU per second of speech, and how often the sentence tracker wakes; prints JSON.

Setup: a synthetic engine in this process (no HTTP, no decoding cost: it yields 48 kHz s16
PCM of tone bursts framed by silence at once), so what is measured is the speaker's own work
while it speaks: its source, the player (device output into a private PulseAudio null sink, or
the relay's Opus encoding for ``output="relay"``), the poller and the sentence tracker. CPU is
the process's CPU time (``time.process_time``: all threads, the PortAudio callback included)
over the whole ``say()``, divided by the seconds of audio spoken. The tracker's wake-ups are
counted by wrapping ``Speaker._track_once`` (it runs once per wake-up, plus once at each
utterance's end).

Configurations (the same text each run): ``device`` (the local device), ``relay`` (relay
only: no device; a `RelayHub` with one listener draining it), and ``device_fixed_poll``: the
device with the tracker looking every `TRACK_INTERVAL` (5 ms) whatever is due, as it did before
it learned to sleep until the next sentence boundary (the "before" of that change, measured in
the same run).

Run: ``.venv/bin/python benchmarks/bench_speaker_cpu.py [--reps 3] [--configs A,B] [--out PATH]``
(the device output needs PulseAudio: ``scripts/pulse start``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.audio import NullSink, ensure_pulse  # noqa: E402
from support.tonevoice import BytesAudio  # noqa: E402

from streamtts.engines import AudioStream, Engine  # noqa: E402
from streamtts.speaker import Speaker  # noqa: E402

RATE = 48000
#: Six sentences, ~12 s of speech with this engine: long enough that the start (device open,
#: first request) is a small part of the CPU measured.
TEXT = (
    "The weather is lovely today and the sky is clear. "
    "We should go for a walk in the park before lunch. "
    "Bring a jacket just in case it gets cold by the water. "
    "I will meet you at the gate next to the old bakery. "
    "Then we can decide where to eat and what to do after. "
    "See you soon, and do not forget the camera this time."
)


def speech(text: str) -> bytes:
    """Speech-like s16 PCM at 48 kHz: 0.1 s silence, a 120 ms tone burst per 4 characters
    with 30 ms gaps, 0.3 s silence (deterministic for a text)."""
    rng = np.random.default_rng(len(text))
    burst = int(0.12 * RATE)
    t = np.arange(burst) / RATE
    parts = [np.zeros(int(0.1 * RATE))]
    for _ in range(max(2, len(text) // 4)):
        f = rng.uniform(140.0, 320.0)
        parts += [0.3 * np.sin(2 * np.pi * f * t) * np.hanning(burst), np.zeros(int(0.03 * RATE))]
    parts.append(np.zeros(int(0.3 * RATE)))
    return (np.concatenate(parts) * 32767).astype("<i2").tobytes()


class ToneEngine(Engine):
    """Synthetic PCM for any text, made at once."""

    name = "tones"

    def stream(
        self,
        text: str,
        *,
        voice: str | None = None,
        format: str = "opus",
        speed: float | None = None,
        instructions: str | None = None,
        model: str | None = None,
    ) -> AbstractAsyncContextManager[AudioStream]:
        return self._stream(text)

    @asynccontextmanager
    async def _stream(self, text: str) -> AsyncIterator[AudioStream]:
        yield BytesAudio(speech(text), chunk=9600, pcm_rate=RATE)


async def run_once(config: str) -> dict[str, float]:
    output = "relay" if config == "relay" else "device"
    wakes = 0
    original = Speaker._track_once
    original_delay = Speaker._track_delay
    if config == "device_fixed_poll":
        from streamtts.speaker import TRACK_INTERVAL

        Speaker._track_delay = lambda self: TRACK_INTERVAL  # type: ignore[method-assign]

    def counted(self: Speaker) -> None:
        nonlocal wakes
        wakes += 1
        original(self)

    Speaker._track_once = counted  # type: ignore[method-assign]
    try:
        kwargs: dict[str, Any] = {"format": "pcm"}
        hub = None
        if output == "relay":
            from streamtts.relay import RelayHub, RelaySink

            hub = RelayHub()
            kwargs.update(relay=RelaySink(hub), output="relay")
        async with anyio.create_task_group() as tg:
            if hub is not None:
                listener = hub.listen()

                async def drain() -> None:
                    async for _ in listener:
                        pass

                tg.start_soon(drain)
            async with Speaker(ToneEngine(), **kwargs) as speaker:
                wakes = 0
                cpu0, wall0 = time.process_time(), time.monotonic()
                result = await speaker.say(TEXT)
                cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
                tracked = wakes
            if hub is not None:
                hub.close()
    finally:
        Speaker._track_once = original  # type: ignore[method-assign]
        Speaker._track_delay = original_delay  # type: ignore[method-assign]
    return {
        "speech_s": round(result.duration, 3),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 4),
        "cpu_percent_of_a_core": round(100.0 * cpu / result.duration, 2),
        "tracker_wakes_per_s": round(tracked / result.duration, 1),
        "underruns": result.underruns,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--configs", default="device_fixed_poll,device,relay")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    configs = args.configs.split(",")
    results: dict[str, Any] = {}
    runs: dict[str, list[dict[str, float]]] = {config: [] for config in configs}
    sink = None
    if any(c.startswith("device") for c in configs):
        ensure_pulse()
        sink = NullSink(rate=RATE, channels=1)
    try:
        for _ in range(args.reps):  # interleaved: a busy moment spreads over every configuration
            for config in configs:
                if sink is not None and config.startswith("device"):
                    with sink.route():
                        runs[config].append(anyio.run(run_once, config))
                else:
                    runs[config].append(anyio.run(run_once, config))
        for config in configs:
            results[config] = {
                "runs": runs[config],
                "median_cpu_percent_of_a_core": statistics.median(
                    r["cpu_percent_of_a_core"] for r in runs[config]
                ),
                "median_tracker_wakes_per_s": statistics.median(
                    r["tracker_wakes_per_s"] for r in runs[config]
                ),
            }
    finally:
        if sink is not None:
            sink.close()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
