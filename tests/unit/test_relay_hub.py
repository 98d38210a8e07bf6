"""The relay hub (sans-socket): fan-out, live position for late joiners, slow listeners, pacing."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import anyio
import anyio.lowlevel
import numpy as np
import pytest

from streamtts.errors import ProtocolError, UsageError
from streamtts.opus import OggOpusDecoder, OggOpusEncoder, OpusHead
from streamtts.relay import (
    PREROLL,
    RelayEnd,
    RelayHead,
    RelayHub,
    RelayListener,
    RelayMessage,
    RelayPacket,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Both event loops: the hub is used from either."""
    backend: str = request.param
    return backend

RATE = 48000


class FakeTime:
    """A clock that only moves when the hub sleeps (or the test moves it)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds
        await anyio.lowlevel.checkpoint()


def ogg_opus(seconds: float, *, frame_ms: float = 20) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32).reshape(-1, 1)
    enc = OggOpusEncoder(RATE, 1, frame_ms=frame_ms, page_ms=20, serial=7)
    return enc.encode(pcm) + enc.finish()


def decoded_length(data: bytes) -> int:
    dec = OggOpusDecoder(RATE)
    return sum(len(b) for b in dec.feed(data) + dec.close())


async def chunks(data: bytes, size: int = 333) -> AsyncGenerator[bytes, None]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await anyio.lowlevel.checkpoint()


def drain(listener: RelayListener) -> list[RelayMessage]:
    out = list(listener._queue)
    listener._queue.clear()
    return out


def packets(messages: list[RelayMessage]) -> list[RelayPacket]:
    return [m for m in messages if isinstance(m, RelayPacket)]


async def test_every_listener_gets_head_then_packets_in_order_then_end() -> None:
    time = FakeTime()
    hub = RelayHub(clock=time.clock, sleep=time.sleep)
    a, b = hub.listen(), hub.listen()
    data = ogg_opus(0.5)
    result = await hub.relay_ogg(chunks(data), text="hi", voice="alloy")
    got_a, got_b = drain(a), drain(b)
    assert got_a == got_b
    assert isinstance(got_a[0], RelayHead)
    assert got_a[0].text == "hi"
    assert got_a[0].start == 0
    assert isinstance(got_a[-1], RelayEnd)
    assert got_a[-1].reason == "done"
    pk = packets(got_a)
    assert [p.sequence for p in pk] == list(range(len(pk)))
    assert all(p.position == q.end for p, q in zip(pk[1:], pk, strict=False))
    assert [p.final for p in pk] == [False] * (len(pk) - 1) + [True]
    assert result.packets == len(pk)
    assert result.reason == "done"


async def test_positions_with_end_trim_give_exactly_the_decoded_length() -> None:
    time = FakeTime()
    hub = RelayHub(clock=time.clock, sleep=time.sleep)
    listener = hub.listen()
    data = ogg_opus(0.437)  # not a whole number of frames: the final packet is end-trimmed
    await hub.relay_ogg(chunks(data, 1))
    got = drain(listener)
    head = got[0]
    assert isinstance(head, RelayHead)
    pk = packets(got)
    assert pk[-1].samples < 960
    assert pk[-1].end - head.head.pre_skip == decoded_length(data) == round(0.437 * RATE)


async def test_end_trim_longer_than_the_last_packet_cuts_every_packet_it_covers() -> None:
    from streamtts.ogg import OggPacket, OggReader, OggWriter

    source = [p for p in OggReader().feed(ogg_opus(0.2)) if isinstance(p, OggPacket)]
    head, tags, audio = source[0].data, source[1].data, [p.data for p in source[2:]]
    pre_skip = int.from_bytes(head[10:12], "little")
    writer = OggWriter(3)
    writer.add(head, 0)
    data = writer.page()
    writer.add(tags, 0)
    data += writer.page()
    for i, packet in enumerate(audio[:-3]):
        writer.add(packet, 960 * (i + 1))
        data += writer.page()
    final = 960 * len(audio) - 1500  # the trim covers the last packet and half the one before
    for packet in audio[-3:]:
        writer.add(packet, final)
    data += writer.page(eos=True)
    time = FakeTime()
    hub = RelayHub(clock=time.clock, sleep=time.sleep)
    listener = hub.listen()
    await hub.relay_ogg(chunks(data, 7))
    pk = packets(drain(listener))
    assert [p.samples for p in pk[-3:]] == [960, 960 - 540, 0]
    assert pk[-1].end == final
    assert pk[-1].end - pre_skip == decoded_length(data)


async def test_packet_message_round_trips_through_bytes() -> None:
    p = RelayPacket(3, 17, 2**40 + 5, 960, b"\xfc\x01\x02", final=True)
    wire = p.to_bytes()
    assert len(wire) == 20 + 3
    assert RelayPacket.from_bytes(wire) == p
    with pytest.raises(ProtocolError):
        RelayPacket.from_bytes(wire[:19])
    with pytest.raises(ProtocolError):
        RelayPacket.from_bytes(b"\x02" + wire[1:])


async def test_source_faster_than_real_time_is_paced_to_the_lead() -> None:
    time = FakeTime()
    hub = RelayHub(lead=0.2, clock=time.clock, sleep=time.sleep)
    hub.listen()
    await hub.relay_ogg(chunks(ogg_opus(1.0)))
    # Everything after the first 0.2 s waited for real time: about 1.0 - 0.2 s in all.
    assert time.slept == pytest.approx(0.8 + 312 / RATE, abs=0.021)


async def test_late_joiner_gets_head_first_then_plays_from_the_live_position() -> None:
    time = FakeTime()
    hub = RelayHub(lead=0.1, clock=time.clock, sleep=time.sleep)
    early = hub.listen()
    late: list[RelayListener] = []
    data = ogg_opus(1.0)

    async def source() -> AsyncIterator[bytes]:
        async for chunk in chunks(data, 200):
            yield chunk
            if not late and time.now >= 100.5:
                late.append(hub.listen())

    await hub.relay_ogg(source())
    got_early, got_late = drain(early), drain(late[0])
    head = got_late[0]
    assert isinstance(head, RelayHead)
    assert head.utterance == got_early[0].utterance  # type: ignore[union-attr]
    # It joined ~0.5 s in: it plays from there, after up to PREROLL of decoder warm-up.
    assert 0.45 * RATE <= head.start <= 0.55 * RATE
    pk = packets(got_late)
    assert pk[0].position < head.start <= pk[0].position + PREROLL + 960
    assert [p.sequence for p in pk] == list(range(pk[0].sequence, pk[-1].sequence + 1))
    assert pk[-1] == packets(got_early)[-1]
    assert isinstance(got_late[-1], RelayEnd)


async def test_joiner_after_the_source_ended_still_gets_the_tail_still_playing() -> None:
    time = FakeTime()
    hub = RelayHub(lead=0.5, clock=time.clock, sleep=time.sleep)
    hub.listen()
    await hub.relay_ogg(chunks(ogg_opus(1.0)))  # returns ~0.5 s before its end plays out
    time.now += 0.25
    got = drain(hub.listen())
    assert isinstance(got[0], RelayHead)
    assert isinstance(got[-1], RelayEnd)
    assert packets(got)[-1].final
    time.now += 10
    assert drain(hub.listen()) == []  # over for everyone: nothing to join


async def test_slow_listener_loses_its_oldest_packets_and_never_holds_back_the_others() -> None:
    time = FakeTime()
    hub = RelayHub(clock=time.clock, sleep=time.sleep)
    slow = hub.listen(max_queue=0.1)  # never read during the broadcast
    fast = hub.listen()
    received: list[RelayMessage] = []

    async def read_fast() -> None:
        async for message in fast:
            received.append(message)
            if isinstance(message, RelayEnd):
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_fast)
        result = await hub.relay_ogg(chunks(ogg_opus(0.6)))
    assert len(packets(received)) == result.packets
    got = drain(slow)
    kept = packets(got)
    assert slow.dropped == result.packets - len(kept) > 0
    assert sum(p.samples for p in kept) <= 0.1 * RATE
    assert kept[-1].final  # the newest survive, the oldest went
    assert isinstance(got[0], RelayHead)
    assert isinstance(got[-1], RelayEnd)


async def test_new_utterance_replaces_the_current_one_end_before_head() -> None:
    time = FakeTime()
    hub = RelayHub(lead=0.1, clock=time.clock, sleep=time.sleep)
    listener = hub.listen()
    results = []

    async def speak(seconds: float) -> None:
        async with contextlib.aclosing(chunks(ogg_opus(seconds))) as source:
            results.append(await hub.relay_ogg(source))

    async with anyio.create_task_group() as tg:
        tg.start_soon(speak, 2.0)
        while len(listener._queue) < 10:
            await anyio.lowlevel.checkpoint()
        tg.start_soon(speak, 0.2)
    kinds = [(type(m).__name__, getattr(m, "reason", None), m.utterance) for m in drain(listener)
             if not isinstance(m, RelayPacket)]
    assert kinds == [
        ("RelayHead", None, 0), ("RelayEnd", "replaced", 0),
        ("RelayHead", None, 1), ("RelayEnd", "done", 1),
    ]
    assert sorted(r.reason for r in results) == ["done", "replaced"]


async def test_stop_ends_the_utterance_for_everyone() -> None:
    time = FakeTime()
    hub = RelayHub(lead=0.1, clock=time.clock, sleep=time.sleep)
    listener = hub.listen()

    async def source() -> AsyncIterator[bytes]:
        async for chunk in chunks(ogg_opus(1.0)):
            yield chunk
            if time.now > 100.3:
                hub.stop()

    result = await hub.relay_ogg(source())
    got = drain(listener)
    assert drain(hub.listen()) == []  # a cut utterance is not joinable, even with packets kept
    assert result.reason == "stopped"
    assert isinstance(got[-1], RelayEnd)
    assert got[-1].reason == "stopped"
    assert not packets(got)[-1].final


async def test_source_error_ends_the_utterance_then_propagates() -> None:
    hub = RelayHub()
    listener = hub.listen()
    data = ogg_opus(0.3)

    async def broken() -> AsyncIterator[bytes]:
        yield data[: len(data) // 2]
        raise OSError("link down")

    with pytest.raises(OSError, match="link down"):
        await hub.relay_ogg(broken())
    got = drain(listener)
    assert isinstance(got[-1], RelayEnd)
    assert got[-1].reason == "error"


async def test_truncated_stream_ends_as_truncated_and_non_opus_is_refused() -> None:
    hub = RelayHub()
    listener = hub.listen()
    data = ogg_opus(0.3)
    result = await hub.relay_ogg(chunks(data[: len(data) - 30]))
    assert result.reason == "truncated"
    assert isinstance(drain(listener)[-1], RelayEnd)
    with pytest.raises(ProtocolError):
        await hub.relay_ogg(chunks(b"<html>not audio</html>"))


async def test_chained_stream_is_one_utterance_per_link() -> None:
    time = FakeTime()
    hub = RelayHub(clock=time.clock, sleep=time.sleep)
    listener = hub.listen()
    result = await hub.relay_ogg(chunks(ogg_opus(0.2) + ogg_opus(0.3)))
    heads = [m for m in drain(listener) if isinstance(m, RelayHead)]
    assert [h.utterance for h in heads] == list(result.utterances) == [0, 1]


async def test_pcm_is_encoded_and_relayed_to_its_exact_length() -> None:
    time = FakeTime()
    hub = RelayHub(clock=time.clock, sleep=time.sleep)
    listener = hub.listen()
    pcm = (0.2 * np.sin(np.arange(11_111) / 9)).astype(np.float32).reshape(-1, 1)

    async def blocks() -> AsyncIterator[bytes]:
        for i in range(0, len(pcm), 1000):
            yield pcm[i : i + 1000].tobytes()

    await hub.relay_pcm(blocks(), sample_rate=24000, channels=1, text="pcm")
    got = drain(listener)
    head = got[0]
    assert isinstance(head, RelayHead)
    assert isinstance(head.head, OpusHead)
    assert packets(got)[-1].end - head.head.pre_skip == 2 * len(pcm)  # 24 → 48 kHz granules


async def test_closed_hub_ends_listeners_after_their_queue_and_refuses_new_ones() -> None:
    hub = RelayHub()
    listener = hub.listen()
    await hub.relay_ogg(chunks(ogg_opus(0.1)))
    hub.close()
    messages = [m async for m in listener]
    assert isinstance(messages[-1], RelayEnd)
    with pytest.raises(UsageError):
        hub.listen()


async def test_bad_settings_are_refused() -> None:
    with pytest.raises(UsageError):
        RelayHub(lead=0)
    with pytest.raises(UsageError):
        RelayHub(max_queue=-1)
