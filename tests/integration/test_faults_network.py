"""Network faults on loopback, through the whole stack into a recorded PulseAudio null sink.

A raw-socket server (`support.faulty`) answers with a scripted fault: the connection dropped at
a page boundary, mid-page or mid-header, a stall longer than the read timeout, a slow drip, a
wrong Content-Type, an HTML page or an empty body with 200, a huge Ogg header page. Each fault
is played three ways: ``Player.play(httpx response)``, ``Player.play`` of an `OpenAIEngine`
stream, and ``Speaker.say``. Every case checks:

* the typed error (or the clean result) and the event that says what happened;
* the audio: the null-sink recording holds, sample for sample, the decode of exactly the bytes
  the server sent before the fault, and nothing after it (not cut, not padded);
* nothing is left open: the server saw the client close the connection, the device is closed,
  no task is left in the event loop, and the process's threads and file descriptors are back to
  their baseline (ResourceWarnings are errors in this suite, and a GC pass runs to surface them).

No timing assertions: the timeouts here are the faults themselves (a read timeout of 0.4 s) and
generous hang guards.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import numpy as np
import pytest
from support.audio import NullSink, align, assert_same_audio, find_offset, first_nonzero
from support.faulty import Fault, FaultyServer
from support.oggtools import parse_pages

from streamtts.engines import OpenAIEngine
from streamtts.errors import ProtocolError, StreamInterrupted, StreamTimeout, StreamTTSError
from streamtts.events import (
    PlaybackError,
    PlaybackFinished,
    SourceEvent,
    SpeechError,
    StreamTruncated,
)
from streamtts.formats import make_reader
from streamtts.opus import OggOpusDecoder, OggOpusEncoder
from streamtts.player import Player
from streamtts.resample import Resampler
from streamtts.speaker import EDGE_KEEP, Speaker
from streamtts.trim import SilenceTrimmer

pytestmark = [pytest.mark.device]

RATE = 48000
#: Read timeout of the clients: the stall fault lasts longer, the drip's 100 ms per byte less.
READ_TIMEOUT = 0.4
#: PortAudio output latency: a callback starved longer than this (both cores busy with other
#: suites) loses a block and breaks the sample comparison; 250 ms rides that out (as in
#: test_player.py) and costs nothing, since no timing is asserted.
DEVICE_LATENCY = 0.25
#: Hang guard of one case (the longest, the drip, takes ~2 s of audio plus 1.5 s of drip).
HANG_GUARD = 30.0
#: Hang guard of the wait for threads and file descriptors to be back to their baseline (the
#: server's threads join, PortAudio's and the recorder's pipes close).
SETTLE = 5.0

#: Loop iterations allowed for finalizer tasks to end before tasks are counted (one is enough).
SETTLE_CHECKPOINTS = 20

PATHS = ("httpx", "engine", "speaker")


def speechlike(seconds: float) -> np.ndarray:
    """Two amplitude-modulated tones, shaped ``(frames, 1)``, first sample non-zero."""
    n = round(seconds * RATE)
    t = np.arange(1, n + 1) / RATE
    x = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1370 * t)
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)
    return x.astype(np.float32).reshape(-1, 1)


def encode(pcm: np.ndarray, *, padding: int = 0) -> bytes:
    """48 kHz Ogg Opus with 0.5 s pages (the recording is then bit-exact with the decode)."""
    encoder = OggOpusEncoder(RATE, 1, page_ms=500, padding=padding, serial=7)
    return encoder.encode(pcm) + encoder.finish()


def decode(data: bytes) -> np.ndarray:
    """What a decoder makes of exactly these bytes (a truncated stream too)."""
    decoder = OggOpusDecoder(RATE)
    blocks = [*decoder.feed(data), *decoder.close()]
    return np.concatenate(blocks) if blocks else np.zeros((0, 1), np.float32)


@dataclass(frozen=True)
class Case:
    """One fault and what it must give."""

    fault: Fault
    #: The error raised by play()/say() (None: the stream plays to its end).
    error: type[StreamTTSError] | None
    #: The start policy: a fixed preroll longer than the audio for the drip, whose last bytes
    #: arrive slower than real time (else an underrun fades the audio and the comparison is off).
    latency: str | float = "adaptive"
    #: Paths the fault applies to (a cut mid-header never gives httpx a response to play).
    paths: tuple[str, ...] = PATHS
    #: The engine finds it out from the response's start: ``engine.stream()`` raises, and no
    #: ``play()`` (so no `PlaybackError`) ever happens on that path.
    before_audio: bool = False


def cases() -> dict[str, Case]:
    ogg = encode(speechlike(1.5))
    pages = parse_pages(ogg)
    second = pages[3]  # audio pages: 2, 3, 4 (0.5 s each), 5 the short EOS page
    mid_page = second.offset + second.size // 2
    html = b"<!DOCTYPE html><html><body><h1>Gateway</h1>Please log in.</body></html>"
    return {
        "disconnect-mid-stream": Case(
            Fault(body=ogg, cut_after=second.offset), StreamInterrupted
        ),
        "disconnect-mid-page": Case(Fault(body=ogg, cut_after=mid_page), StreamInterrupted),
        "disconnect-mid-page-chunked": Case(
            Fault(body=ogg, cut_after=mid_page, framing="chunked", write_size=1000),
            StreamInterrupted,
        ),
        "disconnect-mid-header": Case(
            Fault(body=ogg, head_cut=20),
            StreamInterrupted,
            paths=("engine", "speaker"),
            before_audio=True,
        ),
        "stall-longer-than-read-timeout": Case(
            Fault(body=ogg, stall_after=mid_page), StreamTimeout
        ),
        "slow-drip": Case(
            Fault(body=ogg, drip_from=len(ogg) - 15, drip_interval=0.1), None, latency=3.0
        ),
        "wrong-content-type": Case(Fault(body=ogg, content_type="application/json"), None),
        "html-page-with-200": Case(
            Fault(body=html, content_type="text/html; charset=utf-8"),
            ProtocolError,
            before_audio=True,
        ),
        "empty-body-with-200": Case(Fault(body=b""), ProtocolError, before_audio=True),
        "huge-ogg-header-page": Case(
            Fault(body=encode(speechlike(1.0), padding=150_000), write_size=65536), None
        ),
    }


CASES = cases()
#: The faults also run on trio (the rest on asyncio): the cancellation and cleanup paths differ.
TRIO_CASES = ("disconnect-mid-page", "stall-longer-than-read-timeout")
PARAMS = [
    pytest.param(name, path, backend, id=f"{name}-{path}-{backend}")
    for name, case in CASES.items()
    for path in PATHS
    for backend in ("asyncio", "trio")
    if path in case.paths and (backend == "asyncio" or name in TRIO_CASES)
]


# ------------------------------------------------------------------------------ resources


def threads() -> list[str]:
    """Names of the threads alive, trio's idle cached workers aside.

    trio keeps an idle worker thread cached process-wide for 10 s after a ``to_thread`` call
    (named ``Trio thread N`` while idle; a worker running a job has the job's name and counts).
    """
    return [t.name for t in threading.enumerate() if not t.name.startswith("Trio thread ")]


def snapshot() -> tuple[int, set[str]]:
    """(threads alive, open file descriptors as ``fd -> target``), after a GC pass."""
    gc.collect()
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            continue  # the fd listing itself, closed since
    return len(threads()), fds


def assert_back_to(baseline: tuple[int, set[str]]) -> None:
    """Threads and file descriptors return to the baseline (polled up to `SETTLE` seconds)."""
    deadline = time.monotonic() + SETTLE
    now = snapshot()
    while (now[0] != baseline[0] or now[1] != baseline[1]) and time.monotonic() < deadline:
        time.sleep(0.05)
        now = snapshot()
    leaked = sorted(now[1] - baseline[1])
    assert now[0] == baseline[0], (
        f"threads: {now[0]}, baseline {baseline[0]}: {threads()}"
    )
    assert not leaked, f"file descriptors left open: {leaked}"


@pytest.fixture(scope="module")
def warmed_up(pulse_server: None) -> None:
    """Initialise what stays loaded for the life of the process (PortAudio, libopus, the ALSA
    pulse plugin, httpx's TLS context) before any baseline is taken."""
    sink = NullSink()
    try:
        with sink.route(), FaultyServer(Fault(body=encode(speechlike(0.1)))) as server:
            for backend in ("asyncio", "trio"):
                run_case("httpx", server.url, "adaptive", {}, backend)
                run_case("speaker", server.url, "adaptive", {}, backend)
    finally:
        sink.close()


# ------------------------------------------------------------------------------ the three paths


def run_case(
    path: str, url: str, latency: str | float, out: dict[str, Any], backend: str
) -> None:
    """Play the server's answer through *path*; fills ``out`` (error, events, device, tasks)."""

    async def main() -> None:
        tasks = len(anyio.get_running_tasks())
        with anyio.fail_after(HANG_GUARD):
            try:
                await PLAYS[path](url, latency, out)
            except StreamTTSError as exc:
                out["error"] = exc
        # An async generator left suspended inside httpx (its response body iterator, closed
        # early) is finalized by a short task the loop schedules: let such tasks run out.
        for _ in range(SETTLE_CHECKPOINTS):
            if len(anyio.get_running_tasks()) == tasks:
                break
            await anyio.lowlevel.checkpoint()
        out["tasks_left"] = len(anyio.get_running_tasks()) - tasks

    anyio.run(main, backend=backend)


async def via_httpx(url: str, latency: str | float, out: dict[str, Any]) -> None:
    timeout = httpx.Timeout(5.0, read=READ_TIMEOUT)
    async with httpx.AsyncClient(timeout=timeout) as client, Player(
        latency=latency, device_latency=DEVICE_LATENCY  # type: ignore[arg-type]
    ) as player:
        events = player.events()
        out["player"] = player
        try:
            async with client.stream("GET", f"{url}/speech.ogg") as response:
                out["result"] = await player.play(response)
        finally:
            out["events"] = events.drain()


async def via_engine(url: str, latency: str | float, out: dict[str, Any]) -> None:
    async with OpenAIEngine(
        base_url=f"{url}/v1", api_key="x", max_retries=0, read_timeout=READ_TIMEOUT
    ) as engine, Player(
        latency=latency, device_latency=DEVICE_LATENCY  # type: ignore[arg-type]
    ) as player:
        events = player.events()
        out["player"] = player
        try:
            async with engine.stream("Hello there.") as audio:
                out["result"] = await player.play(audio.aiter_bytes(), format=audio.format)
        finally:
            out["events"] = events.drain()


async def via_speaker(url: str, latency: str | float, out: dict[str, Any]) -> None:
    async with OpenAIEngine(
        base_url=f"{url}/v1", api_key="x", max_retries=0, read_timeout=READ_TIMEOUT
    ) as engine, Speaker(
        engine,
        trim=False,  # the audio as received: the recording is compared with its decode
        pause=0.0,
        latency=latency,  # type: ignore[arg-type]
        device_latency=DEVICE_LATENCY,
    ) as speaker:
        events = speaker.events()
        out["player"] = speaker.player
        try:
            out["result"] = await speaker.say("Hello there.")
        finally:
            out["events"] = events.drain()


PLAYS: dict[str, Callable[[str, str | float, dict[str, Any]], Any]] = {
    "httpx": via_httpx,
    "engine": via_engine,
    "speaker": via_speaker,
}


# ------------------------------------------------------------------------------ the test


@pytest.mark.parametrize(("name", "path", "backend"), PARAMS)
def test_a_network_fault_is_reported_typed_after_playing_what_arrived_and_leaks_nothing(
    warmed_up: None, null_sink: NullSink, name: str, path: str, backend: str
) -> None:
    case = CASES[name]
    baseline = snapshot()
    out: dict[str, Any] = {}
    with FaultyServer(case.fault) as server, null_sink.record() as rec:
        run_case(path, server.url, case.latency, out, backend)
        recording = rec.stop()
        assert server.connections, "no request reached the server"
        for conn in server.connections:
            assert conn.done.wait(SETTLE)
            assert conn.dropped or conn.client_closed.is_set(), "the client left it open"
    assert_back_to(baseline)

    # 1. Typed error, or none.
    error = out.get("error")
    expected = case.error
    if name == "empty-body-with-200" and path == "httpx":
        expected = None  # Player.play of an empty source plays nothing, by contract
    if expected is None:
        assert error is None, f"unexpected {error!r}"
    else:
        assert isinstance(error, expected), f"expected {expected.__name__}, got {error!r}"

    # 2. The event that says what happened.
    events = out.get("events", [])
    if path == "speaker":
        spoken = [e.error for e in events if isinstance(e, SpeechError)]
        assert spoken == ([type(error).__name__] if error else [])
    else:
        played = [e.error for e in events if isinstance(e, PlaybackError)]
        reported = error is not None and not (path == "engine" and case.before_audio)
        assert played == ([type(error).__name__] if reported else [])
        if name.startswith("disconnect-mid-page"):
            truncated = [
                e.detail for e in events
                if isinstance(e, SourceEvent) and isinstance(e.detail, StreamTruncated)
            ]
            assert len(truncated) == 1
            assert truncated[0].pending > 0
        if error is None and name != "empty-body-with-200":
            assert any(isinstance(e, PlaybackFinished) for e in events)

    # 3. The device is closed, no task is left behind.
    device = out["player"].device_output
    assert device is None or not device.is_open
    assert out["tasks_left"] == 0

    # 4. The audio: exactly the decode of the bytes sent, not cut, nothing after it.
    sent = sum(c.sent for c in server.connections)
    audio = case.fault.body.startswith(b"OggS") and case.fault.head_cut is None
    reference = decode(case.fault.body[:sent]) if audio else np.zeros((0, 1), np.float32)
    if error is None and case.fault.body and case.fault.content_type != "text/html":
        assert sent == len(case.fault.body)
    if len(reference) == 0 or first_nonzero(reference) is None:
        assert first_nonzero(recording) is None, "sound was played from a body with no audio"
        return
    if path != "speaker" and error is None:
        assert out["result"].frames == len(reference)
    assert_same_audio(recording, reference)
    start = first_nonzero(recording)
    assert start is not None
    after = recording[start - first_nonzero(reference) + len(reference) :]  # type: ignore[operator]
    assert first_nonzero(after) is None, "sound after the end of what was received"
    assert len(align(recording, reference)) == len(reference)


def test_the_fault_cases_cut_where_they_claim() -> None:
    # The cases are what their names say: a cut mid-page lies strictly inside an audio page,
    # the stall freezes after audio, the drip covers the end, the huge header page is huge.
    ogg = CASES["disconnect-mid-stream"].fault.body
    starts = {p.offset for p in parse_pages(ogg)}
    assert CASES["disconnect-mid-stream"].fault.cut_after in starts
    assert CASES["disconnect-mid-page"].fault.cut_after not in starts
    huge = CASES["huge-ogg-header-page"].fault.body
    assert max(p.size for p in parse_pages(huge)[:3]) > 60_000
    assert len(decode(ogg[: CASES["stall-longer-than-read-timeout"].fault.stall_after])) > RATE // 2
    drip = CASES["slow-drip"].fault
    assert drip.drip_from is not None
    assert (len(drip.body) - drip.drip_from) * drip.drip_interval > READ_TIMEOUT


@pytest.mark.parametrize("fmt", ["pcm", "opus"])
def test_a_speaker_plays_every_received_sample_of_a_dropped_sentence_resampled_and_trimmed(
    warmed_up: None, null_sink: NullSink, fmt: str
) -> None:
    # The speaker's own decode chain (reader -> resampler -> silence trimmer) holds a few ms
    # back at any moment (the resampler's look-ahead, the trimmer's analysis frame): a dropped
    # connection must flush it, as the end of a stream does, or the last syllable is clipped.
    if fmt == "pcm":  # OpenAI's raw PCM: 24 kHz s16, resampled to the device's 48 kHz
        pcm = speechlike(2.0)[::2]
        body = (np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()
        fault = Fault(body=body, content_type="audio/pcm", cut_after=2 * round(0.7 * 24000))
    else:
        body = encode(speechlike(1.5))
        pages = parse_pages(body)
        fault = Fault(body=body, cut_after=pages[3].offset + pages[3].size // 2)
    out: dict[str, Any] = {}

    async def main(url: str) -> None:
        async with OpenAIEngine(
            base_url=f"{url}/v1", api_key="x", max_retries=0, read_timeout=READ_TIMEOUT
        ) as engine, Speaker(
            engine, format=fmt, trim=fmt == "opus", device_latency=DEVICE_LATENCY
        ) as speaker:
            with anyio.fail_after(HANG_GUARD), pytest.raises(StreamInterrupted):
                await speaker.say("Hello there.")
            out["speaker"] = speaker

    with FaultyServer(fault) as server, null_sink.record() as rec:
        anyio.run(main, server.url)
        recording = rec.stop()
    sent = fault.body[: server.connections[0].sent]
    if fmt == "pcm":
        reader = make_reader("pcm", pcm_rate=24000, pcm_channels=1, pcm_format="s16le")
        resampler = Resampler(24000, RATE, 1)
        blocks = [resampler.process(b) for b in (*reader.feed(sent), *reader.close())]
        reference = np.concatenate([*blocks, resampler.flush()])
    else:
        trimmer = SilenceTrimmer(RATE, 1, pause=2 * EDGE_KEEP, lead_keep=EDGE_KEEP)
        reference = np.concatenate([trimmer.process(decode(sent)), trimmer.flush()])
    last = len(reference) - (first_nonzero(reference[::-1], 1e-4) or 0)
    reference = reference[:last]  # up to its last sound: the rest is silence either way
    offset = find_offset(recording, reference)
    got = recording[offset : offset + len(reference)]
    assert len(got) == len(reference), "the recording ends inside the audio"
    np.testing.assert_allclose(got, reference, atol=1e-5)  # the resampler: equal to rounding
    assert first_nonzero(recording[offset + len(reference) :], 1e-4) is None
