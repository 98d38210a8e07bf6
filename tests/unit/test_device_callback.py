"""The PortAudio callback's logic, driven directly (no device): copy, gate, fade, flush, count."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from streamtts.device import FADE_SECONDS, HISTORY, DeviceOutput

RATE = 48000
BLOCK = 480
FADE = round(FADE_SECONDS * RATE)


@pytest.fixture
def dev() -> DeviceOutput:
    device = DeviceOutput(RATE, 1, ring_seconds=1.0)
    device._prepare(RATE)  # what open() does before the stream exists
    return device


def tick(dev: DeviceOutput, *, underflow: bool = False, frames: int = BLOCK) -> np.ndarray:
    """One callback; returns what it wrote."""
    out = np.full((frames, 1), np.nan, dtype=np.float32)
    dev._callback(out, frames, SimpleNamespace(currentTime=1.0), SimpleNamespace(
        output_underflow=underflow))
    return out[:, 0]


def ones(n: int) -> np.ndarray:
    return np.ones((n, 1), dtype=np.float32)


def test_it_plays_silence_until_asked_to_start(dev: DeviceOutput) -> None:
    dev.ring.write(ones(BLOCK))
    assert not tick(dev).any()
    assert dev.ring.read_index == 0
    dev.resume(fade_in=False)
    assert (tick(dev) == 1.0).all()
    assert (dev.starts, dev.stalls, dev.frames_out, dev.silence_frames) == (1, 0, 2 * BLOCK, BLOCK)
    assert (int(dev.start_read[0]), int(dev.start_out[0])) == (0, BLOCK)


def test_running_dry_before_the_end_is_an_underrun_faded_out(dev: DeviceOutput) -> None:
    dev.ring.write(ones(300))
    dev.resume(fade_in=False)
    out = tick(dev)
    assert (out[: 300 - FADE] == 1.0).all()
    fade = out[300 - FADE : 300]
    assert (np.diff(fade) < 0).all()
    assert 0 < fade[-1] < 0.01
    assert not out[300:].any()
    assert not dev.playing
    assert (dev.stalls, int(dev.stall_read[0]), int(dev.stall_out[0])) == (1, 300, 300)
    assert not dev.stall_clean[0]


def test_running_dry_at_the_end_mark_is_clean_and_not_faded(dev: DeviceOutput) -> None:
    dev.ring.write(ones(300))
    dev.end_mark = 300
    dev.resume(fade_in=False)
    out = tick(dev)
    assert (out[:300] == 1.0).all()
    assert not out[300:].any()
    assert dev.stall_clean[0]


def test_a_restart_after_an_underrun_fades_in(dev: DeviceOutput) -> None:
    dev.ring.write(ones(BLOCK))
    dev.resume(fade_in=False)
    tick(dev)
    tick(dev)  # stalled: silence
    dev.ring.write(ones(2 * BLOCK))
    dev.resume(fade_in=True)
    out = tick(dev)
    assert (np.diff(out[:FADE]) > 0).all()
    assert 0 < out[0] < 0.01
    assert (out[FADE:] == 1.0).all()
    assert (tick(dev) == 1.0).all()  # the fade is not applied again
    assert (int(dev.start_out[1]) - int(dev.stall_out[0])) == BLOCK  # the silence inserted


def test_a_flush_fades_out_drops_the_rest_and_stops(dev: DeviceOutput) -> None:
    dev.ring.write(ones(5 * BLOCK))
    dev.resume(fade_in=False)
    tick(dev)
    dev.flush()
    out = tick(dev)
    assert (np.diff(out[:FADE]) < 0).all()
    assert not out[FADE:].any()
    assert dev.flush_read == BLOCK + FADE
    assert dev.ring.readable() == 0
    assert dev.flushes_done == dev.flush_requests
    assert dev.stall_clean[0]
    assert not dev.playing


def test_a_flush_before_the_start_began_keeps_starts_and_stalls_paired(dev: DeviceOutput) -> None:
    dev.ring.write(ones(BLOCK))
    dev.resume(fade_in=False)
    dev.flush()
    assert not tick(dev).any()
    assert (dev.starts, dev.stalls) == (1, 1)
    dev.ring.write(ones(BLOCK))
    dev.resume(fade_in=False)
    assert (tick(dev) == 1.0).all()
    assert (dev.starts, dev.stalls) == (2, 1)


def test_portaudio_underflow_flags_are_counted(dev: DeviceOutput) -> None:
    tick(dev, underflow=True)
    tick(dev)
    tick(dev, underflow=True)
    assert dev.underflows == 2
    assert dev.callbacks == 3


def test_the_history_wraps_without_losing_the_latest_records(dev: DeviceOutput) -> None:
    for i in range(HISTORY + 5):
        dev.ring.write(ones(10))
        dev.resume(fade_in=False)
        tick(dev, frames=20)
        k = i % HISTORY
        assert int(dev.start_read[k]) == 10 * i
        assert int(dev.stall_read[k]) == 10 * (i + 1)
    assert dev.starts == dev.stalls == HISTORY + 5


def clocked(dev: DeviceOutput, times: list[float]) -> None:
    """Callbacks of one block at the given callback times, the clock sampled after each."""
    info = SimpleNamespace(output_underflow=False)
    out = np.zeros((BLOCK, 1), dtype=np.float32)
    for t in times:
        dev._callback(out, BLOCK, SimpleNamespace(currentTime=t), info)
        dev.observe_clock()


def test_frames_leave_the_device_on_a_line_from_the_first_callback(dev: DeviceOutput) -> None:
    dev._clock_offset = 100.0
    # A prefill of six blocks at t=1.0 (the device starts then), then bursts of two blocks
    # every 20 ms, each written 40 ms before the device plays it.
    clocked(dev, [1.0] * 6 + [1.0 + 0.02 * (k // 2 + 1) for k in range(200)])
    assert dev.device_time(0) == pytest.approx(101.0)
    assert dev.device_time(RATE) == pytest.approx(102.0)


def test_the_clock_follows_a_device_running_slow(dev: DeviceOutput) -> None:
    drift = 1.01  # the device's second lasts 1.01 of ours
    # Prefill of two blocks at t=0 (the device starts then); afterwards block k is written one
    # block before the device, running slow, plays it.
    clocked(dev, [0.0 if k < 2 else (k - 1) * BLOCK / RATE * drift for k in range(400)])
    last = 399 * BLOCK
    truth = last / RATE * drift
    # Behind the truth by at most the write lead (one block), well past the nominal line.
    assert truth - 1.5 * BLOCK / RATE < dev.device_time(last) <= truth
    assert dev.device_time(last) > last / RATE + 0.02
