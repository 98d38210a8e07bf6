"""Fuzz target: the WAV and raw PCM readers (`streamtts.wav`) and format detection
(`streamtts.formats`).

Oracles, for any input:

* `WavReader` either reads it or raises a `ProtocolError` (`UnsupportedFormat` included), the
  same one fed whole or in a split derived from the input; a failed reader keeps failing; PCM
  (float32, ``(frames, channels)``, C-contiguous) and events are identical for both feedings;
  ``position`` counts the frames returned;
* `PcmReader` (format and channel count picked from the input) never raises, returns exactly
  ``len // frame_size`` frames whatever the split, and reports a partial last frame;
* `sniff` never raises and decides with ``final=True``; `detect_format` names only playable
  formats, and once it has named one for a prefix, longer prefixes say the same; the error of a
  sniffed format is a `ProtocolError`; `make_reader` builds a reader for every detected format;
  `parse_content_type` accepts any header text.

Run: ``python fuzz/fuzz_wav.py fuzz/corpus/wav -dict=fuzz/formats.dict`` (see fuzz/README.md).
"""

from __future__ import annotations

import functools
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import _fuzzlib
import numpy as np

with _fuzzlib.instrumented(__name__):
    from streamtts.errors import ProtocolError, UsageError
    from streamtts.events import StreamEvent, StreamTruncated
    from streamtts.formats import (
        PLAYABLE_FORMATS,
        detect_format,
        make_reader,
        parse_content_type,
        sniff,
    )
    from streamtts.wav import PcmReader, WavReader

# Every sample format `PcmReader` takes, with its width in bytes.
_PCM_FORMATS = (
    ("u8", 1),
    ("s16le", 2),
    ("s16be", 2),
    ("s24le", 3),
    ("s24be", 3),
    ("s32le", 4),
    ("s32be", 4),
    ("f32le", 4),
    ("f32be", 4),
    ("f64le", 8),
    ("mulaw", 1),
    ("alaw", 1),
)


@dataclass
class Outcome:
    """What one reader run gave: PCM runs per channel count, events, or the error type."""

    pcm: list[tuple[int, bytes]]
    events: list[StreamEvent]
    error: type[ProtocolError] | None


def _take(blocks: list[np.ndarray], runs: list[tuple[int, bytearray]]) -> int:
    frames = 0
    for block in blocks:
        assert block.dtype == np.float32, block.dtype
        assert block.ndim == 2, block.shape
        assert block.flags.c_contiguous
        assert 1 <= block.shape[1] <= 255
        frames += block.shape[0]
        if runs and runs[-1][0] == block.shape[1]:
            runs[-1][1].extend(block.tobytes())
        else:
            runs.append((block.shape[1], bytearray(block.tobytes())))
    return frames


def read_wav(chunks: list[bytes]) -> Outcome:
    """Run a `WavReader` over ``chunks``, checking every block and its bookkeeping."""
    reader = WavReader()
    runs: list[tuple[int, bytearray]] = []
    popped: list[StreamEvent] = []
    frames = 0
    try:
        for chunk in chunks:
            frames += _take(reader.feed(chunk), runs)
            popped += reader.pop_events()
        frames += _take(reader.close(), runs)
    except ProtocolError as exc:
        retries: list[Callable[[], object]] = [functools.partial(reader.feed, b""), reader.close]
        for retry in retries:
            try:
                retry()
            except ProtocolError:
                pass
            else:
                raise AssertionError("a failed WavReader accepted more calls") from exc
        return Outcome([], [], type(exc))
    assert reader.position == frames
    assert popped + reader.pop_events() == reader.events, "pop_events() lost or repeated events"
    assert reader.close() == []
    try:
        reader.feed(b"")
    except UsageError:
        pass
    else:
        raise AssertionError("feed() after close() did not raise UsageError")
    # Bytes are compared, so NaN payloads of float WAVs compare equal to themselves.
    return Outcome([(c, bytes(b)) for c, b in runs], list(reader.events), None)


def check_pcm(data: bytes, chunks: list[bytes], seed: int) -> None:
    """`PcmReader` in a format chosen by ``seed``: same frames whole and split, never raises."""
    name, width = _PCM_FORMATS[seed % len(_PCM_FORMATS)]
    channels = 1 + (seed >> 8) % 3
    results = []
    for feeding in ([data], chunks):
        reader = PcmReader(8000, channels, name)
        runs: list[tuple[int, bytearray]] = []
        frames = sum(_take(reader.feed(c), runs) for c in feeding) + _take(reader.close(), runs)
        frame_size = width * channels
        assert frames == reader.position == len(data) // frame_size
        truncated = [e for e in reader.events if isinstance(e, StreamTruncated)]
        assert [e.pending for e in truncated] == (
            [len(data) % frame_size] if len(data) % frame_size else []
        )
        results.append(([(c, bytes(b)) for c, b in runs], reader.events))
    assert results[0] == results[1], "PcmReader output depends on the chunking"


def check_formats(data: bytes, chunks: list[bytes]) -> None:
    """Format detection on the input and on the prefixes at the chunk boundaries."""
    final = sniff(data, final=True)
    assert final is not None
    assert isinstance(final.error(), ProtocolError)
    found = sniff(data)
    assert found is None or found.kind == final.kind or not found.playable
    detected = detect_format(data)
    assert detected is None or detected in PLAYABLE_FORMATS
    end = 0
    for chunk in chunks:
        end += len(chunk)
        early = detect_format(data[:end])
        if early is not None:
            assert detected == early, f"{early!r} after {end} bytes, {detected!r} after all"
    if detected is not None and detected != "ogg":  # the Ogg reader needs libopus: fuzz_opus
        make_reader(detected)
    media = parse_content_type(data.decode("latin-1"))
    if media is not None:
        assert media.format
        assert media.mime
        assert media.sample_rate is None or media.sample_rate > 0
        assert media.channels is None or media.channels > 0


@_fuzzlib.contract
def check(data: bytes, chunks: list[bytes] | None = None) -> None:
    """Assert the readers' and detectors' contract on ``data`` (see the module docstring)."""
    chunks = _fuzzlib.chunk_plan(data) if chunks is None else chunks
    whole = read_wav([data])
    split = read_wav(chunks)
    assert split.error is whole.error, f"whole: {whole.error}, split: {split.error}"
    assert split.events == whole.events, "events depend on the chunking"
    assert split.pcm == whole.pcm, "PCM depends on the chunking"
    check_pcm(data, chunks, zlib.crc32(data))
    check_formats(data, chunks)


if __name__ == "__main__":
    from make_seeds import wav_seeds

    _fuzzlib.main(check, seeds=wav_seeds, ogg=False)
    sys.exit(0)
