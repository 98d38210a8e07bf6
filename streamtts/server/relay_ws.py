"""The browser relay over a WebSocket (Starlette), and the page that plays it.

`relay_routes` returns the routes to add to any Starlette app; `create_relay_app` wraps them in
an app of their own to mount anywhere (``app.mount("/tts", create_relay_app())``) or serve with
any ASGI server. ``streamtts serve`` mounts them at its root:

* ``GET /``: the page (text box, voice, Speak; live first-sound latency and underruns), with
  ``static/relay.js`` and the AudioWorklet ``static/relay-worklet.js``. Every URL it uses is
  relative, so it works under any mount path.
* ``WS /relay``: the relay, wire protocol in `streamtts.relay`.

One connection is one task group: a reader (the client's requests, validated by
`parse_client_message`; a malformed one closes this connection only, with its close code), a
sender (the listener's queue to the socket; a slow socket lets the hub drop this listener's
oldest packets, never holding back the others) and at most one speech task (engine →
`RelayHub.relay_ogg`). An utterance belongs to the connection that asked for it: when that
client disconnects, its utterance ends (``"stopped"``) for everyone.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import anyio.abc

from ..engines.base import Engine
from ..errors import BackendUnavailable, StreamTTSError
from ..relay import (
    CLOSE_POLICY,
    MAX_TEXT_CHARS,
    PROTOCOL_VERSION,
    SAMPLE_RATE,
    Rejection,
    RelayEnd,
    RelayHead,
    RelayHub,
    RelayListener,
    RelayPacket,
    SpeakRequest,
    StopRequest,
    parse_client_message,
)
from .impair import Impairment, OggClock, impair

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.routing import BaseRoute
    from starlette.types import Receive, Scope, Send
    from starlette.websockets import WebSocket

__all__ = ["STATIC_DIR", "RelayEndpoint", "create_relay_app", "relay_routes"]

logger = logging.getLogger("streamtts.relay")

#: The page, its script and its AudioWorklet.
STATIC_DIR = Path(__file__).parent / "static"

#: OpenAI's voice names, offered by the page when the engine lists none of its own.
_DEFAULT_VOICES = ("alloy", "ash", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer")


def _voices(engine: Engine) -> list[str]:
    from ..engines.espeak import ESPEAK_VOICES, EspeakEngine

    if isinstance(engine, EspeakEngine):
        return list(ESPEAK_VOICES)
    return list(_DEFAULT_VOICES)


class RelayEndpoint:
    """The ASGI endpoint of the relay WebSocket (one instance serves every connection).

    Args:
        hub: The hub the connections listen to (and speak into).
        engine: Speaks the ``speak`` requests (opus). None: listen-only, ``speak`` is answered
            with an ``error`` message.
        impairment: Network impairment applied to the engine's bytes before they reach the hub
            (a throttled or stalling source, as ``streamtts serve --stall-at``…).
        max_text_chars: Longest ``text`` of a ``speak`` request.
        api_key: If set, connections need ``?key=<api_key>`` in the WebSocket URL (a browser
            cannot send an Authorization header there; the page forwards its own ``?key=``).
        allowed_origins: Origins (``"https://app.example"``) whose pages may connect besides the
            page's own origin. Browsers always send ``Origin``: without this check any web page
            the user visits could make a local relay speak (cross-site WebSocket hijacking).
            Clients that send no ``Origin`` (not browsers) are not affected.
    """

    def __init__(
        self,
        hub: RelayHub,
        engine: Engine | None,
        *,
        impairment: Impairment | None = None,
        max_text_chars: int = MAX_TEXT_CHARS,
        api_key: str | None = None,
        allowed_origins: Sequence[str] = (),
    ) -> None:
        self.hub = hub
        self.engine = engine
        self.impairment = impairment or Impairment()
        self.max_text_chars = max_text_chars
        self.api_key = api_key
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)

    def refusal(self, ws: WebSocket) -> str | None:
        """Why this connection is refused (None: it is welcome)."""
        origin = ws.headers.get("origin")
        if origin is not None and origin.rstrip("/").lower() not in self.allowed_origins:
            host = ws.headers.get("host", "")
            if urlsplit(origin).netloc.lower() != host.lower():
                return f"origin {origin[:60]} is not allowed"
        if self.api_key is not None:
            key = ws.query_params.get("key", "")
            if not hmac.compare_digest(key.encode(), self.api_key.encode()):
                return "a valid ?key= is required"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.websockets import WebSocket

        ws = WebSocket(scope, receive, send)
        reason = self.refusal(ws)
        if reason is not None:
            logger.info("relay: refused a connection: %s", reason)
            await ws.close(CLOSE_POLICY, reason)  # before accept: the handshake gets a 403
            return
        await _Connection(self, ws).run()


class _Connection:
    def __init__(self, endpoint: RelayEndpoint, ws: WebSocket) -> None:
        self.endpoint = endpoint
        self.ws = ws
        self.lock = anyio.Lock()  # one sender at a time on the socket
        self.listener: RelayListener | None = None
        self.speech: anyio.CancelScope | None = None
        self.closed = False

    async def send_text(self, text: str) -> bool:
        """Send; False if the client is gone (the reader sees the disconnect and ends)."""
        return await self._send({"type": "websocket.send", "text": text})

    async def send_bytes(self, data: bytes) -> bool:
        """As `send_text`, a binary message."""
        return await self._send({"type": "websocket.send", "bytes": data})

    async def _send(self, message: dict[str, Any]) -> bool:
        from starlette.websockets import WebSocketDisconnect

        async with self.lock:
            if self.closed:
                return False
            try:
                await self.ws.send(message)
            except (OSError, RuntimeError, WebSocketDisconnect):
                self.closed = True
                return False
            return True

    async def run(self) -> None:
        ws, endpoint = self.ws, self.endpoint
        await ws.accept()
        voices = _voices(endpoint.engine) if endpoint.engine is not None else []
        ready = {"type": "ready", "protocol": PROTOCOL_VERSION, "sampleRate": SAMPLE_RATE,
                 "voices": voices, "speak": endpoint.engine is not None}
        try:
            async with anyio.create_task_group() as tg:
                try:
                    if await self.send_text(json.dumps(ready)):
                        await self.read(tg)
                finally:
                    tg.cancel_scope.cancel()
        finally:
            if self.listener is not None:
                self.listener.close()

    async def read(self, tg: anyio.abc.TaskGroup) -> None:
        from starlette.websockets import WebSocketDisconnect

        while True:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            request = parse_client_message(
                message.get("text"), message.get("bytes"),
                max_text_chars=self.endpoint.max_text_chars,
            )
            if isinstance(request, Rejection):
                logger.info("relay: closing a connection (%d): %s", request.code, request.reason)
                async with self.lock:
                    if not self.closed:
                        self.closed = True
                        with contextlib.suppress(OSError, RuntimeError, WebSocketDisconnect):
                            await self.ws.close(request.code, request.reason)
                return
            if isinstance(request, StopRequest):
                self.endpoint.hub.stop()
                continue
            self.join(tg)
            if isinstance(request, SpeakRequest):
                if self.speech is not None:
                    self.speech.cancel()
                tg.start_soon(self.speak, request)

    def join(self, tg: anyio.abc.TaskGroup) -> None:
        if self.listener is None:
            self.listener = self.endpoint.hub.listen()
            tg.start_soon(self.pump, self.listener)

    async def pump(self, listener: RelayListener) -> None:
        async for message in listener:
            if isinstance(message, RelayPacket):
                sent = await self.send_bytes(message.to_bytes())
            elif isinstance(message, RelayHead | RelayEnd):
                sent = await self.send_text(message.to_json())
            if not sent:
                return

    async def speak(self, request: SpeakRequest) -> None:
        engine = self.endpoint.engine
        with anyio.CancelScope() as scope:
            self.speech = scope
            try:
                if engine is None:
                    raise StreamTTSError("this relay has no engine: it only relays")
                async with engine.stream(
                    request.text, voice=request.voice, format="opus", speed=request.speed
                ) as audio, contextlib.AsyncExitStack() as stack:
                    body: AsyncIterator[bytes] = audio.aiter_bytes()
                    imp = self.endpoint.impairment
                    if imp.paces:
                        paced = impair(body, imp, clock=OggClock())
                        body = await stack.enter_async_context(contextlib.aclosing(paced))
                    await self.endpoint.hub.relay_ogg(body, text=request.text, voice=request.voice)
            except StreamTTSError as exc:
                logger.info("relay: speak failed: %s", exc)
                await self.send_text(json.dumps({"type": "error", "message": str(exc)}))
            finally:
                if self.speech is scope:
                    self.speech = None


def _require_starlette() -> None:
    try:
        import starlette  # noqa: F401
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(
            "the relay needs the extra 'server': pip install 'streamtts[server]'"
        ) from exc


def relay_routes(
    hub: RelayHub | None = None,
    engine: Engine | None = None,
    *,
    impairment: Impairment | None = None,
    page: bool = True,
    path: str = "/relay",
    api_key: str | None = None,
    allowed_origins: Sequence[str] = (),
    speak: bool = True,
) -> list[BaseRoute]:
    """The relay's routes, to add to a Starlette app (``Starlette(routes=[*relay_routes()])``).

    Args:
        hub: The hub (default: a new one). Pass your own to publish into it from your app
            (`RelayHub.relay_ogg`, `RelayHub.relay_pcm`).
        engine: Speaks the page's requests (default: the embedded `EspeakEngine`).
        impairment: Network impairment of the engine's bytes (tests, demos).
        page: Also serve the page at ``/`` and its files at ``/static``.
        path: Path of the WebSocket (the page expects ``/relay``).
        api_key: Require ``?key=<api_key>`` on the WebSocket (see `RelayEndpoint`); open the
            page as ``/?key=<api_key>``.
        allowed_origins: Other origins whose pages may connect (see `RelayEndpoint`).
        speak: Accept ``speak`` requests. False: listen-only, the app publishes into ``hub``
            itself (e.g. a `RelaySink` fed by its `Speaker`) and no engine is made.

    Raises:
        BackendUnavailable: Starlette is not installed.
    """
    _require_starlette()
    from starlette.responses import FileResponse
    from starlette.routing import Mount, Route, WebSocketRoute
    from starlette.staticfiles import StaticFiles

    if not speak:
        engine = None
    elif engine is None:
        from ..engines.espeak import EspeakEngine

        engine = EspeakEngine()
    endpoint = RelayEndpoint(
        hub or RelayHub(),
        engine,
        impairment=impairment,
        api_key=api_key,
        allowed_origins=allowed_origins,
    )
    routes: list[BaseRoute] = [WebSocketRoute(path, endpoint)]
    if page:

        async def index(request: Any) -> FileResponse:
            return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

        routes += [
            Route("/", index, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="relay-static"),
        ]
    return routes


def create_relay_app(
    hub: RelayHub | None = None,
    engine: Engine | None = None,
    *,
    impairment: Impairment | None = None,
    api_key: str | None = None,
    allowed_origins: Sequence[str] = (),
    speak: bool = True,
) -> Starlette:
    """The relay and its page as an ASGI app of their own (see `relay_routes` for the args).

    Raises:
        BackendUnavailable: Starlette is not installed.
    """
    _require_starlette()
    from starlette.applications import Starlette

    routes = relay_routes(
        hub, engine, impairment=impairment, api_key=api_key, allowed_origins=allowed_origins,
        speak=speak,
    )
    return Starlette(routes=routes)
