"""The local OpenAI-compatible speech server (Starlette): ``/v1/audio/speech`` and ``/v1/models``.

The official ``openai`` SDK works against it unchanged. The response streams while the engine
synthesizes (chunked transfer encoding), through the network impairment of `impair`. Every
client error is a 4xx with OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``.

The speech endpoint runs in one task from the engine call to the last byte (a raw ASGI response
rather than Starlette's ``StreamingResponse``), so the engine's task group is entered and left
in the same task, and a client that hangs up cancels the synthesis.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ..engines.base import UNSUPPORTED_FORMATS, AudioStream, Engine
from ..engines.espeak import SPEED_MAX, SPEED_MIN, EspeakEngine
from ..errors import APIError, BackendUnavailable, StreamTTSError, TransportError
from .impair import Impairment, audio_clock, impair

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute
    from starlette.types import Receive, Scope, Send

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_INPUT_CHARS",
    "MODELS",
    "RequestError",
    "SpeechRequest",
    "create_app",
    "parse_speech_request",
]

logger = logging.getLogger("streamtts.server")

#: OpenAI's limit on ``input``.
MAX_INPUT_CHARS = 4096
#: A valid request is at most ~4096 characters of JSON-escaped text plus a few fields; anything
#: much bigger is refused before it is read (413), so a client cannot make us buffer megabytes.
MAX_BODY_BYTES = 64 * 1024
#: Model names accepted (all served by the same engine); listed by ``GET /v1/models``.
MODELS = ("gpt-4o-mini-tts", "tts-1", "tts-1-hd", "espeak-ng")
_CONTENT_TYPES = {"opus": "audio/ogg", "wav": "audio/wav", "pcm": "audio/pcm"}


def _require_starlette() -> None:
    try:
        import starlette  # noqa: F401
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(
            "the local server needs the extra 'server': pip install 'streamtts[server]'"
        ) from exc


class RequestError(Exception):
    """A client error, answered as OpenAI's error JSON (internal to the server).

    Attributes:
        status: The HTTP status.
        message: The message for the client.
        param: The request field at fault, if any.
        code: A machine-readable code, if any.
    """

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The OpenAI-shaped error body."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {
            "error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        }


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    """A validated ``POST /v1/audio/speech`` body."""

    input: str
    voice: str
    model: str
    response_format: str
    speed: float | None
    instructions: str | None


def parse_speech_request(
    payload: object, *, max_input_chars: int = MAX_INPUT_CHARS
) -> SpeechRequest:
    """Validate a decoded JSON body as OpenAI does.

    ``response_format`` defaults to ``opus`` (OpenAI's default, mp3, is not served here).

    Raises:
        RequestError: 400 naming the field at fault.
    """
    if not isinstance(payload, dict):
        raise RequestError(400, "the request body must be a JSON object")
    text = payload.get("input")
    if text is None:
        raise RequestError(400, "you must provide an 'input' parameter", param="input")
    if not isinstance(text, str):
        raise RequestError(400, "'input' must be a string", param="input")
    if not text.strip():
        raise RequestError(400, "'input' is empty", param="input", code="empty_input")
    if len(text) > max_input_chars:
        raise RequestError(
            400,
            f"'input' is {len(text)} characters long; the maximum is {max_input_chars}",
            param="input",
            code="string_above_max_length",
        )
    voice = payload.get("voice", "alloy")
    if isinstance(voice, dict):  # {"id": "..."}, the newer custom-voice form
        voice = voice.get("id")
    if not isinstance(voice, str) or not voice.strip():
        raise RequestError(400, "'voice' must be a voice name", param="voice")
    model = payload.get("model", MODELS[0])
    if not isinstance(model, str) or not model.strip():
        raise RequestError(400, "'model' must be a model name", param="model")
    fmt = payload.get("response_format", "opus")
    if not isinstance(fmt, str):
        raise RequestError(400, "'response_format' must be a string", param="response_format")
    fmt = fmt.lower()
    if fmt in UNSUPPORTED_FORMATS:
        raise RequestError(
            400,
            f"response_format '{fmt}' is not supported by this server: use opus, wav or pcm",
            param="response_format",
            code="unsupported_format",
        )
    if fmt not in _CONTENT_TYPES:
        raise RequestError(
            400,
            f"unknown response_format {fmt!r}: use opus, wav or pcm",
            param="response_format",
        )
    speed = payload.get("speed")
    if speed is not None:
        number = isinstance(speed, int | float) and not isinstance(speed, bool)
        if not number or not math.isfinite(speed):
            raise RequestError(400, "'speed' must be a number", param="speed")
        if not SPEED_MIN <= speed <= SPEED_MAX:
            raise RequestError(
                400, f"'speed' must be between {SPEED_MIN} and {SPEED_MAX}", param="speed"
            )
        speed = float(speed)
    instructions = payload.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise RequestError(400, "'instructions' must be a string", param="instructions")
    stream_format = payload.get("stream_format", "audio")
    if stream_format != "audio":
        raise RequestError(
            400, "only stream_format 'audio' is supported here", param="stream_format"
        )
    return SpeechRequest(text, voice.strip(), model, fmt, speed, instructions)


def _error_response(error: RequestError) -> Response:
    from starlette.responses import JSONResponse

    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


async def _send_error(send: Send, error: RequestError) -> None:
    body = json.dumps(error.body()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _SpeechResponse:
    """A raw ASGI response: engine call, headers, paced body, all in the calling task."""

    def __init__(self, engine: Engine, request: SpeechRequest, impairment: Impairment) -> None:
        self.engine = engine
        self.request = request
        self.impairment = impairment

    def _open(self) -> contextlib.AbstractAsyncContextManager[AudioStream]:
        req = self.request
        if isinstance(self.engine, EspeakEngine):
            page = self.impairment.page_duration
            return self.engine.stream(
                req.input,
                voice=req.voice,
                format=req.response_format,
                speed=req.speed,
                page_ms=None if page is None else page * 1000.0,
            )
        return self.engine.stream(
            req.input,
            voice=req.voice,
            format=req.response_format,
            speed=req.speed,
            instructions=req.instructions,
            model=req.model,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        imp = self.impairment
        async with contextlib.AsyncExitStack() as stack:
            try:
                audio = await stack.enter_async_context(self._open())
            except APIError as exc:
                status = exc.status_code if 400 <= exc.status_code < 600 else 502
                await _send_error(send, RequestError(status, str(exc)))
                return
            except (TransportError, StreamTTSError) as exc:
                await _send_error(send, RequestError(502, f"the engine failed: {exc}"))
                return
            clock = audio_clock(
                audio.format, sample_rate=audio.sample_rate or 24_000, channels=audio.channels or 1
            )
            body = impair(audio.aiter_bytes(), imp, clock=clock)
            await self._stream(audio, body, receive, send)

    async def _stream(
        self, audio: AudioStream, body: AsyncGenerator[bytes, None], receive: Receive, send: Send
    ) -> None:
        imp = self.impairment
        sent = 0
        gone = False

        async def watch_disconnect(scope: anyio.CancelScope) -> None:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    scope.cancel()
                    return

        async with contextlib.aclosing(body), anyio.create_task_group() as tg:
            tg.start_soon(watch_disconnect, tg.cancel_scope)
            try:
                # The headers go with the first bytes, as from a server that answers when
                # its synthesis has started: the first-byte delay delays both.
                first = await anext(body, b"")
                headers = [
                    (b"content-type", audio.content_type.encode()),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),
                ]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                if first:
                    await send({"type": "http.response.body", "body": first, "more_body": True})
                    sent += len(first)
                async for piece in body:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                    sent += len(piece)
            except OSError:  # ASGI 2.4: the client is gone
                gone = True
            except StreamTTSError as exc:
                logger.warning("speech stream failed after %d bytes: %s", sent, exc)
                gone = True  # drop the connection: the client sees an interrupted stream
            tg.cancel_scope.cancel()
        if gone or imp.disconnects(sent):
            if imp.disconnects(sent):
                logger.info("impairment: dropping the connection after %d bytes", sent)
            return  # no final chunk: the client sees the connection drop mid-body
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def create_app(
    engine: Engine | None = None,
    *,
    api_key: str | None = None,
    impairment: Impairment | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_input_chars: int = MAX_INPUT_CHARS,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The ASGI app of the local OpenAI-compatible speech server.

    Args:
        engine: The engine that speaks (default: the embedded `EspeakEngine`).
        api_key: If set, requests need ``Authorization: Bearer <api_key>`` (else 401).
        impairment: Network impairment applied to every response; each request may override
            it with ``X-Impair-*`` headers.
        max_body_bytes: Bigger request bodies are refused with 413 before being read.
        max_input_chars: Longest ``input`` accepted.
        extra_routes: More Starlette routes served by the same app (e.g. the browser relay).

    Raises:
        BackendUnavailable: Starlette is not installed (``pip install 'streamtts[server]'``).
    """
    _require_starlette()
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    speaker = engine or EspeakEngine()
    base_impairment = impairment or Impairment()

    def authorized(headers: Mapping[str, str]) -> bool:
        if api_key is None:
            return True
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), api_key)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise RequestError(413, f"the request body is larger than {max_body_bytes} bytes")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > max_body_bytes:
                raise RequestError(413, f"the request body is larger than {max_body_bytes} bytes")
        return bytes(data)

    async def speech(request: Request) -> Response | _SpeechResponse:
        try:
            if not authorized(request.headers):
                raise RequestError(
                    401,
                    "Incorrect API key provided: pass it as 'Authorization: Bearer <key>'",
                    code="invalid_api_key",
                )
            raw = await read_body(request)
            try:
                payload = json.loads(raw)
            except ValueError:
                raise RequestError(
                    400, "We could not parse the JSON body of your request."
                ) from None
            req = parse_speech_request(payload, max_input_chars=max_input_chars)
            try:
                imp = base_impairment.with_headers(request.headers)
            except ValueError as exc:
                raise RequestError(400, str(exc), code="bad_impairment") from None
            if isinstance(speaker, EspeakEngine):
                try:
                    await speaker.resolve_voice(req.voice)
                except APIError as exc:
                    raise RequestError(400, str(exc), param="voice") from None
        except RequestError as error:
            return _error_response(error)
        return _SpeechResponse(speaker, req, imp)

    async def models(request: Request) -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "streamtts"} for m in MODELS]
        return JSONResponse({"object": "list", "data": data})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        return _error_response(RequestError(status, f"{request.url.path}: {detail}"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if isinstance(speaker, EspeakEngine):
            await speaker.resolve_voice()  # load espeak-ng now, not on the first request
        yield

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/v1/audio/speech", speech, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            *extra_routes,
        ],
        exception_handlers={HTTPException: http_error},
    )
