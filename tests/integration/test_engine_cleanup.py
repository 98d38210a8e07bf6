"""OpenAIEngine leaves no httpx/httpcore async generator suspended on its abnormal paths.

httpx hands bodies through async generators (the request body's, the response body's chain);
one abandoned at a ``yield`` is finalized by the garbage collector, which trio reports as a
``ResourceWarning`` (an error in this suite) and asyncio hides. Each case forces its interleaving
on a real loopback connection and records every httpx/httpcore generator finalized unfinished
(`support.leaks` wraps the loop's finalizer hook), so it fails on both backends if the engine
regresses.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest
from support.leaks import abandoned_async_generators
from support.loopback import RawRequest, serve_raw

from streamtts.engines import OpenAIEngine
from streamtts.errors import BadRequestError

pytestmark = pytest.mark.anyio

#: The server's receive buffer: small, so that it (plus the client's send buffer) cannot take
#: the whole request body of `_body_size` while the server reads nothing.
SERVER_RCVBUF = 64 * 1024


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _body_size() -> int:
    """Characters of input that cannot all be written to a server that reads nothing: more
    than the client's largest send buffer (Linux ``tcp_wmem`` max) and the server's buffer."""
    try:
        wmem_max = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, ValueError, IndexError):
        wmem_max = 4 * 1024 * 1024
    return 2 * (wmem_max + 4 * SERVER_RCVBUF) + 1024 * 1024


@contextmanager
def deaf_server() -> Iterator[tuple[str, threading.Event]]:
    """A server that reads a request's headers, sets the event, then reads nothing more (the
    client's body write blocks) until the block ends. Yields (base URL, headers-seen event)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SERVER_RCVBUF)  # inherited
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    seen = threading.Event()
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data and (chunk := conn.recv(4096)):
                data += chunk
            seen.set()
            done.wait(30)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1", seen
    finally:
        done.set()
        thread.join(10)
        listener.close()


async def test_a_request_cancelled_while_its_body_is_written_leaves_no_generator_suspended() -> (
    None
):
    """The cancel lands after the headers were written and before the body could be: httpx's
    request body generator (``ByteStream.__aiter__``) was left suspended there (the flaky
    ResourceWarning of the say() cancellation tests, when a next sentence's request was being
    sent)."""
    text = "x" * _body_size()
    with deaf_server() as (url, seen), abandoned_async_generators("httpx", "httpcore") as left:
        async with OpenAIEngine(base_url=url, api_key="k", max_retries=0) as engine:
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:

                    async def cancel_once_the_headers_are_in() -> None:
                        # Polled: the event is set on the server's thread.
                        while not seen.is_set():  # noqa: ASYNC110
                            await anyio.sleep(0.005)
                        scope.cancel()

                    tg.start_soon(cancel_once_the_headers_are_in)
                    async with engine.stream(text):
                        pytest.fail("the server sent no response: the stream cannot open")
            assert scope.cancelled_caught
            assert seen.is_set()
    assert left == []


async def test_a_long_error_body_is_read_in_part_and_closed_leaving_no_generator_suspended() -> (
    None
):
    """An error body longer than the engine reads (64 kB) was left at ``break`` in an
    ``async for`` over ``aiter_bytes()``: the response was closed, its generators were not."""
    body = b'{"error": {"message": "no such voice"}}' + b" " * 300_000

    def handler(request: RawRequest, conn: socket.socket) -> None:
        head = f"HTTP/1.1 400 Bad Request\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        conn.sendall(head + body)

    with serve_raw(handler) as server, abandoned_async_generators("httpx", "httpcore") as left:
        async with OpenAIEngine(base_url=server.url + "/v1", api_key="k") as engine:
            with pytest.raises(BadRequestError, match="no such voice"):
                async with engine.stream("Hello."):
                    pass
    assert left == []
