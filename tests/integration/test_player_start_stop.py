"""The output stream runs only while there is audio: started with the audio queued, stopped idle.

Real PortAudio into a private PulseAudio null sink, recorded. What is checked is structural (no
timing): every start of the stream outputs audio from its very first frame (no buffer of silence
ahead of it, which is what delayed the first sound by the device latency), and stopping and
restarting between sources loses no sample of either.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import numpy as np
import pytest
from support.audio import NullSink, assert_same_audio, first_nonzero
from support.signals import float_wav, tone

from streamtts.device import DeviceOutput
from streamtts.player import Player

pytestmark = [pytest.mark.device, pytest.mark.anyio]

RATE = 48000
#: As in test_player.py: a latency that rides out a loaded machine (no timing is asserted).
DEVICE_LATENCY = 0.25


class StartLog:
    """Records ``frames_out`` at every start of the device's stream."""

    def __init__(self, dev: DeviceOutput, monkeypatch: pytest.MonkeyPatch) -> None:
        self.at: list[int] = []
        start = dev.start

        def logged() -> None:
            if not dev.running:
                self.at.append(dev.frames_out)
            start()

        monkeypatch.setattr(dev, "start", logged)

    def check_audio_first(self, dev: DeviceOutput) -> None:
        """Each start's first output frame was audio: a run began at every start's frame."""
        runs = {int(dev.start_out[k]) for k in range(dev.starts)}
        assert set(self.at) <= runs, (self.at, sorted(runs))


async def stopped(dev: DeviceOutput) -> None:
    with anyio.fail_after(10):  # a hang guard, not a measurement
        while dev.running:  # noqa: ASYNC110 - a plain flag of the device, no event to wait on
            await anyio.sleep(0.01)


def segments(recording: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The recording after ``first`` (which must be the first sound in it)."""
    s0, r0 = first_nonzero(recording), first_nonzero(first)
    assert s0 is not None
    assert r0 is not None
    return recording[s0 - r0 + len(first) :]


async def test_a_source_after_the_stream_stopped_starts_it_again_with_its_audio(
    null_sink: NullSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tone(0.4, 300.0), tone(0.4, 500.0)
    with null_sink.record() as rec:
        async with Player(device_latency=DEVICE_LATENCY, sample_rate=RATE) as player:
            dev = player.device_output
            assert dev is not None
            assert not dev.running  # opened, not started: nothing to play yet
            log = StartLog(dev, monkeypatch)
            await player.play(float_wav(a))
            await stopped(dev)  # idle: stopped once the audio has left
            await player.play(float_wav(b))
            await stopped(dev)
        recording = rec.stop()
    assert len(log.at) == 2
    log.check_audio_first(dev)
    assert_same_audio(recording, a)
    assert_same_audio(segments(recording, a), b)


async def test_a_source_right_after_the_previous_one_ended_loses_nothing_of_either(
    null_sink: NullSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second source comes while the stream still runs on silence after the first: the
    # stream is restarted for it once the first has left the device (or, on a slow machine,
    # already stopped). Either way its audio is the first frame of a start.
    a, b = tone(0.3, 300.0), tone(0.3, 500.0)
    with null_sink.record() as rec:
        async with Player(device_latency=DEVICE_LATENCY, sample_rate=RATE) as player:
            dev = player.device_output
            assert dev is not None
            log = StartLog(dev, monkeypatch)
            await player.play(float_wav(a))
            await player.play(float_wav(b))
        recording = rec.stop()
    assert len(log.at) == 2
    log.check_audio_first(dev)
    assert_same_audio(recording, a)
    assert_same_audio(segments(recording, a), b)


async def test_sources_queued_back_to_back_play_in_one_start(
    null_sink: NullSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = tone(0.3, 300.0), tone(0.3, 500.0)
    both = np.concatenate([a, b])
    with null_sink.record() as rec:
        async with Player(device_latency=DEVICE_LATENCY, sample_rate=RATE) as player:
            dev = player.device_output
            assert dev is not None
            log = StartLog(dev, monkeypatch)
            async with anyio.create_task_group() as tg:
                tg.start_soon(player.play, float_wav(a))
                await anyio.lowlevel.checkpoint()  # queued in this order
                tg.start_soon(player.play, float_wav(b))
        recording = rec.stop()
    assert len(log.at) == 1
    log.check_audio_first(dev)
    assert_same_audio(recording, both)
