"""The real-time edge: the one module whose code runs on the PortAudio thread.

How it works: `DeviceOutput` owns a sounddevice ``OutputStream`` whose callback copies frames
from a `RingBuffer` into ``outdata`` and zero-fills whatever is missing. The callback and the
async side never lock and never call each other; they talk through plain attributes, each written
by ONE side only, which the async side polls:

* async-owned:  ``resumes`` (start requests), ``end_mark`` (ring index where the queued audio
  truly ends), ``fade_in_next`` (fade the next start in: it follows an underrun),
  ``flush_to`` / ``flush_requests`` (drop everything before ``flush_to`` now: cancellation).
* callback-owned: ``callbacks``, ``frames_out`` (frames handed to PortAudio, silence included),
  ``silence_frames``, ``underflows`` (PortAudio's ``output_underflow`` flags), ``stalls`` and
  ``starts`` with their positions in small preallocated history arrays, ``flushes_done`` and
  ``flush_read`` (where the flushed audio stopped), ``finishes`` (PortAudio's stream-finished
  callback runs: ours, at a stop, and its own, when the device goes away). While the stream is
  stopped no callback runs, and the async side completes a flush itself (`DeviceOutput.flush`,
  `DeviceOutput.stop`).

The output is *playing* iff ``resumes > stalls``: the async side asks for a start by bumping
``resumes``; the callback stops by bumping ``stalls`` when the ring runs dry. Running dry exactly
at ``end_mark`` is the true end of the audio (no fade, not an underrun); anywhere else it is an
underrun: the last few milliseconds played are faded out and the next start is faded in, so the
gap does not click.

The stream runs only while there is audio to play. A running stream keeps the device's buffer
full: of silence while idle, so audio queued then would wait behind a whole buffer of silence (on
PulseAudio at 100 ms latency the first sample was heard ~100 ms after it was queued). A stream
*started* with audio already queued plays its first sample at once (~2–5 ms here): at the start
the device takes a whole buffer's worth in one burst (`DeviceOutput.start_fill` frames, measured
once when the stream is opened, by starting it silent), so the player starts the stream when the
ring holds at least that much (or the whole source), and stops it when nothing is left to play.
The probe costs ~8 ms of the ~13 ms an open takes here; its result is kept for the process, in
seconds (`START_BURSTS`), so opening the same output again (a player reopening at a source's
rate, the next player) skips it. Seconds, because the burst is the device's buffer, set by the
latency asked for: measured here at 16, 22.05, 24, 44.1 and 48 kHz, into 24 and 48 kHz sinks,
it was the same time at every rate within its run-to-run spread (30–40, 60–80, 120–150 and
350 ms at latencies "low", 40, 100 and 250 ms). A remembered value is only a measurement:
such a stream is first started for real audio, and a stream that cannot start then fails
`DeviceOutput.start` with the same `AudioDeviceError` as a probe would.

A lost device (the sound server killed, a USB device unplugged) is found by `DeviceOutput.fault`,
which the async side polls: PortAudio's ALSA host API ends its callback thread when the server
goes away (seen here: the stream-finished callback runs at once and no callback follows), and a
host API that just stops calling back is caught by a watchdog on the callback counter.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import numpy.typing as npt

from ._backends import load_sounddevice
from .errors import AudioDeviceError, UsageError
from .ring import RingBuffer

__all__ = ["DeviceInfo", "DeviceOutput", "list_output_devices"]

#: Length of the fade at an underrun, in seconds. 3 ms removes the click of a hard cut (a step
#: is broadband; a ramp of a few ms moves its energy below ~300 Hz) and is short enough not to be
#: heard as a fade of the speech itself.
FADE_SECONDS = 0.003

#: Entries in the stall/start history arrays. The async side reads them every few milliseconds
#: and every start needs an async request first, so more than a handful can never be pending.
HISTORY = 64

#: Seconds allowed for PortAudio to open and start a stream. Opening normally takes 10–50 ms;
#: some host APIs (ALSA's pulse plugin without a server) can block much longer or forever.
OPEN_TIMEOUT = 10.0

#: Default callback period in seconds when no blocksize is given. 10 ms: the usual period of
#: desktop audio; the start policy's block floor and the drain margin are counted in it, and a
#: shorter one only costs CPU (the callback runs Python under the GIL) without helping speech.
BLOCK_SECONDS = 0.010

#: Default PortAudio output latency in seconds. The callback needs the GIL, so on a busy machine
#: it can be late by tens of milliseconds, and a late callback is an audible gap. Measured here
#: (PulseAudio, both cores saturated by two busy processes, 4 s of audio per run): 40–80 ms
#: underflowed in about one run of three (gaps up to 210 ms), 100 ms in none of six. Speech
#: does not need less; ``device_latency="low"`` (~9 ms on PulseAudio) is there for idle machines.
DEVICE_LATENCY = 0.100

#: Longest wait for the silent start that measures `DeviceOutput.start_fill` when the stream is
#: opened. The burst takes 1–5 ms on PulseAudio; a stream that has not finished it by then is
#: measured as far as it got (the floor below still applies).
PROBE_TIMEOUT = 0.1

#: The start burst is over when the callback has been quiet this long. Shorter than any steady
#: callback period (one block, 10 ms), longer than the gaps inside the burst (< 1 ms here).
PROBE_QUIET = 0.006

#: Start bursts measured by the probe in this process, in seconds, by (PortAudio device index,
#: device name, channels, requested latency, requested blocksize, and the rate when the
#: blocksize was given in frames): what decides how much a stream takes when it starts. Written
#: by worker threads (one dict store, atomic under the GIL).
START_BURSTS: dict[tuple[int, str, int, float | str, int | None, int | None], float] = {}

#: Seconds of callback clock bounds `DeviceOutput.observe_clock` keeps: long enough to contain
#: several callback bursts (a sound server asks every 20–100 ms, and only the first callback of
#: a burst gives a tight bound), short enough that the estimate follows a drifting device.
CLOCK_WINDOW = 2.0

#: Attempts to read a consistent callback clock before using the previous one. The callback
#: rewrites it in three bytecodes, so a second attempt (after yielding the GIL) nearly always
#: succeeds; the bound keeps the event loop from spinning.
CLOCK_RETRIES = 4

#: Seconds without a callback, on a stream that should be running, after which the device is
#: declared lost. A running stream calls back every block (10 ms) even when it plays silence;
#: the longest scheduling delay seen on a saturated 2-core machine was ~0.2 s and a fresh
#: PulseAudio stream may wait ~1.8 s for its first callback, so 3 s never trips on load while
#: still ending a hung ``play()`` quickly. (A stream whose thread ENDS is detected at once.)
STALL_TIMEOUT = 3.0

NO_DEVICE_HINT = (
    "No audio device or sound server is available: start a sound server (e.g. PulseAudio; in a "
    "streamtts checkout: scripts/pulse start), pick another device (streamtts play "
    "--list-devices), or write the audio to a file instead (streamtts say --save FILE)."
)

Frames = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """An output device as PortAudio lists it.

    Attributes:
        index: PortAudio device index (pass it as ``device=``).
        name: Device name (a unique substring of it also selects it).
        hostapi: Host API name (ALSA, CoreAudio, WASAPI…).
        channels: Maximum output channels.
        default_samplerate: The device's preferred rate.
        is_default: True for the default output device.
    """

    index: int
    name: str
    hostapi: str
    channels: int
    default_samplerate: float
    is_default: bool


def list_output_devices() -> list[DeviceInfo]:
    """The output devices PortAudio can see (empty when there are none)."""
    sd = load_sounddevice()
    try:
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_out = sd.default.device[1]
    except sd.PortAudioError as exc:  # pragma: no cover - PortAudio failed to initialise
        raise AudioDeviceError(f"cannot list audio devices: {exc}") from exc
    out: list[DeviceInfo] = []
    for dev in devices:
        if dev["max_output_channels"] <= 0:
            continue
        out.append(
            DeviceInfo(
                index=int(dev["index"]),
                name=str(dev["name"]),
                hostapi=str(hostapis[dev["hostapi"]]["name"]),
                channels=int(dev["max_output_channels"]),
                default_samplerate=float(dev["default_samplerate"]),
                is_default=int(dev["index"]) == default_out,
            )
        )
    return out


class DeviceOutput:
    """One PortAudio output stream fed from a `RingBuffer` (see the module docstring).

    Create it with `open` (async; picks the rate, opens and starts the stream with a timeout),
    then drive it through the async-owned attributes and poll the callback-owned counters.

    Args:
        sample_rate: The rate the audio is in; the stream uses it when the device accepts it,
            otherwise the device's default rate (see `sample_rate` after `open`).
        channels: Channels of the audio and of the stream.
        device: Device index or (part of its) name; None for the default output.
        blocksize: Frames per callback (None: `BLOCK_SECONDS`; 0: PortAudio chooses, varying).
        latency: PortAudio's suggested output latency: ``"low"``, ``"high"`` or seconds.
        ring_seconds: Capacity of the ring buffer, in seconds of audio.
        open_timeout: Seconds allowed for PortAudio to open and start the stream.
    """

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        *,
        device: int | str | None = None,
        blocksize: int | None = None,
        latency: float | str = DEVICE_LATENCY,
        ring_seconds: float = 4.0,
        open_timeout: float = OPEN_TIMEOUT,
    ) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise UsageError("sample_rate and channels must be positive")
        self.requested_rate = int(sample_rate)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.device = device
        self.blocksize_request = blocksize
        #: Frames per callback (for ``blocksize=0``: what PortAudio reports, or one
        #: `BLOCK_SECONDS` if it varies), known after `open`.
        self.blocksize = 0
        self.latency_request = latency
        self.ring_seconds = ring_seconds
        self.open_timeout = open_timeout
        self.ring = RingBuffer(1, channels)  # replaced in open() once the rate is known
        #: Output latency PortAudio reports, in seconds (known after `open`).
        self.output_latency = 0.0
        #: Frames the device takes at once when the stream starts (its buffer filled in one
        #: burst): measured by `open`, never less than the output latency and one block.
        self.start_fill = 0
        #: True if `open` ran the silent probe; False if `start_fill` was remembered from an
        #: earlier probe of the same output in this process (`START_BURSTS`).
        self.probed = False
        self._stream: Any = None
        self._running = False  # the stream was started (or a start is under way) and not stopped
        self._stopping = False  # a stop is under way (`resume` is held until it is done)
        self._pa_lock = anyio.Lock()  # one blocking PortAudio call (stop, close) at a time
        self._resume_held: bool | None = None  # a resume asked for during the stop (its fade_in)
        self._stops = 0  # our own stops/aborts, matched against PortAudio's finished callbacks
        self._epoch = 0  # stream starts so far; the clock restarts at each
        self._epoch_out = 0  # frames_out when the current start was asked for
        self._closed = False
        self._abandoned = False
        self._watch_callbacks = -1  # callback count at the watchdog's last look
        self._watch_since = 0.0  # monotonic time it was last seen to change
        self._watch_last = 0.0  # monotonic time of the watchdog's last look
        self._clock_offset = 0.0  # time.monotonic() - PortAudio stream time

        # async-owned --------------------------------------------------------------------
        self.resumes = 0
        self.end_mark = -1
        self.fade_in_next = False
        self.flush_to = 0
        self.flush_requests = 0

        # callback-owned -----------------------------------------------------------------
        self.callbacks = 0
        self.frames_out = 0
        self.silence_frames = 0
        self.underflows = 0
        self.stalls = 0
        self.starts = 0
        self.flushes_done = 0
        self.flush_read = 0  # ring index where the last flush stopped the audio (after its fade)
        self.finishes = 0  # stream-finished callbacks so far (ours and PortAudio's own)
        self._epoch_cb = -1  # the start (`_epoch`) the callbacks run in, as the callback saw it
        self.stall_read = np.zeros(HISTORY, dtype=np.int64)
        self.stall_out = np.zeros(HISTORY, dtype=np.int64)
        self.stall_clean = np.zeros(HISTORY, dtype=np.bool_)
        self.start_read = np.zeros(HISTORY, dtype=np.int64)
        self.start_out = np.zeros(HISTORY, dtype=np.int64)
        self._seq = 0  # seqlock over (_cb_time, _cb_out): odd while the callback writes them
        self._clock_cache = (0.0, 0)
        self._t0_window: deque[tuple[float, float]] = deque()  # (callback time, bound on T0)
        self._first_cb_time = 0.0
        self._cb_time = 0.0
        self._cb_out = 0
        self._fade_pos = 0  # frames of the fade-in already applied in the current run
        self._fade_frames = 1
        self._ramp_up: Frames = np.ones((1, 1), dtype=np.float32)
        self._ramp_down: Frames = np.ones((1, 1), dtype=np.float32)
        self._no_frames: Frames = np.zeros((0, channels), dtype=np.float32)

    # ------------------------------------------------------------------ lifecycle (async)
    @property
    def is_open(self) -> bool:
        """True between a successful `open` and `close`."""
        return self._stream is not None and not self._closed

    async def open(self) -> None:
        """Pick the rate, allocate the ring, open the stream and leave it stopped.

        The first open of an output in the process starts the stream once, silent, to measure
        `start_fill` (and to prove that it starts); later opens of the same output, at any rate,
        reuse that measurement (`START_BURSTS`, `probed`).

        Raises:
            AudioDeviceError: No device/server, the device refused the settings, or PortAudio
                did not answer within ``open_timeout`` seconds.
            BackendUnavailable: PortAudio or sounddevice is not installed.
        """
        def _open() -> Any:
            # The first call imports sounddevice, which initialises PortAudio (~50 ms: it
            # enumerates the host APIs): here, off the event loop, like everything blocking.
            sd = load_sounddevice()
            try:
                return _open_stream(sd)
            except (sd.PortAudioError, ValueError) as exc:
                raise AudioDeviceError(
                    f"cannot open the audio output: {exc}. {NO_DEVICE_HINT}"
                ) from exc

        def _open_stream(sd: Any) -> Any:
            rate = self._choose_rate(sd)
            self._prepare(rate)
            stream = sd.OutputStream(
                samplerate=rate,
                blocksize=self.blocksize_request
                if self.blocksize_request is not None
                else self.blocksize,
                device=self.device,
                channels=self.channels,
                dtype="float32",
                latency=self.latency_request,
                callback=self._callback,
                finished_callback=self._finished,
            )
            try:
                offset = time.monotonic() - stream.time
                key = self._probe_key(sd, stream, rate)
                burst = START_BURSTS.get(key)
                if burst is not None:
                    fill = round(burst * rate)
                else:
                    fill = self._probe(stream)
                    self.probed = True
                    if fill:  # a stream that never called back proved nothing: not kept
                        START_BURSTS[key] = fill / rate
            except BaseException:
                stream.close(ignore_errors=True)
                raise
            if self._abandoned:  # the caller gave up waiting: do not leak a stream
                stream.close(ignore_errors=True)
                return None
            self._clock_offset = offset
            self.start_fill = max(
                fill, round(float(stream.latency) * rate) + self.blocksize
            )
            return stream

        timeout = self.open_timeout
        try:
            with anyio.fail_after(timeout):
                stream = await anyio.to_thread.run_sync(_open, abandon_on_cancel=True)
        except TimeoutError as exc:
            self._abandoned = True
            raise AudioDeviceError(
                f"the audio device did not open within {timeout:g} s. {NO_DEVICE_HINT}"
            ) from exc
        except anyio.get_cancelled_exc_class():
            self._abandoned = True
            raise
        self._stream = stream
        self.output_latency = float(stream.latency)
        if self.blocksize == 0:
            self.blocksize = int(stream.blocksize) or round(BLOCK_SECONDS * self.sample_rate)

    def _probe_key(
        self, sd: Any, stream: Any, rate: int
    ) -> tuple[int, str, int, float | str, int | None, int | None]:
        """What the start burst depends on: the `START_BURSTS` key of this stream."""
        index = int(stream.device)
        name = str(sd.query_devices(index)["name"])
        block = self.blocksize_request
        return (index, name, self.channels, self.latency_request, block, rate if block else None)

    def _probe(self, stream: Any) -> int:
        """Start the stream silent, count the frames of its start burst, stop it (a worker
        thread, inside `open`). Proves the stream can start and leaves it stopped, with every
        callback-owned counter back at zero."""
        stream.start()
        try:
            begin = last_change = time.monotonic()
            taken = 0
            while True:
                time.sleep(0.001)
                now = time.monotonic()
                if self.frames_out != taken:
                    taken, last_change = self.frames_out, now
                elif taken and now - last_change >= PROBE_QUIET:
                    break
                if now - begin >= PROBE_TIMEOUT:
                    break
        finally:
            self._stops += 1
            stream.abort(ignore_errors=True)
        self.callbacks = self.frames_out = self.silence_frames = self.underflows = 0
        self._cb_time, self._cb_out, self._seq = 0.0, 0, 0
        return taken

    def _choose_rate(self, sd: Any) -> int:
        try:
            sd.check_output_settings(
                device=self.device,
                samplerate=self.requested_rate,
                channels=self.channels,
                dtype="float32",
            )
        except ValueError:
            raise  # unknown device name: reported by open()
        except sd.PortAudioError as exc:
            try:
                info = sd.query_devices(self.device, "output")
            except (sd.PortAudioError, ValueError):
                raise exc from None
            return int(info["default_samplerate"])
        return self.requested_rate

    def _prepare(self, rate: int) -> None:
        self.sample_rate = rate
        if self.blocksize_request is None:
            self.blocksize = max(1, round(BLOCK_SECONDS * rate))
        else:
            self.blocksize = self.blocksize_request
        capacity = max(1, math.ceil(self.ring_seconds * rate))
        self.ring = RingBuffer(capacity, self.channels)
        self._fade_frames = max(1, round(FADE_SECONDS * rate))
        ramp = (np.arange(1, self._fade_frames + 1, dtype=np.float32) / (self._fade_frames + 1))
        self._ramp_up = np.ascontiguousarray(ramp.reshape(-1, 1))
        self._ramp_down = np.ascontiguousarray(ramp[::-1].reshape(-1, 1))

    @property
    def running(self) -> bool:
        """True from `start` until `stop` (or `close`): the callback runs, every block."""
        return self._running

    def start(self) -> None:
        """Start the stream (no-op if it runs or is closed).

        The callback takes `start_fill` frames at once, then one block per block period; the
        first frame leaves the device a few milliseconds after this returns.

        A blocking call, made on the caller's thread: starting an opened stream takes ~1 ms
        (PortAudio primes the device and starts its callback thread; also the first start of a
        stream whose probe was skipped), while a hop to a worker thread would cost 5–15 ms of
        first-sound latency whenever the event loop is busy decoding (the worker waits for the
        GIL).

        Raises:
            AudioDeviceError: PortAudio refused to start.
        """
        if self._running or not self.is_open:
            return
        stream = self._stream
        # Async-owned state for the new start, written while no callback runs.
        self._running = True
        self._epoch += 1
        self._epoch_out = self.frames_out
        self._t0_window.clear()
        self._watch_callbacks = -1  # the watchdog counts from its next look
        sd = load_sounddevice()
        try:
            stream.start()
        except sd.PortAudioError as exc:
            raise AudioDeviceError(
                f"cannot start the audio output: {exc}. {NO_DEVICE_HINT}"
            ) from exc

    async def stop(self) -> None:
        """Stop the stream at once (abort: what the device still holds is dropped).

        For an idle stream, whose buffer holds only silence, so the next `start` plays its first
        frame at once instead of behind a buffer of silence. Pending flushes are completed.
        """
        if not self._running or not self.is_open:
            return
        stream = self._stream
        self._stops += 1
        # Hold back starts of playback until the stream has stopped: audio the callback took
        # now would be aborted unheard.
        self._stopping = True
        try:

            def _stop() -> None:
                stream.abort(ignore_errors=True)

            with anyio.CancelScope(shield=True):  # half-stopped is no state to leave it in
                async with self._pa_lock:
                    await anyio.to_thread.run_sync(_stop)
        finally:
            self._running = False
            self._stopping = False
        if self._resume_held is not None:
            self.fade_in_next, self._resume_held = self._resume_held, None
            self.resumes = self.stalls + 1
        if self.flush_requests != self.flushes_done:
            self._flush(self._no_frames, 0)  # the callback will not run to do it

    async def close(self, *, abort: bool = True) -> None:
        """Stop and close the stream (``abort``: drop what PortAudio still holds, at once).

        Idempotent. After it returns, the callback never runs again.
        """
        if self._closed:
            return
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is None:
            return

        async with self._pa_lock:  # a stop under way ends first: PortAudio calls never overlap
            running = self._running
            if running:
                self._stops += 1

            def _close() -> None:
                if running and abort:
                    stream.abort(ignore_errors=True)
                elif running:
                    stream.stop(ignore_errors=True)
                stream.close(ignore_errors=True)

            await anyio.to_thread.run_sync(_close, abandon_on_cancel=True)

    # ------------------------------------------------------------------ polling (async side)
    def fault(self, now: float) -> str | None:
        """Why the open stream is lost, or None while it runs (call it every few ms).

        Args:
            now: ``time.monotonic()``.

        Returns:
            A message for `AudioDeviceError`: PortAudio ended the stream on its own (its
            stream-finished callback ran while we had not stopped it), or no callback has run
            for `STALL_TIMEOUT` seconds. Time during which this was not called (the event loop
            itself was blocked) is not held against the device.
        """
        if self._stream is None or self._closed or not self._running:
            return None
        if self.finishes > self._stops:
            return (
                "the audio device stopped: PortAudio ended the output stream on its own "
                "(the sound server went away or the device was unplugged)"
            )
        count = self.callbacks
        if count != self._watch_callbacks or now - self._watch_last > STALL_TIMEOUT / 2:
            self._watch_callbacks = count
            self._watch_since = now
        self._watch_last = now
        if now - self._watch_since > STALL_TIMEOUT:
            return (
                f"the audio device stopped: no audio callback for {now - self._watch_since:.1f} "
                "s (the sound server hung or the device was lost)"
            )
        return None

    def clock(self) -> tuple[float, int]:
        """``(monotonic time, frames_out)`` at the start of the latest callback.

        A consistent pair (seqlock); ``(0.0, 0)`` before the first callback.
        """
        for _ in range(CLOCK_RETRIES):
            s1 = self._seq
            t, n = self._cb_time, self._cb_out
            if s1 == self._seq and not s1 & 1:
                self._clock_cache = (t + self._clock_offset, n) if s1 else (0.0, 0)
                return self._clock_cache
            time.sleep(0)  # the callback thread was preempted mid-update: let it finish
        return self._clock_cache

    def observe_clock(self) -> None:
        """Sample the callback clock (call it every few ms from the async side).

        How the device time of a frame is estimated: the device starts taking frames at the
        first callback (``t_first``) and plays them at a steady rate, so frame ``X`` leaves at
        ``T0 + X / rate`` with ``T0 = t_first`` while its clock and ours agree. A frame cannot
        play before it is written, so every callback at ``t`` writing frame ``n`` also proves
        ``T0 >= t - n / rate``; the largest such bound over the last `CLOCK_WINDOW` seconds
        (a window: old bounds would hide a drift the other way) takes over when the device
        runs slower than our clock. A device running faster is not detected: the estimate then
        lags by the drift (~0.1 ms per 10 s at 10 ppm).
        """
        t, n = self.clock()
        if not t:
            return
        bound = t - n / self.sample_rate
        window = self._t0_window
        while window and window[0][0] < t - CLOCK_WINDOW:
            window.popleft()
        while window and window[-1][1] <= bound:
            window.pop()  # a monotonic deque: its head is the window's maximum
        window.append((t, bound))

    @property
    def clock_ready(self) -> bool:
        """True once the current start has called back (`device_time` is then meaningful)."""
        return self.callbacks > 0 and self._epoch_cb == self._epoch

    def device_time(self, out_index: int) -> float:
        """Estimated monotonic time at which output frame ``out_index`` leaves the device.

        See `observe_clock`. The first frame of each start is taken to leave at that start's
        first callback; a sound server adds a few ms of its own (7–9 ms seen on the PulseAudio
        null sink's monitor). Frames of an earlier start are placed on the current start's line
        (they have all left the device before the stream is stopped).
        """
        if not self.clock_ready:
            return time.monotonic() + self.output_latency
        t0 = self._first_cb_time + self._clock_offset - self._epoch_out / self.sample_rate
        if self._t0_window:
            t0 = max(t0, self._t0_window[0][1])
        return t0 + out_index / self.sample_rate

    @property
    def playing(self) -> bool:
        """True while the callback plays from the ring (it has been started and not stalled)."""
        return self.resumes > self.stalls

    def resume(self, *, fade_in: bool) -> None:
        """Ask the callback to start playing from the ring (no-op if it already plays).

        While the stream is being stopped, the request is held until it has stopped.
        """
        if self.resumes > self.stalls:
            return
        if self._stopping:
            self._resume_held = fade_in
            return
        self.fade_in_next = fade_in  # written before the request that publishes it
        self.resumes = self.stalls + 1

    def flush(self, to: int | None = None) -> None:
        """Ask the callback to drop queued audio and stop within one block (fading out).

        Args:
            to: Drop up to this ring index (default: everything written so far).

        On an opened stream that is stopped, the flush is done here and now.
        """
        self.flush_to = self.ring.write_index if to is None else to
        self.flush_requests += 1
        if self.is_open and not self._running:
            self._flush(self._no_frames, 0)

    # ------------------------------------------------------------------ the PortAudio thread
    def _callback(self, outdata: Frames, frames: int, time_info: Any, status: Any) -> None:
        """Fill ``outdata`` from the ring. RUNS ON THE PORTAUDIO THREAD.

        Real-time constraints (as for any sounddevice callback): it must return within one
        block's duration, every time. So it only copies from the preallocated ring, multiplies
        short fade ramps in place and updates plain integers and preallocated arrays. It does not
        allocate audio buffers, log, print, take locks, wait, raise, or call into the event loop;
        the async side learns everything by polling the counters. It holds the GIL while it
        runs, so every line here delays the rest of the program too.
        """
        self._seq += 1
        self._cb_time = time_info.currentTime
        self._cb_out = self.frames_out
        self._seq += 1
        if self._epoch_cb != self._epoch:  # first callback of this start
            self._epoch_cb = self._epoch
            self._first_cb_time = self._cb_time  # the device starts taking frames now
        if status.output_underflow:
            self.underflows += 1
        ring = self.ring
        filled = 0
        if self.flush_requests != self.flushes_done:
            filled = self._flush(outdata, frames)
        elif self.resumes > self.stalls:
            if self.starts == self.stalls:  # first block of a new run
                k = self.starts % HISTORY
                self.start_read[k] = ring.read_index
                self.start_out[k] = self.frames_out
                self._fade_pos = 0 if self.fade_in_next else self._fade_frames
                self.starts += 1
            filled = ring.read_into(outdata, 0, frames)
            fade = self._fade_frames
            if self._fade_pos < fade and filled:
                m = min(filled, fade - self._fade_pos)
                outdata[:m] *= self._ramp_up[self._fade_pos : self._fade_pos + m]
                self._fade_pos += m
            if filled < frames:
                clean = ring.read_index == self.end_mark
                if not clean and filled:
                    m = min(filled, fade)
                    outdata[filled - m : filled] *= self._ramp_down[fade - m :]
                k = self.stalls % HISTORY
                self.stall_read[k] = ring.read_index
                self.stall_out[k] = self.frames_out + filled
                self.stall_clean[k] = clean
                self.stalls += 1
        if filled < frames:
            outdata[filled:] = 0.0
            self.silence_frames += frames - filled
        self.frames_out += frames
        self.callbacks += 1

    def _finished(self) -> None:
        """PortAudio's stream-finished callback (PORTAUDIO THREAD): it runs once, when the stream
        ends, by our ``stop``/``abort`` or on its own (a lost device). Only counts."""
        self.finishes += 1

    def _flush(self, outdata: Frames, frames: int) -> int:
        """Cancellation: fade out over a few ms, drop the rest, stop (PortAudio thread)."""
        ring = self.ring
        filled = 0
        if self.resumes > self.stalls:
            if self.starts == self.stalls:
                # A start was requested but nothing has sounded yet: record an empty run (so
                # starts and stalls stay paired) and play nothing of it.
                k = self.starts % HISTORY
                self.start_read[k] = ring.read_index
                self.start_out[k] = self.frames_out
                self.starts += 1
            else:
                fade = self._fade_frames
                room = max(0, self.flush_to - ring.read_index)
                filled = ring.read_into(outdata, 0, min(frames, fade, room))
                if filled:
                    outdata[:filled] *= self._ramp_down[fade - filled :]
            k = self.stalls % HISTORY
            self.stall_read[k] = ring.read_index
            self.stall_out[k] = self.frames_out + filled
            self.stall_clean[k] = True
            self.stalls += 1
        self.flush_read = ring.read_index
        target = self.flush_to
        if target > ring.read_index:
            ring.skip(target - ring.read_index)
        self.flushes_done = self.flush_requests
        return filled
