"""The packet layer of `OggReader`: lacing, packets spanning pages, holes, early release,
interleaved and chained streams. Every case is read under every split."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from support.oggtools import (
    build_stream,
    events,
    packets,
    parse_pages,
    payloads,
    read_all,
    read_every_split,
    segments_of,
)

from streamtts.events import DataLost, SyncLost
from streamtts.ogg import OggPacket, OggReader, OggWriter, build_page

A = 0xA
B = 0xB


def _hole(offset: int, reason: str) -> DataLost:
    return DataLost(offset=offset, position=-1, samples=0, reason=reason)


def _fill(n: int, seed: int) -> bytes:
    return bytes((seed + 7 * i) & 0xFF for i in range(n))


@pytest.mark.parametrize("size", [0, 1, 254, 255, 256, 510, 4345, 65_500])
def test_packet_size_round_trips_through_writer_and_reader(size: int) -> None:
    packet = _fill(size, size)
    writer = OggWriter(A)
    writer.add(b"head", 0)
    writer.add(packet, 960)
    writer.add(b"tail", 1920, eos=True)
    items = read_every_split(writer.flush())
    assert payloads(items) == [b"head", packet, b"tail"]
    assert events(items) == []


def test_lacing_255_continues_and_less_than_255_ends_a_packet() -> None:
    # One page, segments 255+255+10 | 0 | 255+0: packets of 520, 0 and 255 bytes.
    segs = [_fill(255, 1), _fill(255, 2), _fill(10, 3), b"", _fill(255, 4), b""]
    page = build_page(A, 0, 5, segs, bos=True, eos=True)
    items = read_every_split(page)
    assert payloads(items) == [segs[0] + segs[1] + segs[2], b"", segs[4]]


def test_packet_spanning_many_pages_is_reassembled_and_only_its_end_page_has_a_granule() -> None:
    big = _fill(10_000, 9)  # 40 segments: with 3 segments per page it spans 14 pages
    pages = build_stream(A, [(b"x", 0), (big, 4800), (b"y", 5760)], [3])
    parsed = parse_pages(b"".join(pages))
    assert len(parsed) > 10
    # Pages on which no packet ends say so with granule -1.
    assert [p.granule == -1 for p in parsed] == [min(p.lacing) == 255 for p in parsed]
    assert sum(p.granule == -1 for p in parsed) == len(parsed) - 2
    items = read_every_split(b"".join(pages))
    assert payloads(items) == [b"x", big, b"y"]
    got = packets(items)
    # The big packet ends on the last page, with "y": it carries that page's granule.
    assert (got[1].page_sequence, got[1].granule) == (parsed[-1].sequence, 5760)
    assert not got[1].last_on_page
    assert all(p.granule != -1 for p in got)


def test_continued_page_at_the_start_drops_the_leading_fragment() -> None:
    pk = [(_fill(600, 1), 100), (b"b" * 20, 200), (b"c" * 30, 300)]
    pages = build_stream(A, pk, [2])  # page 0: 255+255 | page 1: 90, 20 | page 2: 30
    assert parse_pages(pages[1])[0].flags & 1
    items = read_every_split(b"".join(pages[1:]))
    assert events(items) == [_hole(0, "orphan-continuation")]
    assert payloads(items) == [b"b" * 20, b"c" * 30]


def test_orphan_fragment_spanning_several_pages_is_one_hole() -> None:
    pk = [(_fill(2000, 1), 100), (b"b" * 20, 200)]
    pages = build_stream(A, pk, [2])
    items = read_every_split(b"".join(pages[1:]))
    assert events(items) == [_hole(0, "orphan-continuation")]
    assert payloads(items) == [b"b" * 20]


def test_open_packet_followed_by_a_page_without_continued_flag_is_dropped() -> None:
    # libogg would join the open 255 bytes with the next page's packet; we must not.
    p0 = build_page(A, 0, 0, [b"head"], bos=True)
    p1 = build_page(A, 1, -1, [b"o" * 255])  # a packet left open
    p2 = build_page(A, 2, 960, [b"fresh"])  # not continued: starts a new packet
    p3 = build_page(A, 3, 1920, [b"next"], eos=True)
    items = read_every_split(p0 + p1 + p2 + p3)
    assert events(items) == [_hole(len(p0 + p1), "unterminated-packet")]
    assert payloads(items) == [b"head", b"fresh", b"next"]


def test_sequence_gap_drops_the_partial_packet_and_reports_one_hole() -> None:
    pk = [(b"a" * 10, 1), (_fill(1500, 2), 2), (b"c" * 10, 3), (b"d" * 10, 4)]
    pages = build_stream(A, pk, [3])
    # page 0: a, big[0:510] | page 1: big cont. | page 2: big end, c, d (ends)
    assert len(pages) == 3
    data = pages[0] + pages[2]
    items = read_every_split(data)
    assert events(items) == [_hole(len(pages[0]), "sequence-gap")]
    assert payloads(items) == [b"a" * 10, b"c" * 10, b"d" * 10]


def test_several_missing_pages_are_one_hole() -> None:
    pk = [(bytes([k]) * 50, k) for k in range(10)]
    pages = build_stream(A, pk, [2])
    data = b"".join(pages[:1] + pages[4:])
    items = read_every_split(data)
    assert events(items) == [_hole(len(pages[0]), "sequence-gap")]
    assert payloads(items) == [d for d, _ in pk[:2] + pk[8:]]


def test_packets_are_released_early_as_soon_as_their_own_bytes_arrived() -> None:
    # A one-second page: 50 packets of 100 bytes after the two header pages.
    writer = OggWriter(A)
    writer.add(b"OpusHead-like", 0)
    head = writer.page()
    writer.add(b"OpusTags-like", 0)
    tags = writer.page()
    audio = [_fill(100, k) for k in range(50)]
    for k, packet in enumerate(audio):
        writer.add(packet, 960 * (k + 1))
    page = writer.page(eos=True)
    (parsed,) = parse_pages(page)
    body_start = 27 + len(parsed.lacing)

    reader = OggReader()
    assert [p.data for p in packets(reader.feed(head + tags))] == [
        b"OpusHead-like",
        b"OpusTags-like",
    ]
    released_at: list[int] = []
    got: list[OggPacket] = []
    for i in range(len(page)):
        new = packets(reader.feed(page[i : i + 1]))
        released_at += [i + 1] * len(new)
        got += new
    assert [p.data for p in got] == audio
    # Packet k came out exactly when its last byte arrived, not at the end of the page.
    assert released_at == [body_start + 100 * (k + 1) for k in range(50)]
    assert released_at[0] < len(page) // 10
    assert not any(p.verified for p in got)
    assert got[-1].eos
    assert got[-1].last_on_page
    assert got[-1].granule == 48_000


def test_early_release_is_the_same_whether_the_page_arrives_whole_or_in_pieces() -> None:
    pk = [(bytes([k]) * (k * 13 % 300), k) for k in range(40)]
    data = b"".join(build_stream(A, pk, [7]))
    items = read_every_split(data)
    assert payloads(items) == [d for d, _ in pk]
    # Only the BOS page waits for its CRC; the rest continue a verified stream.
    assert [p.verified for p in packets(items)] == [p.page_sequence == 0 for p in packets(items)]
    assert sum(p.verified for p in packets(items)) == 7


_NOT_TRUSTED: dict[str, Callable[[list[bytes]], bytes]] = {
    "bos": lambda p: p[0],
    "after garbage": lambda p: p[0] + b"junk" + p[1],
    "after a gap": lambda p: p[0] + p[2],
    "unknown stream": lambda p: p[1],
}


@pytest.mark.parametrize("case", list(_NOT_TRUSTED))
def test_pages_not_continuing_a_verified_stream_are_released_only_after_their_crc(
    case: str,
) -> None:
    pages = build_stream(A, [(bytes([k]) * 40, k) for k in range(9)], [3])
    data = _NOT_TRUSTED[case](pages)
    reader = OggReader()
    out = [reader.feed(data[i : i + 1]) for i in range(len(data))]
    releases = [i for i, items in enumerate(out) if packets(items)]
    # The last page fed came out in one piece at its very last byte, CRC checked.
    assert releases[-1] == len(data) - 1
    assert len(packets(out[-1])) == 3
    assert all(p.verified for p in packets(out[-1]))


def test_fake_page_header_inside_garbage_cannot_release_garbage() -> None:
    # The fake header names the stream and the sequence number expected next, but follows
    # garbage: it is not trusted, its CRC fails, and its "packets" never come out.
    pages = build_stream(A, [(b"a" * 40, 1), (b"b" * 40, 2), (b"c" * 40, 3)], [1])
    fake = bytearray(build_page(A, 1, 2, [b"G" * 200]))
    fake[22] ^= 1  # wrong CRC
    data = pages[0] + b"junk" + bytes(fake) + pages[1] + pages[2]
    items = read_every_split(data)
    assert events(items) == [SyncLost(offset=len(pages[0]), skipped=4 + len(fake))]
    assert payloads(items) == [b"a" * 40, b"b" * 40, b"c" * 40]


def test_interleaved_streams_are_demuxed_independently() -> None:
    pa = build_stream(A, [(_fill(n, n), k) for k, n in enumerate([30, 700, 20, 300, 5])], [2])
    pb = build_stream(B, [(_fill(n, n + 1), k) for k, n in enumerate([9, 9, 600, 1, 2])], [1])
    # Both BOS pages first (RFC 3533 grouping), then the rest interleaved.
    rest = [p for pair in zip(pa[1:], pb[1:], strict=False) for p in pair]
    longer = pa if len(pa) > len(pb) else pb
    rest += longer[min(len(pa), len(pb)) :]
    items = read_every_split(pa[0] + pb[0] + b"".join(rest))
    assert events(items) == []
    assert payloads(items, A) == [_fill(n, n) for n in [30, 700, 20, 300, 5]]
    assert payloads(items, B) == [_fill(n, n + 1) for n in [9, 9, 600, 1, 2]]
    firsts = [(p.serial, p.data[:3]) for p in packets(items) if p.first]
    assert firsts == [(A, _fill(30, 30)[:3]), (B, _fill(9, 10)[:3])]


def test_gap_in_one_interleaved_stream_does_not_affect_the_other() -> None:
    pa = build_stream(A, [(bytes([k]) * 30, k) for k in range(4)], [1])
    pb = build_stream(B, [(bytes([k]) * 40, k) for k in range(4)], [1])
    order = [pa[0], pb[0], pa[1], pb[1], pb[2], pa[3], pb[3]]  # pa[2] is lost
    items = read_every_split(b"".join(order))
    assert events(items) == [_hole(len(b"".join(order[:5])), "sequence-gap")]
    assert payloads(items, B) == [bytes([k]) * 40 for k in range(4)]
    assert payloads(items, A) == [bytes([k]) * 30 for k in (0, 1, 3)]


@pytest.mark.parametrize("second_serial", [A, B], ids=["same-serial", "new-serial"])
def test_chained_streams_follow_each_other(second_serial: int) -> None:
    one = build_stream(A, [(b"head1", 0), (_fill(900, 1), 960)], [2])
    two = build_stream(second_serial, [(b"head2", 0), (_fill(800, 2), 960)], [2])
    items = read_every_split(b"".join(one + two))
    assert events(items) == []
    got = packets(items)
    assert [p.data for p in got] == [b"head1", _fill(900, 1), b"head2", _fill(800, 2)]
    assert [p.first for p in got] == [True, False, True, False]
    assert [p.eos for p in got] == [False, True, False, True]
    assert [p.serial for p in got] == [A, A, second_serial, second_serial]


def test_packet_spanning_pages_from_the_bos_page_is_marked_first() -> None:
    big = _fill(1000, 3)
    pages = build_stream(A, [(big, 0), (b"z", 960)], [2])
    got = packets(read_every_split(b"".join(pages)))
    assert [(p.data, p.first) for p in got] == [(big, True), (b"z", False)]


def test_new_bos_while_a_packet_is_open_reports_the_unterminated_packet() -> None:
    p0 = build_page(A, 0, 0, [b"head"], bos=True)
    p1 = build_page(A, 1, -1, [b"o" * 255])
    again = build_page(A, 0, 0, [b"head again"], bos=True)
    items = read_every_split(p0 + p1 + again)
    assert events(items) == [_hole(len(p0 + p1), "unterminated-packet")]
    assert payloads(items) == [b"head", b"head again"]


def test_empty_pages_are_accepted() -> None:
    p0 = build_page(A, 0, 0, [b"head"], bos=True)
    p1 = build_page(A, 1, -1, [])
    p2 = build_page(A, 2, 9, [b"x" * 255])
    p3 = build_page(A, 3, -1, [], continued=True)  # an empty page inside an open packet
    p4 = build_page(A, 4, 10, [b"y"], continued=True, eos=True)
    items = read_every_split(p0 + p1 + p2 + p3 + p4)
    assert events(items) == []
    assert payloads(items) == [b"head", b"x" * 255 + b"y"]


def test_segments_helper_matches_the_lacing_rule() -> None:
    assert [len(s) for s in segments_of(b"x" * 255)] == [255, 0]
    assert [len(s) for s in segments_of(b"")] == [0]
    assert [len(s) for s in segments_of(b"x" * 256)] == [255, 1]
    assert [len(s) for s in segments_of(b"x" * 510, terminated=False)] == [255, 255]


def test_reading_in_one_go_and_byte_by_byte_gives_the_same_events_after_damage() -> None:
    pk = [(bytes([k]) * (k * 37 % 700), k) for k in range(30)]
    pages = build_stream(A, pk, [5])
    data = bytearray(b"".join(pages))
    data[len(pages[0]) + 30] ^= 0xFF
    del data[len(b"".join(pages[:4])) : len(b"".join(pages[:5]))]
    whole = read_all([bytes(data)])
    single = read_all([bytes(data[i : i + 1]) for i in range(len(data))])
    assert whole == single
    assert any(isinstance(e, DataLost) for e in events(whole))
