"""Test audio made at test time: tones, float WAV bytes, Opus files and their opusdec reference.

Tones start at sample index 1 of a sine (so their first sample is already non-zero, which keeps
alignment by first non-zero sample exact) and never cross zero exactly on a sample for the
frequencies used here, so a silent run in a recording is a real gap.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamtts.wav import wav_header

__all__ = ["float_wav", "header_size", "opus_file", "opusdec_reference", "tone"]

Float32 = npt.NDArray[np.float32]


def tone(seconds: float, freq: float = 300.0, *, rate: int = 48000, amp: float = 0.3) -> Float32:
    """A mono sine, shaped ``(frames, 1)``, whose first sample is non-zero."""
    n = round(seconds * rate)
    t = np.arange(1, n + 1, dtype=np.float64) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32).reshape(-1, 1)


def float_wav(samples: Float32, rate: int = 48000) -> bytes:
    """A float32 WAV of ``samples`` (``(frames, channels)``): plays back bit-exact."""
    frames, channels = samples.shape
    return wav_header(rate, channels, sample_format="f32le", frames=frames) + np.ascontiguousarray(
        samples, dtype="<f4"
    ).tobytes()


def header_size(wav: bytes, samples: Float32) -> int:
    """Bytes of ``wav`` before its samples (for `ThrottledServer.for_audio`'s ``header``)."""
    return len(wav) - samples.size * 4


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed (scripts/setup installs opus-tools)"
    return path


def opus_file(directory: Path, samples: Float32, *, name: str = "audio", rate: int = 48000,
              extra_args: tuple[str, ...] = ()) -> Path:
    """Encode ``samples`` with opusenc (``extra_args`` added); return the .opus path."""
    wav = directory / f"{name}.wav"
    wav.write_bytes(float_wav(samples, rate))
    out = directory / f"{name}.opus"
    subprocess.run([_tool("opusenc"), "--quiet", *extra_args, str(wav), str(out)], check=True,
                   timeout=60)
    return out


def opusdec_reference(path: Path, rate: int = 48000) -> Float32:
    """``opusdec --float --rate RATE``'s decode of ``path``, shaped ``(frames, channels)``."""
    raw = path.with_suffix(".ref.raw")
    subprocess.run(
        [_tool("opusdec"), "--quiet", "--float", "--rate", str(rate), str(path), str(raw)],
        check=True,
        timeout=60,
    )
    info = subprocess.run([_tool("opusinfo"), str(path)], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    channels = 2 if "Channels: 2" in info else 1
    data = np.frombuffer(raw.read_bytes(), dtype="<f4").astype(np.float32)
    return data.reshape(-1, channels)
