"""The engine interface: text and options in, async audio bytes in a declared format out.

Every engine (the OpenAI-compatible HTTP client, the embedded espeak-ng) is used the same way::

    async with engine.stream("Hello", voice="alloy", format="opus") as audio:
        print(audio.format, audio.sample_rate)      # "ogg", None (the OpusHead will say)
        async for chunk in audio.aiter_bytes():     # bytes as they arrive
            ...

Leaving the ``async with`` block (normally, by an exception or by cancellation) closes the
response or stops the synthesis; nothing is leaked.
"""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from types import TracebackType

from ..errors import UsageError

__all__ = [
    "REQUEST_FORMATS",
    "UNSUPPORTED_FORMATS",
    "AudioStream",
    "Engine",
    "check_request_format",
    "estimate_duration",
    "response_format_of",
]

#: The ``response_format`` values streamtts can play (OpenAI's names).
REQUEST_FORMATS: tuple[str, ...] = ("opus", "wav", "pcm")
#: OpenAI formats that exist but that nothing here decodes.
UNSUPPORTED_FORMATS: tuple[str, ...] = ("mp3", "aac", "flac")

#: Speaking rate used to estimate a text's duration: ~15 characters per second is the rate of
#: conversational English at 1.0x (about 160 words per minute, 5.5 characters per word with spaces).
_CHARS_PER_SECOND = 15.0


def check_request_format(fmt: str) -> str:
    """Return the OpenAI ``response_format`` name *fmt* if streamtts can play it.

    Raises:
        UsageError: For mp3/aac/flac (not supported here) and unknown names.
    """
    name = fmt.strip().lower()
    if name in REQUEST_FORMATS:
        return name
    if name in UNSUPPORTED_FORMATS:
        raise UsageError(
            f"format {fmt!r} is not supported: use one of {', '.join(REQUEST_FORMATS)}"
        )
    raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(REQUEST_FORMATS)}")


def response_format_of(request_format: str) -> str:
    """The container name (as in `streamtts.formats`) of an OpenAI ``response_format``."""
    return {"opus": "ogg", "wav": "wav", "pcm": "pcm"}[check_request_format(request_format)]


def estimate_duration(text: str, speed: float | None = None) -> float:
    """A rough estimate of how long *text* takes to speak, in seconds (for start policies)."""
    return len(text.strip()) / _CHARS_PER_SECOND / (speed or 1.0)


class AudioStream(abc.ABC):
    """One response of an engine: audio bytes in a declared format, with timing marks.

    A new engine subclasses it: set `format`/`content_type` (and the PCM attributes), implement
    `_next` (the next chunk, calling `_mark_chunk` on it, or None at the end) and `aclose`.

    Attributes:
        format: The container: ``"ogg"`` (Ogg Opus), ``"wav"`` or ``"pcm"`` (raw), taken from the
            response itself (Content-Type, then the first bytes), never assumed.
        content_type: The media type as declared (``"audio/ogg"``…).
        sample_rate: The sample rate when known before decoding (always for ``"pcm"``).
        channels: The channel count when known before decoding (always for ``"pcm"``).
        sample_format: ``"s16le"`` for ``"pcm"``; None when the stream's header says it.
        started: ``time.monotonic()`` when the request began.
        request_sent: When the request was completely sent (or the synthesis was started).
        headers_received: When the response headers arrived (or the synthesis was ready).
        first_byte: When the first audio byte arrived (None until then).
        finished: When the last byte arrived (None until the end).
        bytes_received: Audio bytes received so far.
    """

    format: str
    content_type: str
    sample_rate: int | None = None
    channels: int | None = None
    sample_format: str | None = None

    def __init__(self) -> None:
        self.started: float = time.monotonic()
        self.request_sent: float | None = None
        self.headers_received: float | None = None
        self.first_byte: float | None = None
        self.finished: float | None = None
        self.bytes_received: int = 0
        self._iterated = False

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Iterate over the audio bytes as they arrive (may be called only once).

        The iterator is a plain object, not an async generator: leaving a loop over it early
        needs no finalization (the stream is closed by leaving the ``async with`` block).

        Raises:
            UsageError: When called a second time.
            TransportError: From the network (the bytes before the failure were yielded).
        """
        if self._iterated:
            raise UsageError("the audio stream can be iterated only once")
        self._iterated = True
        return _Chunks(self)

    @abc.abstractmethod
    async def _next(self) -> bytes | None:
        """The next non-empty chunk, or None at the end; implementations set the marks."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the response / stop the synthesis (idempotent)."""

    def _mark_chunk(self, chunk: bytes) -> None:
        if self.first_byte is None:
            self.first_byte = time.monotonic()
        self.bytes_received += len(chunk)

    def timings(self) -> dict[str, float | None]:
        """The timing marks in seconds since `started` (None for marks not reached)."""

        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - self.started, 6)

        return {
            "request_sent": rel(self.request_sent),
            "headers_received": rel(self.headers_received),
            "first_byte": rel(self.first_byte),
            "finished": rel(self.finished),
        }


class _Chunks:
    """The async iterator `AudioStream.aiter_bytes` returns."""

    def __init__(self, audio: AudioStream) -> None:
        self._audio = audio

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._audio._next()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class Engine(abc.ABC):
    """A text-to-speech engine: `stream()` returns an async context manager of `AudioStream`.

    Engines are async context managers too; leaving one releases its connections/threads.

    Attributes:
        name: Short engine name for messages (``"openai"``, ``"espeak"``).
    """

    name: str = "engine"

    @abc.abstractmethod
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
        """Start speaking *text*; the context manager yields the audio as it is produced.

        Args:
            text: The text to speak.
            voice: A voice name (OpenAI names work with every engine); None: the engine default.
            format: The OpenAI ``response_format``: ``"opus"``, ``"wav"`` or ``"pcm"``.
            speed: Speaking rate, 1.0 is normal (OpenAI range 0.25–4.0); None: the default.
            instructions: Style instructions (models that support them; ignored by others).
            model: Model name (HTTP engines); None: the engine default.

        Raises:
            UsageError: For a format streamtts cannot play.
            BadRequestError: The voice, speed or text was refused.
        """

    def describe(self) -> str:
        """A one-line description for messages (``streamtts say`` prints it)."""
        return self.name

    async def aclose(self) -> None:  # noqa: B027 - default: nothing to release
        """Release the engine's resources (connections, threads)."""

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
