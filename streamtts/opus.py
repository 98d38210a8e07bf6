"""Ogg Opus (RFC 7845): headers and packet durations (sans-I/O), an incremental decoder and an
encoder (through libopus, reached via ``streamtts._backends.load_opuslib``).

How the decoder works
---------------------
Bytes go to an `OggReader`, which hands back each packet as soon as its own bytes are in (early
release) together with framing events. The first Opus stream's BOS packet is its OpusHead; the
next packet is OpusTags; nothing is decoded before both are in. Every later packet of that
stream is decoded straight into one reused float32 staging buffer (libopus writes into it through
a pointer: no allocation per packet), and the valid part is copied out once per `feed` call.

Time is kept in 48 kHz granule units per chain link: ``start`` (the first audio page's granule
minus the durations of its packets), and ``decoded48`` (durations of everything decoded or
concealed so far, pre-skip included), so that ``start + decoded48`` is where the next packet
should begin. When the last packet of a page arrives, the page's granule is checked against it:

* after a hole (a `DataLost` from the reader) the packets are held until their page ends, so the
  missing duration ``granule - (start + decoded48 + held durations)`` is known; it is filled with
  libopus concealment (``decode(NULL)``) *before* the held packets, and the timeline keeps its
  length. A jump without a reported hole is filled at the point it is found. Concealment is
  bounded: at most `_MAX_FILL_48` (2 s, a lost page or two) per hole, and over the whole input
  at most `_FILL_ALLOWANCE_48` more than the real audio decoded; the part of a hole beyond that
  is a discontinuity, dropped from the timeline (the link's ``start`` moves by it), so damaged
  granules cannot turn a few bytes into minutes of output.
* on the EOS page the link's output is cut to ``granule - start - pre-skip`` (end trimming).
  A packet that would run past its page's granule is held until its page is known to be EOS or
  not, so early release never emits samples that trimming would remove; on valid non-EOS pages
  this never happens (their granule is the end of their last packet).

Pre-skip is dropped once per link. At a decode rate R below 48 kHz the pre-skip drops
``ceil(pre_skip * R / 48000)`` samples (all those before the start) and a link's length is
``floor((final granule - start - pre_skip) * R / 48000)``, as opusdec's.

Chained streams (a new OpusHead BOS after the current stream ended) start a new libopus decoder
with their own pre-skip and gain, with no gap. Other logical streams are ignored.
"""

from __future__ import annotations

import ctypes
import functools
import random
import re
import struct
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ._backends import load_opuslib
from .errors import ProtocolError, UnsupportedFormat, UsageError
from .events import DataLost, HeaderReceived, StreamEnded, StreamEvent
from .ogg import OggPacket, OggReader, OggWriter

__all__ = [
    "OggOpusDecoder",
    "OggOpusEncoder",
    "OpusHead",
    "OpusTags",
    "decode_opus_stream",
    "packet_samples",
]

Pcm = npt.NDArray[np.float32]

# Decode/encode rates libopus supports natively (RFC 6716 §2, opus_decoder_create).
SAMPLE_RATES = (8000, 12000, 16000, 24000, 48000)
# The longest Opus packet is 120 ms (RFC 6716 §3.2.5): 5760 samples at 48 kHz.
_MAX_PACKET_48 = 5760
# Concealment granularity: libopus conceals multiples of 2.5 ms (120 samples at 48 kHz).
_PLC_STEP_48 = 120
# Duration assumed for a packet whose TOC cannot be read: 20 ms, the frame size of nearly every
# speech stream (opusenc's and OpenAI's default), so a guess is most often right.
_DEFAULT_LOST_48 = 960
# Longest hole concealed: what losing a page or two costs. Encoders put at most 1 s of audio on
# a page (opusenc's default --max-delay 1000 ms, ffmpeg's 1 s page_duration), so a realistic
# hole (a dropped page, a CRC failure, a cut) is 1-2 s. A longer granule jump is a timeline
# discontinuity (a server skipping ahead, a spliced or damaged stream): its first 2 s are
# concealed (PLC fades out into silence: the listener hears a pause, not a click), the rest is
# dropped from the timeline, and its `DataLost` reports the samples concealed. Filling whole
# jumps would turn a few damaged bytes into minutes of silence held in memory: with a 10 s cap,
# a 2,992-byte fuzzed stream of 29-byte pages each jumping 10 s decoded to 990 s (190 MB).
_MAX_FILL_48 = 2 * 48000
# Budget for filling holes, per decoder: the concealment filled so far may exceed the real audio
# decoded so far by at most this much. 2 s lets the first hole be concealed in full even when it
# takes the first page; after that, concealment can at most double the real audio. Real audio
# is itself bounded by the input (at most 120 ms per 2-byte packet), so whatever its granules
# say, a stream's output stays within twice what its bytes could carry as packets, plus 2 s.
_FILL_ALLOWANCE_48 = 2 * 48000
# Initial staging capacity: 0.5 s holds a whole 4 kB chunk of typical speech (~0.5-1 s); the
# buffer doubles when a feed brings more (it is reused across feeds, so this is paid once).
_INITIAL_STAGING_S = 0.5
# Bytes kept from the start of the input to say what it was if it holds no Opus stream.
_SNIFF_BYTES = 512
# libopus's recommended maximum packet size for one encode call (opus_encode documentation).
_MAX_ENCODED_BYTES = 4000

# libopus CTL requests (opus_defines.h).
_OPUS_SET_BITRATE = 4002
_OPUS_GET_LOOKAHEAD = 4027
_OPUS_SET_GAIN = 4034
_OPUS_SET_INBAND_FEC = 4012
_OPUS_SET_PACKET_LOSS_PERC = 4014
# Expected loss the encoder plans for when FEC is on: libopus only spends bits on LBRR (the
# low-bitrate copy of the previous frame) when told to expect loss; 10 % is a lossy mobile link.
_FEC_LOSS_PERCENT = 10
_APPLICATIONS = {"voip": 2048, "audio": 2049, "restricted_lowdelay": 2051}

# --------------------------------------------------------------------------------------------
# Headers (sans-I/O)
# --------------------------------------------------------------------------------------------

_HEAD_MAGIC = b"OpusHead"
_TAGS_MAGIC = b"OpusTags"
_HEAD_FIXED = struct.Struct("<8sBBHIhB")  # magic, version, channels, pre-skip, rate, gain, family


@dataclass(frozen=True, slots=True)
class OpusHead:
    """The Ogg Opus identification header (RFC 7845 §5.1).

    Attributes:
        channels: Output channel count (1…255; family 0 allows 1–2, family 1 up to 8).
        pre_skip: Samples (at 48 kHz) to drop from the decoder output at the start.
        input_sample_rate: The encoder's input rate: informational only, never the decode rate.
        output_gain: Gain to apply to the output, in dB as Q7.8 (``gain_db = output_gain / 256``).
        mapping_family: Channel mapping family (0: mono/stereo, 1: Vorbis order up to 8 ch).
        stream_count: Opus streams in each packet (1 for family 0).
        coupled_count: How many of them are coupled stereo streams (``channels - 1`` for
            family 0).
        channel_mapping: Output channel → decoded channel index (255: silence); for family 0 it
            is ``(0,)`` or ``(0, 1)``.
        version: Header version (1 today; 0…15 are compatible).
    """

    channels: int
    pre_skip: int = 0
    input_sample_rate: int = 48000
    output_gain: int = 0
    mapping_family: int = 0
    stream_count: int = 1
    coupled_count: int = 0
    channel_mapping: tuple[int, ...] = ()
    version: int = 1

    def __post_init__(self) -> None:
        if self.mapping_family == 0:
            # Family 0 has no table: its layout follows from the channel count.
            object.__setattr__(self, "stream_count", 1)
            object.__setattr__(self, "coupled_count", max(0, self.channels - 1))
            object.__setattr__(self, "channel_mapping", tuple(range(self.channels)))

    @property
    def gain_db(self) -> float:
        """The output gain in dB."""
        return self.output_gain / 256.0

    @classmethod
    def parse(cls, data: bytes) -> OpusHead:
        """Parse an OpusHead packet, checking every field before use.

        Raises:
            ProtocolError: Not an OpusHead, truncated, or inconsistent.
            UnsupportedFormat: An incompatible header version (16 or more).
        """
        if len(data) < _HEAD_FIXED.size:
            raise ProtocolError(f"OpusHead too short: {len(data)} bytes, at least 19 needed")
        magic, version, channels, pre_skip, rate, gain, family = _HEAD_FIXED.unpack_from(data)
        if magic != _HEAD_MAGIC:
            raise ProtocolError(f"not an OpusHead packet (starts with {bytes(data[:8])!r})")
        if version >= 16:
            raise UnsupportedFormat(f"OpusHead version {version} is not compatible (major >= 1)")
        if channels == 0:
            raise ProtocolError("OpusHead declares 0 channels")
        if family == 0:
            if channels > 2:
                raise ProtocolError(f"OpusHead mapping family 0 with {channels} channels (max 2)")
            return cls(channels, pre_skip, rate, gain, 0, version=version)
        end = _HEAD_FIXED.size + 2 + channels
        if len(data) < end:
            raise ProtocolError(
                f"OpusHead channel mapping table truncated: {len(data)} bytes, {end} needed"
            )
        streams, coupled = data[19], data[20]
        if streams == 0 or coupled > streams or streams + coupled > 255:
            raise ProtocolError(f"OpusHead has {streams} streams of which {coupled} coupled")
        mapping = tuple(data[21:end])
        for index in mapping:
            if index != 255 and index >= streams + coupled:
                raise ProtocolError(
                    f"OpusHead maps a channel to stream channel {index} of {streams + coupled}"
                )
        if family == 1 and channels > 8:
            raise ProtocolError(f"OpusHead mapping family 1 with {channels} channels (max 8)")
        return cls(channels, pre_skip, rate, gain, family, streams, coupled, mapping, version)

    def to_bytes(self) -> bytes:
        """Serialize (the inverse of `parse`)."""
        out = _HEAD_FIXED.pack(
            _HEAD_MAGIC,
            self.version,
            self.channels,
            self.pre_skip,
            self.input_sample_rate,
            self.output_gain,
            self.mapping_family,
        )
        if self.mapping_family == 0:
            return out
        return out + bytes((self.stream_count, self.coupled_count, *self.channel_mapping))


@dataclass(frozen=True, slots=True)
class OpusTags:
    """The Ogg Opus comment header (RFC 7845 §5.2).

    Attributes:
        vendor: The encoder's vendor string.
        comments: ``"KEY=value"`` strings, in order.
        extra: Bytes after the comment list: zero padding (encoders reserve room for editing) or
            binary metadata; kept so that `to_bytes` round-trips.
    """

    vendor: str = "streamtts"
    comments: tuple[str, ...] = ()
    extra: bytes = field(default=b"", repr=False)

    def get(self, key: str) -> list[str]:
        """The values of every comment named ``key`` (case-insensitive)."""
        prefix = key.upper() + "="
        return [c[len(prefix) :] for c in self.comments if c[: len(prefix)].upper() == prefix]

    @classmethod
    def parse(cls, data: bytes) -> OpusTags:
        """Parse an OpusTags packet; every length is checked against the bytes left before use.

        Text that is not valid UTF-8 is decoded with replacement characters (tags are
        informational: a damaged one must not stop playback).

        Raises:
            ProtocolError: Not an OpusTags packet, or a length running past its end.
        """
        view = memoryview(data)
        size = len(view)
        if size < 16 or bytes(view[:8]) != _TAGS_MAGIC:
            raise ProtocolError("not an OpusTags packet")
        pos = 8

        def length() -> int:
            nonlocal pos
            if size - pos < 4:
                raise ProtocolError("OpusTags truncated in a length field")
            (value,) = struct.unpack_from("<I", view, pos)
            pos += 4
            n: int = value
            return n

        vendor_len = length()
        if vendor_len > size - pos:
            raise ProtocolError(f"OpusTags vendor length {vendor_len} exceeds the packet")
        vendor = bytes(view[pos : pos + vendor_len]).decode("utf-8", "replace")
        pos += vendor_len
        count = length()
        if count > (size - pos) // 4:  # each comment needs at least its 4-byte length
            raise ProtocolError(f"OpusTags comment count {count} exceeds the packet")
        comments: list[str] = []
        for _ in range(count):
            n = length()
            if n > size - pos:
                raise ProtocolError(f"OpusTags comment length {n} exceeds the packet")
            comments.append(bytes(view[pos : pos + n]).decode("utf-8", "replace"))
            pos += n
        return cls(vendor, tuple(comments), bytes(view[pos:]))

    def to_bytes(self) -> bytes:
        """Serialize (the inverse of `parse`)."""
        vendor = self.vendor.encode()
        parts = [_TAGS_MAGIC, struct.pack("<I", len(vendor)), vendor]
        parts.append(struct.pack("<I", len(self.comments)))
        for comment in self.comments:
            raw = comment.encode()
            parts += [struct.pack("<I", len(raw)), raw]
        parts.append(self.extra)
        return b"".join(parts)


# --------------------------------------------------------------------------------------------
# Packet durations (RFC 6716 §3.1, as libopus opus_packet_get_nb_samples)
# --------------------------------------------------------------------------------------------


def _frame_samples_48(config: int) -> int:
    """Samples per frame at 48 kHz for a TOC configuration number (0…31)."""
    if config >= 16:  # CELT-only: 2.5, 5, 10, 20 ms
        return 120 << (config & 3)
    if config >= 12:  # hybrid: 10, 20 ms
        return 480 << (config & 1)
    return (480, 960, 1920, 2880)[config & 3]  # SILK-only: 10, 20, 40, 60 ms


_FRAME_48 = tuple(_frame_samples_48(c) for c in range(32))


def _check_rate(sample_rate: int) -> int:
    if sample_rate not in SAMPLE_RATES:
        raise UsageError(f"Opus works at 8000, 12000, 16000, 24000 or 48000 Hz, not {sample_rate}")
    return 48000 // sample_rate


def packet_samples(packet: bytes, sample_rate: int = 48000) -> int:
    """Duration of an Opus packet in samples at ``sample_rate``, read from its TOC byte.

    Same result as libopus ``opus_packet_get_nb_samples``, except that a code-3 packet
    declaring 0 frames is rejected (RFC 6716 §3.2.5: the count must not be zero).

    Raises:
        ProtocolError: Empty packet, code-3 packet without its count byte, zero frames or more
            than 120 ms.
        UsageError: ``sample_rate`` is not an Opus rate.
    """
    k = _check_rate(sample_rate)
    if not packet:
        raise ProtocolError("empty Opus packet")
    toc = packet[0]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code != 3:
        frames = 2
    else:
        if len(packet) < 2:
            raise ProtocolError("Opus code-3 packet without its frame count byte")
        frames = packet[1] & 0x3F
        if frames == 0:
            raise ProtocolError("Opus code-3 packet with 0 frames")
    total = frames * _FRAME_48[toc >> 3]
    if total > _MAX_PACKET_48:
        raise ProtocolError(f"Opus packet of {total / 48:g} ms (max 120 ms)")
    return total // k


def _duration_48(packet: bytes) -> int:
    """`packet_samples` at 48 kHz for the decoder's bookkeeping: never raises, and a packet
    whose duration cannot be read counts as `_DEFAULT_LOST_48` (it will be concealed as such)."""
    if not packet:
        return _DEFAULT_LOST_48
    toc = packet[0]
    code = toc & 3
    if code == 0:
        return _FRAME_48[toc >> 3]
    if code != 3:
        return 2 * _FRAME_48[toc >> 3]
    if len(packet) < 2:
        return _DEFAULT_LOST_48
    total = (packet[1] & 0x3F) * _FRAME_48[toc >> 3]
    return total if 0 < total <= _MAX_PACKET_48 else _DEFAULT_LOST_48


# --------------------------------------------------------------------------------------------
# libopus through ctypes (own prototypes: opuslib's shared function objects stay untouched)
# --------------------------------------------------------------------------------------------


class _Libopus:
    """The libopus entry points streamtts uses, with prototypes taking raw pointers (ints), so
    that a call converts nothing and allocates nothing."""

    def __init__(self, lib: Any) -> None:
        vp, i32, c_int = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int
        int_p = ctypes.POINTER(ctypes.c_int)

        def fn(name: str, restype: Any, *argtypes: Any) -> Callable[..., Any]:
            proto = ctypes.CFUNCTYPE(restype, *argtypes)
            bound: Callable[..., Any] = proto((name, lib))
            return bound

        self.decoder_create = fn("opus_decoder_create", vp, i32, c_int, int_p)
        self.decode_float = fn("opus_decode_float", c_int, vp, vp, i32, vp, c_int, c_int)
        self.decoder_destroy = fn("opus_decoder_destroy", None, vp)
        # The *_ctl functions are variadic; calling them with a fixed (int) prototype is what
        # opuslib does too, and is correct on the SysV x86-64 and AArch64 Linux ABIs.
        self.decoder_ctl_int = fn("opus_decoder_ctl", c_int, vp, c_int, c_int)
        self.ms_decoder_create = fn(
            "opus_multistream_decoder_create", vp, i32, c_int, c_int, c_int, vp, int_p
        )
        self.ms_decode_float = fn(
            "opus_multistream_decode_float", c_int, vp, vp, i32, vp, c_int, c_int
        )
        self.ms_decoder_destroy = fn("opus_multistream_decoder_destroy", None, vp)
        self.ms_decoder_ctl_int = fn("opus_multistream_decoder_ctl", c_int, vp, c_int, c_int)
        self.encoder_create = fn("opus_encoder_create", vp, i32, c_int, c_int, int_p)
        self.encode_float = fn("opus_encode_float", i32, vp, vp, c_int, vp, i32)
        self.encoder_destroy = fn("opus_encoder_destroy", None, vp)
        self.encoder_ctl_int = fn("opus_encoder_ctl", c_int, vp, c_int, c_int)
        self.encoder_ctl_get = fn("opus_encoder_ctl", c_int, vp, c_int, int_p)
        self.strerror = fn("opus_strerror", ctypes.c_char_p, c_int)

    def error(self, code: int) -> str:
        text: bytes | None = self.strerror(code)
        return text.decode() if text else f"error {code}"


@functools.cache
def _libopus() -> _Libopus:
    return _Libopus(load_opuslib().api.libopus)


class _Decoder:
    """One libopus decoder (plain for mapping family 0, multistream for family 1), writing into
    memory the caller owns."""

    def __init__(self, head: OpusHead, sample_rate: int) -> None:
        lib = _libopus()
        err = ctypes.c_int(0)
        if head.mapping_family == 0:
            state = lib.decoder_create(sample_rate, head.channels, ctypes.byref(err))
            self._decode = lib.decode_float
            destroy, ctl = lib.decoder_destroy, lib.decoder_ctl_int
        elif head.mapping_family == 1:
            mapping = bytes(head.channel_mapping)
            state = lib.ms_decoder_create(
                sample_rate,
                head.channels,
                head.stream_count,
                head.coupled_count,
                mapping,
                ctypes.byref(err),
            )
            self._decode = lib.ms_decode_float
            destroy, ctl = lib.ms_decoder_destroy, lib.ms_decoder_ctl_int
        else:
            raise UnsupportedFormat(
                f"Opus channel mapping family {head.mapping_family} is not supported (0 and 1 are)"
            )
        if err.value != 0 or not state:
            raise UnsupportedFormat(f"libopus refused this OpusHead: {lib.error(err.value)}")
        self._state: int = state
        self._finalizer = weakref.finalize(self, destroy, state)
        if head.output_gain:
            ctl(state, _OPUS_SET_GAIN, head.output_gain)

    def decode(self, packet: bytes, out: int, max_frames: int) -> int:
        """Decode one packet to ``out`` (interleaved float32); frames written, or < 0 on error."""
        result: int = self._decode(self._state, packet, len(packet), out, max_frames, 0)
        return result

    def recover(self, next_packet: bytes, out: int, frames: int) -> int:
        """Concealment for ``frames`` whose last frame is rebuilt from the forward error
        correction data (LBRR) of ``next_packet`` when it has some (libopus falls back to
        plain concealment otherwise)."""
        result: int = self._decode(self._state, next_packet, len(next_packet), out, frames, 1)
        return result

    def conceal(self, out: int, frames: int) -> int:
        """Packet-loss concealment for ``frames`` (a multiple of 2.5 ms)."""
        result: int = self._decode(self._state, None, 0, out, frames, 0)
        return result

    def close(self) -> None:
        self._finalizer()


# --------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------

_SEEK, _TAGS, _AUDIO, _ENDED = range(4)  # link phases: no head yet / want tags / audio / EOS seen

_OGG_CODECS = (
    (b"\x01vorbis", "vorbis"),
    (b"Speex   ", "speex"),
    (b"\x7fFLAC", "flac"),
    (b"\x80theora", "theora"),
    (b"fishead\x00", "skeleton"),
    (b"PCM     ", "pcm"),
    (b"\x80kate", "kate"),
)
_JSON_START = re.compile(rb"\A\s*[\[{]\s*[\"\]}]")
_HTML_START = re.compile(rb"\A\s*<(?:!doctype\s+html|html|head|body|\?xml)", re.IGNORECASE)


def _ogg_codec(packet: bytes) -> str:
    for magic, name in _OGG_CODECS:
        if packet.startswith(magic):
            return name
    return f"unknown codec {packet[:8]!r}"


def _sniff(head: bytes) -> str | None:
    """Name the format of data that is certainly not Ogg (None if it may be Ogg or garbage)."""
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "got RIFF/WAV"
    if head.startswith(b"ID3"):
        return "got MP3 (ID3 tag)"
    if head.startswith(b"fLaC"):
        return "got FLAC"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "got Matroska/WebM"
    if head[4:8] == b"ftyp":
        return "got MP4"
    if _HTML_START.match(head):
        return "got HTML: " + head[:120].decode("utf-8", "replace")
    if _JSON_START.match(head):
        return "got JSON: " + head[:200].decode("utf-8", "replace")
    return None


class OggOpusDecoder:
    """Incremental Ogg Opus decoder: feed bytes as they arrive, get float32 PCM.

    Sans-I/O apart from libopus: no sockets, files or clocks. Each packet is decoded as soon as
    its bytes are in (it does not wait for the end of its Ogg page). Damage (garbage, CRC
    failures, missing pages, undecodable packets) never raises: it is reported in `events` and
    concealed so that the output keeps the stream's length.

    Args:
        sample_rate: Decode rate: 8000, 12000, 16000, 24000 or 48000 (the OpusHead's input
            rate is informational only and never used).
        fec: After a hole, rebuild the end of the missing audio from the forward error
            correction data of the packet that follows, when the encoder put some there
            (better than plain concealment; the same when there is none).

    Attributes:
        sample_rate: The decode rate.
        fec: Whether forward error correction is used after holes.
        channels: Channel count of the current link (None before its OpusHead).
        head: The current link's OpusHead (None before it).
        tags: The current link's OpusTags (None before them or if they were unreadable).
        events: Every stream event so far, in order.
        position: Samples (frames) returned so far.

    Example:
        >>> dec = OggOpusDecoder(48000)
        >>> for chunk in chunks:  # doctest: +SKIP
        ...     for block in dec.feed(chunk):
        ...         play(block)  # float32, shape (frames, channels)
        >>> tail = dec.close()  # doctest: +SKIP
    """

    def __init__(self, sample_rate: int = 48000, *, fec: bool = True) -> None:
        self._k = _check_rate(sample_rate)
        self.sample_rate = sample_rate
        self.fec = fec
        self.channels: int | None = None
        self.head: OpusHead | None = None
        self.tags: OpusTags | None = None
        self.events: list[StreamEvent] = []
        self.position = 0
        self._popped = 0
        self._reader = OggReader()
        self._closed = False
        self._error: ProtocolError | None = None
        # What the input was, for the error when it holds no Opus stream.
        self._sniff = bytearray()
        self._other_codecs: list[str] = []
        self._saw_packets = False
        self._links = 0
        # The current link.
        self._phase = _SEEK
        self._serial = -1
        self._decoder: _Decoder | None = None
        self._skip_left = 0
        self._start48: int | None = None
        self._decoded48 = 0
        self._link_out = 0
        # Concealment budget (see _FILL_ALLOWANCE_48), over all links, at 48 kHz.
        self._real48 = 0
        self._filled48 = 0
        self._page_key: tuple[int, int] | None = None
        self._held: list[OggPacket] = []
        self._resync = False
        self._holes: list[DataLost] = []
        # Output staging: decoded frames not yet returned, and finished blocks of this call.
        self._max_out = _MAX_PACKET_48 // self._k
        self._buf: Pcm = np.empty((0, 1), np.float32)
        self._buf_addr = 0
        self._frame_bytes = 4
        self._fill = 0
        self._blocks: list[Pcm] = []
        self._queued = 0

    # ---- public API ---------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> list[Pcm]:
        """Add bytes; return the PCM blocks they completed (float32, ``(frames, channels)``).

        Raises:
            ProtocolError: The input is certainly not Ogg Opus (e.g. it starts as WAV, HTML or
                JSON, or is an Ogg stream of another codec); `UnsupportedFormat` for an Opus
                stream this decoder cannot play (mapping family other than 0/1).
            UsageError: The decoder was closed.
        """
        self._check_open()
        if data and len(self._sniff) < _SNIFF_BYTES:
            self._sniff += bytes(data[: _SNIFF_BYTES - len(self._sniff)])
            if self._links == 0 and not self._saw_packets and len(self._sniff) >= 16:
                found = _sniff(bytes(self._sniff))
                if found is not None:
                    self._fail(ProtocolError(f"expected an Ogg Opus stream, {found}"))
        self._process(self._reader.feed(data))
        return self._drain()

    def close(self) -> list[Pcm]:
        """End of input: decode what is held back, return the last blocks.

        Raises:
            ProtocolError: No usable Opus stream was found; the message says what the input
                was instead.
        """
        self._check_open()
        self._closed = True
        self._process(self._reader.close())
        self._flush_held()
        self._emit_holes()
        if self._links == 0:
            self._fail(ProtocolError(self._diagnose()))
        out = self._drain()
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        return out

    def pop_events(self) -> list[StreamEvent]:
        """The events found since the last call."""
        new = self.events[self._popped :]
        self._popped = len(self.events)
        return new

    # ---- dispatch -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise UsageError("OggOpusDecoder used after close()")

    def _fail(self, error: ProtocolError) -> None:
        self._error = error
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        raise error

    def _process(self, items: list[OggPacket | StreamEvent]) -> None:
        for item in items:
            if isinstance(item, OggPacket):
                self._saw_packets = True
                if item.first:
                    self._on_bos(item)
                elif item.serial == self._serial:
                    self._on_packet(item)
                elif self._links == 0 and self._other_codecs:
                    # All BOS pages of a link precede its data pages: no Opus stream follows.
                    self._fail(
                        ProtocolError(
                            "expected an Ogg Opus stream, got an Ogg stream but not Opus "
                            f"({', '.join(self._other_codecs)})"
                        )
                    )
            elif isinstance(item, DataLost):
                self._on_hole(item)
            else:
                self.events.append(item)

    def _on_bos(self, packet: OggPacket) -> None:
        if not packet.data.startswith(_HEAD_MAGIC):
            self._other_codecs.append(_ogg_codec(packet.data))
            return
        if self._phase == _TAGS:
            return  # a second Opus stream of the same link (grouping): the first one is played
        try:
            head = OpusHead.parse(packet.data)
            decoder = _Decoder(head, self.sample_rate)
        except ProtocolError as exc:
            if self._links == 0:
                self._fail(exc)
            self.events.append(DataLost(packet.offset, self._timeline(), 0, "unsupported-stream"))
            return
        self._end_link()
        self._start_link(head, decoder, packet)

    def _on_packet(self, packet: OggPacket) -> None:
        if self._phase == _AUDIO:
            self._on_audio(packet)
        elif self._phase == _TAGS:
            self._phase = _AUDIO
            if packet.data.startswith(_TAGS_MAGIC):
                try:
                    self.tags = OpusTags.parse(packet.data)
                except ProtocolError:
                    self.tags = None
                self._page_key = None
                if packet.eos:  # a stream without audio
                    self._finish_link(packet)
            else:  # the tags were lost: this is already audio
                self._on_audio(packet)

    def _on_hole(self, event: DataLost) -> None:
        if self._phase != _AUDIO:
            self.events.append(DataLost(event.offset, self._timeline(), 0, event.reason))
            return
        self._flush_held()  # packets from before the hole
        self._page_key = None
        self._resync = True
        self._holes.append(event)

    # ---- links --------------------------------------------------------------------------------

    def _start_link(self, head: OpusHead, decoder: _Decoder, packet: OggPacket) -> None:
        self._links += 1
        self._decoder = decoder
        self._serial = packet.serial
        self._phase = _TAGS
        self.head = head
        self.tags = None
        if head.channels != self.channels:
            self._flush_staging()
            self.channels = head.channels
            self._frame_bytes = 4 * head.channels
            capacity = max(int(self.sample_rate * _INITIAL_STAGING_S), 2 * self._max_out)
            self._set_buffer(np.empty((capacity, head.channels), np.float32))
        self._skip_left = self._to_out(head.pre_skip)
        self._start48 = None
        self._decoded48 = 0
        self._link_out = 0
        self._page_key = None
        self._resync = False
        self.events.append(
            HeaderReceived(
                offset=packet.offset,
                codec="opus",
                serial=packet.serial,
                channels=head.channels,
                sample_rate=self.sample_rate,
                pre_skip=head.pre_skip,
                gain_db=head.gain_db,
            )
        )

    def _end_link(self) -> None:
        """The current link stops without its EOS (a new link began): decode what is held."""
        self._flush_held()
        self._emit_holes()
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        self._phase = _SEEK

    def _finish_link(self, packet: OggPacket) -> None:
        self.events.append(StreamEnded(packet.offset, packet.serial, self._link_out))
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None
        self._phase = _ENDED

    # ---- audio pages --------------------------------------------------------------------------

    def _on_audio(self, packet: OggPacket) -> None:
        key = (packet.serial, packet.page_sequence)
        if self._page_key is not None and key != self._page_key:
            self._flush_held()  # the previous page lost its end; its granule is unusable
        self._page_key = key
        if not packet.last_on_page:
            if self._resync or self._held or self._passes_granule(packet):
                self._held.append(packet)
            else:
                self._decode(packet)
            return
        self._page_key = None
        packets = [*self._held, packet]
        self._held = []
        self._complete_page(packets, packet)

    def _passes_granule(self, packet: OggPacket) -> bool:
        """Would this packet end after its page's granule (only on an EOS page, normally)?"""
        start = self._start48 if self._start48 is not None else 0
        return start + self._decoded48 + _duration_48(packet.data) > packet.granule

    def _complete_page(self, packets: list[OggPacket], last: OggPacket) -> None:
        if last.eos:
            # End trimming may cut only the EOS page's own samples: hand out what came before,
            # so the result does not depend on how the input was chunked.
            self._flush_staging()
        granule = last.granule
        if granule < 0:  # no time on a page where packets end (invalid): check the next one
            for p in packets:
                self._decode(p)
            if last.eos:
                self._finish_link(last)
            return
        held48 = sum(_duration_48(p.data) for p in packets)
        start = self._start48 if self._start48 is not None else 0
        gap = granule - (start + self._decoded48 + held48)
        hole = 0  # missing duration to fill
        if self._start48 is None:
            if gap < 0 and last.eos:
                self._start48 = 0  # a one-page stream: the end is trimmed
            elif self._resync and 0 < gap <= _MAX_FILL_48:
                self._start48 = 0  # the first audio was lost: the stream started at 0
                hole = gap
            else:
                self._start48 = gap  # a stream that starts later (or an invalid granule)
        elif (self._resync or not last.eos) and gap > 0:
            hole = gap
        if hole:
            self._conceal_hole(hole, packets[0].data if self.fec else b"", last.offset)
        self._emit_holes()
        self._resync = False
        for p in packets:
            self._decode(p)
        if last.eos:
            assert self._start48 is not None
            assert self.head is not None
            limit = max(0, granule - self._start48 - self.head.pre_skip) // self._k
            excess = self._link_out - limit
            if excess > 0:
                cut = min(excess, self._fill)
                self._fill -= cut
                self._link_out -= cut
            self._finish_link(last)

    def _conceal_hole(self, hole: int, next_packet: bytes, offset: int) -> None:
        """Conceal a hole of ``hole`` samples (48 kHz) found at the page at ``offset``, within
        the per-hole cap and the decoder's budget; what is not concealed leaves the timeline
        (the link's start moves, so the next pages line up and end trimming stays right)."""
        budget = max(0, _FILL_ALLOWANCE_48 + self._real48 - self._filled48)
        if hole <= min(_MAX_FILL_48, budget):
            fill = -(-hole // _PLC_STEP_48) * _PLC_STEP_48  # whole 2.5 ms steps
        else:
            fill = min(_MAX_FILL_48, budget) // _PLC_STEP_48 * _PLC_STEP_48
            assert self._start48 is not None
            self._start48 += hole - fill
        cause = self._holes.pop(0) if self._holes else None
        reason = cause.reason if cause else "granule-gap"
        where = cause.offset if cause else offset
        if fill:
            self._filled48 += fill
            self._conceal(fill, reason, where, next_packet=next_packet)
        else:
            self.events.append(DataLost(where, self._timeline(), 0, reason))

    def _flush_held(self) -> None:
        held, self._held = self._held, []
        for p in held:
            self._decode(p)

    def _emit_holes(self) -> None:
        for hole in self._holes:
            self.events.append(DataLost(hole.offset, self._timeline(), 0, hole.reason))
        self._holes = []

    # ---- decoding into the staging buffer -----------------------------------------------------

    def _decode(self, packet: OggPacket) -> None:
        data = packet.data
        assert self._decoder is not None
        if not data:
            self._conceal(_DEFAULT_LOST_48, "empty-packet", packet.offset)
            return
        if self._fill + self._max_out > len(self._buf):
            self._grow(self._max_out)
        n = self._decoder.decode(
            data, self._buf_addr + self._fill * self._frame_bytes, self._max_out
        )
        if n < 0:
            self._conceal(_duration_48(data), "bad-packet", packet.offset)
            return
        self._decoded48 += n * self._k
        self._real48 += n * self._k
        self._commit(n)

    def _conceal(
        self, samples48: int, reason: str, offset: int, *, next_packet: bytes = b""
    ) -> None:
        """Fill ``samples48`` (a multiple of 2.5 ms) with concealment and report it; with the
        packet that follows the loss, its forward error correction data rebuilds the end."""
        assert self._decoder is not None
        position = self._timeline()
        before = self._link_out
        left = samples48
        while left > 0:
            chunk = min(left, _MAX_PACKET_48)
            frames = chunk // self._k
            if self._fill + frames > len(self._buf):
                self._grow(frames)
            out = self._buf_addr + self._fill * self._frame_bytes
            done = -1
            if left == chunk and next_packet:
                done = self._decoder.recover(next_packet, out, frames)
            if done < 0:
                done = self._decoder.conceal(out, frames)
            if done != frames:
                self._buf[self._fill : self._fill + frames] = 0.0
            self._decoded48 += chunk
            self._commit(frames)
            left -= chunk
        self.events.append(DataLost(offset, position, self._link_out - before, reason))

    def _commit(self, n: int) -> None:
        """Make ``n`` frames decoded at the fill point part of the output, minus pre-skip."""
        if self._skip_left:
            drop = min(self._skip_left, n)
            self._skip_left -= drop
            if drop < n:
                f = self._fill
                self._buf[f : f + n - drop] = self._buf[f + drop : f + n]
            n -= drop
        self._fill += n
        self._link_out += n

    def _to_out(self, samples48: int) -> int:
        """Output samples before 48 kHz time ``samples48`` (ceil at reduced rates)."""
        return -(-samples48 // self._k)

    def _timeline(self) -> int:
        return self.position + self._queued + self._fill

    def _set_buffer(self, buf: Pcm) -> None:
        self._buf = buf
        self._buf_addr = buf.ctypes.data

    def _grow(self, frames: int) -> None:
        capacity = max(2 * len(self._buf), self._fill + frames)
        new = np.empty((capacity, self._buf.shape[1]), np.float32)
        new[: self._fill] = self._buf[: self._fill]
        self._set_buffer(new)

    def _flush_staging(self) -> None:
        if self._fill:
            self._blocks.append(self._buf[: self._fill].copy())
            self._queued += self._fill
            self._fill = 0

    def _drain(self) -> list[Pcm]:
        self._flush_staging()
        out, self._blocks = self._blocks, []
        self.position += self._queued
        self._queued = 0
        return out

    def _diagnose(self) -> str:
        head = bytes(self._sniff)
        if not head:
            return "expected an Ogg Opus stream, got no data"
        if self._other_codecs:
            return (
                "expected an Ogg Opus stream, got an Ogg stream but not Opus "
                f"({', '.join(self._other_codecs)})"
            )
        if self._saw_packets:
            return (
                "expected an Ogg Opus stream, got Ogg pages without an OpusHead (the stream does "
                "not start at its beginning, or its first page was damaged)"
            )
        found = _sniff(head)
        if found is not None:
            return f"expected an Ogg Opus stream, {found}"
        if b"OggS" in head:
            return "expected an Ogg Opus stream, got damaged Ogg data with no complete page"
        return (
            f"expected an Ogg Opus stream, got {len(head)}"
            f"{'+' if len(head) >= _SNIFF_BYTES else ''} bytes of unknown data starting with "
            f"{head[:16]!r}"
        )


def decode_opus_stream(chunks: Iterable[bytes], sample_rate: int = 48000) -> Pcm:
    """Decode a whole Ogg Opus stream given as chunks of bytes.

    Args:
        chunks: The stream's bytes, in any chunking (e.g. ``[data]`` or an HTTP body iterator).
        sample_rate: Decode rate (8000, 12000, 16000, 24000 or 48000).

    Returns:
        float32 PCM, shape ``(frames, channels)``.

    Raises:
        ProtocolError: The data holds no usable Opus stream.
        UnsupportedFormat: The stream cannot be played, or its chained links have channel
            counts that cannot be joined (mono and stereo links are all returned as stereo).
    """
    decoder = OggOpusDecoder(sample_rate)
    blocks: list[Pcm] = []
    for chunk in chunks:
        blocks += decoder.feed(chunk)
    blocks += decoder.close()
    channels = {b.shape[1] for b in blocks}
    if channels == {1, 2}:  # chained mono and stereo links: play all as stereo, as opusdec
        blocks = [np.repeat(b, 2, axis=1) if b.shape[1] == 1 else b for b in blocks]
    elif len(channels) > 1:
        raise UnsupportedFormat(f"chained Opus links have different channel counts {channels}")
    if not blocks:
        return np.zeros((0, decoder.channels or 1), np.float32)
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------

_FRAME_MS = (2.5, 5.0, 10.0, 20.0, 40.0, 60.0)


class OggOpusEncoder:
    """Incremental Ogg Opus encoder (libopus + `OggWriter`).

    Args:
        sample_rate: Input rate: 8000, 12000, 16000, 24000 or 48000.
        channels: 1 or 2 (mapping family 0).
        bitrate: Target bits per second (None: libopus's default for the rate and channels).
        frame_ms: Frame duration: 2.5, 5, 10, 20, 40 or 60.
        page_ms: A page is written once it holds at least this much audio (20 ms with 20 ms
            frames: one packet per page, the lowest latency; 1000: opusenc's default layout).
        padding: Zero bytes appended to OpusTags (room for later tag edits, as opusenc does).
        serial: Ogg serial number (random if None).
        application: ``"audio"``, ``"voip"`` or ``"restricted_lowdelay"``.
        fec: Add in-band forward error correction (a low-bitrate copy of each frame in the
            next packet, SILK/hybrid modes only), planned for 10 % loss.

    `encode` returns the bytes ready so far (the first call includes the OpusHead and OpusTags
    pages); `finish` flushes the encoder's look-ahead and writes the EOS page whose granule trims
    the padding, so a decoder outputs exactly the samples given.
    """

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        *,
        bitrate: int | None = None,
        frame_ms: float = 20,
        page_ms: float = 20,
        padding: int = 0,
        serial: int | None = None,
        application: str = "audio",
        fec: bool = False,
    ) -> None:
        self._k = _check_rate(sample_rate)
        if channels not in (1, 2):
            raise UsageError(f"OggOpusEncoder encodes 1 or 2 channels, not {channels}")
        if frame_ms not in _FRAME_MS:
            raise UsageError(f"frame_ms must be one of {_FRAME_MS}, not {frame_ms}")
        if application not in _APPLICATIONS:
            raise UsageError(f"application must be one of {sorted(_APPLICATIONS)}")
        if padding < 0 or page_ms < 0:
            raise UsageError("padding and page_ms must not be negative")
        self.sample_rate = sample_rate
        self.channels = channels
        self._frame = int(sample_rate * frame_ms / 1000)
        self._frame48 = self._frame * self._k
        self._page48 = int(page_ms * 48)
        lib = self._lib = _libopus()
        err = ctypes.c_int(0)
        state = lib.encoder_create(
            sample_rate, channels, _APPLICATIONS[application], ctypes.byref(err)
        )
        if err.value != 0 or not state:
            raise UsageError(f"libopus refused the encoder settings: {lib.error(err.value)}")
        self._state: int = state
        self._finalizer = weakref.finalize(self, lib.encoder_destroy, state)
        if bitrate is not None:
            code = lib.encoder_ctl_int(state, _OPUS_SET_BITRATE, int(bitrate))
            if code != 0:
                raise UsageError(f"libopus refused bitrate {bitrate}: {lib.error(code)}")
        if fec:
            lib.encoder_ctl_int(state, _OPUS_SET_INBAND_FEC, 1)
            lib.encoder_ctl_int(state, _OPUS_SET_PACKET_LOSS_PERC, _FEC_LOSS_PERCENT)
        lookahead = ctypes.c_int(0)
        lib.encoder_ctl_get(state, _OPUS_GET_LOOKAHEAD, ctypes.byref(lookahead))
        self._lookahead = lookahead.value  # at the input rate
        self.head = OpusHead(
            channels, pre_skip=self._lookahead * self._k, input_sample_rate=sample_rate
        )
        self.tags = OpusTags("streamtts", (), b"\0" * padding)
        self._writer = OggWriter(serial if serial is not None else random.getrandbits(32))
        self._pending: Pcm = np.zeros((0, channels), np.float32)
        self._samples_in = 0
        self._granule = 0
        self._page_fill48 = 0
        self._started = False
        self._finished = False
        self._out_buf = ctypes.create_string_buffer(_MAX_ENCODED_BYTES)

    def encode(self, pcm: npt.NDArray[Any]) -> bytes:
        """Encode samples (float32 in [-1, 1] or int16; shape ``(frames, channels)``, or 1-D for
        mono); return the Ogg bytes completed so far.

        Raises:
            UsageError: Wrong shape or dtype, or called after `finish`.
        """
        if self._finished:
            raise UsageError("OggOpusEncoder.encode() after finish()")
        block = self._as_float(pcm)
        self._samples_in += len(block)
        out = bytearray(self._headers())
        data = np.concatenate((self._pending, block)) if len(self._pending) else block
        whole = len(data) - len(data) % self._frame
        out += self._encode_frames(data[:whole], final_granule=None)
        self._pending = np.ascontiguousarray(data[whole:])
        return bytes(out)

    def finish(self) -> bytes:
        """Encode the rest (padded with silence to flush the look-ahead) and end the stream.

        Returns:
            The last pages, the EOS page included.
        """
        if self._finished:
            raise UsageError("OggOpusEncoder.finish() called twice")
        out = bytearray(self._headers())
        # The decoder's output lags by the look-ahead: encode until that much extra is in.
        encoded = self._granule // self._k
        needed = self._samples_in + self._lookahead - encoded
        frames = max(1, -(-needed // self._frame))
        data = np.zeros((frames * self._frame, self.channels), np.float32)
        data[: len(self._pending)] = self._pending
        final = self.head.pre_skip + self._samples_in * self._k
        out += self._encode_frames(data, final_granule=final)
        self._finished = True
        self._finalizer()
        return bytes(out)

    def _as_float(self, pcm: npt.NDArray[Any]) -> Pcm:
        array = np.asarray(pcm)
        if array.ndim == 1 and self.channels == 1:
            array = array.reshape(-1, 1)
        if array.ndim != 2 or array.shape[1] != self.channels:
            raise UsageError(f"expected PCM shaped (frames, {self.channels}), got {array.shape}")
        if array.dtype == np.int16:
            scaled: Pcm = np.multiply(array, np.float32(1 / 32768), dtype=np.float32)
            return scaled
        if array.dtype.kind != "f":
            raise UsageError(f"expected float32 or int16 PCM, got {array.dtype}")
        return np.ascontiguousarray(array, np.float32)

    def _headers(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        self._writer.add(self.head.to_bytes(), 0)
        out = self._writer.page()
        self._writer.add(self.tags.to_bytes(), 0)
        return out + self._writer.page()

    def _encode_frames(self, data: Pcm, *, final_granule: int | None) -> bytes:
        """Encode whole frames. With ``final_granule`` (from `finish`) every packet goes to the
        final page(s): end trimming may only cut the last page, so no earlier page may carry a
        granule above the final one."""
        lib, state, frame = self._lib, self._state, self._frame
        out_addr = ctypes.addressof(self._out_buf)
        pages = bytearray()
        count = len(data) // frame
        for i in range(count):
            chunk = np.ascontiguousarray(data[i * frame : (i + 1) * frame])
            n = lib.encode_float(state, chunk.ctypes.data, frame, out_addr, _MAX_ENCODED_BYTES)
            if n < 0:
                raise UsageError(f"libopus failed to encode: {lib.error(n)}")
            self._granule += self._frame48
            packet = self._out_buf.raw[:n]
            if final_granule is not None:
                last = i == count - 1
                self._writer.add(packet, min(self._granule, final_granule), eos=last)
                continue
            self._writer.add(packet, self._granule)
            self._page_fill48 += self._frame48
            if self._page_fill48 >= self._page48:
                pages += self._writer.page()
                self._page_fill48 = 0
        if final_granule is not None:
            pages += self._writer.page(eos=True)
        return bytes(pages)
