"""Arrival traces for the playback benchmarks: when each piece of decoded audio arrives.

A trace is a list of ``(time, seconds of audio)`` from the request at time 0, as the decoder
would hand them to the player (one entry per Opus packet, or per network read of PCM). Every
generator is deterministic for a given seed. The models:

* a *steady* source: packets generated at ``rate`` × real time after a time to first byte, each
  delayed by an independent uniform network delay in ``[0, jitter]`` and delivered in order (TCP:
  a late packet holds back the ones behind it);
* a *chunked* source: a TTS model producing audio in chunks (each chunk's packets arrive
  together when the chunk is done), optionally with pauses between chunks;
* a network *stall*: nothing is delivered for a while, then the backlog arrives at once;
* *pages*: Ogg pages arriving whole (packets of a page arrive together);
* a *slow link*: PCM over a link whose bit rate is near the audio's, one TCP segment at a time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = [
    "Trace",
    "all_traces",
    "chunked",
    "chunked_traces",
    "jitter_traces",
    "max_relative_delay",
    "pages",
    "slow_link",
    "steady",
]

#: Opus packet duration most TTS servers use (opusenc's default frame size).
PACKET_S = 0.020

#: Time to first byte of a local server on loopback (model load excluded).
LOCAL_TTFB_S = 0.15


@dataclass(frozen=True)
class Trace:
    """One arrival trace.

    Attributes:
        name: Short identifier.
        description: What it models.
        arrivals: ``(time, seconds of audio)`` in time order; time 0 is the request.
        expected_duration: The duration hint a caller would pass (None: no hint).
        rate: Nominal delivery rate (× real time) after the first byte.
        jitter: Nominal worst extra delay of an arrival (seconds).
    """

    name: str
    description: str
    arrivals: tuple[tuple[float, float], ...]
    expected_duration: float | None
    rate: float
    jitter: float

    @property
    def total(self) -> float:
        """Seconds of audio in the trace."""
        return sum(d for _, d in self.arrivals)


def _packets(duration: float, packet: float = PACKET_S) -> list[float]:
    count = max(1, round(duration / packet))
    return [packet] * count


def steady(
    rate: float,
    duration: float,
    *,
    ttfb: float = LOCAL_TTFB_S,
    jitter: float = 0.0,
    packet: float = PACKET_S,
    seed: int = 0,
    smooth: bool = False,
) -> list[tuple[float, float]]:
    """Packets generated at ``rate`` × real time, each delayed by up to ``jitter``, in order.

    Packet ``k`` is sent at ``ttfb + k·packet/rate`` (the first one right at the first byte).
    The delay is independent uniform [0, jitter] per packet, or with ``smooth`` a slowly varying
    queueing delay over [0, jitter] (three sinusoids of random periods 0.3–2 s and phases).
    """
    rng = random.Random(seed)
    waves = [(rng.uniform(0.3, 2.0), rng.uniform(0.0, 2 * math.pi)) for _ in range(3)]

    def delay(t: float) -> float:
        if not smooth:
            return rng.uniform(0.0, jitter)
        level = sum(math.sin(2 * math.pi * t / period + phase) for period, phase in waves)
        return jitter * (level + 3.0) / 6.0

    out: list[tuple[float, float]] = []
    last = 0.0
    for k, d in enumerate(_packets(duration, packet)):
        sent = ttfb + k * packet / rate
        arrival = max(last, sent + delay(sent))
        out.append((arrival, d))
        last = arrival
    return out


def chunked(
    rate: float,
    duration: float,
    *,
    ttfb: float = LOCAL_TTFB_S,
    chunk: tuple[float, float] = (0.2, 0.6),
    pause: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
) -> list[tuple[float, float]]:
    """Audio generated at ``rate`` in chunks of uniform [chunk] seconds, a chunk's packets together.

    The first chunk arrives at ``ttfb``; each later one when its generation is done, after an
    extra pause of uniform [pause] seconds (e.g. a shared GPU serving another request).
    """
    rng = random.Random(seed)
    out: list[tuple[float, float]] = []
    produced = 0.0
    now = ttfb
    while produced < duration - 1e-9:
        size = min(rng.uniform(*chunk), duration - produced)
        size = max(PACKET_S, round(size / PACKET_S) * PACKET_S)
        if produced > 0.0:
            now += size / rate + rng.uniform(*pause)
        out.extend((now, d) for d in _packets(size))
        produced += size
    return out


def stall(
    arrivals: list[tuple[float, float]], at: float, length: float
) -> list[tuple[float, float]]:
    """Nothing is delivered in ``[at, at + length)``; the backlog arrives at its end."""
    return [(at + length if at <= t < at + length else t, d) for t, d in arrivals]


def pages(
    rate: float, duration: float, *, ttfb: float, page: float = 1.0
) -> list[tuple[float, float]]:
    """Whole Ogg pages of ``page`` seconds generated at ``rate``; the first one at ``ttfb``."""
    out: list[tuple[float, float]] = []
    produced = 0.0
    index = 0
    while produced < duration - 1e-9:
        size = min(page, duration - produced)
        out.extend((ttfb + index * page / rate, d) for d in _packets(size))
        produced += size
        index += 1
    return out


def first_chunk_then_fast(
    duration: float, *, ttfb: float, first: float, rate: float, read: float
) -> list[tuple[float, float]]:
    """The first ``first`` seconds at ``ttfb``, then reads of ``read`` seconds at ``rate``."""
    out = [(ttfb, first)]
    produced = first
    index = 1
    while produced < duration - 1e-9:
        size = min(read, duration - produced)
        out.append((ttfb + index * read / rate, size))
        produced += size
        index += 1
    return out


def slow_link(
    link_bps: float, duration: float, *, ttfb: float = 0.3, sample_rate: int = 24000
) -> list[tuple[float, float]]:
    """16-bit mono PCM (WAV) over a link of ``link_bps`` wire bits/s, one TCP segment at a time.

    A full-size segment carries 1448 bytes of payload in 1538 bytes on the wire (Ethernet,
    IP, TCP with timestamps): the audio rate is ``link · 1448/1538`` bytes per byte of link.
    """
    payload, wire = 1448, 1538
    bytes_per_s = 2 * sample_rate
    total = round(duration * bytes_per_s)
    out: list[tuple[float, float]] = []
    sent = 0
    index = 0
    while sent < total:
        size = min(payload, total - sent)
        index += 1
        out.append((ttfb + index * wire * 8 / link_bps, size / bytes_per_s))
        sent += size
    return out


def max_relative_delay(arrivals: tuple[tuple[float, float], ...], rate: float) -> float:
    """The trace's jitter: the largest relative delay of an arrival (RFC 3550 / NetEq sense).

    An arrival's transit is its time minus its audio position / min(rate, 1); its relative
    delay is that transit minus the smallest transit before it.
    """
    slope = min(rate, 1.0)
    smallest = math.inf
    worst = 0.0
    position = 0.0
    for time, seconds in arrivals:
        transit = time - position / slope
        smallest = min(smallest, transit)
        worst = max(worst, transit - smallest)
        position += seconds
    return worst


def jitter_traces(
    count: int, *, rate: float = 1.05, jitter: float = 0.2, smooth: bool = False
) -> list[Trace]:
    """``count`` seeds of a steady ``rate`` source with ``jitter`` (for distributions)."""
    kind = "smooth" if smooth else "iid"
    return [
        Trace(
            f"rate{rate:g}_{kind}{round(jitter * 1000)}ms_seed{seed}",
            f"{rate:g}× real time, {kind} delays over [0, {jitter * 1000:.0f} ms]",
            tuple(steady(rate, 6.0, jitter=jitter, seed=seed, smooth=smooth)),
            None,
            rate,
            jitter,
        )
        for seed in range(count)
    ]


def chunked_traces(
    count: int,
    *,
    rate: float = 1.2,
    chunk: tuple[float, float] = (0.2, 0.6),
    pause: tuple[float, float] = (0.0, 0.0),
    first_seed: int = 0,
) -> list[Trace]:
    """``count`` seeds of a `chunked` source, from ``first_seed`` (for distributions)."""
    return [
        Trace(
            f"chunks{rate:g}x_{chunk[0]:g}-{chunk[1]:g}s_seed{seed}",
            f"{rate:g}×, model emits {chunk[0]:g}–{chunk[1]:g} s chunks"
            + (f", pauses {pause[0]:g}–{pause[1]:g} s" if pause[1] > 0 else ""),
            tuple(chunked(rate, 6.0, chunk=chunk, pause=pause, seed=seed)),
            None,
            rate,
            chunk[1] / rate,
        )
        for seed in range(first_seed, first_seed + count)
    ]


def all_traces() -> list[Trace]:
    """The benchmark's named traces."""
    t: list[Trace] = []

    def add(
        name: str,
        description: str,
        arrivals: list[tuple[float, float]],
        rate: float,
        jitter: float = 0.0,
        hint: float | None = None,
    ) -> None:
        t.append(Trace(name, description, tuple(arrivals), hint, rate, jitter))

    add("fast_loopback", "local server at 25× real time", steady(25.0, 5.0), 25.0)
    add(
        "rate1.2_bursts",
        "1.2×, model emits 0.2–0.6 s chunks",
        chunked(1.2, 6.0, seed=1),
        1.2,
        jitter=0.6,
    )
    add("rate1.05", "1.05×, regular packets", steady(1.05, 6.0), 1.05)
    add(
        "rate1.05_jitter200ms",
        "1.05×, each packet delayed by uniform [0, 200 ms], in order",
        steady(1.05, 6.0, jitter=0.2, seed=7),
        1.05,
        jitter=0.2,
    )
    add("rate1.0", "exactly real time, regular packets", steady(1.0, 6.0), 1.0)
    add(
        "rate0.8_hint",
        "0.8×, 8 s, exact duration hint",
        steady(0.8, 8.0),
        0.8,
        hint=8.0,
    )
    add("rate0.8_nohint", "0.8×, 8 s, no hint", steady(0.8, 8.0), 0.8)
    add(
        "rate0.8_hint_short",
        "0.8×, 8 s, hint 20 % too short (6.4 s)",
        steady(0.8, 8.0),
        0.8,
        hint=6.4,
    )
    add(
        "bursty",
        "model at 3× in 0.3–1.2 s chunks with pauses of 0–0.6 s",
        chunked(3.0, 8.0, chunk=(0.3, 1.2), pause=(0.0, 0.6), seed=3),
        1.5,
        jitter=0.6,
    )
    add(
        "stall500ms",
        "1.2× regular, network stall of 500 ms at 1.5 s, backlog then at once",
        stall(steady(1.2, 6.0), 1.5, 0.5),
        1.2,
        jitter=0.5,
    )
    add(
        "openai_ogg_pages",
        "0.8 s to first byte, whole 1 s Ogg pages at 4× real time",
        pages(4.0, 6.0, ttfb=0.8),
        4.0,
        jitter=0.25,
    )
    add(
        "openai_pcm",
        "1.07 s to first byte, first 0.25 s at once, then 85 ms reads at 6.5×",
        first_chunk_then_fast(6.0, ttfb=1.07, first=0.25, rate=6.5, read=4096 / 48000),
        6.5,
    )
    add(
        "pcm_link_384k",
        "24 kHz s16 WAV over a 384 kbit/s link (0.94× after TCP/IP overhead), hint",
        slow_link(384_000, 8.0),
        384_000 * 1448 / 1538 / 384_000,
        hint=8.0,
    )
    add(
        "pcm_link_360k",
        "24 kHz s16 WAV over a 360 kbit/s link (0.88×), hint",
        slow_link(360_000, 8.0),
        360_000 * 1448 / 1538 / 384_000,
        hint=8.0,
    )
    return t
