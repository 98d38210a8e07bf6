"""A real, clocked audio device for tests: PulseAudio null sinks, recording, comparison.

* `ensure_pulse()` starts the PulseAudio daemon (``scripts/pulse start``) once per session.
* `NullSink` is a private null sink (48 kHz float32 mono by default) loaded for one test, so
  concurrent test runs of other people never mix into its recording. `NullSink.route()` makes
  the PortAudio streams opened afterwards play into it (``PULSE_SINK``, read by the ALSA pulse
  plugin when a stream is opened); `NullSink.record()` records its monitor with ``parec``.
* `align`, `assert_same_audio`, `silent_gaps`, `find_offset`: compare a recording with what was
  meant to be played. The first sample appears 7–9 ms after the first callback, so recordings are
  aligned by their first non-zero sample (or by cross-correlation when not bit-exact).

A recording of a null sink whose rate equals the stream's is bit-exact: compare sample for
sample. Everything here is plain functions and small classes: import it from any test
(``from support.audio import NullSink``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = [
    "REPO",
    "NullSink",
    "Recording",
    "align",
    "assert_same_audio",
    "ensure_pulse",
    "find_offset",
    "first_nonzero",
    "pulse_available",
    "silent_gaps",
]

REPO = Path(__file__).resolve().parents[2]
Float32 = npt.NDArray[np.float32]

#: parec's requested latency. 10 ms: the recording follows the sink closely, so stopping it
#: shortly after playback ended loses nothing.
PAREC_LATENCY_MS = 10

_counter = itertools.count()


def pulse_available() -> bool:
    """True when the PulseAudio binaries are installed (the daemon may still be stopped)."""
    return shutil.which("pulseaudio") is not None and shutil.which("pactl") is not None


def ensure_pulse() -> None:
    """Start the PulseAudio daemon with its default null sink (idempotent).

    Raises:
        RuntimeError: The daemon could not be started (the message has its log's path).
    """
    proc = subprocess.run(
        [str(REPO / "scripts" / "pulse"), "start"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/pulse start failed: {proc.stdout}{proc.stderr}")


def _pactl(*args: str) -> str:
    proc = subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"pactl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


class Recording:
    """``parec`` recording a sink's monitor in the background (see `NullSink.record`).

    A daemon thread pumps parec's stdout into memory. The pipe is closed only after that thread
    has ended (it ends at the EOF that follows parec's exit): closing it under a thread still
    inside ``read1`` made the thread's next read fail with "I/O operation on closed file".
    """

    def __init__(self, source: str, rate: int, channels: int) -> None:
        self.rate = rate
        self.channels = channels
        self._chunks: list[bytes] = []
        self._first = threading.Event()
        self._samples: Float32 | None = None
        self._proc = subprocess.Popen(
            [
                "parec",
                "-d",
                source,
                "--raw",
                "--format=float32le",
                f"--rate={rate}",
                f"--channels={channels}",
                f"--latency-msec={PAREC_LATENCY_MS}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()
        # A null sink's monitor delivers (zeros) continuously: the first bytes mean we record.
        if not self._first.wait(10.0):
            self._end(kill=True)
            raise RuntimeError(f"parec recorded nothing from {source} within 10 s")

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        while data := self._proc.stdout.read1(65536):
            self._chunks.append(data)
            self._first.set()

    def _end(self, *, kill: bool) -> None:
        """End parec, then the pump thread (EOF), then close the pipe: in that order."""
        if self._proc.poll() is None:
            if kill:
                self._proc.kill()
            else:
                self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - parec ignoring SIGTERM
            self._proc.kill()
            self._proc.wait()
        self._thread.join(10)
        if self._thread.is_alive():  # pragma: no cover - a pipe held open by someone else
            raise RuntimeError("the parec reader thread did not end; its pipe is left open")
        assert self._proc.stdout is not None
        self._proc.stdout.close()

    def stop(self, *, tail: float = 0.15) -> Float32:
        """Stop after ``tail`` more seconds and return the samples, shaped ``(frames, ch)``.

        A second call returns the same samples (the recording has ended).
        """
        if self._samples is None:
            if self._proc.poll() is None:
                time.sleep(tail)
            self._end(kill=False)
            raw = b"".join(self._chunks)
            usable = len(raw) - len(raw) % (4 * self.channels)
            frames = np.frombuffer(raw[:usable], dtype=np.float32)
            self._samples = frames.reshape(-1, self.channels).copy()
        return self._samples

    def __enter__(self) -> Recording:
        return self

    def __exit__(self, *exc: object) -> None:
        # Ended without stop() (the test failed, or it reads the samples after the block).
        if self._samples is None:
            self.stop(tail=0.0)


class NullSink:
    """A private PulseAudio null sink, unloaded by `close`.

    Args:
        rate: Sink rate (make it the stream's rate for bit-exact recordings).
        channels: Sink channels.
    """

    def __init__(self, rate: int = 48000, channels: int = 1) -> None:
        self.rate = rate
        self.channels = channels
        self.name = f"streamtts_test_{os.getpid()}_{next(_counter)}"
        self.module = _pactl(
            "load-module",
            "module-null-sink",
            f"sink_name={self.name}",
            f"rate={rate}",
            f"channels={channels}",
            "format=float32le",
            "norewinds=1",
        )

    @property
    def monitor(self) -> str:
        """Name of the sink's monitor source."""
        return f"{self.name}.monitor"

    def env(self) -> dict[str, str]:
        """Environment for a subprocess whose audio must go to this sink."""
        return {**os.environ, "PULSE_SINK": self.name}

    @contextmanager
    def route(self) -> Iterator[None]:
        """Streams opened inside the block play into this sink (``PULSE_SINK``)."""
        old = os.environ.get("PULSE_SINK")
        os.environ["PULSE_SINK"] = self.name
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("PULSE_SINK", None)
            else:
                os.environ["PULSE_SINK"] = old

    def record(self) -> Recording:
        """Start recording the monitor (returns once samples flow)."""
        return Recording(self.monitor, self.rate, self.channels)

    def close(self) -> None:
        """Unload the sink."""
        subprocess.run(["pactl", "unload-module", self.module], capture_output=True, check=False)


# ------------------------------------------------------------------------- comparison helpers


def first_nonzero(x: npt.ArrayLike, threshold: float = 0.0) -> int | None:
    """Index of the first frame with any |sample| > threshold (None if there is none)."""
    a = np.asarray(x)
    mask = np.abs(a) > threshold
    if a.ndim > 1:
        mask = mask.any(axis=1)
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


def align(recording: npt.ArrayLike, reference: npt.ArrayLike) -> Float32:
    """The stretch of ``recording`` that lines up with ``reference``, by first non-zero sample.

    The result has ``len(reference)`` frames (zero-padded if the recording ended early).

    Raises:
        AssertionError: One of them is all zeros.
    """
    rec = np.asarray(recording, dtype=np.float32)
    ref = np.asarray(reference, dtype=np.float32)
    r0, s0 = first_nonzero(ref), first_nonzero(rec)
    assert r0 is not None, "the reference is silent"
    assert s0 is not None, "the recording is silent: nothing was played into the sink"
    start = s0 - r0
    assert start >= 0, "the recording starts inside the reference: recorder started too late"
    out = np.zeros_like(ref)
    seg = rec[start : start + len(ref)]
    out[: len(seg)] = seg
    return out


def assert_same_audio(recording: npt.ArrayLike, reference: npt.ArrayLike) -> None:
    """Assert the recording holds ``reference`` sample for sample (after alignment).

    Raises:
        AssertionError: With the first differing frame and the size of the difference.
    """
    ref = np.asarray(reference, dtype=np.float32)
    if ref.ndim == 1:
        ref = ref.reshape(-1, 1)
    rec = np.asarray(recording, dtype=np.float32)
    if rec.ndim == 1:
        rec = rec.reshape(-1, 1)
    got = align(rec, ref)
    diff = np.flatnonzero((got != ref).any(axis=1))
    if diff.size:
        i = int(diff[0])
        raise AssertionError(
            f"recording differs from the reference at {diff.size} of {len(ref)} frames; first "
            f"at frame {i} ({i / 48000:.3f} s at 48 kHz): got {got[i].tolist()}, expected "
            f"{ref[i].tolist()}; last differing frame {int(diff[-1])}; max |diff| "
            f"{float(np.max(np.abs(got - ref))):.3g}"
        )


def silent_gaps(
    x: npt.ArrayLike, *, min_frames: int, threshold: float = 1e-4
) -> list[tuple[int, int]]:
    """Runs of at least ``min_frames`` frames with every |sample| <= threshold.

    Returns:
        ``(start, length)`` of each run, in order.
    """
    a = np.abs(np.asarray(x, dtype=np.float32))
    if a.ndim > 1:
        a = a.max(axis=1)
    quiet = np.concatenate(([False], a <= threshold, [False]))
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    starts, ends = edges[::2], edges[1::2]
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True) if e - s >= min_frames]


def find_offset(recording: npt.ArrayLike, reference: npt.ArrayLike) -> int:
    """Lag (frames) of ``reference`` inside ``recording`` by FFT cross-correlation (mono mix).

    For recordings that are not bit-exact (resampled); exact ones align with `align`.
    """
    rec = np.asarray(recording, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if rec.ndim > 1:
        rec = rec.mean(axis=1)
    if ref.ndim > 1:
        ref = ref.mean(axis=1)
    n = len(rec) + len(ref)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size)), size)
    return int(np.argmax(corr[: len(rec)]))
