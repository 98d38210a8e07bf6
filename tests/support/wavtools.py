"""Hand-built WAV files for reader tests: every header field under the test's control."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")


def chunk(tag: bytes, body: bytes, *, size: int | None = None, pad: bool = True) -> bytes:
    """A RIFF chunk; odd bodies get their zero pad byte unless ``pad`` is False."""
    declared = len(body) if size is None else size
    out = tag + struct.pack("<I", declared) + body
    if pad and len(body) % 2:
        out += b"\x00"
    return out


def fmt_body(
    code: int,
    channels: int,
    rate: int,
    bits: int,
    *,
    extensible: bool = False,
    valid_bits: int | None = None,
    block_align: int | None = None,
) -> bytes:
    """The body of a ``fmt `` chunk (16 bytes, or 40 for WAVE_FORMAT_EXTENSIBLE)."""
    align = channels * ((bits + 7) // 8) if block_align is None else block_align
    tag = 0xFFFE if extensible else code
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    if extensible:
        guid = struct.pack("<H", code) + GUID_TAIL
        body += struct.pack("<HHI", 22, valid_bits or bits, 0) + guid
    return body


def build_wav(
    data: bytes,
    *,
    code: int = 1,
    channels: int = 1,
    rate: int = 24000,
    bits: int = 16,
    extensible: bool = False,
    data_size: int | None = None,
    riff_size: int | None = None,
    before: Sequence[bytes] = (),
    after: bytes = b"",
    magic: bytes = b"RIFF",
) -> bytes:
    """A whole WAV: RIFF header, chunks in ``before``, fmt, data (declared ``data_size``)."""
    fmt = chunk(b"fmt ", fmt_body(code, channels, rate, bits, extensible=extensible))
    body = b"WAVE" + b"".join(before) + fmt
    body += b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data
    declared = len(body) if riff_size is None else riff_size
    return magic + struct.pack("<I", declared) + body + after


def s16(values: npt.ArrayLike) -> bytes:
    """Little-endian int16 bytes of ``values`` (clipped)."""
    return np.clip(np.asarray(values), -32768, 32767).astype("<i2").tobytes()


def splits(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in pieces of ``size`` bytes."""
    for i in range(0, len(data), size):
        yield data[i : i + size]


def read_all(reader: object, pieces: Sequence[bytes] | Iterator[bytes]) -> np.ndarray:
    """Feed every piece then close; the concatenated output (0 frames if none)."""
    blocks: list[np.ndarray] = []
    for piece in pieces:
        blocks += reader.feed(piece)  # type: ignore[attr-defined]
    blocks += reader.close()  # type: ignore[attr-defined]
    channels = reader.channels or 1  # type: ignore[attr-defined]
    return np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)
