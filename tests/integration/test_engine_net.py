"""The engine's network backend (engines/_net.py) on real loopback sockets, plain and TLS."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import contextlib
import gc
import socket
import ssl
import subprocess
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
from support.loopback import accepting

from streamtts.engines import OpenAIEngine
from streamtts.engines._net import _Protocol, _QuietBackend, _TrioStream, install_quiet_backend
from streamtts.errors import StreamInterrupted, StreamTimeout

OGG = b"OggS\x00\x02" + bytes(200)
BACKENDS = pytest.mark.parametrize("backend", ["asyncio", "trio"])


@dataclass
class _Server:
    url: str
    connections: int = 0
    requests: int = 0
    threads: list[threading.Thread] = field(default_factory=list)


def _read_head(conn: socket.socket) -> bool:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return False
        data += chunk
    return True  # the tests send bodiless requests or small JSON bodies read below


def _drain_body(conn: socket.socket) -> None:
    conn.settimeout(0.2)
    with contextlib.suppress(OSError):
        conn.recv(65536)  # the small JSON body, if it came after the head
    conn.settimeout(30)


@contextlib.contextmanager
def keepalive_server(
    body_chunks: list[bytes],
    *,
    gap: float = 0.0,
    tls: ssl.SSLContext | None = None,
    close_after: int = 0,
    drop: bool = False,
) -> Iterator[_Server]:
    """HTTP/1.1 keep-alive server sending each response as chunked ``body_chunks``.

    ``gap`` seconds between chunks make them arrive in separate reads; ``close_after``: close
    the connection after that many responses (0: never); ``drop``: close it before the last
    chunk of the body.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    scheme = "https" if tls else "http"
    server = _Server(f"{scheme}://127.0.0.1:{listener.getsockname()[1]}")

    def serve(raw: socket.socket) -> None:
        raw.settimeout(30)
        conn = raw
        try:
            if tls is not None:
                conn = tls.wrap_socket(raw, server_side=True)
            served = 0
            while _read_head(conn):
                _drain_body(conn)
                server.requests += 1
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: audio/ogg\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                for i, chunk in enumerate(body_chunks):
                    if drop and i == len(body_chunks) - 1:
                        return
                    conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    if gap:
                        time.sleep(gap)
                conn.sendall(b"0\r\n\r\n")
                served += 1
                if close_after and served >= close_after:
                    return
        except OSError:  # ssl.SSLError included: the client refused our certificate
            return
        finally:
            conn.close()
            raw.close()

    def accept(conn: socket.socket) -> None:
        server.connections += 1
        serve(conn)

    with accepting(listener, accept, server.threads):
        yield server


@pytest.fixture(scope="session")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (generated with the openssl CLI)."""
    folder = tmp_path_factory.mktemp("tls")
    key, crt = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return crt, key


async def _fetch(client: httpx.AsyncClient, url: str) -> tuple[bytes, object]:
    async with client.stream("POST", f"{url}/v1/audio/speech", json={"input": "x"}) as response:
        response.raise_for_status()
        data = b""
        async for chunk in response.aiter_bytes():
            data += chunk
        return data, response.extensions["network_stream"]


@BACKENDS
def test_the_engine_reads_without_allocating_more_than_it_keeps(backend: str) -> None:
    # asyncio's stock transport allocates a 256 KiB bytes object per recv (trio's stream 64 KiB)
    # and shrinks it: those transient blocks fragment glibc's heap in a long run (see
    # engines/_net.py). Reading into the connection's own buffer, chunks cost only their size.
    chunks = [OGG] + [bytes([i % 256]) * 1000 for i in range(60)]
    peaks: list[int] = []

    async def main(url: str) -> bytes:
        received: list[bytes] = []
        engine = OpenAIEngine(base_url=f"{url}/v1", api_key="sk")
        async with engine, engine.stream("Hi.") as audio:
            chunk_iter = audio.aiter_bytes()
            received.append(await chunk_iter.__anext__())  # connected, first bytes in
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            kept = 0
            async for chunk in chunk_iter:
                received.append(chunk)
                kept += len(chunk)  # what we keep is ours, not the reader's
                peaks.append(tracemalloc.get_traced_memory()[1] - base - kept)
        return b"".join(received)

    with keepalive_server(chunks, gap=0.002) as server:
        tracemalloc.start()
        try:
            data = anyio.run(main, server.url, backend=backend)
        finally:
            tracemalloc.stop()
    assert data == b"".join(chunks)
    assert len(peaks) > 10  # the body came in many reads
    assert max(peaks) < 32 * 1024, f"a read allocated {max(peaks)} bytes beyond what it kept"


@BACKENDS
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_closed_connection_frees_its_buffers_without_waiting_for_the_cyclic_gc(
    backend: str, tls: bool, cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx's response objects hold the network stream in reference cycles: buffers left on
    # the stream would live until the collector's (rare) full collection, 64 KiB per barge-in
    # (and asyncio's SSL protocol 256 KiB more).
    chunks = [OGG] + [b"z" * 1000] * 50

    def buffers_alive() -> int:
        return sum(
            (isinstance(o, (_Protocol, _TrioStream)) and len(o._view) > 0)
            or isinstance(o, asyncio.sslproto.SSLProtocol)
            for o in gc.get_objects()
        )

    async def main(url: str) -> tuple[int, int]:
        engine = OpenAIEngine(base_url=f"{url}/v1", api_key="sk")
        async with engine:
            opened = 0
            for _ in range(5):
                async with engine.stream("Hi.") as audio:
                    async for _chunk in audio.aiter_bytes():
                        opened = max(opened, buffers_alive())
                        break  # a barge-in: the connection is closed mid-body
            await anyio.sleep(0.05)
            return opened, buffers_alive()

    server_ctx = None
    if tls:
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(*cert)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert[0]))  # read by httpx's default SSL context
    with keepalive_server(chunks, gap=0.01, tls=server_ctx) as server:
        gc.collect()
        gc.disable()
        try:
            opened, left = anyio.run(main, server.url, backend=backend)
        finally:
            gc.enable()
    assert opened >= 1  # the check sees a live connection's buffers
    assert left == 0


@BACKENDS
def test_tls_streams_through_the_reused_buffer(cert: tuple[Path, Path], backend: str) -> None:
    crt, key = cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt, key)
    chunks = [OGG] + [bytes([i]) * 3000 for i in range(20)]

    async def main(url: str) -> tuple[bytes, object, object]:
        async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(crt))) as client:
            assert install_quiet_backend(client)
            data, stream = await _fetch(client, url)
            ssl_object = stream.get_extra_info("ssl_object")  # type: ignore[attr-defined]
            return data, ssl_object, stream

    with keepalive_server(chunks, gap=0.001, tls=server_ctx) as server:
        data, ssl_object, stream = anyio.run(main, server.url, backend=backend)
    assert data == b"".join(chunks)
    assert isinstance(ssl_object, ssl.SSLObject)
    assert type(stream).__module__ == "streamtts.engines._net"


@BACKENDS
def test_tls_with_an_untrusted_certificate_is_a_connect_error(
    cert: tuple[Path, Path], backend: str
) -> None:
    crt, key = cert
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(crt, key)

    async def main(url: str) -> None:
        async with httpx.AsyncClient() as client:  # the system's CAs: ours is not among them
            assert install_quiet_backend(client)
            await _fetch(client, url)

    with keepalive_server([OGG], tls=server_ctx) as server, pytest.raises(httpx.ConnectError):
        anyio.run(main, server.url, backend=backend)


@BACKENDS
def test_a_kept_alive_connection_is_reused_and_one_the_server_closed_is_not(backend: str) -> None:
    async def main(url: str) -> list[bytes]:
        async with httpx.AsyncClient() as client:
            assert install_quiet_backend(client)
            out = []
            for _ in range(3):
                data, _ = await _fetch(client, url)
                out.append(data)
                await anyio.sleep(0.05)  # lets the server's close arrive before the next request
            return out

    with keepalive_server([OGG], close_after=2) as server:
        bodies = anyio.run(main, server.url, backend=backend)
    assert bodies == [OGG] * 3
    assert server.requests == 3
    assert server.connections == 2  # the first two requests shared one; the third needed a new


@BACKENDS
def test_a_drop_mid_body_is_stream_interrupted_after_what_arrived(backend: str) -> None:
    chunks = [OGG, b"x" * 5000, b"never sent"]
    received: list[bytes] = []

    async def main(url: str) -> None:
        engine = OpenAIEngine(base_url=f"{url}/v1", api_key="sk")
        async with engine, engine.stream("Hi.") as audio:
            async for chunk in audio.aiter_bytes():
                received.append(chunk)

    with keepalive_server(chunks, drop=True) as server, pytest.raises(StreamInterrupted):
        anyio.run(main, server.url, backend=backend)
    assert b"".join(received) == OGG + b"x" * 5000


@BACKENDS
def test_a_silent_server_is_stream_timeout(backend: str) -> None:
    async def main(url: str) -> None:
        engine = OpenAIEngine(base_url=f"{url}/v1", api_key="sk", read_timeout=0.3)
        async with engine, engine.stream("Hi.") as audio:
            async for _ in audio.aiter_bytes():
                pass

    with keepalive_server([OGG, b"y"], gap=1.0) as server, pytest.raises(StreamTimeout):
        anyio.run(main, server.url, backend=backend)


def test_the_engine_installs_the_backend_only_in_a_client_it_builds() -> None:
    engine = OpenAIEngine(base_url="http://127.0.0.1:9/v1")
    pool = engine._get_client()._transport._pool  # type: ignore[attr-defined]
    assert isinstance(pool._network_backend, _QuietBackend)
    mock = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    assert not install_quiet_backend(mock)


@BACKENDS
def test_nothing_listening_is_a_connect_error(backend: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()

    async def main() -> None:
        async with httpx.AsyncClient() as client:
            assert install_quiet_backend(client)
            await _fetch(client, f"http://127.0.0.1:{port}")

    with pytest.raises(httpx.ConnectError):
        anyio.run(main, backend=backend)


class _FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def _protocol_with(transport: _FakeTransport) -> Callable[[int], None]:
    from streamtts.engines._net import _HIGH_WATER

    loop = asyncio.new_event_loop()
    protocol = _Protocol(loop)
    protocol.connection_made(transport)
    loop.close()

    def feed(n: int) -> None:
        buf = protocol.get_buffer(-1)
        buf[:n] = b"a" * n
        protocol.buffer_updated(n)

    feed.protocol = protocol  # type: ignore[attr-defined]
    feed.high = _HIGH_WATER  # type: ignore[attr-defined]
    return feed


def test_reading_pauses_while_too_much_waits_unread_and_resumes_once_taken() -> None:
    transport = _FakeTransport()
    feed = _protocol_with(transport)
    protocol = feed.protocol  # type: ignore[attr-defined]
    while protocol.queued <= feed.high:  # type: ignore[attr-defined]
        feed(60_000)
    assert transport.calls == ["pause"]
    feed(1000)  # data already on its way still arrives; no second pause
    assert transport.calls == ["pause"]
    while protocol.chunks:
        protocol.take(65536)
    assert transport.calls == ["pause", "resume"]
    assert protocol.queued == 0


def test_a_read_smaller_than_the_chunk_returns_the_rest_next() -> None:
    feed = _protocol_with(_FakeTransport())
    protocol = feed.protocol  # type: ignore[attr-defined]
    buf = protocol.get_buffer(-1)
    buf[:10] = b"0123456789"
    protocol.buffer_updated(10)
    assert (protocol.take(4), protocol.take(4)) == (b"0123", b"4567")
    assert protocol.take(100) == b"89"
    assert protocol.queued == 0
    assert not protocol.chunks
