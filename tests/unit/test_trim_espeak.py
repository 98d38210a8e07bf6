"""SilenceTrimmer on real speech (espeak-ng, generated at test time) padded with silence/noise.

Phrases start and end with soft consonants (f, h, s, th): the trimmed output must contain every
non-zero sample of the speech, unchanged, with the designed silence around it.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from streamtts.trim import FADE_SECONDS, SilenceTrimmer

Array = npt.NDArray[np.float32]

PHRASES = [
    "Five fish, said Seth. Half of the shelf.",
    "Hush.",
    "Sips of soft tea, thanks.",
    "Fifth.",
]


@pytest.fixture(scope="session")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Array, int]]:
    folder = tmp_path_factory.mktemp("espeak")
    out: dict[str, tuple[Array, int]] = {}
    for i, text in enumerate(PHRASES):
        path = folder / f"{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        out[text] = read_wav(path)
    return out


def read_wav(path: Path) -> tuple[Array, int]:
    with wave.open(str(path)) as w:
        assert w.getsampwidth() == 2
        assert w.getnchannels() == 1
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return (pcm.astype(np.float32) / 32768).astype(np.float32), w.getframerate()


def padded(speech: Array, rate: int, level_db: float | None, seed: int) -> tuple[Array, int]:
    """``speech`` between 0.8 s and 1.0 s of noise (or digital silence); its offset."""
    rng = np.random.default_rng(seed)
    scale = 0.0 if level_db is None else 10 ** (level_db / 20)
    before = (rng.standard_normal(round(0.8 * rate) + seed) * scale).astype(np.float32)
    after = (rng.standard_normal(round(1.0 * rate) + 3 * seed) * scale).astype(np.float32)
    return np.concatenate([before, speech, after]), len(before)


def run(trimmer: SilenceTrimmer, signal: Array, sizes: list[int]) -> Array:
    pcm = signal.reshape(-1, 1)
    out, i, k = [], 0, 0
    while i < len(pcm):
        n = sizes[k % len(sizes)]
        out.append(trimmer.process(pcm[i : i + n]))
        i, k = i + n, k + 1
    out.append(trimmer.flush())
    return np.concatenate(out)[:, 0]


@pytest.mark.parametrize("gain_db", [0.0, -12.0])  # -12 dB: the fricatives fall below the onset
@pytest.mark.parametrize("level_db", [None, -75.0, -68.0])
@pytest.mark.parametrize("text", PHRASES)
def test_speech_is_kept_sample_identical_with_the_designed_silence_around_it(
    speech: dict[str, tuple[Array, int]], text: str, level_db: float | None, gain_db: float
) -> None:
    clean, rate = speech[text]
    clean = (clean * np.float32(10 ** (gain_db / 20))).astype(np.float32)
    signal, offset = padded(clean, rate, level_db, seed=PHRASES.index(text) + 1)
    trimmer = SilenceTrimmer(rate, 1)
    out = run(trimmer, signal, [len(signal)])

    # Every non-zero sample of the speech is in the output, unchanged.
    nonzero = np.flatnonzero(clean)
    first, last = int(nonzero[0]), int(nonzero[-1]) + 1
    begin = offset + first  # the speech's first non-zero sample in the input
    lead = _locate(out, signal[begin : offset + last])
    tail = len(out) - (lead + last - first)
    frame = trimmer.frame_samples
    if gain_db == 0.0:
        # espeak's own edges are above the sound level: the silence kept is the design.
        assert abs(lead - trimmer.lead_samples) <= frame
        assert abs(tail - trimmer.tail_samples) <= frame
    else:
        # Quieter, the last (inaudible, < -60 dBFS) samples of a decaying fricative count as the
        # silence kept after it: they are in the output, and the padding is still trimmed.
        assert len(out) <= (last - first) + trimmer.lead_samples + trimmer.tail_samples + 2 * frame

    # Everything but the fades at both ends is the input, sample for sample.
    fade = round(FADE_SECONDS * rate)
    start = begin - lead
    assert np.array_equal(out[fade:-fade], signal[start + fade : start + len(out) - fade])


def _locate(haystack: Array, needle: Array) -> int:
    for i in np.flatnonzero(haystack == needle[0]):
        if np.array_equal(haystack[i : i + len(needle)], needle):
            return int(i)
    raise AssertionError("the speech is not in the output unchanged")


def test_block_sizes_do_not_change_the_output(speech: dict[str, tuple[Array, int]]) -> None:
    clean, rate = speech["Hush."]
    signal, _ = padded(clean, rate, -70.0, seed=5)
    reference = run(SilenceTrimmer(rate, 1), signal, [len(signal)])
    rng = np.random.default_rng(0)
    for sizes in ([1], [7], [480], [int(n) for n in rng.integers(1, 2000, size=50)]):
        assert np.array_equal(run(SilenceTrimmer(rate, 1), signal, sizes), reference)
