"""SilenceTrimmer and silence_runs on synthetic signals."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtts.errors import UsageError
from streamtts.trim import SilenceTrimmer, silence_runs

SR = 24000
Array = npt.NDArray[np.float32]


def tone(seconds: float, *, freq: float = 220.0, level_db: float = -12.0, start: int = 0) -> Array:
    n = round(seconds * SR)
    t = (np.arange(n) + start) / SR
    return (10 ** (level_db / 20) * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(seconds: float, level_db: float, seed: int = 0) -> Array:
    rng = np.random.default_rng(seed)
    n = round(seconds * SR)
    return (rng.standard_normal(n) * 10 ** (level_db / 20)).astype(np.float32)


def zeros(seconds: float) -> Array:
    return np.zeros(round(seconds * SR), np.float32)


def trim(signal: Array, block: int | None = None, **options: object) -> Array:
    trimmer = SilenceTrimmer(SR, 1, **options)  # type: ignore[arg-type]
    pcm = signal.reshape(-1, 1)
    step = block or max(1, len(pcm))
    out = [trimmer.process(pcm[i : i + step]) for i in range(0, len(pcm), step)]
    out.append(trimmer.flush())
    result = np.concatenate(out)
    assert result.dtype == np.float32
    assert result.ndim == 2
    assert result.shape[1] == 1
    return result[:, 0]


def find(haystack: Array, needle: Array) -> int:
    """Index where ``needle`` occurs sample-identically in ``haystack`` (first sample match)."""
    for i in np.flatnonzero(haystack == needle[0]):
        if np.array_equal(haystack[i : i + len(needle)], needle):
            return int(i)
    raise AssertionError("needle not found")


FRAME = SilenceTrimmer(SR, 1).frame_samples
LEAD = SilenceTrimmer(SR, 1).lead_samples
TAIL = SilenceTrimmer(SR, 1).tail_samples


def test_defaults_split_the_pause_into_pre_roll_and_tail() -> None:
    trimmer = SilenceTrimmer(SR, 1)
    assert trimmer.frame_samples == round(0.005 * SR)
    assert trimmer.lead_samples == round(0.010 * SR)
    assert trimmer.lead_samples + trimmer.tail_samples == round(0.15 * SR)


def test_leading_and_trailing_silence_are_trimmed_to_the_design() -> None:
    speech = tone(0.5)
    signal = np.concatenate([zeros(0.8123), speech, zeros(1.0077)])
    out = trim(signal)
    at = find(out, speech[1:])  # the tone's first sample is 0.0
    assert abs(at - LEAD) <= FRAME
    assert abs(len(out) - (at + len(speech) - 1) - TAIL) <= FRAME


def test_missing_silence_is_padded_with_zeros() -> None:
    speech = tone(0.3, start=5)  # starts at a non-zero sample, no silence either side
    out = trim(speech)
    lead = int(np.flatnonzero(out)[0])
    assert abs(lead - LEAD) <= FRAME // 2
    assert np.array_equal(out[lead : lead + len(speech)], speech)
    assert not out[lead + len(speech) :].any()
    assert abs(len(out) - lead - len(speech) - TAIL) <= FRAME // 2


def test_without_padding_nothing_is_added() -> None:
    speech = tone(0.3, start=5)
    assert np.array_equal(trim(speech, pad=False), speech)


def test_pause_shorter_than_max_pause_is_kept_intact() -> None:
    quiet = noise(1.0, -75, seed=1)
    middle = np.concatenate([tone(0.2, start=1), quiet, tone(0.2, start=3)])
    signal = np.concatenate([zeros(0.5), middle, zeros(0.5)])
    out = trim(signal, block=480)
    at = find(out, middle)
    assert abs(at - LEAD) <= FRAME


def test_long_silence_is_released_instead_of_held() -> None:
    trimmer = SilenceTrimmer(SR, 1, max_pause=1.5)
    speech = tone(0.2, start=1).reshape(-1, 1)
    out = [trimmer.process(speech)]
    silence = np.zeros((480, 1), np.float32)
    for _ in range(round(3.0 * SR / 480)):
        out.append(trimmer.process(silence))
    released = sum(len(o) for o in out)
    # Everything up to the last complete frame is out: the hold did not grow past max_pause.
    assert released >= LEAD + len(speech) + round(3.0 * SR) - FRAME
    out.append(trimmer.process(speech))
    out.append(trimmer.flush())
    result = np.concatenate(out)[:, 0]
    middle = np.concatenate([speech[1:, 0], zeros(3.0), speech[:, 0]])
    assert abs(find(result, middle) - LEAD) <= FRAME + 1


def test_held_samples_counts_the_silence_after_the_last_sound() -> None:
    trimmer = SilenceTrimmer(SR, 1)
    assert trimmer.held_samples == 0
    trimmer.process(zeros(1.0).reshape(-1, 1))
    assert 0 < trimmer.held_samples <= round(0.25 * SR)  # only what may become pre-roll
    # The tone starts and ends on frame boundaries: the 0.5 s after it are held, exactly.
    trimmer.process(np.concatenate([tone(0.2, start=1), zeros(0.5)]).reshape(-1, 1))
    assert trimmer.held_samples == round(0.5 * SR)
    trimmer.process(zeros(0.001).reshape(-1, 1))
    assert trimmer.held_samples == round(0.501 * SR)
    trimmer.flush()
    assert trimmer.held_samples == 0


def test_trailing_silence_longer_than_max_pause_is_not_trimmed() -> None:
    speech = tone(0.2, start=1)
    out = trim(np.concatenate([speech, zeros(2.0)]), max_pause=1.0)
    assert abs(len(out) - (LEAD + len(speech) + round(2.0 * SR))) <= FRAME // 2
    assert np.array_equal(out[-len(speech) - round(2.0 * SR) :], np.concatenate([speech, zeros(2)]))


def test_leading_false_keeps_the_start_and_trailing_false_keeps_the_end() -> None:
    signal = np.concatenate([noise(0.5, -80, seed=2), tone(0.2, start=1), noise(0.7, -80, seed=3)])
    assert np.array_equal(trim(signal, leading=False, trailing=False), signal)
    head = trim(signal, leading=False)
    assert np.array_equal(head[: len(signal) - round(0.6 * SR)], signal[: -round(0.6 * SR)])
    tail = trim(signal, trailing=False)
    assert np.array_equal(tail[-round(0.9 * SR) :], signal[-round(0.9 * SR) :])


def test_all_silence_gives_nothing() -> None:
    assert len(trim(noise(1.0, -70))) == 0
    assert len(trim(zeros(0.3), block=7)) == 0
    assert len(trim(np.zeros(0, np.float32))) == 0


def test_quiet_signal_below_threshold_is_treated_as_silence() -> None:
    assert len(trim(tone(0.5, level_db=-58))) == 0
    assert len(trim(tone(0.5, level_db=-58), threshold_db=-65)) > 0


def test_soft_attack_before_a_stop_closure_is_kept() -> None:
    soft = noise(0.06, -56, seed=4)  # an "s" below the onset threshold, above the sound one
    speech = np.concatenate([soft, zeros(0.04), tone(0.3, start=1)])
    out = trim(np.concatenate([zeros(0.5), speech, zeros(0.5)]))
    assert abs(find(out, speech) - LEAD) <= FRAME


def test_soft_ending_after_a_gap_is_kept() -> None:
    speech = np.concatenate([tone(0.3, start=1), zeros(0.05), noise(0.08, -57, seed=5)])
    out = trim(np.concatenate([zeros(0.5), speech, zeros(0.9)]))
    at = find(out, speech)
    assert abs(len(out) - (at + len(speech)) - TAIL) <= FRAME


def test_cuts_in_noise_are_faded_and_speech_is_untouched() -> None:
    floor = 0.0004  # a DC offset at -68 dBFS: a cut without fade would be a step of this size
    speech = tone(0.3, start=1) + floor
    signal = np.concatenate([zeros(0.5) + floor, speech, zeros(0.5) + floor])
    out = trim(signal)
    assert 0 < out[0] < floor * 0.05
    assert 0 < out[-1] < floor * 0.05
    fade = round(0.004 * SR)
    assert np.all(np.diff(out[:fade]) > 0)
    assert np.all(np.diff(out[-fade:]) < 0)
    # Between the fades, the output is the input.
    start = round(0.5 * SR) - find(out, speech)
    assert np.array_equal(out[fade:-fade], signal[start + fade : start + len(out) - fade])


def test_cuts_in_digital_silence_are_exact() -> None:
    speech = tone(0.3, start=1)
    signal = np.concatenate([zeros(0.5), speech, zeros(0.5)])
    out = trim(signal)
    at = find(signal, out[out != 0][:20])
    begin = at - int(np.flatnonzero(out)[0])
    assert np.array_equal(out, signal[begin : begin + len(out)])


def test_two_trimmed_responses_back_to_back_are_separated_by_the_pause() -> None:
    first = np.concatenate([zeros(0.9), tone(0.4, start=1), zeros(0.6)])
    second = np.concatenate([zeros(0.7), tone(0.3, start=1, freq=330), zeros(1.1)])
    for pause in (0.05, 0.15, 0.3):
        joined = np.concatenate([trim(first, pause=pause), trim(second, pause=pause)])
        runs = silence_runs(joined, SR, threshold_db=-60, min_duration=0.02)
        inner = [e - s for s, e in runs if s > 0 and e < len(joined)]
        assert len(inner) == 1
        assert abs(inner[0] - round(pause * SR)) <= FRAME


def test_stereo_energy_counts_every_channel() -> None:
    trimmer = SilenceTrimmer(SR, 2)
    right = np.concatenate([zeros(0.5), tone(0.2, start=1), zeros(0.5)])
    stereo = np.stack([np.zeros_like(right), right], axis=1)
    out = np.concatenate([trimmer.process(stereo[:1000]), trimmer.process(stereo[1000:])])
    out = np.concatenate([out, trimmer.flush()])
    assert out.shape[1] == 2
    assert not out[:, 0].any()
    assert abs(len(out) - (LEAD + round(0.2 * SR) + TAIL)) <= 2 * FRAME


def test_flush_resets_for_the_next_stream() -> None:
    signal = np.concatenate([zeros(0.3), tone(0.2, start=1), noise(0.4, -70)])
    trimmer = SilenceTrimmer(SR, 1)
    first = np.concatenate([trimmer.process(signal.reshape(-1, 1)), trimmer.flush()])
    second = np.concatenate([trimmer.process(signal.reshape(-1, 1)), trimmer.flush()])
    assert np.array_equal(first, second)


def test_wrong_shape_raises_usage_error() -> None:
    with pytest.raises(UsageError):
        SilenceTrimmer(SR, 2).process(np.zeros((10, 1), np.float32))
    with pytest.raises(UsageError):
        SilenceTrimmer(SR, 2).process(np.zeros(10, np.float32))
    with pytest.raises(UsageError):
        SilenceTrimmer(SR, 1, pause=-1)


def test_output_does_not_alias_the_input() -> None:
    trimmer = SilenceTrimmer(SR, 1, leading=False, trailing=False)
    block = tone(0.1, start=1).reshape(-1, 1)
    out = trimmer.process(block)
    block[:] = 0
    assert out.any()


signals = st.builds(
    lambda parts, seed: np.concatenate(
        [zeros(0.01)]
        + [
            tone(d, start=seed, level_db=lvl) if kind else noise(d, lvl, seed=seed)
            for kind, d, lvl in parts
        ]
    ),
    st.lists(
        st.tuples(st.booleans(), st.floats(0.001, 0.15), st.sampled_from([-80, -62, -55, -45, -6])),
        max_size=8,
    ),
    st.integers(0, 1000),
)


@settings(max_examples=60, deadline=None)
@given(signals, st.lists(st.integers(1, 3000), min_size=1, max_size=20), st.booleans())
def test_any_block_sizes_give_identical_output(signal: Array, sizes: list[int], pad: bool) -> None:
    options = {"max_pause": 0.2, "pad": pad}
    reference = trim(signal, **options)  # type: ignore[arg-type]
    trimmer = SilenceTrimmer(SR, 1, max_pause=0.2, pad=pad)
    pcm = signal.reshape(-1, 1)
    out, i, k = [], 0, 0
    while i < len(pcm):
        n = sizes[k % len(sizes)]
        out.append(trimmer.process(pcm[i : i + n]))
        i, k = i + n, k + 1
    out.append(trimmer.flush())
    assert np.array_equal(np.concatenate(out)[:, 0], reference)
    for block in (7, 480):
        assert np.array_equal(trim(signal, block=block, **options), reference)


def test_one_sample_blocks_give_identical_output() -> None:
    signal = np.concatenate(
        [
            noise(0.25, -70, seed=6),
            noise(0.03, -55, seed=7),  # soft attack
            tone(0.1, start=1),
            noise(0.25, -75, seed=8),  # a pause longer than max_pause
            tone(0.05, start=3),
            noise(0.2, -70, seed=9),
        ]
    )
    reference = trim(signal, max_pause=0.2)
    assert len(reference) > 0
    assert np.array_equal(trim(signal, block=1, max_pause=0.2), reference)


def test_silence_runs_finds_exact_edges_and_skips_short_runs() -> None:
    x = np.concatenate([zeros(0.1), tone(0.2, start=7), zeros(0.03), tone(0.1, start=9)])
    x[2400 + 1000 : 2400 + 1010] = 0  # 10 silent samples inside the tone: too short
    runs = silence_runs(x, SR, threshold_db=-60, min_duration=0.02)
    assert runs == [(0, 2400), (2400 + 4800, 2400 + 4800 + 720)]
    stereo = np.stack([x, np.zeros_like(x)], axis=1)
    assert silence_runs(stereo, SR, threshold_db=-60, min_duration=0.02) == runs
    assert silence_runs(zeros(0.1), SR) == [(0, 2400)]
    assert silence_runs(np.zeros(0, np.float32), SR) == []
