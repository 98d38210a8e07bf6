"""The relay WebSocket on a real loopback server: speaking, listening, rejecting bad clients."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from support.loopback import serve_asgi
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from streamtts.engines.espeak import EspeakEngine
from streamtts.opus import OggOpusDecoder
from streamtts.relay import RelayPacket
from streamtts.server.relay_ws import create_relay_app

TEXT = "Relay test."
TIMEOUT = 20


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_asgi(create_relay_app()) as url:
        yield url


def ws_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/relay"


def expected_frames(text: str, voice: str = "alloy") -> int:
    async def main() -> int:
        async with EspeakEngine().stream(text, voice=voice, format="opus") as audio:
            data = b"".join([c async for c in audio.aiter_bytes()])
        dec = OggOpusDecoder(48000)
        return sum(len(b) for b in dec.feed(data) + dec.close())

    return anyio.run(main)


def receive_json(ws: ClientConnection) -> dict[str, Any]:
    message = ws.recv(timeout=TIMEOUT)
    assert isinstance(message, str), f"expected a text message, got {len(message)} bytes"
    result: dict[str, Any] = json.loads(message)
    return result


def receive_until(ws: ClientConnection, kind: str, text: str | None = None) -> dict[str, Any]:
    """The next text message of type *kind* (and *text*), skipping the tail of an earlier
    utterance still live on the shared server (a joiner gets it, as it should)."""
    while True:
        message = ws.recv(timeout=TIMEOUT)
        if isinstance(message, str):
            parsed: dict[str, Any] = json.loads(message)
            if parsed["type"] == kind and (text is None or parsed.get("text") == text):
                return parsed


def receive_utterance(
    ws: ClientConnection, text: str = TEXT
) -> tuple[dict[str, Any], list[RelayPacket], dict[str, Any]]:
    head = receive_until(ws, "head", text)
    packets = []
    while True:
        message = ws.recv(timeout=TIMEOUT)
        if isinstance(message, bytes):
            packets.append(RelayPacket.from_bytes(message))
            continue
        end: dict[str, Any] = json.loads(message)
        assert end["type"] == "end"
        return head, packets, end


def close_code(ws: ClientConnection) -> tuple[int, str]:
    def read_to_close() -> None:
        while True:
            ws.recv(timeout=TIMEOUT)

    with pytest.raises(ConnectionClosed) as closed:
        read_to_close()
    frame = closed.value.rcvd
    assert frame is not None, "the server closed without a close frame"
    return frame.code, frame.reason


def test_page_and_its_scripts_are_served(base_url: str) -> None:
    page = httpx.get(base_url + "/")
    assert page.status_code == 200
    assert 'src="static/relay.js"' in page.text
    for name in ("relay.js", "relay-worklet.js"):
        script = httpx.get(f"{base_url}/static/{name}")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]


def test_speaker_and_listener_get_the_whole_utterance_trimmed_to_its_exact_length(
    base_url: str,
) -> None:
    with connect(ws_url(base_url)) as speaker, connect(ws_url(base_url)) as listener:
        ready = receive_json(speaker)
        assert ready["type"] == "ready"
        assert "alloy" in ready["voices"]
        receive_json(listener)
        listener.send(json.dumps({"type": "join"}))
        speaker.send(json.dumps({"type": "speak", "text": TEXT, "voice": "alloy"}))
        got = [receive_utterance(speaker), receive_utterance(listener)]
    expected = expected_frames(TEXT)
    for head, packets, end in got:
        assert head["text"] == TEXT
        assert [p.sequence for p in packets] == list(range(len(packets)))
        assert packets[-1].final
        assert packets[-1].end - head["preSkip"] == expected
        assert end["reason"] == "done"
        assert end["packets"] == len(packets)
    assert got[0][1] == got[1][1]


def test_malformed_messages_close_that_connection_only(base_url: str) -> None:
    with connect(ws_url(base_url)) as good:
        receive_json(good)
        good.send(json.dumps({"type": "join"}))
        cases = [
            (b"\x01\x02", 1003),
            ("{this is not json", 1007),
            (json.dumps({"type": "dance"}), 1008),
            (json.dumps({"type": "speak", "text": ""}), 1008),
        ]
        for message, code in cases:
            with connect(ws_url(base_url)) as bad:
                receive_json(bad)
                bad.send(message)
                got, reason = close_code(bad)
                assert got == code
                assert reason
        good.send(json.dumps({"type": "speak", "text": TEXT}))
        _, packets, end = receive_utterance(good)
    assert end["reason"] == "done"
    assert packets[-1].final


def test_unknown_voice_is_an_error_message_and_the_connection_stays_open(base_url: str) -> None:
    with connect(ws_url(base_url)) as ws:
        receive_json(ws)
        ws.send(json.dumps({"type": "speak", "text": TEXT, "voice": "no-such-voice"}))
        error = receive_until(ws, "error")
        assert "no-such-voice" in error["message"]
        ws.send(json.dumps({"type": "speak", "text": TEXT}))
        _, _, end = receive_utterance(ws)
        assert end["reason"] == "done"


def test_foreign_origin_and_missing_key_are_refused_at_the_handshake() -> None:
    from websockets.exceptions import InvalidStatus

    app = create_relay_app(api_key="sesame", allowed_origins=["https://app.example"])
    with serve_asgi(app) as url:
        ws = ws_url(url)
        for bad_url, origin in [
            (ws, None),  # no key
            (ws + "?key=wrong", None),
            (ws + "?key=sesame", "https://evil.example"),
        ]:
            with pytest.raises(InvalidStatus) as refused:
                connect(bad_url, origin=origin)  # type: ignore[arg-type]
            assert refused.value.response.status_code == 403
        host = url.removeprefix("http://")
        for origin in (None, f"http://{host}", "https://app.example"):
            with connect(ws + "?key=sesame", origin=origin) as good:  # type: ignore[arg-type]
                assert receive_json(good)["type"] == "ready"


def test_relay_mounts_in_the_speech_server_beside_the_openai_api() -> None:
    from streamtts.server.app import create_app
    from streamtts.server.relay_ws import relay_routes

    engine = EspeakEngine()
    app = create_app(engine, extra_routes=relay_routes(engine=engine))
    with serve_asgi(app) as url:
        assert httpx.get(url + "/v1/models").status_code == 200
        assert "static/relay.js" in httpx.get(url + "/").text
        with connect(ws_url(url)) as ws:
            receive_json(ws)
            ws.send(json.dumps({"type": "speak", "text": TEXT}))
            _, packets, end = receive_utterance(ws)
    assert end["reason"] == "done"
    assert packets[-1].end > 0


def test_listen_only_relay_carries_what_the_app_publishes_and_refuses_speak() -> None:
    import time

    import numpy as np
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from streamtts.relay import RelayHub, RelaySink
    from streamtts.server.relay_ws import relay_routes

    hub = RelayHub()
    pcm = (0.2 * np.sin(np.arange(24_000) / 7)).astype(np.float32).reshape(-1, 1)

    async def publish(request: Request) -> Response:
        """The app's own code, in the server's event loop, speaking through the relay."""

        async def blocks() -> AsyncIterator[bytes]:
            yield pcm.tobytes()

        await RelaySink(hub).play(blocks(), pcm_rate=48000, text="from the app")
        return Response(status_code=204)

    app = Starlette(routes=[*relay_routes(hub, speak=False), Route("/publish", publish,
                                                                    methods=["POST"])])
    with serve_asgi(app) as url, connect(ws_url(url)) as ws:
        ready = receive_json(ws)
        assert ready["speak"] is False
        ws.send(json.dumps({"type": "speak", "text": TEXT}))
        assert "only relays" in receive_until(ws, "error")["message"]
        ws.send(json.dumps({"type": "join"}))
        deadline = time.monotonic() + TIMEOUT
        while hub.listeners < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert httpx.post(url + "/publish", timeout=TIMEOUT).status_code == 204
        head, packets, end = receive_utterance(ws, "from the app")
    assert packets[-1].end - head["preSkip"] == len(pcm)
    assert end["reason"] == "done"
