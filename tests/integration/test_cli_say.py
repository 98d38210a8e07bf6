"""``streamtts say``: offline to a file, through the local server, and played into a null sink."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.audio import NullSink, first_nonzero
from support.loopback import serve_asgi
from support.oggtools import require_tool

from streamtts.server import create_app
from streamtts.wav import WavReader


def offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(extra)
    return env


def say(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamtts.cli", "say", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=env or offline_env(),
        timeout=120,
        check=False,
    )


def opus_seconds(path: Path, tmp_path: Path) -> float:
    raw = tmp_path / f"{path.stem}.raw"
    subprocess.run(
        [require_tool("opusdec"), "--quiet", "--rate", "48000", "--float", str(path), str(raw)],
        check=True,
        timeout=60,
    )
    return len(np.fromfile(raw, dtype="<f4")) / 48000


def sounding_seconds(samples: np.ndarray, threshold: float = 1e-3) -> float:
    """Seconds from the first to the last sample above *threshold* (48 kHz)."""
    start = first_nonzero(samples, threshold)
    assert start is not None, "silence: nothing was played"
    end = len(samples) - (first_nonzero(samples[::-1], threshold) or 0)
    return (end - start) / 48000


def test_say_offline_saves_an_opus_file_that_opus_tools_accept(tmp_path: Path) -> None:
    out = tmp_path / "x.opus"
    proc = say("Hello world", "--no-play", "--save", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "engine espeak-ng" in proc.stderr
    info = subprocess.run(
        [require_tool("opusinfo"), str(out)], capture_output=True, text=True, check=False
    )
    assert info.returncode == 0, info.stdout + info.stderr
    assert 0.5 < opus_seconds(out, tmp_path) < 3.0


def test_say_reads_stdin_and_saves_wav_chosen_by_the_suffix(tmp_path: Path) -> None:
    out = tmp_path / "x.wav"
    proc = say("-", "--no-play", "--save", str(out), "--voice", "onyx", stdin="Text from stdin.")
    assert proc.returncode == 0, proc.stderr
    reader = WavReader()
    frames = sum(len(b) for b in reader.feed(out.read_bytes()) + reader.close())
    assert reader.sample_rate == 24000
    assert frames > 24000 // 2


def test_say_refuses_a_format_that_contradicts_the_file_name(tmp_path: Path) -> None:
    proc = say("Hi", "--no-play", "--format", "wav", "--save", str(tmp_path / "x.opus"))
    assert proc.returncode == 1
    assert "does not match" in proc.stderr


def test_say_through_the_local_server_with_the_openai_engine(tmp_path: Path) -> None:
    out = tmp_path / "x.pcm"
    with serve_asgi(create_app()) as url:
        proc = say(
            "Hello over HTTP.",
            "--engine",
            "openai",
            "--base-url",
            f"{url}/v1",
            "--api-key",
            "x",
            "--no-play",
            "--save",
            str(out),
            "--events",
        )
    assert proc.returncode == 0, proc.stderr
    assert "engine openai" in proc.stderr
    data = out.read_bytes()
    assert len(data) % 2 == 0
    assert len(data) > 24000
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["event"] for e in events] == ["ResponseStarted", "ResponseFinished"]
    assert events[0]["format"] == "pcm"
    assert events[0]["sample_rate"] == 24000
    assert events[1]["bytes"] == len(data)


def test_say_with_no_audio_device_says_so_and_suggests_save() -> None:
    proc = say("Hello", env=offline_env(PULSE_SERVER="unix:/nonexistent/socket"))
    assert proc.returncode == 1
    assert "no audio output" in proc.stderr
    assert "--save" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.device
def test_say_plays_speech_of_the_expected_duration_into_the_sink(
    null_sink: NullSink, tmp_path: Path
) -> None:
    saved = tmp_path / "played.opus"
    with null_sink.record() as recording:  # parec is stopped even if say() raises
        proc = say(
            "Hello world, this is streamtts.",
            "--save",
            str(saved),
            "--events",
            env=offline_env(PULSE_SINK=null_sink.name),
        )
        samples = recording.stop(tail=0.3)[:, 0]
    assert proc.returncode == 0, proc.stderr
    assert "played" in proc.stderr
    kinds = [json.loads(line)["event"] for line in proc.stdout.splitlines()]
    assert "PlaybackStarted" in kinds
    assert "PlaybackFinished" in kinds
    # The sound in the sink spans what was received (decoded by opusdec), first to last sound.
    played = sounding_seconds(samples)
    opus_seconds(saved, tmp_path)
    expected = sounding_seconds(np.fromfile(tmp_path / "played.raw", dtype="<f4"))
    assert played == pytest.approx(expected, abs=0.05)
    assert float(np.sqrt(np.mean(samples**2))) > 0.005  # speech, not silence
