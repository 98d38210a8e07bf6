"""`Speaker`: ``await speaker.say(text)`` and ``await speaker.say_stream(llm_tokens)``.

How it works
------------
An *utterance* (one ``say`` or ``say_stream`` call) is cut into sentences by `SentenceSegmenter`
(for a token stream: as the text arrives, the first clause early). Each sentence is fetched by a
task of its own: engine request → format reader (decoded here, not in the player) → channel mix
and resampling to the speaker's rate → `SilenceTrimmer` (the response's leading and trailing
silence removed, `EDGE_KEEP` kept at each edge) → the sentence's buffer. Sentence ``i`` is
requested only while ``i < played + max_in_flight``, where ``played`` counts the sentences already
heard to their end: the requests for the next sentences run while the current one plays, never
more than ``max_in_flight`` sentences are requested and not yet heard (a barge-in wastes little
synthesis), and memory stays bounded. One exception: when the player waits for more audio (its
start policy wants a longer preroll on a slow link, or it recovers from an underrun) while the
source waits for a sentence outside the window, that sentence is requested at once.

The player gets ONE source per utterance: an async iterator of float32 PCM that chains the
sentences' audio strictly in order with ``pause - 2 * EDGE_KEEP`` of zeros between them, so the
silence from the last sound of a sentence to the first sound of the next is the pause (± one
5 ms trimmer frame). One source cannot be reordered and has no device-level gap; a sentence that
arrives too late shows up as the player's `Underrun`.

The iterator records the frame at which each sentence starts and ends in its source; the player's
`PlaybackStarted` tells where in "frames played" (the ring index) the source begins, and a
tracker task turns frames played into `SentenceStarted`/`SentenceFinished` at device time. The
tracker sleeps until the next frame it waits for can have been played (frames to go / rate: the
device cannot play faster), looking again every `TRACK_INTERVAL` only within a block of it; what
changes its targets (a source starting, a sentence's first or last frame entering the source,
the source waiting for an unrequested sentence) wakes it at once.

With ``output="relay"`` there is no player and no device: each utterance's source goes to a
`RelaySink` (Opus to the hub's listeners), one utterance at a time, and "frames played" is the
position of the hub's on-time listener (`RelayHub.playhead`): the relay's real-time pacing clock
plays the part of the device's clock, for the tracker, the events and `SayResult`.

Utterances take turns (FIFO). The next one sends its requests as soon as the previous one has
handed all its audio to the player, while that tail still plays, and calls ``play()`` then: the
player queues the sources back to back, and an utterance that follows one still playing starts
with the same pause as a sentence. Barge-in (`Speaker.stop`) and the cancellation of a
``say`` task cancel that utterance's scope: the cancelled ``play()`` fades out and drops the rest
within one block, and the fetch tasks end with the utterance's task group.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import anyio
import anyio.abc
import anyio.lowlevel
import numpy as np
import numpy.typing as npt

from ._eventstream import EventStream
from .device import DEVICE_LATENCY
from .engines.base import Engine, check_request_format
from .errors import StreamTTSError, TransportError, UsageError
from .events import (
    Event,
    FirstByteReceived,
    PlaybackError,
    PlaybackFinished,
    PlaybackStarted,
    PlaybackStopped,
    RequestSent,
    SentenceFinished,
    SentenceQueued,
    SentenceStarted,
    SpeechError,
    SpeechInterrupted,
    Underrun,
)
from .formats import make_reader
from .opus import SAMPLE_RATES as OPUS_SAMPLE_RATES
from .player import LatencySpec, PlaybackResult, Player
from .resample import Conformer
from .segment import Segment, SentenceSegmenter
from .trim import SilenceTrimmer

if TYPE_CHECKING:
    from .relay import RelayHead, RelayPlayhead, RelaySink

__all__ = ["SayResult", "Speaker", "SpeakerEventStream"]

Frames: TypeAlias = npt.NDArray[np.float32]
#: Where a speaker's audio goes (see `Speaker`).
Output: TypeAlias = Literal["device", "relay", "both"]

#: Default silence between two sentences, in seconds: a natural pause between sentences in read
#: speech (longer sounds hesitant, shorter runs the sentences together).
DEFAULT_PAUSE = 0.15

#: Silence the trimmer keeps at each edge of a sentence's speech, in seconds. 10 ms keeps the
#: attack of a consonant that starts below the trimmer's threshold and the decay of the last
#: sound; the rest of the pause is inserted as exact zeros.
EDGE_KEEP = 0.010

#: Speaking rate assumed before any audio has been measured, characters per second at speed 1:
#: conversational English (~160 words per minute of ~5.5 characters with the space).
DEFAULT_CHARS_PER_SECOND = 15.0

#: Audio (seconds) measured before the learned speaking rate replaces the default: a couple of
#: sentences, so one short exclamation does not skew the estimate.
LEARN_AFTER_SECONDS = 2.0

#: Decoded audio one sentence may hold ahead of its delivery, in seconds. More than the longest
#: sentence the segmenter makes (250 characters, ~17 s), so a response is never held back in
#: practice, while a runaway response cannot fill memory (30 s at 48 kHz mono is 5.8 MB).
MAX_SENTENCE_BUFFER_SECONDS = 30.0

#: The tracker's shortest sleep, in seconds: once a sentence boundary is less than this away,
#: it looks again this often until the device has crossed it. A fraction of the 10 ms device
#: block (like the player's poller), so events are seen within a block of their frame.
TRACK_INTERVAL = 0.005

#: The tracker's longest sleep, in seconds. Whatever moves its targets wakes it at once, and it
#: never sleeps past the time the next one can be reached, so this is only a safety net: short
#: enough that anything overlooked is still seen well within a sentence, long enough to cost
#: nothing (4 wake-ups per second).
TRACK_MAX_INTERVAL = 0.25

#: Events kept per subscriber; a slower consumer loses the oldest ones (counted).
EVENT_QUEUE = 256

#: Rate of the relay's positions: Ogg Opus granules are always 48 kHz samples (RFC 7845).
RELAY_RATE = 48000

#: Seconds of audio the relay's on-time listener has still to play when a relay-only utterance's
#: end goes out. Until then the utterance stays open, so that a barge-in still cuts it in every
#: listener (an end ``"stopped"``; after ``"done"`` they would play what they hold, up to the
#: hub's ``lead``). More than a page's start buffer (40–60 ms) plus a LAN's transit, so no
#: listener runs dry waiting for the last packet; a barge-in within it is heard through.
RELAY_END_LEAD = 0.1

#: Seconds a stopped utterance waits for the player's report of the frames heard (it is emitted
#: before the cancelled ``play()`` returns, so this only bounds a broken player).
STOP_REPORT_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class SayResult:
    """What ``say``/``say_stream`` return once the last sample has been played (or stopped).

    All times are ``time.monotonic()`` values.

    Attributes:
        utterance: Number of the call on this speaker (0, 1, …).
        text: The utterance's text (for ``say_stream``: everything received).
        sample_rate: Rate the frames are counted at.
        frames: Frames of the utterance played at the device (pauses included).
        char_offset: Approximate offset in ``text`` that was heard (``len(text)`` if complete).
        sentences: Sentences spoken, fully or partly.
        interrupted: True if `Speaker.stop` cut it short.
        requested_at: When the call was made.
        request_sent: When the first sentence's request was issued (None: no request).
        first_byte: When the first audio byte arrived (None: none).
        first_sound: When the first sample reached the device (None: nothing played).
        finished: When the last sample left the device, or when it was stopped.
        underruns: Underruns inside the utterance.
        underrun_ms: Total silence they inserted.
    """

    utterance: int
    text: str
    sample_rate: int
    frames: int
    char_offset: int
    sentences: int
    interrupted: bool
    requested_at: float
    request_sent: float | None
    first_byte: float | None
    first_sound: float | None
    finished: float | None
    underruns: int
    underrun_ms: float

    @property
    def heard_text(self) -> str:
        """The part of ``text`` that was heard (approximate when interrupted)."""
        return self.text[: self.char_offset]

    @property
    def duration(self) -> float:
        """Seconds of audio played."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def first_sound_latency(self) -> float | None:
        """Seconds from the call to the first sample at the device."""
        return None if self.first_sound is None else self.first_sound - self.requested_at


#: The speaker's event subscription (the same bounded stream as the player's).
SpeakerEventStream = EventStream


class _Signal:
    """A re-armable wake-up: `wait` returns at the next `fire` (spurious wake-ups are fine)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait(self) -> None:
        await self._event.wait()


@dataclass(eq=False)
class _Sentence:
    """One sentence of an utterance: its request, its decoded audio, its place in the source."""

    index: int
    text: str  # sent to the engine
    char_start: int
    char_end: int
    blocks: deque[Frames] = field(default_factory=deque)
    buffered: int = 0  # frames in ``blocks``
    frames_in: int = 0  # frames decoded (after trimming) so far
    done: bool = False
    error: BaseException | None = None
    changed: _Signal = field(default_factory=_Signal)
    request_sent: float | None = None
    first_byte: float | None = None
    src_start: int | None = None  # frame offset of its first frame in the utterance's source
    src_end: int | None = None  # offset after its last frame, once delivered in full
    passed: bool = False  # the source has moved past it
    played: bool = False  # its last sample has been played (SentenceFinished)


@dataclass(eq=False)
class _Utterance:
    """Bookkeeping of one ``say``/``say_stream`` call."""

    index: int
    requested_at: float
    text: str = ""
    sentences: list[_Sentence] = field(default_factory=list)
    closed: bool = False  # no more sentences will come
    changed: _Signal = field(default_factory=_Signal)
    played: int = 0  # sentences played to their end (or passed without audio), from the start
    requested: int = 0  # sentences whose request has been started
    waiting: int | None = None  # the source waits for this sentence, not requested yet
    needed: int = 0  # sentences that must be requested: the player starves without them
    failed: _Sentence | None = None
    feed_error: BaseException | None = None
    turn: anyio.Event = field(default_factory=anyio.Event)
    released: bool = False
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    stop_requested: bool = False
    source: int | None = None  # the player's number of its play() call
    begin: int | None = None  # frames played when its source began (PlaybackStarted)
    first_sound: float | None = None  # device time of its first sentence's first frame
    underruns: int = 0
    underrun_ms: float = 0.0
    heard: int | None = None  # frames heard when stopped (PlaybackStopped)
    report: anyio.Event = field(default_factory=anyio.Event)  # player's final word on the source
    next_start: int = 0  # tracker: next sentence whose start is to be reported
    next_end: int = 0  # tracker: next sentence whose end is to be reported
    finished: anyio.Event = field(default_factory=anyio.Event)  # the call has returned
    interruption: SpeechInterrupted | None = None


class Speaker:
    """Speaks text and LLM token streams through one output stream, sentence by sentence.

    Use it as an async context manager (asyncio or trio)::

        async with Speaker(voice="alloy") as speaker:
            await speaker.say("Hello there. How can I help?")
            await speaker.say_stream(llm_tokens())     # async iterable of text pieces

    Concurrent ``say`` calls play one after another in call order, never overlapping.
    `stop` (barge-in) silences everything within one device block.

    Args:
        engine: The speech engine (default: `streamtts.engines.default_engine`, closed with the
            speaker; an engine passed in is left open).
        voice: Voice name for every request (None: the engine's default).
        model: Model name (HTTP engines; None: the engine's default).
        format: The ``response_format`` requested: ``"opus"`` (default), ``"wav"`` or ``"pcm"``.
        speed: Speaking rate, 1.0 normal (None: the engine's default).
        instructions: Style instructions for models that take them.
        device: Output device index or (part of its) name; None for the default output.
        latency: The player's start policy (``"adaptive"``, ``"low"``, seconds, a `StartPolicy`).
        max_in_flight: Sentences requested and not yet heard to their end, the one playing
            included (>= 1). With 2, the first two sentences are requested at once and each
            further one as the sentence before it starts playing; with 1, each sentence is
            requested after the previous one has been heard (serial requests). A sentence the
            player is starving for is requested regardless.
        pause: Silence between two sentences, in seconds.
        trim: Trim each response's leading and trailing silence (else the responses are played
            as they come, with ``pause`` of zeros added between them).
        sample_rate: Device rate to open (the speaker's PCM rate; Opus decodes natively at 48 kHz).
        channels: Device channels (speech is mono; other layouts are mixed to this).
        device_latency: PortAudio's output latency (seconds, ``"low"`` or ``"high"``).
        blocksize: Frames per device callback (None: 10 ms).
        early_first: Speak the first clause of a token stream early (see `SentenceSegmenter`).
        max_chars: Sentences longer than this are split (see `SentenceSegmenter`).
        relay: A `RelaySink` on the hub of a browser relay (served by ``streamtts serve`` or the
            app's own relay routes): its listeners hear what is spoken (see ``output``).
        output: Where the speech goes: ``"device"`` (the local output), ``"relay"`` (only the
            ``relay``'s listeners: no audio device is opened, for a server without a sound
            card) or ``"both"``. None (default): ``"both"`` with a ``relay``, else
            ``"device"``. With ``"relay"``, ``say`` returns once the relay's on-time listener
            (`RelayHub.playhead`) has heard the last sample, event positions and `SayResult`
            times follow that clock (an `Underrun`: it ran out of audio), utterances are relayed
            one after another (each its own relay utterance), and the device options
            (``device``, ``latency``, ``device_latency``, ``blocksize``) are not used.

    Raises:
        UsageError: An argument is out of range or names an unsupported format, or ``output``
            and ``relay``/``device`` disagree.
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        voice: str | None = None,
        model: str | None = None,
        format: str = "opus",
        speed: float | None = None,
        instructions: str | None = None,
        device: int | str | None = None,
        latency: LatencySpec = "adaptive",
        max_in_flight: int = 2,
        pause: float = DEFAULT_PAUSE,
        trim: bool = True,
        sample_rate: int = 48000,
        channels: int = 1,
        device_latency: float | str = DEVICE_LATENCY,
        blocksize: int | None = None,
        early_first: bool = True,
        max_chars: int = 250,
        relay: RelaySink | None = None,
        output: Output | None = None,
    ) -> None:
        if output is None:
            output = "device" if relay is None else "both"
        if output not in ("device", "relay", "both"):
            raise UsageError(f"output must be 'device', 'relay' or 'both', not {output!r}")
        if output != "device" and relay is None:
            raise UsageError(f"output={output!r} needs relay=RelaySink(hub)")
        if output == "device" and relay is not None:
            raise UsageError("relay= was given with output='device': use output='both'")
        if output == "relay" and device is not None:
            raise UsageError("output='relay' opens no device: do not pass device=")
        if output != "device" and channels not in (1, 2):
            raise UsageError(f"the relay carries 1 or 2 channels, not {channels}")
        if max_in_flight < 1:
            raise UsageError(f"max_in_flight must be at least 1, not {max_in_flight}")
        if not pause >= 0:
            raise UsageError(f"pause must be >= 0 seconds, not {pause!r}")
        if sample_rate <= 0 or channels <= 0:
            raise UsageError("sample_rate and channels must be positive")
        if speed is not None and not speed > 0:
            raise UsageError(f"speed must be > 0, not {speed!r}")
        self.format = check_request_format(format)
        self.voice = voice
        self.model = model
        self.speed = speed
        self.instructions = instructions
        self.max_in_flight = max_in_flight
        self.pause = pause
        self.trim = trim
        self._engine = engine
        self._own_engine = engine is None
        self._segmenter_options: dict[str, Any] = {
            "early_first": early_first,
            "max_chars": max_chars,
        }
        self.output: Output = output
        self._player: Player | None = None
        self._relay_out: _RelayOutput | None = None
        if output == "relay":
            assert relay is not None
            self._relay_out = _RelayOutput(relay, sample_rate)
        else:
            self._player = Player(
                device,
                latency=latency,
                blocksize=blocksize,
                device_latency=device_latency,
                sample_rate=sample_rate,
                channels=channels,
            )
        self._rate = sample_rate
        self._channels = channels
        self._relay = relay if output == "both" else None
        self._edge = min(EDGE_KEEP, pause / 2) if trim else 0.0
        self._stack: contextlib.AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._entered = False
        self._closed = False
        self._subscribers: list[EventStream[Event]] = []
        self._next_utterance = 0
        self._next_source = 0
        self._line: deque[_Utterance] = deque()  # utterances waiting for / holding the turn
        self._running: list[_Utterance] = []  # every call in progress (for stop)
        self._by_source: dict[int, _Utterance] = {}  # utterances whose source the player has
        self._track_wake = _Signal()
        self._player_events: EventStream[Event] | None = None
        self._learned_chars = 0
        self._learned_seconds = 0.0

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Speaker:
        if self._entered:
            raise UsageError("a Speaker can be entered only once")
        self._entered = True
        async with contextlib.AsyncExitStack() as stack:
            if self._engine is None:
                from .engines import default_engine

                self._engine = default_engine()
            if self._own_engine:
                stack.push_async_callback(self._engine.aclose)
            player = self._player
            if player is not None:
                await stack.enter_async_context(player)
                self._rate = player.sample_rate or self._rate
                device = player.device_output
                if device is not None:
                    self._channels = device.channels
                self._player_events = player.events(maxlen=4 * EVENT_QUEUE)
            tg = anyio.create_task_group()
            await stack.enter_async_context(tg)
            self._tg = tg
            if self._player_events is not None:
                tg.start_soon(self._watch_player, self._player_events)
            tg.start_soon(self._track_forever)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop speaking, close the device (and the engine if the speaker made it). Idempotent."""
        if self._closed or self._stack is None:
            self._closed = True
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            for utt in list(self._running):
                utt.stop_requested = True
                utt.scope.cancel()
            with anyio.move_on_after(STOP_REPORT_TIMEOUT):
                for utt in list(self._running):
                    await utt.finished.wait()
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
            for sub in list(self._subscribers):
                sub._end()
        # Outside the shield: the task groups in the stack must be left in the order entered
        # (each closes itself shielded).
        stack, self._stack = self._stack, None
        await stack.aclose()

    @property
    def sample_rate(self) -> int:
        """The rate the speaker plays at (the device's, once open)."""
        return self._rate

    @property
    def player(self) -> Player:
        """The `Player` inside (its stats and events; do not call its ``play`` directly).

        Raises:
            UsageError: The speaker has ``output="relay"``: it has no player.
        """
        if self._player is None:
            raise UsageError("a Speaker with output='relay' has no Player: no device is opened")
        return self._player

    def events(self, maxlen: int = EVENT_QUEUE) -> EventStream[Event]:
        """Subscribe to the speaker's events from now on (``async for e in speaker.events()``).

        Sentence events (`SentenceQueued`, `RequestSent`, `FirstByteReceived`,
        `SentenceStarted`, `SentenceFinished`, `SpeechInterrupted`, `SpeechError`) and the
        player's `Underrun` events.
        """
        stream: EventStream[Event] = EventStream(maxlen, unsubscribe=self._unsubscribe)
        if self._closed:
            stream._end()
        else:
            self._subscribers.append(stream)
        return stream

    def _unsubscribe(self, stream: EventStream[Event]) -> None:
        if stream in self._subscribers:
            self._subscribers.remove(stream)

    def _emit(self, event: Event) -> None:
        for sub in self._subscribers:
            sub._put(event)

    def _frames_played(self) -> int:
        """Frames of audio played so far: the ring's read index, or the relay's clock."""
        if self._relay_out is not None:
            return self._relay_out.frames_played()
        device = self._player.device_output if self._player is not None else None
        return device.ring.read_index if device is not None else 0

    # ------------------------------------------------------------------ public API
    async def say(self, text: str) -> SayResult:
        """Speak ``text``; return once its last sample has been played at the device.

        Calls from several tasks are spoken one after another in call order.

        Args:
            text: The text (markdown is not read aloud; long texts are cut into sentences).

        Returns:
            Timings, underruns and what was heard; ``interrupted`` if `stop` cut it short.

        Raises:
            APIError: A sentence's request failed (after the sentences before it were played).
            TransportError: A sentence's stream failed (after playing what had arrived).
            UsageError: The speaker is not open.
        """
        utt = self._new_utterance()
        segmenter = SentenceSegmenter(**self._segmenter_options)
        utt.text = text
        for segment in (*segmenter.feed(text), *segmenter.close()):
            self._add_sentence(utt, segment)
        utt.closed = True
        return await self._run(utt, None)

    async def say_stream(self, chunks: AsyncIterable[str] | Iterable[str]) -> SayResult:
        """Speak text while it is being written (an LLM's token stream).

        The text is cut into sentences as it arrives; the first clause is spoken early, the
        requests for the next sentences are sent while the current one plays.

        Args:
            chunks: An async (or plain) iterable of text pieces. It is not closed by the speaker.

        Returns:
            As `say`, once the last sample has been played.

        Raises:
            Exception: What ``chunks`` raised (after speaking the sentences before the error),
                and the errors of `say`.
        """
        utt = self._new_utterance()
        return await self._run(utt, chunks)

    async def stop(self) -> SpeechInterrupted | None:
        """Barge-in: silence the output within one block, drop every queued utterance.

        Requests in flight are cancelled and no new ones are sent; the interrupted ``say`` calls
        return with ``interrupted=True``. The speaker stays usable.

        Returns:
            The report of the utterance that was playing (frames and characters heard), or
            None if nothing was being spoken.
        """
        victims = list(self._running)
        for utt in victims:
            utt.stop_requested = True
            utt.scope.cancel()
        for utt in victims:
            await utt.finished.wait()
        reports = [u.interruption for u in victims if u.interruption is not None]
        for report in reports:
            if report.frames_heard > 0:
                return report
        return reports[0] if reports else None

    # ------------------------------------------------------------------ utterances
    def _new_utterance(self) -> _Utterance:
        if not self._entered or self._closed or self._stack is None:
            raise UsageError("say() needs an open Speaker: use 'async with Speaker() as s'")
        utt = _Utterance(self._next_utterance, time.monotonic())
        self._next_utterance += 1
        return utt

    def _add_sentence(self, utt: _Utterance, segment: Segment) -> None:
        text = segment.speakable
        if not text:
            return
        sentence = _Sentence(len(utt.sentences), text, segment.start, segment.end)
        utt.sentences.append(sentence)
        self._emit(
            SentenceQueued(
                time.monotonic(),
                self._frames_played(),
                utt.index,
                sentence.index,
                text,
                segment.start,
                segment.end,
            )
        )
        utt.changed.fire()

    def _take_turn(self, utt: _Utterance) -> None:
        self._line.append(utt)
        if self._line[0] is utt:
            utt.turn.set()

    def _release_turn(self, utt: _Utterance) -> None:
        """Let the next utterance start (idempotent; callable from any task)."""
        if utt.released:
            return
        utt.released = True
        if utt in self._line:
            self._line.remove(utt)
        if self._line:
            self._line[0].turn.set()

    async def _run(
        self, utt: _Utterance, chunks: AsyncIterable[str] | Iterable[str] | None
    ) -> SayResult:
        self._running.append(utt)
        self._take_turn(utt)
        result: PlaybackResult | None = None
        failure: BaseException | None = None
        try:
            with utt.scope:
                await utt.turn.wait()
                async with anyio.create_task_group() as tg:
                    try:
                        if chunks is not None:
                            tg.start_soon(self._feed, utt, chunks)
                        tg.start_soon(self._schedule, utt, tg)
                        while not utt.sentences and not utt.closed:
                            await utt.changed.wait()
                        if utt.sentences:
                            result = await self._play(utt)
                    except Exception as exc:  # raised below, outside the task group
                        failure = exc
                    tg.cancel_scope.cancel()  # requests left after an error
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._interrupted(utt, "cancelled")
            raise
        finally:
            self._release_turn(utt)
            if utt.stop_requested and result is None and failure is None:
                with anyio.CancelScope(shield=True):
                    await self._interrupted(utt, "stop")
            self._finish(utt)
        if utt.interruption is not None:
            return self._result(utt, None, utt.interruption)
        if failure is not None:
            raise failure
        if utt.failed is not None and utt.failed.error is not None:
            raise utt.failed.error
        if utt.feed_error is not None:
            raise utt.feed_error
        return self._result(utt, result, None)

    def _finish(self, utt: _Utterance) -> None:
        if utt.source is not None:
            self._track_once()
            self._by_source.pop(utt.source, None)
        if utt in self._running:
            self._running.remove(utt)
        utt.finished.set()

    async def _play(self, utt: _Utterance) -> PlaybackResult:
        chars = sum(len(s.text) for s in utt.sentences)
        expected = self._estimate(chars) + self.pause * (len(utt.sentences) - 1)
        utt.source = self._next_source  # the player numbers its play() calls in call order
        self._next_source += 1
        self._by_source[utt.source] = utt
        self._track_wake.fire()
        # Closed here whatever the output did with it: its cleanup releases the turn.
        async with contextlib.aclosing(self._pcm_source(utt)) as source:
            if self._relay_out is not None:
                result = await self._relay_out.play(self, utt, source)
                if utt.heard is not None:  # stopped at the hub (RelayHub.stop, a new publisher)
                    await self._interrupted(utt, "stop")
                return result
            if self._relay is None:
                return await self._play_source(source, expected)
            async with self._relay.tap(
                source,
                pcm_rate=self._rate,
                pcm_channels=self._channels,
                text=utt.text,
                voice=self.voice,
            ) as tapped:
                return await self._play_source(tapped, expected)

    async def _play_source(self, source: AsyncIterator[bytes], expected: float) -> PlaybackResult:
        assert self._player is not None
        return await self._player.play(
            source,
            format="pcm",
            pcm_format="f32le",
            pcm_rate=self._rate,
            pcm_channels=self._channels,
            expected_duration=expected,
        )

    async def _interrupted(self, utt: _Utterance, reason: str) -> SpeechInterrupted:
        """Work out what was heard of a stopped utterance and report it (run shielded)."""
        if utt.interruption is not None:
            return utt.interruption
        if utt.source is not None and self._player_events is not None:
            # The player's report is already queued when its cancelled play() returns: take it
            # here, as the watcher task may itself be cancelled (the speaker's scope was).
            for event in self._player_events.drain():
                self._on_player_event(event)
        if utt.source is not None:
            with anyio.move_on_after(STOP_REPORT_TIMEOUT):
                await utt.report.wait()
        heard = utt.heard
        if heard is None:
            heard = 0 if utt.begin is None else max(0, self._frames_played() - utt.begin)
        self._track_once()
        sentence, offset = self._position_in_text(utt, heard)
        report = SpeechInterrupted(
            time.monotonic(),
            self._frames_played(),
            utt.index,
            -1 if sentence is None else sentence.index,
            "" if sentence is None else sentence.text,
            heard,
            offset,
            reason,
        )
        utt.interruption = report
        self._emit(report)
        return report

    def _position_in_text(self, utt: _Utterance, heard: int) -> tuple[_Sentence | None, int]:
        """The sentence playing at source frame ``heard`` and the text offset reached."""
        current: _Sentence | None = None
        offset = 0
        for s in utt.sentences:
            if s.src_start is None or heard < s.src_start:
                break
            current = s
            if s.src_end is not None and heard >= s.src_end:
                offset = s.char_end
                continue
            total = s.frames_in if s.done else max(s.frames_in, self._estimate_frames(s))
            fraction = min(1.0, (heard - s.src_start) / max(1, total))
            offset = s.char_start + round(fraction * (s.char_end - s.char_start))
            break
        return current, offset

    def _result(
        self, utt: _Utterance, played: PlaybackResult | None, report: SpeechInterrupted | None
    ) -> SayResult:
        sent = [s.request_sent for s in utt.sentences if s.request_sent is not None]
        first = [s.first_byte for s in utt.sentences if s.first_byte is not None]
        spoken = sum(1 for s in utt.sentences if s.src_start is not None)
        if report is not None:
            frames, offset = report.frames_heard, report.char_offset
            first_sound = utt.first_sound if frames > 0 else None
            finished: float | None = report.time
            spoken = sum(
                1 for s in utt.sentences if s.src_start is not None and s.src_start < frames
            )
        else:
            frames = played.frames if played is not None else 0
            offset = len(utt.text) if utt.failed is None else utt.failed.char_start
            first_sound = utt.first_sound
            if first_sound is None and played is not None:
                first_sound = played.started_at
            finished = played.finished_at if played is not None else time.monotonic()
        return SayResult(
            utterance=utt.index,
            text=utt.text,
            sample_rate=self._rate,
            frames=frames,
            char_offset=offset,
            sentences=spoken,
            interrupted=report is not None,
            requested_at=utt.requested_at,
            request_sent=min(sent) if sent else None,
            first_byte=min(first) if first else None,
            first_sound=first_sound,
            finished=finished,
            underruns=utt.underruns,
            underrun_ms=utt.underrun_ms,
        )

    # ------------------------------------------------------------------ text in
    async def _feed(self, utt: _Utterance, chunks: AsyncIterable[str] | Iterable[str]) -> None:
        """Read the token stream, cut it into sentences as it comes (a child task)."""
        segmenter = SentenceSegmenter(**self._segmenter_options)
        try:
            if isinstance(chunks, AsyncIterable):
                async for piece in chunks:
                    self._feed_piece(utt, segmenter, piece)
            else:
                for piece in chunks:
                    self._feed_piece(utt, segmenter, piece)
                    await anyio.lowlevel.checkpoint()
            for segment in segmenter.close():
                self._add_sentence(utt, segment)
        except Exception as exc:  # raised by say_stream once the sentences before it played
            utt.feed_error = exc
        finally:
            utt.closed = True
            utt.changed.fire()

    def _feed_piece(self, utt: _Utterance, segmenter: SentenceSegmenter, piece: str) -> None:
        if not isinstance(piece, str):
            raise UsageError(f"say_stream() takes text pieces, not {type(piece).__name__}")
        utt.text += piece
        for segment in segmenter.feed(piece):
            self._add_sentence(utt, segment)

    # ------------------------------------------------------------------ requests
    async def _schedule(self, utt: _Utterance, tg: anyio.abc.TaskGroup) -> None:
        """Start each sentence's request once it is within ``max_in_flight`` of delivery."""
        while utt.failed is None:
            window = max(utt.played + self.max_in_flight, utt.needed)
            while utt.requested < min(len(utt.sentences), window):
                tg.start_soon(self._fetch, utt, utt.sentences[utt.requested])
                utt.requested += 1
            if utt.closed and utt.requested >= len(utt.sentences):
                return
            await utt.changed.wait()

    async def _fetch(self, utt: _Utterance, s: _Sentence) -> None:
        """Request one sentence and decode, convert and trim its audio into its buffer."""
        assert self._engine is not None
        limit = round(MAX_SENTENCE_BUFFER_SECONDS * self._rate)
        s.request_sent = time.monotonic()
        self._emit(RequestSent(s.request_sent, self._frames_played(), utt.index, s.index, s.text))
        try:
            async with self._engine.stream(
                s.text,
                voice=self.voice,
                format=self.format,
                speed=self.speed,
                instructions=self.instructions,
                model=self.model,
            ) as audio:
                native = self._rate if self._rate in OPUS_SAMPLE_RATES else 48000
                reader = make_reader(
                    audio.format,
                    sample_rate=native,
                    pcm_rate=audio.sample_rate or 24000,
                    pcm_channels=audio.channels or 1,
                    pcm_format=audio.sample_format or "s16le",
                )
                conv: Conformer | None = None

                def conformer(block: Frames) -> Conformer:
                    """The response's layout (known from its first block) to the speaker's."""
                    return Conformer(
                        reader.sample_rate or native,
                        reader.channels or block.shape[1],
                        self._rate,
                        self._channels,
                    )

                trimmer = self._make_trimmer()
                dropped: TransportError | None = None
                try:
                    async for chunk in audio.aiter_bytes():
                        if s.first_byte is None:
                            s.first_byte = audio.first_byte or time.monotonic()
                            self._emit(
                                FirstByteReceived(
                                    s.first_byte,
                                    self._frames_played(),
                                    utt.index,
                                    s.index,
                                    s.text,
                                    1000.0 * (s.first_byte - s.request_sent),
                                )
                            )
                        for block in reader.feed(chunk):
                            conv = conv or conformer(block)
                            self._put(s, conv.process(block), trimmer)
                        while s.buffered > limit:
                            await s.changed.wait()
                        await anyio.lowlevel.checkpoint()
                except TransportError as exc:
                    # The connection failed mid-sentence: what arrived is still spoken to its
                    # last sample (the reader, resampler and trimmer hold a few ms back at any
                    # moment), then the sentence fails.
                    dropped = exc
                for block in reader.close():
                    conv = conv or conformer(block)
                    self._put(s, conv.process(block), trimmer)
                if conv is not None:
                    self._put(s, conv.flush(), trimmer)
                if trimmer is not None:
                    self._append(s, trimmer.flush())
                if dropped is not None:
                    raise dropped
            if s.frames_in:
                self._learned_chars += len(s.text)
                self._learned_seconds += s.frames_in / self._rate
        except Exception as exc:
            s.error = exc if isinstance(exc, StreamTTSError) else _as_error(exc)
        finally:
            s.done = True
            s.changed.fire()

    def _make_trimmer(self) -> SilenceTrimmer | None:
        if not self.trim:
            return None
        return SilenceTrimmer(
            self._rate, self._channels, pause=2 * self._edge, lead_keep=self._edge
        )

    def _put(self, s: _Sentence, block: Frames, trimmer: SilenceTrimmer | None) -> None:
        self._append(s, trimmer.process(block) if trimmer is not None else block)

    def _append(self, s: _Sentence, block: Frames) -> None:
        if block.shape[0] == 0:
            return
        s.blocks.append(np.ascontiguousarray(block, dtype=np.float32))
        s.buffered += block.shape[0]
        s.frames_in += block.shape[0]
        s.changed.fire()

    # ------------------------------------------------------------------ audio out
    async def _pcm_source(self, utt: _Utterance) -> AsyncGenerator[bytes, None]:
        """The utterance as one PCM stream: its sentences in order, the pause between them."""
        gap = round((self.pause - 2 * self._edge) * self._rate)
        silence = np.zeros((gap, self._channels), dtype=np.float32).tobytes()
        offset = 0
        try:
            k = 0
            while True:
                while k >= len(utt.sentences) and not utt.closed:
                    await utt.changed.wait()
                if k >= len(utt.sentences):
                    return
                s = utt.sentences[k]
                if offset and gap:  # between two sentences (not before the first sound)
                    yield silence
                    offset += gap
                while True:
                    if s.blocks:
                        if not offset and gap and self._follows_previous(utt):
                            yield silence  # the previous say() still plays: join like sentences
                            offset += gap
                        block = s.blocks.popleft()
                        s.buffered -= block.shape[0]
                        s.changed.fire()
                        if s.src_start is None:
                            s.src_start = offset
                            self._track_wake.fire()  # a new boundary to watch
                        offset += block.shape[0]
                        yield block.tobytes()
                    elif s.done:
                        break
                    else:
                        utt.waiting = s.index if s.index >= utt.requested else None
                        if utt.waiting is not None:
                            self._track_wake.fire()  # the output may run dry: watch it
                        await s.changed.wait()
                        utt.waiting = None
                s.passed = True
                if s.error is not None:
                    utt.failed = s
                    self._emit(
                        SpeechError(
                            time.monotonic(),
                            self._frames_played(),
                            utt.index,
                            s.index,
                            s.text,
                            type(s.error).__name__,
                            str(s.error),
                        )
                    )
                    return
                if s.src_start is not None:
                    s.src_end = offset
                    self._track_wake.fire()  # a new boundary to watch
                else:
                    self._advance_played(utt)
                k += 1
        finally:
            utt.changed.fire()
            self._release_turn(utt)

    def _follows_previous(self, utt: _Utterance) -> bool:
        """True if another utterance's audio is still queued or playing before ``utt``'s (for
        the relay: the previous one ended less than a pause ago)."""
        if self._relay_out is not None:
            return self._relay_out.silent_for() < self.pause
        return any(other is not utt for other in self._by_source.values())

    # ------------------------------------------------------------------ positions and times
    async def _watch_player(self, events: AsyncIterable[Event]) -> None:
        """Take the player's events: where each source begins, underruns, the final word."""
        async for event in events:
            self._on_player_event(event)

    def _on_player_event(self, event: Event) -> None:
        if isinstance(event, Underrun):
            utt = self._by_source.get(event.source)
            if utt is not None:
                utt.underruns += 1
                utt.underrun_ms += event.silence_ms
            self._emit(event)
            return
        source = getattr(event, "source", None)
        utt = self._by_source.get(source) if isinstance(source, int) else None
        if utt is None:
            return
        if isinstance(event, PlaybackStarted):
            utt.begin = event.position
            self._track_wake.fire()
        elif isinstance(event, PlaybackStopped):
            utt.heard = event.frames_heard
            utt.report.set()
        elif isinstance(event, PlaybackFinished | PlaybackError):
            utt.report.set()

    def _relay_started(self, utt: _Utterance, begin: int) -> None:
        """The relay output begins ``utt`` at frame ``begin`` (its `PlaybackStarted`)."""
        utt.begin = begin
        self._track_wake.fire()

    def _relay_underruns(self, utt: _Utterance) -> None:
        """Report the relay clock's underruns in ``utt`` (as the player reports its own)."""
        assert self._relay_out is not None
        for position, seconds in self._relay_out.take_underruns():
            utt.underruns += 1
            utt.underrun_ms += 1000.0 * seconds
            source = utt.source if utt.source is not None else -1
            self._emit(
                Underrun(time.monotonic() - seconds, position, source, 1000.0 * seconds, "network")
            )

    async def _track_forever(self) -> None:
        while True:
            self._track_once()
            if not self._by_source:
                await self._track_wake.wait()
                continue
            with anyio.move_on_after(self._track_delay()):
                await self._track_wake.wait()

    def _track_delay(self) -> float:
        """Seconds the tracker may sleep: until the next frame it waits for can be played.

        Its targets: the next sentence start and end to report of each utterance, and, while
        the source waits for a sentence not requested yet, the end of the audio written (the
        output stops there, and `_track_once` must then request it). Frames cannot be played
        faster than the rate, so ``(target - played) / rate`` never oversleeps one; whatever
        adds or moves a target fires the wake-up.
        """
        read = self._frames_played()
        nearest: int | None = None
        for utt in self._by_source.values():
            targets: list[int] = []
            if utt.begin is not None:
                if utt.next_start < len(utt.sentences):
                    start = utt.sentences[utt.next_start].src_start
                    if start is not None:
                        targets.append(utt.begin + start + 1)  # reported once read > start
                if utt.next_end < utt.next_start:
                    end = utt.sentences[utt.next_end].src_end
                    if end is not None:
                        targets.append(utt.begin + end)
            if utt.waiting is not None and utt.needed <= utt.waiting and self._player is not None:
                device = self._player.device_output
                if device is not None:
                    targets.append(device.ring.write_index)
            for target in targets:
                if nearest is None or target < nearest:
                    nearest = target
        if nearest is None:
            return TRACK_MAX_INTERVAL
        ahead = (nearest - read) / self._rate
        return min(TRACK_MAX_INTERVAL, max(TRACK_INTERVAL, ahead))

    def _output_playing(self) -> bool:
        """True while the output consumes audio (the relay's clock always runs)."""
        if self._player is None:
            return True
        return self._player.stats().playing

    def _track_once(self) -> None:
        """Report the sentences whose first / last frame has been played since the last look."""
        if self._relay_out is None and (
            self._player is None or self._player.device_output is None
        ):
            return
        read = self._frames_played()
        playing = self._output_playing()
        if self._relay_out is not None and self._relay_out.utt is not None:
            self._relay_underruns(self._relay_out.utt)
        for utt in list(self._by_source.values()):
            if utt.waiting is not None and not playing and utt.needed <= utt.waiting:
                # The player waits for more audio (its start policy, or an underrun) while the
                # source waits for a sentence outside the window: request it, or both wait
                # forever.
                utt.needed = utt.waiting + 1
                utt.changed.fire()
            if utt.begin is None:
                continue
            while utt.next_start < len(utt.sentences):
                s = utt.sentences[utt.next_start]
                if s.src_start is None:
                    if not s.passed:
                        break
                    utt.next_start += 1  # no audio at all
                    continue
                pos = utt.begin + s.src_start
                if read <= pos:
                    break
                at = self._device_time(pos, read)
                if utt.first_sound is None:
                    utt.first_sound = at
                self._emit(SentenceStarted(at, pos, utt.index, s.index, s.text))
                utt.next_start += 1
            while utt.next_end < utt.next_start:
                s = utt.sentences[utt.next_end]
                if s.src_start is None:
                    utt.next_end += 1
                    continue
                if s.src_end is None:
                    break
                pos = utt.begin + s.src_end
                if read < pos:
                    break
                self._emit(
                    SentenceFinished(
                        self._device_time(pos, read),
                        pos,
                        utt.index,
                        s.index,
                        s.text,
                        s.src_end - s.src_start,
                    )
                )
                s.played = True
                utt.next_end += 1
            self._advance_played(utt)

    @staticmethod
    def _advance_played(utt: _Utterance) -> None:
        """Count the sentences played (or passed without audio); wake the request scheduler."""
        before = utt.played
        while utt.played < len(utt.sentences):
            s = utt.sentences[utt.played]
            if not (s.played or (s.passed and s.src_start is None and s.error is None)):
                break
            utt.played += 1
        if utt.played != before:
            utt.changed.fire()

    def _device_time(self, position: int, read: int) -> float:
        """Estimated time at which frame ``position`` (already read) reached the device (or
        the relay's on-time listener)."""
        if self._relay_out is not None:
            return self._relay_out.time_of(position, read)
        device = self._player.device_output if self._player is not None else None
        assert device is not None
        _, out = device.clock()  # frames handed out before the latest callback
        return device.device_time(out + device.blocksize - (read - position))

    # ------------------------------------------------------------------ speaking rate
    def _chars_per_second(self) -> float:
        if self._learned_seconds >= LEARN_AFTER_SECONDS:
            return self._learned_chars / self._learned_seconds
        return DEFAULT_CHARS_PER_SECOND * (self.speed or 1.0)

    def _estimate(self, chars: int) -> float:
        """Seconds of speech expected for ``chars`` characters (learned from what was played)."""
        return chars / self._chars_per_second()

    def _estimate_frames(self, s: _Sentence) -> int:
        return round(self._estimate(len(s.text)) * self._rate)


class _RelayOutput:
    """``output="relay"``: utterances published by a `RelaySink`, timed by the relay's clock.

    One utterance at a time, in call order: the next one is published once the hub's on-time
    listener has heard the previous one to its end (so the clock never runs two utterances at
    once, and the listeners, which play the relay's utterances back to back, hear them joined).
    Frames played: the frames of the utterances before, plus the frames of the current one the
    on-time listener has passed (its granule position less the pre-skip, at the speaker's rate).
    Each utterance's end is published only `RELAY_END_LEAD` before that listener reaches it, so
    a barge-in until then cuts it in every listener.
    """

    def __init__(self, sink: RelaySink, rate: int) -> None:
        self.sink = sink
        self.rate = rate
        self._turn = anyio.Lock()
        self._base = 0  # frames of the utterances before the current one
        self._utterance: int | None = None  # the hub's number of the current one, once begun
        self._heard = 0  # frames of the current one heard, at the latest look
        self._frames = 0  # frames of the current one published
        self._ended_at: float | None = None  # monotonic time the previous one was heard to its end
        self._playhead: RelayPlayhead | None = None  # the current one's, at the latest look
        self.utt: _Utterance | None = None  # the utterance being relayed
        self._underruns_seen = 0  # the current one's underruns reported
        self._underrun_seconds_seen = 0.0

    def frames_played(self) -> int:
        """Frames heard by the on-time listener since the speaker opened (never decreases)."""
        if self._utterance is not None:
            playhead = self.sink.hub.playhead(self._utterance)
            if playhead is not None:
                self._playhead = playhead
                heard = self._to_frames(playhead.position - playhead.pre_skip)
                self._frames = self._to_frames(playhead.published - playhead.pre_skip)
                self._heard = max(self._heard, min(heard, self._frames))
        return self._base + self._heard

    def time_of(self, position: int, read: int) -> float:
        """``time.monotonic()`` at which the on-time listener heard frame ``position`` (<=
        ``read``, the frames played a moment ago): it plays in real time."""
        return time.monotonic() - (read - position) / self.rate

    def take_underruns(self) -> list[tuple[int, float]]:
        """The current utterance's underruns over since the last call (the on-time listener ran
        out of audio: a sentence came late): (frames played where it stopped, seconds)."""
        self.frames_played()
        playhead = self._playhead
        if (
            playhead is None
            or playhead.waiting  # reported once it is over, with its whole silence
            or playhead.underruns <= self._underruns_seen
            or playhead.underrun_position is None
        ):
            return []
        count = playhead.underruns - self._underruns_seen
        seconds = (playhead.underrun_seconds - self._underrun_seconds_seen) / count
        self._underruns_seen = playhead.underruns
        self._underrun_seconds_seen = playhead.underrun_seconds
        at = self._base + self._to_frames(playhead.underrun_position - playhead.pre_skip)
        return [(at, seconds)] * count  # (several between two looks: not told apart)

    def silent_for(self) -> float:
        """Seconds since the previous utterance was heard to its end (inf: none yet)."""
        if self._ended_at is None or self._utterance is not None:
            return math.inf
        return time.monotonic() - self._ended_at

    def _to_frames(self, granules: int) -> int:
        return max(0, granules) * self.rate // RELAY_RATE

    def _on_head(self, head: RelayHead) -> None:
        if self._utterance is None:  # (a PCM source is one stream: one head)
            self._utterance = head.utterance

    async def play(
        self, speaker: Speaker, utt: _Utterance, source: AsyncIterator[bytes]
    ) -> PlaybackResult:
        """Relay one utterance; return once the on-time listener has heard its last frame.

        If the hub stops it (`RelayHub.stop`, or another publisher on the hub), ``utt.heard``
        is set to the frames heard and it returns at once.
        """
        requested = time.monotonic()
        begun = False
        try:
            async with self._turn:
                begun = True
                self._heard = self._frames = 0
                self.utt = utt
                speaker._relay_started(utt, self._base)
                async with contextlib.aclosing(self._held(source)) as held:
                    result = await self.sink.play(
                        held,
                        format="pcm",
                        pcm_rate=self.rate,
                        pcm_channels=speaker._channels,
                        pcm_format="f32le",
                        text=utt.text,
                        voice=speaker.voice,
                        on_head=self._on_head,
                    )
                playhead = (
                    self.sink.hub.playhead(self._utterance)
                    if self._utterance is not None
                    else None
                )
                started_at: float | None = None
                finished_at: float | None = None
                speaker._relay_underruns(utt)
                if playhead is not None and result.reason in ("done", "truncated", "error"):
                    # All is published: it plays on in real time, without a stall, to the end.
                    now = time.monotonic()
                    self.frames_played()
                    finished_at = now + playhead.remaining
                    if playhead.started is not None:
                        started_at = (
                            now - (playhead.time - playhead.started)
                            + playhead.pre_skip / RELAY_RATE
                        )
                    await anyio.sleep(max(0.0, finished_at - time.monotonic()))
                    self.frames_played()
                    frames = self._frames
                else:  # stopped at the hub (or nothing was published)
                    self.frames_played()
                    frames = utt.heard = self._heard
                    utt.report.set()
                self._close(frames)
        except BaseException:  # cancelled (stop, barge-in) or failed: report what was heard
            heard = 0
            if begun:
                self.frames_played()
                heard = self._heard
                self._close(heard)
            utt.heard = heard
            utt.report.set()
            raise
        return PlaybackResult(
            source=utt.source if utt.source is not None else -1,
            sample_rate=self.rate,
            frames=frames,
            requested_at=requested,
            started_at=started_at,
            finished_at=finished_at,
            underruns=utt.underruns,
            underrun_ms=utt.underrun_ms,
        )

    async def _held(self, source: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
        """``source``, whose end is held back until the on-time listener is `RELAY_END_LEAD`
        from the end of what was published."""
        async for block in source:
            yield block
        while self._utterance is not None:
            playhead = self.sink.hub.playhead(self._utterance)
            if playhead is None or playhead.end is not None:
                return
            wait = playhead.remaining - RELAY_END_LEAD
            if wait <= 0:
                return
            await anyio.sleep(wait)

    def _close(self, frames: int) -> None:
        """The current utterance is over after ``frames`` heard: the clock moves on from there."""
        self._base += frames
        self._heard = self._frames = 0
        self._utterance = None
        self._playhead = None
        self.utt = None
        self._underruns_seen = 0
        self._underrun_seconds_seen = 0.0
        self._ended_at = time.monotonic()


def _as_error(exc: Exception) -> BaseException:
    """A failure outside the error tree (e.g. a raw httpx error from a custom engine)."""
    import httpx

    from .errors import StreamInterrupted, StreamTimeout, TransportError

    if isinstance(exc, httpx.TimeoutException):
        new: BaseException = StreamTimeout(f"no data from the server in time: {exc}")
    elif isinstance(exc, httpx.TransportError):
        new = StreamInterrupted(f"the stream was interrupted: {exc}")
    elif isinstance(exc, httpx.HTTPError):
        new = TransportError(str(exc))
    else:
        return exc
    new.__cause__ = exc
    return new
