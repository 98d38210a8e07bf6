"""Test helpers for the Ogg layer: an independent reference CRC and page parser, chunked feeding
of an `OggReader` under every split, page layouts built by hand, corrupt copies, Opus test files.

The reference implementations here are deliberately simple (per-byte table loop, whole-buffer
parsing) so that they can check the fast, incremental ones in `streamtts.ogg`.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamtts.events import StreamEvent
from streamtts.ogg import OggPacket, OggReader, build_page

# --------------------------------------------------------------------------------------------
# Reference CRC: the textbook MSB-first table loop (RFC 3533 / libogg's `crc_lookup`).
# --------------------------------------------------------------------------------------------


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_TABLE = _make_table()


def reference_crc(data: bytes, crc: int = 0) -> int:
    """Ogg CRC by the per-byte table loop."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


# --------------------------------------------------------------------------------------------
# Feeding a reader under every split
# --------------------------------------------------------------------------------------------

Item = OggPacket | StreamEvent
#: The chunk sizes every behaviour is run with (0 means the whole input at once), plus a random
#: split (see `split_points`).
FIXED_SPLITS: tuple[int, ...] = (0, 1, 7, 26, 27, 28, 255, 4096)


def chunks_of(data: bytes, size: int) -> list[bytes]:
    """``data`` cut in chunks of ``size`` bytes (0: one chunk)."""
    if size == 0:
        return [data]
    return [data[i : i + size] for i in range(0, len(data), size)]


def random_chunks(data: bytes, rng: random.Random, max_size: int = 600) -> list[bytes]:
    """``data`` cut at random points (chunks of 0…max_size bytes, empty chunks included)."""
    out = []
    i = 0
    while i < len(data):
        n = rng.randint(0, max_size)
        out.append(data[i : i + n])
        i += n
    return out


def read_all(chunks: Iterable[bytes], *, close: bool = True) -> list[Item]:
    """Everything an `OggReader` returns for ``chunks`` (and its `close`)."""
    reader = OggReader()
    out: list[Item] = []
    for chunk in chunks:
        out += reader.feed(chunk)
    if close:
        out += reader.close()
    return out


def read_every_split(data: bytes, *, seed: int = 0, close: bool = True) -> list[Item]:
    """Read ``data`` under every split of `FIXED_SPLITS` and a few random ones; assert that the
    output is identical for all of them and return it."""
    reference = read_all([data], close=close)
    splits: list[tuple[str, list[bytes]]] = [
        (f"chunks of {n}", chunks_of(data, n)) for n in FIXED_SPLITS[1:]
    ]
    rng = random.Random(seed)
    splits += [(f"random split {k}", random_chunks(data, rng)) for k in range(3)]
    for name, chunks in splits:
        got = read_all(chunks, close=close)
        assert got == reference, f"output differs when fed in {name}"
    return reference


def packets(items: Iterable[Item]) -> list[OggPacket]:
    return [x for x in items if isinstance(x, OggPacket)]


def events(items: Iterable[Item]) -> list[StreamEvent]:
    return [x for x in items if isinstance(x, StreamEvent)]


def payloads(items: Iterable[Item], serial: int | None = None) -> list[bytes]:
    return [p.data for p in packets(items) if serial is None or p.serial == serial]


# --------------------------------------------------------------------------------------------
# Building streams with chosen layouts
# --------------------------------------------------------------------------------------------


def segments_of(packet: bytes, *, terminated: bool = True) -> list[bytes]:
    """The lacing segments of ``packet`` (a 255-byte packet is [255 bytes, b""]); without
    ``terminated`` the packet is left open (its last segment is a full 255)."""
    pieces = [packet[i : i + 255] for i in range(0, len(packet), 255)]
    if terminated and len(packet) % 255 == 0:
        pieces.append(b"")
    return pieces


@dataclass
class PageSpec:
    """One page of a hand-made layout: its segments and header fields."""

    segments: list[bytes]
    granule: int
    continued: bool


def layout_pages(
    packets_and_granules: Sequence[tuple[bytes, int]], segment_counts: Iterable[int]
) -> list[PageSpec]:
    """Distribute the packets' segments over pages holding ``segment_counts`` segments each (the
    last count is repeated as needed). A page on which no packet ends gets granule -1."""
    queue: list[tuple[bytes, bool, int]] = []  # segment, ends a packet, granule
    for packet, granule in packets_and_granules:
        segs = segments_of(packet)
        for k, seg in enumerate(segs):
            queue.append((seg, k == len(segs) - 1, granule))
    counts = list(segment_counts) or [255]
    pages: list[PageSpec] = []
    i = 0
    continued = False
    while i < len(queue) or not pages:
        n = counts[min(len(pages), len(counts) - 1)]
        part = queue[i : i + n]
        i += len(part)
        granule = -1
        for _, ends, g in part:
            if ends:
                granule = g
        pages.append(PageSpec([s for s, _, _ in part], granule, continued))
        continued = bool(part) and not part[-1][1]
    return pages


def build_stream(
    serial: int,
    packets_and_granules: Sequence[tuple[bytes, int]],
    segment_counts: Iterable[int] = (255,),
    *,
    first_sequence: int = 0,
    bos: bool = True,
    eos: bool = True,
) -> list[bytes]:
    """The pages of one logical stream with a chosen layout (see `layout_pages`)."""
    specs = layout_pages(packets_and_granules, segment_counts)
    out = []
    for k, spec in enumerate(specs):
        out.append(
            build_page(
                serial,
                (first_sequence + k) & 0xFFFFFFFF,
                spec.granule,
                spec.segments,
                bos=bos and k == 0,
                eos=eos and k == len(specs) - 1,
                continued=spec.continued,
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Whole-buffer parsing and damage
# --------------------------------------------------------------------------------------------


@dataclass
class ParsedPage:
    offset: int
    flags: int
    granule: int
    serial: int
    sequence: int
    crc: int
    lacing: bytes
    body: bytes

    @property
    def size(self) -> int:
        return 27 + len(self.lacing) + len(self.body)


def parse_pages(data: bytes) -> list[ParsedPage]:
    """Parse a clean Ogg file page by page (no resync: asserts on damage)."""
    pages = []
    i = 0
    while i < len(data):
        assert data[i : i + 4] == b"OggS", f"no page at {i}"
        _, _, flags, granule, serial, seq, crc, nseg = struct.unpack_from("<4sBBqIIIB", data, i)
        lacing = data[i + 27 : i + 27 + nseg]
        body = data[i + 27 + nseg : i + 27 + nseg + sum(lacing)]
        pages.append(ParsedPage(i, flags, granule, serial, seq, crc, lacing, body))
        i += 27 + nseg + len(body)
    return pages


def reference_packets(data: bytes) -> list[tuple[int, bytes, int]]:
    """(serial, packet, granule of its end page) of a clean file, by whole-buffer parsing."""
    out = []
    open_: dict[int, bytes] = {}
    for page in parse_pages(data):
        pos = 0
        current = open_.pop(page.serial, b"") if page.flags & 1 else b""
        for lace in page.lacing:
            current += page.body[pos : pos + lace]
            pos += lace
            if lace < 255:
                out.append((page.serial, current, page.granule))
                current = b""
        if page.lacing and page.lacing[-1] == 255:
            open_[page.serial] = current
    return out


def flip_byte(data: bytes, offset: int, mask: int = 0x40) -> bytes:
    """A copy of ``data`` with one byte changed."""
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


# --------------------------------------------------------------------------------------------
# Real Opus files (opus-tools, espeak-ng)
# --------------------------------------------------------------------------------------------


def require_tool(name: str) -> str:
    """Path of a command-line tool the test needs (a clear failure if it is missing: CI has it)."""
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed (apt-get install opus-tools espeak-ng)"
    return path


def make_opus_file(
    directory: Path, text: str, *, name: str = "speech", extra_args: Sequence[str] = ()
) -> bytes:
    """Speak ``text`` with espeak-ng, encode it with opusenc (``extra_args`` added), return the
    .opus bytes."""
    wav = directory / f"{name}.wav"
    opus = directory / f"{name}.opus"
    subprocess.run([require_tool("espeak-ng"), "-w", str(wav), text], check=True, timeout=60)
    subprocess.run(
        [require_tool("opusenc"), "--quiet", *extra_args, str(wav), str(opus)],
        check=True,
        timeout=60,
    )
    return opus.read_bytes()
