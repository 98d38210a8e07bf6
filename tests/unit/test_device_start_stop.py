"""`DeviceOutput` started and stopped around the audio: clock, watchdog, held resumes, flushes.

A fake PortAudio stream stands in for sounddevice's (no device needed): it records the calls,
and the tests drive the callback by hand, as the PortAudio thread would.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from streamtts.device import STALL_TIMEOUT, DeviceOutput

RATE = 48000
BLOCK = 480


class FakeStream:
    """The part of ``sounddevice.OutputStream`` `DeviceOutput` uses after `open`."""

    def __init__(self, dev: DeviceOutput) -> None:
        self.dev = dev
        self.calls: list[str] = []
        self.latency = 0.1
        self.blocksize = BLOCK

    def start(self) -> None:
        self.calls.append("start")

    def abort(self, ignore_errors: bool = False) -> None:
        self.calls.append("abort")
        self.dev._finished()  # PortAudio runs the finished callback when a stream is stopped

    def stop(self, ignore_errors: bool = False) -> None:
        self.calls.append("stop")
        self.dev._finished()

    def close(self, ignore_errors: bool = False) -> None:
        self.calls.append("close")


@pytest.fixture
def dev() -> DeviceOutput:
    device = DeviceOutput(RATE, 1, ring_seconds=1.0)
    device._prepare(RATE)
    device._stream = FakeStream(device)  # what open() leaves: opened, stopped
    return device


def stream_of(dev: DeviceOutput) -> FakeStream:
    stream = dev._stream
    assert isinstance(stream, FakeStream)
    return stream


def tick(dev: DeviceOutput, t: float) -> np.ndarray:
    out = np.full((BLOCK, 1), np.nan, dtype=np.float32)
    dev._callback(out, BLOCK, SimpleNamespace(currentTime=t),
                  SimpleNamespace(output_underflow=False))
    dev.observe_clock()
    return out[:, 0]


def ones(n: int) -> np.ndarray:
    return np.ones((n, 1), dtype=np.float32)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_an_opened_stream_is_stopped_until_started(dev: DeviceOutput) -> None:
    assert not dev.running
    dev.start()
    assert dev.running
    assert stream_of(dev).calls == ["start"]
    dev.start()  # no-op while it runs
    assert stream_of(dev).calls == ["start"]


@pytest.mark.anyio
async def test_stop_aborts_and_is_not_a_fault(dev: DeviceOutput) -> None:
    dev.start()
    tick(dev, 1.0)
    await dev.stop()
    assert not dev.running
    assert stream_of(dev).calls == ["start", "abort"]
    # Our own abort ran PortAudio's finished callback: not a lost device, and a stopped stream
    # that never calls back is not one either.
    assert dev.fault(100.0) is None
    assert dev.fault(100.0 + 10 * STALL_TIMEOUT) is None


@pytest.mark.anyio
async def test_the_stream_ending_on_its_own_after_a_restart_is_a_fault(dev: DeviceOutput) -> None:
    dev.start()
    tick(dev, 1.0)
    await dev.stop()
    dev.start()
    tick(dev, 2.0)
    assert dev.fault(100.0) is None
    dev._finished()  # the sound server went away
    fault = dev.fault(100.005)
    assert fault is not None
    assert "ended the output stream on its own" in fault


def test_a_started_stream_that_never_calls_back_is_a_fault(dev: DeviceOutput) -> None:
    dev.start()
    assert dev.fault(100.0) is None
    assert dev.fault(100.0 + 0.9 * STALL_TIMEOUT) is None
    fault = None
    now = 100.0 + 0.9 * STALL_TIMEOUT
    while fault is None and now < 100.0 + 2 * STALL_TIMEOUT:
        now += 0.005
        fault = dev.fault(now)
    assert fault is not None
    assert "no audio callback" in fault


@pytest.mark.anyio
async def test_each_start_restarts_the_clock_at_its_first_callback(dev: DeviceOutput) -> None:
    dev._clock_offset = 10.0
    dev.start()
    for k in range(10):  # 10 blocks from t=1.0
        tick(dev, 1.0 + k * BLOCK / RATE)
    assert dev.device_time(0) == pytest.approx(11.0)
    assert dev.device_time(10 * BLOCK) == pytest.approx(11.1)
    await dev.stop()
    dev.start()
    assert not dev.clock_ready
    tick(dev, 5.0)  # the stream was stopped 3.9 s; frame 10 * BLOCK is the new start's first
    assert dev.clock_ready
    assert dev.device_time(10 * BLOCK) == pytest.approx(15.0)
    assert dev.device_time(11 * BLOCK) == pytest.approx(15.0 + BLOCK / RATE)


@pytest.mark.anyio
async def test_a_resume_asked_for_during_a_stop_waits_for_it(dev: DeviceOutput) -> None:
    dev.start()
    tick(dev, 1.0)
    dev.ring.write(ones(BLOCK))
    seen: list[bool] = []

    class SlowAbort(FakeStream):
        def abort(self, ignore_errors: bool = False) -> None:
            # While PortAudio aborts, the event loop runs on: a new source asks to play.
            dev.resume(fade_in=True)
            seen.append(dev.playing)
            super().abort(ignore_errors)

    dev._stream = SlowAbort(dev)
    await dev.stop()
    assert seen == [False]  # held: the callback must not take audio that would be aborted
    assert dev.playing  # granted once stopped: the next start plays it
    assert dev.fade_in_next


def test_a_flush_on_a_stopped_stream_is_done_at_once(dev: DeviceOutput) -> None:
    dev.ring.write(ones(3 * BLOCK))
    dev.resume(fade_in=False)  # asked to play, but the stream has not been started yet
    dev.flush()
    assert dev.flushes_done == dev.flush_requests
    assert dev.ring.readable() == 0
    assert not dev.playing
    assert dev.starts == dev.stalls == 1  # the empty run keeps the history paired


@pytest.mark.anyio
async def test_close_after_a_stop_closes_without_stopping_again(dev: DeviceOutput) -> None:
    dev.start()
    await dev.stop()
    stream = stream_of(dev)
    await dev.close()
    assert stream.calls == ["start", "abort", "close"]
    assert not dev.is_open


@pytest.mark.anyio
async def test_close_of_a_running_stream_aborts_it(dev: DeviceOutput) -> None:
    dev.start()
    stream = stream_of(dev)
    await dev.close()
    assert stream.calls == ["start", "abort", "close"]
