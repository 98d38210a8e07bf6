"""The long-run scripts' own bookkeeping: what they record, and that it stays out of the memory
they watch.

`benchmarks/soak.py` and `benchmarks/bench_longrun.py` judge the memory of their own process
over an hour, so their records must not grow in it: the soak writes the recording's peaks and its
samples/utterances to files, the long run keeps its samples in a table allocated up front. These
tests pin what those records hold, and the soak's search for unexplained silences, on synthetic
data whose answer is known.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from support.benchscripts import load_benchmark

soak = load_benchmark("soak_under_test", "soak.py")
longrun = load_benchmark("bench_longrun_under_test", "bench_longrun.py")
BLOCK: int = soak.BLOCK
PER_S = 48000 / BLOCK  # peaks per second


class _Chunks(io.RawIOBase):
    """A pipe that returns the data in the given read sizes (then the rest, then EOF)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = memoryview(data)
        self._sizes = list(sizes)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._data:
            return 0
        size = self._sizes.pop(0) if self._sizes else len(self._data)
        n = min(size, len(buffer), len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


@pytest.mark.parametrize(
    "sizes",
    [[], [1, 7, 1919, 1921, 5000], [BLOCK * 4] * 3, [3] * 50 + [65536]],
    ids=["one-read", "odd", "block-sized", "tiny-then-big"],
)
def test_recorder_writes_one_peak_per_complete_block_whatever_the_read_sizes(
    tmp_path: Path, sizes: list[int]
) -> None:
    rng = np.random.default_rng(7)
    samples = rng.uniform(-1, 1, BLOCK * 10 + BLOCK // 2).astype("<f4")
    rec = soak.Recorder("unused.monitor", tmp_path / "peaks.f32")
    stream = io.BufferedReader(_Chunks(samples.tobytes(), sizes), buffer_size=65536)
    with open(rec.path, "wb") as out:
        rec.consume(stream, out)
    expected = np.abs(samples[: BLOCK * 10]).reshape(10, BLOCK).max(axis=1)
    assert rec.blocks == 10  # the last half block is incomplete: no peak for it
    np.testing.assert_array_equal(rec.peaks(), expected)
    assert rec.t0 is not None


def _recorder_with(tmp_path: Path, peaks: np.ndarray, t0: float) -> object:
    rec = soak.Recorder("unused.monitor", tmp_path / "peaks.f32")
    peaks.astype("<f4").tofile(rec.path)
    rec.t0 = t0
    rec.blocks = len(peaks)
    return rec


def test_a_long_silence_is_explained_by_an_underrun_near_it_and_flagged_without_one(
    tmp_path: Path,
) -> None:
    t0 = 1000.0
    peaks = np.full(round(20 * PER_S), 0.5)
    peaks[round(2.0 * PER_S) : round(2.6 * PER_S)] = 0.0  # utterance 0: a 0.6 s gap
    peaks[round(12.0 * PER_S) : round(12.6 * PER_S)] = 0.0  # utterance 1: a 0.6 s gap
    peaks[round(14.0 * PER_S) : round(14.3 * PER_S)] = 0.0  # utterance 1: a 0.3 s pause
    rec = _recorder_with(tmp_path, peaks, t0)
    utterances = [
        soak.Utterance(0, "stall", first_sound=t0 + 1.0, finished=t0 + 9.0),
        soak.Utterance(1, "normal", first_sound=t0 + 11.0, finished=t0 + 19.0),
        soak.Utterance(2, "disconnect", first_sound=t0 + 11.0, finished=t0 + 19.0,
                       error="StreamInterrupted"),  # failed: not checked
    ]
    result = soak.find_gaps(rec, utterances, underruns=[t0 + 2.1])
    assert result["checked"] == 2
    assert result["gaps"] == 2  # the 0.3 s pause is within pause + slack
    assert result["explained"] == 1
    [gap] = result["unexpected"]
    assert gap["utterance"] == 1
    assert gap["kind"] == "normal"
    assert gap["at_s"] == pytest.approx(12.0, abs=0.011)
    assert gap["seconds"] == pytest.approx(0.6, abs=0.011)


def test_silence_outside_every_utterance_is_not_a_gap(tmp_path: Path) -> None:
    t0 = 50.0
    peaks = np.zeros(round(10 * PER_S))
    peaks[round(1 * PER_S) : round(3 * PER_S)] = 0.5
    rec = _recorder_with(tmp_path, peaks, t0)
    utterances = [soak.Utterance(0, "normal", first_sound=t0 + 1.0, finished=t0 + 3.0)]
    assert soak.find_gaps(rec, utterances, underruns=[]) == {
        "checked": 1, "gaps": 0, "explained": 0, "unexpected": []
    }


def test_the_soak_log_gives_back_its_samples_and_utterances_in_order() -> None:
    log = io.StringIO()
    utterances = [
        soak.Utterance(0, "normal", first_sound=1.5, finished=4.0),
        soak.Utterance(1, "barge-in", first_sound=5.0, finished=6.0, interrupted=True),
        soak.Utterance(2, "disconnect", error="StreamInterrupted", underruns=1),
    ]
    samples = [{"t": float(i), "rss_mb": 80.0 + i, "fds": 18} for i in range(3)]
    for sample, utt in zip(samples, utterances, strict=True):
        log.write(soak.json.dumps(sample) + "\n")
        log.write(soak.json.dumps(soak.dataclasses.asdict(utt)) + "\n")
    got_samples, got_utterances = soak._read_log(log)
    assert got_samples == samples
    assert got_utterances == utterances
    assert log.closed


def test_trend_compares_the_first_sample_after_the_warm_up_with_the_last() -> None:
    warm = soak.WARMUP
    samples = [
        {"t": 0.0, "rss_mb": 50.0},  # before the warm-up ends: ignored
        {"t": warm, "rss_mb": 80.0},
        {"t": warm + 5, "rss_mb": 83.0},
        {"t": warm + 10, "rss_mb": 81.5},
    ]
    assert soak.trend(samples, "rss_mb") == {
        "after_warmup": 80.0, "last": 81.5, "max": 83.0, "min": 80.0, "growth": 1.5
    }


def test_longrun_sample_table_returns_its_rows_rounded_and_counts_what_did_not_fit() -> None:
    table = longrun.SampleTable(2)
    table.add(0.123456, 79.87654, 0.0123, 1.005, 12.34, 0)
    table.add(1.0, 80.0, 0.5, 2.0, 40.0, 3)
    table.add(2.0, 81.0, 1.0, 3.0, 50.0, 3)  # over capacity
    assert table.dropped == 1
    assert table.as_dicts() == [
        {"t": 0.12, "rss_mb": 79.877, "cpu_s": 0.012, "audio_s": 1.0, "buffered_ms": 12.3,
         "underruns": 0},
        {"t": 1.0, "rss_mb": 80.0, "cpu_s": 0.5, "audio_s": 2.0, "buffered_ms": 40.0,
         "underruns": 3},
    ]
