"""The side-by-side benchmark's analysis: underruns found in a recording, arrivals, the plan.

`benchmarks/bench_compare.py` turns a null-sink recording into underrun counts, inserted
silence and a cut tail by comparing it with the reference decode; these tests feed it
synthetic recordings whose damage is known exactly.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from support.benchscripts import load_benchmark

from streamtts.wav import wav_header

bench = load_benchmark("bench_compare_under_test", "bench_compare.py")
common = load_benchmark("bench_peers_common_under_test", "peers/common.py")
RATE: int = bench.RATE


def ms(x: float) -> int:
    return round(x * RATE / 1000)


def tone(duration_ms: float, freq: float = 220.0) -> npt.NDArray[np.float32]:
    """A "word": loud on every sample (never crosses the silence threshold inside)."""
    t = np.arange(ms(duration_ms)) / RATE
    return (0.2 + 0.1 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(duration_ms: float) -> npt.NDArray[np.float32]:
    return np.zeros(ms(duration_ms), dtype=np.float32)


def reference() -> npt.NDArray[np.float32]:
    """Speech-like: 12 ms lead-in, words of tone with natural 80 ms and 200 ms pauses."""
    return np.concatenate([silence(12), tone(400), silence(80), tone(300), silence(200),
                           tone(500), silence(30)])


def test_a_delayed_but_intact_recording_has_no_underrun_and_nothing_cut() -> None:
    ref = reference()
    rec = np.concatenate([silence(300), ref, silence(100)])
    got = bench.inserted_silence(rec, ref)
    assert got["underruns"] == 0
    assert got["inserted_ms"] == 0.0
    assert got["truncated_ms"] == 0.0
    assert got["first"] == ms(300) + ms(12)


def test_a_gap_inside_a_word_is_one_underrun_of_its_length() -> None:
    ref = reference()
    cut = ms(12) + ms(150)  # inside the first word
    rec = np.concatenate([silence(50), ref[:cut], silence(70), ref[cut:]])
    got = bench.inserted_silence(rec, ref)
    assert got["underruns"] == 1
    assert got["inserted_ms"] == pytest.approx(70.0, abs=0.1)
    assert got["underrun_list"][0]["at_s"] == pytest.approx(0.150, abs=0.002)
    assert got["truncated_ms"] == pytest.approx(0.0, abs=0.1)
    assert got["mask"].sum() == ms(70)


def test_a_natural_pause_made_longer_counts_only_the_extra_silence() -> None:
    ref = reference()
    pause = ms(12) + ms(400) + ms(40)  # in the middle of the 80 ms pause
    rec = np.concatenate([ref[:pause], silence(45), ref[pause:]])
    got = bench.inserted_silence(rec, ref)
    assert got["underruns"] == 1
    assert got["inserted_ms"] == pytest.approx(45.0, abs=0.1)


def test_pauses_lengthened_by_less_than_a_block_are_not_underruns() -> None:
    ref = reference()
    pause = ms(12) + ms(400) + ms(40)
    rec = np.concatenate([ref[:pause], silence(5), ref[pause:]])
    got = bench.inserted_silence(rec, ref)
    assert got["underruns"] == 0


def test_several_underruns_are_each_counted_after_earlier_ones_shifted_the_audio() -> None:
    ref = reference()
    a = ms(12) + ms(100)
    b = ms(12) + ms(400) + ms(80) + ms(150)  # inside the second word
    rec = np.concatenate([ref[:a], silence(30), ref[a:b], silence(250), ref[b:]])
    got = bench.inserted_silence(rec, ref)
    assert got["underruns"] == 2
    assert got["inserted_ms"] == pytest.approx(280.0, abs=0.1)
    assert [u["silence_ms"] for u in got["underrun_list"]] == pytest.approx([30.0, 250.0],
                                                                             abs=0.1)


def test_a_cut_tail_is_reported_as_truncated_not_as_an_underrun() -> None:
    ref = reference()
    rec = np.concatenate([silence(20), ref[: len(ref) - ms(30) - ms(40)], silence(200)])
    got = bench.inserted_silence(rec, ref)
    assert got["underruns"] == 0
    assert got["truncated_ms"] == pytest.approx(40.0, abs=0.1)


def test_a_silent_recording_is_reported_as_silent() -> None:
    assert bench.inserted_silence(silence(500), reference())["silent"] is True


def test_silent_runs_shorter_than_a_block_are_ignored() -> None:
    x = np.concatenate([tone(50), silence(9), tone(50), silence(11), tone(50)])
    runs = bench.silent_runs(x, 0, len(x))
    assert runs == [(ms(50) + ms(9) + ms(50), ms(11))]


def test_arrivals_of_pcm_count_the_audio_each_chunk_completes() -> None:
    body = (np.arange(2400, dtype="<i2")).tobytes()  # 0.1 s of s16 at 24 kHz
    arrivals = [(10.0, 1001), (10.5, 999), (11.0, 2800)]
    got = bench.arrival_audio("pcm", body, arrivals, origin=10.0)
    assert [t for t, _ in got] == [0.0, 0.5, 1.0]
    # 1001 bytes hold 500 whole samples; the odd byte completes sample 501 with the next chunk
    assert [round(a * RATE) for _, a in got] == [500, 500, 1400]


def test_arrivals_of_wav_leave_the_header_out() -> None:
    pcm = np.zeros(480, dtype="<i2").tobytes()
    body = wav_header(RATE, 1) + pcm
    got = bench.arrival_audio("wav", body, [(0.0, 44), (0.1, len(pcm))], origin=0.0)
    assert sum(a for _, a in got) == pytest.approx(480 / RATE)
    assert got[0][1] == 0.0


def test_buffer_level_is_audio_received_minus_audio_heard() -> None:
    ref = reference()
    rec = np.concatenate([silence(1000), ref])  # first sound 1.012 s after sample 0
    ana = bench.inserted_silence(rec, ref)
    arrived = [(0.0, 0.5), (0.5, 0.5), (1.0, len(ref) / RATE - 1.0)]
    curve = bench.buffer_curve(arrived, rec_origin=100.0, requested=100.0, ana=ana,
                               ref_first=ms(12), n_rec=len(rec), end=100.0 + 1.5)
    level = dict((round(t, 2), b) for t, b in curve)
    assert level[0.2] == pytest.approx(0.5)
    assert level[0.6] == pytest.approx(1.0)
    # at 1.4 s: everything arrived; heard: the 12 ms lead-in + 0.388 s since the first sound
    assert level[1.4] == pytest.approx(len(ref) / RATE - 0.4, abs=1e-3)


def test_quick_plan_runs_every_system_on_three_traces_and_full_runs_everything() -> None:
    quick = bench.plan(False, None, None)
    for trace in ("fast", "openai_like", "slow_link"):
        for system in bench.SYSTEMS:
            if system != "streamtts_opus_lowlat":
                assert (system, trace) in quick
    assert ("streamtts_opus_lowlat", "fast") in quick
    assert ("openai_play_whole_pcm", "bursty") not in quick
    assert ("streamtts_opus", "bursty") in quick
    full = bench.plan(True, None, None)
    assert len(full) == len(bench.SYSTEMS) * len(bench.TRACES)
    assert set(quick) < set(full)


def test_pcm16_blocks_keep_an_odd_byte_for_the_next_chunk() -> None:
    carry = bytearray()
    samples = np.array([1000, -2000, 3000], dtype="<i2").tobytes()
    first = common.pcm16_blocks(carry, samples[:3])
    assert first.tolist() == [1000 / 32768]
    assert bytes(carry) == samples[2:3]
    second = common.pcm16_blocks(carry, samples[3:])
    assert second.tolist() == [-2000 / 32768, 3000 / 32768]
    assert carry == bytearray()
