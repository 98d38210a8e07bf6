"""OpenAIEngine against httpx.MockTransport: the request it sends, the format it settles on,
error mapping, retries (before the first audio byte only)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import anyio
import httpx
import pytest

from streamtts.engines import OpenAIEngine, default_engine
from streamtts.engines.espeak import EspeakEngine
from streamtts.errors import (
    AuthenticationError,
    BadRequestError,
    ConnectError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterrupted,
    StreamTimeout,
    UnsupportedFormat,
    UsageError,
)
from streamtts.wav import wav_header

OGG_HEAD = b"OggS\x00\x02" + bytes(30)
Handler = Callable[[httpx.Request], httpx.Response]


class Chunks(httpx.AsyncByteStream):
    """A body delivered in the given chunks, then failing like the network would (if *error*)."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self.chunks = chunks
        self.error = error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.error is not None:
            raise self.error


def make_engine(handler: Handler, **kwargs: object) -> tuple[OpenAIEngine, list[float]]:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    engine = OpenAIEngine(
        api_key="sk-test",
        base_url="http://tts.test/v1",
        client=client,
        **kwargs,  # type: ignore[arg-type]
    )
    sleeps: list[float] = []

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    engine._sleep = record_sleep
    return engine, sleeps


def fetch(engine: OpenAIEngine, **kwargs: object) -> tuple[dict[str, object], bytes]:
    """Run one stream to the end; returns the stream's attributes and the bytes."""

    async def main() -> tuple[dict[str, object], bytes]:
        try:
            async with engine.stream("Hello there.", **kwargs) as audio:  # type: ignore[arg-type]
                data = b"".join([c async for c in audio.aiter_bytes()])
                info = {
                    "format": audio.format,
                    "sample_rate": audio.sample_rate,
                    "channels": audio.channels,
                    "sample_format": audio.sample_format,
                }
                return info, data
        finally:
            await engine._get_client().aclose()

    return anyio.run(main)


def test_the_request_is_openai_shaped_with_the_key_as_bearer_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=OGG_HEAD, headers={"content-type": "audio/ogg"})

    engine, _ = make_engine(handler)
    fetch(engine, voice="onyx", format="opus", speed=1.25, instructions="calm", model="tts-1")
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "http://tts.test/v1/audio/speech"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert json.loads(request.content) == {
        "model": "tts-1",
        "voice": "onyx",
        "input": "Hello there.",
        "response_format": "opus",
        "speed": 1.25,
        "instructions": "calm",
    }


def test_unset_options_are_not_sent() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=OGG_HEAD, headers={"content-type": "audio/ogg"})

    engine, _ = make_engine(handler)
    fetch(engine)
    assert set(seen[0]) == {"model", "voice", "input", "response_format"}


def test_key_and_base_url_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
    engine = OpenAIEngine()
    assert engine.api_key == "sk-env"
    assert engine.base_url == "http://127.0.0.1:9/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert OpenAIEngine().base_url == "https://api.openai.com/v1"


def test_default_engine_is_openai_when_configured_else_the_embedded_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert isinstance(default_engine(), EspeakEngine)
    assert isinstance(default_engine(base_url="http://127.0.0.1:8000/v1"), OpenAIEngine)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    assert isinstance(default_engine(), OpenAIEngine)


# --- the format comes from the response -------------------------------------------------------


def test_openai_pcm_is_24khz_s16le_mono() -> None:
    engine, _ = make_engine(
        lambda r: httpx.Response(
            200, content=b"\x01\x02" * 100, headers={"content-type": "audio/pcm"}
        )
    )
    info, data = fetch(engine, format="pcm")
    assert info == {"format": "pcm", "sample_rate": 24000, "channels": 1, "sample_format": "s16le"}
    assert data == b"\x01\x02" * 100


def test_pcm_rate_in_the_content_type_wins_and_the_default_can_be_overridden() -> None:
    body = b"\x01\x02" * 100
    engine, _ = make_engine(
        lambda r: httpx.Response(
            200, content=body, headers={"content-type": "audio/pcm;rate=16000;channels=2"}
        )
    )
    info, _ = fetch(engine, format="pcm")
    assert (info["sample_rate"], info["channels"]) == (16000, 2)
    engine, _ = make_engine(
        lambda r: httpx.Response(200, content=body, headers={"content-type": "audio/pcm"}),
        pcm_sample_rate=22050,
    )
    assert fetch(engine, format="pcm")[0]["sample_rate"] == 22050


def test_the_magic_bytes_win_over_a_wrong_content_type() -> None:
    wav = wav_header(24000, 1) + bytes(100)
    engine, _ = make_engine(
        lambda r: httpx.Response(200, content=wav, headers={"content-type": "audio/ogg"})
    )
    info, data = fetch(engine, format="opus")
    assert info["format"] == "wav"
    assert data == wav


def test_a_generic_content_type_is_sniffed() -> None:
    engine, _ = make_engine(
        lambda r: httpx.Response(
            200, content=OGG_HEAD, headers={"content-type": "application/octet-stream"}
        )
    )
    assert fetch(engine, format="wav")[0]["format"] == "ogg"


def test_the_first_bytes_are_not_lost_when_they_arrive_one_by_one() -> None:
    body = OGG_HEAD + bytes(range(200))
    engine, _ = make_engine(
        lambda r: httpx.Response(
            200,
            stream=Chunks([bytes([b]) for b in body]),
            headers={"content-type": "audio/ogg"},
        )
    )
    info, data = fetch(engine)
    assert info["format"] == "ogg"
    assert data == body


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("text/html", b"<!DOCTYPE html><html><body>Captive portal</body></html>", "HTML"),
        ("application/json", b'{"error": {"message": "nope"}}', "JSON"),
        ("audio/ogg", b"<html><body>Gateway</body></html>", "HTML"),
    ],
)
def test_a_200_with_a_page_instead_of_audio_is_a_protocol_error_saying_what_came(
    content_type: str, body: bytes, expected: str
) -> None:
    engine, _ = make_engine(
        lambda r: httpx.Response(200, content=body, headers={"content-type": content_type})
    )
    with pytest.raises(ProtocolError, match=expected):
        fetch(engine)


def test_mp3_from_the_server_is_unsupported_format() -> None:
    mp3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(100)
    engine, _ = make_engine(
        lambda r: httpx.Response(200, content=mp3, headers={"content-type": "audio/mpeg"})
    )
    with pytest.raises(UnsupportedFormat):
        fetch(engine)


def test_an_empty_200_is_a_protocol_error() -> None:
    engine, _ = make_engine(lambda r: httpx.Response(200, headers={"content-type": "audio/ogg"}))
    with pytest.raises(ProtocolError, match="empty"):
        fetch(engine)


def test_asking_for_mp3_is_a_usage_error_and_sends_nothing() -> None:
    calls: list[httpx.Request] = []
    engine, _ = make_engine(lambda r: calls.append(r) or httpx.Response(500))  # type: ignore[func-returns-value]
    with pytest.raises(UsageError, match="not supported"):
        fetch(engine, format="mp3")
    assert calls == []


# --- errors -------------------------------------------------------------------------------------


def error_json(message: str) -> dict[str, object]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None}}


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_name_the_api_key_variable(status: int) -> None:
    engine, _ = make_engine(lambda r: httpx.Response(status, json=error_json("Incorrect API key")))
    with pytest.raises(AuthenticationError, match="OPENAI_API_KEY") as info:
        fetch(engine)
    assert "Incorrect API key" in str(info.value)
    assert info.value.status_code == status


@pytest.mark.parametrize("status", [400, 404, 422])
def test_bad_requests_carry_the_servers_own_message(status: int) -> None:
    engine, sleeps = make_engine(
        lambda r: httpx.Response(status, json=error_json("Input too long for voice 'x'"))
    )
    with pytest.raises(BadRequestError, match="Input too long for voice 'x'") as info:
        fetch(engine)
    assert info.value.status_code == status
    assert sleeps == []


def test_a_plain_text_error_body_is_the_message() -> None:
    engine, _ = make_engine(lambda r: httpx.Response(404, text="no such route"))
    with pytest.raises(BadRequestError, match="no such route"):
        fetch(engine)


def sequence(*responses: httpx.Response) -> tuple[Handler, list[httpx.Request]]:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return responses[min(len(calls), len(responses)) - 1]

    return handler, calls


def test_429_is_retried_after_the_servers_retry_after() -> None:
    handler, calls = sequence(
        httpx.Response(429, json=error_json("slow down"), headers={"retry-after": "1.5"}),
        httpx.Response(200, content=OGG_HEAD, headers={"content-type": "audio/ogg"}),
    )
    engine, sleeps = make_engine(handler)
    assert fetch(engine)[1] == OGG_HEAD
    assert len(calls) == 2
    assert sleeps == [1.5]


def test_retry_after_ms_is_honoured_too() -> None:
    handler, _ = sequence(
        httpx.Response(503, headers={"retry-after-ms": "250"}),
        httpx.Response(200, content=OGG_HEAD, headers={"content-type": "audio/ogg"}),
    )
    engine, sleeps = make_engine(handler)
    fetch(engine)
    assert sleeps == [0.25]


def test_5xx_is_retried_with_jittered_exponential_backoff_then_succeeds() -> None:
    handler, calls = sequence(
        httpx.Response(500),
        httpx.Response(502),
        httpx.Response(200, content=OGG_HEAD, headers={"content-type": "audio/ogg"}),
    )
    engine, sleeps = make_engine(handler, retry_base_delay=0.2, max_retries=2)
    fetch(engine)
    assert len(calls) == 3
    assert 0.15 <= sleeps[0] <= 0.2
    assert 0.3 <= sleeps[1] <= 0.4


def test_a_retry_after_beyond_the_cap_falls_back_to_backoff() -> None:
    handler, _ = sequence(
        httpx.Response(429, headers={"retry-after": "3600"}),
        httpx.Response(200, content=OGG_HEAD, headers={"content-type": "audio/ogg"}),
    )
    engine, sleeps = make_engine(handler, retry_base_delay=0.1)
    fetch(engine)
    assert sleeps[0] <= 0.1


def test_5xx_forever_is_server_error_after_the_retries() -> None:
    handler, calls = sequence(httpx.Response(500, json=error_json("boom")))
    engine, sleeps = make_engine(handler, max_retries=3)
    with pytest.raises(ServerError, match="after 3 retries: boom") as info:
        fetch(engine)
    assert len(calls) == 4
    assert len(sleeps) == 3
    assert info.value.status_code == 500


def test_429_forever_is_rate_limit_error() -> None:
    handler, calls = sequence(httpx.Response(429, headers={"retry-after": "0"}))
    engine, _ = make_engine(handler, max_retries=1)
    with pytest.raises(RateLimitError):
        fetch(engine)
    assert len(calls) == 2


def test_connect_failure_is_connect_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    engine, _ = make_engine(handler)
    with pytest.raises(ConnectError, match="connection refused"):
        fetch(engine)


def test_no_headers_within_the_read_timeout_is_stream_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    engine, _ = make_engine(handler)
    with pytest.raises(StreamTimeout):
        fetch(engine)


def collect_until_error(engine: OpenAIEngine) -> tuple[list[bytes], BaseException | None]:
    async def main() -> tuple[list[bytes], BaseException | None]:
        got: list[bytes] = []
        try:
            async with engine.stream("x") as audio:
                async for chunk in audio.aiter_bytes():
                    got.append(chunk)
        except Exception as exc:
            return got, exc
        return got, None

    return anyio.run(main)


def test_a_drop_mid_body_is_stream_interrupted_after_the_audio_before_it_and_not_retried() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body = Chunks([OGG_HEAD, b"more audio"], httpx.RemoteProtocolError("peer closed"))
        return httpx.Response(200, stream=body, headers={"content-type": "audio/ogg"})

    engine, _ = make_engine(handler)
    got, error = collect_until_error(engine)
    assert b"".join(got) == OGG_HEAD + b"more audio"
    assert isinstance(error, StreamInterrupted)
    assert len(calls) == 1


def test_silence_mid_body_longer_than_the_read_timeout_is_stream_timeout() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = Chunks([OGG_HEAD], httpx.ReadTimeout("timed out"))
        return httpx.Response(200, stream=body, headers={"content-type": "audio/ogg"})

    engine, _ = make_engine(handler)
    got, error = collect_until_error(engine)
    assert got == [OGG_HEAD]
    assert isinstance(error, StreamTimeout)


def test_the_stream_can_be_iterated_only_once() -> None:
    engine, _ = make_engine(
        lambda r: httpx.Response(200, content=OGG_HEAD, headers={"content-type": "audio/ogg"})
    )

    async def main() -> None:
        async with engine.stream("x") as audio:
            async for _ in audio.aiter_bytes():
                pass
            with pytest.raises(UsageError):
                audio.aiter_bytes()

    anyio.run(main)


def test_timing_marks_are_in_order() -> None:
    engine, _ = make_engine(
        lambda r: httpx.Response(200, content=OGG_HEAD, headers={"content-type": "audio/ogg"})
    )

    async def main() -> list[float | None]:
        async with engine.stream("x") as audio:
            async for _ in audio.aiter_bytes():
                pass
            return [
                audio.started,
                audio.request_sent,
                audio.headers_received,
                audio.first_byte,
                audio.finished,
            ]

    marks = anyio.run(main)
    assert None not in marks
    assert marks == sorted(marks)  # type: ignore[type-var]
