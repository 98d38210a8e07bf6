"""The browser relay hub: one utterance's Opus packets fanned out to many listeners, live.

The hub knows nothing of WebSockets (`streamtts.server.relay_ws` carries it over one); it takes an
Ogg Opus byte stream (or PCM, which it encodes) and hands every listener the same sequence of
messages, each listener through its own bounded queue.

How it works
------------
*Publishing.* `RelayHub.relay_ogg` demuxes the bytes with `OggReader`, which releases each packet
as soon as its own bytes are in. The first packet of the first Opus stream is its OpusHead (a
`RelayHead` goes out), OpusTags is skipped, every audio packet becomes a `RelayPacket` with its
position and duration in 48 kHz samples, and the end of the stream a `RelayEnd`. A chained
stream (a new OpusHead after the EOS) is a new utterance.

*The live clock.* A relay is a broadcast: a listener joining late must start where the others are
hearing now, and an engine that synthesizes at 1000x real time must not pour the whole utterance
into the sockets at once (a late joiner would find it over, and every queue would hold all of it).
So the hub simulates an *on-time listener*: it starts playing at the first packet and plays in
real time, never past the audio released so far (it "underruns" when the source stalls, exactly
as real listeners do). Packets are released as soon as they arrive while they start less than
``lead`` seconds ahead of that listener; a source running further ahead is paused (it is an async
iterator: it is simply not read), which back-pressures the engine instead of buffering its output.
Released packets are kept while they (or the ``PREROLL`` before them) are still ahead of the
on-time listener; a listener that joins gets the head, then those packets: the first ones only to
warm its decoder up (before ``RelayHead.start``), the rest to play from the current position.

*Fan-out.* Publishing appends to every listener's queue and never waits. A listener whose queue
holds more than ``max_queue`` seconds of audio (its socket is slower than real time) loses its
OLDEST packets, counted in `RelayListener.dropped`; heads and ends are never dropped. The others
are never held back by it.

Wire protocol (version 1)
-------------------------
Server → client, **text** messages (JSON objects, ``type`` first):

* ``{"type": "ready", "protocol": 1, "sampleRate": 48000, "voices": [...]}`` once, on connect.
* ``{"type": "head", "utterance": u, "channels": c, "preSkip": p, "sampleRate": 48000,
  "gainDb": g, "opusHead": "<base64 of the OpusHead packet>", "start": s, "text": "...",
  "voice": "..."}``: an utterance begins (for a late joiner: is joined). Positions are Ogg granule
  positions (48 kHz samples, pre-skip included, the first audio packet at 0 as every encoder
  writes it), so the decoded sample ``k`` of a packet at ``position`` has position
  ``position + k``; play only positions ``>= max(preSkip, start)``. Packets before ``start`` are
  pre-roll: decode them, discard their output (RFC 7845 §4.6). Apply ``gainDb`` once (a client
  that passes ``opusHead`` to a decoder as its configuration should zero its pre-skip and gain
  fields and apply both itself, as the page does: decoders differ in what they apply).
* ``{"type": "end", "utterance": u, "reason": r, "position": e, "packets": n}``: no more packets
  of ``u``. ``reason``: ``"done"`` (complete), ``"truncated"`` (the source ended without its EOS
  page: play what came), ``"error"`` (the engine failed mid-stream: play what came),
  ``"stopped"`` or ``"replaced"`` (barge-in: stop playing ``u`` now).
* ``{"type": "error", "message": "..."}``: a ``speak`` request failed; the connection stays open.

Server → client, **binary** messages: one Opus packet after a 20-byte little-endian header::

    offset size  field
    0      u8    kind       1 = Opus packet (other values: ignore the message)
    1      u8    flags      bit 0: final packet of the utterance (its samples are end-trimmed)
    2      u16   samples    48 kHz samples this packet covers: its TOC duration, or fewer for
                            the final packet (keep only the first ``samples`` decoded ones)
    4      u32   utterance
    8      u32   sequence   0, 1, 2… per utterance (a gap: packets dropped for this listener)
    12     u64   position   granule position of the packet's first sample
    20     ...   the Opus packet

Client → server, text messages (JSON objects, at most `MAX_CLIENT_MESSAGE` bytes):

* ``{"type": "join"}``: receive the current utterance from its live position, and the next ones.
* ``{"type": "speak", "text": "...", "voice": "alloy", "speed": 1.0}``: speak ``text`` to every
  listener (the sender joins too). A new utterance replaces the one playing (barge-in).
* ``{"type": "stop"}``: stop the current utterance for everyone.

A malformed client message closes that connection with a specific code (the others are served
on): binary data 1003 (unsupported data), invalid JSON 1007 (inconsistent data), a valid JSON
message that is not a known request or has bad fields 1008 (policy violation), a message larger
than `MAX_CLIENT_MESSAGE` 1009 (too big). (A connection from a foreign ``Origin``, or without
the ``?key=`` a server with an API key requires, is refused at the handshake with HTTP 403.)
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

import anyio
import numpy as np
import numpy.typing as npt

from .errors import ProtocolError, UsageError
from .ogg import OggPacket, OggReader
from .opus import SAMPLE_RATES as OPUS_SAMPLE_RATES
from .opus import OpusHead, packet_samples

__all__ = [
    "CLOSE_INVALID_DATA",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "CLOSE_UNSUPPORTED",
    "MAX_CLIENT_MESSAGE",
    "PACKET_HEADER_SIZE",
    "PROTOCOL_VERSION",
    "ClientMessage",
    "JoinRequest",
    "Rejection",
    "RelayEnd",
    "RelayHead",
    "RelayHub",
    "RelayListener",
    "RelayMessage",
    "RelayPacket",
    "RelayPlayhead",
    "RelayResult",
    "RelaySink",
    "SpeakRequest",
    "StopRequest",
    "parse_client_message",
]

#: Sent in ``ready``; raised on any change a version-1 client could misread.
PROTOCOL_VERSION = 1
#: Opus timestamps (granules) are always 48 kHz, whatever rate the stream was encoded at.
SAMPLE_RATE = 48_000

#: Audio released ahead of the on-time listener, in seconds. Listeners hold this much in their
#: buffers when the source is faster than real time, so it is the stall a source may have
#: without anyone hearing it; 1 s covers the 1-second pages of OpenAI's and opusenc's streams
#: (a page's packets arrive together) while a late joiner still gets little at once.
DEFAULT_LEAD = 1.0
#: Audio one listener may have queued (unsent), in seconds, before its oldest packets are dropped.
#: Must exceed ``lead`` (a listener that keeps up holds up to ``lead`` at a burst); 3 s is also
#: longer than any stall a live listener could sit through without having lost the thread.
DEFAULT_MAX_QUEUE = 3.0
#: Pre-roll given to a late joiner's decoder before the packet it plays first: RFC 7845 §4.6
#: recommends decoding at least 80 ms before a seek point for the decoder to converge.
PREROLL = 3840
#: Largest client message, in bytes: a speak request is at most ~4096 characters of text (JSON
#: escaping may multiply it by up to 6 for control characters; real text stays far below 16 kB).
MAX_CLIENT_MESSAGE = 16 * 1024
#: Longest text of a speak request (OpenAI's limit on ``input``).
MAX_TEXT_CHARS = 4096

#: WebSocket close codes (RFC 6455 §7.4.1) for malformed client messages.
CLOSE_UNSUPPORTED = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009

_PACKET = struct.Struct("<BBHIIQ")  # kind, flags, samples, utterance, sequence, position
PACKET_HEADER_SIZE = _PACKET.size
_KIND_PACKET = 1
_FLAG_FINAL = 0x01

Pcm: TypeAlias = npt.NDArray[np.float32]


# --------------------------------------------------------------------------------------------
# Server → client messages
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayHead:
    """An utterance begins (or is joined): configure a decoder with ``head``.

    Attributes:
        utterance: The hub's number of the utterance (0, 1, …).
        head: The stream's OpusHead.
        start: Granule position from which to play (0 from the beginning; for a late joiner the
            position the others are hearing; earlier packets are decoder pre-roll).
        text: The text being spoken ("" if unknown).
        voice: The voice, if known.
    """

    utterance: int
    head: OpusHead
    start: int
    text: str = ""
    voice: str | None = None

    def to_json(self) -> str:
        """The ``head`` text message."""
        h = self.head
        return json.dumps(
            {
                "type": "head",
                "utterance": self.utterance,
                "channels": h.channels,
                "preSkip": h.pre_skip,
                "sampleRate": SAMPLE_RATE,
                "gainDb": h.gain_db,
                "opusHead": base64.b64encode(h.to_bytes()).decode("ascii"),
                "start": self.start,
                "text": self.text,
                "voice": self.voice,
            }
        )


@dataclass(frozen=True, slots=True)
class RelayPacket:
    """One Opus packet of an utterance.

    Attributes:
        utterance: The utterance it belongs to.
        sequence: Its number in the utterance (0, 1, …).
        position: Granule position (48 kHz) of its first sample.
        samples: 48 kHz samples it covers (fewer than its duration for an end-trimmed final one).
        data: The Opus packet.
        final: It is the utterance's last packet.
    """

    utterance: int
    sequence: int
    position: int
    samples: int
    data: bytes
    final: bool = False

    @property
    def end(self) -> int:
        """Granule position just after the packet."""
        return self.position + self.samples

    def to_bytes(self) -> bytes:
        """The binary message: header then packet."""
        flags = _FLAG_FINAL if self.final else 0
        header = _PACKET.pack(
            _KIND_PACKET, flags, self.samples, self.utterance, self.sequence, self.position
        )
        return header + self.data

    @classmethod
    def from_bytes(cls, message: bytes) -> RelayPacket:
        """Parse a binary message (the inverse of `to_bytes`).

        Raises:
            ProtocolError: Too short, or not a packet message.
        """
        if len(message) < _PACKET.size:
            raise ProtocolError(f"relay packet message of {len(message)} bytes: header is 20")
        kind, flags, samples, utterance, sequence, position = _PACKET.unpack_from(message)
        if kind != _KIND_PACKET:
            raise ProtocolError(f"relay binary message of unknown kind {kind}")
        return cls(
            utterance, sequence, position, samples, bytes(message[_PACKET.size :]),
            bool(flags & _FLAG_FINAL),
        )


@dataclass(frozen=True, slots=True)
class RelayEnd:
    """No more packets of an utterance.

    Attributes:
        utterance: The utterance.
        reason: ``"done"``, ``"truncated"``, ``"error"``, ``"stopped"`` or ``"replaced"``.
        position: Granule position at its end (after the last packet published).
        packets: Packets published in it.
    """

    utterance: int
    reason: str
    position: int
    packets: int

    def to_json(self) -> str:
        """The ``end`` text message."""
        return json.dumps(
            {
                "type": "end",
                "utterance": self.utterance,
                "reason": self.reason,
                "position": self.position,
                "packets": self.packets,
            }
        )


RelayMessage: TypeAlias = RelayHead | RelayPacket | RelayEnd
#: ``on_head`` callbacks of the publishing methods: told each utterance's head as it goes out.
HeadCallback: TypeAlias = Callable[[RelayHead], None]


# --------------------------------------------------------------------------------------------
# Client → server messages
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """``{"type": "join"}``: listen from the live position on."""


@dataclass(frozen=True, slots=True)
class SpeakRequest:
    """``{"type": "speak", "text", "voice"?, "speed"?}``: speak to every listener."""

    text: str
    voice: str | None = None
    speed: float | None = None


@dataclass(frozen=True, slots=True)
class StopRequest:
    """``{"type": "stop"}``: stop the current utterance."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A malformed client message: close the connection with ``code`` and ``reason``.

    Attributes:
        code: WebSocket close code (1003, 1007, 1008 or 1009).
        reason: Human-readable reason (at most 123 bytes of UTF-8, the close frame's limit).
    """

    code: int
    reason: str


ClientMessage: TypeAlias = JoinRequest | SpeakRequest | StopRequest


def _reject(code: int, reason: str) -> Rejection:
    data = reason.encode()[:123]  # RFC 6455 §5.5: control frame payloads are at most 125 bytes
    return Rejection(code, data.decode("utf-8", "ignore"))


def parse_client_message(
    text: str | None = None,
    data: bytes | None = None,
    *,
    max_text_chars: int = MAX_TEXT_CHARS,
) -> ClientMessage | Rejection:
    """Validate one client message (a text message's ``text`` or a binary message's ``data``).

    Sans-I/O: returns the request, or the `Rejection` to close the connection with.
    """
    if text is None:
        if data is None:
            return _reject(CLOSE_INVALID_DATA, "empty message")
        return _reject(CLOSE_UNSUPPORTED, "binary messages are not accepted: send JSON text")
    if len(text) > MAX_CLIENT_MESSAGE or len(text.encode()) > MAX_CLIENT_MESSAGE:
        return _reject(CLOSE_TOO_BIG, f"message larger than {MAX_CLIENT_MESSAGE} bytes")
    try:
        payload = json.loads(text)
    except ValueError:
        return _reject(CLOSE_INVALID_DATA, "the message is not valid JSON")
    if not isinstance(payload, dict):
        return _reject(CLOSE_POLICY, "the message must be a JSON object")
    kind = payload.get("type")
    if kind == "join":
        return JoinRequest()
    if kind == "stop":
        return StopRequest()
    if kind != "speak":
        return _reject(CLOSE_POLICY, f"unknown message type {str(kind)[:40]!r}: join, speak, stop")
    words = payload.get("text")
    if not isinstance(words, str) or not words.strip():
        return _reject(CLOSE_POLICY, "speak needs a non-empty 'text' string")
    if len(words) > max_text_chars:
        return _reject(CLOSE_POLICY, f"'text' is longer than {max_text_chars} characters")
    voice = payload.get("voice")
    if voice is not None and (not isinstance(voice, str) or not voice.strip() or len(voice) > 64):
        return _reject(CLOSE_POLICY, "'voice' must be a voice name")
    speed = payload.get("speed")
    if speed is not None:
        if isinstance(speed, bool) or not isinstance(speed, int | float):
            return _reject(CLOSE_POLICY, "'speed' must be a number")
        if not (math.isfinite(speed) and 0.25 <= speed <= 4.0):
            return _reject(CLOSE_POLICY, "'speed' must be between 0.25 and 4.0")
        speed = float(speed)
    return SpeakRequest(words, voice.strip() if voice else None, speed)


# --------------------------------------------------------------------------------------------
# Listeners
# --------------------------------------------------------------------------------------------


class RelayListener:
    """One listener's bounded queue of relay messages (from `RelayHub.listen`).

    ``async for message in listener`` (or `receive`) yields `RelayHead`, `RelayPacket` and
    `RelayEnd` messages in order; iteration ends when the listener or the hub is closed.

    Attributes:
        max_queue: Samples (48 kHz) of packets the queue may hold before dropping the oldest.
        dropped: Packets dropped because this listener fell behind.
        received: Messages taken out of the queue so far.
    """

    def __init__(self, hub: RelayHub, max_queue: int) -> None:
        self._hub = hub
        self._queue: deque[RelayMessage] = deque()
        self._queued_samples = 0
        self._wake: anyio.Event | None = None
        self._closed = False
        self.max_queue = max_queue
        self.dropped = 0
        self.received = 0

    @property
    def queued(self) -> int:
        """Messages waiting."""
        return len(self._queue)

    @property
    def queued_seconds(self) -> float:
        """Audio waiting, in seconds."""
        return self._queued_samples / SAMPLE_RATE

    def _put(self, message: RelayMessage) -> None:
        if self._closed:
            return
        if isinstance(message, RelayPacket):
            while self._queued_samples + message.samples > self.max_queue and self._drop_oldest():
                pass
            self._queued_samples += message.samples
        self._queue.append(message)
        if self._wake is not None:
            self._wake.set()

    def _drop_oldest(self) -> bool:
        for i, item in enumerate(self._queue):
            if isinstance(item, RelayPacket):
                del self._queue[i]
                self._queued_samples -= item.samples
                self.dropped += 1
                return True
        return False

    def _end(self) -> None:
        self._closed = True
        if self._wake is not None:
            self._wake.set()

    async def receive(self) -> RelayMessage:
        """The next message, waiting for it.

        Raises:
            anyio.EndOfStream: The listener or the hub was closed (queued messages are still
                delivered first when the hub closed; none after `aclose`).
        """
        while not self._queue:
            if self._closed:
                raise anyio.EndOfStream
            self._wake = anyio.Event()
            await self._wake.wait()
        message = self._queue.popleft()
        if isinstance(message, RelayPacket):
            self._queued_samples -= message.samples
        self.received += 1
        return message

    def __aiter__(self) -> RelayListener:
        return self

    async def __anext__(self) -> RelayMessage:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop listening: the queue is emptied and the hub forgets this listener."""
        self._queue.clear()
        self._queued_samples = 0
        self._hub._listeners.discard(self)
        self._end()

    async def aclose(self) -> None:
        """As `close`."""
        self.close()

    async def __aenter__(self) -> RelayListener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# The hub
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RelayResult:
    """What one `RelayHub.relay_ogg` call published.

    Attributes:
        utterances: Numbers of the utterances it published (one per chained stream).
        packets: Audio packets published.
        samples: 48 kHz samples they cover (pre-skip included).
        reason: How the last one ended (see `RelayEnd`).
    """

    utterances: tuple[int, ...]
    packets: int
    samples: int
    reason: str


@dataclass(frozen=True, slots=True)
class RelayPlayhead:
    """Where the hub's on-time listener is in an utterance (`RelayHub.playhead`).

    The on-time listener (see the module doc) starts at the utterance's first packet and plays
    in real time, never past the packets published: it is what a listener with no network delay
    and no buffer hears, the relay's clock.

    Attributes:
        utterance: The utterance.
        position: Granule position (48 kHz, pre-skip included) it has played up to.
        published: Granule position after the last packet published.
        pre_skip: The stream's pre-skip: its first audible sample is at this position.
        started: Hub-clock time of the first packet (None: no packet yet).
        time: Hub-clock time of this snapshot.
        end: How the utterance ended (see `RelayEnd`), None while it is being published.
        underruns: Times it ran out of published audio before the end (the source was late),
            the one going on included.
        underrun_seconds: Silence it waited through in those, in all (so far).
        waiting: It is waiting for audio now (an underrun not over yet).
        underrun_position: Granule position at which it last ran dry (None: never).
    """

    utterance: int
    position: int
    published: int
    pre_skip: int
    started: float | None
    time: float
    end: str | None
    underruns: int = 0
    underrun_seconds: float = 0.0
    waiting: bool = False
    underrun_position: int | None = None

    @property
    def remaining(self) -> float:
        """Seconds of published audio it has still to play (once the end is published, the
        time left until it has played everything)."""
        return (self.published - self.position) / SAMPLE_RATE


class _Broadcast:
    """One utterance's state: the on-time listener's clock and the packets still ahead of it."""

    def __init__(self, head: RelayHead) -> None:
        self.head = head
        self.sequence = 0
        self.position = 0  # end of the packets published so far
        self.kept: deque[RelayPacket] = deque()
        self.end: RelayEnd | None = None
        self.live = 0.0  # the on-time listener's position
        self.live_at: float | None = None  # when it was computed (None: not started)
        self.started: float | None = None  # when its first packet was published
        self.stalls = 0  # times the on-time listener ran dry before the end
        self.stalled = 0.0  # samples of silence it waited, in all
        self.dry_at: int | None = None  # where it waits now (None: it is playing)
        self.last_dry_at: int | None = None  # where it waited last

    def advance(self, now: float) -> float:
        """Move the on-time listener to *now*; forget packets it (and the pre-roll) passed."""
        if self.live_at is not None:
            reach = self.live + (now - self.live_at) * SAMPLE_RATE
            if reach > self.position and self.started is not None and self.end is None:
                # It ran out of published audio before the end: it waits (an underrun).
                if self.dry_at is None:
                    self.stalls += 1
                    self.dry_at = self.last_dry_at = self.position
                self.stalled += reach - max(self.live, float(self.position))
            self.live = min(float(self.position), reach)
        self.live_at = now
        while self.kept and self.kept[0].end + PREROLL <= self.live:
            self.kept.popleft()
        return self.live

    def join_messages(self, now: float) -> list[RelayMessage]:
        live = self.advance(now)
        playing = [p for p in self.kept if p.end > live]
        if self.end is not None and (not playing or self.end.reason in ("stopped", "replaced")):
            return []  # it is over for everyone (or was cut off: nothing left to hear)
        start = playing[0].position if playing else self.position
        head = RelayHead(self.head.utterance, self.head.head, start, self.head.text,
                         self.head.voice)
        out: list[RelayMessage] = [head, *self.kept]
        if self.end is not None:
            out.append(self.end)
        return out


class RelayHub:
    """Fan-out of live Opus utterances to listeners (transport-agnostic; see the module doc).

    Use it from one event loop (asyncio or trio). Publishing never blocks on a listener.

    Args:
        lead: Seconds of audio released ahead of real-time playback (see the module doc).
        max_queue: Default seconds of audio a listener may have queued before its oldest packets
            are dropped.
        clock: The clock, in seconds (tests pass a fake one).
        sleep: Waits that many seconds (tests pass a fake one).

    Raises:
        UsageError: ``lead`` or ``max_queue`` is not positive.
    """

    def __init__(
        self,
        *,
        lead: float = DEFAULT_LEAD,
        max_queue: float = DEFAULT_MAX_QUEUE,
        clock: Callable[[], float] = anyio.current_time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if not lead > 0 or not max_queue > 0:
            raise UsageError("lead and max_queue must be positive numbers of seconds")
        self.lead = lead
        self.max_queue = max_queue
        self._clock = clock
        self._sleep = sleep
        self._listeners: set[RelayListener] = set()
        self._current: _Broadcast | None = None
        self._active: _OggState | None = None  # the relay_ogg call publishing now
        self._next_utterance = 0
        self._closed = False

    # ---- listening ----------------------------------------------------------------------------

    @property
    def listeners(self) -> int:
        """Listeners connected."""
        return len(self._listeners)

    @property
    def utterance(self) -> int | None:
        """Number of the utterance being published (None when none is)."""
        cur = self._current
        return cur.head.utterance if cur is not None and cur.end is None else None

    def listen(self, *, max_queue: float | None = None) -> RelayListener:
        """Add a listener; it gets the current utterance from the live position, then the next.

        Args:
            max_queue: Seconds of audio it may have queued (default: the hub's ``max_queue``).

        Raises:
            UsageError: The hub is closed.
        """
        if self._closed:
            raise UsageError("the relay hub is closed")
        seconds = self.max_queue if max_queue is None else max_queue
        listener = RelayListener(self, round(seconds * SAMPLE_RATE))
        if self._current is not None:
            for message in self._current.join_messages(self._clock()):
                listener._put(message)
        self._listeners.add(listener)
        return listener

    def playhead(self, utterance: int | None = None) -> RelayPlayhead | None:
        """Where the on-time listener is now in the latest utterance (the relay's clock).

        Args:
            utterance: Only for this utterance (None: whichever is the latest).

        Returns:
            A snapshot, or None if no utterance was published yet or the latest is another
            one (``utterance`` was replaced by a newer one, or has not begun).
        """
        cur = self._current
        if cur is None or (utterance is not None and cur.head.utterance != utterance):
            return None
        now = self._clock()
        live = cur.advance(now) if cur.started is not None else 0.0
        return RelayPlayhead(
            cur.head.utterance,
            int(live),
            cur.position,
            cur.head.head.pre_skip,
            cur.started,
            now,
            None if cur.end is None else cur.end.reason,
            cur.stalls,
            cur.stalled / SAMPLE_RATE,
            cur.dry_at is not None,
            cur.last_dry_at,
        )

    def _publish(self, message: RelayMessage) -> None:
        for listener in self._listeners:
            listener._put(message)

    # ---- publishing ---------------------------------------------------------------------------

    def stop(self, reason: str = "stopped") -> None:
        """End the utterance being published now (barge-in); listeners get ``RelayEnd(reason)``."""
        cur = self._current
        if cur is not None and cur.end is None:
            self._finish(cur, reason)
        active, self._active = self._active, None
        if active is not None:
            active.stop_reason = reason
            active.scope.cancel()

    def close(self) -> None:
        """Stop publishing and end every listener's iteration (after its queued messages)."""
        self.stop("stopped")
        self._closed = True
        for listener in list(self._listeners):
            listener._end()
        self._listeners.clear()

    def _begin(
        self, head: OpusHead, text: str, voice: str | None, on_head: HeadCallback | None
    ) -> _Broadcast:
        cur = self._current
        if cur is not None and cur.end is None:
            self._finish(cur, "replaced")
        b = _Broadcast(RelayHead(self._next_utterance, head, 0, text, voice))
        self._next_utterance += 1
        self._current = b
        self._publish(b.head)
        if on_head is not None:
            on_head(b.head)
        return b

    def _finish(self, b: _Broadcast, reason: str) -> None:
        if b.end is not None:
            return
        b.end = RelayEnd(b.head.utterance, reason, b.position, b.sequence)
        self._publish(b.end)

    async def _send(self, b: _Broadcast, data: bytes, samples: int, final: bool) -> None:
        live = b.advance(self._clock())
        ahead = (b.position - live) / SAMPLE_RATE - self.lead
        if ahead > 0:  # the source runs more than `lead` ahead of real time: let time pass
            await self._sleep(ahead)
            b.advance(self._clock())
        if b.end is not None:
            return  # stopped while waiting
        if b.started is None:
            b.started = b.live_at
        packet = RelayPacket(b.head.utterance, b.sequence, b.position, samples, data, final)
        b.sequence += 1
        b.position += samples
        b.dry_at = None
        b.kept.append(packet)
        self._publish(packet)

    async def relay_ogg(
        self,
        chunks: AsyncIterable[bytes],
        *,
        text: str = "",
        voice: str | None = None,
        on_head: HeadCallback | None = None,
    ) -> RelayResult:
        """Publish an Ogg Opus byte stream as it arrives; return when it has been published.

        A new utterance replaces one being published (its listeners get ``RelayEnd("replaced")``);
        `stop` ends this one. The stream's packets reach the listeners paced to at most ``lead``
        seconds ahead of real time, so this returns about the stream's duration minus ``lead``
        after it started (or as soon as the bytes stop).

        Args:
            chunks: The Ogg Opus bytes (an engine's ``aiter_bytes()``, an HTTP body…). Not
                closed here when publishing stops early: wrap an async generator in
                ``contextlib.aclosing``.
            text: The text being spoken (sent in the head; informational).
            voice: The voice (informational).
            on_head: Called with each utterance's head as it is published (one per chained
                stream), e.g. to follow it with `playhead`.

        Raises:
            ProtocolError: The stream held no Opus stream (nothing was published), or a
                malformed OpusHead.
            Exception: What *chunks* raised (the listeners got ``RelayEnd("error")`` first).
        """
        if self._closed:
            raise UsageError("the relay hub is closed")
        self.stop("replaced")
        state = _OggState(self, text, voice, on_head)
        self._active = state
        try:
            with state.scope:
                reader = OggReader()
                async for chunk in chunks:
                    for item in reader.feed(chunk):
                        if isinstance(item, OggPacket):
                            await state.packet(item)
                for item in reader.close():
                    if isinstance(item, OggPacket):
                        await state.packet(item)
        except Exception:
            state.finish("error")
            raise
        except BaseException:  # cancelled from outside: the listeners must still get the end
            state.finish("stopped")
            raise
        finally:
            if self._active is state:
                self._active = None
        if state.scope.cancelled_caught:
            reason = state.stop_reason
        else:
            reason = "done" if state.complete else "truncated"
        state.finish(reason)
        if not state.utterances:
            raise ProtocolError("the stream held no Ogg Opus audio")
        return RelayResult(tuple(state.utterances), state.packets, state.samples, reason)

    async def relay_pcm(
        self,
        blocks: AsyncIterable[npt.NDArray[Any] | bytes | bytearray | memoryview],
        *,
        sample_rate: int,
        channels: int = 1,
        text: str = "",
        voice: str | None = None,
        bitrate: int | None = None,
        on_head: HeadCallback | None = None,
    ) -> RelayResult:
        """Encode PCM to Opus and publish it as one utterance (for apps that make their own audio).

        Args:
            blocks: float32 (or int16) arrays shaped ``(frames, channels)``, or bytes of
                float32 little-endian interleaved samples.
            sample_rate: Their rate (8, 12, 16, 24 or 48 kHz: Opus rates; resample others first).
            channels: 1 or 2.
            text: The text being spoken (informational).
            voice: The voice (informational).
            bitrate: Opus bitrate (None: libopus's default).
            on_head: Called with the utterance's head as it is published.

        Raises:
            UsageError: A rate or channel count Opus cannot encode.
            BackendUnavailable: libopus is missing.
        """
        from .opus import OggOpusEncoder

        encoder = OggOpusEncoder(sample_rate, channels, bitrate=bitrate, page_ms=20)

        async def ogg() -> AsyncGenerator[bytes, None]:
            async for block in blocks:
                if isinstance(block, bytes | bytearray | memoryview):
                    array = np.frombuffer(block, dtype="<f4").reshape(-1, channels)
                else:
                    array = np.asarray(block)
                data = encoder.encode(array)
                if data:
                    yield data
            yield encoder.finish()

        gen = ogg()
        try:
            return await self.relay_ogg(gen, text=text, voice=voice, on_head=on_head)
        finally:
            with anyio.CancelScope(shield=True):
                await gen.aclose()


class _OggState:
    """`RelayHub.relay_ogg`'s per-call demux state: which stream, which packet of it."""

    def __init__(
        self, hub: RelayHub, text: str, voice: str | None, on_head: HeadCallback | None
    ) -> None:
        self.hub = hub
        self.text = text
        self.voice = voice
        self.on_head = on_head
        self.serial: int | None = None
        self.index = 0  # packets of the current link so far (0: OpusHead, 1: OpusTags)
        self.broadcast: _Broadcast | None = None
        self.utterances: list[int] = []
        self.packets = 0
        self.samples = 0
        self.complete = False
        self.scope = anyio.CancelScope()
        self.stop_reason = "stopped"

    async def packet(self, p: OggPacket) -> None:
        if self.serial is None or (p.first and self.complete):
            if not (p.first and p.data.startswith(b"OpusHead")):
                return  # another codec's stream, or a stray packet
            head = OpusHead.parse(p.data)
            self.serial = p.serial
            self.index = 1
            self.complete = False
            self.broadcast = self.hub._begin(head, self.text, self.voice, self.on_head)
            self.utterances.append(self.broadcast.head.utterance)
            return
        if p.serial != self.serial or self.broadcast is None or self.complete:
            return
        self.index += 1
        if self.index == 2:
            return  # OpusTags
        b = self.broadcast
        try:
            samples = packet_samples(p.data)
        except ProtocolError:
            return  # an undecodable packet: it would be concealed as lost; skip it
        # End trimming: no packet may run past its page's granule. On a valid stream that only
        # cuts packets of the EOS page (a page's granule is the end of its last packet), and
        # there possibly more than the last one: the header, hence the granule, is known when
        # each of them is released early.
        samples = max(0, min(samples, p.granule - b.position))
        await self.hub._send(b, p.data, samples, p.eos)
        self.packets += 1
        self.samples += samples
        if p.eos:
            self.complete = True
            self.hub._finish(b, "done")

    def finish(self, reason: str) -> None:
        b = self.broadcast
        if b is not None and b.end is None:
            self.hub._finish(b, reason)


# --------------------------------------------------------------------------------------------
# A PCM sink: what a Speaker (or any app) plays, sent to the browser listeners
# --------------------------------------------------------------------------------------------

#: Sample layouts of PCM sources. Opus encodes natively at `OPUS_SAMPLE_RATES` only; PCM at
#: any other rate is resampled to 48 kHz first.
_PCM_DTYPES = {"f32le": "<f4", "s16le": "<i2"}


class RelaySink:
    """Routes PCM playback to a hub's browser listeners, instead of or as well as a device.

    `play` takes the same source and keyword arguments as ``Player.play`` for PCM, so an app
    (or the `Speaker`) can hand it what it would hand the player; `tap` passes a source through
    unchanged while relaying a copy, to play locally *and* in the browsers. As with a player,
    concurrent `play` calls (and taps) on one sink are published one after another, in call
    order, each as its own utterance: listeners play them back to back (a publisher calling the
    hub directly still replaces the utterance being published, as a barge-in).

    Args:
        hub: The hub whose listeners receive the audio.
        bitrate: Opus bitrate (None: libopus's default for the rate and channels).
    """

    def __init__(self, hub: RelayHub, *, bitrate: int | None = None) -> None:
        self.hub = hub
        self.bitrate = bitrate
        self._turn = anyio.Lock()  # one utterance published at a time (FIFO, as anyio's Lock)

    async def play(
        self,
        source: AsyncIterable[bytes | bytearray | memoryview | npt.NDArray[Any]],
        *,
        format: str | None = "pcm",
        pcm_rate: int | None = None,
        pcm_channels: int | None = None,
        pcm_format: str | None = None,
        expected_duration: float | None = None,
        text: str = "",
        voice: str | None = None,
        on_head: HeadCallback | None = None,
    ) -> RelayResult:
        """Relay one source as one utterance; return when it has been published.

        A call made while another one publishes on this sink waits for it to end.

        Args:
            source: PCM blocks (bytes in ``pcm_format``, or float32 arrays shaped
                ``(frames, channels)``), or Ogg Opus bytes with ``format="ogg"``.
            format: ``"pcm"`` or ``"ogg"``.
            pcm_rate: The PCM's sample rate (required for PCM).
            pcm_channels: 1 or 2 (default 1).
            pcm_format: ``"f32le"`` (default) or ``"s16le"``.
            expected_duration: Accepted for ``Player.play`` compatibility (the relay paces by
                the audio itself).
            text: The text spoken (shown by the page).
            voice: The voice (informational).
            on_head: Called with the utterance's head when it is published (see
                `RelayHub.playhead`).

        Raises:
            UsageError: Missing rate, unsupported format, more than 2 channels.
        """
        del expected_duration
        if format == "ogg":
            data = _as_bytes(source)
            try:
                async with self._turn:
                    return await self.hub.relay_ogg(data, text=text, voice=voice, on_head=on_head)
            finally:
                with anyio.CancelScope(shield=True):
                    await data.aclose()
        if format not in (None, "pcm"):
            raise UsageError(f"the relay sink plays 'pcm' or 'ogg' sources, not {format!r}")
        rate, blocks = _to_opus_rate(source, pcm_rate, pcm_channels or 1, pcm_format or "f32le")
        try:
            async with self._turn:
                return await self.hub.relay_pcm(
                    blocks, sample_rate=rate, channels=pcm_channels or 1, text=text,
                    voice=voice, bitrate=self.bitrate, on_head=on_head,
                )
        finally:
            with anyio.CancelScope(shield=True):
                await blocks.aclose()

    @asynccontextmanager
    async def tap(
        self,
        source: AsyncIterable[bytes],
        *,
        pcm_rate: int,
        pcm_channels: int = 1,
        pcm_format: str = "f32le",
        text: str = "",
        voice: str | None = None,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Pass PCM through unchanged while relaying a copy (local device *and* browsers)::

            async with sink.tap(pcm, pcm_rate=48000, text=text) as pcm:
                await player.play(pcm, format="pcm", pcm_rate=48000, pcm_format="f32le")

        The copy is handed over without waiting (the source's consumer sets the pace); the
        block exits once the relay has published everything, and cancelling it ends the
        utterance for the listeners (``"stopped"``).
        """
        send, receive = anyio.create_memory_object_stream[bytes](math.inf)

        async def copies() -> AsyncGenerator[bytes, None]:
            async with receive:
                async for block in receive:
                    yield block

        async def tapped() -> AsyncGenerator[bytes, None]:
            with send:
                async for block in source:
                    send.send_nowait(bytes(block))
                    yield block

        passing = tapped()
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                self._play_quietly, copies(), pcm_rate, pcm_channels, pcm_format, text, voice
            )
            try:
                yield passing
            finally:
                with anyio.CancelScope(shield=True):
                    await passing.aclose()
                send.close()

    async def _play_quietly(
        self, blocks: AsyncGenerator[bytes, None], rate: int, channels: int, fmt: str, text: str,
        voice: str | None,
    ) -> None:
        try:
            await self.play(
                blocks, pcm_rate=rate, pcm_channels=channels, pcm_format=fmt, text=text,
                voice=voice,
            )
        except ProtocolError:
            pass  # the source was empty: nothing to relay
        finally:
            with anyio.CancelScope(shield=True):
                await blocks.aclose()


async def _as_bytes(
    source: AsyncIterable[bytes | bytearray | memoryview | npt.NDArray[Any]],
) -> AsyncGenerator[bytes, None]:
    async for block in source:
        yield bytes(block)


def _to_opus_rate(
    source: AsyncIterable[bytes | bytearray | memoryview | npt.NDArray[Any]],
    rate: int | None,
    channels: int,
    fmt: str,
) -> tuple[int, AsyncGenerator[Pcm, None]]:
    """PCM of any format and rate as float32 blocks at a rate Opus encodes."""
    if rate is None or rate <= 0:
        raise UsageError("a PCM source needs its sample rate (pcm_rate=)")
    if channels not in (1, 2):
        raise UsageError(f"the relay carries 1 or 2 channels, not {channels}")
    dtype = _PCM_DTYPES.get(fmt)
    if dtype is None:
        raise UsageError(f"pcm_format must be one of {sorted(_PCM_DTYPES)}, not {fmt!r}")
    resampler = None
    if rate not in OPUS_SAMPLE_RATES:
        from .resample import Resampler

        resampler = Resampler(rate, SAMPLE_RATE, channels)

    async def blocks() -> AsyncGenerator[Pcm, None]:
        async for block in source:
            if isinstance(block, np.ndarray):
                array = np.asarray(block, np.float32).reshape(-1, channels)
            else:
                raw = np.frombuffer(block, dtype=dtype).reshape(-1, channels)
                array = raw.astype(np.float32)
                if dtype == "<i2":
                    array *= np.float32(1 / 32768)
            yield array if resampler is None else resampler.process(array)
        if resampler is not None:
            yield resampler.flush()

    return (rate if resampler is None else SAMPLE_RATE), blocks()
