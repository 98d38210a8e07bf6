"""``streamtts serve`` (a real process, on 127.0.0.1) under load and under abuse.

* 50 concurrent streaming requests all complete, each with the right audio: it decodes (with
  `OggOpusDecoder`) to exactly the length a lone request for the same text gives (espeak-ng's
  samples vary from call to call, its length for a text does not), and without damage.
* The server's resident memory is bounded: the load is served twice; the first round may grow
  it to its working set (generous bound), the second, identical one must leave it nearly flat.
* 20 slowloris sockets (headers dribbled a byte at a time) do not keep a normal request from
  being served.
* A request declaring a 10 MB body is refused with 413 while almost none of it has been sent.

No timing assertions: only counts, lengths and statuses; the timeouts are hang guards.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import httpx
import pytest

from streamtts.events import DataLost, StreamEnded, StreamEvent, SyncLost
from streamtts.opus import OggOpusDecoder

#: Concurrent requests of the load test (the issue's number).
CONCURRENT = 50
#: Slowloris sockets held open while a normal request is served.
SLOWLORIS = 20
#: Seconds between two bytes of a slowloris client's headers.
SLOWLORIS_INTERVAL = 0.2
#: Short texts (a few syllables each: the load is on concurrency, not on synthesis).
TEXTS = ("Hello there.", "One moment please.", "Yes.", "The door is open.", "Good night.")
#: The load is served twice: the first round takes the server to its working set, the second
#: shows whether memory keeps growing with the requests served.
ROUNDS = 2
#: Memory the server may gain in the first round, in MB. Generous: 50 streams at once grow it
#: by ~35 MB here (a worker thread and a malloc arena per concurrent synthesis, connection
#: buffers); unbounded buffering of 50 responses would exceed it.
MAX_FIRST_ROUND_GROWTH_MB = 100.0
#: Memory the server may gain in the second, identical round, in MB. Once the working set is
#: reached it should stay flat; leaking each response (~5 kB) or its PCM (~100 kB) would still
#: be small per round, so this bound catches gross leaks (e.g. a stream's buffers kept).
MAX_RSS_GROWTH_MB = 16.0
#: Hang guard of one test.
HANG_GUARD = 120.0
#: Size the oversized request declares.
DECLARED_BODY = 10_000_000
#: Bytes of it actually sent before the answer is read.
SENT_BODY = 1024


@dataclass
class Server:
    url: str
    pid: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """``streamtts serve`` in its own process on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamtts.cli", "serve", "--port", str(port),
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "streamtts serve exited"
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "streamtts serve did not start"
            time.sleep(0.05)
        yield Server(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@dataclass
class Decoded:
    frames: int
    damage: list[StreamEvent]
    ended: bool
    status: int


async def speak(client: httpx.AsyncClient, url: str, text: str) -> Decoded:
    """Stream one response and decode it as it arrives."""
    decoder = OggOpusDecoder(48000)
    frames = 0
    body = {"model": "tts-1", "voice": "alloy", "input": text, "response_format": "opus"}
    async with client.stream("POST", f"{url}/v1/audio/speech", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return Decoded(0, [], False, response.status_code)
        async for chunk in response.aiter_bytes():
            frames += sum(len(b) for b in decoder.feed(chunk))
    frames += sum(len(b) for b in decoder.close())
    damage: list[StreamEvent] = [e for e in decoder.events if isinstance(e, DataLost | SyncLost)]
    ended = any(isinstance(e, StreamEnded) for e in decoder.events)
    return Decoded(frames, damage, ended, 200)


def test_fifty_concurrent_streams_all_complete_with_the_right_audio_in_bounded_memory(
    server: Server,
) -> None:
    async def main() -> tuple[dict[str, int], list[tuple[str, Decoded]], list[float]]:
        timeout = httpx.Timeout(60.0)
        limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=CONCURRENT)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            with anyio.fail_after(HANG_GUARD):
                expected = {}
                for text in TEXTS:  # one at a time: the reference length (and the warm-up)
                    lone = await speak(client, server.url, text)
                    assert lone.status == 200
                    expected[text] = lone.frames
                results: list[tuple[str, Decoded]] = []

                async def one(i: int) -> None:
                    text = TEXTS[i % len(TEXTS)]
                    results.append((text, await speak(client, server.url, text)))

                rss = [rss_mb(server.pid)]
                for _ in range(ROUNDS):
                    async with anyio.create_task_group() as tg:
                        for i in range(CONCURRENT):
                            tg.start_soon(one, i)
                    rss.append(rss_mb(server.pid))
        return expected, results, rss

    expected, results, rss = anyio.run(main)
    assert len(results) == CONCURRENT * ROUNDS
    for text, got in results:
        assert got.status == 200
        assert got.frames == expected[text] > 0, text
        assert got.damage == []
        assert got.ended
    # The first round grows the server to its working set for 50 concurrent streams (threads'
    # stacks, allocator arenas); a second identical round must not grow it much further.
    assert rss[1] - rss[0] < MAX_FIRST_ROUND_GROWTH_MB, f"RSS per round (MB): {rss}"
    assert rss[2] - rss[1] < MAX_RSS_GROWTH_MB, f"RSS per round (MB): {rss}"


def test_slowloris_sockets_do_not_keep_a_normal_request_from_being_served(
    server: Server,
) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    request = (
        b"POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"X-Padding: " + b"a" * 200 + b"\r\n"
    )
    stop = threading.Event()
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(SLOWLORIS)]
    for sock in sockets:  # every one has started its request before the normal one is sent
        sock.sendall(request[:1])
    sent = [1] * SLOWLORIS
    hung_up = [False] * SLOWLORIS

    def dribble() -> None:
        while not stop.is_set():
            for i, sock in enumerate(sockets):
                if sent[i] < len(request) and not hung_up[i]:
                    try:
                        sock.sendall(request[sent[i] : sent[i] + 1])
                        sent[i] += 1
                    except OSError:
                        hung_up[i] = True  # the server dropped it: a defence, also fine
            stop.wait(SLOWLORIS_INTERVAL)

    dribbler = threading.Thread(target=dribble, daemon=True)
    dribbler.start()
    try:
        async def main() -> Decoded:
            async with httpx.AsyncClient(timeout=60.0) as client:
                with anyio.fail_after(HANG_GUARD):
                    return await speak(client, server.url, TEXTS[0])

        got = anyio.run(main)
        # Each slowloris client was still dribbling its headers (or had been dropped) when
        # the normal request completed.
        dribbling = [hung_up[i] or sent[i] < len(request) for i in range(SLOWLORIS)]
    finally:
        stop.set()
        dribbler.join(5)
        for sock in sockets:
            sock.close()
    assert all(dribbling)
    assert got.status == 200
    assert got.frames > 0
    assert got.ended
    assert got.damage == []


def test_a_body_over_the_limit_is_refused_with_413_before_it_has_been_sent(
    server: Server,
) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    head = (
        "POST /v1/audio/speech HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {DECLARED_BODY}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as sock:
        sock.sendall(head + b'{"input": "' + b"a" * (SENT_BODY - 11))
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:200]
    # … and the server still serves.
    assert httpx.get(f"{server.url}/v1/models", timeout=30).status_code == 200
