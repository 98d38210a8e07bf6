"""WavReader, PcmReader and wav_header: what streaming TTS servers send, split every way."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest
from support.wavtools import build_wav, chunk, fmt_body, read_all, s16, splits

from streamtts.errors import ProtocolError, UnsupportedFormat, UsageError
from streamtts.events import HeaderReceived, StreamEnded, StreamTruncated, SyncLost
from streamtts.wav import SAMPLE_FORMATS, PcmReader, WavReader, decode_samples, wav_header

RNG = np.random.default_rng(1234)
TONE = (np.sin(np.arange(600) * 0.05) * 20000).astype(np.int16)


def python_wave(frames: np.ndarray, *, channels: int = 1, rate: int = 22050) -> bytes:
    """A WAV written by the standard library (honest sizes)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.astype("<i2").tobytes())
    return buf.getvalue()


def random_pieces(data: bytes, rng: np.random.Generator) -> list[bytes]:
    pieces, i = [], 0
    while i < len(data):
        n = int(rng.integers(0, 40))  # 0: empty feeds are allowed too
        pieces.append(data[i : i + n])
        i += n
    return pieces


# -- the basic shape ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 7, 43, 44, 45, 441, 100_000])
def test_python_wave_file_reads_identically_for_every_chunk_size(size: int) -> None:
    stereo = TONE[:600].reshape(300, 2)
    data = python_wave(stereo, channels=2)
    reader = WavReader()
    out = read_all(reader, splits(data, size))
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out, stereo / np.float32(32768))
    assert (reader.channels, reader.sample_rate, reader.position) == (2, 22050, 300)
    assert reader.events == [
        HeaderReceived(offset=0, codec="pcm_s16le", serial=0, channels=2, sample_rate=22050),
        StreamEnded(offset=len(data), serial=0, position=300),
    ]


def test_header_split_at_every_byte_gives_the_same_audio_and_events() -> None:
    odd = chunk(b"odd ", b"xyz")  # 3 bytes + pad
    data = build_wav(
        s16(TONE[:50]),
        before=[chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00lavf\x00"), odd],
        data_size=0xFFFFFFFF,
    )
    whole = WavReader()
    expected = read_all(whole, [data])
    assert expected.shape == (50, 1)
    for cut in range(1, len(data)):
        reader = WavReader()
        out = read_all(reader, [data[:cut], data[cut:]])
        np.testing.assert_array_equal(out, expected)
        assert reader.events == whole.events


def test_random_chunkings_with_empty_feeds_give_identical_output() -> None:
    data = python_wave(TONE)
    expected = read_all(WavReader(), [data])
    for _ in range(50):
        np.testing.assert_array_equal(read_all(WavReader(), random_pieces(data, RNG)), expected)


def test_nothing_is_returned_before_the_first_whole_frame() -> None:
    data = build_wav(s16([1000, -1000]), channels=2)
    reader = WavReader()
    assert reader.feed(data[:-1]) == []
    assert reader.channels == 2
    (block,) = reader.feed(data[-1:])
    np.testing.assert_array_equal(block, [[1000 / 32768, -1000 / 32768]])


def test_pop_events_returns_each_event_once_and_events_keeps_them_all() -> None:
    data = python_wave(TONE[:10])
    reader = WavReader()
    reader.feed(data[:50])
    first = reader.pop_events()
    assert [type(e) for e in first] == [HeaderReceived]
    assert reader.pop_events() == []
    reader.feed(data[50:])
    assert [type(e) for e in reader.pop_events()] == [StreamEnded]
    assert [type(e) for e in reader.events] == [HeaderReceived, StreamEnded]


# -- streaming sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_size", "riff_size"),
    [
        (0xFFFFFFFF, 0xFFFFFFFF),  # OpenAI-style streaming header
        (0, 36),  # Python wave / hand-built headers written before the length is known
        (0, 0),
        (0x7FFFF000, 0x7FFFF024),  # espeak-ng --stdout, sox to a pipe
        (0x7FFFFFFF, 0xFFFFFFFF),
        (0xFFFFFFFF - 44, 0xFFFFFFFF - 8),
    ],
)
def test_unknown_length_placeholders_read_to_the_end_of_the_input(
    data_size: int, riff_size: int
) -> None:
    data = build_wav(s16(TONE), data_size=data_size, riff_size=riff_size)
    reader = WavReader()
    out = read_all(reader, splits(data, 100))
    np.testing.assert_array_equal(out[:, 0], TONE / np.float32(32768))
    assert not any(isinstance(e, StreamEnded) for e in reader.events)


def test_honest_data_size_ends_the_stream_and_trailing_bytes_are_reported_once() -> None:
    audio = s16(TONE[:100])
    data = build_wav(audio, after=b"\x01\x02garbage after the data" * 10)
    reader = WavReader()
    out = read_all(reader, splits(data, 7))
    assert out.shape == (100, 1)
    ended = [e for e in reader.events if isinstance(e, StreamEnded)]
    lost = [e for e in reader.events if isinstance(e, SyncLost)]
    assert ended == [StreamEnded(offset=44 + len(audio), serial=0, position=100)]
    assert lost == [SyncLost(offset=44 + len(audio), skipped=len(data) - 44 - len(audio))]
    assert reader.position == 100


def test_metadata_chunk_after_the_data_is_skipped_not_played() -> None:
    audio = s16(TONE[:99]) + b"\x07"  # odd data size: a pad byte follows
    data = build_wav(audio, code=1, bits=8, after=b"\x00" + chunk(b"LIST", b"INFOabcd"))
    reader = WavReader()
    out = read_all(reader, splits(data, 5))
    assert out.shape == (len(audio), 1)
    (lost,) = [e for e in reader.events if isinstance(e, SyncLost)]
    assert lost.skipped == 16  # the LIST chunk, not the pad byte


def test_concatenated_wavs_play_one_after_the_other_with_their_own_format() -> None:
    first = build_wav(s16(TONE[:40]), rate=24000)
    second = build_wav(
        np.linspace(-0.5, 0.5, 30, dtype="<f4").tobytes(), code=3, bits=32, channels=2, rate=16000
    )
    reader = WavReader()
    blocks = []
    for piece in splits(first + second, 9):
        blocks += reader.feed(piece)
    blocks += reader.close()
    assert sum(b.shape[0] for b in blocks if b.shape[1] == 1) == 40
    assert sum(b.shape[0] for b in blocks if b.shape[1] == 2) == 15
    headers = [e for e in reader.events if isinstance(e, HeaderReceived)]
    assert [(h.offset, h.sample_rate, h.channels, h.codec) for h in headers] == [
        (0, 24000, 1, "pcm_s16le"),
        (len(first), 16000, 2, "pcm_f32le"),
    ]
    assert (reader.sample_rate, reader.channels, reader.position) == (16000, 2, 55)


def test_a_second_wav_cut_inside_its_header_is_a_truncation_not_an_error() -> None:
    first = build_wav(s16(TONE[:40]))
    reader = WavReader()
    out = read_all(reader, [first + b"RIFF\xff\xff\xff\xffWAVEfmt "])
    assert out.shape == (40, 1)
    assert reader.events[-1] == StreamTruncated(offset=len(first), pending=16)


def test_truncated_last_frame_is_reported_at_close() -> None:
    data = build_wav(s16([1, 2, 3, 4]), channels=2, data_size=0xFFFFFFFF) + b"\x05\x00\x06"
    reader = WavReader()
    out = read_all(reader, [data])
    assert out.shape == (2, 2)
    assert reader.events[-1] == StreamTruncated(offset=len(data), pending=3)


def test_honest_size_cut_short_reports_the_partial_frame() -> None:
    data = build_wav(s16(TONE[:10]))[:-3]
    reader = WavReader()
    assert read_all(reader, [data]).shape == (8, 1)
    assert isinstance(reader.events[-1], StreamTruncated)
    assert reader.events[-1].pending == 1


# -- chunks before the data ---------------------------------------------------------------------


def test_chunks_before_data_are_skipped_including_odd_sizes_with_pad_bytes() -> None:
    before = [
        chunk(b"JUNK", bytes(28)),
        chunk(b"LIST", b"INFOISFT\x0d\x00\x00\x00Lavf60.16.100\x00"),
        chunk(b"bext", b"\xaa" * 7),  # odd: one pad byte
        chunk(b"fact", struct.pack("<I", 5)),
        chunk(b"zero", b""),
    ]
    data = build_wav(s16(TONE[:5]), before=before)
    out = read_all(WavReader(), splits(data, 3))
    np.testing.assert_array_equal(out[:, 0], TONE[:5] / np.float32(32768))


def test_writer_that_forgot_the_pad_byte_is_tolerated() -> None:
    data = build_wav(s16(TONE[:5]), before=[chunk(b"odd ", b"\x01\x02\x03", pad=False)])
    out = read_all(WavReader(), [data])
    np.testing.assert_array_equal(out[:, 0], TONE[:5] / np.float32(32768))


def test_rf64_takes_the_data_size_from_ds64() -> None:
    audio = s16(TONE[:20])
    ds64 = chunk(b"ds64", struct.pack("<QQQI", 0xFFFFFFFF, len(audio), 20, 0))
    data = build_wav(
        audio, magic=b"RF64", riff_size=0xFFFFFFFF, data_size=0xFFFFFFFF, before=[ds64]
    )
    reader = WavReader()
    out = read_all(reader, [data + b"trailing"])
    assert out.shape == (20, 1)
    assert any(isinstance(e, StreamEnded) for e in reader.events)


# -- sample formats -----------------------------------------------------------------------------


def test_integer_and_float_formats_convert_to_the_right_values() -> None:
    ints = np.array([-(2**31), -(2**20), -1, 0, 1, 2**24, 2**31 - 1], dtype=np.int64)
    s24 = ints >> 8  # 24-bit values
    cases = [
        (1, 8, np.array([0, 1, 128, 255], np.uint8).tobytes(), [-1.0, -127 / 128, 0.0, 127 / 128]),
        (1, 16, s16([-32768, -1, 0, 32767]), [-1.0, -1 / 32768, 0.0, 32767 / 32768]),
        (
            1,
            24,
            b"".join(int(v).to_bytes(3, "little", signed=True) for v in s24),
            s24 / 2.0**23,
        ),
        (1, 32, ints.astype("<i4").tobytes(), ints / 2.0**31),
        (3, 32, np.array([0.25, -1.5], "<f4").tobytes(), [0.25, -1.5]),
        (3, 64, np.array([0.125, -0.75], "<f8").tobytes(), [0.125, -0.75]),
    ]
    for code, bits, payload, expected in cases:
        out = read_all(WavReader(), [build_wav(payload, code=code, bits=bits)])
        np.testing.assert_allclose(out[:, 0], expected, rtol=0, atol=1e-7, err_msg=f"{bits}")


def test_g711_wavs_decode_to_the_standard_values() -> None:
    # ITU-T G.711 reference points (16-bit linear): mu-law 0x00 = -32124, 0x80 = +32124,
    # 0xFF = 0; A-law 0xD5 = +8, 0x55 = -8, 0xAA = +32256, 0x2A = -32256, 0x80 = +5504.
    mu = read_all(WavReader(), [build_wav(bytes([0x00, 0x80, 0xFF]), code=7, bits=8)])
    np.testing.assert_array_equal(mu[:, 0] * 32768, [-32124, 32124, 0])
    alaw = read_all(WavReader(), [build_wav(bytes([0xD5, 0x55, 0xAA, 0x2A, 0x80]), code=6, bits=8)])
    np.testing.assert_array_equal(alaw[:, 0] * 32768, [8, -8, 32256, -32256, 5504])
    for law in ("mulaw", "alaw"):
        table = decode_samples(bytes(range(256)), law, 1)[:, 0]
        positive = np.sort(np.abs(table))
        assert len(np.unique(positive)) >= 127  # 128 magnitudes (mu-law has +0 and -0)
        assert np.all(np.abs(table) < 1.0)


def test_wave_format_extensible_24_bit_three_channels() -> None:
    frames = np.array([[1, -2, 3], [2**23 - 1, -(2**23), 0]], dtype=np.int64)
    payload = b"".join(int(v).to_bytes(3, "little", signed=True) for v in frames.ravel())
    data = build_wav(payload, code=1, bits=24, channels=3, extensible=True)
    reader = WavReader()
    out = read_all(reader, splits(data, 1))
    np.testing.assert_allclose(out, frames / 2.0**23, rtol=0, atol=1e-9)
    assert reader.events[0] == HeaderReceived(
        offset=0, codec="pcm_s24le", serial=0, channels=3, sample_rate=24000
    )


def test_wave_format_extensible_float() -> None:
    payload = np.array([0.5, -0.5, 0.25, 0.0], "<f4").tobytes()
    data = build_wav(payload, code=3, bits=32, channels=2, extensible=True, rate=48000)
    out = read_all(WavReader(), [data])
    np.testing.assert_array_equal(out, [[0.5, -0.5], [0.25, 0.0]])


def test_decode_samples_rejects_partial_frames_and_unknown_formats() -> None:
    with pytest.raises(UsageError):
        decode_samples(b"\x00\x00\x00", "s16le", 1)
    with pytest.raises(UsageError):
        decode_samples(b"", "s17le", 1)


def test_every_listed_sample_format_decodes_zero_bytes_to_zero_frames() -> None:
    for name in SAMPLE_FORMATS:
        assert decode_samples(b"", name, 2).shape == (0, 2)


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (build_wav(b"", channels=0), "0 channels"),
        (build_wav(b"", rate=0), "sample rate 0"),
        (
            b"RIFF\xff\xff\xff\xffWAVE" + b"fmt " + struct.pack("<I", (1 << 20) + 2),
            "claims",
        ),
        (b"RIFF\xff\xff\xff\xffWAVEdata\xff\xff\xff\xff\x00\x00", "before the fmt"),
        (b"RIFF\xff\xff\xff\xffWAVE" + chunk(b"fmt ", bytes(12)), "at least 16"),
        (b"RIFF\xff\xff\xff\xffWAVE\x00\x01\x02\x03\x04\x00\x00\x00", "not ASCII"),
        (b"RIFF\xff\xff\xff\xffWAVEJUNK\xff\xff\xff\xff", "claims"),
        (
            b"RIFF\xff\xff\xff\xffWAVE"
            + chunk(b"fmt ", fmt_body(1, 2, 24000, 16, block_align=3))
            + b"data\x00\x00\x00\x00",
            "block align",
        ),
        (b"RIFF\xff\xff\xff\xffWAVE" + chunk(b"fmt ", bytes(18)) + b"data", "0 channels"),
    ],
)
def test_absurd_headers_raise_protocol_error(data: bytes, message: str) -> None:
    reader = WavReader()
    with pytest.raises(ProtocolError, match=message):
        read_all(reader, splits(data, 5))


@pytest.mark.parametrize(
    ("code", "bits", "name"), [(0x55, 0, "MP3"), (0x11, 4, "IMA ADPCM"), (0x1234, 16, "0x1234")]
)
def test_compressed_wav_encodings_are_unsupported_format(code: int, bits: int, name: str) -> None:
    with pytest.raises(UnsupportedFormat, match=name):
        WavReader().feed(build_wav(b"\x00" * 8, code=code, bits=bits))


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", ProtocolError, "HTML"),
        (b'{"error": {"message": "Incorrect API key provided"}}', ProtocolError, "API key"),
        (b"OggS\x00\x02" + bytes(300), ProtocolError, "Ogg"),
        (b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(300), UnsupportedFormat, "MP3"),
        (b"fLaC\x00\x00\x00\x22" + bytes(30), UnsupportedFormat, "FLAC"),
        (b"RIFF\x10\x00\x00\x00AVI LIST", ProtocolError, "not WAVE"),
    ],
)
def test_not_a_wav_says_what_it_is(body: bytes, error: type[Exception], message: str) -> None:
    reader = WavReader()
    with pytest.raises(error, match=message) as info:
        read_all(reader, splits(body, 10))
    assert "expected a WAV stream" in str(info.value)


def test_a_long_non_wav_body_fails_during_feed_without_waiting_for_close() -> None:
    reader = WavReader()
    with pytest.raises(ProtocolError, match="HTML"):
        reader.feed(b"<html>" + b"x" * 1000)


def test_empty_and_cut_headers_raise_at_close() -> None:
    with pytest.raises(ProtocolError, match="empty"):
        WavReader().close()
    reader = WavReader()
    assert reader.feed(build_wav(s16([1]))[:30]) == []
    with pytest.raises(ProtocolError, match="before the WAV header was complete"):
        reader.close()


def test_a_failed_reader_keeps_failing_and_a_closed_one_refuses_data() -> None:
    reader = WavReader()
    with pytest.raises(ProtocolError):
        reader.feed(build_wav(b"", channels=0))
    with pytest.raises(ProtocolError, match="failed earlier"):
        reader.feed(b"\x00")
    closed = WavReader()
    closed.feed(python_wave(TONE[:4]))
    closed.close()
    assert closed.close() == []
    with pytest.raises(UsageError):
        closed.feed(b"\x00")


# -- PcmReader ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 3, 7, 480, 10_000])
def test_pcm_s16le_frames_split_across_chunks(size: int) -> None:
    reader = PcmReader()  # OpenAI pcm: 24 kHz s16le mono
    out = read_all(reader, splits(s16(TONE), size))
    np.testing.assert_array_equal(out[:, 0], TONE / np.float32(32768))
    assert (reader.sample_rate, reader.channels, reader.position) == (24000, 1, len(TONE))
    assert reader.events == [
        HeaderReceived(offset=0, codec="pcm_s16le", serial=0, channels=1, sample_rate=24000)
    ]


def test_pcm_f32le_stereo_and_truncated_frame() -> None:
    values = RNG.standard_normal((50, 2)).astype("<f4")
    data = values.tobytes() + b"\x01\x02\x03\x04\x05"
    reader = PcmReader(sample_rate=48000, channels=2, sample_format="f32le")
    out = read_all(reader, splits(data, 13))
    np.testing.assert_array_equal(out, values)
    assert reader.events[-1] == StreamTruncated(offset=len(data), pending=5)


def test_pcm_l16_is_big_endian() -> None:
    reader = PcmReader(sample_rate=8000, sample_format="s16be")
    (block,) = reader.feed(b"\x40\x00\xff\xff")
    np.testing.assert_array_equal(block[:, 0], [0.5, -1 / 32768])


def test_pcm_reader_misuse() -> None:
    with pytest.raises(UsageError):
        PcmReader(sample_rate=0)
    with pytest.raises(UsageError):
        PcmReader(sample_format="mp3")
    reader = PcmReader()
    reader.close()
    with pytest.raises(UsageError):
        reader.feed(b"\x00\x00")


# -- wav_header ---------------------------------------------------------------------------------


def test_sized_header_is_read_by_python_wave() -> None:
    audio = s16(TONE[:100].reshape(50, 2))
    data = wav_header(16000, 2, frames=50) + audio
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth(), w.getnframes()) == (
            2,
            16000,
            2,
            50,
        )
        assert w.readframes(50) == audio


def test_streaming_header_declares_unknown_sizes() -> None:
    header = wav_header(24000, 1)
    assert len(header) == 44
    assert header[4:8] == b"\xff\xff\xff\xff"
    assert header[40:44] == b"\xff\xff\xff\xff"


@pytest.mark.parametrize(
    "fmt", ["u8", "s16le", "s24le", "s32le", "f32le", "f64le", "mulaw", "alaw"]
)
@pytest.mark.parametrize("frames", [None, 7])
def test_every_writable_format_round_trips_through_the_reader(fmt: str, frames: int | None) -> None:
    width = {"u8": 1, "s16le": 2, "s24le": 3, "s32le": 4, "f32le": 4, "f64le": 8}.get(fmt, 1)
    payload = RNG.integers(0, 256, 7 * 2 * width, dtype=np.uint8).tobytes()
    if fmt.startswith("f"):
        payload = RNG.uniform(-1, 1, 14).astype("<f4" if width == 4 else "<f8").tobytes()
    data = wav_header(22050, 2, sample_format=fmt, frames=frames) + payload
    reader = WavReader()
    out = read_all(reader, splits(data, 5))
    np.testing.assert_array_equal(out, decode_samples(payload, fmt, 2))
    header = reader.events[0]
    assert isinstance(header, HeaderReceived)
    assert (header.codec, header.sample_rate, header.channels) == (f"pcm_{fmt}", 22050, 2)
    assert any(isinstance(e, StreamEnded) for e in reader.events) == (frames is not None)


def test_sized_header_accounts_for_the_pad_byte_of_odd_data() -> None:
    header = wav_header(8000, 1, sample_format="u8", frames=3)
    riff_size = struct.unpack_from("<I", header, 4)[0]
    assert riff_size == len(header) - 8 + 3 + 1


def test_wav_header_misuse() -> None:
    with pytest.raises(UsageError):
        wav_header(24000, 1, sample_format="s16be")
    with pytest.raises(UsageError):
        wav_header(0, 1)
    with pytest.raises(UsageError):
        wav_header(24000, 1, frames=-1)
    with pytest.raises(UsageError):
        wav_header(24000, 2, frames=2**31)
