"""WavReader against WAVs written by real tools (sox, espeak-ng), and sox reading wav_header.

sox writes WAVE_FORMAT_EXTENSIBLE for more than 16 bits or 2 channels, and both tools write the
0x7FFFF000 "unknown length" placeholder when writing to a pipe: the shapes TTS servers send.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.wavtools import read_all, splits

from streamtts.events import StreamEnded
from streamtts.wav import WavReader, decode_samples, wav_header


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # a failure, not a skip: scripts/setup installs the reference tools
        pytest.fail(f"{name} is not installed (apt-get install {name}; see scripts/setup)")
    return path


def run(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(args, input=stdin, capture_output=True, check=True, timeout=30).stdout


def sox_f32(path_or_stdin: str, wav: bytes | None = None) -> np.ndarray:
    """sox's own decoding of a WAV to float32 samples (interleaved)."""
    raw = run(tool("sox"), "-t", "wav", path_or_stdin, "-t", "f32", "-e", "float", "-", stdin=wav)
    return np.frombuffer(raw, dtype=np.float32)


SOX_FORMATS = [
    ("signed-integer", 16, 1),
    ("signed-integer", 24, 3),  # WAVE_FORMAT_EXTENSIBLE
    ("signed-integer", 32, 2),
    ("unsigned-integer", 8, 1),
    ("floating-point", 32, 2),
    ("a-law", 8, 1),
    ("u-law", 8, 1),
]


@pytest.mark.parametrize(("encoding", "bits", "channels"), SOX_FORMATS)
@pytest.mark.parametrize("to_pipe", [False, True])
def test_sox_wavs_decode_like_sox_itself(
    tmp_path: Path, encoding: str, bits: int, channels: int, to_pipe: bool
) -> None:
    path = tmp_path / "tone.wav"
    synth = ["-n", "-r", "16000", "-c", str(channels), "-e", encoding, "-b", str(bits)]
    effects = ["synth", "0.05", "sine", "300-2000", "vol", "0.8"]
    if to_pipe:  # unknown length: sox writes the 0x7FFFF000 placeholder sizes
        data = run(tool("sox"), *synth, "-t", "wav", "-", *effects)
    else:
        run(tool("sox"), *synth, str(path), *effects)
        data = path.read_bytes()
    reader = WavReader()
    out = read_all(reader, splits(data, 333))
    assert (reader.channels, reader.sample_rate) == (channels, 16000)
    path.write_bytes(data)
    reference = sox_f32(str(path)).reshape(-1, channels)
    assert out.shape == reference.shape == (800, channels)
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-7)
    assert any(isinstance(e, StreamEnded) for e in reader.events) != to_pipe


def test_espeak_streamed_wav_equals_its_file_wav(tmp_path: Path) -> None:
    espeak = tool("espeak-ng")
    text = "Streaming speech, read to the end."
    streamed = run(espeak, "--stdout", text)
    path = tmp_path / "speech.wav"
    run(espeak, "-w", str(path), text)
    from_pipe = read_all(WavReader(), splits(streamed, 4096))
    from_file = WavReader()
    audio = read_all(from_file, [path.read_bytes()])
    assert from_file.sample_rate == 22050
    assert audio.shape[0] > 22050 // 2
    np.testing.assert_array_equal(from_pipe, audio)


@pytest.mark.parametrize("fmt", ["u8", "s16le", "s24le", "s32le", "f32le", "mulaw", "alaw"])
@pytest.mark.parametrize("frames", [None, 100])
def test_sox_reads_our_headers(fmt: str, frames: int | None) -> None:
    rng = np.random.default_rng(3)
    width = {"u8": 1, "s16le": 2, "s24le": 3, "s32le": 4, "f32le": 4}.get(fmt, 1)
    payload = rng.integers(0, 256, 100 * 2 * width, dtype=np.uint8).tobytes()
    if fmt == "f32le":
        payload = rng.uniform(-1, 1, 200).astype("<f4").tobytes()
    wav = wav_header(16000, 2, sample_format=fmt, frames=frames) + payload
    ours = decode_samples(payload, fmt, 2)
    theirs = sox_f32("-", wav).reshape(-1, 2)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-7)
