"""The official ``openai`` SDK against the local server (uvicorn on 127.0.0.1), and its errors."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from support.loopback import serve_asgi
from support.oggtools import require_tool

from streamtts.engines import EspeakEngine
from streamtts.engines.base import AudioStream
from streamtts.engines.espeak import EspeakAudio
from streamtts.server import create_app
from streamtts.wav import WavReader

TEXT = "Hello from the local server. It speaks like OpenAI."
LONG_TEXT = " ".join(f"Sentence {i} of a long text, streamed as it is spoken." for i in range(20))


class RecordingEngine(EspeakEngine):
    """The embedded engine, keeping the streams it made (to read their synthesis marks)."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[AudioStream] = []
        self.closed: list[AudioStream] = []

    def stream(
        self, text: str, **kwargs: object
    ) -> contextlib.AbstractAsyncContextManager[AudioStream]:  # type: ignore[override]
        inner = super().stream(text, **kwargs)  # type: ignore[arg-type]

        @contextlib.asynccontextmanager
        async def recorded() -> AsyncIterator[AudioStream]:
            async with inner as audio:
                self.streams.append(audio)
                try:
                    yield audio
                finally:
                    self.closed.append(audio)

        return recorded()


@pytest.fixture(scope="module")
def engine() -> RecordingEngine:
    return RecordingEngine()


@pytest.fixture(scope="module")
def base_url(engine: RecordingEngine) -> Iterator[str]:
    with serve_asgi(create_app(engine)) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as c:
        yield c


def sdk_speech(
    client: openai.OpenAI, fmt: str, text: str = TEXT, **kw: object
) -> tuple[str, bytes]:
    with client.audio.speech.with_streaming_response.create(
        model="gpt-4o-mini-tts",
        voice="coral",
        input=text,
        response_format=fmt,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    ) as response:
        return response.headers["content-type"], b"".join(response.iter_bytes())


def test_sdk_opus_saves_a_file_that_opusdec_decodes_to_the_synthesized_length(
    client: openai.OpenAI, engine: RecordingEngine, tmp_path: Path
) -> None:
    content_type, data = sdk_speech(client, "opus")
    _, pcm = sdk_speech(client, "pcm")
    assert content_type == "audio/ogg"
    path = tmp_path / "speech.opus"
    path.write_bytes(data)
    subprocess.run([require_tool("opusinfo"), str(path)], check=True, capture_output=True)
    out = tmp_path / "speech.raw"
    subprocess.run(
        [require_tool("opusdec"), "--quiet", "--rate", "24000", "--float", str(path), str(out)],
        check=True,
        timeout=60,
    )
    decoded = np.fromfile(out, dtype="<f4")
    # The same text synthesized as PCM: same length within 20 ms (espeak varies by a few samples).
    assert abs(len(decoded) - len(pcm) // 2) <= 480
    assert float(np.sqrt(np.mean(decoded**2))) > 0.01


def test_sdk_wav_parses_at_24khz_mono(client: openai.OpenAI) -> None:
    content_type, data = sdk_speech(client, "wav")
    assert content_type == "audio/wav"
    reader = WavReader()
    frames = sum(len(b) for b in reader.feed(data) + reader.close())
    assert (reader.sample_rate, reader.channels) == (24000, 1)
    assert 1.5 < frames / 24000 < 8


def test_sdk_pcm_byte_count_is_even_and_matches_the_wav_duration(client: openai.OpenAI) -> None:
    content_type, pcm = sdk_speech(client, "pcm")
    _, wav = sdk_speech(client, "wav")
    assert content_type == "audio/pcm"
    assert len(pcm) % 2 == 0
    assert abs(len(pcm) - (len(wav) - 44)) <= 480  # same speech within 10 ms


def test_the_first_bytes_of_a_long_text_arrive_before_its_synthesis_has_finished(
    client: openai.OpenAI, engine: RecordingEngine
) -> None:
    engine.streams.clear()
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=LONG_TEXT, response_format="opus"
    ) as response:
        chunks = response.iter_bytes()
        first = next(chunks)
        first_arrived = time.monotonic()
        rest = b"".join(chunks)
    (audio,) = engine.streams
    assert isinstance(audio, EspeakAudio)
    assert first.startswith(b"OggS")
    assert rest
    assert audio.synthesis_finished is not None
    assert first_arrived < audio.synthesis_finished  # an order of events, not a duration


def test_the_models_endpoint_lists_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert "tts-1" in ids
    assert "gpt-4o-mini-tts" in ids


# --- client errors: OpenAI-shaped 4xx, never a 500 ------------------------------------------------


def post(base_url: str, **kwargs: object) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/audio/speech", timeout=30, **kwargs)  # type: ignore[arg-type]


def assert_openai_error(response: httpx.Response, status: int, param: str | None) -> str:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert isinstance(error["message"], str)
    assert error["message"]
    return str(error["message"])


@pytest.mark.parametrize("fmt", ["mp3", "aac", "flac"])
def test_unsupported_formats_are_400_saying_so(base_url: str, fmt: str) -> None:
    r = post(
        base_url, json={"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": fmt}
    )
    assert "not supported" in assert_openai_error(r, 400, "response_format")


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": "tts-1", "voice": "alloy"}, "input", "input"),
        ({"model": "tts-1", "voice": "alloy", "input": ""}, "input", "empty"),
        ({"model": "tts-1", "voice": "alloy", "input": "   "}, "input", "empty"),
        ({"model": "tts-1", "voice": "alloy", "input": 5}, "input", "string"),
        ({"model": "tts-1", "voice": "alloy", "input": "x" * 4097}, "input", "4096"),
        ({"model": "tts-1", "voice": "nobody", "input": "hi"}, "voice", "unknown voice"),
        (
            {"model": "tts-1", "input": "hi", "response_format": "ogg-vorbis"},
            "response_format",
            "unknown",
        ),
        ({"model": "tts-1", "input": "hi", "speed": 9}, "speed", "between"),
        ({"model": "tts-1", "input": "hi", "speed": "fast"}, "speed", "number"),
        ({"model": "tts-1", "input": "hi", "stream_format": "sse"}, "stream_format", "audio"),
        (["not", "an", "object"], None, "object"),
    ],
)
def test_invalid_requests_are_400_with_an_openai_error_body(
    base_url: str, body: object, param: str | None, words: str
) -> None:
    message = assert_openai_error(post(base_url, json=body), 400, param)
    assert words in message


def test_bad_json_is_400(base_url: str) -> None:
    r = post(base_url, content=b"{not json", headers={"content-type": "application/json"})
    assert "JSON" in assert_openai_error(r, 400, None)


def test_a_body_over_the_limit_is_refused_with_413(base_url: str) -> None:
    r = post(base_url, content=b"x" * 70_000, headers={"content-type": "application/json"})
    assert_openai_error(r, 413, None)


def test_a_bad_impairment_header_is_400(base_url: str) -> None:
    r = post(base_url, json={"input": "hi"}, headers={"X-Impair-Rate": "fast"})
    assert "X-Impair-Rate" in assert_openai_error(r, 400, None)


def test_unknown_routes_and_methods_get_openai_shaped_errors(base_url: str) -> None:
    assert_openai_error(httpx.get(f"{base_url}/v1/nothing"), 404, None)
    assert_openai_error(httpx.get(f"{base_url}/v1/audio/speech"), 405, None)


def test_with_an_api_key_requests_without_it_are_401_and_with_it_work() -> None:
    with serve_asgi(create_app(api_key="sekret")) as url:
        body = {"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "pcm"}
        r = post(url, json=body)
        assert_openai_error(r, 401, None)
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert_openai_error(
            post(url, json=body, headers={"Authorization": "Bearer wrong"}), 401, None
        )
        with (
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0) as bad,
            pytest.raises(openai.AuthenticationError),
        ):
            bad.audio.speech.create(model="tts-1", voice="alloy", input="hi")
        ok = post(url, json=body, headers={"Authorization": "Bearer sekret"})
        assert ok.status_code == 200
        assert len(ok.content) > 1000


def test_a_client_hanging_up_stops_the_synthesis(base_url: str, engine: RecordingEngine) -> None:
    engine.streams.clear()
    engine.closed.clear()
    body = {"model": "tts-1", "voice": "alloy", "input": LONG_TEXT * 3, "response_format": "pcm"}
    with httpx.stream("POST", f"{base_url}/v1/audio/speech", json=body, timeout=30) as r:
        assert r.status_code == 200
        next(r.iter_raw())
    deadline = time.monotonic() + 20
    while not engine.closed:  # the server notices the hang-up and leaves the engine's stream
        assert time.monotonic() < deadline, "the server kept streaming to nobody"
        time.sleep(0.02)
    (audio,) = engine.closed
    assert isinstance(audio, EspeakAudio)
    assert audio.synthesis_finished is None  # stopped midway, not synthesized to the end


def test_extra_routes_are_served_by_the_same_app() -> None:
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("relay here")

    with serve_asgi(create_app(extra_routes=[Route("/relay", hello)])) as url:
        assert httpx.get(f"{url}/relay").text == "relay here"
        assert httpx.get(f"{url}/v1/models").status_code == 200
