"""Shared machinery of the fuzz targets: the runner (atheris or plain Python), the chunk plan,
the mutations (byte-level and Ogg page-level with CRC repair) and a reference Ogg page parser.

How it works
------------
Each target (``fuzz_ogg.py``, ``fuzz_opus.py``, ``fuzz_wav.py``) defines ``check(data,
chunks=None)``: it runs the readers on ``data`` fed whole and fed in ``chunks`` (by default a
split derived deterministically from the bytes, so a crash reproduces from the input alone), and
asserts the readers' contract. Anything but a ``ProtocolError`` escaping, or a broken oracle
(an ``AssertionError``), is a finding.

`main` runs a target. With atheris (coverage-guided libFuzzer) the library is instrumented at
import, and a custom mutator alternates libFuzzer's own mutations with Ogg-aware ones that
re-compute page CRCs: random flips almost always break the checksum, and a reader that drops
pages with a bad CRC would never show its deeper logic (granules, sequence numbers, lacing,
continued packets) to the fuzzer otherwise. Without atheris (or with ``--plain``) the same
mutations drive a plain random loop over the seed corpus: no coverage feedback, but the same
oracles, so the short CI run still means something on a machine without atheris.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import itertools
import json
import random
import struct
import sys
import time
import traceback
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "EDIT_KINDS",
    "KNOWN_ISSUES",
    "OggPage",
    "apply_edit",
    "atheris_available",
    "chunk_plan",
    "contract",
    "fix_ogg_crcs",
    "instrumented",
    "known_crash",
    "main",
    "mutate",
    "page_at",
    "parse_ogg_pages",
    "reference_ogg_packets",
    "split_at",
    "valid_page_at",
]

Check = Callable[[bytes], None]


class Checker(Protocol):
    """A target's ``check``: ``data`` fed whole and in ``chunks`` (derived from it if None)."""

    def __call__(self, data: bytes, chunks: list[bytes] | None = None) -> None: ...


# Chunk sizes with a meaning for the Ogg layer (1: byte by byte; 26/27/28 around the fixed
# header; 255 a segment; 4096 a typical HTTP read), as in docs/ogg-opus notes.
_FIXED_SPLITS = (1, 7, 26, 27, 28, 255, 4096)
# Byte-by-byte feeding costs one reader call per byte: only for inputs up to this size.
_BYTEWISE_MAX = 2048
# Random chunks of 0…600 bytes: several per page of a low-delay stream, empty ones included.
_RANDOM_CHUNK_MAX = 600


# Known bugs the oracles tolerate, so that a fuzzing run goes on to find new ones. Each has a
# strict xfail regression test in tests/unit/test_fuzz_regressions.py: remove its entry here
# when that test passes (the owner fixed it), and the oracles are strict again.
KNOWN_ISSUES: frozenset[str] = frozenset()


def known_crash(exc: BaseException) -> bool:
    """True if ``exc`` is one of the `KNOWN_ISSUES` that show as an exception."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return False
    where = (Path(frames[-1].filename).name, frames[-1].name)
    if "ogg-stale-candidate" in KNOWN_ISSUES and isinstance(exc, IndexError):
        return where == ("ogg.py", "_header_status")
    if "wav-snan-warning" in KNOWN_ISSUES and isinstance(exc, RuntimeWarning):
        return where == ("wav.py", "_convert") and "invalid value" in str(exc)
    return False


def contract(check: Callable[[bytes, list[bytes] | None], None]) -> Checker:
    """The target's ``check`` as run by fuzzers and tests: warnings are errors (a reader must
    not warn on bad data either), known issues (`KNOWN_ISSUES`) end the run quietly."""

    @functools.wraps(check)
    def run(data: bytes, chunks: list[bytes] | None = None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                check(data, chunks)
            except Exception as exc:
                if not known_crash(exc):
                    raise

    return run


def atheris_available() -> bool:
    """True if the ``atheris`` package can be imported."""
    return importlib.util.find_spec("atheris") is not None


def _use_atheris(argv: Sequence[str] | None = None) -> bool:
    return atheris_available() and "--plain" not in (sys.argv if argv is None else argv)


def instrumented(module_name: str) -> contextlib.AbstractContextManager[Any]:
    """Context for the target's ``streamtts`` imports: instrumented for coverage when the target
    runs as a script under atheris, a no-op when it is imported (tests) or runs ``--plain``."""
    if module_name == "__main__" and _use_atheris():
        import atheris  # type: ignore[import-untyped]

        return atheris.instrument_imports(include=["streamtts"])  # type: ignore[no-any-return]
    return contextlib.nullcontext()


# --------------------------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------------------------


def split_at(data: bytes, points: Sequence[int]) -> list[bytes]:
    """``data`` cut at ``points`` (taken modulo ``len(data) + 1``; duplicates give empty
    chunks, which a reader must accept too)."""
    cuts = sorted(p % (len(data) + 1) for p in points)
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def chunk_plan(data: bytes) -> list[bytes]:
    """A split of ``data`` chosen from its own bytes (reproducible from the input alone): byte by
    byte, fixed sizes around the Ogg header size, or random sizes with empty chunks."""
    rng = random.Random(zlib.crc32(data))
    mode = rng.randrange(4)
    if mode == 0 and len(data) <= _BYTEWISE_MAX:
        size = 1
    elif mode <= 1:
        size = rng.choice(_FIXED_SPLITS)
    else:
        out = []
        i = 0
        while i < len(data):
            n = rng.randint(0, _RANDOM_CHUNK_MAX)
            out.append(data[i : i + n])
            i += n
        return out
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


# --------------------------------------------------------------------------------------------
# Ogg pages: an independent whole-buffer parser (reference), CRC repair
# --------------------------------------------------------------------------------------------

_PAGE_HEADER = struct.Struct("<4sBBqIIIB")


@dataclass(frozen=True)
class OggPage:
    """One complete page found in a buffer (not checked: the CRC may be wrong)."""

    offset: int
    flags: int
    granule: int
    serial: int
    sequence: int
    crc: int
    lacing: bytes
    size: int


def page_at(data: bytes, i: int) -> OggPage | None:
    """The complete page whose capture pattern is at ``data[i]`` (CRC not checked), or None."""
    if len(data) - i < 27 or data[i : i + 4] != b"OggS" or data[i + 4] != 0:
        return None
    nseg = data[i + 26]
    if len(data) - i < 27 + nseg:
        return None
    lacing = bytes(data[i + 27 : i + 27 + nseg])
    size = 27 + nseg + sum(lacing)
    if len(data) - i < size:
        return None
    _, _, flags, granule, serial, sequence, crc, _ = _PAGE_HEADER.unpack_from(data, i)
    return OggPage(i, flags, granule, serial, sequence, crc, lacing, size)


def valid_page_at(data: bytes, i: int) -> OggPage | None:
    """Like `page_at`, but only a page whose CRC is right."""
    page = page_at(data, i)
    if page is None:
        return None
    raw = bytearray(data[i : i + page.size])
    raw[22:26] = b"\0\0\0\0"
    return page if _ogg_crc(bytes(raw)) == page.crc else None


def parse_ogg_pages(data: bytes, *, contiguous: bool = False) -> list[OggPage]:
    """The complete pages of ``data``: with ``contiguous``, only the run of back-to-back pages
    from offset 0; otherwise each capture pattern is tried and a page found is skipped whole."""
    pages = []
    i = 0
    while i < len(data):
        page = page_at(data, i)
        if page is None:
            if contiguous:
                break
            i = data.find(b"OggS", i + 1)
            if i < 0:
                break
            continue
        pages.append(page)
        i += page.size
    return pages


def _ogg_crc(data: bytes) -> int:
    from streamtts.ogg import crc32_ogg

    return crc32_ogg(data)


def fix_ogg_crcs(data: bytes) -> bytes:
    """``data`` with the CRC of every complete page (see `parse_ogg_pages`) recomputed."""
    out = bytearray(data)
    for page in parse_ogg_pages(data):
        body = bytearray(out[page.offset : page.offset + page.size])
        body[22:26] = b"\0\0\0\0"
        struct.pack_into("<I", out, page.offset + 22, _ogg_crc(bytes(body)))
    return bytes(out)


def reference_ogg_packets(data: bytes) -> list[tuple[int, bytes, int]] | None:
    """``(serial, packet, granule)`` of a clean stream by whole-buffer parsing, or None if
    ``data`` is not a run of complete back-to-back pages with valid CRCs.

    Lacing 255 continues a packet (across pages too), less ends it; nothing else. The reader
    must agree with this on any input for which it reports no event at all.
    """
    pages = parse_ogg_pages(data, contiguous=True)
    if sum(p.size for p in pages) != len(data):
        return None
    out: list[tuple[int, bytes, int]] = []
    open_packets: dict[int, bytes] = {}
    for page in pages:
        raw = bytearray(data[page.offset : page.offset + page.size])
        raw[22:26] = b"\0\0\0\0"
        if _ogg_crc(bytes(raw)) != page.crc:
            return None
        body = data[page.offset + 27 + len(page.lacing) : page.offset + page.size]
        current = open_packets.pop(page.serial, b"") if page.flags & 1 else b""
        pos = 0
        for lace in page.lacing:
            current += body[pos : pos + lace]
            pos += lace
            if lace < 255:
                out.append((page.serial, current, page.granule))
                current = b""
        if page.lacing and page.lacing[-1] == 255:
            open_packets[page.serial] = current
    return out


# --------------------------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------------------------

#: Edit kinds `apply_edit` knows. Byte level: ``flip`` (xor a byte), ``set`` (a byte to a
#: value), ``insert`` (n copies of a byte), ``delete``, ``truncate``, ``duplicate`` (a range
#: copied in place), ``token`` (insert a format keyword). Ogg page level, followed by a CRC
#: repair so the page is accepted: ``page-dup``, ``page-drop``, ``page-swap``, ``page-field``
#: (a header field or lacing value set), and ``recrc`` (repair only).
EDIT_KINDS = (
    "flip",
    "set",
    "insert",
    "delete",
    "truncate",
    "duplicate",
    "token",
    "page-dup",
    "page-drop",
    "page-swap",
    "page-field",
    "recrc",
)

# Keywords of the formats, for ``token`` edits (and the atheris dictionaries in fuzz/*.dict).
TOKENS = (
    b"OggS",
    b"OggS\x00",
    b"OpusHead",
    b"OpusTags",
    b"RIFF",
    b"RF64",
    b"WAVE",
    b"fmt ",
    b"data",
    b"ds64",
    b"LIST",
    b"fact",
    b"\xff\xff\xff\xff",
    b"\xfe\xff",
)
# Values that sit on the edges of the fields they land in (lacing 254/255, flag bits, signs).
_INTERESTING = (0, 1, 2, 4, 7, 0x7F, 0x80, 0xFE, 0xFF, 254, 255, 16, 32, 3)
# Header fields a ``page-field`` edit may set: (byte offset in the page, struct format).
_PAGE_FIELDS = (
    (5, "<B"),  # flags
    (6, "<q"),  # granule
    (14, "<I"),  # serial
    (18, "<I"),  # sequence
    (26, "<B"),  # segment count
    (27, "<B"),  # first lacing value (offset taken modulo the table below)
)


def apply_edit(data: bytes, kind: str, where: int, value: int) -> bytes:
    """Apply one edit; ``where`` and ``value`` are any non-negative ints, folded into range.

    Args:
        data: The input.
        kind: One of `EDIT_KINDS`.
        where: Position (byte, or page index for page edits).
        value: The edit's parameter (byte value, length, field choice…).

    Returns:
        The edited bytes (``data`` itself when the edit does not apply).
    """
    n = len(data)
    out = bytearray(data)
    if kind == "flip":
        if n:
            out[where % n] ^= value & 0xFF or 1
    elif kind == "set":
        if n:
            out[where % n] = _INTERESTING[value % len(_INTERESTING)]
    elif kind == "insert":
        at = where % (n + 1)
        out[at:at] = bytes([value & 0xFF]) * (1 + (value >> 8) % 64)
    elif kind == "delete":
        at = where % (n + 1)
        del out[at : at + 1 + value % 300]
    elif kind == "truncate":
        del out[where % (n + 1) :]
    elif kind == "duplicate":
        at = where % (n + 1)
        length = 1 + value % 512
        out[at:at] = out[at : at + length]
    elif kind == "token":
        at = where % (n + 1)
        out[at:at] = TOKENS[value % len(TOKENS)]
    else:
        return _page_edit(data, kind, where, value)
    return bytes(out)


def _page_edit(data: bytes, kind: str, where: int, value: int) -> bytes:
    pages = parse_ogg_pages(data)
    if kind == "recrc" or not pages:
        return fix_ogg_crcs(data)
    page = pages[where % len(pages)]
    raw = data[page.offset : page.offset + page.size]
    before, after = data[: page.offset], data[page.offset + page.size :]
    if kind == "page-dup":
        edited = before + raw + raw + after
    elif kind == "page-drop":
        edited = before + after
    elif kind == "page-swap":
        other = pages[value % len(pages)]
        if other.offset <= page.offset:
            return data
        mid = data[page.offset + page.size : other.offset]
        edited = before + data[other.offset : other.offset + other.size] + mid + raw
        edited += data[other.offset + other.size :]
    elif kind == "page-field":
        offset, fmt = _PAGE_FIELDS[value % len(_PAGE_FIELDS)]
        if offset == 27:
            if not page.lacing:
                return data
            offset += (value >> 8) % len(page.lacing)
        field = bytearray(raw)
        size = struct.calcsize(fmt)
        choice = (value >> 4) % 4
        old = struct.unpack_from(fmt, raw, offset)[0]
        bits = 8 * size
        if choice == 0:
            new = old + 1
        elif choice == 1:
            new = old - 1
        elif choice == 2:
            new = old ^ (1 << ((value >> 6) % bits))
        else:
            new = -1 if fmt == "<q" else (1 << bits) - 1
        lo, hi = (-(1 << 63), (1 << 63) - 1) if fmt == "<q" else (0, (1 << bits) - 1)
        struct.pack_into(fmt, field, offset, min(max(new, lo), hi))
        edited = before + bytes(field) + after
    else:
        raise ValueError(f"unknown edit kind {kind!r}")
    return fix_ogg_crcs(edited)


def mutate(data: bytes, rng: random.Random, max_size: int, *, ogg: bool) -> bytes:
    """One to four random edits (page-level ones only for Ogg targets), cut to ``max_size``."""
    kinds = EDIT_KINDS if ogg else EDIT_KINDS[:7]
    for _ in range(rng.randint(1, 4)):
        data = apply_edit(data, rng.choice(kinds), rng.getrandbits(32), rng.getrandbits(16))
    return data[:max_size]


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------


def _options(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """libFuzzer-style ``-name=value`` options and positional corpus paths."""
    options: dict[str, str] = {}
    paths: list[str] = []
    for arg in argv:
        if arg.startswith("-") and "=" in arg:
            name, _, value = arg.lstrip("-").partition("=")
            options[name] = value
        elif not arg.startswith("-"):
            paths.append(arg)
    return options, paths


def _load_corpus(paths: Sequence[str]) -> list[bytes]:
    out = []
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        out += [f.read_bytes() for f in files]
    return out


def main(
    check: Check,
    *,
    seeds: Callable[[], dict[str, bytes]],
    ogg: bool,
    argv: Sequence[str] | None = None,
) -> None:
    """Run a target: atheris with libFuzzer's options, or ``--plain`` (also without atheris).

    Plain mode understands ``-runs=N``, ``-seed=S``, ``-max_len=N``, ``-max_total_time=S``,
    ``-artifact_prefix=P`` and corpus folders/files (none: the seeds are made in memory). It
    prints one JSON line of statistics; on a finding it writes the input to
    ``<artifact_prefix>crash-<sha1>`` and re-raises.
    """
    args = list(sys.argv if argv is None else argv)
    if _use_atheris(args):
        import atheris

        def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
            rng = random.Random(seed)
            if not ogg or rng.random() < 0.5:
                out: bytes = atheris.Mutate(data, max_size)
                return fix_ogg_crcs(out) if ogg and rng.random() < 0.5 else out
            return mutate(data, rng, max_size, ogg=True)

        atheris.Setup(args, check, custom_mutator=custom_mutator)
        atheris.Fuzz()
        return
    options, paths = _options(args[1:])
    runs = int(options.get("runs", "1000"))
    max_len = int(options.get("max_len", "65536"))
    deadline = time.monotonic() + float(options.get("max_total_time", "inf"))
    rng = random.Random(int(options.get("seed", "0")))
    corpus = _load_corpus(paths) if paths else list(seeds().values())
    corpus = [c[:max_len] for c in corpus] or [b""]
    started = time.monotonic()
    done = 0
    for data in corpus:  # every seed as it is first
        _run_one(check, data, options)
        done += 1
    while done < runs and time.monotonic() < deadline:
        data = mutate(rng.choice(corpus), rng, max_len, ogg=ogg)
        if rng.random() < 0.05:  # crossover: join the heads/tails of two inputs
            other = rng.choice(corpus)
            data = (data[: rng.randint(0, len(data))] + other[rng.randint(0, len(other)) :])[
                :max_len
            ]
        _run_one(check, data, options)
        done += 1
    elapsed = time.monotonic() - started
    stats = {"mode": "plain", "runs": done, "seconds": round(elapsed, 3)}
    stats["exec_per_s"] = round(done / elapsed, 1) if elapsed > 0 else done
    print(json.dumps(stats), flush=True)


def _run_one(check: Check, data: bytes, options: dict[str, str]) -> None:
    try:
        check(data)
    except BaseException:
        name = options.get("artifact_prefix", "") + "crash-" + hashlib.sha1(data).hexdigest()
        Path(name).write_bytes(data)
        print(f"finding: input written to {name} ({len(data)} bytes)", file=sys.stderr)
        raise
