"""OggOpusEncoder output checked by the reference tools: opusinfo accepts it without a warning,
opusdec decodes it to exactly the input length, and our decoder agrees with opusdec."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from support.corpus import get_corpus, ogg_pages, packets_of, page_granule, read_wav_float

from streamtts.opus import OggOpusEncoder, OpusHead, OpusTags, decode_opus_stream


def _tone(rate: int, seconds: float, channels: int = 1) -> npt.NDArray[np.float32]:
    t = np.arange(int(rate * seconds)) / rate
    columns = [0.3 * np.sin(2 * np.pi * (330 + 220 * c) * t) for c in range(channels)]
    return np.stack(columns, axis=1).astype(np.float32)


def _encode(pcm: npt.NDArray[np.float32], rate: int, **options: float) -> bytes:
    encoder = OggOpusEncoder(rate, pcm.shape[1], **options)  # type: ignore[arg-type]
    out = bytearray()
    for start in range(0, len(pcm), 777):  # odd-sized pieces: frames straddle calls
        out += encoder.encode(pcm[start : start + 777])
    return bytes(out + encoder.finish())


def _opusinfo(path: Path) -> str:
    result = subprocess.run(["opusinfo", str(path)], capture_output=True, text=True, check=True)
    return result.stdout + result.stderr


def _opusdec(path: Path, channels: int) -> npt.NDArray[np.float32]:
    raw = path.with_suffix(".raw")
    subprocess.run(
        ["opusdec", "--quiet", "--float", "--rate", "48000", str(path), str(raw)], check=True
    )
    return np.fromfile(raw, "<f4").reshape(-1, channels)


@pytest.mark.parametrize(
    ("rate", "channels", "frame_ms", "page_ms"),
    [
        (48000, 1, 20, 20),
        (48000, 2, 20, 1000),
        (24000, 1, 2.5, 20),
        (16000, 1, 60, 100),
        (12000, 2, 10, 20),
        (8000, 1, 40, 1000),
        (48000, 1, 5, 0),
    ],
)
def test_encoded_file_passes_opusinfo_and_decodes_to_the_input_length(
    tmp_path: Path, rate: int, channels: int, frame_ms: float, page_ms: float
) -> None:
    pcm = _tone(rate, 0.73, channels)
    data = _encode(pcm, rate, frame_ms=frame_ms, page_ms=page_ms, padding=100)
    path = tmp_path / "out.opus"
    path.write_bytes(data)
    info = _opusinfo(path)
    assert "warning" not in info.lower(), info
    assert "error" not in info.lower(), info
    assert "Encoded with streamtts" in info
    ref = _opusdec(path, channels)
    k = 48000 // rate
    assert len(ref) == len(pcm) * k
    ours = decode_opus_stream([data])
    assert ours.shape == ref.shape
    assert float(np.max(np.abs(ours - ref))) <= 1e-6
    at_rate = decode_opus_stream([data], rate)
    assert len(at_rate) == len(pcm)


def test_page_ms_sets_the_page_layout() -> None:
    pcm = _tone(48000, 2.0)
    low = _encode(pcm, 48000, page_ms=20)
    long = _encode(pcm, 48000, page_ms=1000)
    low_audio = ogg_pages(low)[2:]
    long_audio = ogg_pages(long)[2:]
    assert len(low_audio) == len(packets_of(low)) - 2  # one packet per page
    assert len(long_audio) == 3  # 1 s, 1 s, and the flush (EOS) page


def test_header_granules_and_end_trim_are_rfc7845(tmp_path: Path) -> None:
    pcm = _tone(24000, 0.5)
    encoder = OggOpusEncoder(24000, 1, padding=2000, serial=1234)
    data = encoder.encode(pcm) + encoder.finish()
    packets = packets_of(data)
    head = OpusHead.parse(packets[0].data)
    assert head.input_sample_rate == 24000
    assert head.channels == 1
    assert head.pre_skip == encoder.head.pre_skip > 0  # look-ahead scaled to 48 kHz
    tags = OpusTags.parse(packets[1].data)
    assert tags.vendor == "streamtts"
    assert tags.extra == b"\0" * 2000
    pages = ogg_pages(data)
    assert page_granule(data, pages[0][0]) == 0
    assert page_granule(data, pages[1][0]) == 0
    assert packets[-1].eos
    assert packets[-1].granule == head.pre_skip + 2 * len(pcm)
    granules = [page_granule(data, offset) for offset, _ in pages[2:]]
    assert granules == sorted(granules)
    assert all(p.serial == 1234 for p in packets)


def test_int16_input_encodes_like_the_same_float_input() -> None:
    pcm16 = (_tone(48000, 0.3) * 32767).astype(np.int16)
    a = OggOpusEncoder(48000, 1, serial=1)
    b = OggOpusEncoder(48000, 1, serial=1)
    from_int = a.encode(pcm16) + a.finish()
    from_float = b.encode(pcm16.astype(np.float32) / 32768) + b.finish()
    assert from_int == from_float


def test_speech_round_trip_through_the_encoder_is_close_to_the_input(tmp_path: Path) -> None:
    speech = read_wav_float(get_corpus().source("speech"))  # 22050 Hz: take 1 s as if 24 kHz
    pcm = speech[:24000]
    data = _encode(pcm, 24000, bitrate=64000)
    out = decode_opus_stream([data], 24000)
    assert out.shape == pcm.shape
    error = float(np.sum((out - pcm) ** 2)) / float(np.sum(pcm**2))
    assert error < 0.05  # about 13 dB SNR or better: the waveform survives (lossy codec)


def test_stream_with_no_samples_is_valid_and_empty(tmp_path: Path) -> None:
    encoder = OggOpusEncoder(48000, 1)
    data = encoder.finish()
    path = tmp_path / "empty.opus"
    path.write_bytes(data)
    assert "warning" not in _opusinfo(path).lower()
    assert len(_opusdec(path, 1)) == 0
    assert decode_opus_stream([data]).shape == (0, 1)
