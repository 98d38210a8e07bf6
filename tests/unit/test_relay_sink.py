"""`RelaySink`: PCM playback routed to relay listeners, instead of or as well as a device."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import anyio
import anyio.lowlevel
import numpy as np
import pytest

from streamtts.errors import UsageError
from streamtts.opus import OggOpusEncoder
from streamtts.relay import RelayEnd, RelayHead, RelayHub, RelayListener, RelayPacket, RelaySink

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both event loops: the hub is used from either."""
    backend: str = request.param
    return backend


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.lowlevel.checkpoint()


def hub_and_listener() -> tuple[RelayHub, RelayListener]:
    time = FakeTime()
    hub = RelayHub(clock=time.clock, sleep=time.sleep)
    return hub, hub.listen()


def utterance(listener: RelayListener) -> tuple[RelayHead, list[RelayPacket], RelayEnd]:
    items = list(listener._queue)
    listener._queue.clear()
    head, end = items[0], items[-1]
    assert isinstance(head, RelayHead)
    assert isinstance(end, RelayEnd)
    return head, [p for p in items if isinstance(p, RelayPacket)], end


def tone(frames: int, channels: int = 1) -> np.ndarray:
    t = np.arange(frames) / 1000
    return np.repeat((0.25 * np.sin(t)).astype(np.float32).reshape(-1, 1), channels, axis=1)


async def blocks_of(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_float_pcm_at_48k_is_relayed_to_its_exact_length() -> None:
    hub, listener = hub_and_listener()
    pcm = tone(30_000, channels=2)
    result = await RelaySink(hub).play(
        blocks_of(pcm.tobytes(), 4800), format="pcm", pcm_rate=48000, pcm_channels=2,
        pcm_format="f32le", expected_duration=0.6, text="stereo",
    )
    head, packets, end = utterance(listener)
    assert head.head.channels == 2
    assert head.text == "stereo"
    assert packets[-1].end - head.head.pre_skip == len(pcm)
    assert end.reason == result.reason == "done"


async def test_s16_pcm_at_a_non_opus_rate_is_resampled_to_48k() -> None:
    hub, listener = hub_and_listener()
    pcm = (tone(22_050) * 32767).astype("<i2")
    await RelaySink(hub).play(blocks_of(pcm.tobytes(), 2000), pcm_rate=22_050, pcm_format="s16le")
    head, packets, _ = utterance(listener)
    assert packets[-1].end - head.head.pre_skip == 48_000  # one second either way


async def test_ogg_sources_pass_through() -> None:
    hub, listener = hub_and_listener()
    enc = OggOpusEncoder(24_000, 1)
    data = enc.encode(tone(12_000)) + enc.finish()
    await RelaySink(hub).play(blocks_of(data, 100), format="ogg")
    head, packets, _ = utterance(listener)
    assert packets[-1].end - head.head.pre_skip == 24_000  # 0.5 s in 48 kHz granules


async def test_tap_passes_the_audio_through_unchanged_and_relays_a_copy() -> None:
    hub, listener = hub_and_listener()
    pcm = tone(9_600)
    chunks = [pcm[i : i + 960].tobytes() for i in range(0, len(pcm), 960)]

    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    played = []
    async with RelaySink(hub).tap(source(), pcm_rate=48000, text="both") as tapped:
        async for block in tapped:
            played.append(block)
    assert played == chunks
    head, packets, end = utterance(listener)
    assert head.text == "both"
    assert packets[-1].end - head.head.pre_skip == len(pcm)
    assert end.reason == "done"


async def test_cancelled_tap_ends_the_utterance_for_the_listeners() -> None:
    hub, listener = hub_and_listener()

    async def endless() -> AsyncGenerator[bytes, None]:
        while True:
            yield tone(960).tobytes()
            await anyio.lowlevel.checkpoint()

    with anyio.move_on_after(0.2):
        async with (
            contextlib.aclosing(endless()) as source,
            RelaySink(hub).tap(source, pcm_rate=48000) as tapped,
        ):
            async for _ in tapped:
                await anyio.sleep(0.001)
    _, packets, end = utterance(listener)
    assert packets
    assert end.reason == "stopped"


async def test_unplayable_sources_are_refused() -> None:
    hub, _ = hub_and_listener()
    sink = RelaySink(hub)
    with pytest.raises(UsageError):
        await sink.play(blocks_of(b"", 1), pcm_rate=None)
    with pytest.raises(UsageError):
        await sink.play(blocks_of(b"", 1), pcm_rate=48000, pcm_channels=6)
    with pytest.raises(UsageError):
        await sink.play(blocks_of(b"", 1), pcm_rate=48000, pcm_format="u8")
    with pytest.raises(UsageError):
        await sink.play(blocks_of(b"", 1), format="mp3")
