"""Player through a real PortAudio stream into a private PulseAudio null sink, recorded.

No timing assertions: recordings are compared sample for sample after alignment, gaps are
measured in samples, and events are counted and ordered.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import numpy as np
import pytest
from support.audio import (
    NullSink,
    align,
    assert_same_audio,
    find_offset,
    first_nonzero,
    silent_gaps,
)
from support.signals import float_wav, header_size, opus_file, opusdec_reference, tone
from support.throttled import ThrottledServer

from streamtts.device import FADE_SECONDS
from streamtts.errors import StreamInterrupted
from streamtts.events import (
    Event,
    PlaybackError,
    PlaybackFinished,
    PlaybackRecovered,
    PlaybackStarted,
    PlaybackStopped,
    SourceFinished,
    Underrun,
)
from streamtts.player import Player

pytestmark = [pytest.mark.device, pytest.mark.anyio]

RATE = 48000
BLOCK = 480  # the player's default block at 48 kHz (10 ms)
#: Output latency of the players here: these machines run other test suites, browsers and
#: fuzzers at the same time, and a callback starved for longer than the latency is a gap that
#: breaks a sample-exact comparison. 250 ms rides out what was seen (gaps up to 210 ms with
#: both cores saturated); it costs these tests nothing, as no timing is asserted.
DEVICE_LATENCY = 0.25
FADE = round(FADE_SECONDS * RATE)


def player_(**options: Any) -> Player:
    """A Player with the tests' output latency."""
    return Player(device_latency=DEVICE_LATENCY, **options)


def of_type(events: list[Event], kind: type[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, kind)]


def names(events: list[Event]) -> list[str]:
    return [type(e).__name__ for e in events if not type(e).__name__.startswith("Source")]


@pytest.fixture(scope="module")
def speechlike(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 2.5 s Opus file (two tones, amplitude-modulated) and opusdec's 48 kHz decode of it."""
    n = int(2.5 * RATE)
    t = np.arange(1, n + 1) / RATE
    x = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1370 * t)
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
    path = opus_file(tmp_path_factory.mktemp("opus"), x.astype(np.float32).reshape(-1, 1))
    return path, opusdec_reference(path)


async def test_a_wav_file_is_played_exactly_to_its_last_sample(
    null_sink: NullSink, tmp_path: Path
) -> None:
    x = tone(1.0)
    path = tmp_path / "tone.wav"
    path.write_bytes(float_wav(x))
    with null_sink.record() as rec:
        async with player_() as player:
            events = player.events()
            result = await player.play(path)
            got = events.drain()
        recording = rec.stop()
    assert_same_audio(recording, x)
    assert result.frames == len(x)
    assert result.underruns == 0
    assert result.started_at is not None
    assert result.finished_at is not None
    assert result.started_at < result.finished_at
    assert names(got) == ["PlaybackStarted", "PlaybackFinished"]
    assert of_type(got, SourceFinished)[0].frames == len(x)  # type: ignore[attr-defined]


async def test_an_opus_file_sounds_exactly_like_opusdec(
    null_sink: NullSink, speechlike: tuple[Path, np.ndarray]
) -> None:
    path, reference = speechlike
    with null_sink.record() as rec:
        async with player_() as player:
            result = await player.play(path.read_bytes())
        recording = rec.stop()
    assert result.frames == len(reference)
    assert_same_audio(recording, reference)


async def test_queued_sources_follow_each_other_without_silence(null_sink: NullSink) -> None:
    a, b = tone(0.8, 300), tone(0.6, 500, amp=0.25)
    results = []
    with null_sink.record() as rec:
        async with player_() as player:
            events = player.events()

            async def play(data: bytes) -> None:
                results.append(await player.play(data))

            async with anyio.create_task_group() as tg:
                tg.start_soon(play, float_wav(a))
                async for event in events:  # queue b while a plays
                    if isinstance(event, PlaybackStarted):
                        break
                tg.start_soon(play, float_wav(b))
            got = events.drain()
        recording = rec.stop()
    both = np.concatenate([a, b])
    assert_same_audio(recording, both)
    assert [r.source for r in results] == [0, 1]
    assert names([e for e in got if getattr(e, "source", None) == 1]) == [
        "PlaybackStarted",
        "PlaybackFinished",
    ]
    assert names(got)[-1] == "PlaybackFinished"  # the second source's, last of all
    assert not of_type(got, Underrun)
    # The silence around the pair is the only silence: nothing was inserted between them.
    start = first_nonzero(recording)
    assert start is not None
    inner = silent_gaps(recording[start : start + len(both)], min_frames=2)
    assert inner == []


async def test_cancelling_a_queued_play_leaves_the_playing_one_untouched(
    null_sink: NullSink,
) -> None:
    a, b = tone(0.8, 300), tone(0.6, 500)
    with null_sink.record() as rec:
        async with player_() as player:
            events = player.events()
            async with anyio.create_task_group() as tg:
                tg.start_soon(player.play, float_wav(a))
                async for event in events:
                    if isinstance(event, PlaybackStarted):
                        break
                with anyio.CancelScope() as queued:
                    queued.cancel()
                    await player.play(float_wav(b))
                assert queued.cancelled_caught
            got = events.drain()
        recording = rec.stop()
    assert_same_audio(recording, a)
    start = first_nonzero(recording)
    assert start is not None
    assert not recording[start + len(a) :].any()  # the cancelled source never sounded
    assert names(got) == ["PlaybackStopped", "PlaybackFinished"]


async def test_a_link_at_1_2x_real_time_in_bursts_plays_without_underrun(
    null_sink: NullSink, speechlike: tuple[Path, np.ndarray]
) -> None:
    path, reference = speechlike
    body = path.read_bytes()
    with null_sink.record() as rec:
        async with player_() as player, httpx.AsyncClient() as client:
            events = player.events()
            with ThrottledServer.for_audio(body, seconds=2.5, speed=1.2, burst=0.1) as server:
                async with client.stream("GET", server.url) as response:
                    result = await player.play(response)
            got = events.drain()
        recording = rec.stop()
    assert result.underruns == 0
    assert not of_type(got, Underrun)
    assert len(of_type(got, PlaybackStarted)) == 1
    assert_same_audio(recording, reference)


async def test_a_stall_gives_one_underrun_whose_silence_is_the_gap_heard(
    null_sink: NullSink,
) -> None:
    x = tone(3.0)
    body = float_wav(x)
    with null_sink.record() as rec:
        async with player_() as player, httpx.AsyncClient() as client:
            events = player.events()
            server = ThrottledServer.for_audio(
                body, seconds=3.0, speed=1.1, burst=0.02, stalls=[(1.5, 0.5)],
                header=header_size(body, x),
            )
            with server:
                async with client.stream("GET", server.url) as response:
                    result = await player.play(response)
            got = events.drain()
        recording = rec.stop()
    underruns = of_type(got, Underrun)
    assert len(underruns) == 1
    underrun = underruns[0]
    assert isinstance(underrun, Underrun)
    assert underrun.cause == "network"
    assert result.underruns == 1
    assert names(got) == ["PlaybackStarted", "Underrun", "PlaybackRecovered", "PlaybackFinished"]
    assert isinstance(of_type(got, PlaybackRecovered)[0], PlaybackRecovered)

    start = first_nonzero(recording)
    assert start is not None
    played = recording[start:]
    gaps = [g for g in silent_gaps(played, min_frames=BLOCK) if g[0] + g[1] < len(played)]
    assert len(gaps) == 1, gaps
    gap_start, gap_len = gaps[0]
    silence = round(underrun.silence_ms * RATE / 1000)
    assert abs(gap_len - silence) <= BLOCK
    # Nothing was lost: the audio before the gap (up to the fade) and after it (after the fade
    # in) is the source's, sample for sample.
    pos = underrun.position
    assert abs(gap_start - pos) <= FADE
    np.testing.assert_array_equal(played[: pos - FADE], x[: pos - FADE])
    resumed = pos + silence  # the device inserted exactly `silence` frames of zeros
    after = played[resumed + FADE : resumed + len(x) - pos]
    np.testing.assert_array_equal(after, x[pos + FADE : pos + FADE + len(after)])
    assert len(after) > RATE  # the whole second half was compared


async def test_a_slow_link_with_a_duration_hint_starts_once_and_never_underruns(
    null_sink: NullSink,
) -> None:
    x = tone(2.5, 440)
    body = float_wav(x)
    with null_sink.record() as rec:
        async with player_() as player, httpx.AsyncClient() as client:
            events = player.events()
            server = ThrottledServer.for_audio(
                body, seconds=2.5, speed=0.8, burst=0.02, header=header_size(body, x)
            )
            with server:
                async with client.stream("GET", server.url) as response:
                    result = await player.play(response, expected_duration=2.5)
            got = events.drain()
        recording = rec.stop()
    assert result.underruns == 0, of_type(got, Underrun)
    assert names(got) == ["PlaybackStarted", "PlaybackFinished"]
    assert_same_audio(recording, x)


async def test_raw_pcm_at_0_8x_in_chunks_larger_than_a_feed_plays_through_with_hint(
    null_sink: NullSink,
) -> None:
    # 100 ms bursts of s16 PCM (9600 bytes) reach the reader as several slices with one
    # arrival time, as OpenAI-style PCM over the impaired server does: the policy must see the
    # link's slow rate through them (they once looked like jitter: an early start, underruns).
    x = tone(2.5, 440)
    pcm16 = np.round(x[:, 0] * 32767).astype("<i2")
    expected = (pcm16.astype(np.float32) / 32768).reshape(-1, 1)
    with null_sink.record() as rec:
        async with player_() as player, httpx.AsyncClient() as client:
            events = player.events()
            server = ThrottledServer.for_audio(pcm16.tobytes(), seconds=2.5, speed=0.8, burst=0.1)
            with server:
                async with client.stream("GET", server.url) as response:
                    result = await player.play(
                        response, format="pcm", pcm_rate=RATE, expected_duration=2.5
                    )
            got = events.drain()
        recording = rec.stop()
    assert result.underruns == 0, of_type(got, Underrun)
    assert names(got) == ["PlaybackStarted", "PlaybackFinished"]
    assert_same_audio(recording, expected)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_cancelling_play_silences_at_once_closes_the_source_and_stops_callbacks(
    null_sink: NullSink,
) -> None:
    x = tone(3.0)
    body = float_wav(x)
    with null_sink.record() as rec:
        server = ThrottledServer.for_audio(
            body, seconds=3.0, speed=1.0, burst=0.02, header=header_size(body, x)
        )
        with server:
            # A fixed preroll: a real-time link with no underrun, so what was heard is exact.
            async with player_(latency=0.25) as player, httpx.AsyncClient() as client:
                events = player.events()
                async with client.stream("GET", server.url) as response:
                    with anyio.CancelScope() as scope:
                        async with anyio.create_task_group() as tg:
                            tg.start_soon(player.play, response)
                            async for event in events:
                                if isinstance(event, PlaybackStarted):
                                    break
                            await anyio.sleep(0.4)
                            scope.cancel()
                    assert scope.cancelled_caught
                    assert response.is_closed
                got = events.drain()
                device = player.device_output
            assert device is not None
            assert server.finished.wait(5)
            assert server.client_closed_early
        frozen = device.callbacks
        await anyio.sleep(0.1)
        assert device.callbacks == frozen  # no callback after the player closed
        recording = rec.stop()
    stopped = of_type(got, PlaybackStopped)
    assert len(stopped) == 1
    assert isinstance(stopped[0], PlaybackStopped)
    heard = stopped[0].frames_heard
    assert 0 < heard < len(x)
    assert not of_type(got, PlaybackFinished)
    # What was heard is the source's start; then a fade of a few ms, then silence.
    start = first_nonzero(recording)
    assert start is not None
    aligned = align(recording, x)
    np.testing.assert_array_equal(aligned[: heard - FADE], x[: heard - FADE])
    assert not aligned[heard:].any()


async def test_a_source_failing_midway_plays_what_arrived_then_raises(
    null_sink: NullSink,
) -> None:
    x = tone(1.0)
    body = float_wav(x)
    header = len(body) - 4 * len(x)
    half = header + 4 * (len(x) // 2)

    async def broken() -> AsyncIterator[bytes]:
        yield body[:half]
        raise httpx.ReadError("connection reset by peer")

    with null_sink.record() as rec:
        async with player_() as player:
            events = player.events()
            with pytest.raises(StreamInterrupted):
                await player.play(broken())
            got = events.drain()
        recording = rec.stop()
    errors = of_type(got, PlaybackError)
    assert len(errors) == 1
    assert isinstance(errors[0], PlaybackError)
    assert errors[0].error == "StreamInterrupted"
    start = first_nonzero(recording)
    assert start is not None
    heard = recording[start:]
    end = np.flatnonzero(np.abs(heard[:, 0]) > 0)[-1] + 1
    assert end == len(x) // 2  # all that arrived, to its last sample
    np.testing.assert_array_equal(heard[:end], x[:end])


def test_no_audio_server_gives_a_clear_device_error_not_a_hang(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import anyio
        from streamtts.errors import AudioDeviceError
        from streamtts.player import Player

        async def main():
            async with Player() as player:
                try:
                    await player.play(WAV)
                except AudioDeviceError as exc:
                    print("AudioDeviceError:", exc)

        anyio.run(main)
        """
    ).replace("WAV", repr(float_wav(tone(0.1))))
    env = {"PULSE_SERVER": f"unix:{tmp_path}/no-such-socket", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("AudioDeviceError:")
    assert "No audio device or sound server" in proc.stdout
    assert "scripts/pulse start" in proc.stdout


async def test_a_source_at_another_rate_is_resampled_into_the_open_stream(
    null_sink: NullSink,
) -> None:
    from streamtts.resample import Resampler

    x24 = tone(0.7, 440, rate=24000)
    resampler = Resampler(24000, RATE, 1)
    reference = np.concatenate([resampler.process(x24), resampler.flush()])
    with null_sink.record() as rec:
        async with player_(sample_rate=RATE, channels=1) as player:
            result = await player.play(float_wav(x24, 24000))
        recording = rec.stop()
    assert player.sample_rate == RATE
    assert result.frames == len(reference)
    lag = find_offset(recording, reference)
    got = recording[lag : lag + len(reference)]
    np.testing.assert_allclose(got, reference, atol=1e-5)


async def test_a_stereo_source_is_mixed_down_for_a_mono_stream(null_sink: NullSink) -> None:
    stereo = np.concatenate([tone(0.5, 300), tone(0.5, 700, amp=0.1)], axis=1)
    with null_sink.record() as rec:
        async with player_(sample_rate=RATE, channels=1) as player:
            await player.play(float_wav(stereo))
        recording = rec.stop()
    assert_same_audio(recording, stereo.mean(axis=1, keepdims=True, dtype=np.float32))
