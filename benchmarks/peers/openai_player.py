"""openai-python's own `LocalAudioPlayer` (openai.helpers), pointed at the local server.

* ``stream``: ``play_stream()`` fed the PCM body as it arrives (int16 arrays; no preroll: its
  callback waits up to 0.1 s on a queue inside the PortAudio thread and plays silence meanwhile);
* ``whole``: ``play(response)``, which reads the whole body, then opens the device.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import numpy as np
import numpy.typing as npt
import openai
from common import RunLog, Spec
from openai.helpers import LocalAudioPlayer


class _TimedResponse:
    """Duck-types the SDK's streamed response for ``play()``, timestamping the chunks."""

    def __init__(self, response: Any, log: RunLog) -> None:
        self._response = response
        self._log = log

    async def iter_bytes(self, chunk_size: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in self._response.iter_bytes(chunk_size):
            self._log.arrived(chunk)
            yield chunk


async def run(spec: Spec, log: RunLog, mode: str) -> None:
    """Play *spec*'s text as 24 kHz PCM with `LocalAudioPlayer` (*mode*: stream or whole)."""
    import sounddevice  # noqa: F401  (the SDK imports it lazily; load it before timing)

    client = openai.AsyncOpenAI(base_url=f"{spec.url}/v1", api_key="local", max_retries=0)
    player = LocalAudioPlayer()
    async with client:
        log.request()
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input=spec.text, response_format="pcm",
            extra_headers=spec.headers,
        ) as response:
            if mode == "whole":
                await player.play(_TimedResponse(response, log))  # type: ignore[arg-type]
                return

            async def blocks() -> AsyncGenerator[
                npt.NDArray[np.float32] | npt.NDArray[np.int16] | None, None
            ]:
                carry = b""
                async for chunk in response.iter_bytes():
                    log.arrived(chunk)
                    data = carry + chunk
                    usable = len(data) - len(data) % 2
                    carry = data[usable:]
                    if usable:
                        yield np.frombuffer(data[:usable], dtype="<i2")

            await player.play_stream(blocks())
