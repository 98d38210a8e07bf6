"""The OpenAI-compatible engine: POST ``{base_url}/audio/speech`` over httpx, streamed.

How it works: the request is sent with ``stream=True``; an error status is read (bounded), mapped
to the error tree, and 429/5xx are retried with jittered exponential backoff (or the server's
``Retry-After``) — only before the first audio byte, since audio already played cannot be taken
back. On 200 the first bytes are read to settle the format (Content-Type, then the magic bytes;
an HTML or JSON page is refused with `ProtocolError`), then the body is handed out chunk by chunk
as it arrives. Leaving the context closes the response, shielded, so a cancelled stream never
leaves a half-read connection in the pool.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import httpx

from .._httpclose import close_streamed_response
from ..errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConnectError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterrupted,
    StreamTimeout,
    TransportError,
    UsageError,
)
from ..formats import Sniffed, parse_content_type, sniff
from .base import AudioStream, Engine, check_request_format, response_format_of

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MODEL", "DEFAULT_VOICE", "OpenAIEngine"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: The model that takes ``instructions`` and streams fastest (OpenAI's recommendation in 2025).
DEFAULT_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "alloy"

#: OpenAI documents ``pcm`` as 24 kHz signed 16-bit little-endian mono, with no header.
OPENAI_PCM_RATE = 24_000

#: Connecting takes milliseconds when the server is up; 10 s covers a slow DNS/TLS handshake.
CONNECT_TIMEOUT = 10.0
#: A long input can keep OpenAI silent for several seconds before the first byte (published
#: medians are 1–2.3 s); 30 s without any byte means the stream is dead.
READ_TIMEOUT = 30.0
#: Retries of 429/5xx, as the OpenAI SDK: two, because a listener is waiting.
MAX_RETRIES = 2
#: First backoff delay: short, since speech that starts 0.25 s late is still useful; doubled
#: per retry up to `RETRY_MAX_DELAY`.
RETRY_BASE_DELAY = 0.25
RETRY_MAX_DELAY = 4.0
#: A Retry-After longer than this is not worth waiting for with a listener waiting; the OpenAI
#: SDK uses the same cap.
MAX_RETRY_AFTER = 60.0
#: An error body is read up to this size for its message; bigger bodies are not error JSON.
_MAX_ERROR_BODY = 64 * 1024
#: Leaving the context waits at most this long for the connection to close (it is shielded
#: from cancellation; closing a socket takes microseconds, this only bounds a sick transport).
_CLOSE_TIMEOUT = 2.0


def _error_message(body: bytes, fallback: str) -> str:
    """The server's own message from an error body (OpenAI JSON, FastAPI ``detail``, or text)."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        for value in (err, data.get("detail"), data.get("message")):
            if isinstance(value, str) and value:
                return value
    if text:
        return text[:500]
    return fallback


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds asked by ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date), if any."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _RequestBody(httpx.AsyncByteStream):
    """A request body that httpcore can abandon mid-write without leaving anything to finalize.

    httpx wraps every ``json=``/``content=`` body in a stream whose ``__aiter__`` is an async
    generator, and httpcore iterates it without ever closing it: a request cancelled while its
    body is being written (a sentence requested just as ``say()`` is cancelled) leaves that
    generator suspended at its ``yield``, for the garbage collector to finalize (trio reports
    it as a ``ResourceWarning``). This stream hands out the same bytes through a plain
    iterator, which holds no frame and needs no closing.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _OneChunk(self._data)


class _OneChunk:
    """An async iterator yielding one bytes object (a plain object, not an async generator)."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> _OneChunk:
        return self

    async def __anext__(self) -> bytes:
        if self._data is None:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data


class _HTTPAudio(AudioStream):
    """The audio body of one HTTP response."""

    def __init__(self, response: httpx.Response, *, started: float, read_timeout: float | None):
        super().__init__()
        self.started = started
        self._response = response
        self._chunks = response.aiter_bytes()
        self._head = b""
        self._pending: TransportError | None = None
        self._read_timeout = read_timeout
        self._closed = False
        self.content_type = response.headers.get("content-type", "")

    async def _next_chunk(self) -> bytes | None:
        """The next body chunk, or None at the end; transport failures mapped to the tree."""
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            return None
        except httpx.TimeoutException as exc:
            raise StreamTimeout(
                f"no audio for {self._read_timeout} s after {self.bytes_received} bytes"
            ) from exc
        except httpx.StreamClosed as exc:
            raise UsageError("the audio stream was read after it was closed") from exc
        except httpx.DecodingError as exc:
            raise ProtocolError(f"the response body could not be decoded: {exc}") from exc
        except httpx.TransportError as exc:
            raise StreamInterrupted(
                f"the connection dropped after {self.bytes_received} bytes of audio: {exc}"
            ) from exc
        self._mark_chunk(chunk)
        return chunk

    async def _settle_format(self, requested: str, pcm_rate: int) -> None:
        """Read the first bytes and decide the format from the response, never from the request.

        The magic bytes win over the Content-Type (Ogg and WAV announce themselves); headerless
        PCM has no signature, so it is taken from the Content-Type, or from the request when
        the server sends a generic type.
        """
        head = b""
        found = None
        while found is None:
            try:
                chunk = await self._next_chunk()
            except TransportError as exc:
                if not head:
                    raise
                self._pending = exc  # raised after the bytes that did arrive
                break
            if chunk is None:
                break
            head += chunk
            found = sniff(head)
        self._head = head
        if found is None:
            found = sniff(head, final=True)
        assert found is not None  # sniff(final=True) always decides
        if not head:
            raise ProtocolError("the server answered 200 with an empty body instead of audio")
        try:
            self._decide(found, requested, pcm_rate)
        except ProtocolError:
            if self._pending is not None:
                raise self._pending from None  # too few bytes to tell: the drop is the cause
            raise

    def _decide(self, found: Sniffed, requested: str, pcm_rate: int) -> None:
        media = parse_content_type(self.content_type)
        if found.playable:
            self.format = found.kind
            return
        pcm_declared = media.format == "pcm" if media else requested == "pcm"
        if found.kind == "unknown" and pcm_declared:
            self.format = "pcm"
            self.sample_rate = (media.sample_rate if media else None) or pcm_rate
            self.channels = (media.channels if media else None) or 1
            self.sample_format = (media.sample_format if media else None) or "s16le"
            return
        expected = {"ogg": "an Ogg Opus stream", "wav": "a WAV stream", "pcm": "raw PCM"}
        wanted = media.format if media and media.format in expected else None
        wanted = wanted or response_format_of(requested)
        raise found.error(f"{expected[wanted]} (Content-Type {self.content_type or 'missing'})")

    async def _next(self) -> bytes | None:
        if self._head:
            head, self._head = self._head, b""
            return head
        if self._pending is not None:
            raise self._pending
        while (chunk := await self._next_chunk()) is not None:
            if chunk:
                return chunk
        if self.finished is None:
            self.finished = time.monotonic()
        return None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT):
            await close_streamed_response(self._chunks, self._response)


class OpenAIEngine(Engine):
    """Speech from any OpenAI-compatible ``/v1/audio/speech`` endpoint, streamed.

    Args:
        api_key: The API key; default ``OPENAI_API_KEY`` (none: no Authorization header, for
            local servers).
        base_url: The API root; default ``OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
        model: Default model.
        voice: Default voice.
        client: An ``httpx.AsyncClient`` to use (not closed by `aclose`); default: one of our own,
            which reads its sockets into reused buffers (a long-running speaker's heap stays
            flat; a client of your own keeps httpx's stock reads).
        connect_timeout: Seconds to connect.
        read_timeout: Seconds without any byte before `StreamTimeout` (also for the headers).
        max_retries: Retries of 429/5xx before the first audio byte.
        retry_base_delay: First backoff delay in seconds (doubled each retry, with jitter).
        retry_max_delay: Cap of the backoff delay in seconds.
        max_retry_after: A ``Retry-After`` longer than this is not waited for (the backoff is used).
        pcm_sample_rate: Rate assumed for ``audio/pcm`` without a ``rate=`` parameter (OpenAI's
            documented 24 kHz); override for servers that differ.
        headers: Extra headers sent with every request.
    """

    name = "openai"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        model: str = DEFAULT_MODEL,
        voice: str = DEFAULT_VOICE,
        client: httpx.AsyncClient | None = None,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
        max_retries: int = MAX_RETRIES,
        retry_base_delay: float = RETRY_BASE_DELAY,
        retry_max_delay: float = RETRY_MAX_DELAY,
        max_retry_after: float = MAX_RETRY_AFTER,
        pcm_sample_rate: int = OPENAI_PCM_RATE,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self.base_url = url.rstrip("/")
        self.model = model
        self.voice = voice
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_retries = max_retries
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self.max_retry_after = max_retry_after
        self.pcm_sample_rate = pcm_sample_rate
        self.headers = dict(headers or {})
        self._client = client
        self._own_client = client is None
        #: How retries wait (replaceable in tests to observe the delays).
        self._sleep: Callable[[float], Awaitable[None]] = anyio.sleep

    def describe(self) -> str:
        return f"openai ({self.base_url}, model {self.model})"

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            from .. import __version__
            from ._net import install_quiet_backend  # imports httpcore, as httpx does: lazily

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(
                    connect=self.connect_timeout,
                    read=self.read_timeout,
                    write=self.read_timeout,
                    pool=self.connect_timeout,
                ),
                headers={"User-Agent": f"streamtts/{__version__}"},
            )
            # Read sockets into reused buffers: asyncio's stock reads fragment the C heap of a
            # long-running speaker (see _net).
            install_quiet_backend(self._client)
        return self._client

    async def __aenter__(self) -> OpenAIEngine:
        self._get_client()  # build it (TLS context: ~0.1 s) before the first request is timed
        return self

    async def aclose(self) -> None:
        if self._own_client and self._client is not None:
            client, self._client = self._client, None
            with anyio.CancelScope(shield=True):
                await client.aclose()

    def _backoff(self, attempt: int) -> float:
        # Jitter keeps many clients from retrying in lockstep; 75–100 % of the exponential delay.
        delay = min(self.retry_max_delay, self.retry_base_delay * 2.0**attempt)
        return delay * (1.0 - 0.25 * random.random())

    def stream(
        self,
        text: str,
        *,
        voice: str | None = None,
        format: str = "opus",
        speed: float | None = None,
        instructions: str | None = None,
        model: str | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> AbstractAsyncContextManager[AudioStream]:
        """Request speech; see `Engine.stream`.

        Args:
            extra_headers: Headers for this request only (e.g. ``X-Impair-*`` for the local
                server's network impairment).

        Raises:
            AuthenticationError: 401/403.
            BadRequestError: 400/404/422 and other 4xx, with the server's message.
            RateLimitError: 429 after the retries.
            ServerError: 5xx after the retries.
            ConnectError: The server could not be reached.
            StreamTimeout: No byte for longer than ``read_timeout``.
            ProtocolError: A 200 whose body is not audio.
        """
        return self._stream(
            text,
            voice=voice,
            format=format,
            speed=speed,
            instructions=instructions,
            model=model,
            extra_headers=extra_headers,
        )

    @asynccontextmanager
    async def _stream(
        self,
        text: str,
        *,
        voice: str | None,
        format: str,
        speed: float | None,
        instructions: str | None,
        model: str | None,
        extra_headers: Mapping[str, str] | None,
    ) -> AsyncIterator[AudioStream]:
        requested = check_request_format(format)
        body: dict[str, Any] = {
            "model": model or self.model,
            "voice": voice or self.voice,
            "input": text,
            "response_format": requested,
        }
        if speed is not None:
            body["speed"] = speed
        if instructions is not None:
            body["instructions"] = instructions
        headers = dict(self.headers)
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(extra_headers or {})
        started = time.monotonic()
        marks: dict[str, float] = {}
        response = await self._send(body, headers, marks)
        audio = _HTTPAudio(response, started=started, read_timeout=self.read_timeout)
        try:
            audio.request_sent = marks.get("request_sent", started)
            audio.headers_received = marks.get("headers_received", time.monotonic())
            await audio._settle_format(requested, self.pcm_sample_rate)
            yield audio
        finally:
            await audio.aclose()

    async def _send(
        self, body: dict[str, Any], headers: dict[str, str], marks: dict[str, float]
    ) -> httpx.Response:
        """Send the request, retrying 429/5xx; returns a 2xx response with its body unread."""
        client = self._get_client()
        url = f"{self.base_url}/audio/speech"

        async def trace(event: str, info: dict[str, Any]) -> None:
            if event.endswith("send_request_body.complete"):
                marks["request_sent"] = time.monotonic()
            elif event.endswith("receive_response_headers.complete"):
                marks["headers_received"] = time.monotonic()

        attempt = 0
        while True:
            request = client.build_request(
                "POST", url, json=body, headers=headers, extensions={"trace": trace}
            )
            request.stream = _RequestBody(request.content)  # headers (Content-Length) unchanged
            marks.setdefault("request_sent", time.monotonic())
            try:
                response = await client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise ConnectError(f"could not connect to {url}: {exc}") from exc
            except httpx.TimeoutException as exc:
                raise StreamTimeout(f"{url} sent no response within {self.read_timeout} s") from exc
            except httpx.TransportError as exc:
                raise StreamInterrupted(f"{url}: the connection failed: {exc}") from exc
            status = response.status_code
            if 200 <= status < 300:
                return response
            payload = await self._read_error_body(response)
            message = _error_message(payload, f"HTTP {status} {response.reason_phrase}")
            retryable = status == 429 or status >= 500
            if retryable and attempt < self.max_retries:
                wait = _retry_after(response.headers)
                if wait is None or wait > self.max_retry_after:
                    wait = self._backoff(attempt)
                attempt += 1
                await self._sleep(wait)
                marks.clear()
                continue
            raise self._status_error(status, message, payload, attempt)

    async def _read_error_body(self, response: httpx.Response) -> bytes:
        data = b""
        chunks = response.aiter_bytes()
        try:
            while len(data) < _MAX_ERROR_BODY:
                data += await chunks.__anext__()
        except StopAsyncIteration:
            pass
        except httpx.HTTPError:
            pass  # the status says enough; a half-read error body is still a message
        finally:
            # Not `async for ... break`: that would leave httpx's body generators suspended.
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT):
                await close_streamed_response(chunks, response)
        return data

    @staticmethod
    def _status_error(status: int, message: str, payload: bytes, retries: int) -> APIError:
        body = payload.decode("utf-8", "replace")
        if status in (401, 403):
            return AuthenticationError(
                f"HTTP {status}: {message} (check the API key: pass api_key= or set "
                "OPENAI_API_KEY)",
                status_code=status,
                body=body,
            )
        after = f" after {retries} retries" if retries else ""
        if status == 429:
            return RateLimitError(f"HTTP 429{after}: {message}", status_code=status, body=body)
        if status >= 500:
            return ServerError(f"HTTP {status}{after}: {message}", status_code=status, body=body)
        if 400 <= status < 500:
            return BadRequestError(f"HTTP {status}: {message}", status_code=status, body=body)
        return APIError(f"HTTP {status}: {message}", status_code=status, body=body)
