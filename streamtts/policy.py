"""When to start (and restart) playback: the start/underrun policy. Pure: "now" is passed in.

How it works
------------
Playback consumes audio at 1 s/s; the source delivers it at some rate ``r`` with jitter. Starting
now with ``b`` seconds buffered plays through if every later packet arrives before playback
reaches it. The policy predicts the packets' lateness from the arrivals seen so far:

1. **Rate** ``r``: audio per second from the end of the first burst to the last arrival. The
   time to the first byte is never part of it, and the first burst (everything within
   `BURST_WINDOW_S` of the first arrival: a server's backlog, a whole Ogg page) is left out: it
   says nothing about the link.
2. **Transit and relative delay** (RFC 3550 / WebRTC NetEq): a packet's transit is its arrival
   time minus its audio position / ``s``, with the planning slope ``s = r`` (for ``r < 1``
   raised to the highest rate the jitter of the arrivals' ends could hide: the rate is
   measured between ends); its relative delay is its transit minus the smallest transit.
   Packets arriving together (within `BURST_WINDOW_S`: one network read, however the caller
   slices it into ``on_audio`` calls) are one arrival, positioned at its first sample: that is
   the sample playback needs first, and slicing must not change a decision. The **band** is
   the predicted worst relative delay: the largest seen, or the spread of the arrival events'
   transits × `_range_factor` (the width of a uniform spread, estimated from ``n`` samples at
   `BAND_CONFIDENCE`), whichever is larger. **Live**
   is the relative delay the next packet would have if it came now (it grows during a stall;
   with only the first burst in, the next packet is due at once).
3. **Target**: playback started now reaches the next packet after ``b`` seconds, and that packet
   arrives at most ``band - live`` from now; later ones get ``1 - s`` seconds closer per second
   of audio when ``s < 1``::

       target = max(min_preroll, band - live + block) + R·(1 - s)/s   (last term only if s < 1)

   ``R`` is the audio still to arrive: the caller's ``expected_duration`` hint minus what came
   (at least `HINT_TAIL_FRACTION` of the hint), else `TYPICAL_UTTERANCE_S` minus what came but
   at least what came (an utterance is assumed to last about as long again). The block is the
   callback's: it takes a whole block at once. On a regular link at ≥ 1× the band is ~0 and the
   target is a packet or two; a fast link starts within a block or two of its first packet.
4. Few arrivals: with only the first burst the target is at least `FIRST_BURST_PREROLL_S`
   (a whole Ogg page starts at once, a model's first chunk waits for the next); then until
   `MIN_ARRIVAL_EVENTS` arrivals, at least `FEW_ARRIVALS_PREROLL_S`: a late first packet with the
   ones queued behind it looks like a fast link, and a second interval tells them apart.
5. **Chunks** (a TTS model emitting its audio piece by piece): while every arrival so far
   was a chunk of at least `CHUNK_MIN_S` that brought at least as much audio as the time
   since the previous arrival (the link kept pace with real time at every arrival, not just
   on average), the next chunk is predicted within ``G`` of the last arrival, ``G`` the
   longest gap between chunks seen (in this source, or the last source's, extrapolated), at
   least `CHUNK_GAP_S`. The target is then at most ``G - (now - last arrival) + block``: enough to
   play until that deadline, and by induction through every later chunk, since each brings
   more audio than its gap costs. The statistics above read a chunk's size as lateness (a
   chunk arrives when its end is generated) and with two or three arrivals extrapolate it
   ×2–3.4, holding back a start the chunks themselves show to be safe. Before a second
   arrival the rate is unknown, and a slow (< 1×) link looks exactly the same: the first
   chunk alone starts on this deadline only if the last source over this link was such a
   chunk stream.
6. **Underrun**: the jitter part of the target playback last started with, × `UNDERRUN_GROWTH`,
   becomes a floor (capped at ``max_preroll``); the stall enters the band once measured.
7. When the source is complete, anything buffered starts; ``max_preroll`` buffered always starts.

Across sources (``reset``), the last source's jitter (decayed), rate and, if it was a chunk
stream, its longest gap between chunks are kept as priors: the sentences of one conversation
usually come over the same link.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

from .errors import UsageError

__all__ = ["SimulationResult", "StartPolicy", "oracle_start", "simulate"]

# --- Tunable constants -------------------------------------------------------------------------

#: Arrivals within this time of the first one are the "first burst". 5 ms: the decode time of a
#: whole 1-second Ogg page (50 packets × ~70 µs), so one network read counts as one arrival; much
#: shorter than the 20 ms packet spacing of a real-time link, so a real second packet is not in it.
BURST_WINDOW_S = 0.005

#: While only the first burst has come (no rate yet), start only with this much audio. 0.5 s:
#: a whole Ogg page (1 s) starts at once; a TTS model's first chunk (0.2–0.5 s) waits for the
#: next one, which may take as long as the chunk lasts on a ~1× source.
FIRST_BURST_PREROLL_S = 0.5

#: An arrival of at least this much audio is a *chunk*: a TTS model's piece of output (models
#: emit 0.2–1 s), an Ogg page, a server's backlog; not a packet (Opus: at most 120 ms) or a read
#: of a streaming link (~10–100 ms). 0.2 s: the shortest chunk of those models; a single late
#: packet with a 0.2 s backlog behind it is already a 200 ms stall, for the statistics to judge.
CHUNK_MIN_S = 0.2

#: On a chunk stream (see the module docstring, step 5), the next chunk is assumed to arrive
#: within this of the last one, unless a longer gap has been seen. 0.5 s: the same assumption
#: as FIRST_BURST_PREROLL_S (a model's next chunk of up to 0.5 s takes about as long as it lasts
#: on a ~1× source); 0.6 s chunks at 1.2× are 0.5 s apart.
CHUNK_GAP_S = 0.5

#: Then, until MIN_ARRIVAL_EVENTS arrivals have come, start only with this much. 0.2 s: it covers
#: a 200 ms gap before the next arrival (the jitter the policy is designed for); an OpenAI-like
#: first chunk (0.25 s) plus one read, or a fast link's first 10 ms start at once, while single
#: 20–60 ms packets, or a late packet with a few queued behind it, wait for one more arrival.
FEW_ARRIVALS_PREROLL_S = 0.2

#: Confidence with which the predicted jitter band covers the link's true one, read from the
#: range of the relative delays seen so far (uniform-delay model): a regular link (range ~0) pays
#: nothing, a jittery one waits for more arrivals while few have come. 0.5 (the median width):
#: in benchmarks/bench_policy.py, 0.75 and 0.9 gave no fewer underruns on 200 ms jitter (with
#: MIN_ARRIVAL_EVENTS guarding the first arrivals) but ~30 ms more median start delay.
BAND_CONFIDENCE = 0.5

#: Arrival events (packets arriving together count once) needed before the jitter and rate
#: are trusted. 3, i.e. two intervals: with one interval, a late first packet with the packets
#: queued behind it looks exactly like a fast regular link; two cost a regular 20 ms-packet
#: link one more packet (~20 ms).
MIN_ARRIVAL_EVENTS = 3

#: After an underrun the jitter part of the target playback last started with, × this, becomes
#: a floor (the stall itself enters the band once measured). 1.5: each underrun is already a pause
#: the listener hears; growing by half (not doubling) keeps the extra latency small on a link that
#: merely hiccupped, and still reaches the cap after a few.
UNDERRUN_GROWTH = 1.5

#: Without a duration hint, the remaining audio is assumed to be this long (at least). 4 s: a
#: typical TTS sentence (60–70 characters at ~15 characters per second).
TYPICAL_UTTERANCE_S = 4.0

#: With a hint, never assume less than this fraction of it remains while the source is open:
#: text-length estimates are off by ±20 %; 20 % of the hint covers a hint that was too short.
HINT_TAIL_FRACTION = 0.2

#: At ``reset`` the previous source's jitter is kept as a prior, multiplied by this. 0.5: the next
#: sentence over the same link is likely to be as jittery, but a single bad episode fades.
JITTER_MEMORY = 0.5

#: Floor of the planning rate, so that a near-stalled link gives a long (capped) target rather
#: than a division by zero.
MIN_PLANNING_RATE = 1e-3

#: Ceiling of the planning rate. 1000× is beyond any link; it only keeps two arrivals a clock
#: tick apart from making an absurd slope.
MAX_PLANNING_RATE = 1000.0

#: Arrivals kept for the jitter statistics. 256 × 20 ms packets ≈ 5 s: the recent past of the
#: link, and one pass over it (once per new arrival, only while waiting to start) ~0.15 ms.
HISTORY_LEN = 256

#: Default device callback period: the player's default block (480 frames at 48 kHz).
DEFAULT_BLOCK_S = 0.010

#: Adaptive default floor, in blocks. 2: the first callback takes a whole block at once, and the
#: next arrival must be in before the second one.
MIN_PREROLL_BLOCKS = 2

#: Adaptive default ceiling. 5 s: beyond that a listener takes the silence for a failure (the
#: WAV-bytes preroll this replaces waited 3.1 s); the ring buffer must hold at least this much.
DEFAULT_MAX_PREROLL_S = 5.0

_EPS = 1e-9  # float slack for comparisons of sums of packet durations


@dataclass(frozen=True, slots=True)
class _Config:
    mode: Literal["adaptive", "fixed"]
    preroll: float  # fixed mode only
    min_preroll: float
    max_preroll: float
    block: float
    extrapolate: bool
    growth: float


class StartPolicy:
    """Decides when playback (re)starts, from the measured arrival rate and jitter.

    Pure: no clock, no I/O; every method takes ``now`` (seconds, any monotonic origin). One
    instance serves one player; call `reset` at each new source. Build one with `adaptive`
    (default), `fixed` or `low_latency`.

    Example:
        >>> p = StartPolicy.adaptive()
        >>> p.reset(0.0, expected_duration=3.0)
        >>> p.on_audio(1.07, 0.25)  # the first 0.25 s, 1.07 s after the request
        >>> p.should_start(1.07, buffered=0.25)  # one burst: the link's rate is unknown
        False
        >>> p.on_audio(1.083, 0.085)  # the next read: 6.5× real time
        >>> p.should_start(1.09, buffered=0.335)
        True
        >>> round(p.arrival_rate, 2)
        6.54
    """

    __slots__ = (
        "_boost",
        "_burst_audio",
        "_burst_end",
        "_cfg",
        "_chunk_stream",
        "_ended",
        "_event_audio",
        "_event_gap",
        "_first_time",
        "_gaps",
        "_hint",
        "_history",
        "_last_time",
        "_max_gap",
        "_min_gap",
        "_now",
        "_prior_chunk_gap",
        "_prior_jitter",
        "_prior_rate",
        "_start_target",
        "_stats_cache",
        "_total",
        "_underruns",
    )

    def __init__(self) -> None:
        """Create an adaptive policy with default settings (same as `StartPolicy.adaptive()`)."""
        self._cfg = _adaptive_config()
        self._prior_jitter = 0.0
        self._prior_rate: float | None = None
        self._prior_chunk_gap: float | None = None
        self._history: deque[tuple[float, float]] = deque(maxlen=HISTORY_LEN)
        self._stats_cache: tuple[tuple[int, float, float], _Stats] | None = None
        self._hint: float | None = None
        self._now = 0.0
        self._ended = False
        self._first_time: float | None = None
        self._burst_end = 0.0
        self._burst_audio = 0.0
        self._last_time = 0.0
        self._total = 0.0
        self._boost = 0.0
        self._start_target = 0.0
        self._underruns = 0
        self._chunk_stream = True
        self._event_audio = 0.0
        self._event_gap = 0.0
        self._max_gap = 0.0
        self._min_gap = math.inf
        self._gaps = 0

    # --- constructors ------------------------------------------------------------------------

    @classmethod
    def adaptive(
        cls,
        min_preroll: float | None = None,
        max_preroll: float = DEFAULT_MAX_PREROLL_S,
        *,
        block: float = DEFAULT_BLOCK_S,
    ) -> StartPolicy:
        """The adaptive policy: start as soon as the measured rate and jitter allow.

        Args:
            min_preroll: Never start with less than this (seconds), unless the source is
                complete; None: two blocks. It is also a guarantee: on a link at ≥ 1× real time
                whose packets (of up to ``d`` seconds) are each delayed by at most ``J``, a
                ``min_preroll`` of ``J + d + block`` never underruns.
            max_preroll: Always start once this much is buffered (seconds); also caps the
                restart target. The ring buffer must hold at least this much.
            block: The device callback period in seconds (blocksize / sample rate).

        Returns:
            A new policy.
        """
        _check_positive(block=block)
        if min_preroll is None:
            min_preroll = MIN_PREROLL_BLOCKS * block
        _check_order(min_preroll, max_preroll)
        return cls._configured(
            _adaptive_config(min_preroll=min_preroll, max_preroll=max_preroll, block=block)
        )

    @classmethod
    def fixed(cls, preroll_s: float) -> StartPolicy:
        """Start (and restart after an underrun) once ``preroll_s`` seconds are buffered.

        What other players do (0, 150 ms, 0.5 s); for comparison and for callers that need a
        predictable delay. ``preroll_s = 0`` starts as soon as anything is buffered.

        Args:
            preroll_s: Seconds of audio to buffer before starting.

        Returns:
            A new policy.
        """
        if not preroll_s >= 0.0 or math.isinf(preroll_s):
            raise UsageError(f"preroll_s must be a finite number >= 0, got {preroll_s!r}")
        cfg = replace(_adaptive_config(), mode="fixed", preroll=preroll_s, max_preroll=preroll_s)
        return cls._configured(cfg)

    @classmethod
    def low_latency(cls, *, block: float = DEFAULT_BLOCK_S) -> StartPolicy:
        """Adaptive, tuned for the earliest start: one block of floor, observed jitter only.

        The jitter band is the largest relative delay seen, not extrapolated from the spread
        of a few arrivals; the ceiling is 2 s. Trades more underruns on a jittery link for
        ~20 ms less median delay there (see benchmarks/bench_policy.py); the restart target
        still grows after an underrun.

        Args:
            block: The device callback period in seconds.

        Returns:
            A new policy.
        """
        _check_positive(block=block)
        # A 2 s ceiling: a caller who chose low latency would rather hear a gap than wait longer.
        cfg = _adaptive_config(min_preroll=block, max_preroll=2.0, block=block)
        return cls._configured(replace(cfg, extrapolate=False))

    @classmethod
    def _configured(cls, config: _Config) -> StartPolicy:
        policy = cls()
        policy._cfg = config
        return policy

    # --- events from the player ----------------------------------------------------------------

    def reset(self, now: float, *, expected_duration: float | None = None) -> None:
        """Begin a new source (utterance): forget its measurements, keep the link's priors.

        Args:
            now: Current time (seconds).
            expected_duration: Expected total audio of this source in seconds, if known (e.g.
                estimated from the text length). Lets a slow link start late enough.
        """
        if expected_duration is not None and not expected_duration >= 0.0:
            raise UsageError(f"expected_duration must be >= 0, got {expected_duration!r}")
        if self._first_time is not None:
            band = self._plan(self._last_time).band
            self._prior_jitter = JITTER_MEMORY * max(band, self._prior_jitter)
            rate = self.arrival_rate
            if rate is not None:
                self._prior_rate = rate
                # A chunk stream to its end (its last chunk may be a short tail: only its pace
                # counts) leaves its longest gap; any other source over this link, none.
                chunks = self._chunk_stream and self._event_audio + _EPS >= self._event_gap
                self._prior_chunk_gap = self._predicted_gap() if chunks else None
        self._hint = expected_duration
        self._now = now
        self._ended = False
        self._first_time = None
        self._burst_end = now
        self._burst_audio = 0.0
        self._last_time = now
        self._total = 0.0
        self._history.clear()
        self._stats_cache = None
        self._boost = 0.0
        self._start_target = 0.0
        self._underruns = 0
        self._chunk_stream = True
        self._event_audio = 0.0
        self._event_gap = 0.0
        self._max_gap = 0.0
        self._min_gap = math.inf
        self._gaps = 0

    def on_audio(self, now: float, seconds: float) -> None:
        """Record decoded audio that has just arrived (one packet or block).

        Args:
            now: Arrival time (seconds); non-decreasing across calls.
            seconds: Duration of the audio that arrived.
        """
        if self._ended:
            raise UsageError("on_audio() after on_end(): call reset() for a new source")
        if seconds <= 0.0:
            return
        if self._first_time is not None:
            now = max(now, self._last_time)  # a clock that stepped back must not break spans
        self._now = max(self._now, now)
        if self._first_time is None:
            self._first_time = now
            self._burst_end = now
        if now - self._first_time <= BURST_WINDOW_S:
            self._burst_end = now
            self._burst_audio += seconds
        # Audio arriving together (one network read decoded into several blocks, a burst of
        # packets) is one arrival, timed by its first sample: how the caller slices it must not
        # matter. As separate entries, its later slices would look early by their offset into
        # the chunk, and its first one late by as much: a phantom jitter that also hides a
        # link's slowness from the planning rate.
        if not self._history or now - self._history[-1][0] > BURST_WINDOW_S:
            if self._history:  # the previous arrival is complete: judge it, start this one
                self._chunk_stream = self._chunk_stream and self._chunk_kept_pace()
                self._event_gap = now - self._history[-1][0]
                self._max_gap = max(self._max_gap, self._event_gap)
                self._min_gap = min(self._min_gap, self._event_gap)
                self._gaps += 1
            self._event_audio = 0.0
            self._history.append((now, self._total))
        self._event_audio += seconds
        self._total += seconds
        self._last_time = now

    def on_end(self, now: float) -> None:
        """Record that the source is complete: everything remaining is buffered.

        Args:
            now: Current time (seconds).
        """
        self._now = max(self._now, now)
        self._ended = True

    def on_underrun(self, now: float) -> None:
        """Record an underrun: the buffer ran dry while the source was still open.

        The jitter part of the target playback last started with, × `UNDERRUN_GROWTH`, becomes
        a floor of the restart target (capped at ``max_preroll``); the stall that follows is
        measured as jitter. Fixed policies keep their preroll.

        Args:
            now: Time of the underrun (seconds).
        """
        self._now = max(self._now, now)
        self._underruns += 1
        if self._cfg.mode == "adaptive":
            # The jitter margin we last started with was too small: grow it. (The drift term is
            # recomputed from the rate anyway; the stall enters the band once it is measured.)
            grown = self._cfg.growth * max(self._boost, self._start_target)
            self._boost = min(self._cfg.max_preroll, grown)

    def should_start(self, now: float, buffered: float) -> bool:
        """Whether to start (or restart after an underrun) playback now.

        Ask about once per device block while not playing. Always True when the source is
        complete and anything is buffered, or when ``max_preroll`` is buffered.

        Args:
            now: Current time (seconds).
            buffered: Seconds of audio buffered and not yet played.

        Returns:
            True to start now.
        """
        self._now = max(self._now, now)
        if buffered <= 0.0:
            return False
        if self._ended:
            return True
        target, jitter_part = self._targets(now)
        if buffered + _EPS < target:
            return False
        self._start_target = jitter_part
        return True

    # --- measurements ----------------------------------------------------------------------------

    @property
    def arrival_rate(self) -> float | None:
        """Audio seconds arrived per second of wall time since the first burst (None: unknown)."""
        span = self._last_time - self._burst_end
        if self._first_time is None or span <= 0.0:
            return None
        return (self._total - self._burst_audio) / span

    @property
    def jitter(self) -> float | None:
        """Predicted worst relative delay of arrivals in seconds (None before any audio)."""
        if self._first_time is None:
            return None
        return self._plan(self._now).band

    @property
    def target(self) -> float:
        """The buffer (seconds) `should_start` currently requires, at the latest time seen."""
        if self._ended:
            return 0.0
        return self._target(self._now)

    @property
    def underruns(self) -> int:
        """Underruns reported since the last `reset`."""
        return self._underruns

    @property
    def received(self) -> float:
        """Seconds of audio received since the last `reset`."""
        return self._total

    # --- internals ------------------------------------------------------------------------------

    def _target(self, now: float) -> float:
        return self._targets(now)[0]

    def _targets(self, now: float) -> tuple[float, float]:
        """The buffer target, and its part due to jitter alone (what an underrun grows)."""
        cfg = self._cfg
        if cfg.mode == "fixed":
            return cfg.preroll, cfg.preroll
        plan = self._plan(now)
        # The latest any future packet is predicted to arrive is `band` after the earliest
        # (relative delay); playback started now needs it `band - live` from now, plus a block
        # because each callback takes a whole block at once.
        jitter_part = max(cfg.min_preroll, plan.band - plan.live + cfg.block)
        chunk_part = self._chunk_target(now)
        if chunk_part is not None:
            jitter_part = min(jitter_part, chunk_part)
        base = jitter_part
        if plan.slope < 1.0:
            base += self._remaining() * (1.0 - plan.slope) / plan.slope
        if self.arrival_rate is None:
            base = max(base, FIRST_BURST_PREROLL_S)
        elif plan.events < MIN_ARRIVAL_EVENTS:
            # Too few arrivals to tell a regular link from a late first packet with the ones
            # queued behind it: wait for more, unless what came is long enough on its own.
            base = max(base, FEW_ARRIVALS_PREROLL_S)
        if chunk_part is not None:
            # A chunk stream at >= 1× needs no drift term, and its chunks answer what the
            # first-arrival guards wait for (is the link keeping pace?).
            base = min(base, chunk_part)
        return min(cfg.max_preroll, max(self._boost, base)), jitter_part

    def _chunk_kept_pace(self) -> bool:
        """Whether the latest arrival is a chunk that brought at least the time since the last."""
        return self._event_audio + _EPS >= max(CHUNK_MIN_S, self._event_gap)

    def _chunk_target(self, now: float) -> float | None:
        """The buffer that plays to the next chunk's deadline, if this is a chunk stream.

        None unless every arrival was a chunk that kept pace with real time (step 5 of the
        module docstring), and none after an underrun; with the first arrival alone, only if
        the last source over this link was such a stream (a slow link looks the same until
        the second arrival).
        """
        if self._underruns or not self._history:
            return None  # after an underrun, the statistics and the grown floor decide
        if not (self._chunk_stream and self._chunk_kept_pace()):
            return None
        gap = max(CHUNK_GAP_S, self._max_gap)
        if self._prior_chunk_gap is not None:
            gap = max(gap, self._prior_chunk_gap)
        elif len(self._history) == 1:
            return None
        due = gap - (now - self._history[-1][0])
        return max(self._cfg.min_preroll, due + self._cfg.block)

    def _predicted_gap(self) -> float:
        """The longest gap between chunks a next source should expect (its prior).

        The longest of ``n`` gaps seen falls short of the longest possible one, by about
        their range / (n - 1) if they are uniform (the unbiased estimate of the upper end):
        without it, every other next source would see a longer gap than the last one did.
        """
        if self._gaps < 2:
            return self._max_gap
        return self._max_gap + (self._max_gap - self._min_gap) / (self._gaps - 1)

    def _remaining(self) -> float:
        received = self._total
        if self._hint is not None:
            return max(self._hint - received, HINT_TAIL_FRACTION * self._hint)
        return max(TYPICAL_UTTERANCE_S - received, received)

    def _plan(self, now: float) -> _Plan:
        rate = self.arrival_rate
        if rate is None:
            rate = self._prior_rate
        slope = 1.0 if rate is None else min(max(rate, MIN_PLANNING_RATE), MAX_PLANNING_RATE)
        if slope < 1.0 and self.arrival_rate is not None:
            # Below real time only beyond what the jitter could explain: the span may be short
            # by up to the worst relative delay, so the rate may be up to audio/(span - delay).
            # The rate is measured between the ENDS of arrivals, so it is their lateness that
            # counts (predicted like the band, from their spread): a link paced by bytes or by
            # generation delivers each piece when its end is due, and a short piece (the tail
            # of a server's chunk) looks early by its start, never by its end.
            span = self._last_time - self._burst_end
            ends = self._relative_delays(slope)
            spread = ends.worst_end
            if ends.events > 1:
                spread = max(spread, ends.end_spread * _range_factor(ends.events))
            audio = self._total - self._burst_audio
            slope = 1.0 if span <= spread else max(min(audio / (span - spread), 1.0), slope)
        stats = self._relative_delays(slope)
        band = max(stats.worst, self._prior_jitter)
        if self._cfg.extrapolate and stats.events > 1:
            band = max(band, stats.spread * _range_factor(stats.events))
        # Relative delay the next packet (at position `_total`) would have if it came now. With
        # only the first burst in, there is no schedule yet (the burst is a backlog, however
        # long): the next packet is due at once.
        if self.arrival_rate is None:
            live = now - self._last_time
        else:
            live = now - self._total / slope - stats.min_transit
        return _Plan(slope, max(band, live), live, stats.events)

    def _relative_delays(self, slope: float) -> _Stats:
        """Transit statistics of the arrivals kept, against a line of ``slope`` audio s per s.

        A packet's transit is its arrival time minus its position / slope; its relative delay
        is its transit minus the smallest transit before it. The spread counts one sample per
        arrival event: packets arriving together (held behind a late one) add nothing. The
        ``*_end`` figures are the same for the arrivals' ends (arrival time minus the position
        after its audio).
        """
        key = (len(self._history), self._total, slope)
        if self._stats_cache is not None and self._stats_cache[0] == key:
            return self._stats_cache[1]
        min_transit = math.inf
        worst = 0.0
        events = 0
        low = math.inf
        high = -math.inf
        previous = -math.inf
        min_end = math.inf
        worst_end = 0.0
        end_low = math.inf
        end_high = -math.inf
        # Each arrival's audio ends where the next one's starts (the last one's at `_total`).
        ends = itertools.chain(itertools.islice(self._history, 1, None), [(0.0, self._total)])
        for (arrival, position), (_, end) in zip(self._history, ends, strict=False):
            transit = arrival - position / slope
            min_transit = min(min_transit, transit)
            worst = max(worst, transit - min_transit)
            end_transit = arrival - end / slope
            min_end = min(min_end, end_transit)
            worst_end = max(worst_end, end_transit - min_end)
            end_low = min(end_low, end_transit)
            end_high = max(end_high, end_transit)
            if arrival - previous > BURST_WINDOW_S:
                events += 1
                low = min(low, transit)
                high = max(high, transit)
            previous = arrival
        if events == 0:
            min_transit, low, high = self._last_time, 0.0, 0.0
            end_low = end_high = 0.0
        stats = _Stats(worst, min_transit, high - low, events, worst_end, end_high - end_low)
        self._stats_cache = (key, stats)
        return stats


class _Stats(NamedTuple):
    worst: float  # largest relative delay (s)
    min_transit: float  # smallest transit (s)
    spread: float  # largest minus smallest transit of the arrival events (s)
    events: int  # arrival events (packets arriving together count once)
    worst_end: float  # largest relative delay of the arrivals' ends (s)
    end_spread: float  # largest minus smallest transit of the arrivals' ends (s)


class _Plan(NamedTuple):
    slope: float  # planning rate: min(rate, 1), 1 if unknown
    band: float  # predicted worst relative delay of a future arrival (s)
    live: float  # relative delay the next arrival would have if it came now (s)
    events: int  # arrival events seen


@functools.cache
def _range_factor(samples: int) -> float:
    """Upper confidence bound of a uniform spread's width, per unit of observed range.

    For ``n`` delays uniform over ``[0, W]`` the observed range ``R`` has
    ``P(R <= x·W) = n·x^(n-1) - (n-1)·x^n``; the ``x`` where that is ``1 - BAND_CONFIDENCE``
    gives ``W <= R / x`` with that confidence (at 50 %: n = 2: 3.4; 3: 2.0; 5: 1.46; 20: 1.09).
    """
    n = max(samples, 2)
    low, high = 0.0, 1.0
    for _ in range(50):  # bisection on a monotonic function: 50 halvings reach 1e-15
        x = (low + high) / 2
        if n * x ** (n - 1) - (n - 1) * x**n < 1.0 - BAND_CONFIDENCE:
            low = x
        else:
            high = x
    return 1.0 / max(high, 1e-9)


def _adaptive_config(
    *,
    min_preroll: float = MIN_PREROLL_BLOCKS * DEFAULT_BLOCK_S,
    max_preroll: float = DEFAULT_MAX_PREROLL_S,
    block: float = DEFAULT_BLOCK_S,
) -> _Config:
    return _Config(
        mode="adaptive",
        preroll=0.0,
        min_preroll=min_preroll,
        max_preroll=max_preroll,
        block=block,
        extrapolate=True,
        growth=UNDERRUN_GROWTH,
    )


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (value > 0.0 and math.isfinite(value)):
            raise UsageError(f"{name} must be a finite number > 0, got {value!r}")


def _check_order(min_preroll: float, max_preroll: float) -> None:
    if not (0.0 <= min_preroll <= max_preroll and math.isfinite(max_preroll)):
        raise UsageError(
            f"need 0 <= min_preroll <= max_preroll < inf, got {min_preroll!r}, {max_preroll!r}"
        )


# --- Simulation (for tests and benchmarks) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """What a simulated playback of an arrival trace did.

    Attributes:
        first_arrival: Time of the first audio's arrival.
        start_time: Time playback first started (None if it never did).
        underruns: Times the buffer ran dry before the source was complete.
        silence: Seconds of silence inserted after the start (underrun gaps).
        finish_time: Time the last block containing audio was played (None if never).
        restarts: Times playback restarted after an underrun.
        buffer_trace: ``(time, buffered seconds, playing)`` at each block, if recorded.
        target_trace: ``(time, policy target)`` at each block while waiting, if recorded.
    """

    first_arrival: float
    start_time: float | None
    underruns: int
    silence: float
    finish_time: float | None
    restarts: tuple[float, ...] = ()
    buffer_trace: tuple[tuple[float, float, bool], ...] = field(default=(), repr=False)
    target_trace: tuple[tuple[float, float], ...] = field(default=(), repr=False)

    @property
    def start_delay(self) -> float | None:
        """Seconds from the first audio's arrival to the start of playback."""
        return None if self.start_time is None else self.start_time - self.first_arrival


def simulate(
    policy: StartPolicy,
    arrivals: Iterable[tuple[float, float]],
    block_s: float = DEFAULT_BLOCK_S,
    *,
    expected_duration: float | None = None,
    origin: float = 0.0,
    record: bool = False,
) -> SimulationResult:
    """Play an arrival trace through ``policy`` on a simulated device clock.

    The device ticks every ``block_s`` from ``origin`` (the request time). At each tick the
    arrivals up to it are given to the policy with their own times (``on_audio``), the source
    ends with its last arrival (``on_end``); then, if not playing, ``should_start`` is asked; if
    playing, one block is consumed. A block that finds less than a block buffered while the
    source is open is an underrun: its missing part is silence, playback pauses, ``on_underrun``
    is called, and each paused block counts as silence until ``should_start`` says restart — the
    intended use of the policy by the player.

    Args:
        policy: The policy (it is `StartPolicy.reset` at ``origin``).
        arrivals: ``(time, seconds of audio)`` in time order, times ≥ ``origin``.
        block_s: Device block period.
        expected_duration: Passed to ``reset``.
        origin: Time of the request (the device's first tick).
        record: Keep per-block buffer levels and targets (for plots).

    Returns:
        The `SimulationResult`.
    """
    _check_positive(block_s=block_s)
    trace = [(t, d) for t, d in arrivals if d > 0.0]
    if not trace:
        raise UsageError("simulate() needs at least one arrival with audio")
    if any(b[0] < a[0] for a, b in itertools.pairwise(trace)) or trace[0][0] < origin:
        raise UsageError("arrival times must be non-decreasing and >= origin")
    end_time = trace[-1][0]
    policy.reset(origin, expected_duration=expected_duration)

    index = 0
    buffered = 0.0
    ended = False
    playing = False
    start_time: float | None = None
    finish_time: float | None = None
    underruns = 0
    silence = 0.0
    restarts: list[float] = []
    levels: list[tuple[float, float, bool]] = []
    targets: list[tuple[float, float]] = []
    total = sum(d for _, d in trace)
    # A policy that never starts with the whole source buffered would loop forever.
    limit = math.ceil((end_time - origin + 2 * total + 60.0) / block_s)
    tick = 0
    while True:
        if tick > limit:
            raise UsageError("the policy never started or never finished playing the trace")
        now = origin + tick * block_s
        while index < len(trace) and trace[index][0] <= now + _EPS:
            policy.on_audio(trace[index][0], trace[index][1])
            buffered += trace[index][1]
            index += 1
        if not ended and index == len(trace):
            policy.on_end(end_time)
            ended = True
        if not playing:
            if buffered > _EPS and policy.should_start(now, buffered):
                playing = True
                if start_time is None:
                    start_time = now
                else:
                    restarts.append(now)
            elif start_time is not None:
                silence += block_s
            if record and not playing:
                targets.append((now, policy.target))
        if playing:
            if buffered + _EPS >= block_s:
                buffered = max(0.0, buffered - block_s)
            elif ended:
                finish_time = now + buffered
                buffered = 0.0
            else:
                silence += block_s - buffered
                buffered = 0.0
                underruns += 1
                playing = False
                policy.on_underrun(now)
            if ended and buffered <= _EPS and finish_time is None:
                finish_time = now + block_s
        if record:
            levels.append((now, buffered, playing))
        if finish_time is not None:
            break
        tick += 1
    return SimulationResult(
        first_arrival=trace[0][0],
        start_time=start_time,
        underruns=underruns,
        silence=silence,
        finish_time=finish_time,
        restarts=tuple(restarts),
        buffer_trace=tuple(levels),
        target_trace=tuple(targets),
    )


def oracle_start(
    arrivals: Iterable[tuple[float, float]],
    block_s: float = DEFAULT_BLOCK_S,
    *,
    origin: float = 0.0,
) -> float:
    """The earliest block tick at which playback can start and never underrun (hindsight).

    Starting at tick ``s``, the block played at ``s + k·block`` needs the audio up to
    ``min((k + 1)·block, total)`` to have arrived by then; the earliest such ``s`` on the tick
    grid is the best any policy could do knowing the whole trace.

    Args:
        arrivals: ``(time, seconds of audio)`` in time order.
        block_s: Device block period.
        origin: Time of the device's first tick.

    Returns:
        The start time.
    """
    _check_positive(block_s=block_s)
    trace = [(t, d) for t, d in arrivals if d > 0.0]
    if not trace:
        raise UsageError("oracle_start() needs at least one arrival with audio")
    total = sum(d for _, d in trace)
    earliest = trace[0][0]
    cumulative = 0.0
    index = 0
    block = 0
    # For each block k, find the arrival that completes the audio it needs.
    while block * block_s < total - _EPS:
        need = min((block + 1) * block_s, total)
        while cumulative + _EPS < need:
            cumulative += trace[index][1]
            index += 1
        earliest = max(earliest, trace[index - 1][0] - block * block_s)
        block += 1
    ticks = math.ceil((earliest - origin) / block_s - 1e-6)
    return origin + max(ticks, 0) * block_s
