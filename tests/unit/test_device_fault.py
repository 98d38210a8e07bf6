"""`DeviceOutput.fault`: how a lost device is told from a slow one (no PortAudio, "now" passed)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from streamtts.device import STALL_TIMEOUT, DeviceOutput

RATE = 48000
BLOCK = 480


@pytest.fixture
def dev() -> DeviceOutput:
    device = DeviceOutput(RATE, 1, ring_seconds=0.1)
    device._prepare(RATE)
    device._stream = object()  # what a successful open() leaves
    device._running = True  # ... and start()
    return device


def tick(dev: DeviceOutput) -> None:
    out = np.zeros((BLOCK, 1), dtype=np.float32)
    dev._callback(out, BLOCK, SimpleNamespace(currentTime=1.0),
                  SimpleNamespace(output_underflow=False))


def poll_every(dev: DeviceOutput, start: float, end: float, step: float = 0.005) -> str | None:
    """Poll like the player does, without callbacks; the first fault reported, if any."""
    now = start
    while now <= end:
        fault = dev.fault(now)
        if fault is not None:
            return fault
        now += step
    return None


def test_a_running_stream_is_never_a_fault(dev: DeviceOutput) -> None:
    for i in range(2000):  # 10 s of 5 ms polls, a callback every other poll
        if i % 2 == 0:
            tick(dev)
        assert dev.fault(100.0 + 0.005 * i) is None


def test_the_stream_ending_on_its_own_is_a_fault_at_once(dev: DeviceOutput) -> None:
    tick(dev)
    assert dev.fault(100.0) is None
    dev._finished()  # PortAudio's stream-finished callback, the server having gone away
    fault = dev.fault(100.005)
    assert fault is not None
    assert "sound server went away" in fault


def test_callbacks_stopping_for_the_stall_timeout_is_a_fault(dev: DeviceOutput) -> None:
    tick(dev)
    assert poll_every(dev, 100.0, 100.0 + 0.9 * STALL_TIMEOUT) is None  # slow is not lost
    fault = poll_every(dev, 100.0 + 0.9 * STALL_TIMEOUT, 100.0 + 1.2 * STALL_TIMEOUT)
    assert fault is not None
    assert "no audio callback" in fault


def test_a_blocked_event_loop_is_not_held_against_the_device(dev: DeviceOutput) -> None:
    tick(dev)
    assert dev.fault(100.0) is None
    # The loop did not poll for twice the timeout (it was blocked): the device gets a new
    # full timeout from the first poll after it, and recovers by calling back.
    assert dev.fault(100.0 + 2 * STALL_TIMEOUT) is None
    assert poll_every(dev, 100.0 + 2 * STALL_TIMEOUT, 100.0 + 2.9 * STALL_TIMEOUT) is None
    tick(dev)
    assert poll_every(dev, 100.0 + 2.9 * STALL_TIMEOUT, 100.0 + 3.8 * STALL_TIMEOUT) is None


def test_a_closed_stream_is_not_a_fault(dev: DeviceOutput) -> None:
    dev._closed = True
    dev._finished()  # our own abort ends the stream too
    assert dev.fault(100.0) is None
    assert dev.fault(100.0 + 10 * STALL_TIMEOUT) is None
