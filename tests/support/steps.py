"""Helpers for cancellation tests: a deterministic voice, a server-side connection log, and a
watcher that cancels a scope when a phase of playback is reached.

* `ToneVoice` — an engine whose audio for a text is always the same Ogg Opus (tone bursts framed
  by OpenAI-like leading and trailing silence), so phases happen in a known order.
* `ConnectionLog` — ASGI middleware in front of the local server: for every speech request, did
  the body complete, or did the server see the client go away (``"disconnected"``)?
* `CancelAt` — polls a condition (over the events seen so far and the player's counters) every
  few milliseconds from its own task and cancels a scope the moment it holds. Phases are
  reached by what happened (events, counters, the server's log), never by sleeping.
"""

from __future__ import annotations

import functools
import json
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import numpy as np

from streamtts.opus import OggOpusEncoder
from support.loopback import replaying
from support.tonevoice import ToneEngine

__all__ = ["CancelAt", "ConnectionLog", "SpeechCall", "ToneVoice", "tone_speech"]

VOICE_RATE = 24000

#: How often `CancelAt` looks at its condition, in seconds: the player's own poll period, so a
#: phase lasting a block or more is never missed.
WATCH_INTERVAL = 0.005


def tone_speech(text: str) -> np.ndarray:
    """Speech-like audio for ``text``: 0.2 s of silence, one 100 ms tone burst per 5 characters
    (pitch from the text, 30 ms gaps), 0.3 s of silence; float32 ``(frames, 1)`` at 24 kHz."""
    rng = np.random.default_rng(zlib.crc32(text.encode()))
    burst = int(0.1 * VOICE_RATE)
    t = np.arange(burst) / VOICE_RATE
    parts = [np.zeros(int(0.2 * VOICE_RATE))]
    for _ in range(max(2, len(text) // 5)):
        f = rng.uniform(150.0, 300.0)
        parts += [0.3 * np.sin(2 * np.pi * f * t) * np.hanning(burst),
                  np.zeros(int(0.03 * VOICE_RATE))]
    parts.append(np.zeros(int(0.3 * VOICE_RATE)))
    return np.concatenate(parts).astype(np.float32).reshape(-1, 1)


@functools.cache
def _tone_opus(text: str) -> bytes:
    encoder = OggOpusEncoder(VOICE_RATE, 1, serial=7)
    return encoder.encode(tone_speech(text)) + encoder.finish()


class ToneVoice(ToneEngine):
    """An engine whose audio for a text is always `tone_speech` of it, in Ogg Opus."""

    def __init__(self) -> None:
        super().__init__(_tone_opus)


@dataclass
class SpeechCall:
    """One speech request as the server saw it."""

    text: str
    state: str = "open"  # "open" → "complete" (final body chunk sent) | "disconnected"


@dataclass
class ConnectionLog:
    """ASGI middleware: logs each ``/v1/audio/speech`` request and how its response ended.

    A response ends ``"complete"`` once the app sent the final body chunk, otherwise
    ``"disconnected"`` when the app returns (the local server returns without the final chunk
    only when it saw the client go away), or when the client left while sending its request
    (the call's ``text`` is then empty). It runs on the server's thread; the test reads it.

    ``impair(text)`` may return ``X-Impair-*`` headers for a request (the server's network
    impairment), so a test can slow down some texts only.
    """

    app: Any
    impair: Callable[[str], dict[str, str]] = lambda text: {}
    calls: list[SpeechCall] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/audio/speech":
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # The client left while sending the request (cancelled mid-body): no response.
                with self._lock:
                    self.calls.append(SpeechCall("", "disconnected"))
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        call = SpeechCall(json.loads(body)["input"])
        with self._lock:
            self.calls.append(call)
        headers = list(scope["headers"])
        headers += [(k.lower().encode(), v.encode()) for k, v in self.impair(call.text).items()]
        scope = {**scope, "headers": headers}
        replay = replaying(body, receive)
        async def watch(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                call.state = "complete"
            await send(message)

        try:
            await self.app(scope, replay, watch)
        finally:
            if call.state == "open":
                call.state = "disconnected"

    def snapshot(self) -> list[SpeechCall]:
        """A copy of the calls so far."""
        with self._lock:
            return [SpeechCall(c.text, c.state) for c in self.calls]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    async def settled(self, guard: float = 10.0) -> list[SpeechCall]:
        """The calls once none is open any more (hang guard: ``guard`` seconds)."""
        with anyio.fail_after(guard):
            # Polled: the states are set on the server's thread, which cannot set an anyio.Event.
            while any(c.state == "open" for c in self.snapshot()):  # noqa: ASYNC110
                await anyio.sleep(0.01)
        return self.snapshot()


class CancelAt:
    """Cancels ``scope`` as soon as ``condition()`` holds (polled every `WATCH_INTERVAL`).

    Run `watch` in a task group; ``fired`` tells whether the condition was met.
    """

    def __init__(self, scope: anyio.CancelScope, condition: Callable[[], bool]) -> None:
        self.scope = scope
        self.condition = condition
        self.fired = False

    async def watch(self) -> None:
        # Polled: the condition may read counters that the PortAudio thread moves.
        while not self.condition():  # noqa: ASYNC110
            await anyio.sleep(WATCH_INTERVAL)
        self.fired = True
        self.scope.cancel()
