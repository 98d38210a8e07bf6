"""``streamtts play``: files, stdin and URLs into a private null sink; clear one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.audio import NullSink, assert_same_audio
from support.signals import float_wav, tone
from support.throttled import ThrottledServer

pytestmark = pytest.mark.device

#: See DEVICE_LATENCY in test_player.py: a busy machine must not break exact comparisons.
DEVICE_LATENCY = "0.25"


def streamtts(
    *args: str, sink: NullSink | None = None, stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m streamtts.cli ARGS`` (a hang fails the test through the timeout)."""
    return subprocess.run(
        [sys.executable, "-m", "streamtts.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env=env if env is not None else (sink.env() if sink is not None else None),
        check=False,
    )


def error_line(proc: subprocess.CompletedProcess[bytes]) -> str:
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1, proc.stderr.decode()
    assert lines[0].startswith("streamtts play: error: ")
    return lines[0]


def test_a_file_plays_exactly_and_events_are_json_lines(
    null_sink: NullSink, tmp_path: Path
) -> None:
    x = tone(0.6)
    path = tmp_path / "a.wav"
    path.write_bytes(float_wav(x))
    with null_sink.record() as rec:
        proc = streamtts("play", str(path), "--events", "--device-latency", DEVICE_LATENCY,
                         sink=null_sink)
        recording = rec.stop()
    assert proc.returncode == 0, proc.stderr.decode()
    events = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.index("PlaybackStarted") < kinds.index("PlaybackFinished")
    finished = events[kinds.index("PlaybackFinished")]
    assert finished["frames"] == len(x)
    assert finished["underruns"] == 0
    assert_same_audio(recording, x)


def test_stdin_plays_raw_pcm_at_the_given_rate(null_sink: NullSink) -> None:
    x = tone(0.5, 600)
    pcm = np.round(x[:, 0] * 32767).astype("<i2")
    with null_sink.record() as rec:
        proc = streamtts("play", "-", "--format", "pcm", "--rate", "48000", "--device-latency",
                         DEVICE_LATENCY, sink=null_sink, stdin=pcm.tobytes())
        recording = rec.stop()
    assert proc.returncode == 0, proc.stderr.decode()
    assert_same_audio(recording, (pcm.astype(np.float32) / 32768).reshape(-1, 1))


def test_a_url_is_streamed_as_it_arrives(null_sink: NullSink) -> None:
    x = tone(0.8, 350)
    body = float_wav(x)
    with ThrottledServer.for_audio(body, seconds=0.8, speed=2.0) as server, null_sink.record() \
            as rec:
        proc = streamtts("play", server.url, "--device-latency", DEVICE_LATENCY, sink=null_sink)
        recording = rec.stop()
    assert proc.returncode == 0, proc.stderr.decode()
    assert server.requests == 1
    assert_same_audio(recording, x)


def test_an_http_error_is_one_line_and_a_failure_exit(pulse_server: None) -> None:
    server = ThrottledServer(b'{"error": "no such voice"}', bytes_per_second=1e6, status=404,
                             content_type="application/json")
    with server:
        proc = streamtts("play", server.url)
    assert proc.returncode == 1
    line = error_line(proc)
    assert "HTTP 404" in line
    assert "no such voice" in line


def test_a_missing_file_is_one_line_and_a_failure_exit(tmp_path: Path) -> None:
    proc = streamtts("play", str(tmp_path / "nothing.opus"))
    assert proc.returncode == 1
    assert "no such file" in error_line(proc)


def test_a_file_that_is_not_audio_is_named_in_the_error(tmp_path: Path) -> None:
    page = tmp_path / "page.opus"
    page.write_text("<!DOCTYPE html><html><body>Sign in to the Wi-Fi</body></html>")
    proc = streamtts("play", str(page))
    assert proc.returncode == 1
    assert "HTML" in error_line(proc)


def test_no_sound_server_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(float_wav(tone(0.1)))
    env = {"PULSE_SERVER": f"unix:{tmp_path}/no-such-socket", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    proc = streamtts("play", str(path), env=env)
    assert proc.returncode == 1
    line = error_line(proc)
    assert "No audio device or sound server" in line


def test_list_devices_shows_the_default_output(pulse_server: None) -> None:
    proc = streamtts("play", "--list-devices")
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert any(line.startswith("*") for line in lines)
    assert any("default" in line for line in lines)
