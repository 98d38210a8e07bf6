"""`OggWriter` and `build_page`: flags, granules, sequence numbers, CRCs, segment limits."""

from __future__ import annotations

import itertools

import pytest
from support.oggtools import parse_pages, reference_crc, reference_packets

from streamtts.errors import UsageError
from streamtts.ogg import OggWriter, build_page

BOS, EOS, CONTINUED = 0x02, 0x04, 0x01


def _crc_ok(page_bytes: bytes) -> bool:
    zeroed = page_bytes[:22] + bytes(4) + page_bytes[26:]
    return reference_crc(zeroed) == int.from_bytes(page_bytes[22:26], "little")


def test_pages_have_correct_crcs_bos_on_the_first_and_eos_on_the_last() -> None:
    writer = OggWriter(77)
    writer.add(b"head", 0)
    out = writer.page()
    for k in range(5):
        writer.add(bytes([k]) * 100, 960 * (k + 1))
        out += writer.page(eos=k == 4)
    pages = parse_pages(out)
    assert [p.sequence for p in pages] == list(range(6))
    assert [p.flags for p in pages] == [BOS, 0, 0, 0, 0, EOS]
    assert [p.granule for p in pages] == [0, 960, 1920, 2880, 3840, 4800]
    assert {p.serial for p in pages} == {77}
    offsets = [p.offset for p in pages] + [len(out)]
    assert all(_crc_ok(out[a:b]) for a, b in itertools.pairwise(offsets))


def test_page_granule_is_that_of_the_last_packet_ending_on_it() -> None:
    writer = OggWriter(1)
    writer.add(b"a", 100)
    writer.add(b"b", 200)
    writer.add(b"c", 300)
    (page,) = parse_pages(writer.page())
    assert page.granule == 300
    assert list(page.lacing) == [1, 1, 1]


def test_packet_over_255_segments_continues_on_the_next_page_with_granule_minus_one() -> None:
    big = bytes(range(256)) * 300  # 76 800 bytes: 302 segments
    writer = OggWriter(5)
    writer.add(big, 4242, eos=True)
    data = writer.flush()
    pages = parse_pages(data)
    assert len(pages) == 2
    assert len(pages[0].lacing) == 255
    assert pages[0].granule == -1  # no packet ends on it
    assert pages[0].flags == BOS
    assert pages[1].flags == CONTINUED | EOS
    assert pages[1].granule == 4242
    assert reference_packets(data) == [(5, big, 4242)]


def test_max_segments_forces_small_pages() -> None:
    writer = OggWriter(5, max_segments=2)
    packets = [b"x" * 300, b"y", b"z" * 10]  # segments: 255, 45 | 1, 10
    for k, p in enumerate(packets):
        writer.add(p, k)
    data = writer.page(eos=True)
    pages = parse_pages(data)
    assert [list(p.lacing) for p in pages] == [[255, 45], [1, 10]]
    assert [p.granule for p in pages] == [0, 2]
    assert [p.flags for p in pages] == [BOS, EOS]
    assert [pk for _, pk, _ in reference_packets(data)] == packets


def test_packet_of_exactly_255_bytes_is_laced_255_0() -> None:
    writer = OggWriter(5)
    writer.add(b"q" * 255, 1)
    (page,) = parse_pages(writer.page())
    assert list(page.lacing) == [255, 0]


def test_packet_ending_on_a_page_boundary_does_not_set_continued() -> None:
    writer = OggWriter(5, max_segments=2)
    writer.add(b"a" * 255, 1)  # segments 255, 0: exactly one page
    writer.add(b"b", 2)
    pages = parse_pages(writer.page())
    assert [p.flags & CONTINUED for p in pages] == [0, 0]
    assert [p.granule for p in pages] == [1, 2]


def test_empty_eos_page_when_nothing_is_queued() -> None:
    writer = OggWriter(5)
    writer.add(b"a", 1)
    writer.page()
    (page,) = parse_pages(writer.page(eos=True))
    assert page.flags == EOS
    assert page.lacing == b""
    assert page.granule == -1


def test_nothing_queued_writes_nothing() -> None:
    writer = OggWriter(5)
    assert writer.page() == b""
    assert writer.flush() == b""
    assert writer.sequence == 0


def test_add_after_eos_is_a_usage_error() -> None:
    writer = OggWriter(5)
    writer.add(b"a", 1, eos=True)
    with pytest.raises(UsageError):
        writer.add(b"b", 2)
    writer.flush()
    with pytest.raises(UsageError):
        writer.page()


def test_max_segments_out_of_range_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        OggWriter(1, max_segments=0)
    with pytest.raises(UsageError):
        OggWriter(1, max_segments=256)


def test_build_page_rejects_oversized_segments_and_too_many_segments() -> None:
    with pytest.raises(UsageError):
        build_page(1, 0, 0, [b"x" * 256])
    with pytest.raises(UsageError):
        build_page(1, 0, 0, [b"x"] * 256)


def test_build_page_sets_the_requested_flags_and_fields() -> None:
    page = build_page(0xFFFFFFFF, 0xFFFFFFFF, -1, [b"x" * 255], continued=True, eos=True)
    (parsed,) = parse_pages(page)
    assert parsed.flags == CONTINUED | EOS
    assert (parsed.serial, parsed.sequence, parsed.granule) == (0xFFFFFFFF, 0xFFFFFFFF, -1)
    assert list(parsed.lacing) == [255]
    assert _crc_ok(page)
