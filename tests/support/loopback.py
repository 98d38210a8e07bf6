"""Servers on 127.0.0.1 for tests: an ASGI app under uvicorn, or a tiny raw HTTP server.

Both run in a background thread on a free port (the listening socket is bound before the thread
starts, so there is no race for the port) and are stopped when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RawRequest", "replaying", "serve_asgi", "serve_raw"]

_START_TIMEOUT = 10.0


def replaying(body: bytes, receive: Callable[[], Any]) -> Callable[[], Any]:
    """An ASGI ``receive`` for middleware that has read the request body itself: it hands the
    app that body once, as one message, then passes on to the real ``receive``."""
    replayed = False

    async def replay() -> Any:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _listening_socket() -> socket.socket:
    # proto=IPPROTO_TCP, as asyncio's own servers use: asyncio sets TCP_NODELAY only on such
    # sockets, and without it Nagle + delayed ACKs hold the first body bytes back by 40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@contextlib.contextmanager
def serve_asgi(app: Any, *, log_level: str = "warning") -> Iterator[str]:
    """Run *app* with uvicorn on 127.0.0.1; yields the base URL ``http://127.0.0.1:PORT``."""
    import uvicorn

    sock = _listening_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level=log_level, lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class RawRequest:
    """One request received by `serve_raw`."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _RawServer:
    handler: Callable[[RawRequest, socket.socket], None]
    sock: socket.socket
    url: str = ""
    requests: list[RawRequest] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)


def _read_request(conn: socket.socket) -> RawRequest | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return RawRequest(method, path, headers, body)


def _serve_connection(server: _RawServer, conn: socket.socket) -> None:
    with conn:
        conn.settimeout(30)
        try:
            request = _read_request(conn)
            if request is None:
                return
            server.requests.append(request)
            server.handler(request, conn)
        except OSError:
            pass  # the client went away: handlers that care detect it themselves


@contextlib.contextmanager
def accepting(
    sock: socket.socket, serve: Callable[[socket.socket], None], threads: list[threading.Thread]
) -> Iterator[None]:
    """Accept connections on ``sock`` (listening, with a short timeout) while the block runs,
    each served by ``serve(conn)`` on a thread of its own (appended to ``threads``); then stop
    accepting, close ``sock`` and join every thread."""
    stop = threading.Event()

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            t = threading.Thread(target=serve, args=(conn,), daemon=True)
            threads.append(t)
            t.start()

    acceptor = threading.Thread(target=accept_loop, daemon=True)
    acceptor.start()
    try:
        yield
    finally:
        stop.set()
        acceptor.join(5)
        sock.close()
        for t in threads:
            t.join(10)


@contextlib.contextmanager
def serve_raw(
    handler: Callable[[RawRequest, socket.socket], None],
) -> Iterator[_RawServer]:
    """A raw HTTP/1.1 server: *handler(request, conn)* writes whatever bytes it likes.

    The connection is closed when the handler returns. Yields the server, whose ``url`` is set
    and whose ``requests`` list every request received.
    """
    sock = _listening_socket()
    sock.settimeout(0.05)
    server = _RawServer(handler, sock, f"http://127.0.0.1:{sock.getsockname()[1]}")

    def serve(conn: socket.socket) -> None:
        conn.settimeout(None)
        _serve_connection(server, conn)

    with accepting(sock, serve, server.threads):
        yield server
