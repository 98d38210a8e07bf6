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
    "HeaderReceived",
    "StreamEnded",
    "StreamEvent",
    "StreamTruncated",
    "SyncLost",
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
