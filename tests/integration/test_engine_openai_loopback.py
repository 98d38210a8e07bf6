"""OpenAIEngine against real loopback servers: streaming, errors, retries, drops, cancellation."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable

import anyio
import pytest
from support.loopback import RawRequest, serve_asgi, serve_raw

from streamtts.engines import OpenAIEngine
from streamtts.errors import (
    AuthenticationError,
    ConnectError,
    RateLimitError,
    ServerError,
    StreamInterrupted,
    StreamTimeout,
)
from streamtts.server import create_app

OGG = b"OggS\x00\x02" + bytes(200)


def response(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def error_body(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "x", "param": None}}).encode()


def run_engine(url: str, **engine_kw: object) -> tuple[bytes, BaseException | None, OpenAIEngine]:
    engine = OpenAIEngine(base_url=f"{url}/v1", api_key="sk-loop", **engine_kw)  # type: ignore[arg-type]
    sleeps: list[float] = []
    real_sleep = engine._sleep

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await real_sleep(seconds)

    engine._sleep = record_sleep
    engine.sleeps = sleeps  # type: ignore[attr-defined]

    async def main() -> tuple[bytes, BaseException | None]:
        data = b""
        async with engine:
            try:
                async with engine.stream("Hi there.") as audio:
                    async for chunk in audio.aiter_bytes():
                        data += chunk
            except Exception as exc:
                return data, exc
        return data, None

    data, error = anyio.run(main)
    return data, error, engine


def scripted(*replies: bytes) -> Callable[[RawRequest, socket.socket], None]:
    """A handler answering the n-th request with the n-th reply (the last one repeats)."""
    count = [0]

    def handler(request: RawRequest, conn: socket.socket) -> None:
        count[0] += 1
        conn.sendall(replies[min(count[0], len(replies)) - 1])

    return handler


def test_streams_from_the_local_server_end_to_end() -> None:
    with serve_asgi(create_app()) as url:
        data, error, _ = run_engine(url)
    assert error is None
    assert data.startswith(b"OggS")


def test_401_is_authentication_error() -> None:
    with serve_raw(scripted(response(401, error_body("Incorrect API key provided")))) as server:
        _, error, _ = run_engine(server.url)
    assert isinstance(error, AuthenticationError)
    assert "Incorrect API key provided" in str(error)
    assert server.requests[0].headers["authorization"] == "Bearer sk-loop"


def test_429_then_200_waits_the_retry_after_and_succeeds() -> None:
    replies = (
        response(429, error_body("rate limited"), {"Retry-After": "0.2"}),
        response(200, OGG, {"Content-Type": "audio/ogg"}),
    )
    with serve_raw(scripted(*replies)) as server:
        data, error, engine = run_engine(server.url)
    assert error is None
    assert data == OGG
    assert len(server.requests) == 2
    assert engine.sleeps == [0.2]  # type: ignore[attr-defined]


def test_500_then_success_is_retried() -> None:
    replies = (response(500, b"oops"), response(200, OGG, {"Content-Type": "audio/ogg"}))
    with serve_raw(scripted(*replies)) as server:
        data, error, _ = run_engine(server.url, retry_base_delay=0.01)
    assert error is None
    assert data == OGG
    assert len(server.requests) == 2


def test_500_forever_is_server_error_after_the_retries() -> None:
    with serve_raw(scripted(response(500, error_body("down")))) as server:
        _, error, _ = run_engine(server.url, retry_base_delay=0.01, max_retries=2)
    assert isinstance(error, ServerError)
    assert "down" in str(error)
    assert len(server.requests) == 3


def test_429_forever_is_rate_limit_error() -> None:
    reply = response(429, error_body("quota"), {"Retry-After": "0"})
    with serve_raw(scripted(reply)) as server:
        _, error, _ = run_engine(server.url, max_retries=1)
    assert isinstance(error, RateLimitError)
    assert len(server.requests) == 2


def test_a_drop_mid_body_is_stream_interrupted_after_yielding_what_arrived() -> None:
    def handler(request: RawRequest, conn: socket.socket) -> None:
        head = "HTTP/1.1 200 OK\r\nContent-Type: audio/ogg\r\nContent-Length: 10000\r\n\r\n"
        conn.sendall(head.encode() + OGG * 10)  # 2060 of the 10000 bytes, then close

    with serve_raw(handler) as server:
        data, error, _ = run_engine(server.url)
    assert isinstance(error, StreamInterrupted)
    assert data == OGG * 10
    assert len(server.requests) == 1  # never retried once audio has arrived


def test_silence_longer_than_the_read_timeout_is_stream_timeout() -> None:
    release = threading.Event()

    def handler(request: RawRequest, conn: socket.socket) -> None:
        head = "HTTP/1.1 200 OK\r\nContent-Type: audio/ogg\r\nContent-Length: 10000\r\n\r\n"
        conn.sendall(head.encode() + OGG)
        release.wait(10)

    with serve_raw(handler) as server:
        try:
            data, error, _ = run_engine(server.url, read_timeout=0.3)
        finally:
            release.set()
    assert isinstance(error, StreamTimeout)
    assert data == OGG


def test_nothing_listening_is_connect_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    _, error, _ = run_engine(f"http://127.0.0.1:{port}")
    assert isinstance(error, ConnectError)


@pytest.mark.parametrize("how", ["break", "cancel"])
def test_leaving_or_cancelling_mid_stream_closes_the_connection(how: str) -> None:
    peer_closed = threading.Event()

    def handler(request: RawRequest, conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: audio/ogg\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                conn.sendall(b"%x\r\n%s\r\n" % (len(OGG), OGG))
                time.sleep(0.01)
        except OSError:
            peer_closed.set()

    async def main(url: str) -> int:
        received = 0
        async with OpenAIEngine(base_url=f"{url}/v1", api_key="x") as engine:
            with anyio.CancelScope() as scope:
                async with engine.stream("x") as audio:
                    async for chunk in audio.aiter_bytes():
                        received += len(chunk)
                        if received > 1000:
                            if how == "break":
                                break
                            scope.cancel()
                            await anyio.sleep(1)  # cancelled here
        return received

    with serve_raw(handler) as server:
        received = anyio.run(main, server.url)
        assert peer_closed.wait(5)
    assert received > 1000
