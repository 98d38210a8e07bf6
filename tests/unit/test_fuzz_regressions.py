"""Inputs the fuzzers (fuzz/) found, kept small and inline: each one must stay fixed.

A finding still open in its owner's module is marked ``xfail(strict=True)`` with the exact
failure, and listed in ``_fuzzlib.KNOWN_ISSUES`` so that the fuzz oracles tolerate it meanwhile;
when the fix lands the test passes, strict xfail turns that into a failure, and both marks go.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
from support.fuzzing import load

from streamtts.events import SyncLost
from streamtts.ogg import OggPacket, OggReader
from streamtts.opus import OggOpusDecoder
from streamtts.wav import PcmReader, WavReader

fuzz_ogg = load("fuzz_ogg")
fuzz_opus = load("fuzz_opus")
fuzz_wav = load("fuzz_wav")

# One verified BOS page (serial 1, granule 0) whose 20-byte packet is b"OggS" + 16 zero bytes:
# a capture pattern 20 bytes before the page's end, whose 27-byte header cannot be complete.
PAGE_WITH_CAPTURE_AT_ITS_END = bytes.fromhex(
    "4f676753000200000000000000000100000000000000edbb111d0114"
    "4f67675300000000000000000000000000000000"
)

# The first 60 bytes of a BOS page (serial 1) announcing 200 segments: cut inside its lacing
# table (33 of the 200 lacing values are in), so its size is never known.
PAGE_CUT_IN_ITS_LACING_TABLE = bytes.fromhex(
    "4f67675300020000000000000000010000000000000066250d6fc8"
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
)
# A complete BOS page of serial 2 holding the packet b"hello".
HELLO_PAGE = bytes.fromhex("4f676753000200000000000000000200000000000000d082d7a8010568656c6c6f")

# A verified BOS page of serial 1 (packet b"first"), then the next page of serial 1 (sequence 1,
# one 100-byte packet) cut after 20 bytes of its body: read in early-release mode, unfinished.
PAGE_THEN_PAGE_CUT_IN_ITS_BODY = bytes.fromhex(
    "4f676753000200000000000000000100000000000000db74f31d010566697273"
    "744f6767530000c00300000000000001000000010000001bc21f960164"
    "6262626262626262626262626262626262626262"
)

# An Ogg Opus stream (serial 1, mono, pre-skip 0): OpusHead page, OpusTags page, then five
# one-packet pages of 20 ms (TOC 0xF8, no frame data: decoded as 960 samples of concealment)
# with granules 960, 1920, 2880, 3840 and, on the EOS page, 960 again: the final granule says
# the stream is 960 samples long, but 3840 samples were decodable (and released) before it.
EOS_GRANULE_BELOW_RELEASED_AUDIO = bytes.fromhex(
    "4f676753000200000000000000000100000000000000846cd92401134f707573486561640101000080bb0000"
    "0000004f6767530000000000000000000001000000010000004efd30b701114f707573546167730100000078"
    "000000004f6767530000c0030000000000000100000002000000fa1880570101f84f67675300008007000000"
    "0000000100000003000000b20faefa0101f84f6767530000400b0000000000000100000004000000bc12ece2"
    "0101f84f6767530000000f0000000000000100000005000000f405c24f0101f84f6767530004c00300000000"
    "00000100000006000000e44a0ee20101f8"
)

# A WAV of one 64-bit float sample (IEEE float, mono, 8 kHz, 18-byte fmt, fact chunk, 8-byte
# data chunk) whose value is a signalling NaN (0x7FF0000000000001).
F64_SIGNALLING_NAN_WAV = bytes.fromhex(
    "524946463a00000057415645666d74201200000003000100401f000000fa00000800400000"
    "006661637404000000010000006461746108000000010000000000f07f"
)

# Page boundaries of EOS_GRANULE_BELOW_RELEASED_AUDIO (OpusHead 47 B, OpusTags 45 B, 5 x 29 B).
_OPUS_PAGE_ENDS = (47, 92, 121, 150, 179, 208, 237)


def test_inputs_are_what_their_comments_say() -> None:
    items = OggReader().feed(PAGE_WITH_CAPTURE_AT_ITS_END)
    assert items == [OggPacket(1, b"OggS" + bytes(16), True, 0, 0, True, False, 0, verified=True)]
    assert OggReader().feed(HELLO_PAGE) == [
        OggPacket(2, b"hello", True, 0, 0, True, False, 0, verified=True)
    ]
    assert PAGE_CUT_IN_ITS_LACING_TABLE[26] == 200
    assert len(PAGE_CUT_IN_ITS_LACING_TABLE) == 27 + 33
    assert len(EOS_GRANULE_BELOW_RELEASED_AUDIO) == _OPUS_PAGE_ENDS[-1]
    pages = [
        p for p in OggReader().feed(EOS_GRANULE_BELOW_RELEASED_AUDIO) if isinstance(p, OggPacket)
    ]
    assert [p.granule for p in pages] == [0, 0, 960, 1920, 2880, 3840, 960]
    assert pages[-1].eos
    reader = WavReader()
    with warnings.catch_warnings():  # the warning is the open issue tested below
        warnings.simplefilter("ignore", RuntimeWarning)
        assert [b.shape for b in reader.feed(F64_SIGNALLING_NAN_WAV)] == [(1, 1)]
    assert (reader.channels, reader.sample_rate) == (1, 8000)


def test_capture_pattern_near_the_end_of_a_searched_page_does_not_crash_the_next_feed() -> None:
    whole = OggReader()
    expected = whole.feed(PAGE_WITH_CAPTURE_AT_ITS_END + b"x" * 10) + whole.close()
    assert [type(x) for x in expected] == [OggPacket, SyncLost]
    reader = OggReader()
    got = reader.feed(PAGE_WITH_CAPTURE_AT_ITS_END)
    got += reader.feed(b"x" * 10)  # raises IndexError today
    got += reader.close()
    assert got == expected


def test_page_cut_inside_its_header_then_a_valid_page_does_not_crash_the_next_feed() -> None:
    data = b"xx" + PAGE_CUT_IN_ITS_LACING_TABLE + HELLO_PAGE
    reader = OggReader()
    got = reader.feed(data)
    assert [type(x) for x in got] == [SyncLost, OggPacket]
    got += reader.feed(b"x" * 10)  # raises IndexError today
    got += reader.close()
    whole = OggReader()
    assert got == whole.feed(data + b"x" * 10) + whole.close()


def test_complete_page_after_a_page_cut_inside_its_header_is_read_at_close() -> None:
    # At the start of the input the reader waits for the header of the page there; the input
    # ends before it is complete, so close() gives it up as garbage and reads the page after it.
    reader = OggReader()
    items = reader.feed(PAGE_CUT_IN_ITS_LACING_TABLE + HELLO_PAGE) + reader.close()
    assert items == [
        SyncLost(offset=0, skipped=len(PAGE_CUT_IN_ITS_LACING_TABLE)),
        OggPacket(2, b"hello", True, 0, 0, True, False, 60, verified=True),
    ]


def test_complete_page_inside_an_unfinished_trusted_page_is_read_at_close() -> None:
    # The early-release page cut in its body can never complete: at close() it becomes garbage
    # and the complete page inside the span its header claims is read.
    reader = OggReader()
    items = reader.feed(PAGE_THEN_PAGE_CUT_IN_ITS_BODY + HELLO_PAGE) + reader.close()
    cut_page = 33  # offset of the unfinished page (after the 33-byte first page)
    assert items == [
        OggPacket(1, b"first", True, 0, 0, True, False, 0, verified=True),
        SyncLost(offset=cut_page, skipped=len(PAGE_THEN_PAGE_CUT_IN_ITS_BODY) - cut_page),
        OggPacket(2, b"hello", True, 0, 0, True, False, 81, verified=True),
    ]


def _decode_frames(chunks: list[bytes]) -> int:
    decoder = OggOpusDecoder(48000, fec=False)
    frames = sum(len(b) for chunk in chunks for b in decoder.feed(chunk))
    return frames + sum(len(b) for b in decoder.close())


def test_eos_granule_below_the_released_audio_trims_the_same_for_any_chunking() -> None:
    data = EOS_GRANULE_BELOW_RELEASED_AUDIO
    whole = _decode_frames([data])
    bounds = (0, *_OPUS_PAGE_ENDS)
    by_page = _decode_frames([data[a:b] for a, b in itertools.pairwise(bounds)])
    assert by_page == whole


def test_signalling_nan_f64_samples_convert_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (block,) = WavReader().feed(F64_SIGNALLING_NAN_WAV)  # warns today
        assert np.isnan(block).all()
        (block,) = PcmReader(8000, 1, "f64le").feed(F64_SIGNALLING_NAN_WAV[-8:])
        assert np.isnan(block).all()


@pytest.mark.parametrize(
    "data",
    [
        PAGE_WITH_CAPTURE_AT_ITS_END + b"x" * 10,
        b"xx" + PAGE_CUT_IN_ITS_LACING_TABLE + HELLO_PAGE + b"x" * 10,
        PAGE_CUT_IN_ITS_LACING_TABLE + HELLO_PAGE,
        PAGE_THEN_PAGE_CUT_IN_ITS_BODY + HELLO_PAGE,
        EOS_GRANULE_BELOW_RELEASED_AUDIO,
        F64_SIGNALLING_NAN_WAV,
    ],
    ids=[
        "capture-at-page-end",
        "cut-header-then-page",
        "cut-header-then-page-at-close",
        "cut-body-then-page-at-close",
        "eos-granule-below-released",
        "f64-signalling-nan",
    ],
)
@pytest.mark.parametrize("target", [fuzz_ogg, fuzz_opus, fuzz_wav], ids=["ogg", "opus", "wav"])
def test_regression_inputs_pass_every_fuzz_oracle(target: object, data: bytes) -> None:
    # Every oracle of every target, with the split each target derives from the input (known
    # open issues are tolerated there: see _fuzzlib.KNOWN_ISSUES).
    target.check(data)  # type: ignore[attr-defined]
