"""Mutation tests of the format readers: valid small streams, damaged at random, fed at random.

The streams are the fuzzers' seeds (``fuzz/make_seeds.py``: Ogg layouts, Ogg Opus from
`OggOpusEncoder`, WAV in every sample format). Hypothesis applies byte flips, insertions,
deletions, truncations, duplicated ranges, format keywords and, for Ogg, duplicated, dropped and
swapped pages and edited page headers with their CRC repaired (so the damage reaches the logic
behind the checksum), then cuts the result at random points. The oracles are the fuzz targets'
``check`` functions (see ``fuzz/fuzz_*.py``): only success or a `ProtocolError` (incl.
`UnsupportedFormat`), the same output fed whole and in the random split, the Ogg reader's buffer
within one page; then the bounded-memory behaviours on 1 MB inputs, which are too big for the
fuzzers.
"""

from __future__ import annotations

import functools
import struct
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.fuzzing import load

from streamtts.errors import ProtocolError, UsageError
from streamtts.events import StreamEvent, StreamTruncated, SyncLost
from streamtts.ogg import MAX_PAGE_SIZE, OggPacket, OggReader, build_page
from streamtts.opus import OggOpusDecoder
from streamtts.wav import PcmReader, WavReader, wav_header

fuzzlib = load("_fuzzlib")
fuzz_ogg = load("fuzz_ogg")
fuzz_opus = load("fuzz_opus")
fuzz_wav = load("fuzz_wav")
make_seeds = load("make_seeds")

_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def _seeds(kind: str) -> dict[str, bytes]:
    makers: dict[str, Callable[[], dict[str, bytes]]] = {
        "ogg": make_seeds.ogg_seeds,
        "opus": make_seeds.opus_seeds,
        "wav": make_seeds.wav_seeds,
    }
    return makers[kind]()


def _names(kind: str) -> list[str]:
    return sorted(_seeds(kind))


edits = st.lists(
    st.tuples(
        st.sampled_from(fuzzlib.EDIT_KINDS), st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1)
    ),
    min_size=1,
    max_size=5,
)
byte_edits = st.lists(
    st.tuples(
        st.sampled_from(fuzzlib.EDIT_KINDS[:7]),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**16 - 1),
    ),
    min_size=1,
    max_size=5,
)
cut_points = st.lists(st.integers(0, 2**20), max_size=40)


def _edited(data: bytes, edit_list: list[tuple[str, int, int]]) -> bytes:
    for kind, where, value in edit_list:
        data = fuzzlib.apply_edit(data, kind, where, value)
    return data


# ---- the oracles can fail -------------------------------------------------------------------


class _SplitSensitiveReader(OggReader):
    """A broken reader: loses what a 1-byte chunk completes."""

    def feed(self, data: bytes | bytearray | memoryview) -> list[OggPacket | StreamEvent]:
        out = super().feed(data)
        return [] if len(data) == 1 else out


def test_the_ogg_oracle_catches_output_that_depends_on_the_chunking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = _seeds("ogg")["interleaved"]
    fuzz_ogg.check(data, fuzzlib.split_at(data, range(len(data))))
    monkeypatch.setattr(fuzz_ogg, "OggReader", _SplitSensitiveReader)
    with pytest.raises(AssertionError, match="chunking"):
        fuzz_ogg.check(data, fuzzlib.split_at(data, range(len(data))))


def test_the_wav_oracle_lets_any_exception_but_protocol_error_escape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Crashing(WavReader):
        def feed(self, data: bytes) -> list[np.ndarray]:
            raise KeyError("a bug")

    monkeypatch.setattr(fuzz_wav, "WavReader", Crashing)
    with pytest.raises(KeyError):
        fuzz_wav.check(_seeds("wav")["s16le-sized"])


def test_the_clean_stream_oracle_compares_with_the_reference_parse() -> None:
    data = _seeds("ogg")["sizes-maxseg3"]
    reference = fuzzlib.reference_ogg_packets(data)
    assert reference is not None
    assert [p for _, p, _ in reference] == [
        bytes([k + 1]) * n for k, n in enumerate([0, 1, 254, 255, 256, 510, 600])
    ]
    assert fuzzlib.reference_ogg_packets(fuzzlib.apply_edit(data, "flip", 100, 1)) is None


# Seeds of the WAV target that are other formats, for the sniffer.
_NOT_WAV = {"html", "json", "ogg-head", "id3", "riff-avi", "ct-l16", "ct-ogg", "ct-problem-json"}


class _TailDroppingReader(OggReader):
    """A broken reader: loses every page of the serial the tail oracle appends."""

    def feed(self, data: bytes | bytearray | memoryview) -> list[OggPacket | StreamEvent]:
        items = super().feed(data)
        return [x for x in items if not (isinstance(x, OggPacket) and x.serial == 0x7A11)]


def test_the_tail_oracle_accepts_a_page_that_legitimately_swallows_the_appended_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The input's last page lacks its final byte, "O": the appended page's first byte completes
    # it (CRC right), so the appended page is broken by design, not lost by the reader.
    page = build_page(9, 0, 0, [b"xyzO"], bos=True)
    fuzz_ogg.check_tail(page[:-1])
    fuzz_ogg.check_tail(page[:-2])  # page CRC wrong: resync, the appended page is read
    monkeypatch.setattr(fuzz_ogg, "OggReader", _TailDroppingReader)
    with pytest.raises(AssertionError, match="lost"):
        fuzz_ogg.check_tail(page[:-2])


@pytest.mark.parametrize("kind", ["ogg", "opus", "wav"])
def test_the_seeds_are_clean_streams(kind: str) -> None:
    for name, data in _seeds(kind).items():
        if kind == "ogg" and name != "garbage-between":
            items = OggReader().feed(data)
            assert not [x for x in items if isinstance(x, StreamEvent)], name
        elif kind == "opus" and name.startswith("not-ogg"):
            with pytest.raises(ProtocolError):
                OggOpusDecoder().feed(data)
        elif kind == "opus" and "truncated" not in name:
            decoder = OggOpusDecoder()
            frames = sum(len(b) for b in decoder.feed(data)) + sum(len(b) for b in decoder.close())
            kinds = {type(e).__name__ for e in decoder.events}
            assert kinds == {"HeaderReceived", "StreamEnded"}, name
            # Each encoded link is 0.25 s of audio (chained seeds: two links).
            assert frames % 12000 == 0 or name.startswith("chained"), (name, frames)
        elif kind == "wav" and name in _NOT_WAV:
            with pytest.raises(ProtocolError):
                WavReader().feed(data + bytes(256))
        elif kind == "wav":
            reader = WavReader()
            frames = sum(len(b) for b in reader.feed(data)) + sum(len(b) for b in reader.close())
            assert frames > 0, name


# ---- mutated streams -------------------------------------------------------------------------


@_SETTINGS
@given(name=st.sampled_from(_names("ogg")), edit_list=edits, points=cut_points)
def test_mutated_ogg_streams_read_the_same_in_any_chunking_with_a_bounded_buffer(
    name: str, edit_list: list[tuple[str, int, int]], points: list[int]
) -> None:
    data = _edited(_seeds("ogg")[name], edit_list)
    fuzz_ogg.check(data, fuzzlib.split_at(data, points))


@_SETTINGS
@given(name=st.sampled_from(_names("opus")), edit_list=edits, points=cut_points)
def test_mutated_opus_streams_decode_the_same_in_any_chunking_or_raise_protocol_error(
    name: str, edit_list: list[tuple[str, int, int]], points: list[int]
) -> None:
    data = _edited(_seeds("opus")[name], edit_list)
    fuzz_opus.check(data, fuzzlib.split_at(data, points))


@_SETTINGS
@given(
    name=st.sampled_from(_names("opus")),
    page=st.integers(0, 2**16),
    field=st.integers(0, 2**16),
    points=cut_points,
)
def test_opus_streams_with_one_edited_page_header_decode_the_same_in_any_chunking(
    name: str, page: int, field: int, points: list[int]
) -> None:
    # One header field (flags, granule, serial, sequence, segment count, a lacing value)
    # changed, CRC repaired: the stream stays framed, its timing or continuity is wrong.
    data = fuzzlib.apply_edit(_seeds("opus")[name], "page-field", page, field)
    fuzz_opus.check(data, fuzzlib.split_at(data, points))


@_SETTINGS
@given(name=st.sampled_from(_names("wav")), edit_list=byte_edits, points=cut_points)
def test_mutated_wav_streams_read_the_same_in_any_chunking_or_raise_protocol_error(
    name: str, edit_list: list[tuple[str, int, int]], points: list[int]
) -> None:
    data = _edited(_seeds("wav")[name], edit_list)
    fuzz_wav.check(data, fuzzlib.split_at(data, points))


# Header fields of a canonical 44-byte WAV header (offset, struct format), and values on the
# edges of what the reader accepts.
_WAV_FIELDS = [
    (4, "<I"),  # RIFF size
    (16, "<I"),  # fmt size
    (20, "<H"),  # format code
    (22, "<H"),  # channels
    (24, "<I"),  # sample rate
    (32, "<H"),  # block align
    (34, "<H"),  # bits per sample
    (40, "<I"),  # data size
]
_WAV_VALUES = [
    0,
    1,
    2,
    3,
    6,
    7,
    8,
    15,
    16,
    17,
    18,
    24,
    32,
    40,
    64,
    255,
    256,
    0xFFFE,
    0xFFFF,
    1_000_000,
    1_000_001,
    0x7FFEFFFF,
    0x7FFF0000,
    0xFFFFFFFF,
]


@_SETTINGS
@given(
    name=st.sampled_from([n for n in _names("wav") if n.endswith(("-sized", "-streaming"))]),
    fields=st.lists(
        st.tuples(st.sampled_from(_WAV_FIELDS), st.sampled_from(_WAV_VALUES)),
        min_size=1,
        max_size=3,
    ),
    points=cut_points,
)
def test_wav_with_edited_header_fields_reads_the_same_in_any_chunking_or_raises_protocol_error(
    name: str, fields: list[tuple[tuple[int, str], int]], points: list[int]
) -> None:
    data = bytearray(_seeds("wav")[name])
    if data[12:16] != b"fmt ":
        return  # float/G.711 headers have another layout; byte edits cover them
    for (offset, fmt), value in fields:
        struct.pack_into(fmt, data, offset, value & (0xFFFF if fmt == "<H" else 0xFFFFFFFF))
    fuzz_wav.check(bytes(data), fuzzlib.split_at(bytes(data), points))


@_SETTINGS
@given(data=st.binary(max_size=2000), points=cut_points)
def test_any_bytes_give_the_same_pcm_and_formats_in_any_chunking(
    data: bytes, points: list[int]
) -> None:
    fuzz_wav.check(data, fuzzlib.split_at(data, points))


# ---- bounded memory on long inputs ----------------------------------------------------------

_MEGABYTE = 1 << 20
# A reader holding the garbage it skips would trace at least the 1 MB; the state the readers
# do keep (the Ogg reader's one-page window, the decoder's 0.5 s staging buffer, a 4 kB chunk,
# the output block) stays far below this.
_BOUND = 400_000


def _garbage(seed: int) -> bytes:
    """1 MB of random bytes with a fake Ogg header (random fields) every ~2 kB."""
    rng = np.random.default_rng(seed)
    data = bytearray(rng.integers(0, 256, _MEGABYTE, dtype=np.uint8).tobytes())
    for at in range(0, _MEGABYTE - 64, 2048):
        data[at : at + 5] = b"OggS\x00"
    return bytes(data)


def _chunks(data: bytes, size: int = 4096) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def _traced_peak(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_megabyte_of_garbage_keeps_the_ogg_reader_within_one_page_and_is_one_sync_loss() -> None:
    reader = OggReader()
    items = []
    for chunk in _chunks(_garbage(1)):
        items += reader.feed(chunk)
        assert reader.buffered <= MAX_PAGE_SIZE + 3
    items += reader.close()
    assert [type(x) for x in items if not isinstance(x, StreamTruncated)] == [SyncLost]


@pytest.mark.parametrize("where", ["before", "inside"])
def test_a_megabyte_of_garbage_in_an_opus_stream_is_not_held_in_memory(where: str) -> None:
    stream = _seeds("opus")["mono48k-page20"]
    at = 0 if where == "before" else len(stream) // 2
    chunks = _chunks(stream[:at] + _garbage(2) + stream[at:])
    decoder = OggOpusDecoder()
    frames = 0

    def feed_all() -> None:
        nonlocal frames
        for chunk in chunks:
            frames += sum(len(b) for b in decoder.feed(chunk))

    assert _traced_peak(feed_all) < _BOUND
    frames += sum(len(b) for b in decoder.close())
    assert sum(isinstance(e, SyncLost) for e in decoder.events) == 1
    if where == "before":  # nothing lost: the whole stream plays after the garbage
        assert frames == 12000


def test_a_megabyte_of_garbage_after_a_sized_wav_is_counted_not_kept() -> None:
    chunks = _chunks(wav_header(8000, 1, frames=100) + bytes(200) + _garbage(3))
    reader = WavReader()

    def feed_all() -> None:
        for chunk in chunks:
            reader.feed(chunk)

    assert _traced_peak(feed_all) < _BOUND
    reader.close()
    (lost,) = [e for e in reader.events if isinstance(e, SyncLost)]
    assert lost.skipped == _MEGABYTE


def test_a_megabyte_of_garbage_is_rejected_as_not_wav_within_its_first_chunk() -> None:
    reader = WavReader()
    with pytest.raises(ProtocolError):
        reader.feed(_garbage(4)[:4096])
    with pytest.raises(ProtocolError):
        reader.feed(b"more")


# Random f64 bytes hold signalling NaNs: the known "wav-snan-warning" (test_fuzz_regressions).
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("sample_format", ["s24le", "f64le"])
def test_a_megabyte_of_pcm_in_odd_chunks_keeps_less_than_a_frame(sample_format: str) -> None:
    data = np.random.default_rng(5).integers(0, 256, _MEGABYTE, dtype=np.uint8).tobytes()
    chunks = _chunks(data, 4093)
    reader = PcmReader(48000, 3, sample_format)
    frames = 0

    def feed_all() -> None:
        nonlocal frames
        for chunk in chunks:
            frames += sum(len(b) for b in reader.feed(chunk))

    assert _traced_peak(feed_all) < _BOUND
    reader.close()
    frame_size = 3 * (3 if sample_format == "s24le" else 8)
    assert frames == _MEGABYTE // frame_size
    (truncated,) = [e for e in reader.events if isinstance(e, StreamTruncated)]
    assert truncated.pending == _MEGABYTE % frame_size
    with pytest.raises(UsageError):
        reader.feed(b"x")
