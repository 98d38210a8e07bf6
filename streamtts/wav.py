"""Incremental (sans-I/O) readers for WAV and raw PCM streams, and a WAV header writer.

How it works
------------
`WavReader` is a small state machine fed with whatever bytes have arrived. Each state needs
either a fixed number of bytes (the 12-byte RIFF header, an 8-byte chunk header, the body of
``fmt ``/``ds64``, which are collected in a small buffer) or a count of bytes to skip (other
chunks before ``data``, which are never buffered). Once the ``data`` chunk starts, every byte
is audio: bytes are gathered per `feed` call, the whole frames among them are converted to
float32 in one vectorised numpy operation, and the bytes of an incomplete last frame wait for the
next call. Because the states consume the input byte by byte in the same order whatever the
chunking, the output is identical for every split of the input.

Streaming servers cannot know the length when they send the header: a ``data`` size of 0, or of
0x7FFF0000 and above (0xFFFFFFFF and the "maximum minus header" values some writers use), means
"read to the end of the input". Any other size is believed: the stream ends there
(`StreamEnded`). What follows is skipped: metadata chunks silently, a new ``RIFF``/``WAVE``
header starts a new stream (servers that concatenate one WAV per sentence), anything else is
reported once, at `close`, as `SyncLost`.

`PcmReader` is the same machine reduced to the data state, with the format given by the caller
(OpenAI's ``pcm`` response format is 24 kHz signed 16-bit little-endian mono).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .errors import ProtocolError, UnsupportedFormat, UsageError
from .events import HeaderReceived, StreamEnded, StreamEvent, StreamTruncated, SyncLost

__all__ = ["SAMPLE_FORMATS", "PcmReader", "WavReader", "decode_samples", "wav_header"]

Float32Array = npt.NDArray[np.float32]

# --------------------------------------------------------------------------------------------
# Sample formats
# --------------------------------------------------------------------------------------------


def _g711_table(law: str) -> Float32Array:
    """The 256 float values of G.711 mu-law or A-law bytes (ITU-T G.711), scaled to [-1, 1)."""
    codes = np.arange(256, dtype=np.int32)
    if law == "mulaw":
        u = ~codes & 0xFF
        exponent = (u >> 4) & 0x07
        mantissa = u & 0x0F
        magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
        linear = np.where(u & 0x80, -magnitude, magnitude)  # 14-bit range, +-8031 << 2
        return (linear / 32768.0).astype(np.float32)
    a = codes ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    linear = np.where(a & 0x80, magnitude, -magnitude)  # 13-bit range, +-4032 << 3
    return (linear / 32768.0).astype(np.float32)


@dataclass(frozen=True, slots=True)
class _SampleFormat:
    name: str  # "s16le"…
    width: int  # bytes per sample
    dtype: str | None  # numpy dtype string for frombuffer; None for s24 and G.711
    scale: float  # multiply by this after conversion to float
    offset: float  # subtract this before scaling (unsigned 8-bit)


_FORMATS: dict[str, _SampleFormat] = {
    f.name: f
    for f in (
        _SampleFormat("u8", 1, "u1", 1.0 / 128.0, 128.0),
        _SampleFormat("s16le", 2, "<i2", 1.0 / 32768.0, 0.0),
        _SampleFormat("s16be", 2, ">i2", 1.0 / 32768.0, 0.0),
        _SampleFormat("s24le", 3, None, 1.0 / 2147483648.0, 0.0),
        _SampleFormat("s24be", 3, None, 1.0 / 2147483648.0, 0.0),
        _SampleFormat("s32le", 4, "<i4", 1.0 / 2147483648.0, 0.0),
        _SampleFormat("s32be", 4, ">i4", 1.0 / 2147483648.0, 0.0),
        _SampleFormat("f32le", 4, "<f4", 1.0, 0.0),
        _SampleFormat("f32be", 4, ">f4", 1.0, 0.0),
        _SampleFormat("f64le", 8, "<f8", 1.0, 0.0),
        _SampleFormat("mulaw", 1, None, 1.0, 0.0),
        _SampleFormat("alaw", 1, None, 1.0, 0.0),
    )
}

#: The sample formats `PcmReader` and `decode_samples` accept.
SAMPLE_FORMATS: frozenset[str] = frozenset(_FORMATS)

_G711: dict[str, Float32Array] = {"mulaw": _g711_table("mulaw"), "alaw": _g711_table("alaw")}


def _sample_format(name: str) -> _SampleFormat:
    try:
        return _FORMATS[name]
    except KeyError:
        raise UsageError(
            f"unknown sample format {name!r}; expected one of {sorted(_FORMATS)}"
        ) from None


def decode_samples(data: bytes, sample_format: str, channels: int) -> Float32Array:
    """Convert interleaved PCM bytes to float32 frames (vectorised; no per-sample Python).

    Integers are scaled by their full range (s16: / 32768), so they map into [-1, 1).

    Args:
        data: Whole frames of interleaved samples (``len(data)`` a multiple of the frame size).
        sample_format: One of `SAMPLE_FORMATS`, e.g. ``"s16le"`` or ``"f32le"``.
        channels: Samples per frame.

    Returns:
        A C-contiguous float32 array shaped ``(frames, channels)``.

    Raises:
        UsageError: Unknown format, or ``data`` is not a whole number of frames.
    """
    fmt = _sample_format(sample_format)
    return _convert(data, fmt, channels)


def _convert(data: bytes, fmt: _SampleFormat, channels: int) -> Float32Array:
    frame_size = fmt.width * channels
    if len(data) % frame_size:
        raise UsageError(f"{len(data)} bytes are not a whole number of {frame_size}-byte frames")
    raw = np.frombuffer(data, dtype=np.uint8)
    if fmt.name in _G711:
        out = _G711[fmt.name][raw]
    elif fmt.width == 3:
        # Place the 3 bytes in the top of an int32 (low byte zero): the sign comes for free.
        triples = raw.reshape(-1, 3)
        wide = np.zeros((triples.shape[0], 4), dtype=np.uint8)
        if fmt.name == "s24le":
            wide[:, 1:] = triples
        else:
            wide[:, 1:] = triples[:, ::-1]
        out = wide.view("<i4").ravel().astype(np.float32)
        out *= np.float32(fmt.scale)
    else:
        assert fmt.dtype is not None
        values = np.frombuffer(data, dtype=fmt.dtype)
        # float64 beyond float32's range becomes +-inf; a signalling NaN stays a NaN.
        with np.errstate(over="ignore", invalid="ignore"):
            out = values.astype(np.float32)
        if fmt.offset:
            out -= np.float32(fmt.offset)
        if fmt.scale != 1.0:
            out *= np.float32(fmt.scale)
    return np.ascontiguousarray(out.reshape(-1, channels), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# WAV constants
# --------------------------------------------------------------------------------------------

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_IEEE_FLOAT = 0x0003
_WAVE_FORMAT_ALAW = 0x0006
_WAVE_FORMAT_MULAW = 0x0007
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# The 14 bytes that follow the format code in every KSDATAFORMAT_SUBTYPE_* GUID of WAVE audio.
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")

_FORMAT_NAMES = {
    0x0002: "Microsoft ADPCM",
    0x0011: "IMA ADPCM",
    0x0031: "GSM 6.10",
    0x0050: "MPEG audio",
    0x0055: "MP3",
    0x00FF: "AAC",
    0x1610: "AAC (ADTS)",
    0x704F: "Opus",
    0xF1AC: "FLAC",
}

# Data sizes that mean "unknown, read to the end": 0 (Python's wave module / hand-built headers
# written before the length is known) and everything from 0x7FFF0000 up, which covers
# 0xFFFFFFFF, 0x7FFFFFFF and the "maximum minus header" placeholders of streaming writers. An
# honest data chunk that large would hold over 3 hours of 48 kHz stereo s16; reading such a
# stream to its end instead gives the same audio.
_UNKNOWN_SIZE_MIN = 0x7FFF0000

# Sanity limits on header values: past these the header is garbage, not an unusual file.
_MAX_FMT_SIZE = 1 << 20  # fmt is 16-40 bytes in every real file; 1 MiB is surely broken.
# Other chunks before `data` (LIST, bext, id3, JUNK padding) are skipped unbuffered; one claiming
# more than 16 MiB (far above any metadata a TTS server sends) would silently swallow the stream.
_MAX_SKIP_CHUNK = 16 << 20
_MAX_CHANNELS = 255  # Opus' and most hardware's limit; a WAV from a TTS server has 1 or 2.
_MAX_RATE = 1_000_000  # above any real converter (768 kHz is the highest in use).
# A non-WAV start is described from this many bytes (enough for a readable error snippet).
_SNIFF_BYTES = 256


class _State(enum.Enum):
    RIFF = enum.auto()  # collecting the 12-byte RIFF/RF64 header
    CHUNK = enum.auto()  # collecting an 8-byte chunk header
    BODY = enum.auto()  # collecting the body of fmt / ds64
    SKIP = enum.auto()  # skipping a chunk before data
    DATA = enum.auto()  # audio bytes
    TRAILER = enum.auto()  # after a declared data end: chunk headers or a new RIFF
    TRAILER_SKIP = enum.auto()  # skipping a chunk after data
    GARBAGE = enum.auto()  # unrecognised bytes after the data: counted, ignored
    NOT_WAV = enum.auto()  # collecting bytes to say what the stream is instead
    FAILED = enum.auto()
    CLOSED = enum.auto()


@dataclass(frozen=True, slots=True)
class _Format:
    sample: _SampleFormat
    channels: int
    sample_rate: int
    codec: str


def _is_chunk_id(tag: bytes) -> bool:
    """RIFF chunk ids are four printable ASCII characters (space-padded)."""
    return len(tag) == 4 and all(0x20 <= b < 0x7F for b in tag)


class _ReaderBase:
    """Shared output bookkeeping of the two PCM readers."""

    def __init__(self) -> None:
        self.events: list[StreamEvent] = []
        self._popped = 0
        self.position = 0
        self.channels: int | None = None
        self.sample_rate: int | None = None

    def pop_events(self) -> list[StreamEvent]:
        """Return the events produced since the last call (all of them stay in `events`)."""
        new = self.events[self._popped :]
        self._popped = len(self.events)
        return new


class WavReader(_ReaderBase):
    """Incremental reader of a (streamed) WAV file: feed bytes, get float32 frames.

    Handles what TTS servers send: unknown sizes (0 or 0xFFFFFFFF), chunks before ``data``
    (``LIST``, ``fact``, odd sizes with their pad byte), ``WAVE_FORMAT_EXTENSIBLE``, RF64/BW64,
    integer PCM of 8/16/24/32 bits, 32/64-bit float, A-law and mu-law, any rate and channel
    count, and one WAV after another in the same body.

    Attributes:
        events: Every `StreamEvent` produced so far (`HeaderReceived`, `StreamEnded`,
            `StreamTruncated`, `SyncLost`).
        channels: Channel count, ``None`` until the header is in.
        sample_rate: Sample rate in Hz, ``None`` until the header is in.
        position: Frames output so far.
    """

    def __init__(self) -> None:
        super().__init__()
        self._state = _State.RIFF
        self._need = 12  # bytes to collect (RIFF, CHUNK, BODY) or to skip (SKIP, DATA)
        self._buf = bytearray()
        self._offset = 0  # bytes consumed so far
        self._stream_start = 0  # offset of the current RIFF header
        self._rf64 = False
        self._ds64_data_size: int | None = None
        self._fmt: _Format | None = None
        self._body_kind = b""  # id of the chunk in BODY
        self._pad_pending = False  # a pad byte may follow the chunk just finished
        self._chunk_odd = False  # the chunk being read/skipped has an odd size
        self._data_size = 0
        self._data_left: int | None = None  # None: unknown length
        self._stream_frames = 0
        self._pending = bytearray()  # audio bytes not yet converted (incomplete frame + new)
        self._ignored_start = 0  # offset of the first byte ignored after a declared data end
        self._ignored = 0  # bytes ignored since then (reported as one SyncLost)
        self._streams = 0  # WAV headers parsed so far (several when one WAV follows another)
        self._error: ProtocolError | None = None

    # -- public API ------------------------------------------------------------------------

    def feed(self, data: bytes) -> list[Float32Array]:
        """Consume the next bytes of the stream.

        Args:
            data: Any number of bytes (also empty), in stream order.

        Returns:
            Float32 blocks shaped ``(frames, channels)``, in order (usually zero or one).

        Raises:
            ProtocolError: The stream is not a usable WAV (`UnsupportedFormat` for a well-formed
                WAV whose encoding cannot be played, e.g. ADPCM or MP3 in WAV).
            UsageError: Called after `close`.
        """
        self._check_open()
        out: list[Float32Array] = []
        try:
            self._consume(memoryview(data).cast("B"), out)
        except ProtocolError as exc:
            self._fail(exc)
            raise
        self._flush_pcm(out, final=False)
        return out

    def close(self) -> list[Float32Array]:
        """Signal the end of the input; returns any last frames.

        An incomplete last frame is dropped and reported as `StreamTruncated`; bytes ignored
        after the declared data end are reported as one `SyncLost`. Closing again returns ``[]``.

        Raises:
            ProtocolError: The input ended before a WAV header was complete, or was not a WAV.
        """
        if self._state is _State.CLOSED:
            return []
        if self._state is _State.FAILED:
            assert self._error is not None
            raise ProtocolError(f"the WAV stream failed earlier: {self._error}")
        out: list[Float32Array] = []
        state = self._state
        if state is _State.NOT_WAV:
            exc = self._not_wav_error()
            self._fail(exc)
            raise exc
        if state in (_State.RIFF, _State.CHUNK, _State.BODY, _State.SKIP) and self._streams:
            # A further WAV was cut inside its header: the audio before it is fine.
            self._report_ignored()
            partial = self._offset - self._stream_start
            self.events.append(StreamTruncated(offset=self._stream_start, pending=partial))
        elif state in (_State.RIFF, _State.CHUNK, _State.BODY, _State.SKIP):
            got = self._offset - self._stream_start
            exc = ProtocolError(
                f"the stream ended after {got} bytes, before the WAV header was complete"
                if got
                else "the stream is empty: no WAV header"
            )
            self._fail(exc)
            raise exc
        if state is _State.DATA:
            self._flush_pcm(out, final=True)
        if state is _State.TRAILER:
            self._ignore(len(self._buf), self._offset - len(self._buf))
        self._report_ignored()
        self._state = _State.CLOSED
        return out

    # -- state machine -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise UsageError("feed() called on a closed WavReader")
        if self._state is _State.FAILED:
            assert self._error is not None
            raise ProtocolError(f"the WAV stream failed earlier: {self._error}")

    def _fail(self, exc: ProtocolError) -> None:
        self._state = _State.FAILED
        self._error = exc
        self._buf.clear()
        self._pending.clear()

    def _consume(self, mv: memoryview, out: list[Float32Array]) -> None:
        i = 0
        n = len(mv)
        while i < n:
            state = self._state
            if state is _State.DATA:
                take = n - i if self._data_left is None else min(n - i, self._data_left)
                self._pending += mv[i : i + take]
                i += take
                self._offset += take
                if self._data_left is not None:
                    self._data_left -= take
                    if self._data_left == 0:
                        self._end_of_data(out)
            elif state in (_State.SKIP, _State.TRAILER_SKIP):
                take = min(n - i, self._need)
                if state is _State.TRAILER_SKIP:
                    self._ignore(take, self._offset)
                i += take
                self._offset += take
                self._need -= take
                if self._need == 0:
                    self._state = _State.CHUNK if state is _State.SKIP else _State.TRAILER
                    self._need = 8
                    self._pad_pending = self._chunk_odd
            elif state is _State.GARBAGE:
                self._ignore(n - i, self._offset)
                self._offset += n - i
                i = n
            elif state is _State.NOT_WAV:
                take = min(n - i, _SNIFF_BYTES - len(self._buf))
                self._buf += mv[i : i + take]
                i += take
                self._offset += take
                if len(self._buf) >= _SNIFF_BYTES:
                    raise self._not_wav_error()
            else:
                if self._pad_pending:
                    # A chunk of odd size is followed by one pad byte (zero). Writers that forget
                    # it are tolerated: a non-zero byte here is the next chunk id already.
                    self._pad_pending = False
                    if mv[i] == 0:
                        i += 1
                        self._offset += 1
                        continue
                take = min(n - i, self._need - len(self._buf))
                self._buf += mv[i : i + take]
                i += take
                self._offset += take
                if len(self._buf) == self._need:
                    block = bytes(self._buf)
                    self._buf.clear()
                    self._on_block(block, out)
                elif state is _State.RIFF and not self._riff_prefix_ok():
                    self._start_not_wav()

    def _ignore(self, count: int, start: int) -> None:
        """Count ``count`` bytes from offset ``start`` as ignored after a declared data end."""
        if count and not self._ignored:
            self._ignored_start = start
        self._ignored += count

    def _report_ignored(self) -> None:
        if self._ignored:
            self.events.append(SyncLost(offset=self._ignored_start, skipped=self._ignored))
            self._ignored = 0

    def _riff_prefix_ok(self) -> bool:
        got = bytes(self._buf[:4])
        return any(magic.startswith(got) for magic in (b"RIFF", b"RF64", b"BW64"))

    def _start_not_wav(self) -> None:
        self._state = _State.NOT_WAV
        if len(self._buf) >= _SNIFF_BYTES:
            raise self._not_wav_error()

    def _not_wav_error(self) -> ProtocolError:
        from .formats import sniff  # formats imports this module: import at use

        head = bytes(self._buf)
        found = sniff(head, final=True)
        assert found is not None
        return found.error(expected="a WAV stream")

    def _on_block(self, block: bytes, out: list[Float32Array]) -> None:
        state = self._state
        if state is _State.RIFF:
            self._on_riff(block)
        elif state is _State.CHUNK:
            self._on_chunk_header(block)
        elif state is _State.BODY:
            self._on_body(block)
        elif state is _State.TRAILER:
            self._on_trailer(block, out)

    def _on_riff(self, block: bytes) -> None:
        if block[:4] not in (b"RIFF", b"RF64", b"BW64") or block[8:12] != b"WAVE":
            if self._streams:  # after a complete WAV: just more bytes to ignore
                self._ignore(len(block), self._offset - len(block))
                self._state = _State.GARBAGE
                return
            self._buf[:] = block
            self._start_not_wav()
            return
        self._rf64 = block[:4] != b"RIFF"
        self._ds64_data_size = None
        self._fmt = None
        self._state = _State.CHUNK
        self._need = 8

    def _on_chunk_header(self, block: bytes) -> None:
        tag, size = block[:4], struct.unpack_from("<I", block, 4)[0]
        where = self._offset - 8
        if not _is_chunk_id(tag):
            raise ProtocolError(f"malformed WAV: chunk id {tag!r} at byte {where} is not ASCII")
        if tag == b"data":
            self._start_data(size)
            return
        if tag in (b"fmt ", b"ds64"):
            if size > _MAX_FMT_SIZE:
                raise ProtocolError(f"malformed WAV: {tag.decode()!r} chunk claims {size} bytes")
            minimum = 16 if tag == b"fmt " else 24
            if size < minimum:
                raise ProtocolError(
                    f"malformed WAV: {tag.decode()!r} chunk of {size} bytes (at least "
                    f"{minimum} needed)"
                )
            self._state = _State.BODY
            self._body_kind = tag
            self._need = size
            self._chunk_odd = bool(size & 1)
            return
        if size > _MAX_SKIP_CHUNK:
            raise ProtocolError(
                f"malformed WAV: chunk {tag.decode()!r} before the audio claims {size} bytes"
            )
        self._state = _State.SKIP
        self._need = size
        self._chunk_odd = bool(size & 1)
        if size == 0:
            self._state = _State.CHUNK
            self._need = 8

    def _on_body(self, body: bytes) -> None:
        if self._body_kind == b"ds64":
            if self._rf64:
                self._ds64_data_size = struct.unpack_from("<Q", body, 8)[0]
        else:
            self._fmt = self._parse_fmt(body)
        self._state = _State.CHUNK
        self._need = 8
        self._pad_pending = self._chunk_odd

    def _parse_fmt(self, body: bytes) -> _Format:
        code, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
        if code == _WAVE_FORMAT_EXTENSIBLE:
            if len(body) < 40:
                raise ProtocolError(
                    f"malformed WAV: WAVE_FORMAT_EXTENSIBLE fmt chunk of {len(body)} bytes "
                    "(40 needed)"
                )
            guid = body[24:40]
            if guid[2:] != _GUID_TAIL:
                raise UnsupportedFormat(f"WAV with an unknown sub-format GUID {guid.hex()}")
            code = struct.unpack_from("<H", guid)[0]
        if channels == 0 or channels > _MAX_CHANNELS:
            raise ProtocolError(f"malformed WAV: {channels} channels")
        if rate == 0 or rate > _MAX_RATE:
            raise ProtocolError(f"malformed WAV: sample rate {rate} Hz")
        name = _sample_format_of(code, bits)
        fmt = _FORMATS[name]
        if block_align and block_align != fmt.width * channels:
            raise ProtocolError(
                f"malformed WAV: block align {block_align} for {channels} channel(s) of "
                f"{fmt.width}-byte samples"
            )
        codec = "pcm_" + name
        return _Format(sample=fmt, channels=channels, sample_rate=rate, codec=codec)

    def _start_data(self, size: int) -> None:
        fmt = self._fmt
        if fmt is None:
            raise ProtocolError("malformed WAV: the data chunk comes before the fmt chunk")
        if self._rf64 and size == 0xFFFFFFFF and self._ds64_data_size is not None:
            size = self._ds64_data_size
            unknown = size == 0 or size >= 1 << 62
        else:
            unknown = size == 0 or size >= _UNKNOWN_SIZE_MIN
        self._data_left = None if unknown else size
        self._pad_pending = False
        self._data_size = size
        self.channels = fmt.channels
        self.sample_rate = fmt.sample_rate
        self._stream_frames = 0
        self._streams += 1
        self.events.append(
            HeaderReceived(
                offset=self._stream_start,
                codec=fmt.codec,
                serial=0,
                channels=fmt.channels,
                sample_rate=fmt.sample_rate,
            )
        )
        self._state = _State.DATA

    def _end_of_data(self, out: list[Float32Array]) -> None:
        self._flush_pcm(out, final=True)
        self.events.append(StreamEnded(offset=self._offset, serial=0, position=self._stream_frames))
        self._state = _State.TRAILER
        self._need = 8
        self._pad_pending = bool(self._data_size & 1)

    def _on_trailer(self, block: bytes, out: list[Float32Array]) -> None:
        tag = block[:4]
        if tag in (b"RIFF", b"RF64", b"BW64"):
            # Another WAV follows (one per sentence): parse its header, keep going.
            self._report_ignored()
            self._stream_start = self._offset - 8
            self._buf[:] = block
            self._state = _State.RIFF
            self._need = 12
            return
        self._ignore(8, self._offset - 8)
        if _is_chunk_id(tag):
            size = struct.unpack_from("<I", block, 4)[0]
            self._state = _State.TRAILER_SKIP
            self._need = size
            self._chunk_odd = bool(size & 1)
            if size == 0:
                self._state = _State.TRAILER
                self._need = 8
            return
        self._state = _State.GARBAGE

    def _flush_pcm(self, out: list[Float32Array], *, final: bool) -> None:
        """Convert the whole frames gathered so far; on ``final`` report a partial frame."""
        if self._state is not _State.DATA and not final:
            return
        fmt = self._fmt
        if fmt is None or not self._pending:
            return
        frame_size = fmt.sample.width * fmt.channels
        whole = len(self._pending) - len(self._pending) % frame_size
        if whole:
            block = _convert(bytes(self._pending[:whole]), fmt.sample, fmt.channels)
            del self._pending[:whole]
            frames = block.shape[0]
            self.position += frames
            self._stream_frames += frames
            out.append(block)
        if final and self._pending:
            self.events.append(StreamTruncated(offset=self._offset, pending=len(self._pending)))
            self._pending.clear()


def _sample_format_of(code: int, bits: int) -> str:
    """Map a WAV format code and bit depth to one of our sample formats."""
    if code == _WAVE_FORMAT_PCM:
        if bits == 0 or bits > 32:
            raise UnsupportedFormat(f"WAV with {bits}-bit integer PCM")
        # Samples of 12 or 20 bits are stored left-justified in 2 or 3 bytes: read the container.
        return {1: "u8", 2: "s16le", 3: "s24le", 4: "s32le"}[(bits + 7) // 8]
    if code == _WAVE_FORMAT_IEEE_FLOAT:
        if bits == 32:
            return "f32le"
        if bits == 64:
            return "f64le"
        raise UnsupportedFormat(f"WAV with {bits}-bit floating point samples")
    if code in (_WAVE_FORMAT_ALAW, _WAVE_FORMAT_MULAW):
        if bits != 8:
            raise UnsupportedFormat(f"WAV with {bits}-bit G.711 samples")
        return "alaw" if code == _WAVE_FORMAT_ALAW else "mulaw"
    name = _FORMAT_NAMES.get(code, "an unknown encoding")
    raise UnsupportedFormat(f"WAV holding {name} (format code 0x{code:04X}); only PCM is played")


class PcmReader(_ReaderBase):
    """Incremental reader of headerless PCM: feed bytes, get float32 frames.

    Args:
        sample_rate: Sample rate of the stream in Hz (OpenAI's ``pcm`` format: 24000).
        channels: Interleaved channels per frame.
        sample_format: One of `SAMPLE_FORMATS` (``"s16le"``, ``"f32le"``, ``"s16be"`` for
            ``audio/L16``, ``"mulaw"``…).

    Raises:
        UsageError: A non-positive rate or channel count, or an unknown sample format.
    """

    def __init__(
        self, sample_rate: int = 24000, channels: int = 1, sample_format: str = "s16le"
    ) -> None:
        super().__init__()
        if sample_rate <= 0 or channels <= 0:
            raise UsageError(f"bad PCM parameters: rate {sample_rate} Hz, {channels} channels")
        self._fmt = _sample_format(sample_format)
        self.channels = self._channels = channels
        self.sample_rate = self._rate = sample_rate
        self.sample_format = sample_format
        self._frame_size = self._fmt.width * channels
        self._pending = bytearray()
        self._offset = 0
        self._started = False
        self._closed = False

    def feed(self, data: bytes) -> list[Float32Array]:
        """Consume the next bytes; returns the whole frames among what has arrived.

        The first non-empty call also records `HeaderReceived` (the format as given).

        Raises:
            UsageError: Called after `close`.
        """
        if self._closed:
            raise UsageError("feed() called on a closed PcmReader")
        if not data:
            return []
        if not self._started:
            self._started = True
            self.events.append(
                HeaderReceived(
                    offset=0,
                    codec="pcm_" + self.sample_format,
                    serial=0,
                    channels=self._channels,
                    sample_rate=self._rate,
                )
            )
        self._offset += len(data)
        self._pending += data
        whole = len(self._pending) - len(self._pending) % self._frame_size
        if not whole:
            return []
        block = _convert(bytes(self._pending[:whole]), self._fmt, self._channels)
        del self._pending[:whole]
        self.position += block.shape[0]
        return [block]

    def close(self) -> list[Float32Array]:
        """Signal the end of the input. An incomplete last frame is reported as
        `StreamTruncated` and dropped. Closing again is a no-op."""
        if not self._closed:
            self._closed = True
            if self._pending:
                self.events.append(StreamTruncated(offset=self._offset, pending=len(self._pending)))
                self._pending.clear()
        return []


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------

_WRITABLE = {
    "u8": (_WAVE_FORMAT_PCM, 8),
    "s16le": (_WAVE_FORMAT_PCM, 16),
    "s24le": (_WAVE_FORMAT_PCM, 24),
    "s32le": (_WAVE_FORMAT_PCM, 32),
    "f32le": (_WAVE_FORMAT_IEEE_FLOAT, 32),
    "f64le": (_WAVE_FORMAT_IEEE_FLOAT, 64),
    "alaw": (_WAVE_FORMAT_ALAW, 8),
    "mulaw": (_WAVE_FORMAT_MULAW, 8),
}


def wav_header(
    sample_rate: int, channels: int, *, sample_format: str = "s16le", frames: int | None = None
) -> bytes:
    """Build a WAV header; the interleaved sample bytes follow it directly.

    Integer PCM gets the plain 16-byte ``fmt`` chunk that every reader accepts; float and
    G.711 get the 18-byte form and a ``fact`` chunk, as the RIFF spec asks for non-PCM data.

    Args:
        sample_rate: Sample rate in Hz.
        channels: Channels per frame.
        sample_format: A little-endian format: ``"s16le"`` (default), ``"s24le"``,
            ``"s32le"``, ``"u8"``, ``"f32le"``, ``"f64le"``, ``"alaw"``, ``"mulaw"``.
        frames: Number of frames that will follow, or ``None`` for a streaming header whose
            RIFF and data sizes are 0xFFFFFFFF ("unknown: read to the end").

    Returns:
        The header bytes (44 bytes for integer PCM). With ``frames`` odd-sized data, append
        one zero pad byte after the samples to keep the file valid.

    Raises:
        UsageError: Unwritable format, non-positive rate/channels, negative ``frames``, or a
            data size that does not fit the 32-bit RIFF fields.
    """
    if sample_format not in _WRITABLE:
        raise UsageError(f"cannot write {sample_format!r} in a WAV; use one of {sorted(_WRITABLE)}")
    if not 0 < sample_rate <= 0xFFFFFFFF or not 0 < channels <= 0xFFFF:
        raise UsageError(f"bad WAV parameters: rate {sample_rate} Hz, {channels} channels")
    code, bits = _WRITABLE[sample_format]
    width = bits // 8
    block_align = width * channels
    if sample_rate * block_align > 0xFFFFFFFF:
        raise UsageError(f"{sample_rate} Hz x {block_align}-byte frames overflow the byte rate")
    if code == _WAVE_FORMAT_PCM:
        fmt_body = struct.pack(
            "<HHIIHH", code, channels, sample_rate, sample_rate * block_align, block_align, bits
        )
    else:
        fmt_body = struct.pack(
            "<HHIIHHH",
            code,
            channels,
            sample_rate,
            sample_rate * block_align,
            block_align,
            bits,
            0,
        )
    chunks = b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body
    if frames is None:
        if code != _WAVE_FORMAT_PCM:
            chunks += b"fact" + struct.pack("<II", 4, 0xFFFFFFFF)
        return (
            b"RIFF"
            + struct.pack("<I", 0xFFFFFFFF)
            + b"WAVE"
            + chunks
            + b"data"
            + (struct.pack("<I", 0xFFFFFFFF))
        )
    if frames < 0:
        raise UsageError(f"frames must be >= 0, not {frames}")
    if code != _WAVE_FORMAT_PCM:
        chunks += b"fact" + struct.pack("<II", 4, min(frames, 0xFFFFFFFF))
    data_size = frames * block_align
    riff_size = 4 + len(chunks) + 8 + data_size + (data_size & 1)
    if riff_size > 0xFFFFFFFF:
        raise UsageError(f"{frames} frames do not fit in a WAV file (4 GiB limit)")
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVE"
        + chunks
        + b"data"
        + struct.pack("<I", data_size)
    )
