"""The documentation's examples that play audio run as written, each in its own interpreter,
into a private PulseAudio null sink (recorded: the example must really be heard).

``server`` examples talk to the local OpenAI-compatible server on 127.0.0.1 instead of OpenAI:
``OPENAI_BASE_URL`` points at it, and the OpenAI URL and placeholder key written in an example
are replaced by it. The server also answers ``/v1/chat/completions`` with a canned streamed
reply, so the LLM example runs end to end with the real ``openai`` SDK.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from support.audio import NullSink
from support.docexamples import Example, examples
from support.loopback import serve_asgi

pytestmark = pytest.mark.device

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent

#: The canned chat reply, streamed one word at a time as an LLM would.
CHAT_REPLY = "The sky turns pink. Then the sun appears."

#: Seconds an example may take: each speaks a few seconds of audio; the rest is start-up.
EXAMPLE_TIMEOUT = 60

#: Peak level that proves speech was played (the null sink records exact zeros otherwise).
HEARD = 0.01

RUNNER = """
import sys
sys.path[:0] = [{tests!r}, {root!r}]
from support.docexamples import imported_names, install_pending_exports
code = open({path!r}).read()
install_pending_exports(imported_names(code))
exec(compile(code, {name!r}, "exec"), {{"__name__": "__main__"}})
"""


def _chat_route() -> object:
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        assert body.get("stream") is True

        async def events() -> AsyncIterator[bytes]:
            words = CHAT_REPLY.split(" ")
            for i, word in enumerate(words):
                piece = word if i == 0 else " " + word
                chunk = {
                    "id": "chatcmpl-docs",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": body.get("model", "gpt-4o-mini"),
                    "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                }
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            done = {
                "id": "chatcmpl-docs",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body.get("model", "gpt-4o-mini"),
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
            yield f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    return Route("/v1/chat/completions", chat, methods=["POST"])


@pytest.fixture(scope="module")
def local_server() -> Iterator[str]:
    """The local speech server (embedded espeak-ng) plus the canned chat; yields ``.../v1``."""
    from streamtts.engines import EspeakEngine
    from streamtts.server import create_app

    app = create_app(EspeakEngine(), extra_routes=[_chat_route()])  # type: ignore[list-item]
    with serve_asgi(app) as url:
        yield url + "/v1"


def _run(example: Example, sink: NullSink, tmp_path: Path, env: dict[str, str]) -> str:
    script = tmp_path / "example.py"
    script.write_text(example.code)
    runner = RUNNER.format(tests=str(TESTS), root=str(ROOT), path=str(script), name=example.id)
    with sink.record() as recording:
        proc = subprocess.run(
            [sys.executable, "-c", runner],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_TIMEOUT,
        )
        audio = recording.stop()
    assert proc.returncode == 0, f"{example.id} failed:\n{proc.stdout}\n{proc.stderr}"
    assert float(np.max(np.abs(audio), initial=0.0)) > HEARD, f"{example.id}: nothing was heard"
    return proc.stdout


def _offline_env(sink: NullSink) -> dict[str, str]:
    env = sink.env()
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(name, None)  # the default engine is then the embedded espeak-ng
    return env


def _check_output(example: Example, stdout: str) -> None:
    """What an example prints, where the page says what it shows."""
    if "speaker.stop()" in example.code:
        assert "interrupted: True" in stdout
        assert "stopped in sentence" in stdout
    if "SentenceStarted" in example.code:
        assert stdout.count("now saying:") == 3
    if "chat.completions" in example.code:
        assert CHAT_REPLY in stdout
    if "first_sound_latency" in example.code:
        assert "first sound" in stdout
    if "RelaySink" in example.code:
        queued = int(stdout.split(" messages for the listener")[0].split()[-1])
        assert queued > 2  # a head, packets and an end reached the listener
        assert "none dropped: True" in stdout


@pytest.mark.parametrize(
    "example", [e for e in examples() if e.mode == "device"], ids=lambda e: e.id
)
def test_device_example_plays_as_written(
    example: Example, null_sink: NullSink, tmp_path: Path
) -> None:
    stdout = _run(example, null_sink, tmp_path, _offline_env(null_sink))
    _check_output(example, stdout)


@pytest.mark.parametrize(
    "example", [e for e in examples() if e.mode == "server"], ids=lambda e: e.id
)
def test_server_example_plays_against_the_local_server(
    example: Example, null_sink: NullSink, local_server: str, tmp_path: Path
) -> None:
    code = (
        example.code.replace("https://api.openai.com/v1", local_server)
        .replace("http://127.0.0.1:8000/v1", local_server)
        .replace("sk-...", "docs-test-key")
    )
    local = Example(example.page, example.line, code, example.mode)
    env = {**null_sink.env(), "OPENAI_BASE_URL": local_server, "OPENAI_API_KEY": "docs-test-key"}
    stdout = _run(local, null_sink, tmp_path, env)
    _check_output(example, stdout)
