"""Streaming sample-rate conversion: a polyphase Kaiser-windowed-sinc resampler in numpy.

How it works
------------
For rates in the ratio L/M (reduced: 22050 -> 48000 is 320/147), output sample ``j`` is
centred on input time ``j*M/L`` and is the sum over input samples ``x[n]`` weighted by a low-pass
kernel ``h`` at ``j*M - n*L`` (``h`` is a windowed sinc sampled at L times the input rate). Only
every L-th tap of ``h`` meets an input sample, so output ``j`` uses the K taps of phase
``(j*M) mod L`` (the "polyphase bank", L rows of K taps) against K consecutive inputs starting
at ``floor(j*M/L) - A``. The kernel is centred, so there is no delay to compensate: an impulse
at input ``n`` peaks at output ``n*L/M``.

Every run of L outputs (a "period") reads a window of E = M + K - 1 (at most) inputs starting
M samples after the previous period's, with the same phases in the same places. So whole periods
are one matrix product: (periods x E strided input windows) @ (E x L matrix of the bank's taps
at their offsets), which BLAS runs at full speed. When M is small (2:1, 3:1 upsampling) the
windows would overlap K/M-fold, so G periods are grouped into one (G*L outputs, G*M inputs,
G*M ~ K). Outputs of a partial period (at block edges) are one row times the needed columns of
the same matrix. Ratios whose matrix would be too large (exotic rates) use a vectorised gather
of the bank's coefficients instead: slower, same result.

Streaming: the object keeps the last inputs still needed (about K) and the index of the next
output. `process` emits every output whose K inputs have all arrived; `flush` pads with zeros
(the signal is zero outside its extent) and emits the rest. Each output depends only on its
index and the input, never on how the input was cut into blocks, so block-wise output equals
one-shot output (up to float rounding; the arithmetic is float64, rounded to float32 at the
end).

Length rule: a signal of ``n`` input frames gives ``round(n * rate_out / rate_in)`` output
frames in total, rounding halves up (``(2*n*L + M) // (2*M)``).

Filter: pass band flat (< 0.01 dB ripple) to 0.9 x the lower of the two Nyquist frequencies,
stop band from that Nyquist frequency on, attenuated by at least 80 dB (design target 90 dB,
Kaiser's formulas for beta and length). About 100-130 taps per output sample.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from .errors import UsageError

__all__ = ["Conformer", "Resampler"]

Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]

# Pass band edge as a fraction of the lower Nyquist frequency: 0.9 keeps everything a speech
# codec delivers (24 kHz Opus/PCM is band-limited to ~10-11 kHz of its 12 kHz Nyquist) while
# leaving a 10 % transition band, which sets the filter length (and the cost).
_PASSBAND = 0.9
# Stop band edge: the lower Nyquist frequency itself, so nothing above it aliases or images.
_STOPBAND = 1.0
# Kaiser design attenuation in dB. The requirement is >= 80 dB; 90 dB leaves margin for the
# float rounding of the coefficients and the formula's approximation (measured: >= 90 dB).
_ATTENUATION_DB = 90.0
# Matmul path: the (E x G*L) period matrix is used while it holds at most this many coefficients
# (16 MiB of float64). Standard rate pairs need at most a few hundred thousand (11025 -> 16000:
# 640 x 548); exotic ratios fall back to the gather path, which is slower but exact.
_MAX_PERIOD_COEFFS = 1 << 21
# The polyphase bank itself (L x K) must fit; beyond 64 MiB of float64 the ratio is absurd for
# audio (e.g. 44101 -> 48000 needs 48000 x ~110 = 5.3 M coefficients, which still fits).
_MAX_BANK_COEFFS = 1 << 23
# Outputs per gather step: bounds the temporary index/coefficient arrays to a few MiB.
_GATHER_CHUNK = 4096
# Size of each matrix product, in multiply-adds (rows x E x P). OpenBLAS (numpy's BLAS) runs a
# product on one thread up to 65536 x 4 = 262144 multiply-adds and spreads larger ones over all
# cores. Threads are what we must avoid: on a busy 2-core machine the threaded products of this
# size ran 25-1500x real time from one run to the next (they wait for each other and for the
# audio thread), single-threaded ones a steady ~700x. Products are at least one row.
_MATMUL_MACS = 262144


def _kernel_length(up: int, rate_in: int, rate_out: int) -> int:
    """Kaiser's (1974) length estimate for our attenuation and transition width."""
    nyquist = min(rate_in, rate_out) / 2.0
    width = (_STOPBAND - _PASSBAND) * nyquist / (up * rate_in)  # cycles per prototype sample
    return math.ceil((_ATTENUATION_DB - 7.95) / (2.285 * 2.0 * math.pi * width)) + 1


def _design_bank(up: int, rate_in: int, rate_out: int) -> tuple[Float64Array, int]:
    """Polyphase bank (up x K) of the Kaiser low-pass, and A (taps before the centre)."""
    proto_rate = up * rate_in  # the kernel is sampled at the common "upsampled" rate
    nyquist = min(rate_in, rate_out) / 2.0
    cutoff = (_STOPBAND + _PASSBAND) / 2.0 * nyquist / proto_rate
    length = _kernel_length(up, rate_in, rate_out)
    beta = 0.1102 * (_ATTENUATION_DB - 8.7)
    half = (length + 1) // 2
    m = np.arange(-half, half + 1, dtype=np.float64)
    kernel = 2.0 * cutoff * np.sinc(2.0 * cutoff * m) * np.kaiser(2 * half + 1, beta)
    kernel *= up / kernel.sum()  # unit gain at DC once the up zero-stuffing is accounted for
    before = half // up  # A: taps before the centre tap in the worst phase
    taps = (up - 1 + half) // up + before + 1  # K
    phase = np.arange(up)[:, None]
    k = np.arange(taps)[None, :]
    idx = phase - (k - before) * up + half
    valid = (idx >= 0) & (idx < kernel.size)
    bank = np.where(valid, kernel[np.clip(idx, 0, kernel.size - 1)], 0.0)
    return np.ascontiguousarray(bank), before


class Resampler:
    """Streaming sample-rate converter for float32 frames ``(frames, channels)``.

    Feed blocks of any size to `process` and call `flush` at the end of the signal; the
    concatenated output is the same (to float rounding, <= 1e-6) whatever the block sizes, has
    ``round(n_in * rate_out / rate_in)`` frames (halves rounded up) and is time-aligned with the
    input (no filter delay). After `flush` the object is ready for a new signal.

    Args:
        rate_in: Input sample rate in Hz.
        rate_out: Output sample rate in Hz.
        channels: Channels per frame.

    Raises:
        UsageError: Non-positive rates or channels, or a ratio whose reduced terms are so large
            (e.g. 44101 -> 48000 is fine; 1 Hz apart near 1 MHz is not) that its filter bank
            would not fit in memory.
    """

    def __init__(self, rate_in: int, rate_out: int, channels: int) -> None:
        if rate_in <= 0 or rate_out <= 0 or channels <= 0:
            raise UsageError(f"bad resampler parameters: {rate_in} -> {rate_out} Hz, {channels} ch")
        self.rate_in = rate_in
        self.rate_out = rate_out
        self.channels = channels
        g = math.gcd(rate_in, rate_out)
        self._up = rate_out // g  # L
        self._down = rate_in // g  # M
        self._bank: Float64Array | None = None
        self._period: Float64Array | None = None  # (E x P) matrix for whole periods
        self._group = 1  # G: base periods (L outputs, M inputs) per matrix period
        self._offsets = np.zeros(1, dtype=np.int64)  # first input of each output of a period
        self._before = 0  # A
        self._taps = 1  # K
        if self._up != self._down:
            self._setup_filter()
        self._reset()

    def _setup_filter(self) -> None:
        up, down = self._up, self._down
        length = _kernel_length(up, self.rate_in, self.rate_out)  # ~ the bank's size, L x K
        if length > _MAX_BANK_COEFFS:
            raise UsageError(
                f"cannot resample {self.rate_in} -> {self.rate_out} Hz: the reduced ratio "
                f"{up}/{down} needs a filter of {length} coefficients"
            )
        bank, before = _design_bank(up, self.rate_in, self.rate_out)
        self._bank, self._before, self._taps = bank, before, bank.shape[1]
        # Consecutive periods' input windows overlap by about K - M samples. When M is small
        # (integer upsampling, 2:1...) group G periods so that one matrix row reads about 2K
        # inputs: each input is then copied ~2 times instead of ~K/M times, at ~2x the minimum
        # multiply-adds, which BLAS does far faster than the copies would take.
        group = max(1, round(self._taps / down))
        outputs = group * up  # P
        offsets = (np.arange(outputs) * down) // up  # first input of each output of a period
        span = int(offsets[-1]) + self._taps  # E
        if span * outputs <= _MAX_PERIOD_COEFFS:
            phases = (np.arange(outputs) * down) % up
            period = np.zeros((span, outputs), dtype=np.float64)
            rows = offsets[None, :] + np.arange(self._taps)[:, None]  # (K, P)
            period[rows, np.arange(outputs)[None, :]] = bank[phases].T
            self._period, self._group, self._offsets = period, group, offsets

    def _reset(self) -> None:
        # Input history, channel-major so each channel's windows are contiguous rows.
        self._hist: Float64Array = np.zeros((self.channels, self._before), dtype=np.float64)
        self._base = -self._before  # absolute input index of _hist[:, 0] (zeros before 0)
        self._n_in = 0  # input frames received
        self._next = 0  # index of the next output frame

    @property
    def ratio(self) -> tuple[int, int]:
        """The reduced ratio ``(up, down)``: ``rate_out / rate_in == up / down``."""
        return self._up, self._down

    @property
    def taps(self) -> int:
        """Filter taps per output frame (the cost per output and per channel)."""
        return self._taps

    def output_length(self, frames_in: int) -> int:
        """Total output frames for a signal of ``frames_in`` input frames (after `flush`)."""
        return (2 * frames_in * self._up + self._down) // (2 * self._down)

    def process(self, block: npt.ArrayLike) -> Float32Array:
        """Resample the next block of the signal.

        Args:
            block: Frames shaped ``(frames, channels)`` (float; any number of frames).

        Returns:
            The output frames now complete, float32 ``(frames, channels)``, C-contiguous. The
            last ~K/2 inputs' worth is held back until more input or `flush`.

        Raises:
            UsageError: Wrong shape or a non-float dtype.
        """
        x = self._check(block)
        self._n_in += x.shape[0]
        if self._bank is None:
            return np.array(x, dtype=np.float32, order="C")
        self._hist = np.concatenate((self._hist, x.T), axis=1)
        # Output j is complete when its last input floor(j*M/L) - A + K - 1 has arrived.
        last_start = self._n_in - self._taps + self._before  # largest usable floor(j*M/L)
        end = ((last_start + 1) * self._up - 1) // self._down + 1 if last_start >= 0 else 0
        end = max(end, self._next)
        out = self._compute(self._next, end)
        self._next = end
        self._drop_used()
        return out

    def flush(self) -> Float32Array:
        """End of the signal: return the remaining output frames and reset for a new signal."""
        if self._bank is None:
            self._reset()
            return np.zeros((0, self.channels), dtype=np.float32)
        total = self.output_length(self._n_in)
        if total > self._next:
            needed = ((total - 1) * self._down) // self._up - self._before + self._taps
            missing = needed - (self._base + self._hist.shape[1])
            if missing > 0:
                pad = np.zeros((self.channels, missing), dtype=np.float64)
                self._hist = np.concatenate((self._hist, pad), axis=1)
        out = self._compute(self._next, total)
        self._reset()
        return out

    # -- internals ---------------------------------------------------------------------------

    def _check(self, block: npt.ArrayLike) -> npt.NDArray[np.floating]:
        x = np.asarray(block)
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise UsageError(
                f"expected frames shaped (n, {self.channels}), got an array of shape {x.shape}"
            )
        if not np.issubdtype(x.dtype, np.floating):
            raise UsageError(f"expected float samples, got {x.dtype}")
        return x

    def _drop_used(self) -> None:
        first_needed = (self._next * self._down) // self._up - self._before
        cut = first_needed - self._base
        if cut > 0:
            self._hist = self._hist[:, cut:]
            self._base += cut

    def _compute(self, start: int, stop: int) -> Float32Array:
        out = np.empty((stop - start, self.channels), dtype=np.float32)
        if stop <= start:
            return out
        if self._period is None:
            self._gather(start, stop, out)
            return out
        size = self._group * self._up  # P
        first, last = -(-start // size), stop // size  # whole periods [first, last)
        if first > last:  # start and stop inside one period
            self._partial(last, start - last * size, stop - last * size, out)
            return out
        head, tail = first * size - start, last * size - start
        if head:
            self._partial(first - 1, size - head, size, out[:head])
        if last > first:
            self._periods(first, last, out[head:tail])
        if stop > last * size:
            self._partial(last, 0, stop - last * size, out[tail:])
        return out

    def _partial(self, period: int, col0: int, col1: int, out: Float32Array) -> None:
        """Outputs ``col0:col1`` of one period: one window times the needed part of the matrix
        (its rows outside ``row0:row1`` are zero for these columns: same sums)."""
        assert self._period is not None
        row0 = int(self._offsets[col0])
        row1 = int(self._offsets[col1 - 1]) + self._taps
        begin = period * self._group * self._down + row0 - self._before - self._base
        matrix = self._period[row0:row1, col0:col1]
        for c in range(self.channels):  # einsum, not BLAS gemv: gemv would go multi-threaded
            out[:, c] = np.einsum("e,ep->p", self._hist[c, begin : begin + row1 - row0], matrix)

    def _periods(self, first: int, last: int, out: Float32Array) -> None:
        """Whole periods ``[first, last)`` as matrix products, in cache-sized chunks."""
        assert self._period is not None
        span, size = self._period.shape
        step = self._group * self._down  # inputs between period starts
        rows = max(1, _MATMUL_MACS // (span * size))
        item = self._hist.itemsize
        for c in range(self.channels):
            row = self._hist[c]  # contiguous: the history is channel-major
            for lo in range(first, last, rows):
                hi = min(last, lo + rows)
                offset = lo * step - self._before - self._base
                # The input windows of periods lo..hi-1 as a strided view of the history (numpy
                # checks it lies inside the buffer), copied once into a contiguous matrix.
                windows: Float64Array = np.ndarray(
                    (hi - lo, span), np.float64, row, offset * item, (step * item, item)
                )
                result = windows.copy() @ self._period  # (periods, P)
                out[(lo - first) * size : (hi - first) * size, c] = result.ravel()

    def _gather(self, start: int, stop: int, out: Float32Array) -> None:
        """Outputs ``[start, stop)`` tap by tap (vectorised over outputs and taps)."""
        assert self._bank is not None
        taps = np.arange(self._taps)
        for lo in range(start, stop, _GATHER_CHUNK):
            hi = min(stop, lo + _GATHER_CHUNK)
            position = np.arange(lo, hi, dtype=np.int64) * self._down
            first = position // self._up
            phase = position - first * self._up
            idx = (first - self._before - self._base)[:, None] + taps[None, :]
            coef = self._bank[phase]
            for c in range(self.channels):
                out[lo - start : hi - start, c] = np.einsum("nk,nk->n", self._hist[c][idx], coef)


class Conformer:
    """Blocks of one layout to another: channels mapped, then resampled (streaming).

    Mono is repeated to every output channel; several channels to mono are averaged; otherwise
    the first channels are kept (and missing ones are silent). The player uses it to bring a
    reader's blocks to the device's format, the speaker to bring each response to its own.

    Args:
        rate_in: The blocks' sample rate.
        ch_in: The blocks' channels.
        rate_out: The rate to produce.
        ch_out: The channels to produce.
    """

    def __init__(self, rate_in: int, ch_in: int, rate_out: int, ch_out: int) -> None:
        self.rate_in = rate_in
        self.ch_in = ch_in
        self.ch_out = ch_out
        self._resampler = Resampler(rate_in, rate_out, ch_out) if rate_in != rate_out else None

    def _channels(self, block: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim == 1:
            block = block.reshape(-1, 1)
        ch = block.shape[1]
        if ch == self.ch_out:
            return block
        if ch == 1:
            return np.ascontiguousarray(np.repeat(block, self.ch_out, axis=1))
        if self.ch_out == 1:
            return np.ascontiguousarray(block.mean(axis=1, keepdims=True, dtype=np.float32))
        out = np.zeros((block.shape[0], self.ch_out), dtype=np.float32)
        n = min(ch, self.ch_out)
        out[:, :n] = block[:, :n]
        return out

    def process(self, block: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Convert one block (any number of frames)."""
        out = self._channels(block)
        if self._resampler is not None:
            return self._resampler.process(out)
        return out

    def flush(self) -> npt.NDArray[np.float32]:
        """The resampler's tail at the end of the stream (empty if no resampling)."""
        if self._resampler is None:
            return np.zeros((0, self.ch_out), dtype=np.float32)
        return self._resampler.flush()
