"""The page layer of `OggReader`: sync, resync, checksums, sequence numbers, end of input.

Every behaviour is read under every split (`read_every_split`): the output must be identical
whether the input comes whole, byte by byte, or in chunks around the header sizes.
"""

from __future__ import annotations

import random

import pytest
from support.oggtools import (
    build_stream,
    chunks_of,
    events,
    flip_byte,
    packets,
    parse_pages,
    payloads,
    read_all,
    read_every_split,
)

from streamtts.errors import UsageError
from streamtts.events import ChecksumMismatch, DataLost, StreamTruncated, SyncLost
from streamtts.ogg import MAX_PAGE_SIZE, OggPacket, OggReader, build_page

SERIAL = 0x1234ABCD


def _packets(n: int = 12, seed: int = 1) -> list[tuple[bytes, int]]:
    rng = random.Random(seed)
    return [(rng.randbytes(rng.randint(1, 400)), 960 * (k + 1)) for k in range(n)]


def _stream(n: int = 12, per_page: int = 3) -> tuple[list[bytes], list[bytes]]:
    """(pages, packets) of a small stream, ``per_page`` short packets per page."""
    pk = _packets(n)
    pages = []
    for k in range(0, n, per_page):
        group = pk[k : k + per_page]
        segs = [s for data, _ in group for s in _segments(data)]
        pages.append(
            build_page(
                SERIAL,
                k // per_page,
                group[-1][1],
                segs,
                bos=k == 0,
                eos=k + per_page >= n,
            )
        )
    return pages, [data for data, _ in pk]


def _segments(data: bytes) -> list[bytes]:
    out = [data[i : i + 255] for i in range(0, len(data), 255)]
    if len(data) % 255 == 0:
        out.append(b"")
    return out


def test_clean_stream_gives_its_packets_and_no_event_for_every_split() -> None:
    pages, expected = _stream()
    items = read_every_split(b"".join(pages))
    assert payloads(items) == expected
    assert events(items) == []


def test_packets_carry_their_page_fields() -> None:
    pages, expected = _stream(n=6, per_page=3)
    items = read_every_split(b"".join(pages))
    got = packets(items)
    assert [p.data for p in got] == expected
    assert [p.page_sequence for p in got] == [0, 0, 0, 1, 1, 1]
    assert [p.granule for p in got] == [2880] * 3 + [5760] * 3
    assert [p.last_on_page for p in got] == [False, False, True] * 2
    assert [p.eos for p in got] == [False] * 5 + [True]
    assert [p.first for p in got] == [True] + [False] * 5
    assert [p.offset for p in got] == [0] * 3 + [len(pages[0])] * 3
    assert all(p.serial == SERIAL for p in got)


def test_page_fed_byte_by_byte_yields_nothing_before_its_last_byte() -> None:
    # The BOS page is never released early: nothing until its CRC can be checked.
    pages, expected = _stream(n=3, per_page=3)
    reader = OggReader()
    page = pages[0]
    for i in range(len(page) - 1):
        assert reader.feed(page[i : i + 1]) == []
    out = reader.feed(page[-1:])
    assert [p.data for p in packets(out)] == expected
    assert all(p.verified for p in packets(out))


@pytest.mark.parametrize(
    "garbage",
    [
        b"x",
        b"\x00" * 1000,
        b"OggS",  # a bare capture pattern
        b"OggS\x00\x02" + bytes(21),  # a fake header claiming no segments, wrong CRC
        b"abcOggSOggSOg",
        bytes(range(256)) * 4,
    ],
    ids=["one-byte", "zeros", "capture", "fake-header", "fakes", "bytes"],
)
def test_garbage_before_the_first_page_is_one_sync_lost(garbage: bytes) -> None:
    pages, expected = _stream()
    items = read_every_split(garbage + b"".join(pages))
    assert events(items) == [SyncLost(offset=0, skipped=len(garbage))]
    assert payloads(items) == expected
    assert items[0] == SyncLost(offset=0, skipped=len(garbage))


def test_garbage_between_pages_is_one_sync_lost_per_run_and_audio_is_identical() -> None:
    pages, expected = _stream()
    junk1 = b"OggS" + b"\xff" * 50
    junk2 = b"noise" * 31
    data = pages[0] + junk1 + pages[1] + pages[2] + junk2 + pages[3]
    items = read_every_split(data)
    at1 = len(pages[0])
    at2 = at1 + len(junk1) + len(pages[1]) + len(pages[2])
    assert events(items) == [
        SyncLost(offset=at1, skipped=len(junk1)),
        SyncLost(offset=at2, skipped=len(junk2)),
    ]
    assert payloads(items) == expected


def test_sync_lost_comes_before_the_packets_of_the_page_after_it() -> None:
    pages, _ = _stream()
    data = pages[0] + b"junk" + pages[1]
    items = read_all([data])
    kinds = [type(x) for x in items]
    assert kinds == [OggPacket] * 3 + [SyncLost] + [OggPacket] * 3


def test_page_after_garbage_is_released_only_after_its_crc_passed() -> None:
    pages, _ = _stream()
    reader = OggReader()
    reader.feed(pages[0] + b"garbage")
    page = pages[1]
    for i in range(len(page) - 1):
        assert [x for x in reader.feed(page[i : i + 1]) if isinstance(x, OggPacket)] == []
    out = reader.feed(page[-1:])
    assert len(packets(out)) == 3
    assert all(p.verified for p in packets(out))


def test_one_megabyte_of_garbage_is_one_event_and_the_buffer_stays_small() -> None:
    pages, expected = _stream()
    garbage = random.Random(5).randbytes(1 << 20).replace(b"OggS", b"OggX")
    data = pages[0] + garbage + b"".join(pages[1:])
    reader = OggReader()
    items = []
    most = 0
    for chunk in chunks_of(data, 4096):
        items += reader.feed(chunk)
        most = max(most, reader.buffered)
    items += reader.close()
    assert events(items) == [SyncLost(offset=len(pages[0]), skipped=len(garbage))]
    assert payloads(items) == expected
    assert most <= 4096 + 3


def test_garbage_full_of_fake_headers_keeps_the_buffer_within_one_page() -> None:
    # Each fake header claims a maximum-size body, so the reader must hold the bytes until it
    # can tell that no complete valid page starts there.
    fake = b"OggS\x00\x00" + bytes(20) + b"\xff" + b"\xff" * 255
    garbage = (b"z" * 3000 + fake) * 60
    pages, expected = _stream()
    data = pages[0] + garbage + b"".join(pages[1:])
    reader = OggReader()
    items = []
    most = 0
    for chunk in chunks_of(data, 4096):
        items += reader.feed(chunk)
        most = max(most, reader.buffered)
    items += reader.close()
    assert events(items) == [SyncLost(offset=len(pages[0]), skipped=len(garbage))]
    assert payloads(items) == expected
    assert most <= MAX_PAGE_SIZE + 4096


def test_fake_header_claiming_a_huge_body_does_not_hold_back_the_real_pages() -> None:
    # A fake header (valid version, 255 segments of 255 bytes) right before the real stream:
    # the real pages lie inside its claimed 65 kB, and must come out without waiting for them.
    fake = b"OggS\x00\x00" + bytes(20) + b"\xff" + b"\xff" * 255
    pages, expected = _stream()
    data = fake + b"".join(pages)
    assert len(data) < MAX_PAGE_SIZE
    items = read_every_split(data, close=False)
    assert events(items) == [SyncLost(offset=0, skipped=len(fake))]
    assert payloads(items) == expected


def test_corrupted_byte_in_an_early_released_page_is_reported_as_released_mismatch() -> None:
    pages, expected = _stream()
    offset = len(pages[0]) + len(pages[1]) - 1  # in the last packet of page 1
    data = flip_byte(b"".join(pages), offset)
    items = read_every_split(data)
    assert events(items) == [
        ChecksumMismatch(offset=len(pages[0]), serial=SERIAL, sequence=1, released=True)
    ]
    got = payloads(items)
    # The damaged page's packets went out (one of them damaged); the rest is intact.
    assert len(got) == len(expected)
    assert got[:5] == expected[:5]
    assert got[5] != expected[5]
    assert got[6:] == expected[6:]
    assert [p.verified for p in packets(items)][3:6] == [False] * 3


def test_corrupted_page_that_is_not_released_early_is_dropped_with_a_hole() -> None:
    # Two corrupted pages in a row: the first was released early (reported released=True),
    # the second comes after a failure, so it waits for its CRC and is dropped whole.
    pages, expected = _stream()
    o1 = len(pages[0])
    o2 = o1 + len(pages[1])
    data = flip_byte(flip_byte(b"".join(pages), o1 + 40), o2 + 40)
    items = read_every_split(data)
    assert events(items) == [
        ChecksumMismatch(offset=o1, serial=SERIAL, sequence=1, released=True),
        ChecksumMismatch(offset=o2, serial=SERIAL, sequence=2, released=False),
        DataLost(offset=o2, position=-1, samples=0, reason="crc"),
    ]
    got = payloads(items)
    assert got[:3] == expected[:3]
    assert len(got[3:6]) == 3  # released before the mismatch was known
    assert got[6:] == expected[9:]


def test_corrupted_first_page_is_garbage_and_reading_recovers_at_the_next() -> None:
    # Nothing verified precedes it, so it cannot be told from garbage.
    pages, expected = _stream()
    data = flip_byte(b"".join(pages), len(pages[0]) - 1)
    items = read_every_split(data)
    assert events(items) == [SyncLost(offset=0, skipped=len(pages[0]))]
    assert payloads(items) == expected[3:]


def test_corrupted_capture_pattern_is_garbage_and_reading_recovers() -> None:
    pages, expected = _stream()
    data = flip_byte(b"".join(pages), len(pages[0]))  # "OggS" -> "oggS"
    items = read_every_split(data)
    assert events(items) == [
        SyncLost(offset=len(pages[0]), skipped=len(pages[1])),
        DataLost(
            offset=len(pages[0]) + len(pages[1]), position=-1, samples=0, reason="sequence-gap"
        ),
    ]
    assert payloads(items) == expected[:3] + expected[6:]


def test_page_with_an_unknown_stream_structure_version_is_skipped_as_garbage() -> None:
    pages, expected = _stream()
    bad = bytearray(pages[1])
    bad[4] = 1
    data = pages[0] + bytes(bad) + b"".join(pages[2:])
    items = read_every_split(data)
    assert events(items)[0] == SyncLost(offset=len(pages[0]), skipped=len(bad))
    assert payloads(items) == expected[:3] + expected[6:]


def test_sequence_number_wrapping_to_zero_is_not_a_hole() -> None:
    pk = [(bytes([k]) * (10 + k), 960 * (k + 1)) for k in range(8)]
    pages = build_stream(SERIAL, pk, [2], first_sequence=0xFFFFFFFE)
    assert [p.sequence for p in parse_pages(b"".join(pages))] == [0xFFFFFFFE, 0xFFFFFFFF, 0, 1]
    items = read_every_split(b"".join(pages))
    assert events(items) == []
    assert payloads(items) == [d for d, _ in pk]
    assert [p.verified for p in packets(items)] == [True] * 2 + [False] * 6  # early release


def test_input_ending_inside_a_page_is_reported_as_truncated() -> None:
    pages, expected = _stream()
    data = b"".join(pages)[:-10]
    cut = len(b"".join(pages[:3]))
    items = read_every_split(data)
    # The last page was released early: its first packets are out, the rest is truncated.
    assert events(items) == [StreamTruncated(offset=cut, pending=len(data) - cut)]
    assert payloads(items)[:9] == expected[:9]


def test_input_ending_inside_a_header_is_reported_as_truncated() -> None:
    pages, _ = _stream()
    data = pages[0] + pages[1][:20]
    items = read_every_split(data)
    assert events(items) == [StreamTruncated(offset=len(pages[0]), pending=20)]


@pytest.mark.parametrize("tail", [b"O", b"Og", b"Ogg"])
def test_input_ending_in_a_partial_capture_pattern_is_truncated_not_garbage(tail: bytes) -> None:
    pages, _ = _stream()
    items = read_every_split(pages[0] + tail)
    assert events(items) == [StreamTruncated(offset=len(pages[0]), pending=len(tail))]


def test_trailing_garbage_is_sync_lost_at_close() -> None:
    pages, expected = _stream()
    data = b"".join(pages) + b"trailing garbage"
    items = read_every_split(data)
    assert events(items) == [SyncLost(offset=len(data) - 16, skipped=16)]
    assert payloads(items) == expected


def test_input_ending_inside_a_packet_spanning_pages_is_truncated() -> None:
    pk = [(b"a" * 100, 1), (b"b" * 1000, 2)]
    pages = build_stream(SERIAL, pk, [2])  # the 1000-byte packet spans pages 0 and 1...
    items = read_every_split(pages[0] + pages[1])  # ...and 2
    assert payloads(items) == [b"a" * 100]
    assert events(items) == [StreamTruncated(offset=0, pending=255 * 3)]


def test_clean_end_reports_nothing_and_close_is_idempotent() -> None:
    pages, _ = _stream()
    reader = OggReader()
    reader.feed(b"".join(pages))
    assert reader.close() == []
    assert reader.close() == []
    assert reader.buffered == 0


def test_feed_after_close_is_a_usage_error() -> None:
    reader = OggReader()
    reader.close()
    with pytest.raises(UsageError):
        reader.feed(b"OggS")


def test_buffer_is_released_after_each_complete_page() -> None:
    pages, _ = _stream()
    reader = OggReader()
    for page in pages:
        reader.feed(page)
        assert reader.buffered == 0
    assert reader.offset == sum(map(len, pages))


def test_corrupted_middle_page_of_a_long_packet_loses_that_packet_only() -> None:
    # Packet "big" spans pages 0-2; page 1 only continues it, so nothing was released from it
    # when its CRC fails: the packet is one hole, and its tail on page 2 is dropped silently.
    big = bytes(range(256)) * 4  # 1024 bytes: segments 255 x4 + 4
    pk = [(b"a" * 10, 1), (big, 2), (b"c" * 10, 3)]
    pages = build_stream(SERIAL, pk, [2])  # a+big | big | big end | c
    assert len(pages) == 4
    o1 = len(pages[0])
    data = flip_byte(b"".join(pages), o1 + 100)
    items = read_every_split(data)
    assert events(items) == [
        ChecksumMismatch(offset=o1, serial=SERIAL, sequence=1, released=False),
        DataLost(offset=o1, position=-1, samples=0, reason="crc"),
    ]
    assert payloads(items) == [b"a" * 10, b"c" * 10]


def test_corrupted_sequence_number_is_a_mismatch_then_one_gap() -> None:
    # The damaged header no longer continues the stream, so the page is not released early: it
    # is checked, dropped, and the stream sees one hole when the next page arrives.
    pages, expected = _stream()
    o1, o2 = len(pages[0]), len(pages[0]) + len(pages[1])
    data = flip_byte(b"".join(pages), o1 + 18, 0x10)  # sequence 1 -> 17
    items = read_every_split(data)
    assert events(items) == [
        ChecksumMismatch(offset=o1, serial=SERIAL, sequence=17, released=False),
        DataLost(offset=o2, position=-1, samples=0, reason="sequence-gap"),
    ]
    assert payloads(items) == expected[:3] + expected[6:]


# ---- end of input: complete pages behind an unfinished one ----------------------------------
# At close() nothing more arrives: a page cut short is given up as garbage and the complete
# pages after it are still read, exactly as if it had been garbage.

OTHER = 0x0BADCAFE  # serial of a second link appended after the cut


def _link(serial: int, n: int) -> tuple[list[bytes], list[bytes]]:
    """A short clean link of ``serial``: one 40-byte packet per page."""
    data = [bytes([serial & 0xFF, k]) * 20 for k in range(n)]
    pages = [
        build_page(serial, k, 960 * (k + 1), [d], bos=k == 0, eos=k == n - 1)
        for k, d in enumerate(data)
    ]
    return pages, data


def _cut_stream() -> tuple[bytes, bytes, list[bytes]]:
    """A verified BOS page, then the next page of its stream cut inside its last packet (1700
    of its bytes missing), and the packets released early from it."""
    released = [b"s" * 30, b"t" * 40]
    big = b"B" * 2000  # 8 segments: the page is cut inside this packet
    head = build_page(SERIAL, 0, 0, [b"head"], bos=True)
    page = build_page(SERIAL, 1, 2880, [*released, *_segments(big)])
    return head, page[: len(page) - 1700], released


def test_early_released_page_cut_short_then_a_new_link_is_garbage_and_the_link_is_read() -> None:
    # Page 1 continues the verified stream: its packets go out early; it is cut inside its
    # last packet, and a complete link follows inside the span its header claims.
    head, cut, released = _cut_stream()
    link, link_packets = _link(OTHER, 2)
    data = head + cut + b"".join(link)
    items = read_every_split(data)
    assert events(items) == [SyncLost(offset=len(head), skipped=len(cut))]
    assert payloads(items) == [b"head", *released, *link_packets]
    assert [p.verified for p in packets(items)] == [True, False, False, True, False]


def test_page_cut_short_then_its_own_stream_resuming_reports_one_sequence_gap() -> None:
    head, cut, released = _cut_stream()
    resumed = build_page(SERIAL, 2, 3840, [b"after the cut"])
    data = head + cut + resumed
    items = read_every_split(data)
    assert payloads(items) == [b"head", *released, b"after the cut"]
    assert events(items) == [
        SyncLost(offset=len(head), skipped=len(cut)),
        DataLost(offset=len(head) + len(cut), position=-1, samples=0, reason="sequence-gap"),
    ]


def test_page_continuing_an_open_packet_cut_short_leaves_that_packet_truncated() -> None:
    # A 1000-byte packet opens on page 0 and continues on page 1, which is cut; a new link
    # follows. The open packet never completes: its fragment is pending at the end.
    pk = [(b"a" * 100, 1), (b"b" * 1000, 2)]
    pages = build_stream(SERIAL, pk, [2, 3])
    cut = pages[1][:200]
    link, link_packets = _link(OTHER, 1)
    data = pages[0] + cut + link[0]
    items = read_every_split(data)
    assert payloads(items) == [b"a" * 100, *link_packets]
    assert events(items) == [
        SyncLost(offset=len(pages[0]), skipped=len(cut)),
        StreamTruncated(offset=0, pending=255),
    ]


def test_page_continuing_an_open_packet_cut_short_then_its_stream_resuming_is_one_hole() -> None:
    pk = [(b"a" * 100, 1), (b"b" * 1000, 2), (b"c" * 50, 3)]
    pages = build_stream(SERIAL, pk, [2, 3, 2])  # b spans pages 0, 1 and 2; c ends page 2
    cut = pages[1][:200]
    data = pages[0] + cut + pages[2]
    items = read_every_split(data)
    assert payloads(items) == [b"a" * 100, b"c" * 50]
    offset = len(pages[0]) + len(cut)
    assert events(items) == [
        SyncLost(offset=len(pages[0]), skipped=len(cut)),
        DataLost(offset=offset, position=-1, samples=0, reason="sequence-gap"),
    ]


def test_header_cut_where_a_page_was_due_then_a_complete_page_is_garbage_at_close() -> None:
    # After a verified page the reader waits for the next header; cut inside its lacing table,
    # it never completes, and the complete page after it is read at close.
    head = build_page(SERIAL, 0, 0, [b"head"], bos=True)
    due = build_page(SERIAL, 1, 960, [bytes([k]) for k in range(200)])  # 227-byte header
    cut = due[:60]
    link, link_packets = _link(OTHER, 1)
    data = head + cut + link[0]
    assert len(data) < len(head) + 27 + 200  # the header itself never completes
    items = read_every_split(data)
    assert payloads(items) == [b"head", *link_packets]
    assert events(items) == [SyncLost(offset=len(head), skipped=len(cut))]


def test_page_cut_short_with_only_garbage_after_it_is_still_the_truncated_tail() -> None:
    head, cut, released = _cut_stream()
    data = head + cut + b"no page here" + b"OggS\x00"
    items = read_every_split(data)
    assert payloads(items) == [b"head", *released]
    assert events(items) == [StreamTruncated(offset=len(head), pending=len(data) - len(head))]


def test_pages_after_a_cut_page_are_followed_by_a_truncated_tail_of_their_own() -> None:
    head, cut, released = _cut_stream()
    link, link_packets = _link(OTHER, 3)
    tail = link[2][:20]
    data = head + cut + link[0] + link[1] + tail
    items = read_every_split(data)
    assert payloads(items) == [b"head", *released, *link_packets[:2]]
    assert events(items) == [
        SyncLost(offset=len(head), skipped=len(cut)),
        StreamTruncated(offset=len(data) - len(tail), pending=len(tail)),
    ]
