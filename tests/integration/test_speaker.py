"""Speaker end to end: the local OpenAI-compatible server (with network impairment) on
127.0.0.1, a real PortAudio stream into a private PulseAudio null sink, recorded.

No timing assertions: recordings are compared sample for sample with each sentence's own decode,
gaps are measured in samples, and events are ordered. The embedded espeak-ng (1.52) varies its
output from call to call, so the tests that compare samples serve a deterministic synthetic voice
(`ToneEngine`: syllable-like tone bursts framed by OpenAI-like leading and trailing silence,
encoded to Ogg Opus) through the same server; the others use espeak-ng.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import anyio
import numpy as np
import pytest
from support.audio import NullSink, find_offset, first_nonzero
from support.collect import Collector
from support.loopback import replaying, serve_asgi
from support.tonevoice import ToneEngine
from support.tonevoice import spoken_reference as reference

from streamtts.engines import OpenAIEngine
from streamtts.errors import ServerError, StreamInterrupted, StreamTTSError
from streamtts.events import (
    Event,
    RequestSent,
    SentenceFinished,
    SentenceStarted,
    SpeechError,
    SpeechInterrupted,
)
from streamtts.server import create_app
from streamtts.speaker import EDGE_KEEP, SayResult, Speaker
from streamtts.trim import silence_runs

pytestmark = [pytest.mark.device, pytest.mark.anyio]

RATE = 48000
BLOCK = 480  # the device block at 48 kHz (10 ms)
PAUSE = 0.15
#: The stop fades out over 3 ms after the last block handed to PortAudio.
FADE = 144
#: Seconds a test waits after its last ``say()`` before closing the speaker, whose device stream
#: is then aborted: seen here, when closed at once, the last ~5 ms of the last utterance were
#: sometimes not in the recording (the player's end-of-play margin; its own tests cover it).
DRAIN = 0.2
#: PortAudio output latency for the tests that compare samples: a late callback (both cores busy)
#: loses a block and shifts the rest of the recording; 200 ms of device buffer rides that out.
#: (Stop positions are counted in frames handed to PortAudio, so this does not change them.)
DEVICE_LATENCY = 0.2
#: Attempts of a recorded test. A PortAudio underflow (a callback so late that a block is lost:
#: both cores busy with other work), or an underrun of the player (the event loop starved for
#: that long, even though the local server sends faster than real time), makes the recording
#: unusable for a sample comparison, so the attempt is repeated; a test fails if every attempt
#: had such a glitch, and at once on any other difference.
ATTEMPTS = 3


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class SpeechLog:
    """ASGI middleware in front of the server: logs each request's text and fails on demand.

    ``fail`` maps a substring of the input text to ``"500"`` (an error status) or
    ``"disconnect"`` (the body is cut after a few hundred bytes, by the server's impairment).
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[str] = []
        self.fail: dict[str, str] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/audio/speech":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        text = json.loads(body)["input"]
        self.requests.append(text)
        action = next((a for key, a in self.fail.items() if key in text), None)
        if action == "500":
            payload = json.dumps({"error": {"message": "synthetic failure"}}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": payload})
            return
        headers = list(scope["headers"])
        if action == "disconnect":
            headers.append((b"x-impair-disconnect-after", b"400"))
        replay = replaying(body, receive)
        await self.app({**scope, "headers": headers}, replay, send)


Server = tuple[str, SpeechLog]


@pytest.fixture(scope="module")
def espeak_server() -> Iterator[Server]:
    log = SpeechLog(create_app())
    with serve_asgi(log) as url:
        yield url + "/v1", log


@pytest.fixture(scope="module")
def tone_server() -> Iterator[Server]:
    log = SpeechLog(create_app(ToneEngine()))
    with serve_asgi(log) as url:
        yield url + "/v1", log


@pytest.fixture
def server(tone_server: Server) -> Server:
    """The synthetic-voice server, its log cleared."""
    tone_server[1].requests.clear()
    tone_server[1].fail.clear()
    return tone_server


def engine(server: Server, **impair: float) -> OpenAIEngine:
    headers = {f"X-Impair-{k.replace('_', '-')}": str(v) for k, v in impair.items()}
    return OpenAIEngine(base_url=server[0], api_key="local", max_retries=0, headers=headers)


def locate(recording: np.ndarray, ref: np.ndarray) -> int:
    """Where ``ref`` is in the recording; asserts it is there sample for sample."""
    offset = find_offset(recording, ref)
    got = recording[offset : offset + len(ref), 0]
    assert len(got) == len(ref), "the recording ends inside this sentence"
    diff = np.flatnonzero(got != ref)
    assert diff.size == 0, (
        f"{diff.size} of {len(ref)} samples differ from the sentence's own decode, first at "
        f"{int(diff[0])}: max |diff| {float(np.max(np.abs(got - ref))):.3g}"
    )
    return offset


def of_type(events: list[Any], kind: type[Event]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


class Session:
    """One recorded attempt: engine, speaker, event collector, recording of the null sink."""

    def __init__(self, sink: NullSink, server: Server, impair: dict[str, float], **kw: Any):
        self.sink = sink
        self.server = server
        self.impair = impair
        self.kw = kw
        self.collector = Collector()
        self.events = self.collector.events
        self.underflows = 0
        self.recording = np.zeros((0, 1), np.float32)

    async def __aenter__(self) -> Session:
        self.server[1].requests.clear()
        self._stack = AsyncExitStack()
        self._rec = self._stack.enter_context(self.sink.record())
        eng = await self._stack.enter_async_context(engine(self.server, **self.impair))
        kw = {"device_latency": DEVICE_LATENCY, **self.kw}
        self.speaker = await self._stack.enter_async_context(Speaker(eng, **kw))
        self.tg = await self._stack.enter_async_context(anyio.create_task_group())
        self.tg.start_soon(self.collector.run, self.speaker)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        stats = self.speaker.player.stats()
        self.underflows = stats.device_underflows + stats.underruns
        if exc[0] is None:
            await anyio.sleep(DRAIN)
        self.tg.cancel_scope.cancel()
        await self._stack.__aexit__(*exc)
        self.recording = self._rec.stop()


async def attempts(make: Callable[[], Session]) -> AsyncIterator[Session]:
    """Sessions until one was recorded without a device underflow or underrun (`ATTEMPTS`)."""
    for _ in range(ATTEMPTS):
        session = make()
        yield session
        if session.underflows == 0:
            return
    pytest.fail(f"the audio glitched in all {ATTEMPTS} attempts: the machine is too busy")


async def test_a_token_stream_is_heard_before_the_model_has_finished_writing(
    null_sink: NullSink, espeak_server: Server
) -> None:
    text = (
        "Sure, here is the plan for today. First we pack the car with everything we need. "
        "Then we drive to the lake and swim until the sun goes down."
    )
    tokens = [w + " " for w in text.split(" ")]
    tokens[-1] = tokens[-1].rstrip()
    log: list[Any] = []

    async def llm() -> AsyncIterator[str]:
        for i, token in enumerate(tokens):
            await anyio.sleep(1 / 30)  # ~30 tokens per second
            log.append(("token", i))
            yield token

    session = Session(null_sink, espeak_server, {})
    session.collector.events = log  # tokens and events in one list, in the order they happened
    async with session:
        result = await session.speaker.say_stream(llm())

    last_token = log.index(("token", len(tokens) - 1))
    first_request = next(i for i, e in enumerate(log) if isinstance(e, RequestSent))
    first_sound = next(i for i, e in enumerate(log) if isinstance(e, SentenceStarted))
    assert first_request < last_token
    assert first_sound < last_token
    assert result.text == text
    assert result.char_offset == len(text)
    assert not result.interrupted
    assert result.sentences == len(of_type(log, SentenceFinished)) >= 3
    assert [e.sentence for e in of_type(log, SentenceStarted)] == list(range(result.sentences))
    assert result.first_sound is not None
    assert result.finished is not None
    assert first_nonzero(session.recording, 1e-2) is not None


@pytest.mark.parametrize("voice", ["espeak", "tone"])
async def test_sentences_are_joined_by_exactly_the_configured_pause(
    null_sink: NullSink, request: pytest.FixtureRequest, voice: str
) -> None:
    sentences = [
        "The weather is lovely today.",
        "We should go for a walk in the park.",
        "Bring a jacket just in case.",
        "I will meet you at the gate.",
    ]
    server: Server = request.getfixturevalue(f"{voice}_server")
    impair = {"first_byte_delay": 0.3, "realtime": 2.0}
    async for session in attempts(lambda: Session(null_sink, server, impair, pause=PAUSE)):
        async with session:
            result = await session.speaker.say(" ".join(sentences))

    assert result.sentences == len(sentences)
    assert result.underruns == 0
    recording = session.recording
    start, last = first_nonzero(recording, 1e-3), first_nonzero(recording[::-1], 1e-3)
    assert start is not None
    assert last is not None
    end = len(recording) - last
    # Silences of 100 ms or more inside the speech: only the joins (neither voice leaves one that
    # long inside a sentence: the pause is the only one).
    runs = silence_runs(recording[start:end], RATE, threshold_db=-50.0, min_duration=0.1)
    gaps = [(e - s) / RATE for s, e in runs]
    assert len(gaps) == len(sentences) - 1, gaps
    for gap in gaps:
        assert gap == pytest.approx(PAUSE, abs=0.010), gaps


async def test_stop_silences_the_output_within_one_block_and_sends_no_more_requests(
    null_sink: NullSink, server: Server
) -> None:
    sentences = [
        "This is the first sentence of a long answer.",
        "Here the second sentence goes on for quite a while longer than the first one did.",
        "A third sentence follows.",
        "And a fourth one.",
        "Then a fifth.",
        "Finally the sixth sentence ends it.",
    ]
    first = reference(sentences[0])
    async for session in attempts(lambda: Session(null_sink, server, {}, max_in_flight=2)):
        async with session:
            speaker = session.speaker
            idle_tasks = len(anyio.get_running_tasks())
            results: list[SayResult] = []

            async def talk(speaker: Speaker, results: list[SayResult]) -> None:
                results.append(await speaker.say(" ".join(sentences)))

            session.tg.start_soon(talk, speaker, results)
            await session.collector.wait_for(SentenceStarted, sentence=1)
            await anyio.sleep(0.6)  # well inside the second sentence (~4 s long)
            device = speaker.player.device_output
            assert device is not None
            stop_at = device.ring.read_index
            report = await speaker.stop()
            requests_at_stop = len(server[1].requests)
            await anyio.sleep(0.5)
            assert len(anyio.get_running_tasks()) == idle_tasks  # no task left behind
            requests_after = len(server[1].requests)

    events = session.events
    assert report is not None
    assert report.reason == "stop"
    assert report.sentence == 1
    assert results[0].interrupted
    assert results[0].frames == report.frames_heard
    assert len(sentences[0]) < report.char_offset < len(sentences[0]) + len(sentences[1]) + 1
    assert requests_after == requests_at_stop < len(sentences)
    assert of_type(events, SpeechInterrupted) == [report]
    begin = of_type(events, SentenceStarted)[0].position  # frames played at the source's start
    # The recording lines up with the ring: the first sentence is exactly at its place.
    recording = session.recording
    origin = locate(recording, first)
    cut = origin + (stop_at - begin)
    before = recording[cut - RATE // 10 : cut, 0]
    assert np.max(np.abs(before)) > 0.01  # it was speaking when stopped
    after = recording[cut + BLOCK + FADE :, 0]
    assert np.max(np.abs(after)) == 0.0, "sound after the stop + one block"


async def test_concurrent_say_calls_play_in_call_order_without_overlap(
    null_sink: NullSink, server: Server
) -> None:
    texts = [
        "Hello there.",
        "The quick brown fox jumps over the lazy dog.",
        "One more thing before you go.",
    ]
    refs = [reference(t) for t in texts]
    async for session in attempts(lambda: Session(null_sink, server, {})):
        async with session:
            speaker = session.speaker
            results: dict[int, SayResult] = {}

            async def talk(
                speaker: Speaker,
                results: dict[int, SayResult],
                i: int,
                *,
                task_status: anyio.abc.TaskStatus[None],
            ) -> None:
                task_status.started()  # say() queues the utterance before its first await
                results[i] = await speaker.say(texts[i])

            async with anyio.create_task_group() as talkers:
                for i in range(len(texts)):
                    await talkers.start(talk, speaker, results, i)

    assert [results[i].utterance for i in range(3)] == [0, 1, 2]
    offsets = [locate(session.recording, ref) for ref in refs]
    for i in range(len(texts) - 1):
        assert offsets[i] + len(refs[i]) <= offsets[i + 1]
    # Calls that follow one another are joined like sentences: at least the pause between them.
    pause = round((PAUSE - 2 * EDGE_KEEP) * RATE)
    for i in range(len(texts) - 1):
        assert offsets[i + 1] - (offsets[i] + len(refs[i])) >= pause
    # The speaker's own account agrees with the recording.
    started = {e.utterance: e.position for e in of_type(session.events, SentenceStarted)}
    ended = {e.utterance: e.position for e in of_type(session.events, SentenceFinished)}
    for i in range(len(texts) - 1):
        assert started[i + 1] - ended[i] == offsets[i + 1] - (offsets[i] + len(refs[i]))


async def test_cancelling_one_say_task_stops_only_its_utterance(
    null_sink: NullSink, server: Server
) -> None:
    long_text = "This sentence is long and will be cut off by the cancellation of its task."
    after = "The next speaker goes on."
    ref = reference(after)
    async for session in attempts(lambda: Session(null_sink, server, {})):
        async with session:
            speaker = session.speaker
            results: list[SayResult] = []
            cancelled: list[bool] = []

            async def first(
                speaker: Speaker, cancelled: list[bool], *, task_status: anyio.abc.TaskStatus[None]
            ) -> None:
                task_status.started()
                try:
                    await speaker.say(long_text)
                except anyio.get_cancelled_exc_class():
                    cancelled.append(True)
                    raise

            async def second(
                speaker: Speaker,
                results: list[SayResult],
                *,
                task_status: anyio.abc.TaskStatus[None],
            ) -> None:
                task_status.started()
                results.append(await speaker.say(after))

            async with anyio.create_task_group() as talkers, anyio.create_task_group() as inner:
                await inner.start(first, speaker, cancelled)
                await talkers.start(second, speaker, results)
                await session.collector.wait_for(SentenceStarted)
                await anyio.sleep(0.5)
                inner.cancel_scope.cancel()

    assert cancelled == [True]
    interrupted = of_type(session.events, SpeechInterrupted)
    assert [(e.utterance, e.reason) for e in interrupted] == [(0, "cancelled")]
    assert 0 < interrupted[0].char_offset < len(long_text)
    assert not results[0].interrupted
    assert results[0].char_offset == len(after)
    locate(session.recording, ref)  # the second utterance is heard whole


@pytest.mark.parametrize("failure", ["500", "disconnect"])
async def test_a_failing_sentence_raises_after_the_sentences_before_it_played(
    null_sink: NullSink, server: Server, failure: str
) -> None:
    sentences = [
        "The first sentence is fine.",
        "So is the second one.",
        "The third sentence fails.",
        "The fourth is never heard.",
    ]
    server[1].fail["third"] = failure
    refs = [reference(s) for s in sentences[:2]]
    after = reference("Still talking.")
    expected: type[StreamTTSError] = ServerError if failure == "500" else StreamInterrupted
    async for session in attempts(lambda: Session(null_sink, server, {})):
        async with session:
            with pytest.raises(expected):
                await session.speaker.say(" ".join(sentences))
            again = await session.speaker.say("Still talking.")

    errors = of_type(session.events, SpeechError)
    assert [(e.utterance, e.sentence, e.error) for e in errors] == [(0, 2, expected.__name__)]
    finished = [e.sentence for e in of_type(session.events, SentenceFinished) if e.utterance == 0]
    assert finished == [0, 1]
    first, second = (locate(session.recording, ref) for ref in refs)
    assert first + len(refs[0]) <= second
    assert not again.interrupted
    assert again.utterance == 1
    assert locate(session.recording, after) > second


async def test_a_preroll_longer_than_the_request_window_still_gets_its_sentences(
    null_sink: NullSink, server: Server
) -> None:
    # One sentence in flight, but the player waits for 5 s of audio before it starts: the
    # sentences it starves for are requested anyway (else both would wait forever).
    texts = ["First a short one.", "Then another short one.", "And the last."]
    refs = [reference(t) for t in texts]
    make = lambda: Session(null_sink, server, {}, max_in_flight=1, latency=5.0)  # noqa: E731
    async for session in attempts(make):
        async with session:
            with anyio.fail_after(30):
                result = await session.speaker.say(" ".join(texts))

    assert result.sentences == len(texts)
    finished = [e.sentence for e in of_type(session.events, SentenceFinished)]
    assert finished == [0, 1, 2]
    offsets = [locate(session.recording, ref) for ref in refs]
    assert offsets == sorted(offsets)


class ModelCrashed(Exception):
    pass


async def test_an_error_of_the_token_stream_is_raised_after_the_text_before_it_was_spoken(
    null_sink: NullSink, server: Server
) -> None:
    async def llm() -> AsyncIterator[str]:
        for word in ["Hello", "there.", "How", "are", "you", "today?", "I", "am"]:
            await anyio.sleep(0.01)
            yield word + " "
        raise ModelCrashed("the model stopped mid-sentence")

    refs = [reference("Hello there."), reference("How are you today?")]
    async for session in attempts(lambda: Session(null_sink, server, {})):
        async with session:
            with pytest.raises(ModelCrashed):
                await session.speaker.say_stream(llm())

    spoken = [e.text for e in of_type(session.events, SentenceFinished)]
    assert spoken == ["Hello there.", "How are you today?"]  # not the unfinished "I am"
    first, second = (locate(session.recording, ref) for ref in refs)
    assert first + len(refs[0]) < second


async def test_a_speaker_with_a_relay_plays_locally_and_relays_the_same_utterance(
    null_sink: NullSink, server: Server
) -> None:
    from streamtts.relay import RelayEnd, RelayHead, RelayHub, RelayPacket, RelaySink

    texts = ["One for the room.", "And one for the browsers."]
    hub = RelayHub()
    received: list[Any] = []

    async def listen(task_status: anyio.abc.TaskStatus[None]) -> None:
        async with hub.listen() as listener:
            task_status.started()
            async for message in listener:
                received.append(message)
                if isinstance(message, RelayEnd):
                    return

    with null_sink.record() as rec:
        async with engine(server) as eng, Speaker(
            eng, device_latency=DEVICE_LATENCY, relay=RelaySink(hub)
        ) as speaker, anyio.create_task_group() as tg:
            await tg.start(listen)
            with anyio.fail_after(30):
                result = await speaker.say(" ".join(texts))
            await anyio.sleep(DRAIN)
        recording = rec.stop()

    # The device got every sentence sample for sample, in order …
    offsets = [locate(recording, reference(t)) for t in texts]
    assert offsets == sorted(offsets)
    # … and the listeners got the same utterance whole: head, packets in order, a clean end,
    # as many frames as were played locally.
    head, end = received[0], received[-1]
    assert isinstance(head, RelayHead)
    assert head.text == " ".join(texts)
    assert isinstance(end, RelayEnd)
    assert end.reason == "done"
    packets = [m for m in received if isinstance(m, RelayPacket)]
    assert [p.sequence for p in packets] == list(range(len(packets)))
    assert packets[-1].end - head.head.pre_skip == result.frames


async def test_consecutive_says_with_a_relay_are_each_relayed_whole_as_well_as_played(
    null_sink: NullSink, server: Server
) -> None:
    from streamtts.relay import RelayEnd, RelayHead, RelayHub, RelaySink

    # The first is decoded well before it has been relayed (paced to real time): the second
    # comes while the first is still being published.
    texts = ["One for the room. Another one for the room. And a third one.", "And one more."]
    hub = RelayHub()
    received: list[Any] = []

    async def listen(task_status: anyio.abc.TaskStatus[None]) -> None:
        async with hub.listen() as listener:
            task_status.started()
            async for message in listener:
                received.append(message)
                if isinstance(message, RelayEnd) and message.utterance == 1:
                    return

    async with engine(server) as eng, Speaker(
        eng, device_latency=DEVICE_LATENCY, relay=RelaySink(hub)
    ) as speaker, anyio.create_task_group() as tg:
        await tg.start(listen)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as talkers:
                for text in texts:
                    talkers.start_soon(speaker.say, text)
                    await anyio.lowlevel.checkpoint()

    # The second utterance did not cut the first one's relay short: both ended "done", in order.
    heads = [m for m in received if isinstance(m, RelayHead)]
    ends = [m for m in received if isinstance(m, RelayEnd)]
    assert [h.text for h in heads] == texts
    assert [(e.utterance, e.reason) for e in ends] == [(0, "done"), (1, "done")]
    assert received.index(ends[0]) < received.index(heads[1])
