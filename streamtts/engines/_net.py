"""An httpcore network backend (asyncio and trio) that reads sockets into one reused buffer.

Why: a long-running speaker's C heap grew without bound (benchmarks/soak.py: +4 MB of freed but
unusable heap an hour). The cause is how asyncio's stock socket transport reads: every ``recv``
allocates a 256 KiB bytes object, receives a few hundred bytes into it and shrinks it in place.
glibc serves such large requests from the top of the heap once its dynamic mmap threshold has
risen (the first large free, e.g. any numpy array, raises it), and the small survivors of the
shrink are left high in the heap, with later small allocations around them: the heap's top
ratchets up by a few kB per response, and the freed space below it is too fragmented to serve
the next large request (trio's stream does the same with 64 KiB reads). Measured with a reduced
loop (175 responses from ``streamtts serve`` through `OpenAIEngine`, glibc ``mallinfo2``): free
heap +1.38 MB with asyncio's stock reads, +1.13 MB with them cut to 64 KiB, +0.61 MB at 16 KiB,
+1.27 MB with trio's; flat with ``MALLOC_MMAP_THRESHOLD_=131072`` (the 256 KiB buffers then
live in their own mappings), and flat (±0.01 MB) with this backend under asyncio and trio.

How it works: the connection's protocol is an `asyncio.BufferedProtocol`, so the transport
``recv_into``s one preallocated buffer per connection and this protocol copies out exactly the
received bytes. TLS uses asyncio's own ``start_tls``, whose SSL protocol also reads into
preallocated buffers and decrypts into ours. So no read allocates more than it keeps. Reading
is flow-controlled (the transport pauses while `_HIGH_WATER` bytes wait unread). A closed
connection drops its buffer at once: httpx's response objects keep the stream in reference
cycles, which only the cyclic collector's rare full collections free.

Under trio the same holds: ``recv_into`` one buffer of the trio socket, and TLS through an
`ssl.MemoryBIO` pair whose ``SSLObject.read`` decrypts into that buffer (trio's `SSLStream`
would allocate a max-size object per read). Under any other event loop the pool's original
backend is used.
"""

from __future__ import annotations

import asyncio
import collections
import select
import ssl
import sys
from collections.abc import Iterable
from typing import Any

import anyio
import anyio.lowlevel
import httpcore

__all__ = ["install_quiet_backend"]

#: The per-connection receive buffer: the size httpcore asks for per read (its
#: ``READ_NUM_BYTES``), several TLS records; speech arrives at tens of kB/s, so one ``recv`` per
#: wakeup always fits.
_READ_BUFFER = 64 * 1024
#: Pause reading from the socket while this many bytes wait unread (a consumer that stopped
#: reading must not make us buffer the whole response), resume below `_LOW_WATER`.
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
#: What a closed connection holds instead of its buffer, and of its transports.
_RELEASED = memoryview(b"")
_CLOSED_TRANSPORT = asyncio.Transport()
#: A host with IPv6 and IPv4 addresses: try the next address after this long (RFC 8305's
#: recommended 250 ms, as anyio's ``connect_tcp`` does).
_HAPPY_EYEBALLS_DELAY = 0.25


class _Protocol(asyncio.BufferedProtocol):
    """Receives into one reused buffer; queues exact-size copies for `_Stream.read`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._view = memoryview(bytearray(_READ_BUFFER))
        self.chunks: collections.deque[bytes] = collections.deque()
        self.queued = 0
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        self.transport: asyncio.Transport | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.chunks.append(bytes(self._view[:nbytes]))
        self.queued += nbytes
        if self.queued > _HIGH_WATER and not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        # No read follows: free the buffer now. httpx's response objects hold the stream in
        # reference cycles, so otherwise each closed connection's buffer would wait for the
        # cyclic collector's rare full collection (measured: one 64 KiB buffer per barge-in).
        self._view = _RELEASED
        self.transport = None  # under TLS it holds asyncio's SSL protocol and its 256 KiB buffer
        self.lost = True
        self.error = exc
        self._wake_reader()
        self._wake_writer()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    # -- for the stream
    def _wake_reader(self) -> None:
        if self._read_waiter is not None and not self._read_waiter.done():
            self._read_waiter.set_result(None)

    def _wake_writer(self) -> None:
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    async def wait_readable(self) -> None:
        while not self.chunks and not self.eof and not self.lost:
            self._read_waiter = self._loop.create_future()
            try:
                await self._read_waiter
            finally:
                self._read_waiter = None

    def take(self, max_bytes: int) -> bytes:
        chunk = self.chunks.popleft()
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            self.chunks.appendleft(rest)
        self.queued -= len(chunk)
        if self._reading_paused and self.queued < _LOW_WATER and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        return chunk

    async def drain(self) -> None:
        while self._writing_paused and not self.lost:
            self._drain_waiter = self._loop.create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None


class _Stream(httpcore.AsyncNetworkStream):
    """An httpcore stream over an asyncio transport and a `_Protocol`."""

    def __init__(
        self, transport: asyncio.Transport, protocol: _Protocol, raw: asyncio.Transport
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._raw = raw  # the TCP transport (under TLS, `_transport` is asyncio's SSL layer)
        self._closed = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109 - httpcore
        if self._closed:
            raise httpcore.ReadError("the connection is closed")
        protocol = self._protocol
        try:
            with anyio.fail_after(timeout):
                await protocol.wait_readable()
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        if protocol.chunks:
            return protocol.take(max_bytes)
        if protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error)) from protocol.error
        return b""  # end of stream (as httpcore's own backends report it)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109 - httpcore
        if not buffer:
            return
        if self._closed or self._protocol.lost or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._transport.write(buffer)
        try:
            with anyio.fail_after(timeout):
                await self._protocol.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        if self._protocol.lost:
            raise httpcore.WriteError(str(self._protocol.error or "the connection was lost"))

    async def aclose(self) -> None:
        # Under TLS, closing the SSL layer queues close_notify and would then wait (up to 30 s)
        # for the peer's; closing the TCP transport as well sends it and closes the socket now,
        # as httpcore's own backends do. The loop's next iteration closes the socket.
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return
        self._closed = True
        self._transport.close()
        self._raw.close()
        # Keep nothing big alive: httpx's cycles hold this stream until a full collection, and
        # under TLS the transport holds asyncio's SSL protocol with its 256 KiB buffer.
        self._transport = self._raw = _CLOSED_TRANSPORT
        await anyio.lowlevel.checkpoint()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            with anyio.fail_after(timeout):
                transport = await loop.start_tls(
                    self._transport, self._protocol, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.abort()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.abort()
            raise httpcore.ConnectError(str(exc)) from exc
        except BaseException:
            self._transport.abort()
            raise
        if transport is None:  # the connection was lost during the handshake
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        assert isinstance(transport, asyncio.Transport)
        self._protocol.transport = transport
        return _Stream(transport, self._protocol, self._raw)

    def get_extra_info(self, info: str) -> Any:
        transport = self._transport
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        if info == "is_readable":
            # The transport reads the socket eagerly, so the socket itself never looks
            # readable: an idle connection is readable (broken) when data or EOF arrived.
            protocol = self._protocol
            return bool(protocol.chunks) or protocol.eof or protocol.lost
        return None


class _QuietBackend(httpcore.AsyncNetworkBackend):
    """`_Stream` under asyncio, `_TrioStream` under trio, else the pool's original backend."""

    def __init__(self, fallback: httpcore.AsyncNetworkBackend) -> None:
        self._fallback = fallback

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if _on_trio():
            return await _trio_connect_tcp(host, port, timeout, local_address, socket_options)
        if not _on_asyncio():
            return await self._fallback.connect_tcp(
                host, port, timeout=timeout, local_address=local_address,
                socket_options=socket_options,
            )
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            with anyio.fail_after(timeout):
                transport, protocol = await loop.create_connection(
                    lambda: _Protocol(loop),
                    host,
                    port,
                    local_addr=local,
                    happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY,
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return _connected(transport, protocol, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if not _on_asyncio():
            return await self._fallback.connect_unix_socket(
                path, timeout=timeout, socket_options=socket_options
            )
        loop = asyncio.get_running_loop()
        try:
            with anyio.fail_after(timeout):
                transport, protocol = await loop.create_unix_connection(
                    lambda: _Protocol(loop), path
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return _connected(transport, protocol, socket_options)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class _TrioStream(httpcore.AsyncNetworkStream):
    """An httpcore stream over a trio socket, received into one reused buffer; TLS through
    `ssl.MemoryBIO` (trio's own `SSLStream` decrypts each read into a fresh max-size object).
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream  # trio.SocketStream
        self._view = memoryview(bytearray(_READ_BUFFER))
        self._ssl: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._eof = False

    async def _recv(self, into: memoryview) -> int:
        """Receive what the socket has into ``into``; 0 at the end of the stream."""
        n: int = await self._stream.socket.recv_into(into)
        if n == 0:
            self._eof = True
        return n

    async def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            await self._stream.send_all(data)

    async def _tls_step(self) -> None:
        """After SSLWantReadError: send what TLS has to send, then feed it the next bytes."""
        await self._flush()
        n = await self._recv(self._view)
        if n:
            self._incoming.write(self._view[:n])
        else:
            self._incoming.write_eof()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109 - httpcore
        view = self._view[: min(max_bytes, len(self._view))]
        try:
            with anyio.fail_after(timeout):
                if self._ssl is None:
                    if self._eof:
                        return b""
                    n = await self._recv(view)
                    return bytes(view[:n])
                while True:
                    try:
                        got: Any = self._ssl.read(len(view), view)  # an int: bytes read
                        return bytes(view[:got])
                    except ssl.SSLWantReadError:
                        await self._tls_step()
                    except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                        return b""  # close_notify, or a close without it (as httpcore's own)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise httpcore.ReadError(str(exc)) from exc
        except _trio_errors() as exc:
            raise httpcore.ReadError(str(exc)) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109 - httpcore
        if not buffer:
            return
        try:
            with anyio.fail_after(timeout):
                if self._ssl is None:
                    await self._stream.send_all(buffer)
                    return
                self._ssl.write(buffer)
                await self._flush()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc
        except _trio_errors() as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self._view = _RELEASED  # as `_Protocol.connection_lost`: not left to the cyclic GC
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        self._ssl = ssl_context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname
        )
        try:
            with anyio.fail_after(timeout):
                while True:
                    try:
                        self._ssl.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        await self._tls_step()
                await self._flush()
        except BaseException as exc:
            self._stream.socket.close()
            if isinstance(exc, TimeoutError):
                raise httpcore.ConnectTimeout(str(exc)) from exc
            if isinstance(exc, (OSError, *_trio_errors())):  # ssl.SSLError is an OSError
                raise httpcore.ConnectError(str(exc)) from exc
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        sock = self._stream.socket
        if info == "ssl_object":
            return self._ssl
        if info == "client_addr":
            return sock.getsockname()
        if info == "server_addr":
            return sock.getpeername()
        if info == "socket":
            return sock
        if info == "is_readable":
            return self._incoming.pending > 0 or _socket_readable(sock)
        return None


def _trio_errors() -> tuple[type[BaseException], ...]:
    import trio

    return (trio.BrokenResourceError, trio.ClosedResourceError)


def _on_asyncio() -> bool:
    """Whether the caller runs in an asyncio task (not trio, not a foreign loop)."""
    try:
        return asyncio.current_task() is not None
    except RuntimeError:  # no running asyncio loop
        return False


def _on_trio() -> bool:
    """Whether the caller runs in a trio task."""
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_task()
    except RuntimeError:  # not in trio
        return False
    return True


def _socket_readable(sock: Any) -> bool:
    """Whether a socket has data or EOF waiting (an idle connection that is not reusable)."""
    fd = sock.fileno()
    if fd < 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


async def _trio_connect_tcp(
    host: str,
    port: int,
    connect_timeout: float | None,
    local_address: str | None,
    socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
) -> _TrioStream:
    import trio

    try:
        with anyio.fail_after(connect_timeout):
            stream = await trio.open_tcp_stream(
                host, port, happy_eyeballs_delay=_HAPPY_EYEBALLS_DELAY, local_address=local_address
            )
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(str(exc)) from exc
    except OSError as exc:
        raise httpcore.ConnectError(str(exc)) from exc
    try:
        for option in socket_options or ():
            stream.setsockopt(*option)
    except OSError as exc:
        stream.socket.close()
        raise httpcore.ConnectError(str(exc)) from exc
    return _TrioStream(stream)


def _connected(
    transport: asyncio.BaseTransport,
    protocol: _Protocol,
    socket_options: Iterable[httpcore.SOCKET_OPTION] | None,
) -> _Stream:
    assert isinstance(transport, asyncio.Transport)
    if socket_options:
        sock = transport.get_extra_info("socket")
        try:
            for option in socket_options:
                sock.setsockopt(*option)
        except OSError as exc:
            transport.abort()
            raise httpcore.ConnectError(str(exc)) from exc
    return _Stream(transport, protocol, transport)


def install_quiet_backend(client: Any) -> bool:
    """Make ``client`` (an ``httpx.AsyncClient`` we built) read through `_QuietBackend`.

    Must be called before the client's first request (the pool hands its backend to each new
    connection). Touches one private attribute of httpx (the default transport's ``_pool``) and
    checks its type first: with another httpx, a proxy from the environment, or a custom
    transport, nothing changes and False is returned.
    """
    transport = getattr(client, "_transport", None)
    pool = getattr(transport, "_pool", None)
    if type(pool) is not httpcore.AsyncConnectionPool:
        return False
    fallback = getattr(pool, "_network_backend", None)
    if not isinstance(fallback, httpcore.AsyncNetworkBackend):
        return False
    pool._network_backend = _QuietBackend(fallback)
    return True
