"""Shared parts of the side-by-side systems: the run spec, arrival logging, a PyAudio-style writer.

Each system runs in its own process (``runner.py``), so its CPU time and peak memory are its own.
The parent passes a JSON spec; the system sends the request, plays the audio into the default
output (the parent routed it to a private null sink with ``PULSE_SINK``) and reports, through
`RunLog`, when the request was sent and when each body chunk arrived (``time.monotonic()``: one
clock for every process of the machine, so the parent lines it up with its recording).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

#: Every system plays at the rate the local server speaks PCM and WAV at (OpenAI's 24 kHz), into
#: a 24 kHz sink: no resampling anywhere on the way, so the recordings are comparable.
RATE = 24_000


@dataclass
class Spec:
    """What one run does (decoded from the parent's JSON)."""

    system: str
    url: str
    text: str
    headers: dict[str, str]
    out: str
    body: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spec:
        """The spec from its JSON object."""
        return cls(
            system=str(data["system"]),
            url=str(data["url"]),
            text=str(data["text"]),
            headers={str(k): str(v) for k, v in data["headers"].items()},
            out=str(data["out"]),
            body=str(data["body"]),
        )

    def request_json(self, fmt: str) -> dict[str, Any]:
        """The /v1/audio/speech body for *fmt*."""
        return {"model": "tts-1", "voice": "alloy", "input": self.text, "response_format": fmt}


@dataclass
class RunLog:
    """Times of the request and of every body chunk, and the body itself (for the parent)."""

    requested_at: float = 0.0
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    buffer: list[tuple[float, float]] = field(default_factory=list)  # system's own view, if any
    extra: dict[str, Any] = field(default_factory=dict)  # system-specific figures

    def request(self) -> None:
        """Mark the moment the request is sent."""
        self.requested_at = time.monotonic()

    def arrived(self, chunk: bytes) -> None:
        """Record one body chunk as it is received."""
        if chunk:
            self.arrivals.append((time.monotonic(), len(chunk)))
            self.chunks.append(chunk)

    async def wrap(self, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """Pass *chunks* through, recording each."""
        async for chunk in chunks:
            self.arrived(chunk)
            yield chunk


class BlockingWriter:
    """The playback thread of the forum recipes and of pipecat: blocking writes to the device.

    Audio is queued by the network side; a thread waits until ``preroll_bytes`` of the body have
    been received (or the body ended), opens a sounddevice stream (PortAudio's blocking API, as
    PyAudio's ``stream.write``) and writes each queued block as it comes. When the queue runs
    dry the thread just waits: the device underruns and plays silence until the next write.
    """

    def __init__(self, sd: Any, *, rate: int = RATE, preroll_bytes: int = 0) -> None:
        self._sd = sd
        self._rate = rate
        self._preroll = preroll_bytes
        self._received = 0
        self._ended = False
        self._ready = threading.Event()
        self._queue: queue.Queue[npt.NDArray[np.float32] | None] = queue.Queue()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def received(self, nbytes: int) -> None:
        """Count body bytes received (the preroll is counted in bytes, as the recipes do)."""
        self._received += nbytes
        if self._received >= self._preroll:
            self._ready.set()

    def put(self, block: npt.NDArray[np.float32]) -> None:
        """Queue mono float32 samples for the device."""
        self._queue.put(block)

    def end(self) -> None:
        """No more audio: play what is queued, then stop."""
        self._queue.put(None)
        self._ready.set()

    def join(self) -> None:
        """Wait until the thread has written everything and closed the stream."""
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            self._ready.wait()
            with self._sd.OutputStream(samplerate=self._rate, channels=1, dtype="float32") as out:
                while (block := self._queue.get()) is not None:
                    out.write(block.reshape(-1, 1))
        except BaseException as exc:  # reported by join()
            self.error = exc


def pcm16_blocks(carry: bytearray, chunk: bytes) -> npt.NDArray[np.float32]:
    """Whole s16le samples of *carry* + *chunk* as float32 (an odd byte stays in *carry*)."""
    carry += chunk
    usable = len(carry) - len(carry) % 2
    block = np.frombuffer(bytes(carry[:usable]), dtype="<i2").astype(np.float32) / 32768.0
    del carry[:usable]
    return block
