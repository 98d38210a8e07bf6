"""A raw-socket HTTP server on 127.0.0.1 that misbehaves on purpose (network fault injection).

Each connection gets one scripted answer, a `Fault`: a status line and headers (possibly cut
mid-header), then a body that may be dropped after N bytes (mid-stream, mid-page), frozen after
N bytes (a stall: the connection stays open, silent, until the client leaves), or dripped one
byte at a time. Everything is plain blocking sockets in threads, so the faults are exact to the
byte and independent of the client's event loop.

What the server saw is logged per connection (`Connection`): the body bytes it sent, and whether
the client closed its end (`client_closed`, found by reading until EOF after the answer). That
is how a test checks that nothing on the client side kept the socket open.

    with FaultyServer(Fault(body=ogg, cut_after=1500)) as server:
        ... request server.url ...
    assert server.connections[0].sent == 1500
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

__all__ = ["Connection", "Fault", "FaultyServer"]

#: Seconds a connection thread waits for the client to close its end after the answer: the
#: hang guard of a test whose client never closes (it then finds ``client_closed`` unset).
CLIENT_CLOSE_TIMEOUT = 20.0
#: Granularity of the waits, in seconds: how fast the threads notice the server stopping.
_TICK = 0.02


@dataclass(frozen=True)
class Fault:
    """The scripted answer of `FaultyServer` to every request.

    Attributes:
        status: HTTP status code.
        content_type: The ``Content-Type`` header (None: not sent).
        body: The whole body the answer claims to have.
        framing: ``"length"`` (``Content-Length`` of the whole body), ``"chunked"`` (one chunk
            per write) or ``"close"`` (no length: the body ends when the connection closes).
        head_cut: Send only this many bytes of the status line and headers, then drop the
            connection (a disconnect mid-header).
        cut_after: Drop the connection after this many body bytes.
        stall_after: After this many body bytes, send nothing more and keep the connection open
            until the client closes it.
        drip_from: Body bytes from this offset on are sent one byte per `drip_interval`.
        drip_interval: Seconds between two dripped bytes.
        write_size: Bytes per write before the drip (the body arrives in several reads).
    """

    status: int = 200
    content_type: str | None = "audio/ogg"
    body: bytes = b""
    framing: Literal["length", "chunked", "close"] = "length"
    head_cut: int | None = None
    cut_after: int | None = None
    stall_after: int | None = None
    drip_from: int | None = None
    drip_interval: float = 0.1
    write_size: int = 4096

    def head(self) -> bytes:
        """The status line and headers."""
        lines = [f"HTTP/1.1 {self.status} Scripted", "Connection: close"]
        if self.content_type is not None:
            lines.append(f"Content-Type: {self.content_type}")
        if self.framing == "length":
            lines.append(f"Content-Length: {len(self.body)}")
        elif self.framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Connection:
    """What the server saw on one connection.

    Attributes:
        request: The request's status line and headers (raw).
        sent: Body bytes sent (before any chunked framing).
        dropped: True if the fault made the server drop the connection itself.
        client_closed: Set once the client closed its end (EOF or reset seen by the server)
            while the server kept it open.
        done: Set when the server is finished with the connection (its socket closed).
    """

    request: bytes = b""
    sent: int = 0
    dropped: bool = False
    client_closed: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class FaultyServer:
    """Answers every request on ``url`` with ``fault``; a context manager (threads joined on exit).

    Args:
        fault: The scripted answer.
    """

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.connections: list[Connection] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(_TICK)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)

    def __enter__(self) -> FaultyServer:
        self._acceptor.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._acceptor.join(5)
        for thread in self._threads:
            thread.join(5)
        self._sock.close()

    # ------------------------------------------------------------------ per connection
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            log = Connection()
            self.connections.append(log)
            thread = threading.Thread(target=self._serve, args=(conn, log), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, log: Connection) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                if not self._read_request(conn, log):
                    log.client_closed.set()
                    return
                if self._answer(conn, log):
                    self._wait_for_client_close(conn, log)
                else:
                    log.dropped = True
            except OSError:
                log.client_closed.set()  # reset by the client while we wrote
            finally:
                log.done.set()

    def _read_request(self, conn: socket.socket, log: Connection) -> bool:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        log.request = head
        length = 0
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            body += chunk
        return True

    def _send_body(self, conn: socket.socket, log: Connection, piece: bytes) -> None:
        if self.fault.framing == "chunked":
            conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        else:
            conn.sendall(piece)
        log.sent += len(piece)

    def _answer(self, conn: socket.socket, log: Connection) -> bool:
        """Send the scripted answer; True if the connection stays open for the client to close."""
        f = self.fault
        head = f.head()
        if f.head_cut is not None:
            conn.sendall(head[: f.head_cut])
            return False
        conn.sendall(head)
        body = f.body
        end = len(body)
        for limit in (f.cut_after, f.stall_after):
            if limit is not None:
                end = min(end, limit)
        drip = end if f.drip_from is None else min(end, f.drip_from)
        for at in range(0, drip, max(1, f.write_size)):
            self._send_body(conn, log, body[at : min(drip, at + f.write_size)])
        for at in range(drip, end):
            if self._stop.wait(f.drip_interval):
                return False
            self._send_body(conn, log, body[at : at + 1])
        if f.cut_after is not None and f.cut_after < len(body):
            return False  # dropped: the `with` closes the socket
        if f.stall_after is not None and f.stall_after < len(body):
            return True  # frozen: silent until the client leaves
        if f.framing == "chunked":
            conn.sendall(b"0\r\n\r\n")
        return f.framing != "close"

    def _wait_for_client_close(self, conn: socket.socket, log: Connection) -> None:
        conn.settimeout(_TICK)
        deadline = time.monotonic() + CLIENT_CLOSE_TIMEOUT
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                if not conn.recv(65536):
                    log.client_closed.set()
                    return
            except TimeoutError:
                continue
            except OSError:
                log.client_closed.set()
                return
