"""Property tests: any valid WAV in any chunking reads the same; any bytes fail only cleanly."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.wavtools import build_wav, chunk, read_all

from streamtts.errors import ProtocolError
from streamtts.events import StreamEnded
from streamtts.wav import PcmReader, WavReader, decode_samples

# (WAV format code, bits, our sample format)
FORMATS = [
    (1, 8, "u8"),
    (1, 16, "s16le"),
    (1, 24, "s24le"),
    (1, 32, "s32le"),
    (3, 32, "f32le"),
    (3, 64, "f64le"),
    (6, 8, "alaw"),
    (7, 8, "mulaw"),
]
UNKNOWN_SIZES = [0, 0xFFFFFFFF, 0x7FFFF000, 0x7FFFFFFF]

chunk_ids = st.sampled_from([b"LIST", b"fact", b"JUNK", b"bext", b"id3 ", b"cue "])
extra_chunks = st.lists(st.tuples(chunk_ids, st.binary(max_size=40)), max_size=3)


@st.composite
def wav_streams(draw: st.DrawFn) -> tuple[bytes, np.ndarray, bool]:
    """A WAV (bytes), the frames it holds, and whether its data size is declared."""
    code, bits, name = draw(st.sampled_from(FORMATS))
    channels = draw(st.integers(1, 4))
    rate = draw(st.sampled_from([8000, 11025, 16000, 22050, 24000, 44100, 48000, 96000]))
    frames = draw(st.integers(0, 40))
    width = bits // 8
    if name.startswith("f"):
        values = draw(
            st.lists(
                st.floats(-2, 2, width=32), min_size=frames * channels, max_size=frames * channels
            )
        )
        payload = np.array(values, "<f4" if width == 4 else "<f8").tobytes()
    else:
        payload = draw(
            st.binary(min_size=frames * width * channels, max_size=frames * width * channels)
        )
    sized = draw(st.booleans())
    before = [chunk(tag, body) for tag, body in draw(extra_chunks)]
    data = build_wav(
        payload,
        code=code,
        bits=bits,
        channels=channels,
        rate=rate,
        extensible=draw(st.booleans()) and code in (1, 3),
        data_size=None if sized else draw(st.sampled_from(UNKNOWN_SIZES)),
        before=before,
    )
    # A declared size of 0 reads as "unknown" (streaming writers put 0 there).
    return data, decode_samples(payload, name, channels), sized and bool(payload)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=wav_streams(), points=st.lists(st.integers(0, 10_000), max_size=12))
def test_any_wav_in_any_chunking_gives_its_frames_and_the_same_events(
    stream: tuple[bytes, np.ndarray, bool], points: list[int]
) -> None:
    data, frames, sized = stream
    whole = WavReader()
    expected = read_all(whole, [data])
    np.testing.assert_array_equal(expected, frames)
    pieces = WavReader()
    np.testing.assert_array_equal(read_all(pieces, cut(data, points)), frames)
    assert pieces.events == whole.events
    assert pieces.position == frames.shape[0]
    assert any(isinstance(e, StreamEnded) for e in pieces.events) == sized


@settings(max_examples=500, deadline=None)
@given(
    prefix=st.sampled_from(
        [b"", b"RIFF", b"RIFF\xff\xff\xff\xffWAVE", b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00"]
    ),
    body=st.binary(max_size=300),
    points=st.lists(st.integers(0, 400), max_size=8),
)
def test_arbitrary_bytes_raise_nothing_but_protocol_error(
    prefix: bytes, body: bytes, points: list[int]
) -> None:
    reader = WavReader()
    try:
        out = read_all(reader, cut(prefix + body, points))
    except ProtocolError:
        return
    assert out.dtype == np.float32
    assert out.ndim == 2


@settings(max_examples=200, deadline=None)
@given(
    stream=wav_streams(),
    trailer=st.binary(max_size=64),
    points=st.lists(st.integers(0, 10_000), max_size=8),
)
def test_bytes_after_a_wav_never_raise_or_change_its_audio(
    stream: tuple[bytes, np.ndarray, bool], trailer: bytes, points: list[int]
) -> None:
    data, frames, sized = stream
    reader = WavReader()
    out = read_all(reader, cut(data + trailer, points))
    if sized:
        np.testing.assert_array_equal(out[: frames.shape[0]], frames)


@settings(max_examples=200, deadline=None)
@given(
    fmt=st.sampled_from(["u8", "s16le", "s16be", "s24le", "s24be", "s32le", "f32le", "mulaw"]),
    channels=st.integers(1, 3),
    payload=st.binary(max_size=200),
    points=st.lists(st.integers(0, 300), max_size=10),
)
def test_pcm_reader_chunking_never_changes_the_frames(
    fmt: str, channels: int, payload: bytes, points: list[int]
) -> None:
    width = {"u8": 1, "mulaw": 1, "s16le": 2, "s16be": 2, "s24le": 3, "s24be": 3}.get(fmt, 4)
    whole = len(payload) - len(payload) % (width * channels)
    reader = PcmReader(sample_rate=16000, channels=channels, sample_format=fmt)
    out = read_all(reader, cut(payload, points))
    np.testing.assert_array_equal(out, decode_samples(payload[:whole], fmt, channels))
    assert reader.position == whole // (width * channels)
