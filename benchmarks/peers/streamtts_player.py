"""streamtts: `Player` playing the httpx streamed response as it arrives (adaptive start).

The player is entered before the request (that only warms PortAudio up, as importing
sounddevice does for the others); the device opens when the first audio is decoded, at the
stream's rate (Opus: 48 kHz, the sound server resamples into the 24 kHz sink; PCM/WAV: 24 kHz).
The duration hint is the one `Speaker` passes: characters / 15 per second.
"""

from __future__ import annotations

import time

import httpx
from common import RunLog, Spec

from streamtts._backends import load_opuslib, load_sounddevice
from streamtts.player import Player

# Load the native libraries now, as the other systems import theirs before the clock starts
# (an application has them loaded after its first utterance).
load_opuslib()
load_sounddevice()

#: `Speaker`'s default speaking-rate estimate (streamtts.speaker.DEFAULT_CHARS_PER_SECOND).
CHARS_PER_SECOND = 15.0

#: Player stats sampled this often (the player's own view of its buffer; the same period as
#: bench_compare's buffer-level curves).
SAMPLE_EVERY = 0.04


async def run(spec: Spec, log: RunLog, variant: str) -> None:
    """Play *spec*'s text as *variant* with `Player`.

    *variant* is ``opus``, ``wav`` or ``pcm`` (default settings), or ``opus-low``: Opus with
    ``device_latency="low"`` instead of the default 100 ms.
    """
    import anyio

    fmt, _, low = variant.partition("-")
    player_ = Player(device_latency="low") if low else Player()
    async with httpx.AsyncClient(timeout=60.0) as client, player_ as player:
        done = anyio.Event()

        async def sample() -> None:
            while not done.is_set():
                stats = player.stats()
                log.buffer.append((time.monotonic(), stats.buffered_ms / 1000.0))
                await anyio.sleep(SAMPLE_EVERY)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample)
            log.request()
            request = client.build_request(
                "POST", f"{spec.url}/v1/audio/speech", json=spec.request_json(fmt),
                headers=spec.headers,
            )
            response = await client.send(request, stream=True)
            try:
                response.raise_for_status()
                result = await player.play(
                    log.wrap(response.aiter_bytes()),
                    format="ogg" if fmt == "opus" else fmt,
                    expected_duration=len(spec.text) / CHARS_PER_SECOND,
                )
                log.extra["player_first_sound_latency_s"] = result.first_sound_latency
                log.extra["player_underruns"] = result.underruns
                log.extra["player_underrun_ms"] = result.underrun_ms
                log.extra["device_underflows"] = player.stats().device_underflows
            finally:
                await response.aclose()
                done.set()
