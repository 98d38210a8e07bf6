"""Resampler: block-size independence, length and alignment, and measured filter quality."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from streamtts.errors import UsageError
from streamtts.resample import Resampler

RATIOS = [
    (22050, 24000),
    (22050, 48000),
    (24000, 48000),
    (48000, 44100),
    (16000, 48000),
    (48000, 16000),
]
RNG = np.random.default_rng(7)


def one_shot(x: npt.NDArray[np.floating], rate_in: int, rate_out: int) -> npt.NDArray[np.float32]:
    resampler = Resampler(rate_in, rate_out, x.shape[1])
    return np.concatenate([resampler.process(x), resampler.flush()])


def streamed(
    x: npt.NDArray[np.floating], rate_in: int, rate_out: int, sizes: list[int]
) -> npt.NDArray[np.float32]:
    resampler = Resampler(rate_in, rate_out, x.shape[1])
    out, i, k = [], 0, 0
    while i < len(x):
        n = sizes[k % len(sizes)]
        out.append(resampler.process(x[i : i + n]))
        i, k = i + n, k + 1
    out.append(resampler.flush())
    return np.concatenate(out)


def tone(freq: float, rate: int, frames: int, phase: float = 0.0) -> npt.NDArray[np.float64]:
    return np.sin(2 * np.pi * freq * np.arange(frames) / rate + phase)[:, None]


def fit_amplitude(y: npt.NDArray[np.floating], freq: float, rate: int) -> tuple[float, float]:
    """Amplitude of ``freq`` in the middle half of ``y`` and the RMS of what is not that tone."""
    start, stop = len(y) // 4, 3 * len(y) // 4
    t = np.arange(start, stop) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, y[start:stop, 0].astype(np.float64), rcond=None)
    residual = y[start:stop, 0] - basis @ coef
    return float(np.hypot(*coef)), float(np.sqrt(np.mean(residual**2)))


# -- streaming ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate_in", "rate_out"), RATIOS)
@pytest.mark.parametrize("sizes", [[1], [7], [441], [4096], [3, 1000, 1, 57, 0, 2048]])
def test_streaming_in_any_block_sizes_equals_one_shot(
    rate_in: int, rate_out: int, sizes: list[int]
) -> None:
    frames = 3000 if sizes == [1] else 12000
    x = RNG.uniform(-1, 1, (frames, 2)).astype(np.float32)
    whole = one_shot(x, rate_in, rate_out)
    pieces = streamed(x, rate_in, rate_out, sizes)
    assert pieces.shape == whole.shape
    assert np.max(np.abs(pieces - whole)) <= 1e-6


def test_random_block_sizes_equal_one_shot() -> None:
    x = RNG.uniform(-1, 1, (20000, 1))
    sizes = [int(n) for n in RNG.integers(0, 900, 200)]
    for rate_in, rate_out in RATIOS:
        whole = one_shot(x, rate_in, rate_out)
        assert np.max(np.abs(streamed(x, rate_in, rate_out, sizes) - whole)) <= 1e-6


def test_period_matrix_and_tap_by_tap_paths_agree() -> None:
    x = RNG.uniform(-1, 1, (5000, 2))
    fast = Resampler(22050, 48000, 2)
    slow = Resampler(22050, 48000, 2)
    slow._period = None  # force the gather path used for exotic ratios
    a = np.concatenate([fast.process(x), fast.flush()])
    b = np.concatenate([slow.process(x), slow.flush()])
    assert np.max(np.abs(a - b)) <= 1e-6


def test_exotic_ratio_uses_the_fallback_and_still_streams_exactly() -> None:
    rate_in, rate_out = 1499, 1511  # primes: 1511 phases, too many for the period matrix
    assert Resampler(rate_in, rate_out, 1)._period is None
    x = tone(300, rate_in, 4000)
    whole = one_shot(x, rate_in, rate_out)
    assert len(whole) == round(4000 * rate_out / rate_in)
    assert np.max(np.abs(streamed(x, rate_in, rate_out, [333, 1, 70]) - whole)) <= 1e-6
    amplitude, residual = fit_amplitude(whole, 300, rate_out)
    assert abs(amplitude - 1) < 1e-3
    assert residual < 1e-3


def test_flush_resets_for_the_next_signal() -> None:
    x = RNG.uniform(-1, 1, (3000, 1))
    resampler = Resampler(22050, 48000, 1)
    first = np.concatenate([resampler.process(x), resampler.flush()])
    second = np.concatenate([resampler.process(x), resampler.flush()])
    np.testing.assert_array_equal(first, second)


# -- length and alignment -------------------------------------------------------------------------


@pytest.mark.parametrize(("rate_in", "rate_out"), RATIOS)
def test_total_length_is_the_rounded_ratio(rate_in: int, rate_out: int) -> None:
    for frames in [0, 1, 2, 3, 146, 147, 148, 1000, 22051]:
        out = one_shot(np.zeros((frames, 1)), rate_in, rate_out)
        # round half up: (2 n L + M) // (2 M) with L/M the reduced ratio
        expected = int(np.floor(frames * rate_out / rate_in + 0.5))
        assert len(out) == expected == Resampler(rate_in, rate_out, 1).output_length(frames)
        assert out.dtype == np.float32
        assert out.shape[1] == 1


@pytest.mark.parametrize(
    ("rate_in", "rate_out", "at_in", "at_out"),
    [
        (24000, 48000, 1000, 2000),
        (22050, 48000, 2205, 4800),
        (48000, 44100, 4800, 4410),
        (48000, 16000, 3000, 1000),
        (16000, 48000, 7, 21),
    ],
)
def test_an_impulse_comes_out_at_the_same_time(
    rate_in: int, rate_out: int, at_in: int, at_out: int
) -> None:
    x = np.zeros((at_in * 2 + 500, 1))
    x[at_in] = 1.0
    y = one_shot(x, rate_in, rate_out)
    assert int(np.argmax(y[:, 0])) == at_out
    peak = y[at_out - 30 : at_out + 31, 0]
    np.testing.assert_allclose(peak, peak[::-1], atol=1e-6)  # linear phase: symmetric


@pytest.mark.parametrize(("rate_in", "rate_out"), RATIOS)
def test_a_tone_keeps_its_phase(rate_in: int, rate_out: int) -> None:
    freq = 0.3 * min(rate_in, rate_out) / 2
    x = tone(freq, rate_in, rate_in // 2, phase=0.7)
    y = one_shot(x, rate_in, rate_out)
    expected = tone(freq, rate_out, len(y), phase=0.7)
    middle = slice(len(y) // 8, -len(y) // 8)
    assert np.max(np.abs(y[middle] - expected[middle])) < 1e-3


# -- filter quality -------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate_in", "rate_out"), RATIOS)
def test_passband_is_flat_within_a_tenth_of_a_db_up_to_0_9_nyquist(
    rate_in: int, rate_out: int
) -> None:
    nyquist = min(rate_in, rate_out) / 2
    for fraction in [0.02, 0.1, 0.25, 0.5, 0.7, 0.8, 0.85, 0.9]:
        freq = fraction * nyquist
        y = one_shot(tone(freq, rate_in, rate_in // 4), rate_in, rate_out)
        amplitude, residual = fit_amplitude(y, freq, rate_out)
        assert abs(20 * np.log10(amplitude)) < 0.1, fraction
        assert residual < 1e-3, fraction  # nothing but that tone at that frequency


@pytest.mark.parametrize(("rate_in", "rate_out"), [(48000, 44100), (48000, 16000), (48000, 24000)])
def test_tones_above_the_new_nyquist_are_attenuated_80_db(rate_in: int, rate_out: int) -> None:
    nyquist_out = rate_out / 2
    for freq in np.linspace(nyquist_out * 1.0, rate_in / 2 * 0.98, 9):
        y = one_shot(tone(freq, rate_in, rate_in // 4), rate_in, rate_out)
        middle = y[len(y) // 4 : 3 * len(y) // 4, 0].astype(np.float64)
        level_db = 20 * np.log10(np.sqrt(2 * np.mean(middle**2)) + 1e-20)
        assert level_db < -80, freq


@pytest.mark.parametrize(("rate_in", "rate_out"), [(22050, 48000), (16000, 48000), (24000, 48000)])
def test_upsampling_leaves_no_image_above_the_old_nyquist(rate_in: int, rate_out: int) -> None:
    nyquist_in = rate_in / 2
    for fraction in [0.3, 0.9]:
        y = one_shot(tone(fraction * nyquist_in, rate_in, rate_in), rate_in, rate_out)
        middle = y[len(y) // 4 : 3 * len(y) // 4, 0].astype(np.float64)
        window = np.kaiser(len(middle), 20.0)  # side lobes far below -120 dB
        spectrum = np.abs(np.fft.rfft(middle * window)) / (window.sum() / 2)
        freqs = np.fft.rfftfreq(len(middle), 1 / rate_out)
        assert 20 * np.log10(spectrum[freqs >= nyquist_in].max()) < -80


def test_dc_passes_with_unit_gain_and_silence_stays_silent() -> None:
    for rate_in, rate_out in RATIOS:
        y = one_shot(np.full((4000, 1), 0.5), rate_in, rate_out)
        middle = y[len(y) // 4 : 3 * len(y) // 4]
        assert np.max(np.abs(middle - 0.5)) < 1e-4
        assert not np.any(one_shot(np.zeros((1000, 2)), rate_in, rate_out))


# -- identity and misuse --------------------------------------------------------------------------


def test_equal_rates_are_the_identity() -> None:
    x = RNG.uniform(-1, 1, (1000, 2))
    resampler = Resampler(24000, 24000, 2)
    y = resampler.process(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x.astype(np.float32))
    assert resampler.flush().shape == (0, 2)


def test_misuse_raises_usage_error() -> None:
    with pytest.raises(UsageError):
        Resampler(0, 48000, 1)
    with pytest.raises(UsageError):
        Resampler(24000, 48000, 0)
    with pytest.raises(UsageError, match="cannot resample"):
        Resampler(999_983, 1_000_003, 1)  # primes: millions of phases
    resampler = Resampler(24000, 48000, 2)
    with pytest.raises(UsageError):
        resampler.process(np.zeros((10, 1)))
    with pytest.raises(UsageError):
        resampler.process(np.zeros(10))
    with pytest.raises(UsageError):
        resampler.process(np.zeros((10, 2), dtype=np.int16))
