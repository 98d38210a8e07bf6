"""The device open is kept off the first sound's path: a speculative open on entering a Player
given no ``sample_rate``, and the probe's measurement remembered for the next open.

Real PortAudio into a private PulseAudio null sink. Structural checks only (no timing): which
devices were opened, at which rate, in which order against the source's bytes, what the sink
received (sample for sample), and which PortAudio streams still exist on the sink afterwards
(an opened stream, even stopped, is one of the sink's inputs until it is closed).
"""

from __future__ import annotations

import gc
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import numpy as np
import pytest
from support.audio import NullSink, assert_same_audio
from support.signals import float_wav, opus_file, opusdec_reference, tone

from streamtts import device as device_module
from streamtts import player as player_module
from streamtts.device import DeviceOutput
from streamtts.errors import AudioDeviceError
from streamtts.player import SPECULATIVE_RATE, Player

pytestmark = [pytest.mark.device, pytest.mark.anyio]

#: As in test_player.py: a latency that rides out a loaded machine (no timing is asserted).
DEVICE_LATENCY = 0.25

#: Hang guard of the waits below; the real waits take milliseconds.
GUARD = 10.0


class Opens:
    """Every `DeviceOutput.open` in the test, in order, with the rate asked for."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.devices: list[DeviceOutput] = []
        self.log: list[str] = []
        self.opened = anyio.Event()
        self._at_rate: dict[int, anyio.Event] = {}
        real_open = DeviceOutput.open
        opens = self

        async def open_(dev: DeviceOutput) -> None:
            opens.devices.append(dev)
            opens.log.append(f"open {dev.requested_rate}")
            await real_open(dev)
            opens.log.append(f"opened {dev.requested_rate}")
            opens.opened.set()
            opens.at_rate(dev.requested_rate).set()

        monkeypatch.setattr(DeviceOutput, "open", open_)

    def at_rate(self, rate: int) -> anyio.Event:
        """Set once a device asked for ``rate`` has been opened."""
        return self._at_rate.setdefault(rate, anyio.Event())


def sink_inputs(sink: NullSink) -> int:
    """PortAudio streams (opened, running or not) that play into ``sink``."""
    sinks = subprocess.run(["pactl", "list", "short", "sinks"], capture_output=True, text=True,
                           check=True).stdout
    ids = {line.split()[0] for line in sinks.splitlines() if line.split()[1] == sink.name}
    inputs = subprocess.run(["pactl", "list", "short", "sink-inputs"], capture_output=True,
                            text=True, check=True).stdout
    return sum(1 for line in inputs.splitlines() if line.split()[1] in ids)


async def gated(data: bytes, gate: anyio.Event, log: list[str]) -> AsyncIterator[bytes]:
    """``data`` in one chunk, once ``gate`` is set (logged when it is handed over)."""
    await gate.wait()
    log.append("first byte")
    yield data


@pytest.fixture
def fresh_probes(monkeypatch: pytest.MonkeyPatch) -> dict[object, float]:
    """An empty probe memory for this test (other tests' opens are not counted)."""
    probes: dict[object, float] = {}
    monkeypatch.setattr(device_module, "START_BURSTS", probes)
    return probes


async def test_a_player_without_a_rate_opens_its_device_before_any_source_and_plays_opus_on_it(
    null_sink: NullSink, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    x = tone(0.6, 440).astype(np.float32)
    path = opus_file(tmp_path, x)
    reference = opusdec_reference(path)
    opens = Opens(monkeypatch)
    gate = anyio.Event()
    with null_sink.record() as rec:
        async with Player(device_latency=DEVICE_LATENCY) as player:
            with anyio.fail_after(GUARD):
                await opens.opened.wait()  # no source yet: only the speculative open can do it
            assert player.device_output is None  # not claimed until a source needs it
            assert sink_inputs(null_sink) == 1
            gate.set()
            await player.play(gated(path.read_bytes(), gate, opens.log))
            assert player.device_output is opens.devices[0]
        recording = rec.stop()
    assert opens.log == [f"open {SPECULATIVE_RATE}", f"opened {SPECULATIVE_RATE}", "first byte"]
    assert player.sample_rate == SPECULATIVE_RATE
    assert_same_audio(recording, reference)
    assert sink_inputs(null_sink) == 0


async def test_a_wav_source_at_another_rate_gets_a_device_at_its_rate_sample_exact(
    pulse_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    x24 = tone(0.5, 440, rate=24000)
    opens = Opens(monkeypatch)
    sink = NullSink(rate=24000)
    try:
        with sink.route(), sink.record() as rec:
            async with Player(device_latency=DEVICE_LATENCY) as player:
                result = await player.play(float_wav(x24, 24000))
                speculative = opens.devices[0]
            recording = rec.stop()
        assert [d.requested_rate for d in opens.devices] == [SPECULATIVE_RATE, 24000]
        assert player.sample_rate == 24000
        assert result.frames == len(x24)
        assert not speculative.is_open  # closed, never played
        assert speculative.frames_out == 0
        assert_same_audio(recording, x24)  # no resampling of the first source
        assert sink_inputs(sink) == 0
    finally:
        sink.close()


async def test_a_device_that_opens_only_once_still_gets_reopened_at_the_source_rate(
    pulse_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An ALSA hw device cannot be opened while another stream holds it: emulated here.
    opened: list[DeviceOutput] = []
    real_open = DeviceOutput.open

    async def exclusive_open(dev: DeviceOutput) -> None:
        if any(d.is_open for d in opened):
            raise AudioDeviceError("device busy")
        opened.append(dev)
        await real_open(dev)

    monkeypatch.setattr(DeviceOutput, "open", exclusive_open)
    x24 = tone(0.3, 440, rate=24000)
    sink = NullSink(rate=24000)
    try:
        with sink.route(), sink.record() as rec:
            async with Player(device_latency=DEVICE_LATENCY) as player:
                result = await player.play(float_wav(x24, 24000))
            recording = rec.stop()
        assert sink_inputs(sink) == 0
    finally:
        sink.close()
    assert [d.requested_rate for d in opened] == [SPECULATIVE_RATE, 24000]
    assert player.sample_rate == 24000
    assert result.frames == len(x24)
    assert_same_audio(recording, x24)


async def test_a_stereo_source_gets_a_stereo_device_as_without_the_speculative_open(
    null_sink: NullSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    stereo = np.concatenate([tone(0.3, 300), tone(0.3, 700, amp=0.1)], axis=1)
    opens = Opens(monkeypatch)
    async with Player(device_latency=DEVICE_LATENCY) as player:
        await player.play(float_wav(stereo))
        dev = player.device_output
        assert dev is not None
    assert [(d.requested_rate, d.channels) for d in opens.devices] == [
        (SPECULATIVE_RATE, 1), (SPECULATIVE_RATE, 2)]
    assert dev.channels == 2
    assert not any(d.is_open for d in opens.devices)
    assert sink_inputs(null_sink) == 0


async def test_a_failed_speculative_open_raises_nothing_until_a_source_needs_the_device(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried: list[int] = []

    async def refuse(dev: DeviceOutput) -> None:
        tried.append(dev.requested_rate)
        raise AudioDeviceError(f"no device ({len(tried)})")

    monkeypatch.setattr(DeviceOutput, "open", refuse)
    async with Player() as player:
        with anyio.fail_after(GUARD):
            while not tried:  # noqa: ASYNC110 - a plain list, no event to wait on
                await anyio.sleep(0.005)
        assert player.device_output is None
        # The source's own open is tried again and its error (the usual one) is raised.
        with pytest.raises(AudioDeviceError, match=r"no device") as raised:
            await player.play(float_wav(tone(0.1)))
    assert "(1)" not in str(raised.value)
    assert len(tried) >= 2


async def test_a_speculative_open_that_timed_out_is_not_waited_for_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried: list[int] = []

    async def time_out(dev: DeviceOutput) -> None:
        tried.append(dev.requested_rate)
        try:
            raise TimeoutError
        except TimeoutError as exc:
            raise AudioDeviceError("the audio device did not open within 10 s") from exc

    monkeypatch.setattr(DeviceOutput, "open", time_out)
    async with Player() as player:
        for _ in range(2):  # every source is told, none waits for another open
            with pytest.raises(AudioDeviceError, match="did not open within"):
                await player.play(float_wav(tone(0.1)))
    assert tried == [SPECULATIVE_RATE]


async def test_leaving_the_player_during_the_speculative_open_closes_its_stream(
    null_sink: NullSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    opens = Opens(monkeypatch)
    logged_open = DeviceOutput.open
    begun = anyio.Event()

    async def slow_open(dev: DeviceOutput) -> None:
        begun.set()
        await anyio.sleep(0.2)  # still opening when the player is left
        await logged_open(dev)

    monkeypatch.setattr(DeviceOutput, "open", slow_open)
    async with Player(device_latency=DEVICE_LATENCY):
        with anyio.fail_after(GUARD):
            await begun.wait()
    assert len(opens.devices) == 1
    assert opens.log == [f"open {SPECULATIVE_RATE}", f"opened {SPECULATIVE_RATE}"]
    assert not opens.devices[0].is_open
    assert sink_inputs(null_sink) == 0


async def test_a_hung_speculative_open_is_abandoned_on_leaving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    begun, cancelled = anyio.Event(), anyio.Event()

    async def hang(dev: DeviceOutput) -> None:
        begun.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    monkeypatch.setattr(DeviceOutput, "open", hang)
    monkeypatch.setattr(player_module, "CLOSE_TIMEOUT", 0.2)
    with anyio.fail_after(GUARD):
        async with Player():
            await begun.wait()
    assert cancelled.is_set()


async def test_a_later_open_of_the_same_output_at_another_rate_reuses_the_probe_exactly(
    pulse_server: None, fresh_probes: dict[object, float]
) -> None:
    x24 = tone(0.3, 500, rate=24000)
    sink = NullSink(rate=24000)
    try:
        with sink.route():
            first = DeviceOutput(48000, 1, latency=DEVICE_LATENCY)
            await first.open()
            await first.close()
            assert first.probed
            assert len(fresh_probes) == 1
            with sink.record() as rec:
                async with Player(device_latency=DEVICE_LATENCY, sample_rate=24000) as player:
                    await player.play(float_wav(x24, 24000))
                    dev = player.device_output
                    assert dev is not None
                recording = rec.stop()
    finally:
        sink.close()
    assert not dev.probed  # its stream was first started for the audio itself
    assert dev.sample_rate == 24000
    assert dev.start_fill == round(first.start_fill / 2)  # the same time at half the rate
    assert_same_audio(recording, x24)


async def test_raw_pcm_gets_its_device_before_its_first_byte(
    pulse_server: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    x24 = tone(0.3, 440, rate=24000)
    pcm = (x24[:, 0] * 32767).astype("<i2").tobytes()
    opens = Opens(monkeypatch)
    gate = anyio.Event()
    sink = NullSink(rate=24000)
    try:
        with sink.route():
            async with Player(device_latency=DEVICE_LATENCY) as player, \
                    anyio.create_task_group() as tg:
                tg.start_soon(lambda: player.play(gated(pcm, gate, opens.log), format="pcm",
                                                  pcm_rate=24000))
                with anyio.fail_after(GUARD):  # no byte has come: only the rate told it
                    await opens.at_rate(24000).wait()
                gate.set()
    finally:
        sink.close()
    assert opens.log.index("opened 24000") < opens.log.index("first byte")
    assert player.sample_rate == 24000


async def test_another_latency_is_probed_anew(
    null_sink: NullSink, fresh_probes: dict[object, float]
) -> None:
    for latency in (DEVICE_LATENCY, 0.05):
        dev = DeviceOutput(48000, 1, latency=latency)
        await dev.open()
        await dev.close()
        assert dev.probed
    assert len(fresh_probes) == 2


async def test_entering_a_player_runs_the_full_garbage_collection_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    phases: list[str] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            phases.append(phase)

    async def refuse(dev: DeviceOutput) -> None:  # no device needed for this
        raise AudioDeviceError("no device")

    monkeypatch.setattr(DeviceOutput, "open", refuse)
    gc.callbacks.append(seen)
    try:
        async with Player():
            entered = list(phases)
    finally:
        gc.callbacks.remove(seen)
    assert "start" in entered
    assert "stop" in entered
