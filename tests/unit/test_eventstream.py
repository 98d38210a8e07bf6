"""The bounded event subscription behind `Player.events` and `Speaker.events`."""

from __future__ import annotations

import anyio
import pytest

from streamtts._eventstream import EventStream
from streamtts.events import Event, PlaybackRecovered

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _event(i: int) -> PlaybackRecovered:
    return PlaybackRecovered(float(i), i, source=0, buffered_ms=0.0)


async def test_a_slow_consumer_loses_the_oldest_events_counted() -> None:
    dropped: list[int] = []
    stream: EventStream[Event] = EventStream(
        3, unsubscribe=lambda s: None, on_drop=lambda: dropped.append(1)
    )
    for i in range(5):
        stream._put(_event(i))
    assert [e.position for e in stream.drain()] == [2, 3, 4]
    assert stream.dropped == 2
    assert len(dropped) == 2


async def test_aclose_ends_a_consumer_waiting_in_async_for() -> None:
    unsubscribed: list[object] = []
    stream: EventStream[Event] = EventStream(8, unsubscribe=unsubscribed.append)
    seen: list[Event] = []

    async def consume() -> None:
        async for event in stream:
            seen.append(event)

    with anyio.fail_after(5):  # hang guard only
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.sleep(0.01)
            stream._put(_event(1))
            await anyio.sleep(0.01)
            await stream.aclose()
    assert [e.position for e in seen] == [1]
    assert unsubscribed == [stream]


async def test_the_owner_ending_the_stream_lets_the_consumer_take_what_is_queued() -> None:
    stream: EventStream[Event] = EventStream(8, unsubscribe=lambda s: None)
    stream._put(_event(1))
    stream._put(_event(2))
    stream._end()
    assert [e.position async for e in stream] == [1, 2]
