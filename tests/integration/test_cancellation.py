"""Cancelling ``Speaker.say()``, ``Speaker.say_stream()`` and ``Player.play()`` at every phase.

Each case plays through the real stack (the local OpenAI-compatible server on 127.0.0.1 with
network impairment, or a paced raw HTTP server, into a private PulseAudio null sink, recorded)
and cancels the call the moment a phase is reached: before the request, while waiting for the
first byte, during the preroll, while playing, in the pause between sentences, during the next
sentence's request, during the final drain (and for token streams: while the text is still being
written). The phase is recognised by what happened (events, the player's counters, the server's
log), polled every few milliseconds by `support.steps.CancelAt`; nothing waits for a duration.

After the cancellation, every case checks that:

* the cancellation propagated (``cancelled_caught``) and was reported (`SpeechInterrupted` /
  `PlaybackStopped` with ``"cancelled"``);
* nothing was heard after the reported stop (the recording's sound ends within the frames
  reported heard: the device was silenced at the flush, faded, not played on) and the device is
  idle with its buffer dropped;
* every HTTP response was closed: the server saw each request end, and where a response was
  certainly still streaming at the cancel (by construction of the phase), it saw the client
  disconnect;
* no task of the call is left behind, no warning about unclosed resources, no "Task was
  destroyed" error (pytest turns ResourceWarning and unraisable exceptions into errors);
* the same Speaker/Player then plays the next utterance; after leaving the context by
  cancellation, the device is closed, no callback runs any more, and a new one plays.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import numpy as np
import pytest
from support.audio import NullSink, first_nonzero
from support.loopback import serve_asgi
from support.signals import float_wav, header_size, tone
from support.steps import CancelAt, ConnectionLog, SpeechCall, ToneVoice
from support.throttled import ThrottledServer

from streamtts.engines import OpenAIEngine
from streamtts.events import (
    Event,
    FirstByteReceived,
    PlaybackFinished,
    PlaybackStarted,
    PlaybackStopped,
    RequestSent,
    SentenceFinished,
    SentenceStarted,
    SourceFinished,
    SpeechInterrupted,
    Underrun,
)
from streamtts.player import Player
from streamtts.speaker import Speaker

pytestmark = [pytest.mark.device, pytest.mark.anyio]

#: PortAudio output latency here: large enough that a loaded machine rarely underruns (which
#: would not fail these tests, only shift phases), and that the final drain (latency + one
#: block) is a phase long enough to be caught by a 5 ms poll; short enough to keep cases fast.
DEVICE_LATENCY = 0.15

#: Impairment of the responses for the cancelled utterances: a first byte 0.2 s after the
#: request (a phase of its own), then the body at twice real time, so responses still stream
#: while earlier sentences play. (The utterances that check the speaker still works after the
#: cancellation are served at once: they only need to be complete.)
IMPAIR = {"X-Impair-First-Byte-Delay": "0.2", "X-Impair-Realtime": "2.0"}

#: Three sentences: a short one, a long one (its response, requested with the first, streams for
#: ~0.9 s: it is certainly open while the first sentence plays), a short last one.
SENTENCES = [
    "Hi there, my friend.",
    "This second sentence is a good deal longer than the first one was.",
    "Short end now.",
]
TEXT = " ".join(SENTENCES)


#: The utterances spoken after a cancellation, served without impairment.
AGAIN = ("And once more.", "A new speaker.", "Back to work now.")


def impair(text: str) -> dict[str, str]:
    return {} if text in AGAIN else IMPAIR


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def speech_server() -> Iterator[tuple[str, ConnectionLog]]:
    from streamtts.server import create_app

    log = ConnectionLog(create_app(ToneVoice()), impair=impair)
    with serve_asgi(log) as url:
        yield url + "/v1", log


@pytest.fixture
def server(speech_server: tuple[str, ConnectionLog]) -> tuple[str, ConnectionLog]:
    speech_server[1].clear()
    return speech_server


@pytest.fixture
def no_leak_reports(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test on asyncio's "Task was destroyed but it is pending!" and the like."""
    caplog.set_level(logging.ERROR, logger="asyncio")
    yield
    gc.collect()
    errors = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert not errors, errors


#: Hang guard of the context-exit tests, whose cleanup timeouts are raised far above it.
EXIT_GUARD = 30.0


@pytest.fixture
def no_cleanup_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Raise the cleanup timeouts far above `EXIT_GUARD`: cleanup must finish because it is
    done, never because a timeout gave up on it (the poller and the speaker's event watcher are
    cancelled along with the scope around the whole context: nothing may wait for them)."""
    import streamtts.player
    import streamtts.speaker

    monkeypatch.setattr(streamtts.player, "CLOSE_TIMEOUT", 10 * EXIT_GUARD)
    monkeypatch.setattr(streamtts.speaker, "STOP_REPORT_TIMEOUT", 10 * EXIT_GUARD)


def engine(url: str) -> OpenAIEngine:
    return OpenAIEngine(base_url=url, api_key="local", max_retries=0)


class Events:
    """Collects an event stream into a list from a task of its own."""

    def __init__(self) -> None:
        self.items: list[Event] = []

    async def collect(self, stream: Any) -> None:
        async for event in stream:
            self.items.append(event)

    async def catch_up(self) -> None:
        """Let the collecting task take the events already emitted (it is runnable: a few
        scheduler turns are enough; no waiting for time)."""
        for _ in range(10):
            await anyio.lowlevel.checkpoint()

    def has(self, kind: type[Event], **fields: Any) -> bool:
        return any(
            isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())
            for e in self.items
        )

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.items if isinstance(e, kind)]


def sound_span(recording: np.ndarray) -> int:
    """Frames from the first to the last non-zero sample of a recording (0: all silent)."""
    first = first_nonzero(recording)
    if first is None:
        return 0
    last = first_nonzero(recording[::-1])
    assert last is not None
    return len(recording) - last - first


def assert_nothing_sounded_after_the_stop(
    recording: np.ndarray, heard: int, events: Events, player: Player
) -> None:
    """The recording holds no more sound than the frames reported heard.

    On a clean run the whole span from the first to the last sound must fit in ``heard``. An
    underrun (the ring ran dry) or a device underflow (a late callback, on a loaded machine)
    inserts silence into the sink that is no frame of the source, stretching that span: then
    only the sounding frames themselves are counted.
    """
    if events.has(Underrun) or player.stats().device_underflows:
        assert int(np.count_nonzero(np.abs(recording).max(axis=1))) <= heard
    else:
        assert sound_span(recording) <= heard


async def assert_callbacks_stopped(device: Any) -> None:
    assert not device.is_open
    frozen = device.callbacks
    await anyio.sleep(0.05)  # room for a stray callback to show itself; none may
    assert device.callbacks == frozen


# --------------------------------------------------------------------------------- say()


@dataclass(frozen=True)
class SayPhase:
    """Where a ``say()`` is cancelled, and what the server must have seen."""

    name: str
    #: (events so far, the server's log) → cancel now; None: cancelled before say() is called.
    reached: Callable[[Events, ConnectionLog], bool] | None
    #: A response certainly still streams at this phase: the server must see a disconnect.
    disconnect: bool = False
    #: Every response had completed at this phase (nothing left to disconnect).
    all_complete: bool = False
    #: The text spoken (the drain needs no long sentence: a short text keeps the case fast).
    text: str = TEXT


SAY_PHASES = [
    SayPhase("before-the-request", None),
    # The server holds the request (its first byte is 0.2 s away).
    SayPhase("awaiting-the-first-byte",
             lambda ev, log: ev.has(RequestSent, sentence=0) and len(log.snapshot()) > 0,
             disconnect=True),
    SayPhase("preroll", lambda ev, log: ev.has(FirstByteReceived, sentence=0), disconnect=True),
    SayPhase("first-sentence-playing", lambda ev, log: ev.has(SentenceStarted, sentence=0),
             disconnect=True),
    SayPhase("pause-between-sentences", lambda ev, log: ev.has(SentenceFinished, sentence=0)),
    # The server holds the third sentence's request.
    SayPhase("next-sentence-request",
             lambda ev, log: ev.has(RequestSent, sentence=2) and len(log.snapshot()) > 2,
             disconnect=True),
    SayPhase("second-sentence-playing", lambda ev, log: ev.has(SentenceStarted, sentence=1)),
    SayPhase("final-drain", lambda ev, log: ev.has(SentenceFinished, sentence=1),
             all_complete=True, text=f"{SENTENCES[0]} {SENTENCES[2]}"),
]


def check_calls(calls: list[SpeechCall], *, disconnect: bool, all_complete: bool) -> None:
    assert all(c.state in ("complete", "disconnected") for c in calls), calls
    if disconnect:
        assert any(c.state == "disconnected" for c in calls), calls
    if all_complete:
        assert all(c.state == "complete" for c in calls), calls


@pytest.mark.parametrize("phase", SAY_PHASES, ids=lambda p: p.name)
async def test_cancelling_say_at_each_phase_silences_closes_and_leaves_the_speaker_usable(
    null_sink: NullSink, server: tuple[str, ConnectionLog], phase: SayPhase,
    no_leak_reports: None,
) -> None:
    url, log = server
    events = Events()
    with null_sink.record() as rec:
        async with engine(url) as eng, Speaker(eng, device_latency=DEVICE_LATENCY) as speaker:
            device = speaker.player.device_output
            assert device is not None
            async with anyio.create_task_group() as tg:
                tg.start_soon(events.collect, speaker.events())
                await anyio.lowlevel.checkpoint()
                idle_tasks = len(anyio.get_running_tasks())
                scope = anyio.CancelScope()
                if phase.reached is None:
                    scope.cancel()
                else:
                    reached = phase.reached
                    tg.start_soon(CancelAt(scope, lambda: reached(events, log)).watch)
                with scope:
                    await speaker.say(phase.text)
                assert scope.cancelled_caught, "say() returned before the phase was cancelled"
                calls = await log.settled()
                assert len(anyio.get_running_tasks()) == idle_tasks  # none left behind
                recording = rec.stop()
                # The device is idle: its buffer was dropped, the callback plays silence.
                assert not device.playing
                assert device.ring.readable() == 0

                await events.catch_up()
                reports = events.of(SpeechInterrupted)
                assert [r.reason for r in reports] == ["cancelled"]
                heard = reports[0].frames_heard
                assert_nothing_sounded_after_the_stop(recording, heard, events, speaker.player)
                if phase.reached is None:
                    assert calls == []
                    assert heard == 0
                else:
                    check_calls(calls, disconnect=phase.disconnect,
                                all_complete=phase.all_complete)

                # The same speaker speaks the next utterance in full.
                log.clear()
                again = await speaker.say(AGAIN[0])
                assert not again.interrupted
                assert again.frames > 0
                assert [c.state for c in await log.settled()] == ["complete"]
                tg.cancel_scope.cancel()
    await assert_callbacks_stopped(device)


@pytest.mark.parametrize("phase", ["preroll", "first-sentence-playing"])
async def test_leaving_the_speaker_by_cancellation_closes_everything_and_a_new_one_speaks(
    null_sink: NullSink, server: tuple[str, ConnectionLog], phase: str, no_leak_reports: None,
    no_cleanup_timeouts: None,
) -> None:
    url, log = server
    reached = next(p for p in SAY_PHASES if p.name == phase).reached
    assert reached is not None
    events = Events()
    async with engine(url) as eng:
        with anyio.fail_after(EXIT_GUARD), anyio.CancelScope() as scope:
            async with Speaker(eng, device_latency=DEVICE_LATENCY) as speaker, \
                    anyio.create_task_group() as tg:
                device = speaker.player.device_output
                tg.start_soon(events.collect, speaker.events())
                tg.start_soon(CancelAt(scope, lambda: reached(events, log)).watch)
                await speaker.say(TEXT)
        assert scope.cancelled_caught
        assert device is not None
        await assert_callbacks_stopped(device)
        check_calls(await log.settled(), disconnect=True, all_complete=False)

        log.clear()
        async with Speaker(eng, device_latency=DEVICE_LATENCY) as fresh:
            again = await fresh.say(AGAIN[1])
        assert not again.interrupted
        assert again.frames > 0
        assert [c.state for c in await log.settled()] == ["complete"]


# --------------------------------------------------------------------------- say_stream()


@dataclass(frozen=True)
class StreamPhase:
    name: str
    #: (events, tokens yielded so far) → cancel now
    reached: Callable[[Events, int], bool]
    #: The token stream stops after this many tokens and waits (the model still "thinking").
    hold_after: int | None


TOKENS = [w + " " for w in TEXT.split(" ")]

STREAM_PHASES = [
    # Two words: no sentence is complete yet, nothing has been requested.
    StreamPhase("text-still-arriving-before-any-request", lambda ev, n: n >= 2, hold_after=2),
    # The first sentence plays while the model has stopped writing mid-way.
    StreamPhase("first-sentence-playing-while-the-model-writes",
                lambda ev, n: ev.has(SentenceStarted, sentence=0), hold_after=6),
    # The token stream has ended (it is read at once); the second sentence plays.
    StreamPhase("sentence-playing-after-the-stream-ended",
                lambda ev, n: n == len(TOKENS) and ev.has(SentenceStarted, sentence=1),
                hold_after=None),
]


@pytest.mark.parametrize("phase", STREAM_PHASES, ids=lambda p: p.name)
async def test_cancelling_say_stream_ends_the_token_stream_and_leaves_the_speaker_usable(
    null_sink: NullSink, server: tuple[str, ConnectionLog], phase: StreamPhase,
    no_leak_reports: None,
) -> None:
    url, log = server
    events = Events()
    yielded = 0
    finalized = anyio.Event()

    async def llm() -> AsyncGenerator[str, None]:
        nonlocal yielded
        try:
            for i, token in enumerate(TOKENS):
                if phase.hold_after is not None and i == phase.hold_after:
                    await anyio.sleep_forever()  # the model pauses; only a cancel ends this
                await anyio.lowlevel.checkpoint()
                yielded += 1
                yield token
        finally:
            finalized.set()

    with null_sink.record() as rec:
        async with engine(url) as eng, Speaker(eng, device_latency=DEVICE_LATENCY) as speaker:
            device = speaker.player.device_output
            assert device is not None
            async with anyio.create_task_group() as tg:
                tg.start_soon(events.collect, speaker.events())
                scope = anyio.CancelScope()
                tg.start_soon(CancelAt(scope, lambda: phase.reached(events, yielded)).watch)
                tokens = llm()
                with scope:
                    await speaker.say_stream(tokens)
                assert scope.cancelled_caught
                calls = await log.settled()
                recording = rec.stop()
                # The token stream was not left suspended mid-way: the cancellation reached it
                # (it was being iterated) or it had ended.
                if phase.hold_after is not None:
                    assert finalized.is_set()
                await tokens.aclose()  # the caller owns it; closing it now must be harmless
                assert not device.playing
                assert device.ring.readable() == 0
                await events.catch_up()
                reports = events.of(SpeechInterrupted)
                assert [r.reason for r in reports] == ["cancelled"]
                assert_nothing_sounded_after_the_stop(
                    recording, reports[0].frames_heard, events, speaker.player
                )
                if phase.name.startswith("text-still-arriving"):
                    assert calls == []
                check_calls(calls, disconnect=False, all_complete=False)

                log.clear()

                async def short() -> AsyncIterator[str]:
                    for piece in AGAIN[2].split(" "):
                        yield piece + " "

                again = await speaker.say_stream(short())
                assert not again.interrupted
                assert again.frames > 0
                tg.cancel_scope.cancel()
    await assert_callbacks_stopped(device)


# --------------------------------------------------------------------------------- play()


PLAY_SECONDS = 0.8
#: Fixed preroll of the players here: 0.3 s of audio arriving at 2× real time gives a preroll
#: phase of ~0.15 s that a 5 ms poll cannot miss.
PRELOAD = 0.3
#: Where the body of a response that must still be streaming at the cancel is held: after the
#: preroll (playback starts first), before the end. Held for `HOLD` seconds, far longer than any
#: phase takes to be reached and cancelled even on a loaded machine (the body sent at 2× real
#: time would otherwise be complete 0.4 s after its first byte); the client's close ends the
#: hold at once, so it costs nothing.
HOLD_AT = 0.6
HOLD = 60.0


@dataclass
class PlayProgress:
    """What a play() case has reached so far, as its phase conditions see it."""

    events: Events
    player: Player
    server: ThrottledServer
    #: The response's headers are in and play() has it (the server sends the headers at once,
    #: then holds the body: the request being seen by the server does not mean this yet).
    responded: bool = False


@dataclass(frozen=True)
class PlayPhase:
    name: str
    reached: Callable[[PlayProgress], bool] | None
    body_complete: bool  # the server had sent the whole body when cancelled


def _buffering(p: PlayProgress) -> bool:
    return not p.events.has(PlaybackStarted) and p.player.stats().buffered_ms > 0


def _draining(p: PlayProgress) -> bool:
    return p.events.has(SourceFinished) and p.player.stats().buffered_ms == 0


PLAY_PHASES = [
    PlayPhase("before-the-request", None, body_complete=False),
    # The server holds the body for 0.3 s after the headers.
    PlayPhase("awaiting-the-first-byte", lambda p: p.responded, body_complete=False),
    PlayPhase("preroll", _buffering, body_complete=False),
    PlayPhase("playing-while-receiving", lambda p: p.events.has(PlaybackStarted),
              body_complete=False),
    PlayPhase("playing-after-the-body-ended", lambda p: p.events.has(SourceFinished),
              body_complete=True),
    PlayPhase("final-drain", _draining, body_complete=True),
]


@pytest.mark.parametrize("phase", PLAY_PHASES, ids=lambda p: p.name)
async def test_cancelling_play_at_each_phase_silences_closes_the_response_and_the_player_plays_on(
    null_sink: NullSink, phase: PlayPhase, no_leak_reports: None
) -> None:
    x = tone(PLAY_SECONDS)
    body = float_wav(x)
    srv = ThrottledServer.for_audio(body, seconds=PLAY_SECONDS, speed=2.0, burst=0.02,
                                    first_byte_delay=0.3, header=header_size(body, x),
                                    stalls=[] if phase.body_complete else [(HOLD_AT, HOLD)])
    events = Events()
    with srv, null_sink.record() as rec:
        async with Player(device_latency=DEVICE_LATENCY, latency=PRELOAD) as player, \
                httpx.AsyncClient() as client, anyio.create_task_group() as tg:
            tg.start_soon(events.collect, player.events())
            await anyio.lowlevel.checkpoint()
            idle_tasks = len(anyio.get_running_tasks())
            scope = anyio.CancelScope()
            progress = PlayProgress(events, player, srv)
            if phase.reached is None:
                scope.cancel()
            else:
                reached = phase.reached
                tg.start_soon(CancelAt(scope, lambda: reached(progress)).watch)
            response: httpx.Response | None = None
            with scope:
                async with client.stream("GET", srv.url) as response:
                    progress.responded = True
                    await player.play(response)
            assert scope.cancelled_caught, "play() returned before the phase was cancelled"
            if phase.reached is None:
                assert response is None  # cancelled at the request's first await
                assert srv.requests == 0 or srv.finished.wait(5)
            else:
                assert response is not None
                assert response.is_closed
                assert srv.finished.wait(5)  # the server saw the connection end
                assert srv.client_closed_early is not phase.body_complete
            await anyio.lowlevel.checkpoint()
            assert len(anyio.get_running_tasks()) == idle_tasks
            recording = rec.stop()
            device = player.device_output
            if device is not None:
                assert not device.playing
                assert device.ring.readable() == 0
            await events.catch_up()
            stopped = events.of(PlaybackStopped)
            assert not events.has(PlaybackFinished)
            heard = stopped[0].frames_heard if stopped else 0
            assert len(stopped) <= 1
            assert_nothing_sounded_after_the_stop(recording, heard, events, player)
            if phase.name in ("before-the-request", "awaiting-the-first-byte", "preroll"):
                assert heard == 0
                assert first_nonzero(recording) is None

            again = await player.play(float_wav(tone(0.2)))
            assert again.frames == len(tone(0.2))
            tg.cancel_scope.cancel()
    device = player.device_output
    assert device is not None
    await assert_callbacks_stopped(device)


async def test_leaving_the_player_by_cancellation_while_playing_closes_it_and_a_new_one_plays(
    null_sink: NullSink, no_leak_reports: None, no_cleanup_timeouts: None
) -> None:
    x = tone(PLAY_SECONDS)
    body = float_wav(x)
    srv = ThrottledServer.for_audio(body, seconds=PLAY_SECONDS, speed=2.0, burst=0.02,
                                    header=header_size(body, x), stalls=[(HOLD_AT, HOLD)])
    events = Events()
    with srv:
        async with httpx.AsyncClient() as client:
            with anyio.fail_after(EXIT_GUARD), anyio.CancelScope() as scope:
                async with Player(device_latency=DEVICE_LATENCY, latency=PRELOAD) as player, \
                        anyio.create_task_group() as tg:
                    tg.start_soon(events.collect, player.events())
                    tg.start_soon(CancelAt(scope, lambda: events.has(PlaybackStarted)).watch)
                    async with client.stream("GET", srv.url) as response:
                        await player.play(response)
            assert scope.cancelled_caught
            assert response.is_closed
            assert srv.finished.wait(5)
            assert srv.client_closed_early
            device = player.device_output
            assert device is not None
            await assert_callbacks_stopped(device)
            async with Player(device_latency=DEVICE_LATENCY) as fresh:
                again = await fresh.play(float_wav(tone(0.2)))
            assert again.frames == len(tone(0.2))


async def test_a_response_abandoned_mid_body_is_closed_without_leaving_httpx_generators(
    no_leak_reports: None,
) -> None:
    """httpx reads a body through nested async generators; abandoned at a ``yield``, they were
    left for the garbage collector, which trio reports as a ResourceWarning (an error here)."""
    from streamtts._httpclose import close_streamed_response

    srv = ThrottledServer(b"\0" * 200_000, bytes_per_second=200_000, burst_bytes=1000)
    with srv:
        async with httpx.AsyncClient() as client:
            async with client.stream("GET", srv.url) as response:
                body = response.aiter_bytes()
                for _ in range(3):
                    assert await body.__anext__()
                await close_streamed_response(body, response)
                assert response.is_closed
            gc.collect()  # a generator left suspended would be finalized (and reported) now
        assert srv.finished.wait(5)
        assert srv.client_closed_early
