"""Speaker: first-sound latency and the audible gaps between sentences; prints JSON.

Setup: the local OpenAI-compatible server on 127.0.0.1 with an OpenAI-like voice — espeak-ng
speech with 0.1 s of silence before and 0.5 s after it (OpenAI pads every response so), Ogg Opus
in 1-second pages — behind network impairment: 300 ms to the first byte, then 3x real time. The
speaker plays into a private PulseAudio null sink whose monitor is recorded; the gaps are the
silences (>= 100 ms, below -50 dBFS; also reported below -60 dBFS, the trimmer's own "sound"
level, which keeps soft decays as speech) between the first and the last sound of the recording,
so they are what a listener hears, whatever caused them (padding, late requests, underruns).

Configurations (the same text each run):

* ``serial_untrimmed``: one request at a time, each after the previous sentence has been heard,
  responses played as they come (what the other libraries do: no trimming, no pause added);
* ``in_flight_2_trimmed`` / ``in_flight_3_trimmed``: ``max_in_flight`` 2 / 3, silence trimmed,
  a 150 ms pause between sentences (the defaults, apart from ``max_in_flight``).

Run: ``.venv/bin/python benchmarks/bench_speaker.py [--reps 2] [--plot PATH] [--out PATH]``
(needs PulseAudio: ``scripts/pulse start``).
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
from support.loopback import serve_asgi  # noqa: E402
from support.tonevoice import BytesAudio  # noqa: E402

from streamtts.engines import AudioStream, Engine, EspeakEngine, OpenAIEngine  # noqa: E402
from streamtts.events import SentenceStarted  # noqa: E402
from streamtts.opus import OggOpusEncoder  # noqa: E402
from streamtts.server import Impairment, create_app  # noqa: E402
from streamtts.speaker import Speaker  # noqa: E402
from streamtts.trim import silence_runs  # noqa: E402

RATE = 48000
VOICE_RATE = 24000
#: OpenAI-like padding of each response (seconds): a little before the speech, ~0.5 s after it.
LEAD_SILENCE = 0.1
TAIL_SILENCE = 0.5
#: OpenAI streams Ogg Opus in pages of about one second.
PAGE_MS = 1000.0
#: The link: time to the first byte and delivery rate in multiples of real time.
FIRST_BYTE_DELAY = 0.3
REALTIME = 3.0
#: Silences at least this long between the first and last sound count as gaps between
#: sentences (no sentence of TEXT has a pause that long inside it: no commas).
MIN_GAP = 0.1

TEXT = (
    "The weather is lovely today. "
    "We should go for a walk in the park before lunch. "
    "Bring a jacket just in case. "
    "I will meet you at the gate. "
    "Then we can decide where to eat. "
    "See you soon."
)

CONFIGS: dict[str, dict[str, Any]] = {
    "serial_untrimmed": {"max_in_flight": 1, "trim": False, "pause": 0.0},
    "in_flight_2_trimmed": {"max_in_flight": 2, "trim": True, "pause": 0.15},
    "in_flight_3_trimmed": {"max_in_flight": 3, "trim": True, "pause": 0.15},
}


class OpenAILikeVoice(Engine):
    """espeak-ng speech padded with silence like OpenAI's responses, Ogg Opus in 1 s pages."""

    name = "openai-like"

    def __init__(self) -> None:
        self._espeak = EspeakEngine(sample_rate=VOICE_RATE)

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
        return self._stream(text, voice)

    @asynccontextmanager
    async def _stream(self, text: str, voice: str | None) -> AsyncIterator[AudioStream]:
        pcm = b""
        async with self._espeak.stream(text, voice=voice, format="pcm") as audio:
            async for chunk in audio.aiter_bytes():
                pcm += chunk
        speech = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
        padded = np.concatenate(
            [
                np.zeros(round(LEAD_SILENCE * VOICE_RATE), np.float32),
                speech,
                np.zeros(round(TAIL_SILENCE * VOICE_RATE), np.float32),
            ]
        ).reshape(-1, 1)

        def encode() -> bytes:
            encoder = OggOpusEncoder(VOICE_RATE, 1, page_ms=PAGE_MS)
            return encoder.encode(padded) + encoder.finish()

        yield BytesAudio(await anyio.to_thread.run_sync(encode), chunk=4096)


def gaps_in(recording: np.ndarray, threshold_db: float = -50.0) -> list[float]:
    """Silences between sentences in a recording, in seconds (samples below ``threshold_db``)."""
    loud = np.flatnonzero(np.abs(recording[:, 0]) > 10.0 ** (threshold_db / 20.0))
    if not loud.size:
        return []
    speech = recording[loud[0] : loud[-1] + 1]
    return [(e - s) / RATE for s, e in silence_runs(speech, RATE, threshold_db, MIN_GAP)]


async def run_once(url: str, config: dict[str, Any]) -> dict[str, Any]:
    sink = NullSink(rate=RATE)
    try:
        with sink.route(), sink.record() as recorder:
            async with (
                OpenAIEngine(base_url=url, api_key="local", max_retries=0) as engine,
                Speaker(engine, **config) as speaker,
            ):
                events = speaker.events(maxlen=1024)
                result = await speaker.say(TEXT)
                underflows = speaker.player.stats().device_underflows
                await anyio.sleep(0.2)  # let the device drain before closing
                seen = events.drain()
            recording = recorder.stop()
    finally:
        sink.close()
    starts = [e.time - result.requested_at for e in seen if isinstance(e, SentenceStarted)]
    gaps = gaps_in(recording)
    assert result.first_sound is not None
    assert result.finished is not None
    assert result.first_byte is not None
    return {
        "first_sound_s": round(result.first_sound - result.requested_at, 4),
        "first_byte_s": round(result.first_byte - result.requested_at, 4),
        "first_sound_after_first_byte_s": round(result.first_sound - result.first_byte, 4),
        "total_s": round(result.finished - result.requested_at, 4),
        "audio_s": round(result.duration, 4),
        "gaps_s": [round(g, 4) for g in gaps],
        "gaps_60db_s": [round(g, 4) for g in gaps_in(recording, -60.0)],
        "sentence_starts_s": [round(t, 4) for t in starts],
        "underruns": result.underruns,
        "underrun_ms": round(result.underrun_ms, 1),
        "device_underflows": underflows,
    }


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    gaps = [g for r in runs for g in r["gaps_s"]]
    g60 = [g for r in runs for g in r["gaps_60db_s"]]
    return {
        "first_sound_s_median": round(statistics.median(r["first_sound_s"] for r in runs), 4),
        "first_byte_s_median": round(statistics.median(r["first_byte_s"] for r in runs), 4),
        # Issue 5's figure: the first sound within the first sentence's time to first byte
        # + 50 ms, i.e. at most 50 ms after the first byte.
        "first_sound_after_first_byte_s_median": round(
            statistics.median(r["first_sound_after_first_byte_s"] for r in runs), 4),
        "total_s_median": round(statistics.median(r["total_s"] for r in runs), 4),
        "gap_s_median": round(statistics.median(gaps), 4) if gaps else None,
        "gap_s_max": round(max(gaps), 4) if gaps else None,
        "gap_60db_s_median": round(statistics.median(g60), 4) if g60 else None,
        "gaps": len(gaps),
        "underruns": sum(r["underruns"] for r in runs),
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["configs"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    firsts = [[r["first_sound_s"] for r in results["configs"][n]["runs"]] for n in names]
    ax1.boxplot(firsts, tick_labels=names)
    ax1.set_ylabel("first sound after say() (s)")
    ax1.set_title("First-sound latency")
    gaps = [[g for r in results["configs"][n]["runs"] for g in r["gaps_s"]] for n in names]
    ax2.boxplot(gaps, tick_labels=names)
    ax2.axhline(0.15, color="grey", linestyle=":", label="configured pause (trimmed runs)")
    ax2.set_ylabel("audible gap between sentences (s)")
    ax2.set_title("Gaps between sentences")
    ax2.legend(loc="upper right", fontsize=8)
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(
        f"Speaker, OpenAI-like server: {FIRST_BYTE_DELAY * 1000:.0f} ms to first byte, "
        f"{REALTIME:g}x real time, {PAGE_MS / 1000:g} s pages, {TAIL_SILENCE} s tail silence"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks/results/speaker.png")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/speaker.json")
    args = parser.parse_args()
    ensure_pulse()
    impairment = Impairment(first_byte_delay=FIRST_BYTE_DELAY, realtime=REALTIME)
    out: dict[str, Any] = {
        "setup": {
            "first_byte_delay_s": FIRST_BYTE_DELAY,
            "realtime": REALTIME,
            "page_s": PAGE_MS / 1000,
            "lead_silence_s": LEAD_SILENCE,
            "tail_silence_s": TAIL_SILENCE,
            "sentences": 6,
            "reps": args.reps,
        },
        "configs": {},
    }
    started = time.monotonic()
    with serve_asgi(create_app(OpenAILikeVoice(), impairment=impairment)) as base:
        for name, config in CONFIGS.items():
            runs = [anyio.run(run_once, base + "/v1", config) for _ in range(args.reps)]
            out["configs"][name] = {"config": config, "summary": summary(runs), "runs": runs}
    out["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(out, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    plot(out, args.plot)


if __name__ == "__main__":
    main()
