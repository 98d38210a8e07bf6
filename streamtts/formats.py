"""Which audio format a response holds, and the reader that plays it (sans-I/O).

Three sources of truth, strongest last: the format the caller asked for, the ``Content-Type``
header (`parse_content_type`, `format_from_content_type`) and the first bytes of the body
(`sniff`, `detect_format`). A body that is not audio at all (an HTML captive-portal page, a JSON
error sent with status 200) or audio nothing here can decode (MP3, FLAC, AAC) is named in the
error, so the user reads "got an HTML page: '<!DOCTYPE html>…'" instead of a parse failure.

Format names used throughout: ``"ogg"`` (Ogg Opus), ``"wav"``, ``"pcm"`` (headerless) are
playable (`PLAYABLE_FORMATS`); ``"mp3"``, ``"flac"``, ``"aac"``, ``"vorbis"``, ``"webm"``,
``"mp4"``, ``"aiff"``, ``"riff"`` (a RIFF file that is not WAVE) are audio we cannot play;
``"html"``, ``"xml"``, ``"json"``, ``"text"``, ``"gzip"`` are not audio; ``"unknown"`` is binary
data we do not recognise (possibly raw PCM, which has no signature).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from .errors import ProtocolError, UnsupportedFormat, UsageError
from .events import StreamEvent
from .wav import SAMPLE_FORMATS, PcmReader, WavReader

__all__ = [
    "PLAYABLE_FORMATS",
    "AudioReader",
    "MediaType",
    "Sniffed",
    "detect_format",
    "format_from_content_type",
    "make_reader",
    "parse_content_type",
    "sniff",
]

#: Formats a reader here can play.
PLAYABLE_FORMATS: frozenset[str] = frozenset({"ogg", "wav", "pcm"})

# Audio formats we recognise but cannot play: their errors are `UnsupportedFormat`.
_AUDIO_KINDS = frozenset({"mp3", "flac", "aac", "vorbis", "webm", "mp4", "aiff", "riff"})

_KIND_NAMES = {
    "ogg": "an Ogg stream",
    "wav": "a WAV stream",
    "pcm": "raw PCM",
    "mp3": "MP3 audio",
    "flac": "FLAC audio",
    "aac": "AAC audio",
    "vorbis": "Ogg Vorbis audio",
    "webm": "WebM/Matroska media",
    "mp4": "MP4/M4A media",
    "aiff": "AIFF audio",
    "riff": "a RIFF file that is not WAVE",
    "html": "an HTML page",
    "xml": "an XML document",
    "json": "a JSON body",
    "text": "plain text",
    "gzip": "gzip-compressed data",
    "unknown": "unrecognised binary data",
}

# A response starting with this many bytes of whitespace is text whatever follows; below it, a
# sniff waits for the first non-blank byte (JSON/HTML bodies rarely start with more than a line).
_MAX_LEADING_BLANK = 512
# Enough bytes to judge "printable text" and to quote the start of an error body.
_TEXT_SAMPLE = 256
_QUOTE_CHARS = 160  # the quoted snippet in error messages: one readable line


@dataclass(frozen=True, slots=True)
class Sniffed:
    """What the first bytes of a stream are.

    Attributes:
        kind: A format name (see the module docstring), e.g. ``"ogg"``, ``"mp3"``, ``"html"``.
        playable: True for ``"ogg"`` and ``"wav"``: a reader here can play it.
        description: A human description for messages, quoting text bodies, e.g.
            ``"a JSON body: '{\"error\": …}'"``.
    """

    kind: str
    playable: bool
    description: str

    def error(self, expected: str | None = None) -> ProtocolError:
        """The exception to raise when this is not what the caller can use.

        Args:
            expected: What was expected, e.g. ``"a WAV stream"``; names it in the message.

        Returns:
            `UnsupportedFormat` for audio we cannot decode, `ProtocolError` for everything else.
        """
        lead = f"expected {expected}, got" if expected else "the stream is"
        if self.kind in _AUDIO_KINDS:
            return UnsupportedFormat(
                f"{lead} {self.description}; streamtts plays Ogg Opus, WAV and raw PCM "
                "(ask the server for response_format 'opus', 'wav' or 'pcm')"
            )
        return ProtocolError(f"{lead} {self.description}")


# ---------------------------------------------------------------------------------------------
# Sniffing
# ---------------------------------------------------------------------------------------------

_NEED = object()  # a detector needs more bytes to decide


def _sniffed(kind: str, detail: str = "") -> Sniffed:
    return Sniffed(kind, kind in PLAYABLE_FORMATS, _KIND_NAMES[kind] + detail)


def _magic(head: bytes, magic: bytes, kind: str, detail: str = "") -> Sniffed | object | None:
    if head.startswith(magic):
        return _sniffed(kind, detail)
    if len(head) < len(magic) and magic.startswith(head):
        return _NEED
    return None


def _sniff_riff(head: bytes) -> Sniffed | object | None:
    tags = (b"RIFF", b"RF64", b"BW64")
    if len(head) < 4:
        return _NEED if any(t.startswith(head) for t in tags) else None
    if head[:4] not in tags:
        return None
    if len(head) < 12:
        return _NEED
    if head[8:12] == b"WAVE":
        return _sniffed("wav")
    return _sniffed("riff", f" (type {head[8:12]!r})")


def _sniff_form(head: bytes) -> Sniffed | object | None:
    if len(head) < 4:
        return _NEED if b"FORM".startswith(head) else None
    if head[:4] != b"FORM":
        return None
    if len(head) < 12:
        return _NEED
    return _sniffed("aiff") if head[8:12] in (b"AIFF", b"AIFC") else None


def _sniff_mp4(head: bytes) -> Sniffed | object | None:
    if len(head) < 8:
        return _NEED if len(head) < 4 or head[:3] == b"\x00\x00\x00" else None
    return _sniffed("mp4") if head[4:8] == b"ftyp" else None


def _sniff_frame_sync(head: bytes) -> Sniffed | object | None:
    """MPEG audio (MP3) or ADTS (AAC) frame header: 11/12 sync bits and valid fields."""
    if not head or head[0] != 0xFF:
        return None
    if len(head) < 3:
        return _NEED
    b1, b2 = head[1], head[2]
    if b1 & 0xF6 == 0xF0:  # 12 sync bits, layer 00: ADTS
        return _sniffed("aac", " (ADTS)") if (b2 >> 2) & 0x0F < 13 else None
    if b1 & 0xE0 != 0xE0:
        return None
    version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3
    bitrate, rate = b2 >> 4, (b2 >> 2) & 3
    # Free-format (bitrate 0) streams are rare, and excluding them keeps raw s16 PCM that starts
    # with a sample of -1 followed by a small one (FF FF 0x 00 / FF FF Fx FF) from looking
    # like MP3.
    if version == 1 or layer == 0 or bitrate in (0, 15) or rate == 3:
        return None
    return _sniffed("mp3", " (MPEG audio frame)")


def _quote(text: str) -> str:
    flat = " ".join(text.split())
    if len(flat) > _QUOTE_CHARS:
        flat = flat[: _QUOTE_CHARS - 1] + "…"
    return repr(flat)


_HTML_STARTS = ("<!doctype html", "<html", "<head", "<body", "<title", "<!--")


def _sniff_text(head: bytes, final: bool) -> Sniffed | object | None:
    sample = head[:_TEXT_SAMPLE]
    if sample.startswith(b"\xef\xbb\xbf"):
        sample = sample[3:]
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason != "unexpected end of data":
            return None  # not UTF-8: binary
        text = sample[: exc.start].decode("utf-8")  # a character cut by the sample's end
    if any(not c.isprintable() and c not in "\t\n\r" for c in text):
        return None
    stripped = text.lstrip()
    if not stripped:
        return (
            _NEED
            if (len(head) < _MAX_LEADING_BLANK and not final)
            else _sniffed("text", " (only whitespace)")
        )
    first = stripped[0]
    if first == "<":
        lower = stripped[:16].lower()
        if lower.startswith(_HTML_STARTS):
            return _sniffed("html", ": " + _quote(stripped))
        if not final and len(lower) < 16 and any(p.startswith(lower) for p in _HTML_STARTS):
            return _NEED
        return _sniffed("xml", ": " + _quote(stripped))
    if first in "{[":
        return _sniffed("json", ": " + _quote(stripped))
    return _sniffed("text", ": " + _quote(stripped))


_DETECTORS = (
    lambda h: _magic(h, b"OggS", "ogg"),
    _sniff_riff,
    lambda h: _magic(h, b"fLaC", "flac"),
    lambda h: _magic(h, b"ID3", "mp3", " (ID3 tag)"),
    lambda h: _magic(h, b"\x1a\x45\xdf\xa3", "webm"),
    _sniff_form,
    lambda h: _magic(h, b"\x1f\x8b", "gzip"),
    _sniff_mp4,
    _sniff_frame_sync,
)


def sniff(head: bytes, *, final: bool = False) -> Sniffed | None:
    """Say what a stream is from its first bytes.

    Args:
        head: The first bytes of the body (any number; 12 decide every signature, text needs up
            to its first non-blank character).
        final: No more bytes will come: decide with what there is (never returns ``None``).

    Returns:
        What was recognised (``kind="unknown"`` for binary data matching no signature, which is
        what raw PCM looks like), or ``None`` if more bytes are needed to tell.
    """
    waiting = False
    for detect in _DETECTORS:
        found = detect(head)
        if found is _NEED:
            if not final:
                waiting = True
        elif isinstance(found, Sniffed):
            return None if waiting else found
    if waiting:
        return None
    if not head:
        return None if not final else Sniffed("unknown", False, "an empty body")
    text = _sniff_text(head, final)
    if text is _NEED:
        return None
    if isinstance(text, Sniffed):
        return text
    first = " ".join(f"{b:02x}" for b in head[:16])
    return _sniffed("unknown", f" (first bytes: {first})")


def detect_format(head: bytes) -> str | None:
    """The playable format of a stream from its first bytes.

    Args:
        head: The first bytes of the body.

    Returns:
        ``"ogg"`` for ``OggS``, ``"wav"`` for ``RIFF....WAVE``; ``None`` when it is not known yet
        (too few bytes) or never (anything else: use `sniff` to say what it is).
    """
    found = sniff(head)
    return found.kind if found is not None and found.playable else None


# ---------------------------------------------------------------------------------------------
# Content-Type
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaType:
    """A parsed ``Content-Type`` of an audio response.

    Attributes:
        format: A format name (``"ogg"``, ``"wav"``, ``"pcm"``, ``"mp3"``, ``"html"``…).
        mime: The lower-cased type/subtype, e.g. ``"audio/l16"``.
        sample_rate: The ``rate`` parameter, if given (raw PCM types).
        channels: The ``channels`` parameter, if given (``audio/L16`` defaults to 1).
        sample_format: For ``"pcm"``: the sample layout the type implies (``audio/L16`` is
            big-endian ``"s16be"`` by RFC 2586; ``audio/pcm`` is taken as ``"s16le"``, as OpenAI
            sends it); ``None`` otherwise.
    """

    format: str
    mime: str
    sample_rate: int | None = None
    channels: int | None = None
    sample_format: str | None = None


_MIME_FORMATS = {
    "audio/ogg": "ogg",
    "application/ogg": "ogg",
    "audio/opus": "ogg",
    "audio/x-opus+ogg": "ogg",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/vnd.wave": "wav",
    "audio/vnd.wav": "wav",
    "audio/pcm": "pcm",
    "audio/x-pcm": "pcm",
    "audio/raw": "pcm",
    "audio/x-raw": "pcm",
    "audio/l16": "pcm",
    "audio/l24": "pcm",
    "audio/basic": "pcm",
    "audio/pcmu": "pcm",
    "audio/pcma": "pcm",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mpeg3": "mp3",
    "audio/x-mpeg": "mp3",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/aac": "aac",
    "audio/aacp": "aac",
    "audio/x-aac": "aac",
    "audio/mp4": "mp4",
    "audio/m4a": "mp4",
    "audio/x-m4a": "mp4",
    "audio/webm": "webm",
    "audio/aiff": "aiff",
    "audio/x-aiff": "aiff",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/json": "json",
    "text/json": "json",
    "application/xml": "xml",
    "text/xml": "xml",
    "text/plain": "text",
}

# Sample layout implied by raw-PCM media types (RFC 2586/3190: L16/L24 are network byte order;
# RFC 3551: PCMU/PCMA and audio/basic are G.711, audio/basic is 8 kHz mono).
_MIME_PCM = {
    "audio/l16": ("s16be", None),
    "audio/l24": ("s24be", None),
    "audio/basic": ("mulaw", 8000),
    "audio/pcmu": ("mulaw", 8000),
    "audio/pcma": ("alaw", 8000),
}


def _positive_int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number > 0 else None


def parse_content_type(content_type: str | None) -> MediaType | None:
    """Parse a ``Content-Type`` header into a format and its audio parameters.

    Args:
        content_type: The header value, e.g. ``"audio/L16;rate=24000;channels=1"``.

    Returns:
        The parsed type, or ``None`` for a missing, generic (``application/octet-stream``) or
        unknown type, for which the body's first bytes must decide.
    """
    if not content_type:
        return None
    main, *params = content_type.split(";")
    mime = main.strip().lower()
    values: dict[str, str] = {}
    for param in params:
        key, sep, value = param.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip().strip('"').strip()
    fmt = _MIME_FORMATS.get(mime)
    if fmt is None and mime.endswith("+json"):
        fmt = "json"
    if fmt is None:
        return None
    codecs = values.get("codecs", "").lower()
    if fmt == "ogg" and codecs and "opus" not in codecs:
        fmt = "flac" if "flac" in codecs else "vorbis"
    sample_format: str | None = None
    rate = _positive_int(values.get("rate"))
    channels = _positive_int(values.get("channels"))
    if fmt == "pcm":
        layout, fixed_rate = _MIME_PCM.get(mime, ("s16le", None))
        sample_format = layout
        rate = rate or fixed_rate
        if mime != "audio/pcm" and mime in _MIME_PCM:
            channels = channels or 1
    return MediaType(fmt, mime, rate, channels, sample_format)


def format_from_content_type(content_type: str | None) -> str | None:
    """The format name a ``Content-Type`` header announces.

    Args:
        content_type: The header value, e.g. ``"audio/ogg; codecs=opus"``.

    Returns:
        ``"ogg"``, ``"wav"``, ``"pcm"``, or the name of something we cannot play (``"mp3"``,
        ``"html"``, ``"json"``…); ``None`` when missing, generic or unknown.
    """
    media = parse_content_type(content_type)
    return media.format if media is not None else None


# ---------------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class AudioReader(Protocol):
    """The incremental (sans-I/O) shape every format reader has.

    Feed it the body's bytes as they arrive; it returns float32 blocks shaped
    ``(frames, channels)`` and records `StreamEvent` facts. `WavReader`, `PcmReader` and
    ``OggOpusDecoder`` satisfy it.
    """

    @property
    def events(self) -> Sequence[StreamEvent]:
        """All events so far."""

    @property
    def channels(self) -> int | None:
        """Channel count, ``None`` until known."""

    @property
    def sample_rate(self) -> int | None:
        """Rate of the blocks returned, ``None`` until known."""

    @property
    def position(self) -> int:
        """Frames returned so far."""

    def feed(self, data: bytes) -> list[npt.NDArray[np.float32]]:
        """Consume bytes, return the blocks now complete."""

    def close(self) -> list[npt.NDArray[np.float32]]:
        """End of input: return the last blocks."""

    def pop_events(self) -> list[StreamEvent]:
        """The events since the last call."""


def make_reader(
    fmt: str,
    *,
    sample_rate: int = 48000,
    pcm_rate: int = 24000,
    pcm_channels: int = 1,
    pcm_format: str = "s16le",
) -> AudioReader:
    """Create the reader for a format.

    Args:
        fmt: ``"ogg"`` (alias ``"opus"``), ``"wav"`` or ``"pcm"``.
        sample_rate: Decode rate for Ogg Opus (8000, 12000, 16000, 24000 or 48000); WAV and PCM
            are delivered at their own rate.
        pcm_rate: Rate of headerless PCM (OpenAI's ``pcm``: 24000).
        pcm_channels: Channels of headerless PCM.
        pcm_format: Sample layout of headerless PCM (see `streamtts.wav.SAMPLE_FORMATS`).

    Returns:
        A fresh reader.

    Raises:
        UnsupportedFormat: ``fmt`` names audio nothing here can play (``"mp3"``…).
        ProtocolError: ``fmt`` names something that is not audio (``"html"``, ``"json"``…).
        UsageError: ``fmt`` is not a format name at all, or bad PCM parameters.
        BackendUnavailable: Ogg Opus needs libopus/opuslib, and it is not installed.
    """
    name = fmt.lower()
    if name in ("ogg", "opus"):
        from .opus import OggOpusDecoder  # lazily: opuslib is loaded only when Opus is played

        return OggOpusDecoder(sample_rate=sample_rate)
    if name == "wav":
        return WavReader()
    if name == "pcm":
        if pcm_format not in SAMPLE_FORMATS:
            raise UsageError(
                f"unknown PCM format {pcm_format!r}; use one of {sorted(SAMPLE_FORMATS)}"
            )
        return PcmReader(sample_rate=pcm_rate, channels=pcm_channels, sample_format=pcm_format)
    if name in _KIND_NAMES:
        raise _sniffed(name).error()
    raise UsageError(f"unknown audio format {fmt!r}; expected 'ogg', 'wav' or 'pcm'")
