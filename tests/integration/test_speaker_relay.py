"""``Speaker(output="relay")``: speech routed to a relay's listeners *instead of* the device.

The local OpenAI-compatible server on 127.0.0.1 serves a deterministic voice (`ToneEngine`);
a real `RelayHub` with a listener receives what the speaker publishes through its `RelaySink`.
No audio device is involved: in this process the device edge is made to fail the test if it
is ever opened, and one test runs the speaker in a subprocess whose PulseAudio server does not
exist (where a `Player` cannot open any output). No timing assertions: the relayed audio is
decoded and measured in samples, events are ordered and their positions compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.abc
import numpy as np
import pytest
from support.audio import REPO
from support.collect import Collector
from support.loopback import replaying, serve_asgi
from support.tonevoice import ToneEngine, decode_relayed, spoken_reference

from streamtts.engines import OpenAIEngine
from streamtts.errors import ServerError
from streamtts.events import (
    Event,
    SentenceFinished,
    SentenceStarted,
    SpeechError,
    SpeechInterrupted,
    Underrun,
)
from streamtts.relay import RelayEnd, RelayHead, RelayHub, RelayMessage, RelayPacket, RelaySink
from streamtts.server import create_app
from streamtts.speaker import EDGE_KEEP, SayResult, Speaker
from streamtts.trim import silence_runs

pytestmark = pytest.mark.anyio

RATE = 48000
PAUSE = 0.15
#: Seconds allowed for a whole test's speech (a few seconds of audio paced in real time by the
#: relay); only a hang gets near it.
HANG_GUARD = 30.0


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class FailingSentences:
    """ASGI middleware: logs each speech request's text; a text containing a key of ``fail``
    gets an HTTP 500."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[str] = []
        self.fail: set[str] = set()

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
        if any(key in text for key in self.fail):
            payload = json.dumps({"error": {"message": "synthetic failure"}}).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            return
        replay = replaying(body, receive)
        await self.app(scope, replay, send)


Server = tuple[str, FailingSentences]


@pytest.fixture(scope="module")
def tone_server() -> Iterator[Server]:
    log = FailingSentences(create_app(ToneEngine()))
    with serve_asgi(log) as url:
        yield url + "/v1", log


@pytest.fixture
def server(tone_server: Server) -> Server:
    tone_server[1].requests.clear()
    tone_server[1].fail.clear()
    return tone_server


@pytest.fixture(autouse=True)
def no_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening an audio device fails the test (a relay-only speaker must never do it)."""
    from streamtts.device import DeviceOutput

    async def refuse(self: DeviceOutput) -> None:
        pytest.fail("an audio device was opened")

    monkeypatch.setattr(DeviceOutput, "open", refuse)


def engine(server: Server, **impair: float) -> OpenAIEngine:
    headers = {f"X-Impair-{k.replace('_', '-')}": str(v) for k, v in impair.items()}
    return OpenAIEngine(base_url=server[0], api_key="local", max_retries=0, headers=headers)


class Listener:
    """A hub listener's messages, grouped per utterance."""

    def __init__(self, hub: RelayHub) -> None:
        self.listener = hub.listen()
        self.messages: list[RelayMessage] = []
        self._changed = anyio.Event()

    async def run(self) -> None:
        async for message in self.listener:
            self.messages.append(message)
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_end(self, utterance: int) -> RelayEnd:
        while True:
            for m in self.messages:
                if isinstance(m, RelayEnd) and m.utterance == utterance:
                    return m
            await self._changed.wait()

    def utterance(self, n: int) -> tuple[RelayHead, list[RelayPacket], RelayEnd | None]:
        heads = [m for m in self.messages if isinstance(m, RelayHead) and m.utterance == n]
        packets = [m for m in self.messages if isinstance(m, RelayPacket) and m.utterance == n]
        ends = [m for m in self.messages if isinstance(m, RelayEnd) and m.utterance == n]
        assert len(heads) == 1
        return heads[0], packets, (ends[0] if ends else None)


def speech_gaps(audio: np.ndarray) -> list[float]:
    """Silences of 100 ms or more between the first and the last sound, in seconds."""
    loud = np.flatnonzero(np.abs(audio[:, 0]) > 1e-3)
    assert loud.size, "no sound"
    inside = audio[loud[0] : loud[-1] + 1]
    return [(e - s) / RATE for s, e in silence_runs(inside, RATE, -50.0, 0.1)]


async def test_relay_only_say_relays_every_sentence_in_order_with_the_pauses(
    server: Server,
) -> None:
    sentences = ["The weather is lovely.", "We should go for a walk.", "Bring a jacket."]
    hub = RelayHub()
    listener = Listener(hub)
    collector = Collector()
    async with (
        engine(server) as eng,
        anyio.create_task_group() as tg,
        Speaker(eng, relay=RelaySink(hub), output="relay", pause=PAUSE) as speaker,
    ):
        tg.start_soon(listener.run)
        tg.start_soon(collector.run, speaker)
        await anyio.lowlevel.checkpoint()
        with anyio.fail_after(HANG_GUARD):
            result = await speaker.say(" ".join(sentences))
            end = await listener.wait_end(0)
        tg.cancel_scope.cancel()

    assert sorted(server[1].requests) == sorted(sentences)  # two in flight: either first
    assert not result.interrupted
    assert result.sentences == 3
    assert result.char_offset == len(result.text)
    assert end.reason == "done"
    head, packets, _ = listener.utterance(0)
    assert head.text == " ".join(sentences)
    assert [p.sequence for p in packets] == list(range(len(packets)))
    # The listener got exactly the frames the speaker says were played …
    assert packets[-1].end - head.head.pre_skip == result.frames
    audio = decode_relayed(head, packets)
    assert len(audio) == result.frames
    # … with the sentences joined by the pause (edges of the Opus-coded bursts make the measured
    # silence a little shorter, never longer).
    gaps = speech_gaps(audio)
    assert len(gaps) == len(sentences) - 1, gaps
    for gap in gaps:
        assert gap == pytest.approx(PAUSE, abs=0.012), gaps
    # The events follow the relay's clock, in order, and agree with the audio.
    started = collector.of(SentenceStarted)
    finished = collector.of(SentenceFinished)
    assert [e.sentence for e in started] == [e.sentence for e in finished] == [0, 1, 2]
    joins = [b.position - a.position for a, b in zip(finished, started[1:], strict=False)]
    assert joins == [round((PAUSE - 2 * EDGE_KEEP) * RATE)] * 2
    for s, f in zip(started, finished, strict=True):
        assert f.position - s.position == f.frames
        assert s.time <= f.time
    assert finished[-1].position - started[0].position == result.frames
    assert result.first_sound is not None
    assert result.finished is not None
    assert result.request_sent is not None
    assert result.requested_at <= result.request_sent <= result.first_sound < result.finished
    assert result.underruns == 0


async def test_a_sentence_that_comes_late_is_an_underrun_of_the_relay_clock(
    server: Server,
) -> None:
    # Serial requests: the second sentence is requested once the first has been heard, and the
    # server takes 0.3 s to answer, longer than the pause the listener has left to play.
    hub = RelayHub()
    listener = Listener(hub)
    collector = Collector()
    async with (
        engine(server, first_byte_delay=0.3) as eng,
        anyio.create_task_group() as tg,
        Speaker(eng, relay=RelaySink(hub), output="relay", max_in_flight=1) as speaker,
    ):
        tg.start_soon(listener.run)
        tg.start_soon(collector.run, speaker)
        await anyio.lowlevel.checkpoint()
        with anyio.fail_after(HANG_GUARD):
            result = await speaker.say("The first one here. And the second one.")
            await listener.wait_end(0)
        tg.cancel_scope.cancel()

    underruns = collector.of(Underrun)
    started = collector.of(SentenceStarted)
    finished = collector.of(SentenceFinished)
    # The relay's clock stopped in the pause before the second sentence (what the Opus encoder
    # still held of the pause, less than a frame, was not published yet) and waited.
    at_join = [u for u in underruns if finished[0].position < u.position <= started[1].position]
    assert len(at_join) == 1
    assert at_join[0].silence_ms > 0
    assert at_join[0].source == 0
    assert result.underruns == len(underruns)
    assert result.underrun_ms == pytest.approx(sum(u.silence_ms for u in underruns))
    # The audio itself has no gap but the pause: the wait was silence in time, not in samples.
    head, packets, _ = listener.utterance(0)
    gaps = speech_gaps(decode_relayed(head, packets))
    assert gaps == [pytest.approx(PAUSE, abs=0.012)]


async def test_stop_ends_the_relayed_utterance_sends_no_more_requests_and_stays_usable(
    server: Server,
) -> None:
    sentences = [
        "This is the first sentence of a long answer.",
        "Here the second sentence goes on for quite a while longer than the first.",
        "A third sentence follows.",
        "And a fourth one.",
        "Then a fifth.",
    ]
    hub = RelayHub()
    listener = Listener(hub)
    collector = Collector()
    results: list[SayResult] = []

    async def talk(speaker: Speaker) -> None:
        results.append(await speaker.say(" ".join(sentences)))

    async with (
        engine(server) as eng,
        anyio.create_task_group() as tg,
        Speaker(eng, relay=RelaySink(hub), output="relay", max_in_flight=2) as speaker,
    ):
        tg.start_soon(listener.run)
        tg.start_soon(collector.run, speaker)
        await anyio.lowlevel.checkpoint()
        with anyio.fail_after(HANG_GUARD):
            tg.start_soon(talk, speaker)
            await collector.wait_for(SentenceStarted, sentence=1)
            await anyio.sleep(0.3)
            report = await speaker.stop()
            requests_at_stop = len(server[1].requests)
            stopped = await listener.wait_end(0)
            again = await speaker.say("Still talking.")
            await listener.wait_end(1)
        tg.cancel_scope.cancel()

    assert report is not None
    assert report.reason == "stop"
    assert report.sentence == 1
    assert results[0].interrupted
    assert results[0].frames == report.frames_heard
    assert of_type_once(collector.events, SpeechInterrupted) == report
    # It stopped inside the second sentence, by the relay's clock …
    s1 = collector.of(SentenceStarted, 0)[1]
    assert s1.position < report.frames_heard + collector.of(SentenceStarted, 0)[0].position
    assert len(sentences[0]) < report.char_offset < len(sentences[0]) + len(sentences[1]) + 1
    # … the listeners were told to stop at once, and no further packet of it came …
    assert stopped.reason == "stopped"
    index = listener.messages.index(stopped)
    assert not [
        m for m in listener.messages[index:] if isinstance(m, RelayPacket) and m.utterance == 0
    ]
    # … no request was sent after the stop (one in flight at most was cancelled) …
    assert requests_at_stop < len(sentences)
    assert server[1].requests[requests_at_stop:] == ["Still talking."]
    # … and the speaker goes on: the next say is a new, complete relay utterance.
    assert not again.interrupted
    head, packets, end = listener.utterance(1)
    assert end is not None
    assert end.reason == "done"
    assert head.text == "Still talking."
    assert packets[-1].end - head.head.pre_skip == again.frames


async def test_a_stop_after_the_last_audio_was_published_still_cuts_the_listeners(
    server: Server,
) -> None:
    # One sentence of ~3.1 s: the hub publishes up to 1 s (its lead) ahead of real time, so all
    # of it is out once the on-time listener has played ~2.1 s. Stopped at 2.3 s, the utterance
    # must still end "stopped" for the listeners (they would play the rest after "done").
    text = "A single long sentence that goes on and on, with nothing else to say after it at all."
    hub = RelayHub()
    listener = Listener(hub)
    async with (
        engine(server) as eng,
        anyio.create_task_group() as tg,
        Speaker(eng, relay=RelaySink(hub), output="relay") as speaker,
    ):
        tg.start_soon(listener.run)
        results: list[SayResult] = []

        async def talk() -> None:
            results.append(await speaker.say(text))

        with anyio.fail_after(HANG_GUARD):
            tg.start_soon(talk)
            while True:
                playhead = hub.playhead(0)
                if playhead is not None and playhead.position - playhead.pre_skip >= 2.3 * RATE:
                    break
                await anyio.sleep(0.01)
            report = await speaker.stop()
            end = await listener.wait_end(0)
        tg.cancel_scope.cancel()

    assert end.reason == "stopped"
    assert report is not None
    assert results[0].interrupted
    assert 2.3 * RATE <= report.frames_heard < len(spoken_reference(text))
    assert 0 < report.char_offset < len(text)


def of_type_once(events: list[Any], kind: type[Event]) -> Any:
    found = [e for e in events if isinstance(e, kind)]
    assert len(found) == 1, found
    return found[0]


async def test_a_failing_sentence_gives_its_event_and_the_relay_speaker_stays_usable(
    server: Server,
) -> None:
    sentences = ["The first one is fine.", "So is the second.", "The third fails.", "Never."]
    server[1].fail.add("third")
    hub = RelayHub()
    listener = Listener(hub)
    collector = Collector()
    async with (
        engine(server) as eng,
        anyio.create_task_group() as tg,
        Speaker(eng, relay=RelaySink(hub), output="relay", pause=PAUSE) as speaker,
    ):
        tg.start_soon(listener.run)
        tg.start_soon(collector.run, speaker)
        await anyio.lowlevel.checkpoint()
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(ServerError):
                await speaker.say(" ".join(sentences))
            again = await speaker.say("Still talking.")
            await listener.wait_end(1)
        tg.cancel_scope.cancel()

    errors = collector.of(SpeechError)
    assert [(e.utterance, e.sentence, e.error) for e in errors] == [(0, 2, "ServerError")]
    assert [e.sentence for e in collector.of(SentenceFinished, 0)] == [0, 1]
    assert "Never." not in server[1].requests
    # The listeners heard the two sentences before the failure, whole, and a clean end.
    head, packets, end = listener.utterance(0)
    assert end is not None
    assert end.reason == "done"
    assert len(speech_gaps(decode_relayed(head, packets))) == 1
    assert not again.interrupted
    assert again.utterance == 1
    assert listener.utterance(1)[0].text == "Still talking."


async def test_concurrent_relay_says_are_relayed_one_after_another_in_call_order(
    server: Server,
) -> None:
    texts = ["Hello there.", "One more thing.", "Goodbye now."]
    hub = RelayHub()
    listener = Listener(hub)
    collector = Collector()
    results: dict[int, SayResult] = {}

    async def talk(
        speaker: Speaker, i: int, *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        task_status.started()
        results[i] = await speaker.say(texts[i])

    async with (
        engine(server) as eng,
        anyio.create_task_group() as tg,
        Speaker(eng, relay=RelaySink(hub), output="relay", pause=PAUSE) as speaker,
    ):
        tg.start_soon(listener.run)
        tg.start_soon(collector.run, speaker)
        await anyio.lowlevel.checkpoint()
        with anyio.fail_after(HANG_GUARD):
            async with anyio.create_task_group() as talkers:
                for i in range(len(texts)):
                    await talkers.start(talk, speaker, i)
            await listener.wait_end(2)
        tg.cancel_scope.cancel()

    assert [results[i].utterance for i in range(3)] == [0, 1, 2]
    for i, text in enumerate(texts):
        head, packets, end = listener.utterance(i)
        assert head.text == text
        assert end is not None
        assert end.reason == "done"  # none was cut short by the next
        assert packets[-1].end - head.head.pre_skip == results[i].frames
    # One clock for all: each is heard after the previous one ended, joined by the pause.
    started = collector.of(SentenceStarted)
    finished = collector.of(SentenceFinished)
    assert [e.utterance for e in started] == [e.utterance for e in finished] == [0, 1, 2]
    for i in range(2):
        finished_at = results[i].finished
        first_sound = results[i + 1].first_sound
        assert finished_at is not None
        assert first_sound is not None
        assert finished_at <= first_sound
        assert started[i + 1].position - finished[i].position == round(
            (PAUSE - 2 * EDGE_KEEP) * RATE
        )


# The child: a relay-only speaker with no audio server at all. It proves there is no device
# (a Player cannot open one), speaks, and prints what the listener got as one JSON line.
CHILD = textwrap.dedent(
    """
    import json, sys, anyio
    from support.loopback import serve_asgi
    from support.tonevoice import ToneEngine, decode_relayed, spoken_reference
    from streamtts.engines import OpenAIEngine
    from streamtts.errors import AudioDeviceError, BackendUnavailable
    from streamtts.player import Player
    from streamtts.relay import RelayEnd, RelayHead, RelayHub, RelayPacket, RelaySink
    from streamtts.server import create_app
    from streamtts.speaker import Speaker

    async def main(url):
        try:
            async with Player(sample_rate=48000):
                print("DEVICE OPENED", flush=True)
        except* (AudioDeviceError, BackendUnavailable) as group:
            print("NO DEVICE", *(type(e).__name__ for e in group.exceptions), flush=True)
        hub = RelayHub()
        listener = hub.listen()
        async with OpenAIEngine(base_url=url, api_key="local", max_retries=0) as eng:
            async with Speaker(eng, relay=RelaySink(hub), output="relay") as speaker:
                result = await speaker.say("Nobody here has a sound card. It still speaks.")
        hub.close()
        messages = [m async for m in listener]
        head = next(m for m in messages if isinstance(m, RelayHead))
        packets = [m for m in messages if isinstance(m, RelayPacket)]
        end = next(m for m in messages if isinstance(m, RelayEnd))
        audio = decode_relayed(head, packets)
        print(json.dumps({
            "frames": result.frames, "sentences": result.sentences,
            "relayed": len(audio), "peak": float(abs(audio).max()), "end": end.reason,
        }), flush=True)

    with serve_asgi(create_app(ToneEngine())) as url:
        anyio.run(main, url + "/v1")
    """
)


def test_relay_only_speaks_where_no_audio_server_exists() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PULSE_SINK"}
    env["PULSE_SERVER"] = "unix:/nonexistent/pulse/native"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO)])
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
        timeout=HANG_GUARD * 2, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("NO DEVICE"), lines
    summary = json.loads(lines[-1])
    assert summary["end"] == "done"
    assert summary["sentences"] == 2
    assert summary["relayed"] == summary["frames"] > RATE // 2
    assert summary["peak"] > 0.1
