"""Player API misuse and bad sources: clear errors, raised before any audio device is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamtts.errors import ProtocolError, UnsupportedFormat, UsageError
from streamtts.player import Player

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_play_needs_an_entered_player() -> None:
    with pytest.raises(UsageError, match="async with"):
        await Player().play(b"")


async def test_play_after_close_is_a_usage_error() -> None:
    async with Player() as player:
        pass
    with pytest.raises(UsageError):
        await player.play(b"")


async def test_a_player_is_entered_only_once() -> None:
    player = Player()
    async with player:
        with pytest.raises(UsageError):
            await player.__aenter__()


async def test_an_empty_source_plays_nothing_and_takes_no_device() -> None:
    async with Player() as player:
        result = await player.play(b"")
        assert player.device_output is None
    assert result.frames == 0
    assert result.started_at is None


async def test_html_instead_of_audio_is_a_protocol_error_naming_it() -> None:
    async with Player() as player:
        with pytest.raises(ProtocolError, match="HTML"):
            await player.play(b"<!DOCTYPE html><html><body>captive portal</body></html>")
        assert player.device_output is None


async def test_mp3_is_reported_as_unsupported() -> None:
    async with Player() as player:
        with pytest.raises(UnsupportedFormat, match="MP3"):
            await player.play(b"ID3\x03\x00\x00\x00\x00\x00\x00" + bytes(200))


async def test_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    async with Player() as player:
        with pytest.raises(FileNotFoundError):
            await player.play(tmp_path / "missing.opus")


async def test_a_url_string_is_refused_with_the_way_to_stream_it() -> None:
    async with Player() as player:
        with pytest.raises(UsageError, match=r"client\.stream"):
            await player.play("https://example.invalid/speech.opus")


async def test_unknown_formats_and_latencies_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        Player(latency="fast")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        Player(latency=-1.0)
    async with Player() as player:
        with pytest.raises(UsageError):
            await player.play(b"xx", format="mp3")


async def test_the_event_stream_ends_when_the_player_closes() -> None:
    async with Player() as player:
        events = player.events()
    assert [e async for e in events] == []
    assert [e async for e in player.events()] == []


async def test_a_slow_event_consumer_loses_the_oldest_events_counted() -> None:
    from streamtts.events import SourceFinished

    async with Player() as player:
        events = player.events(maxlen=2)
        for i in range(5):
            player._emit(SourceFinished(float(i), 0, i, 0))
        kept = events.drain()
        assert [e.source for e in kept] == [3, 4]  # type: ignore[attr-defined]
        assert events.dropped == 3
        assert player.stats().events_dropped == 3
