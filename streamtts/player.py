"""`Player`: play streamed audio (Ogg Opus, WAV, raw PCM) as it arrives, without stutter.

How it works. ``play(source)`` runs two tasks for its source: a *receiver* that pulls bytes from
the source into a small queue (timestamps the arrivals, keeps the network drained while we
decode) and the *decoder* (the ``play()`` task itself) that feeds the format reader and writes
float32 frames into the lock-free `RingBuffer`, waiting while the ring is full (back-pressure).
The PortAudio callback (`streamtts.device`) copies from the ring; it only bumps counters.

A *poller* task owned by the player reads those counters every `POLL_INTERVAL`: it builds the
timeline of runs (ring index ↔ output frame index) from the callback's start/stall records, asks
the start policy (`streamtts.policy.StartPolicy`) whether to start or restart, turns stalls into
`Underrun` events once their silence is known, and declares a source finished only when its last
frame has really left the device (output frames ≥ its end + the output latency + one block),
because PortAudio drops the last blocks of a stopped stream. The stream keeps running (silence)
between sources, so sources queued by concurrent ``play()`` calls follow one another with no gap.

A *control* task starts the output stream when the policy first says start, with the audio
already queued (a running idle stream would make it wait behind a device buffer of silence), and
stops it once everything played has left the device and nothing else is playing, so the next
source also starts at once (`streamtts.device`).

Opening the device (~13 ms here, more on a loaded machine) is kept off the first sound's path.
A player given no ``sample_rate`` opens it in the background as soon as it is entered, at
`SPECULATIVE_RATE` (48 kHz: every Ogg Opus stream decodes at it natively, and it is the usual
device rate): a source that fits (any Opus; WAV or PCM at 48 kHz; the channel count opened)
plays on it at once; any other source gets a device opened at its own rate, as if there had
been no speculative open, and the unused one is closed in the background. A speculative open
that fails raises nothing: the source that needs the device opens it itself and reports why.

Every ring index is absolute, so the ring index doubles as "frames of audio played": events'
``position`` is that index.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeAlias

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import httpx
import numpy as np
import numpy.typing as npt

from ._backends import load_sounddevice, release_free_heap
from ._eventstream import EventStream
from ._httpclose import close_streamed_response
from .device import BLOCK_SECONDS, DEVICE_LATENCY, OPEN_TIMEOUT, DeviceOutput
from .errors import (
    AudioDeviceError,
    BackendUnavailable,
    ProtocolError,
    StreamInterrupted,
    StreamTimeout,
    StreamTTSError,
    TransportError,
    UnsupportedFormat,
    UsageError,
)
from .events import (
    Event,
    PlaybackError,
    PlaybackFinished,
    PlaybackRecovered,
    PlaybackStarted,
    PlaybackStopped,
    SourceEvent,
    SourceFinished,
    Underrun,
)
from .formats import AudioReader, MediaType, make_reader, parse_content_type, sniff
from .opus import SAMPLE_RATES as OPUS_SAMPLE_RATES
from .policy import StartPolicy
from .resample import Conformer

__all__ = ["EventStream", "PlaybackResult", "Player", "PlayerStats", "Source"]

#: How often the poller reads the callback's counters, in seconds. 5 ms is a fraction of a
#: typical 10–20 ms block, so starts, restarts and the end are seen within a block, and cheap
#: (a few hundred µs of Python per second).
POLL_INTERVAL = 0.005

#: Shortest sleep of the poller when it wakes for a known moment (a source's last frame leaving
#: the device, the stream's stop): a moment that has just passed (the round ran late) must not
#: make it spin; half a millisecond is far below what a play() return or a start can notice.
MIN_POLL_SLEEP = 0.0005

#: The poller's longest sleep while the output plays. While it plays, the poller is needed only
#: when the ring may run dry or a source's last frame is read (`Player._poll_interval` sleeps
#: until one POLL_INTERVAL before the nearer of the two); this bounds the sleep for what has no
#: moment: a lost device (`DeviceOutput.fault` needs a look well within STALL_TIMEOUT / 2) and
#: the callback clock's window (several samples per CLOCK_WINDOW, 2 s).
#: Every round is an event-loop wake-up, and a wake-up costs far more than the round's own work
#: (here, a 2-vCPU VM: ~130 µs of CPU for a bare asyncio sleep round, ~240 µs for a poller
#: round, of which `_poll_once` is ~40 µs): the rounds are what the player costs while it plays.
#: Measured (benchmarks/bench_player.py ``cpu_while_playing``, 8 s pre-buffered tone, medians;
#: a bare sounddevice stream 0.8–1.0 %): the earlier rule (5 ms rounds within 0.5 s of a dry
#: ring or a source's end, else 0.1 s) 1.3–1.4 %, 15 wake-ups/s; this rule with a 0.25 s cap
#: 1.15 %, 0.5 s cap 1.0–1.1 %, 2 wake-ups/s. Back-to-back 2.5 s sources: 2.1 % → 1.07 %.
STEADY_POLL_INTERVAL = 0.5

#: Bytes handed to the format reader at once. A big chunk (a whole file) is decoded in slices
#: with a checkpoint between them, so the event loop (and the poller) never waits more than a few
#: milliseconds (4 kB of 32 kbps Opus is ~1 s of audio, ~4 ms to decode here).
FEED_CHUNK = 4096

#: Bytes read at once from a file or a bytes source: large enough for few syscalls, small enough
#: that the first audio is decoded before the whole file is read.
READ_CHUNK = 16384

#: Chunks the receiver may hold ahead of the decoder. Bounded so that a stalled output pushes
#: back on the network (TCP flow control), large enough to absorb a burst of small HTTP chunks.
RECEIVE_QUEUE = 64

#: Ring capacity in seconds: more than any start policy's preroll, and enough to take a fast
#: server's burst whole, so the arrival rate the policy measures is the network's and not our
#: back-pressure's. 10 s of 48 kHz mono float32 is 1.9 MB.
RING_SECONDS = 10.0

#: Events kept per subscriber; a slower consumer loses the oldest ones (counted), never audio.
EVENT_QUEUE = 256

#: Seconds allowed for cleanup (closing a source, stopping the stream) once cancelled.
CLOSE_TIMEOUT = 2.0

#: Seconds the stream keeps running after the last audio has left the device, by its clock,
#: before it is stopped (idle), or stopped and started again for a source that came meanwhile
#: (a later ``play()`` waits for it: it is what later plays pay over the first). Stopping aborts
#: whatever the device and the sound server still hold, so it must not come before the last
#: frame has really been played. Measured here (PulseAudio null sink, recorded; the stop asked
#: for N ms after the device time of the last frame; latencies 40 ms, 100 ms, "low"; idle and
#: with a core busy): N = -5 lost a 10 ms block in 6 runs of 18, N = -4 and -3 in 2 of 24,
#: N = -2 to +10 in none of 66. One block (10 ms) of margin over that edge covers the clock's
#: error; the 30 ms used before cost every later play ~25 ms of first-sound latency.
STOP_GUARD = 0.01

#: Rate of the device a player given no ``sample_rate`` opens speculatively on entry. Every Ogg
#: Opus stream decodes natively at 48 kHz whatever rate it was encoded from, and 48 kHz is the
#: usual rate of sound servers and devices (no resampling anywhere): so the first Opus source
#: never waits for an open. WAV and PCM at another rate (OpenAI's 24 kHz) get their own device,
#: at their rate, as soon as it is known (WAV: its header; raw PCM: the ``play()`` call), so a
#: first source is never resampled; that open skips the probe (`streamtts.device`).
SPECULATIVE_RATE = 48000

#: After a stream start, the device's consumption is not measured as a burst for this long: the
#: start takes a whole device buffer at once (`DeviceOutput.start_fill`), once, and counting it
#: would make every restart in the next `BURST_MEMORY` seconds wait for that much more audio.
START_SETTLE = 0.03

#: Seconds over which the device's largest burst of consumption is remembered. Sound servers
#: take audio in bursts (PulseAudio through ALSA: ~20 ms at 40 ms latency, ~50 ms at 250 ms,
#: several callbacks back to back) and a loaded event loop sees bigger ones; 2 s keeps the
#: recent worst without holding on to one hiccup for a whole conversation.
BURST_MEMORY = 2.0

Frames: TypeAlias = npt.NDArray[np.float32]
Source: TypeAlias = (
    AsyncIterable[bytes] | bytes | bytearray | memoryview | str | os.PathLike[str] | httpx.Response
)
LatencySpec: TypeAlias = Literal["low", "adaptive"] | float | StartPolicy


@dataclass(frozen=True, slots=True)
class PlaybackResult:
    """What ``play()`` returns once the source's last sample has been played.

    Attributes:
        source: Number of the ``play()`` call on this player (0, 1, …).
        sample_rate: Device rate the frames are counted at.
        frames: Frames of the source played.
        requested_at: ``time.monotonic()`` when ``play()`` was called.
        started_at: Monotonic time the first sample reached the device (None: no audio).
        finished_at: Monotonic time the last sample left the device (None: no audio).
        underruns: Underruns inside the source.
        underrun_ms: Total silence they inserted.
    """

    source: int
    sample_rate: int
    frames: int
    requested_at: float
    started_at: float | None
    finished_at: float | None
    underruns: int
    underrun_ms: float

    @property
    def duration(self) -> float:
        """Seconds of audio played."""
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def first_sound_latency(self) -> float | None:
        """Seconds from the ``play()`` call to the first sample at the device."""
        return None if self.started_at is None else self.started_at - self.requested_at


@dataclass(frozen=True, slots=True)
class PlayerStats:
    """A snapshot of the player (`Player.stats`).

    Attributes:
        frames_played: Frames of audio taken by the device so far (silence excluded).
        buffered_ms: Audio buffered ahead of the device.
        underruns: Underruns so far (all sources).
        underrun_ms: Total silence they inserted.
        arrival_rate: Audio seconds received per second for the current source (None: unknown).
        playing: True while the device plays audio (False while idle or stalled).
        device_underflows: Times PortAudio reported ``output_underflow`` (a late callback).
        events_dropped: Events lost by slow ``events()`` consumers.
        sample_rate: Device rate (0 before the device is open).
    """

    frames_played: int
    buffered_ms: float
    underruns: int
    underrun_ms: float
    arrival_rate: float | None
    playing: bool
    device_underflows: int
    events_dropped: int
    sample_rate: int


@dataclass(eq=False)
class _Run:
    """A stretch the callback played without stopping: ring frames [start, end) → output."""

    start: int
    out: int
    end: int | None = None


@dataclass(eq=False)
class _Src:
    """Bookkeeping of one ``play()`` call."""

    index: int
    requested_at: float
    policy: StartPolicy
    done: anyio.Event = field(default_factory=anyio.Event)
    begin: int | None = None  # ring index of its first frame
    end: int | None = None  # ring index after its last frame, once complete
    complete: bool = False
    cancelled: bool = False
    pending_bytes: int = 0  # received, not yet decoded
    started_at: float | None = None
    finished_at: float | None = None
    announced: bool = False  # PlaybackStarted emitted
    underruns: int = 0
    underrun_ms: float = 0.0
    error: BaseException | None = None
    decoding: anyio.CancelScope | None = None  # its receive/decode tasks (a lost device ends them)


@dataclass(frozen=True, slots=True)
class _PcmParams:
    rate: int
    channels: int
    sample_format: str


@dataclass(eq=False)
class _DecodeState:
    reader: AudioReader | None = None
    conv: Conformer | None = None
    head: bytes = b""
    arrived: float = 0.0  # time.monotonic() when the chunk being decoded was received


@dataclass(eq=False)
class _Stall:
    read: int
    out: int
    observed: float
    cause: str
    source: _Src | None


class Player:
    """Plays audio streams on one output stream, one after another, as their bytes arrive.

    Use it as an async context manager (asyncio or trio)::

        async with Player() as player:
            result = await player.play(response)       # httpx response, bytes, path, async iter

    * ``play()`` returns once the source's last sample has left the device (not when its bytes
      are in), with the device times of the first and last samples.
    * Concurrent ``play()`` calls are queued in call order; each source follows the previous
      one with no silence in between (the next is decoded while the previous plays).
    * Cancelling a ``play()`` fades its audio out within one block (what the device already
      holds, its output latency, still plays out), closes the source, emits `PlaybackStopped`
      with the frames heard, and re-raises the cancellation.
    * ``async for event in player.events()``: `PlaybackStarted`, `Underrun`,
      `PlaybackRecovered`, `SourceFinished`, `PlaybackFinished`, `PlaybackStopped`,
      `PlaybackError` and the readers' stream events wrapped in `SourceEvent`. ``stats()`` is a
      snapshot of the counters.
    * A lost device (the sound server went away, the device was unplugged) ends every
      ``play()`` with `AudioDeviceError` (and a `PlaybackError` event) instead of waiting
      forever; the player cannot play any more: open a new one once the device is back.

    Args:
        device: Output device index or (part of its) name; None for the default output.
        latency: Start policy: ``"adaptive"`` (measures the arrival rate and uses
            ``expected_duration``, so slow links play through), ``"low"`` (start as soon as
            possible), seconds of fixed preroll, or a `StartPolicy`.
        blocksize: Frames per device callback (None: 10 ms; 0: PortAudio chooses).
        device_latency: PortAudio's output latency: seconds (default 100 ms, safe on a busy
            machine), ``"low"`` or ``"high"``.
        sample_rate: Open the device at this rate on entering (default: the first source's rate;
            later sources at other rates are resampled). Without it the device is opened in
            the background on entering, at 48 kHz and ``channels`` (default mono), and used if
            the first source fits it (Ogg Opus always); otherwise a device at the first
            source's rate and channels is opened when its header is in.
        channels: Device channels (default: the first source's).
        ring_seconds: Capacity of the buffer between decoding and the device.
    """

    def __init__(
        self,
        device: int | str | None = None,
        *,
        latency: LatencySpec = "adaptive",
        blocksize: int | None = None,
        device_latency: float | str = DEVICE_LATENCY,
        sample_rate: int | None = None,
        channels: int | None = None,
        ring_seconds: float = RING_SECONDS,
    ) -> None:
        block = blocksize / (sample_rate or 48000) if blocksize else BLOCK_SECONDS
        self._policy = _make_policy(latency, block)
        self._device_name = device
        self._blocksize = blocksize
        self._device_latency = device_latency
        self._open_rate = sample_rate
        self._open_channels = channels
        self._ring_seconds = ring_seconds
        self._device: DeviceOutput | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._poll_scope: anyio.CancelScope | None = None  # made in the poller (needs a loop)
        self._control_scope: anyio.CancelScope | None = None  # made in the control task
        self._entered = False
        self._closed = False
        self._lock = anyio.Lock()
        self._open_lock = anyio.Lock()
        self._next_index = 0
        self._active: list[_Src] = []  # sources with audio in or headed for the ring, in order
        self._writer: _Src | None = None
        self._runs: list[_Run] = []
        self._seen_starts = 0
        self._seen_stalls = 0
        self._synced_read = 0  # ring read index when the runs were last synced
        self._last_frames_out = 0
        self._steady_round = False  # the last poller round slept longer than POLL_INTERVAL
        self._poll_nap: anyio.CancelScope | None = None  # a long poller sleep (_wake_poller)
        self._control_wake = anyio.Event()  # wakes the control task (start/stop the stream)
        self._poll_wake = anyio.Event()  # wakes the poller early (a stream start)
        self._started_stream_at = 0.0  # monotonic time of the latest stream start
        self._restart_wanted = False  # restart the idle running stream for a new source
        self._open_early: tuple[int, int] | None = None  # (rate, channels) to open the device at
        # The speculative open (see the module doc): its result, failure and completion, and
        # the scope of its shielded open (cancelled only by aclose giving up on a hung open).
        self._spare: DeviceOutput | None = None
        self._spare_error: StreamTTSError | None = None
        self._spare_done: anyio.Event | None = None
        self._spare_scope: anyio.CancelScope | None = None
        self._unused: DeviceOutput | None = None  # a speculative device to close (a task)
        self._bursts: deque[tuple[float, int]] = deque()  # (poll time, frames taken since last)
        self._burst = 0  # most frames the device took between two polls within BURST_MEMORY
        self._due = math.inf  # the next known moment the poller must act at (monotonic)
        self._stalls: dict[int, _Stall] = {}
        self._progress = anyio.Event()
        self._subscribers: list[EventStream[Event]] = []
        self._events_dropped = 0
        self._underruns = 0
        self._underrun_ms = 0.0
        self._device_error: str | None = None  # why the device was lost (DeviceOutput.fault)

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Player:
        if self._entered:
            raise UsageError("a Player can be entered only once")
        self._entered = True
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        try:
            # Initialise PortAudio now (off the loop), not when the first audio is waiting. If
            # it hangs (a stuck sound server), opening the device reports it, with its timeout.
            with anyio.move_on_after(OPEN_TIMEOUT):
                await anyio.to_thread.run_sync(_warm_up_backend, abandon_on_cancel=True)
            _collect_garbage_now()
            if self._open_rate is not None:
                await self._open_device(self._open_rate, self._open_channels or 1)
            else:
                self._spare_done = anyio.Event()  # the control task opens it first thing
            tg.start_soon(self._poll_forever)
            tg.start_soon(self._control_forever)
        except BaseException as exc:
            tg.cancel_scope.cancel()
            await tg.__aexit__(type(exc), exc, exc.__traceback__)
            self._tg = None
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        # Cut the output at once only if a source is still playing or queued. When the body
        # raised after its sources were played (e.g. play() raising StreamInterrupted once the
        # audio that arrived has been heard), a hard abort would drop the last block still in
        # the sound server's buffer (seen on PulseAudio: the last 168 frames of the stream).
        await self.aclose(abort=exc_type is not None and bool(self._active))
        tg, self._tg = self._tg, None
        if tg is not None:
            # The body's own exception propagates unchanged (not wrapped in an ExceptionGroup):
            # the poller, the only child, has been cancelled and ends at once.
            await tg.__aexit__(None, None, None)
        return None

    async def aclose(self, *, abort: bool = False) -> None:
        """Stop playing and release the device (idempotent).

        Audio still queued is dropped: a source playing now is faded out within one block, and
        unless ``abort`` is set, what was already handed to the device (its output latency,
        ~40 ms) is let out before the stream closes, so the output ends without a click and the
        ``frames_heard`` reported were really heard. ``abort`` (used when the ``async with``
        body raised or was cancelled) cuts the output at once.

        Runs shielded from cancellation, bounded by `CLOSE_TIMEOUT`. Pending ``play()`` calls
        raise `UsageError`.
        """
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            await self._close_spare()
            with anyio.move_on_after(CLOSE_TIMEOUT):
                if self._device is not None:
                    if not abort:
                        await self._let_out(self._device)
                    # After _let_out only silence is queued: stop() (which lets PortAudio's
                    # buffers play out, but for the last blocks) also covers a sound server
                    # buffering more than the latency PortAudio reports.
                    await self._device.close(abort=abort)
            for src in self._active:
                src.done.set()
            self._progress.set()
            for sub in list(self._subscribers):
                sub._end()
            if self._poll_scope is not None:
                self._poll_scope.cancel()
            if self._control_scope is not None:
                self._control_scope.cancel()

    @property
    def sample_rate(self) -> int | None:
        """The device rate, once the device is open."""
        return self._device.sample_rate if self._device is not None else None

    @property
    def device_output(self) -> DeviceOutput | None:
        """The underlying device edge (its counters are public; for diagnostics and tests)."""
        return self._device

    def played_at(self, position: int) -> float | None:
        """When ring frame ``position`` (an events' ``position``) reaches the device.

        Exact across underruns and source boundaries (it uses the callback's record of every
        start and stall), up to the callback clock's precision.

        Returns:
            A ``time.monotonic()`` value (in the near future for frames still in the device's
            buffer), or None if the frame has not been taken by the device (or was dropped).
        """
        dev = self._device
        if dev is None:
            return None
        self._sync_runs(time.monotonic())
        out = self._out_index(position)
        return None if out is None else dev.device_time(out)

    def events(self, maxlen: int = EVENT_QUEUE) -> EventStream[Event]:
        """Subscribe to the player's events from now on (``async for e in player.events()``)."""
        stream: EventStream[Event] = EventStream(
            maxlen, unsubscribe=self._unsubscribe, on_drop=self._count_dropped_event
        )
        if self._closed:
            stream._end()
        else:
            self._subscribers.append(stream)
        return stream

    def _unsubscribe(self, stream: EventStream[Event]) -> None:
        if stream in self._subscribers:
            self._subscribers.remove(stream)

    def _count_dropped_event(self) -> None:
        self._events_dropped += 1

    def stats(self) -> PlayerStats:
        """A snapshot of counters: frames played, buffered audio, underruns, arrival rate."""
        dev = self._device
        current = self._writer or (self._active[-1] if self._active else None)
        if dev is None:
            return PlayerStats(0, 0.0, self._underruns, self._underrun_ms,
                               current.policy.arrival_rate if current else None,
                               False, 0, self._events_dropped, 0)
        return PlayerStats(
            frames_played=dev.ring.read_index,
            buffered_ms=1000.0 * dev.ring.readable() / dev.sample_rate,
            underruns=self._underruns,
            underrun_ms=self._underrun_ms,
            arrival_rate=current.policy.arrival_rate if current else None,
            playing=dev.playing,
            device_underflows=dev.underflows,
            events_dropped=self._events_dropped,
            sample_rate=dev.sample_rate,
        )

    # ------------------------------------------------------------------ play
    async def play(
        self,
        source: Source,
        *,
        format: str | None = None,
        expected_duration: float | None = None,
        pcm_rate: int | None = None,
        pcm_channels: int | None = None,
        pcm_format: str | None = None,
    ) -> PlaybackResult:
        """Play one source to its last sample; concurrent calls are queued in call order.

        The next queued source starts right after this one's last frame, with no silence.

        Args:
            source: An async iterable of bytes, bytes, a file path, or an ``httpx.Response``
                (streamed; closed when done or cancelled). Objects with ``aclose()`` are closed.
            format: ``"ogg"``/``"opus"``, ``"wav"`` or ``"pcm"``; None: detected from the first
                bytes (or the response's Content-Type).
            expected_duration: Seconds of audio expected (e.g. estimated from the text); lets
                the adaptive policy start early enough and late enough.
            pcm_rate: Sample rate of raw PCM (default: the Content-Type's, else 24000 as
                OpenAI sends it).
            pcm_channels: Channels of raw PCM (default: the Content-Type's, else 1).
            pcm_format: Sample layout of raw PCM, e.g. ``"s16le"`` (the default), ``"f32le"``.

        Returns:
            The timings and counts, once the last sample has been played.

        Raises:
            ProtocolError: The bytes are not a playable stream (after playing what was valid).
            TransportError: The source failed mid-way (after playing what had arrived).
            AudioDeviceError: The device could not be opened or failed.
            UsageError: The player is not open, or was closed while this played.
        """
        now = time.monotonic()
        if not self._entered or self._closed:
            raise UsageError("play() needs an open Player: use 'async with Player() as p'")
        self._check_device()
        if format is not None:
            format = format.lower()
            if format == "opus":
                format = "ogg"
            if format not in ("ogg", "wav", "pcm"):
                raise UsageError(f"unknown format {format!r}: use 'opus', 'wav' or 'pcm'")
        chunks, content_type, closer = _open_source(source)
        media = parse_content_type(content_type)
        pcm = _PcmParams(
            rate=pcm_rate or (media.sample_rate if media and media.sample_rate else 24000),
            channels=pcm_channels or (media.channels if media and media.channels else 1),
            sample_format=pcm_format
            or (media.sample_format if media and media.sample_format else "s16le"),
        )
        if format == "pcm" and self._device is None and not self._active:
            # Raw PCM's rate is known before its first byte: open the device now, while the
            # request is on its way (as for a header: `_feed`).
            self._open_early = (pcm.rate, self._open_channels or pcm.channels)
            self._control_wake.set()
        src = _Src(self._next_index, now, self._policy)
        self._next_index += 1
        try:
            async with self._lock:
                if self._closed:
                    raise UsageError("the player was closed")
                self._check_device()  # lost while this waited: its source may never end
                src.policy.reset(time.monotonic(), expected_duration=expected_duration)
                self._writer = src
                self._active.append(src)
                try:
                    await self._decode(src, chunks, format, media, pcm)
                except (TransportError, ProtocolError) as exc:
                    src.error = exc  # play what arrived, then raise it
                except BaseException:
                    src.cancelled = True
                    self._complete(src)
                    raise
                self._complete(src)
            await self._close_source(closer)
            while not src.done.is_set():
                await src.done.wait()
            if src.finished_at is None:
                self._check_device()
            if self._closed and src.finished_at is None and src.begin is not None:
                raise UsageError("the player was closed while this source played")
            if src.error is not None:
                raise src.error
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
                await self._stop_source(src)
                await self._close_source(closer)
            raise
        except BaseException as exc:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
                await self._close_source(closer)
                await self._stop_source(src, emit=False)
            if isinstance(exc, Exception):
                self._emit(PlaybackError(time.monotonic(), self._position(), src.index,
                                         type(exc).__name__, str(exc)))
            raise
        finally:
            if src in self._active and src.done.is_set():
                self._active.remove(src)
        return self._result(src)

    def _check_device(self) -> None:
        """Raise `AudioDeviceError` if the device was lost (the poller closed it)."""
        if self._device_error is not None:
            raise AudioDeviceError(
                f"{self._device_error}. This player cannot play any more: open a new one "
                "once the device is back"
            )

    def _result(self, src: _Src) -> PlaybackResult:
        dev = self._device
        frames = 0
        if src.begin is not None and src.end is not None:
            frames = src.end - src.begin
        return PlaybackResult(
            source=src.index,
            sample_rate=dev.sample_rate if dev is not None else 0,
            frames=frames,
            requested_at=src.requested_at,
            started_at=src.started_at,
            finished_at=src.finished_at,
            underruns=src.underruns,
            underrun_ms=src.underrun_ms,
        )

    async def _close_source(self, closer: Callable[[], Awaitable[Any]] | None) -> None:
        if closer is not None:
            with contextlib.suppress(Exception):  # a broken source must not mask the result
                await closer()

    async def _stop_source(self, src: _Src, *, emit: bool = True) -> None:
        """Drop a source's unplayed audio (fading out), report what was heard (shielded)."""
        if src.done.is_set() and src.finished_at is not None:
            return
        src.cancelled = True
        self._complete(src)
        dev = self._device
        heard = 0
        if dev is not None and src.begin is not None and src.end is not None:
            stopped_at = dev.ring.read_index
            if stopped_at < src.end:
                dev.flush(to=src.end)
                self._wake_poller()  # what plays next (a stop, a restart) is due within a block
                while dev.flushes_done != dev.flush_requests and dev.is_open:
                    await self._next_poll()
                if dev.flushes_done == dev.flush_requests:
                    stopped_at = dev.flush_read
                self._poll_once()
            heard = max(0, min(stopped_at, src.end) - src.begin)
        src.done.set()
        if src in self._active:
            self._active.remove(src)
        if emit:
            self._emit(PlaybackStopped(time.monotonic(), self._position(), src.index, heard,
                                       "cancelled"))

    async def _let_out(self, dev: DeviceOutput) -> None:
        """Fade out what plays, then wait until the audio handed to the device has left it."""
        if not dev.is_open:
            return
        if dev.playing or dev.ring.readable():
            dev.flush()
            self._wake_poller()
            while dev.flushes_done != dev.flush_requests and dev.is_open:
                await self._next_poll()
        self._poll_once()
        last = 0
        if self._runs:
            run = self._runs[-1]
            last = dev.frames_out if run.end is None else run.out + run.end - run.start
        margin = _drain_margin(dev)
        while dev.is_open and dev.running and dev.frames_out < last + margin:
            await self._next_poll()

    async def _next_poll(self) -> None:
        """Wait for the poller's next round, or one `POLL_INTERVAL` if it does not come.

        The cleanup paths (a cancelled ``play()``, `aclose`) run shielded and wait for the
        callback's counters, which move without the poller: when the scope around the whole
        player was cancelled, the poller is already gone, and waiting for it would stall each
        cleanup until its timeout.
        """
        with anyio.move_on_after(POLL_INTERVAL):
            await self._progress.wait()

    def _complete(self, src: _Src) -> None:
        """The source will write nothing more: mark its end in the ring, tell the policy."""
        if src.complete:
            return
        src.complete = True
        writing = self._writer is src
        dev = self._device
        if writing:
            self._writer = None
            if dev is not None and src.begin is not None:
                src.end = dev.ring.write_index
                dev.end_mark = src.end
            # The policy is the player's (it keeps the link's priors); it follows the source
            # being written, so only that source may end it.
            src.policy.on_end(time.monotonic())
        if src.begin is None:  # no audio at all: nothing to wait for
            src.done.set()
        if not src.cancelled and src.error is None:
            self._emit(SourceFinished(time.monotonic(), self._position(), src.index,
                                      (src.end or 0) - (src.begin or 0)))
        self._maybe_start(time.monotonic())

    # ------------------------------------------------------------------ decoding
    async def _decode(
        self,
        src: _Src,
        chunks: AsyncIterator[bytes],
        fmt: str | None,
        media: MediaType | None,
        pcm: _PcmParams,
    ) -> None:
        """Receive, decode and write one source into the ring (raises what the source raised)."""
        send, recv = anyio.create_memory_object_stream[tuple[float, bytes]](RECEIVE_QUEUE)
        state = _DecodeState()
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            src.decoding = tg.cancel_scope
            tg.start_soon(self._receive, src, chunks, send)
            async with recv:
                try:
                    async for arrived, data in recv:
                        state.arrived = arrived
                        await self._decode_chunk(src, state, data, fmt, media, pcm)
                except Exception as exc:  # raised below, outside the task group (no group)
                    failure = exc
                    tg.cancel_scope.cancel()
        src.decoding = None
        self._check_device()  # `_lose_device` ended the wait for the source's bytes
        if failure is not None:
            raise failure
        if state.reader is None and state.head and src.error is None:
            kind = _resolve_format(fmt, state.head, media, final=True)
            assert kind is not None
            state.reader = self._make_reader(kind, pcm)
            await self._feed(src, state, state.head)
        if state.reader is not None:
            for block in state.reader.close():
                await self._push(src, state, block)
            self._forward_events(src, state.reader)
            if state.conv is not None:
                tail = state.conv.flush()
                if tail.shape[0]:
                    await self._write(src, tail)
        if src.error is not None:
            err, src.error = src.error, None
            raise err

    async def _decode_chunk(
        self,
        src: _Src,
        state: _DecodeState,
        data: bytes,
        fmt: str | None,
        media: MediaType | None,
        pcm: _PcmParams,
    ) -> None:
        if state.reader is None:
            state.head += data
            kind = _resolve_format(fmt, state.head, media)
            if kind is None:
                return
            state.reader = self._make_reader(kind, pcm)
            data, state.head = state.head, b""
        await self._feed(src, state, data)

    async def _feed(self, src: _Src, state: _DecodeState, data: bytes) -> None:
        reader = state.reader
        assert reader is not None
        for i in range(0, len(data), FEED_CHUNK):
            piece = data[i : i + FEED_CHUNK]
            blocks = reader.feed(piece)
            src.pending_bytes -= len(piece)
            if self._device is None and reader.sample_rate and reader.channels:
                self._open_early = (reader.sample_rate, self._open_channels or reader.channels)
                self._control_wake.set()
            self._forward_events(src, reader)
            for block in blocks:
                await self._push(src, state, block)
            await anyio.lowlevel.checkpoint()

    async def _receive(
        self,
        src: _Src,
        chunks: AsyncIterator[bytes],
        send: anyio.abc.ObjectSendStream[tuple[float, bytes]],
    ) -> None:
        async with send:
            try:
                async for chunk in chunks:
                    if not chunk:
                        continue
                    data = bytes(chunk)
                    src.pending_bytes += len(data)
                    await send.send((time.monotonic(), data))
            except Exception as exc:
                src.error = _map_error(exc)

    def _make_reader(self, kind: str, pcm: _PcmParams) -> AudioReader:
        rate = 48000  # Opus decodes at the device rate when it can: no resampling then
        if self._device is not None and self._device.sample_rate in OPUS_SAMPLE_RATES:
            rate = self._device.sample_rate
        elif self._open_rate is not None and self._open_rate in OPUS_SAMPLE_RATES:
            rate = self._open_rate
        return make_reader(kind, sample_rate=rate, pcm_rate=pcm.rate, pcm_channels=pcm.channels,
                           pcm_format=pcm.sample_format)

    def _forward_events(self, src: _Src, reader: AudioReader) -> None:
        events = reader.pop_events()
        if events:
            now = time.monotonic()
            pos = self._position()
            for ev in events:
                self._emit(SourceEvent(now, pos, src.index, ev))

    async def _push(self, src: _Src, state: _DecodeState, block: Frames) -> None:
        reader = state.reader
        assert reader is not None
        if state.conv is None:
            rate = reader.sample_rate or 48000
            channels = reader.channels or block.shape[1]
            if self._device is None:
                await self._open_device(rate, self._open_channels or channels)
            assert self._device is not None
            state.conv = Conformer(rate, channels, self._device.sample_rate,
                                    self._device.channels)
        frames = block.shape[0]
        if frames == 0:
            return
        # The policy measures the link: the audio counts from when its bytes ARRIVED, not from
        # when we got round to decoding them (the first block waits for the device to open).
        src.policy.on_audio(state.arrived, frames / state.conv.rate_in)
        out = state.conv.process(block)
        if out.shape[0]:
            await self._write(src, out)

    async def _write(self, src: _Src, block: Frames) -> None:
        dev = self._device
        assert dev is not None
        ring = dev.ring
        self._check_device()
        if src.begin is None:
            src.begin = ring.write_index
            self._wake_poller()  # the poller may be idle: it has a source to follow now
        while True:
            n = ring.write(block)
            if n:
                self._maybe_start(time.monotonic())
            block = block[n:]
            if not block.shape[0]:
                return
            if not dev.is_open:
                self._check_device()
                raise UsageError("the player was closed")
            progress = self._progress
            await progress.wait()

    async def _open_device(self, rate: int, channels: int) -> None:
        async with self._open_lock:
            if self._device is not None:
                return
            dev = await self._take_spare(rate, channels)
            if dev is None:
                dev = self._new_device(rate, channels)
                try:
                    await dev.open()
                except AudioDeviceError:
                    if self._unused is None:
                        raise
                    # A device that opens only once at a time (an ALSA hw device): close the
                    # speculative one first, then try again.
                    unused, self._unused = self._unused, None
                    await _close_device(unused)
                    dev = self._new_device(rate, channels)
                    await dev.open()
            if self._closed:
                await dev.close()
                raise UsageError("the player was closed")
            self._device = dev

    def _new_device(self, rate: int, channels: int) -> DeviceOutput:
        return DeviceOutput(
            rate, channels, device=self._device_name, blocksize=self._blocksize,
            latency=self._device_latency, ring_seconds=self._ring_seconds,
        )

    async def _open_spare(self) -> None:
        """The speculative open (the control task's first act; see the module doc).

        The open runs shielded: left to finish (normally ~13 ms) it leaves nothing behind, while
        a cancelled one would leave its worker thread to close the stream some time later. Only
        `aclose` cancels it, when the open hangs (a stuck sound server) beyond `CLOSE_TIMEOUT`.
        """
        done = self._spare_done
        assert done is not None
        try:
            if self._closed:
                return
            dev = self._new_device(SPECULATIVE_RATE, self._open_channels or 1)
            with anyio.CancelScope(shield=True) as self._spare_scope:
                await dev.open()
            if dev.is_open:  # else aclose gave up on it: the device closes its stream itself
                self._spare = dev
        except StreamTTSError as exc:  # reported by the source that needs the device, if any
            self._spare_error = exc
        finally:
            done.set()

    async def _take_spare(self, rate: int, channels: int) -> DeviceOutput | None:
        """The speculatively opened device if it fits ``rate``/``channels``, else None.

        Waits for the speculative open if it is under way (it ends sooner than a new open
        would, and PortAudio's opens are not made concurrently). A device that does not fit is
        closed in the background, after the source's own open. A speculative open that timed
        out is not tried again: its error is raised at once.
        """
        done = self._spare_done
        if done is None:
            return None
        await done.wait()
        error = self._spare_error
        if isinstance(error, AudioDeviceError) and isinstance(error.__cause__, TimeoutError):
            raise AudioDeviceError(str(error)) from error.__cause__  # for every later caller too
        self._spare_done = None
        self._spare_error = None
        dev, self._spare = self._spare, None
        if dev is None or (dev.requested_rate == rate and dev.channels == channels):
            return dev
        if self._closed or self._tg is None:
            await _close_device(dev)
        else:
            self._unused = dev
            self._tg.start_soon(self._close_unused)
        return None

    async def _close_unused(self) -> None:
        """Close a speculative device no source could use: after the open that replaces it
        (PortAudio's opens and closes one at a time), off the path of the first sound (a
        task of its own: the control task starts the stream meanwhile)."""
        async with self._open_lock:
            dev, self._unused = self._unused, None
            if dev is not None:
                await _close_device(dev)

    async def _close_spare(self) -> None:
        """On closing: wait for a speculative open under way (bounded), close its device."""
        done = self._spare_done
        if done is not None and not done.is_set():
            with anyio.move_on_after(CLOSE_TIMEOUT):
                await done.wait()
            if not done.is_set() and self._spare_scope is not None:
                self._spare_scope.cancel()  # a hung open: DeviceOutput abandons it
        for dev in (self._spare, self._unused):
            if dev is not None:
                await _close_device(dev)
        self._spare = self._unused = None

    # ------------------------------------------------------------------ the poller
    async def _poll_forever(self) -> None:
        with anyio.CancelScope() as self._poll_scope:
            if self._closed:
                return
            while True:
                self._poll_wake = anyio.Event()  # a wake-up from now on ends an idle wait
                self._poll_once()
                if self._device_error is not None:
                    await self._lose_device()
                    return
                interval = self._poll_interval()
                # A long round's gap is not a device burst: `_measure_burst` skips it.
                self._steady_round = interval is not None and interval > POLL_INTERVAL
                if interval is None:
                    await self._poll_wake.wait()
                elif interval > POLL_INTERVAL:
                    # A long sleep that `_wake_poller` cuts short. Its cancel scope (~20 µs) is
                    # paid only on these rounds; a timed-out wait (a scope firing) costs several
                    # times more, so the fast rounds below sleep plainly.
                    with anyio.CancelScope() as self._poll_nap:
                        await anyio.sleep(interval)
                    self._poll_nap = None
                else:
                    await anyio.sleep(interval)

    def _wake_poller(self) -> None:
        """Make the poller take a round now, whether it waits idle or sleeps a long round."""
        self._poll_wake.set()
        if self._poll_nap is not None:
            self._poll_nap.cancel()

    async def _control_forever(self) -> None:
        """Start the stream when playback is asked for; stop it once idle (see the module doc).

        The only task that starts or stops the stream, so a start and a stop never overlap. It
        also opens the device: speculatively on entry (`_open_spare`), or early, as soon as a
        source's rate is known.
        """
        with anyio.CancelScope() as self._control_scope:
            if self._closed:
                return
            if self._spare_done is not None:
                await self._open_spare()
            await self._control_loop()

    async def _control_loop(self) -> None:
        while True:
            dev = self._device
            acted = False
            if dev is None and self._open_early is not None:
                # The source's rate is known (its header is in): open the device now, while
                # the first audio is still on its way (opening takes 10–50 ms).
                rate, channels = self._open_early
                self._open_early = None
                with contextlib.suppress(StreamTTSError):  # the decoder's own open reports it
                    await self._open_device(rate, channels)
                acted = True
            elif dev is not None and dev.is_open and self._device_error is None:
                try:
                    if dev.playing and not dev.running:
                        self._started_stream_at = time.monotonic()
                        self._bursts.clear()
                        self._burst = 0
                        dev.start()
                        self._wake_poller()  # follow the start at the fast rate
                        acted = True
                    elif dev.running and self._may_stop(
                        dev, time.monotonic(), restart=self._restart_wanted
                    ):
                        restart = self._restart_wanted
                        await dev.stop()
                        self._last_frames_out = dev.frames_out
                        self._restart_wanted = False
                        self._maybe_start(time.monotonic())
                        if not restart:
                            release_free_heap()  # idle: a good moment to return freed memory
                        acted = True
                except AudioDeviceError as exc:
                    self._device_error = str(exc)
                    self._wake_poller()
            if not acted:
                await self._control_wake.wait()
                self._control_wake = anyio.Event()

    def _may_stop(self, dev: DeviceOutput, now: float, *, restart: bool = False) -> bool:
        """True when the running stream may be stopped now (see `_stop_at`)."""
        stop_at = self._stop_at(dev, now, restart=restart)
        return stop_at is not None and now >= stop_at

    def _stop_at(self, dev: DeviceOutput, now: float, *, restart: bool = False) -> float | None:
        """When the running stream may be stopped: nothing plays and every frame played has
        left the device (`STOP_GUARD` after the last one), or None while it may not.
        ``restart``: to start again at once, for a new source waiting in the ring (its first
        frame would otherwise queue behind the device's buffer of silence).
        """
        if dev.playing or dev.flushes_done != dev.flush_requests:
            return None
        if dev.ring.readable() and not restart:
            return None
        read = dev.ring.read_index
        for src in self._active:
            if src.begin is None or src.done.is_set():
                continue
            if not restart or src.begin < read:
                return None  # mid-source (an underrun, or its last frames draining)
        self._sync_runs(now)
        last = 0
        if self._runs:
            run = self._runs[-1]
            if run.end is None:
                return None
            last = run.out + run.end - run.start
        return dev.device_time(last) + STOP_GUARD

    def _poll_interval(self) -> float | None:
        """`POLL_INTERVAL`, or longer (up to `STEADY_POLL_INTERVAL`) while the output plays
        and nothing can need a decision soon (see `_regular_interval`), or None while idle: no
        device yet, or a stopped one with no audio; the poller then waits for ``_poll_wake``
        (set when audio is written or the stream starts; `_wake_poller`). Shorter when
        the last round found a moment to act at before the next one (``_due``): a source's
        end (its ``play()`` returns) or the stream's stop (a later source may wait for it)."""
        interval = self._regular_interval()
        if interval is not None and self._due < math.inf:
            interval = min(interval, max(MIN_POLL_SLEEP, self._due - time.monotonic()))
        return interval

    def _regular_interval(self) -> float | None:
        dev = self._device
        if (dev is None or (not dev.running and not dev.playing)) and not any(
            src.begin is not None for src in self._active
        ):
            return None
        if dev is None or not dev.playing:
            return POLL_INTERVAL
        # While it plays, nothing can need the poller before the ring could run dry (a device
        # burst early: it takes that much at once), a queued source's first frame is read (its
        # PlaybackStarted) or a source's last frame is read (its end is then timed by ``_due``):
        # sleep until one fast round before the nearest of these.
        read = dev.ring.read_index
        ahead = dev.ring.readable() - max(0, self._burst - dev.blocksize)
        for src in self._active:
            if src.begin is not None and not src.announced:
                if read >= src.begin:
                    return POLL_INTERVAL  # its PlaybackStarted is due within a block
                ahead = min(ahead, src.begin - read)
            if src.end is None or src.done.is_set():
                continue
            if read < src.end:
                ahead = min(ahead, src.end - read)
            elif self._due == math.inf:
                return POLL_INTERVAL  # read to its end, waiting for its frames to leave
        return min(STEADY_POLL_INTERVAL,
                   max(POLL_INTERVAL, ahead / dev.sample_rate - POLL_INTERVAL))

    async def _lose_device(self) -> None:
        """The device is gone: close it, wake every waiter; their ``play()`` raise."""
        dev = self._device
        assert dev is not None
        # close() marks the device closed before it waits: every loop waiting on the device
        # (``while dev.is_open``) ends at the wake-up below. Closing a lost stream is quick.
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
            await dev.close()
        for src in self._active:
            src.done.set()
            if src.decoding is not None:
                # Its play() may be waiting for the source's next bytes, which may never come
                # (a speaker's source waits for playback to progress): it raises now.
                src.decoding.cancel()
        self._progress.set()
        self._progress = anyio.Event()

    def _position(self) -> int:
        return self._device.ring.read_index if self._device is not None else 0

    def _emit(self, event: Event) -> None:
        for sub in self._subscribers:
            sub._put(event)

    def _owner(self, frame: int) -> _Src | None:
        owner = None
        for src in self._active:
            if src.begin is not None and src.begin <= frame:
                owner = src
        return owner

    def _sync_runs(self, now: float) -> None:
        """Take the callback's new start/stall records, in the order they happened."""
        dev = self._device
        if dev is None:
            return
        # Sample the read index BEFORE the counters: every start/stall before a frame below it
        # is then already recorded (the callback records a start before it reads, and moves
        # the read index before it records a stall), so the runs account for all those frames.
        read = dev.ring.read_index
        starts, stalls = dev.starts, dev.stalls
        while self._seen_starts < starts or self._seen_stalls < stalls:
            if self._seen_stalls < self._seen_starts and self._seen_stalls < stalls:
                k = self._seen_stalls % len(dev.stall_read)
                at, out = int(dev.stall_read[k]), int(dev.stall_out[k])
                self._runs[-1].end = at
                self._on_stall(self._seen_stalls, at, out, bool(dev.stall_clean[k]), now)
                self._seen_stalls += 1
            elif self._seen_starts < starts:
                k = self._seen_starts % len(dev.start_read)
                run = _Run(int(dev.start_read[k]), int(dev.start_out[k]))
                self._runs.append(run)
                self._on_start(self._seen_starts, run, now)
                self._seen_starts += 1
            else:  # pragma: no cover - a stall is always recorded after its start
                break
        self._synced_read = read

    def _out_index(self, frame: int) -> int | None:
        """Output frame index at which ring frame ``frame`` was played (None: not played)."""
        if self._device is None:
            return None
        read = self._synced_read
        for run in reversed(self._runs):
            end = run.end if run.end is not None else read
            if run.start <= frame < end:
                return run.out + frame - run.start
        return None

    def _poll_once(self) -> None:
        dev = self._device
        if dev is None:
            return
        now = time.monotonic()
        rate = dev.sample_rate
        self._due = math.inf
        # 0. A lost device ends everything (see DeviceOutput.fault).
        if self._device_error is None:
            self._device_error = dev.fault(now)
        if self._device_error is not None:
            return
        # 1. New runs and stalls from the callback's history, in the order they happened.
        dev.observe_clock()
        self._sync_runs(now)
        read = self._synced_read

        # 2. Sources whose first frame has been played.
        for src in self._active:
            if (
                not src.announced
                and src.begin is not None
                and read > src.begin
                and dev.clock_ready  # its device time is then known to a few ms
            ):
                first = self._out_index(src.begin)
                src.announced = True
                if first is not None:
                    src.started_at = dev.device_time(first)
                    self._emit(PlaybackStarted(
                        now, src.begin, src.index,
                        1000.0 * (src.started_at - src.requested_at),
                        1000.0 * dev.ring.readable() / rate,
                        src.started_at,
                    ))
        # 3. Sources whose last frame has left the device.
        margin = _drain_margin(dev)
        for src in list(self._active):
            if not src.complete or src.done.is_set() or src.end is None or read < src.end:
                continue
            if src.begin is None or src.end == src.begin:
                src.done.set()
                continue
            last = self._out_index(src.end - 1)
            if last is None:  # flushed, never played to the end
                src.done.set()
                continue
            finished_at = dev.device_time(last + 1)
            # Both: PortAudio has taken the silence that pushes the end out of its buffers, and
            # by the clock the last sample has left the device.
            if now < finished_at:
                self._due = min(self._due, finished_at)  # play() returns then: be on time
            elif dev.frames_out >= last + 1 + margin:
                src.finished_at = finished_at
                src.done.set()
                self._active.remove(src)
                self._emit(PlaybackFinished(now, src.end, src.index, src.end - src.begin,
                                            src.underruns, src.underrun_ms))
        self._prune_runs()
        # 4. Start or restart; stop an idle stream.
        self._measure_burst(dev, now)
        self._maybe_start(now)
        stop_at = self._stop_at(dev, now, restart=self._restart_wanted) if dev.running else None
        if stop_at is not None and now >= stop_at:
            self._control_wake.set()
        elif stop_at is not None:
            self._due = min(self._due, stop_at)  # a later play() may be waiting for the stop
        self._progress.set()
        self._progress = anyio.Event()

    def _on_stall(self, k: int, read: int, out: int, clean: bool, now: float) -> None:
        if clean:
            return
        src = self._owner(read)
        if src is None or (src.complete and src.end is not None and read >= src.end):
            return
        cause = "decode" if src.pending_bytes > 0 else "network"
        self._stalls[k] = _Stall(read, out, now, cause, src)
        src.policy.on_underrun(now)

    def _on_start(self, k: int, run: _Run, now: float) -> None:
        stall = self._stalls.pop(k - 1, None)
        if stall is None or stall.source is None:
            return
        src = stall.source
        inside = (
            src.begin is not None
            and src.begin < stall.read
            and (src.end is None or stall.read < src.end)
            and run.start == stall.read
        )
        if not inside:
            return
        dev = self._device
        assert dev is not None
        silence_ms = 1000.0 * (run.out - stall.out) / dev.sample_rate
        src.underruns += 1
        src.underrun_ms += silence_ms
        self._underruns += 1
        self._underrun_ms += silence_ms
        self._emit(Underrun(stall.observed, stall.read, src.index, silence_ms, stall.cause))
        self._emit(PlaybackRecovered(now, run.start, src.index,
                                     1000.0 * dev.ring.readable() / dev.sample_rate))

    def _prune_runs(self) -> None:
        if len(self._runs) < 2:
            return
        oldest = min((s.begin for s in self._active if s.begin is not None), default=None)
        if oldest is None and self._device is not None:
            oldest = self._device.ring.read_index
        keep = [r for r in self._runs[:-1] if r.end is None or oldest is None or r.end > oldest]
        if len(keep) != len(self._runs) - 1:
            self._runs = [*keep, self._runs[-1]]

    def _maybe_start(self, now: float) -> None:
        dev = self._device
        if dev is None or not dev.is_open or dev.playing:
            return
        ring = dev.ring
        readable = ring.readable()
        if readable <= 0:
            return
        src = self._owner(ring.read_index)
        restart = src is not None and src.begin is not None and ring.read_index > src.begin
        if dev.running and not restart and self._runs and self._runs[-1].end is not None:
            # A new source on an idle running stream: its buffer is full of silence. Stop the
            # stream once the audio before has left it, and start it afresh (the control task).
            self._restart_wanted = True
            self._control_wake.set()
            return
        # The policy plans for a device taking one block at a time; a device that takes a
        # larger burst at once runs the ring dry that much earlier, so it is not counted. A
        # stopped stream takes a whole device buffer at once when it starts.
        burst = self._burst if dev.running else dev.start_fill
        lead = max(0, burst - dev.blocksize)
        if (
            src is None
            or src.complete
            or ring.writable() == 0
            or src.policy.should_start(now, max(0, readable - lead) / dev.sample_rate)
        ):
            dev.resume(fade_in=restart)
            if not dev.running:
                self._control_wake.set()

    def _measure_burst(self, dev: DeviceOutput, now: float) -> None:
        """Track the most output frames the device took between two polls, lately."""
        taken = dev.frames_out - self._last_frames_out
        self._last_frames_out = dev.frames_out
        if self._steady_round or now < self._started_stream_at + START_SETTLE:
            return
        window = self._bursts
        while window and window[0][0] < now - BURST_MEMORY:
            window.popleft()
        while window and window[-1][1] <= taken:
            window.pop()  # a monotonic deque: its head is the window's maximum
        window.append((now, taken))
        self._burst = window[0][1]


# ---------------------------------------------------------------------- helpers


def _drain_margin(dev: DeviceOutput) -> int:
    """Output frames to hand to PortAudio after a sample before it may stop: its output
    latency and one block (PortAudio drops the last blocks of a stopped stream)."""
    return round(dev.output_latency * dev.sample_rate) + dev.blocksize


async def _close_device(dev: DeviceOutput) -> None:
    """Close a device that was never used (shielded, bounded by `CLOSE_TIMEOUT`)."""
    with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
        await dev.close()


def _collect_garbage_now() -> None:
    """Run CPython's full garbage collection now, on entering, before any source.

    A full (generation 2) collection holds the GIL for as long as it walks every tracked
    object: 10–30 ms here in a process with httpx, numpy and opuslib loaded, 40–70 ms with a
    core busy. CPython starts one after a number of younger collections, i.e. at a moment set by
    the allocations made so far. Measured in `benchmarks/bench_compare.py`'s runner (fast
    trace, a core busy): the speculative device open moved it from before the request to the
    decoding of the first chunk, adding 40–70 ms to every first sound. Run on entering, it is
    paid before the request is sent, and the next one is tens of thousands of allocations away,
    well into playback, where the device's buffer (100 ms by default) rides it out.
    """
    gc.collect()


def _warm_up_backend() -> None:
    """Import sounddevice (initialises PortAudio); a missing backend is reported at open."""
    with contextlib.suppress(BackendUnavailable):
        load_sounddevice()


def _make_policy(latency: LatencySpec, block: float | None) -> StartPolicy:
    """One policy per player: it keeps the link's rate and jitter across sources."""
    if isinstance(latency, StartPolicy):
        return latency
    if latency == "adaptive":
        return StartPolicy.adaptive(block=block) if block else StartPolicy.adaptive()
    if latency == "low":
        return StartPolicy.low_latency(block=block) if block else StartPolicy.low_latency()
    if isinstance(latency, (int, float)) and not isinstance(latency, bool) and latency >= 0:
        return StartPolicy.fixed(float(latency))
    raise UsageError(f"latency must be 'adaptive', 'low' or seconds >= 0, not {latency!r}")


def _resolve_format(
    fmt: str | None, head: bytes, media: MediaType | None, *, final: bool = False
) -> str | None:
    """The reader to use: the caller's format, else the first bytes, else the Content-Type.

    Returns None while more bytes are needed; raises `ProtocolError`/`UnsupportedFormat` when
    the bytes are not playable audio.
    """
    if fmt is not None:
        return fmt
    found = sniff(head, final=final)
    if found is None:
        return None
    if found.playable:
        return found.kind
    if found.kind == "unknown" and media is not None and media.format == "pcm":
        return "pcm"  # raw PCM has no signature: the Content-Type decides
    if found.kind == "unknown":
        raise UnsupportedFormat(
            f"the source is not a recognised audio stream ({found.description}); "
            "pass format='pcm' for raw PCM"
        )
    raise found.error("audio (Ogg Opus, WAV or raw PCM)")


def _open_source(
    source: Source,
) -> tuple[AsyncIterator[bytes], str | None, Callable[[], Awaitable[Any]] | None]:
    """(chunks, content type, closer) for any accepted source.

    The closer also closes the chunk iterator when it is an async generator: one left suspended
    (play() cancelled while the receiver waited for room in its queue) would otherwise be
    finalized by the garbage collector (trio warns about it; a file would stay open till then).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        chunks = _iter_bytes(data)
        return chunks, None, chunks.aclose
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        raise UsageError(
            "play() does not fetch URLs: pass the httpx response of a streamed request "
            "(async with client.stream('GET', url) as response: await player.play(response))"
        )
    if isinstance(source, (str, os.PathLike)):
        chunks = _iter_file(os.fspath(source))
        return chunks, None, chunks.aclose
    if isinstance(source, httpx.Response):
        response = source
        body = response.aiter_bytes()

        async def close_response() -> None:
            await close_streamed_response(body, response)

        return body, response.headers.get("content-type"), close_response
    if isinstance(source, AsyncIterable):
        iterator = aiter(source)
        return iterator, None, _closer(getattr(iterator, "aclose", None),
                                       getattr(source, "aclose", None))
    raise UsageError(
        f"cannot play a {type(source).__name__}: pass bytes, a path, an async iterable of bytes "
        "or an httpx response"
    )


def _closer(
    *closers: Callable[[], Awaitable[Any]] | None,
) -> Callable[[], Awaitable[Any]] | None:
    """One closer calling each distinct one in order (each even if an earlier one raised)."""
    unique: list[Callable[[], Awaitable[Any]]] = []
    for c in closers:
        if c is not None and c not in unique:
            unique.append(c)
    if len(unique) < 2:
        return unique[0] if unique else None

    async def close_all() -> None:
        try:
            await unique[0]()
        finally:
            await unique[1]()

    return close_all


async def _iter_bytes(data: bytes) -> AsyncGenerator[bytes, None]:
    for i in range(0, len(data), READ_CHUNK):
        yield data[i : i + READ_CHUNK]
        await anyio.lowlevel.checkpoint()


async def _iter_file(path: str) -> AsyncGenerator[bytes, None]:
    async with await anyio.open_file(path, "rb") as f:
        while chunk := await f.read(READ_CHUNK):
            yield chunk


def _map_error(exc: Exception) -> BaseException:
    """Errors of a source as streamtts errors (httpx's transport errors mapped)."""
    if isinstance(exc, StreamTTSError | OSError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return _chain(StreamTimeout(f"no data from the server in time: {exc}"), exc)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.StreamError):
        return _chain(StreamInterrupted(f"the stream was interrupted: {exc}"), exc)
    if isinstance(exc, httpx.TransportError):
        return _chain(TransportError(str(exc)), exc)
    return exc


def _chain(new: BaseException, cause: BaseException) -> BaseException:
    new.__cause__ = cause
    return new

