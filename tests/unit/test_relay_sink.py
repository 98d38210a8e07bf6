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


async def test_concurrent_plays_on_one_sink_are_relayed_one_after_another_in_call_order() -> None:
    hub, listener = hub_and_listener()
    sink = RelaySink(hub)
    results = {}

    async def play(name: str, frames: int) -> None:
        results[name] = await sink.play(
            blocks_of(tone(frames).tobytes(), 3840), pcm_rate=48000, text=name
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(play, "first", 240_000)  # 5 s: paced to `lead`, it waits on the way
        await anyio.lowlevel.checkpoint()
        tg.start_soon(play, "second", 9_600)
    items = list(listener._queue)
    heads = [m for m in items if isinstance(m, RelayHead)]
    ends = [m for m in items if isinstance(m, RelayEnd)]
    assert [h.text for h in heads] == ["first", "second"]
    # Neither replaced the other: the second began only after the first had ended.
    assert [e.reason for e in ends] == ["done", "done"]
    assert items.index(ends[0]) < items.index(heads[1])
    assert results["first"].utterances == (0,)
    assert results["second"].utterances == (1,)


async def test_on_head_tells_the_utterance_being_published() -> None:
    hub, listener = hub_and_listener()
    seen: list[RelayHead] = []
    await RelaySink(hub).play(
        blocks_of(tone(4800).tobytes(), 960), pcm_rate=48000, text="told", on_head=seen.append
    )
    head, _, _ = utterance(listener)
    assert seen == [head]


async def test_the_playhead_follows_the_on_time_listener_in_real_time_up_to_the_end() -> None:
    time = FakeTime()
    hub = RelayHub(clock=time.clock, sleep=time.sleep)
    assert hub.playhead() is None
    heads: list[RelayHead] = []
    result = await RelaySink(hub).play(
        blocks_of(tone(96_000).tobytes(), 4800), pcm_rate=48000, on_head=heads.append
    )
    # Publishing was paced to `lead` ahead of the on-time listener: it is 1 s from the end.
    playhead = hub.playhead(heads[0].utterance)
    assert playhead is not None
    assert playhead.end == result.reason == "done"
    assert playhead.published == result.samples == 96_000 + playhead.pre_skip
    assert playhead.remaining == pytest.approx(hub.lead, abs=0.021)
    assert playhead.started == 0.0
    time.now += 0.5
    later = hub.playhead()
    assert later is not None
    assert later.position - playhead.position == 24_000
    time.now += 5.0
    done = hub.playhead()
    assert done is not None
    assert done.position == done.published  # it never plays past what was published
    assert done.remaining == 0.0
    assert hub.playhead(heads[0].utterance + 1) is None  # not that utterance


async def test_the_playhead_counts_a_stall_of_the_source_as_one_underrun_once_it_is_over() -> None:
    time = FakeTime()
    hub = RelayHub(clock=time.clock, sleep=time.sleep)
    looks = []

    async def stalling() -> AsyncIterator[bytes]:
        yield tone(4800).tobytes()  # five 20 ms packets, published at once at t = 0
        await time.sleep(0.5)  # the on-time listener plays 0.1 s of them, then waits 0.4 s
        looks.append(hub.playhead())
        yield tone(4800).tobytes()

    await RelaySink(hub).play(stalling(), pcm_rate=48000)
    during, after = looks[0], hub.playhead()
    assert during is not None
    assert during.waiting  # still going on: counted, not over
    assert during.underruns == 1
    assert after is not None
    assert not after.waiting
    assert after.underruns == 1
    assert after.underrun_seconds == pytest.approx(0.4)
    assert after.underrun_position == 4800
    time.now += 10.0  # the end is not an underrun
    final = hub.playhead()
    assert final is not None
    assert final.underruns == 1
    assert final.position == final.published
