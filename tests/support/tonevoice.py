"""A deterministic synthetic voice for speaker tests, and the relay's packets decoded back.

`ToneEngine` serves, for any text, the same Ogg Opus every time (`tone_speech`: syllable-like
tone bursts framed by OpenAI-like leading and trailing silence), so recordings and relayed audio
can be compared with each sentence's own decode. Put it behind the local server
(``create_app(ToneEngine())``) to go through real HTTP.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
import anyio.lowlevel
import numpy as np

from streamtts.engines import AudioStream, Engine
from streamtts.ogg import OggWriter
from streamtts.opus import OggOpusDecoder, OggOpusEncoder, OpusTags
from streamtts.relay import RelayHead, RelayPacket
from streamtts.speaker import EDGE_KEEP
from streamtts.trim import SilenceTrimmer

__all__ = [
    "VOICE_RATE",
    "BytesAudio",
    "ToneEngine",
    "decode_relayed",
    "spoken_reference",
    "tone_opus",
    "tone_speech",
]

VOICE_RATE = 24000


def tone_speech(text: str) -> np.ndarray:
    """A speech-like signal for ``text``: 0.25 s of silence, one 120 ms tone burst (Hann
    envelope, pitch from the text) per 4 characters with 30 ms gaps, 0.6 s of silence."""
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    burst = int(0.12 * VOICE_RATE)
    t = np.arange(burst) / VOICE_RATE
    parts = [np.zeros(int(0.25 * VOICE_RATE))]
    for _ in range(max(2, len(text) // 4)):
        f = rng.uniform(140.0, 320.0)
        wave = 0.25 * np.sin(2 * np.pi * f * t) + 0.1 * np.sin(2 * np.pi * 3 * f * t)
        parts += [wave * np.hanning(burst), np.zeros(int(0.03 * VOICE_RATE))]
    parts.append(np.zeros(int(0.6 * VOICE_RATE)))
    return np.concatenate(parts).astype(np.float32).reshape(-1, 1)


@functools.cache
def tone_opus(text: str) -> bytes:
    """`tone_speech` as Ogg Opus (the same bytes for the same text)."""
    encoder = OggOpusEncoder(VOICE_RATE, 1, serial=1)
    return encoder.encode(tone_speech(text)) + encoder.finish()


def spoken_reference(text: str, rate: int = 48000) -> np.ndarray:
    """What a `Speaker` makes of one sentence of this voice: its Opus decoded at ``rate`` and
    trimmed as the speaker trims (``EDGE_KEEP`` kept at each edge), mono float32."""
    decoder = OggOpusDecoder(sample_rate=rate)
    trimmer = SilenceTrimmer(rate, 1, pause=2 * EDGE_KEEP, lead_keep=EDGE_KEEP)
    parts = [trimmer.process(b) for b in (*decoder.feed(tone_opus(text)), *decoder.close())]
    parts.append(trimmer.flush())
    return np.concatenate(parts)[:, 0]


class BytesAudio(AudioStream):
    """An engine response served from bytes in memory, ``chunk`` bytes per read.

    Args:
        data: The whole body.
        chunk: Bytes per read.
        pcm_rate: For raw s16le PCM: its rate (the body is then ``format="pcm"``); None: Ogg Opus.
    """

    def __init__(self, data: bytes, *, chunk: int = 1024, pcm_rate: int | None = None) -> None:
        super().__init__()
        if pcm_rate is None:
            self.format, self.content_type = "ogg", "audio/ogg"
        else:
            self.format, self.content_type = "pcm", "audio/pcm"
            self.sample_rate, self.channels, self.sample_format = pcm_rate, 1, "s16le"
        self._data = data
        self._chunk = chunk
        self._at = 0

    async def _next(self) -> bytes | None:
        await anyio.lowlevel.checkpoint()
        chunk = self._data[self._at : self._at + self._chunk]
        self._at += len(chunk)
        if not chunk:
            return None
        self._mark_chunk(chunk)
        return chunk

    async def aclose(self) -> None:
        pass


class ToneEngine(Engine):
    """An engine whose audio for a text is always the same (`tone_opus` by default).

    Args:
        opus: Makes the Ogg Opus for a text (called in a worker thread; the same bytes for the
            same text).
    """

    name = "tones"

    def __init__(self, opus: Callable[[str], bytes] = tone_opus) -> None:
        self._opus = opus

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
        data = await anyio.to_thread.run_sync(self._opus, text)
        yield BytesAudio(data)


def decode_relayed(head: RelayHead, packets: list[RelayPacket], rate: int = 48000) -> np.ndarray:
    """An utterance's relayed packets re-muxed as Ogg Opus and decoded with libopus, as a
    listener hears it (pre-skip and end trim applied): float32 ``(frames, channels)``."""
    writer = OggWriter(1)
    writer.add(head.head.to_bytes(), 0)
    data = writer.page()
    writer.add(OpusTags("relay", ()).to_bytes(), 0)
    data += writer.page()
    for p in packets:
        writer.add(p.data, p.end, eos=p.final)
        data += writer.page(eos=p.final)
    decoder = OggOpusDecoder(rate)
    blocks = decoder.feed(data) + decoder.close()
    if not blocks:
        return np.zeros((0, head.head.channels), np.float32)
    return np.concatenate(blocks)
