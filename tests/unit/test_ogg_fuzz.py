"""Property and fuzz tests of `OggReader`: any input, any split.

* Round trip: random packets and page layouts written by `OggWriter`/`build_page` come back
  identical, for random chunkings.
* Robustness: random bytes and damaged valid streams never raise anything, give the same output
  for every chunking, and keep the buffer within one maximum page plus the chunk fed.
"""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.oggtools import build_stream, events, packets, payloads, read_all

from streamtts.events import StreamEvent
from streamtts.ogg import MAX_PAGE_SIZE, OggPacket, OggReader, OggWriter

# The number of examples comes from the active Hypothesis profile (100 by default); a deeper
# run: load a profile with more examples before these tests are collected.
_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at the given points (taken modulo its length, sorted)."""
    if not data:
        return [data]
    cuts = sorted({p % len(data) for p in points})
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _read_bounded(chunks: list[bytes]) -> list[OggPacket | StreamEvent]:
    reader = OggReader()
    out: list[OggPacket | StreamEvent] = []
    for chunk in chunks:
        out += reader.feed(chunk)
        # After a feed, the reader holds at most one unresolved page (plus < 4 bytes of a
        # capture pattern), however the input was cut.
        assert reader.buffered <= MAX_PAGE_SIZE + 3
    out += reader.close()
    assert reader.buffered == 0
    return out


packet_sizes = st.lists(
    st.one_of(
        st.integers(0, 600), st.sampled_from([254, 255, 256, 510, 765]), st.integers(0, 65_000)
    ),
    min_size=1,
    max_size=12,
)


@_SETTINGS
@given(
    sizes=packet_sizes,
    segment_counts=st.lists(st.integers(1, 255), min_size=1, max_size=6),
    points=st.lists(st.integers(0, 10**9), max_size=40),
    seed=st.integers(0, 255),
)
def test_random_packets_and_page_layouts_round_trip_for_random_chunkings(
    sizes: list[int], segment_counts: list[int], points: list[int], seed: int
) -> None:
    pk = [(bytes([(seed + k) & 0xFF]) * n, 960 * k) for k, n in enumerate(sizes)]
    data = b"".join(build_stream(0xC0FFEE, pk, segment_counts))
    whole = read_all([data])
    assert payloads(whole) == [d for d, _ in pk]
    assert events(whole) == []
    assert _read_bounded(_cut(data, points)) == whole


@_SETTINGS
@given(
    sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=30),
    max_segments=st.integers(1, 255),
    flush_every=st.integers(1, 8),
    points=st.lists(st.integers(0, 10**9), max_size=40),
)
def test_writer_output_reads_back_identically(
    sizes: list[int], max_segments: int, flush_every: int, points: list[int]
) -> None:
    writer = OggWriter(3, max_segments=max_segments)
    data = bytearray()
    expected = []
    for k, n in enumerate(sizes):
        packet = bytes([k & 0xFF]) * n
        expected.append(packet)
        writer.add(packet, 960 * (k + 1), eos=k == len(sizes) - 1)
        if k % flush_every == 0:
            data += writer.page()
    data += writer.flush()
    items = _read_bounded(_cut(bytes(data), points))
    assert payloads(items) == expected
    assert events(items) == []
    got = packets(items)
    assert got[-1].eos
    assert got[0].first
    assert all(p.granule >= 0 for p in got)


@_SETTINGS
@given(data=st.binary(max_size=3000), points=st.lists(st.integers(0, 10**9), max_size=30))
def test_random_bytes_never_raise_and_give_the_same_output_for_any_chunking(
    data: bytes, points: list[int]
) -> None:
    whole = read_all([data])
    assert _read_bounded(_cut(data, points)) == whole
    assert all(isinstance(x, OggPacket | StreamEvent) for x in whole)


def _valid_stream(seed: int) -> bytes:
    sizes = [(seed * 37 + 11 * k) % 700 for k in range(16)]
    pk = [(bytes([k]) * n, 960 * k) for k, n in enumerate(sizes)]
    return b"".join(build_stream(0xAB, pk, [1 + seed % 9]))


@_SETTINGS
@given(
    seed=st.integers(0, 1000),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "capture"]),
            st.integers(0, 10**9),
            st.integers(1, 300),
        ),
        min_size=1,
        max_size=6,
    ),
    points=st.lists(st.integers(0, 10**9), max_size=40),
)
def test_damaged_streams_never_raise_and_give_the_same_output_for_any_chunking(
    seed: int, edits: list[tuple[str, int, int]], points: list[int]
) -> None:
    data = bytearray(_valid_stream(seed))
    for kind, where, n in edits:
        at = where % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= n & 0xFF or 1
        elif kind == "insert":
            data[at:at] = bytes([n & 0xFF]) * n
        elif kind == "delete":
            del data[at : at + n]
        elif kind == "capture":  # a fake capture pattern, sometimes with a plausible header
            data[at:at] = b"OggS\x00" + bytes([n % 8]) + bytes(20) + bytes([n & 0xFF])
    whole = read_all([bytes(data)])
    assert _read_bounded(_cut(bytes(data), points)) == whole


@_SETTINGS
@given(seed=st.integers(0, 1000))
def test_damaged_stream_fed_byte_by_byte_matches_whole(seed: int) -> None:
    data = bytearray(_valid_stream(seed))
    data[(seed * 7919) % len(data)] ^= 0x20
    at = (seed * 104729) % len(data)
    del data[at : at + 50]
    whole = read_all([bytes(data)])
    assert read_all([bytes(data[i : i + 1]) for i in range(len(data))]) == whole
