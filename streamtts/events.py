"""Events: facts about a stream or about playback, as frozen slotted dataclasses.

Two families:

* **Stream events** come from the sans-I/O format readers (`OggReader`, `OggOpusDecoder`,
  `WavReader`). They have no clock: they carry the byte ``offset`` in the input where the fact was
  found and, where it applies, the ``position`` in output samples. Damage is reported here and the
  stream goes on: nothing in this family is an exception.
* **Playback events** come from the player and the speaker. They carry ``time`` (the
  ``time.monotonic()`` clock of the process) and ``position`` (frames played at the device so far).

Every event has ``to_dict()`` for JSON lines (``streamtts play --events``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ChecksumMismatch",
    "DataLost",
    "Event",
    "FirstByteReceived",
    "HeaderReceived",
    "PlaybackError",
    "PlaybackFinished",
    "PlaybackRecovered",
    "PlaybackStarted",
    "PlaybackStopped",
    "RequestSent",
    "SentenceEvent",
    "SentenceFinished",
    "SentenceQueued",
    "SentenceStarted",
    "SourceEvent",
    "SourceFinished",
    "SpeechError",
    "SpeechInterrupted",
    "StreamEnded",
    "StreamEvent",
    "StreamTruncated",
    "SyncLost",
    "Underrun",
]


@dataclass(frozen=True, slots=True)
class _Base:
    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict with its type name under ``"event"``."""
        out: dict[str, Any] = {"event": type(self).__name__}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _Base):
                value = value.to_dict()
            out[f.name] = value
        return out


# --------------------------------------------------------------------------------------------
# Stream events (sans-I/O: no clock)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StreamEvent(_Base):
    """Base of the facts found in the data itself.

    Attributes:
        offset: Byte offset in the input stream where the fact was found.
    """

    offset: int


@dataclass(frozen=True, slots=True)
class SyncLost(StreamEvent):
    """Bytes that are not part of any valid page were skipped (one event per garbage run).

    Attributes:
        skipped: How many bytes were skipped before the next valid page.
    """

    skipped: int


@dataclass(frozen=True, slots=True)
class ChecksumMismatch(StreamEvent):
    """A page failed its CRC check.

    Attributes:
        serial: The page's stream serial number.
        sequence: The page's sequence number.
        released: True if packets of the page had already been released (early release) before
            the page completed; False if the page was dropped whole.
    """

    serial: int
    sequence: int
    released: bool


@dataclass(frozen=True, slots=True)
class DataLost(StreamEvent):
    """A hole in the stream: missing pages, a dropped partial packet, an undecodable packet.

    Attributes:
        position: Output sample position where the hole starts (-1 if unknown).
        samples: Output samples filled with concealment for it (0 if none or unknown).
        reason: Short machine-readable cause: ``"sequence-gap"``, ``"crc"``,
            ``"orphan-continuation"``, ``"unterminated-packet"``, ``"bad-packet"``,
            ``"empty-packet"``.
    """

    position: int
    samples: int
    reason: str


@dataclass(frozen=True, slots=True)
class StreamTruncated(StreamEvent):
    """The input ended inside a page or packet; the incomplete part was discarded.

    Attributes:
        pending: Bytes held at the end that did not form a complete page/packet.
    """

    pending: int


@dataclass(frozen=True, slots=True)
class HeaderReceived(StreamEvent):
    """A new logical stream (or chain link) began and its header was parsed.

    Attributes:
        codec: ``"opus"``, ``"pcm_s16le"``, ``"pcm_f32le"``…
        serial: Ogg serial number (0 for non-Ogg formats).
        channels: Channel count.
        sample_rate: The rate the audio is delivered at by the reader (for Opus: the decode
            rate, never the informational input rate of the OpusHead).
        pre_skip: Samples dropped at the start (Opus; in 48 kHz units as in the header).
        gain_db: Output gain applied (Opus header gain), in dB.
    """

    codec: str
    serial: int
    channels: int
    sample_rate: int
    pre_skip: int = 0
    gain_db: float = 0.0


@dataclass(frozen=True, slots=True)
class StreamEnded(StreamEvent):
    """A logical stream ended (Ogg EOS page, or the WAV data chunk's declared end).

    Attributes:
        serial: Ogg serial number (0 for non-Ogg formats).
        position: Output samples of this stream delivered in total.
    """

    serial: int
    position: int


# --------------------------------------------------------------------------------------------
# Playback events (clocked): defined with the player.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event(_Base):
    """Base of playback events.

    Attributes:
        time: ``time.monotonic()`` when the fact happened (for device facts: when it was observed).
        position: Frames played at the device so far when it happened.
    """

    time: float
    position: int


@dataclass(frozen=True, slots=True)
class PlaybackStarted(Event):
    """The first sample of a source reached the device.

    ``position`` is the source's first frame in the player's timeline (frames of audio).

    Attributes:
        source: Number of the ``play()`` call (0, 1, 2… per player).
        latency_ms: From the ``play()`` call to the first sample at the device.
        buffered_ms: Audio buffered ahead when playback started.
        played_at: ``time.monotonic()`` at which the first sample reaches the device
            (estimated from the callback clock and the output latency; ``time`` is when the
            player saw the device take it).
    """

    source: int
    latency_ms: float
    buffered_ms: float
    played_at: float


@dataclass(frozen=True, slots=True)
class Underrun(Event):
    """The output ran dry inside a source: silence was inserted (reported once it is over).

    ``position`` is where the audio stopped (frames of audio played so far).

    Attributes:
        source: Number of the ``play()`` call.
        silence_ms: Silence inserted before the audio resumed.
        cause: ``"network"`` (no bytes had arrived) or ``"decode"`` (bytes were waiting
            undecoded).
    """

    source: int
    silence_ms: float
    cause: str


@dataclass(frozen=True, slots=True)
class PlaybackRecovered(Event):
    """Playback resumed after an underrun.

    Attributes:
        source: Number of the ``play()`` call.
        buffered_ms: Audio buffered ahead at the restart.
    """

    source: int
    buffered_ms: float


@dataclass(frozen=True, slots=True)
class SourceFinished(Event):
    """A source was read to its end: all its audio is buffered (it may still be playing).

    Attributes:
        source: Number of the ``play()`` call.
        frames: Frames of audio the source produced (at the device rate).
    """

    source: int
    frames: int


@dataclass(frozen=True, slots=True)
class PlaybackFinished(Event):
    """The last sample of a source has been played by the device.

    Attributes:
        source: Number of the ``play()`` call.
        frames: Frames of the source played.
        underruns: Underruns inside this source.
        underrun_ms: Total silence they inserted.
    """

    source: int
    frames: int
    underruns: int
    underrun_ms: float


@dataclass(frozen=True, slots=True)
class PlaybackStopped(Event):
    """A source was stopped before its end (its ``play()`` was cancelled).

    Attributes:
        source: Number of the ``play()`` call.
        frames_heard: Frames of the source that had been played when it stopped.
        reason: ``"cancelled"``.
    """

    source: int
    frames_heard: int
    reason: str


@dataclass(frozen=True, slots=True)
class PlaybackError(Event):
    """Playing a source failed; ``play()`` raises the same error.

    Attributes:
        source: Number of the ``play()`` call.
        error: The exception's type name.
        message: Its message.
    """

    source: int
    error: str
    message: str


@dataclass(frozen=True, slots=True)
class SourceEvent(Event):
    """A stream event of a source's format reader (a resync, a hole…), as it was decoded.

    Attributes:
        source: Number of the ``play()`` call.
        detail: The reader's event (in ``to_dict()``: a nested dict under ``"detail"``).
    """

    source: int
    detail: StreamEvent


# --------------------------------------------------------------------------------------------
# Speaker events (`streamtts.speaker.Speaker`): one utterance is one ``say``/``say_stream`` call.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SentenceEvent(Event):
    """Base of the speaker's events about one sentence of an utterance.

    Attributes:
        utterance: Number of the ``say``/``say_stream`` call on this speaker (0, 1, …).
        sentence: Number of the sentence in its utterance (0, 1, …).
        text: The sentence's text as sent to the engine.
    """

    utterance: int
    sentence: int
    text: str


@dataclass(frozen=True, slots=True)
class SentenceQueued(SentenceEvent):
    """A sentence was cut from the utterance's text and queued for speaking.

    Attributes:
        char_start: Offset of the sentence in the utterance's text (characters).
        char_end: Offset just after it.
    """

    char_start: int
    char_end: int


@dataclass(frozen=True, slots=True)
class RequestSent(SentenceEvent):
    """The engine request for a sentence was issued (``time``: when it was)."""


@dataclass(frozen=True, slots=True)
class FirstByteReceived(SentenceEvent):
    """The first audio byte of a sentence's response arrived.

    Attributes:
        latency_ms: From the request to this byte.
    """

    latency_ms: float


@dataclass(frozen=True, slots=True)
class SentenceStarted(SentenceEvent):
    """The first sample of a sentence reached the device (``time``: estimated device time).

    ``position`` is the sentence's first frame in frames played.
    """


@dataclass(frozen=True, slots=True)
class SentenceFinished(SentenceEvent):
    """The last sample of a sentence was played (``time``: estimated device time).

    Attributes:
        frames: Frames of the sentence's (trimmed) audio.
    """

    frames: int


@dataclass(frozen=True, slots=True)
class SpeechInterrupted(SentenceEvent):
    """An utterance was stopped before its end (barge-in or cancellation).

    ``sentence``/``text`` name the sentence that was playing (-1/"" if none had started).

    Attributes:
        frames_heard: Frames of the utterance that had been played (pauses included).
        char_offset: Approximate offset in the utterance's text reached by the speech.
        reason: ``"stop"`` (`Speaker.stop`) or ``"cancelled"`` (the awaiting task was cancelled).
    """

    frames_heard: int
    char_offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class SpeechError(SentenceEvent):
    """A sentence failed (HTTP error, dropped connection…); its ``say`` call raises it.

    The sentences before it have been played in full; the ones after it are not spoken.

    Attributes:
        error: The exception's type name.
        message: Its message.
    """

    error: str
    message: str
