"""The naive recipes from the field: a fixed byte preroll, then a playback thread.

* ``wav_preroll_150k``: the well-known forum recipe: stream WAV, wait for 150 000 bytes
  (3.1 s of 24 kHz s16), then a thread writes the rest as it comes;
* ``pcm_preroll_0.5s``: pipecat's OpenAI TTS: PCM, a fixed 0.5 s download preroll, then
  blocking writes.

Neither re-buffers after an underrun: the device plays silence until the next write.
"""

from __future__ import annotations

import anyio.to_thread
import httpx
import sounddevice as sd
from common import RATE, BlockingWriter, RunLog, Spec, pcm16_blocks

#: 150 000 bytes: the forum recipe's constant.
WAV_PREROLL_BYTES = 150_000
#: pipecat's 0.5 s of 24 kHz s16 mono.
PCM_PREROLL_BYTES = RATE * 2 // 2


async def run(spec: Spec, log: RunLog, fmt: str) -> None:
    """Play *spec*'s text as *fmt* (``wav`` or ``pcm``) after the recipe's fixed preroll."""
    preroll = WAV_PREROLL_BYTES if fmt == "wav" else PCM_PREROLL_BYTES
    writer = BlockingWriter(sd, preroll_bytes=preroll)
    carry = bytearray()
    header = fmt == "wav"
    head = b""
    async with httpx.AsyncClient(timeout=60.0) as client:
        log.request()
        async with client.stream(
            "POST", f"{spec.url}/v1/audio/speech", json=spec.request_json(fmt),
            headers=spec.headers,
        ) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                log.arrived(chunk)
                nbytes = len(chunk)
                if header:  # skip the RIFF header up to the "data" chunk's payload
                    head += chunk
                    at = head.find(b"data", 12)
                    if at < 0 or len(head) < at + 8:
                        writer.received(nbytes)
                        continue
                    header = False
                    chunk = head[at + 8 :]
                block = pcm16_blocks(carry, chunk)
                if block.size:
                    writer.put(block)
                writer.received(nbytes)
    writer.end()
    await anyio.to_thread.run_sync(writer.join)
