"""PyAV (FFmpeg) decoding the Ogg Opus body in a thread, as livekit-agents' AudioStreamDecoder.

The body is written into a thread-safe byte buffer that FFmpeg reads through a blocking
file-like ``read()``; ``av.open()`` with default options, ``container.decode()``, an
``av.AudioResampler`` to 24 kHz mono float. FFmpeg's Ogg demuxer hands out packets only once
their page is complete. Decoded frames go to the device as they come (no preroll) through a
PyAudio-style blocking writer thread.
"""

from __future__ import annotations

import threading

import anyio.to_thread
import av
import httpx
import sounddevice as sd
from common import RATE, BlockingWriter, RunLog, Spec


class _StreamBuffer:
    """Bytes written by the network side, read (blocking) by FFmpeg's I/O callback."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._eof = False
        self._cond = threading.Condition()

    def write(self, data: bytes) -> None:
        with self._cond:
            self._data += data
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._data and not self._eof:
                self._cond.wait()
            n = len(self._data) if size < 0 else min(size, len(self._data))
            out = bytes(self._data[:n])
            del self._data[:n]
            return out


def _decode(buf: _StreamBuffer, writer: BlockingWriter) -> None:
    try:
        with av.open(buf, mode="r") as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    writer.put(out.to_ndarray().reshape(-1).copy())
            for out in resampler.resample(None):
                writer.put(out.to_ndarray().reshape(-1).copy())
    finally:
        writer.end()


async def run(spec: Spec, log: RunLog) -> None:
    """Play *spec*'s text as Ogg Opus decoded by PyAV."""
    writer = BlockingWriter(sd)
    buf = _StreamBuffer()
    decoder = threading.Thread(target=_decode, args=(buf, writer), daemon=True)
    decoder.start()
    async with httpx.AsyncClient(timeout=60.0) as client:
        log.request()
        async with client.stream(
            "POST", f"{spec.url}/v1/audio/speech", json=spec.request_json("opus"),
            headers=spec.headers,
        ) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                log.arrived(chunk)
                buf.write(chunk)
                writer.received(len(chunk))
    buf.end()
    await anyio.to_thread.run_sync(decoder.join)
    await anyio.to_thread.run_sync(writer.join)
