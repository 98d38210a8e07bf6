"""Fuzz target: the Ogg Opus decoder (`OggOpusDecoder`) and the Opus header/TOC parsers.

Oracles, for any input:

* `OggOpusDecoder` either decodes it or raises a `ProtocolError` (`UnsupportedFormat`
  included), and the same one whether fed whole or in a split derived from the input; a failed
  decoder keeps failing; the PCM (float32, ``(frames, channels)``, C-contiguous, finite) and the
  events are identical for both feedings; ``position`` counts the frames returned;
  ``pop_events`` hands out exactly ``events``;
* a clean chain link appended to any input (that was not rejected) is decoded to exactly its
  length: nothing of the damage before it carries over (unless it came while the link before
  it waited for its OpusTags: then it is a grouped stream, which the decoder ignores);
* `OpusHead.parse` / `OpusTags.parse` (on the input and on every packet the demuxer finds in
  it) accept or raise `ProtocolError`; what they accept survives ``parse(to_bytes())``;
* `packet_samples` agrees with libopus ``opus_packet_get_nb_samples`` at every decode rate, and
  raises `ProtocolError` exactly where libopus reports an invalid packet (or zero samples).

Run: ``python fuzz/fuzz_opus.py fuzz/corpus/opus -dict=fuzz/formats.dict`` (see fuzz/README.md).
"""

from __future__ import annotations

import ctypes
import functools
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import _fuzzlib
import numpy as np

with _fuzzlib.instrumented(__name__):
    from streamtts._backends import load_opuslib
    from streamtts.errors import ProtocolError
    from streamtts.events import (
        DataLost,
        HeaderReceived,
        StreamEnded,
        StreamEvent,
    )
    from streamtts.ogg import OggPacket, OggReader
    from streamtts.opus import (
        SAMPLE_RATES,
        OggOpusDecoder,
        OggOpusEncoder,
        OpusHead,
        OpusTags,
        packet_samples,
    )

# A clean link appended to every input (a new chain link, serial of its own, 60 ms of a tone in
# three 20 ms pages; the encoder's granules trim it to exactly 2880 samples at 48 kHz): whatever
# came before, it must be decoded in full, with its own pre-skip and nothing carried over.
_TAIL_SERIAL = 0x7A11
_TAIL_FRAMES_48K = 2880


@functools.cache
def _tail_link() -> bytes:
    encoder = OggOpusEncoder(48000, 1, serial=_TAIL_SERIAL, page_ms=20)
    t = np.arange(_TAIL_FRAMES_48K) / 48000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]
    return encoder.encode(tone) + encoder.finish()


# Decode rate per input: 48 kHz (the common case, and where granules need no scaling) for half
# the inputs, each reduced rate for one eighth.
_RATES = (48000, 48000, 48000, 48000, 24000, 16000, 12000, 8000)


@functools.cache
def _libopus_nb_samples() -> Callable[[bytes, int, int], int]:
    """libopus ``opus_packet_get_nb_samples`` with its own prototype (opuslib's shared function
    objects stay untouched)."""
    lib = load_opuslib().api.libopus
    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32)
    function: Callable[[bytes, int, int], int] = proto(("opus_packet_get_nb_samples", lib))
    return function


def check_packet(packet: bytes) -> None:
    """The header parsers and `packet_samples` on one packet (any bytes)."""
    try:
        head = OpusHead.parse(packet)
    except ProtocolError:
        pass
    else:
        assert 1 <= head.channels <= 255
        assert len(head.channel_mapping) == head.channels
        assert OpusHead.parse(head.to_bytes()) == head
    try:
        tags = OpusTags.parse(packet)
    except ProtocolError:
        pass
    else:
        assert OpusTags.parse(tags.to_bytes()) == tags
    nb_samples = _libopus_nb_samples()
    for rate in SAMPLE_RATES:
        expected = nb_samples(packet, len(packet), rate) if packet else -1
        try:
            got = packet_samples(packet, rate)
        except ProtocolError:
            assert expected <= 0, f"libopus reads {expected} samples at {rate} Hz"
        else:
            assert got == expected, f"{got} samples at {rate} Hz, libopus says {expected}"


@dataclass
class Outcome:
    """What one decoder run gave: PCM runs per channel count, events, or the error type."""

    pcm: list[tuple[int, bytes]]
    events: list[StreamEvent]
    error: type[ProtocolError] | None


def decode(chunks: list[bytes], rate: int, fec: bool) -> Outcome:
    """Run an `OggOpusDecoder` over ``chunks``, checking every block and its bookkeeping."""
    decoder = OggOpusDecoder(rate, fec=fec)
    runs: list[tuple[int, bytearray]] = []
    popped: list[StreamEvent] = []
    frames = 0

    def take(blocks: list[np.ndarray]) -> None:
        nonlocal frames
        for block in blocks:
            assert block.dtype == np.float32, block.dtype
            assert block.ndim == 2, block.shape
            assert block.flags.c_contiguous
            assert 1 <= block.shape[1] <= 255
            assert np.isfinite(block).all(), "non-finite samples"
            frames += block.shape[0]
            if runs and runs[-1][0] == block.shape[1]:
                runs[-1][1].extend(block.tobytes())
            else:
                runs.append((block.shape[1], bytearray(block.tobytes())))

    try:
        for chunk in chunks:
            take(decoder.feed(chunk))
            popped += decoder.pop_events()
        take(decoder.close())
    except ProtocolError as exc:
        retries: list[Callable[[], object]] = [functools.partial(decoder.feed, b""), decoder.close]
        for retry in retries:
            try:
                retry()
            except ProtocolError:
                pass
            else:
                raise AssertionError("a failed decoder accepted more calls") from exc
        return Outcome([], [], type(exc))
    popped += decoder.pop_events()
    assert popped == decoder.events, "pop_events() lost or repeated events"
    assert decoder.position == frames
    for event in decoder.events:
        if isinstance(event, DataLost):
            assert event.position >= 0, event
            assert event.samples >= 0, event
    return Outcome([(c, bytes(b)) for c, b in runs], list(decoder.events), None)


@_fuzzlib.contract
def check(data: bytes, chunks: list[bytes] | None = None) -> None:
    """Assert the decoder's and parsers' contract on ``data`` (see the module docstring)."""
    check_packet(data)
    for item in OggReader().feed(data):
        if isinstance(item, OggPacket):
            check_packet(item.data)
    seed = zlib.crc32(data)
    rate, fec = _RATES[seed % len(_RATES)], bool(seed & 0x100)
    whole = decode([data], rate, fec)
    split = decode(_fuzzlib.chunk_plan(data) if chunks is None else chunks, rate, fec)
    assert split.error is whole.error, f"whole: {whole.error}, split: {split.error}"
    if (split.events, split.pcm) != (whole.events, whole.pcm) and not _known_issue(whole, split):
        assert split.events == whole.events, "events depend on the chunking"
        assert split.pcm == whole.pcm, "PCM depends on the chunking"
    check_tail(data, rate, fec)


def check_tail(data: bytes, rate: int, fec: bool) -> None:
    """A clean chain link after any input is decoded in full (see `_tail_link`)."""
    tail = _tail_link()
    outcome = decode([data, tail], rate, fec)
    if outcome.error is not None:
        return  # the input was rejected (HTML, another codec…): nothing is decoded after that
    ends = [
        e.position
        for e in outcome.events
        if isinstance(e, StreamEnded) and e.serial == _TAIL_SERIAL
    ]
    if ends:
        assert ends == [_TAIL_FRAMES_48K * rate // 48000], f"the appended link gave {ends} frames"
        return
    assert not any(
        isinstance(e, HeaderReceived) and e.serial == _TAIL_SERIAL for e in outcome.events
    ), "the appended link started but never ended"
    # Not started: allowed only when its BOS page came while the link before it waited for its
    # OpusTags (a grouped stream, RFC 7845 §3: the first Opus stream is played).
    assert _grouped_with_previous_link(data + tail), "the appended link was not decoded"


def _grouped_with_previous_link(data: bytes) -> bool:
    """True if, in the demuxed ``data``, the appended link's BOS came while a link started
    before it still waited for its OpusTags: the decoder then takes it as a second stream of a
    grouped link and plays the first one (RFC 7845 §3)."""
    waiting: int | None = None  # serial of the started link that has no OpusTags packet yet
    reader = OggReader()
    for item in reader.feed(data) + reader.close():
        if not isinstance(item, OggPacket):
            continue
        if item.first:  # a BOS packet; those of other codecs are ignored by the decoder
            if not item.data.startswith(b"OpusHead"):
                continue
            if item.serial == _TAIL_SERIAL:
                return waiting is not None
            if waiting is None and _starts_link(item.data):
                waiting = item.serial
        elif item.serial == waiting:
            waiting = None
    return False


def _starts_link(head: bytes) -> bool:
    """Whether the decoder starts a link on this OpusHead (parsed, family 0 or 1)."""
    try:
        return OpusHead.parse(head).mapping_family in (0, 1)
    except ProtocolError:
        return False


def _known_issue(whole: Outcome, split: Outcome) -> bool:
    """The first difference is the length of a link at its EOS page ("eos-trim")."""
    if "eos-trim" not in _fuzzlib.KNOWN_ISSUES:
        return False
    for a, b in zip(whole.events, split.events, strict=False):
        if a != b:
            return (
                isinstance(a, StreamEnded)
                and isinstance(b, StreamEnded)
                and (a.offset, a.serial) == (b.offset, b.serial)
            )
    return False


if __name__ == "__main__":
    from make_seeds import make_all

    _fuzzlib.main(check, seeds=lambda: make_all()["opus"], ogg=True)
    sys.exit(0)
