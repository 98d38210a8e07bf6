"""``streamtts serve`` as a process: it serves the SDK's requests, with impairment flags."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest

from streamtts.engines import OpenAIEngine
from streamtts.errors import StreamInterrupted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamtts.cli",
            "serve",
            "--port",
            str(port),
            "--api-key",
            "k",
            "--disconnect-after",
            "3000",
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else "serve exited"
            try:
                httpx.get(f"{url}/v1/models", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "streamtts serve did not start"
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_serve_applies_its_impairment_flags_and_headers_override_them(served: str) -> None:
    async def fetch(headers: dict[str, str]) -> tuple[int, Exception | None]:
        async with OpenAIEngine(base_url=f"{served}/v1", api_key="k") as engine:
            n = 0
            try:
                async with engine.stream("Hello there.", format="pcm", extra_headers=headers) as a:
                    async for chunk in a.aiter_bytes():
                        n += len(chunk)
            except StreamInterrupted as exc:
                return n, exc
            return n, None

    cut, error = anyio.run(fetch, {})
    assert cut == 3000
    assert isinstance(error, StreamInterrupted)
    whole, error = anyio.run(fetch, {"X-Impair-Disconnect-After": "none"})
    assert error is None
    assert whole > 3000


def test_serve_requires_its_api_key(served: str) -> None:
    r = httpx.post(f"{served}/v1/audio/speech", json={"input": "hi"}, timeout=10)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "invalid_api_key"


def test_serve_refuses_bad_impairment_flags() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "streamtts.cli", "serve", "--page-duration", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "page_duration" in proc.stderr


def test_serve_also_serves_the_browser_page_and_its_relay(served: str) -> None:
    page = httpx.get(f"{served}/?key=k", timeout=10)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "relay.js" in page.text
    script = httpx.get(f"{served}/static/relay.js", timeout=10)
    assert script.status_code == 200
    assert "AudioDecoder" in script.text
