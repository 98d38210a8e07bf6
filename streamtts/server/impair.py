"""Network impairment: pace a response body like a slow, jittery, stalling or dropping link.

How it works: `impair()` wraps the body's async iterator. Each source chunk is cut into writes of
at most ``chunk_size`` bytes, and each write gets a departure time, the latest of:

* the first-byte time (start + ``first_byte_delay``; a slower source is not delayed further),
* the byte-rate schedule ``t0 + bytes_through_this_write / rate``,
* the real-time schedule ``t0 + audio_seconds_through_this_write / realtime``, where an
  `AudioClock` tells how much audio the bytes so far hold (raw PCM: by size; Ogg: the granule of
  the last complete page; WAV: by size after the header),
* the previous departure (writes never overtake each other),

plus a uniform random ``jitter``. The first write departing at or after ``stall_at`` seconds
(counted from the first byte) and every write after it are pushed back by ``stall_for``: a link
that froze and then resumed. The body is cut after ``disconnect_after`` bytes; the caller then
drops the connection (see `Impairment.disconnects`). The clock and the sleep are injectable, so
the schedule is tested exactly without waiting.
"""

from __future__ import annotations

import dataclasses
import math
import random
import struct
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import anyio

__all__ = [
    "HEADER_PREFIX",
    "AudioClock",
    "Impairment",
    "OggClock",
    "PcmClock",
    "WavClock",
    "audio_clock",
    "impair",
]

#: Request headers that override the server's impairment for one request.
HEADER_PREFIX = "x-impair-"

#: The longest Ogg page duration the server makes (seconds): past 2 s a page is no longer a
#: latency knob but a broken stream (RFC 7845 recommends pages of at most 1 s).
MAX_PAGE_DURATION = 2.0


@dataclass(frozen=True, slots=True)
class Impairment:
    """How the server degrades its responses (all off by default).

    Attributes:
        first_byte_delay: Seconds before the first body byte (and the headers) are sent.
        rate: Throughput cap in bytes per second.
        realtime: Throughput cap as a multiple of the audio's real time (1.0: the audio arrives
            exactly as fast as it plays; 0.8: a link too slow to keep up).
        chunk_size: Largest write in bytes (1: every byte alone).
        jitter: Each write is delayed by a uniform random 0…jitter seconds (order kept).
        stall_at: Seconds after the first byte when the link freezes…
        stall_for: …for this many seconds.
        disconnect_after: Drop the connection after this many body bytes.
        page_duration: Seconds of audio per Ogg page (0: one packet per page, up to 2 s; None:
            the engine's default). Applies to Opus from the embedded engine.
        seed: Seed of the jitter's random numbers (None: not reproducible).
    """

    first_byte_delay: float = 0.0
    rate: float | None = None
    realtime: float | None = None
    chunk_size: int | None = None
    jitter: float = 0.0
    stall_at: float | None = None
    stall_for: float = 0.0
    disconnect_after: int | None = None
    page_duration: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or f.name == "seed":
                continue
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0, not {value!r}")
        for name in ("rate", "realtime", "chunk_size"):
            if getattr(self, name) == 0:
                raise ValueError(f"{name} must be > 0 (omit it for no limit)")
        if self.page_duration is not None and self.page_duration > MAX_PAGE_DURATION:
            raise ValueError(f"page_duration must be at most {MAX_PAGE_DURATION} s")

    @property
    def paces(self) -> bool:
        """True if the body is paced or cut at all (page duration aside)."""
        return (
            self.first_byte_delay > 0
            or self.rate is not None
            or self.realtime is not None
            or self.chunk_size is not None
            or self.jitter > 0
            or (self.stall_at is not None and self.stall_for > 0)
            or self.disconnect_after is not None
        )

    def disconnects(self, sent: int) -> bool:
        """True if, having sent *sent* bytes, the connection must now be dropped."""
        return self.disconnect_after is not None and sent >= self.disconnect_after

    def with_headers(self, headers: Mapping[str, str]) -> Impairment:
        """This impairment overridden by ``X-Impair-*`` request headers.

        ``X-Impair-First-Byte-Delay: 0.3`` sets ``first_byte_delay``; the value ``none`` clears
        a knob. Names are the attributes with ``-`` for ``_``.

        Raises:
            ValueError: Unknown knob or bad value (the message names the header).
        """
        names = {f.name: f for f in dataclasses.fields(self)}
        changes: dict[str, object] = {}
        for key, raw in headers.items():
            key = key.lower()
            if not key.startswith(HEADER_PREFIX):
                continue
            name = key[len(HEADER_PREFIX) :].replace("-", "_")
            header = f"X-Impair-{key[len(HEADER_PREFIX) :].title()}"
            if name not in names:
                known = ", ".join(f"X-Impair-{n.replace('_', '-').title()}" for n in names)
                raise ValueError(f"unknown impairment header {header}: use one of {known}")
            text = raw.strip().lower()
            if text in ("", "none", "off"):
                default = names[name].default
                changes[name] = default
                continue
            integral = name in ("chunk_size", "disconnect_after", "seed")
            try:
                changes[name] = int(text) if integral else float(text)
            except ValueError:
                kind = "an integer" if integral else "a number"
                raise ValueError(f"{header} must be {kind}, not {raw!r}") from None
        try:
            return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"bad X-Impair-* header: {exc}") from None


# --- how much audio the bytes so far hold -------------------------------------------------------


class AudioClock(Protocol):
    """Sans-I/O: fed the body's bytes, tells how many seconds of audio they complete."""

    def feed(self, data: bytes) -> float:
        """Consume *data*; return the seconds of audio complete in all bytes fed so far."""


class PcmClock:
    """Raw PCM: audio time is proportional to size."""

    def __init__(self, bytes_per_second: float, header_bytes: int = 0) -> None:
        self._rate = bytes_per_second
        self._header = header_bytes
        self._total = 0

    def feed(self, data: bytes) -> float:
        self._total += len(data)
        return max(0, self._total - self._header) / self._rate


class WavClock:
    """WAV: time is proportional to the bytes after the ``data`` chunk header."""

    def __init__(self, bytes_per_second: float) -> None:
        self._rate = bytes_per_second
        self._head = b""
        self._data_start: int | None = None
        self._total = 0

    def feed(self, data: bytes) -> float:
        self._total += len(data)
        if self._data_start is None:
            self._head += data
            at = self._head.find(b"data", 12)
            if at < 0 or len(self._head) < at + 8:
                return 0.0
            self._data_start = at + 8
            self._head = b""
        return max(0, self._total - self._data_start) / self._rate


class OggClock:
    """Ogg: the granule (48 kHz samples) of the last page completed, by a minimal page walk."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._granule = 0

    def feed(self, data: bytes) -> float:
        self._buffer += data
        while len(self._buffer) >= 27:
            if self._buffer[:4] != b"OggS":
                at = self._buffer.find(b"OggS", 1)
                del self._buffer[: at if at > 0 else len(self._buffer) - 3]
                continue
            count = self._buffer[26]
            if len(self._buffer) < 27 + count:
                break
            size = 27 + count + sum(self._buffer[27 : 27 + count])
            if len(self._buffer) < size:
                break
            (granule,) = struct.unpack_from("<q", self._buffer, 6)
            if granule >= 0:
                self._granule = max(self._granule, granule)
            del self._buffer[:size]
        return self._granule / 48_000


def audio_clock(fmt: str, *, sample_rate: int = 24_000, channels: int = 1) -> AudioClock:
    """The `AudioClock` for a container (``"ogg"``, ``"wav"``, ``"pcm"`` as s16le)."""
    if fmt == "ogg":
        return OggClock()
    if fmt == "wav":
        return WavClock(sample_rate * channels * 2)
    return PcmClock(sample_rate * channels * 2)


# --- the pacer ----------------------------------------------------------------------------------


async def impair(
    body: AsyncIterable[bytes],
    impairment: Impairment,
    *,
    clock: AudioClock | None = None,
    now: Callable[[], float] = anyio.current_time,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
) -> AsyncGenerator[bytes, None]:
    """Yield *body*'s bytes paced and cut as *impairment* says (see the module docstring).

    Args:
        body: The response body.
        impairment: The knobs.
        clock: Needed for ``realtime`` pacing: how much audio the bytes hold.
        now: The clock, in seconds.
        sleep: Waits that many seconds.

    Raises:
        ValueError: ``realtime`` is set without a *clock*.
    """
    imp = impairment
    if imp.realtime is not None and clock is None:
        raise ValueError("realtime pacing needs an AudioClock")
    rng = random.Random(imp.seed)
    start = now()
    t0: float | None = None
    sent = 0
    last = -math.inf
    shift = 0.0
    stalled = imp.stall_at is None or imp.stall_for <= 0
    limit = imp.disconnect_after
    async for chunk in body:
        size = imp.chunk_size or len(chunk) or 1
        for offset in range(0, len(chunk), size):
            piece = chunk[offset : offset + size]
            if limit is not None:
                piece = piece[: limit - sent]
                if not piece:
                    return
            if t0 is None:
                t0 = max(now(), start + imp.first_byte_delay)
            due = t0
            if imp.rate is not None:
                due = max(due, t0 + (sent + len(piece)) / imp.rate)
            if clock is not None:
                audio_end = clock.feed(piece)
                if imp.realtime is not None:
                    due = max(due, t0 + audio_end / imp.realtime)
            due += shift
            if imp.jitter > 0:
                due += rng.uniform(0.0, imp.jitter)
            due = max(due, last)
            if not stalled and imp.stall_at is not None and max(due, now()) >= t0 + imp.stall_at:
                stalled = True
                shift += imp.stall_for
                due += imp.stall_for
            wait = due - now()
            if wait > 0:
                await sleep(wait)
            last = max(due, now())
            sent += len(piece)
            yield piece
