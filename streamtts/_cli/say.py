"""``streamtts say TEXT``: speak text, offline (espeak-ng) or through an OpenAI-compatible API.

The audio plays as it arrives; ``--save FILE`` writes the received stream to a file as it
arrives, ``--no-play`` skips the device, ``--events`` prints JSON lines on stdout. Which engine
was used is said on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Literal

import anyio

from ..engines import EspeakEngine, OpenAIEngine, default_engine, estimate_duration
from ..engines.base import AudioStream, Engine
from ..errors import AudioDeviceError, BackendUnavailable, StreamTTSError, UsageError

#: File suffix → ``response_format`` for ``--save`` without ``--format``.
_SUFFIX_FORMATS = {".ogg": "opus", ".opus": "opus", ".oga": "opus", ".wav": "wav", ".pcm": "pcm"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's options."""
    parser.add_argument("text", help="the text to speak, or '-' to read it from stdin")
    parser.add_argument("--voice", help="voice (OpenAI names work with every engine)")
    parser.add_argument("--model", help="model of the HTTP engine (default gpt-4o-mini-tts)")
    parser.add_argument(
        "--format",
        choices=("opus", "wav", "pcm"),
        help="audio format to request (default: from the --save suffix, else opus)",
    )
    parser.add_argument("--speed", type=float, help="speaking rate, 0.25–4.0 (default 1.0)")
    parser.add_argument("--instructions", help="style instructions (models that support them)")
    parser.add_argument(
        "--engine",
        choices=("auto", "openai", "espeak"),
        default="auto",
        help="auto: OpenAI-compatible when OPENAI_API_KEY or a base URL is set, else espeak-ng",
    )
    parser.add_argument("--base-url", help="API root of the HTTP engine (default OPENAI_BASE_URL)")
    parser.add_argument("--api-key", help="API key of the HTTP engine (default OPENAI_API_KEY)")
    parser.add_argument("--device", help="output device index or (part of its) name")
    parser.add_argument(
        "--latency",
        default="adaptive",
        help="start policy: adaptive (default), low, or seconds of preroll",
    )
    parser.add_argument(
        "--save", metavar="FILE", help="write the received stream to FILE as it arrives"
    )
    parser.add_argument("--no-play", action="store_true", help="do not play (use with --save)")
    parser.add_argument("--events", action="store_true", help="print events as JSON lines")


def _fail(message: str) -> int:
    print(f"streamtts say: error: {message}", file=sys.stderr)
    return 1


def _choose_engine(args: argparse.Namespace) -> Engine:
    if args.engine == "espeak":
        return EspeakEngine()
    if args.engine == "openai":
        return OpenAIEngine(api_key=args.api_key, base_url=args.base_url)
    return default_engine(api_key=args.api_key, base_url=args.base_url)


def _choose_format(args: argparse.Namespace) -> str:
    implied = _SUFFIX_FORMATS.get(Path(args.save).suffix.lower()) if args.save else None
    if args.format and implied and args.format != implied:
        raise UsageError(f"--format {args.format} does not match --save {args.save}")
    return str(args.format or implied or "opus")


def _latency(value: str) -> Literal["low", "adaptive"] | float:
    if value == "low":
        return "low"
    if value == "adaptive":
        return "adaptive"
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"--latency must be low, adaptive or seconds, not {value!r}") from None


def _device(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


def _emit(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit code."""
    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        return _fail("no text to speak")
    try:
        fmt = _choose_format(args)
        latency = _latency(args.latency)
        engine = _choose_engine(args)
    except StreamTTSError as exc:
        return _fail(str(exc))
    try:
        return anyio.run(_say, args, engine, text, fmt, latency)
    except Exception as raised:
        cause = _root_cause(raised)
        if isinstance(cause, AudioDeviceError):
            return _fail(f"no audio output: {cause}\n  (to keep the audio: --save FILE --no-play)")
        if isinstance(cause, BackendUnavailable):
            return _fail(f"{cause}\n  (without audio output: --save FILE --no-play)")
        if isinstance(cause, StreamTTSError):
            return _fail(f"{type(cause).__name__}: {cause}")
        raise


def _root_cause(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-exception groups from task groups."""
    while True:
        inner = getattr(exc, "exceptions", None)
        if not isinstance(inner, tuple) or len(inner) != 1:
            return exc
        exc = inner[0]


async def _say(
    args: argparse.Namespace,
    engine: Engine,
    text: str,
    fmt: str,
    latency: Literal["low", "adaptive"] | float,
) -> int:
    async with engine:
        voice = args.voice
        described = engine.describe()
        if isinstance(engine, EspeakEngine):
            voice_id = await engine.resolve_voice(voice)
            described += f", voice {voice or engine.voice} → {voice_id}"
        else:
            described += f", voice {voice or getattr(engine, 'voice', '?')}"
        print(f"streamtts: engine {described}, format {fmt}", file=sys.stderr)
        async with engine.stream(
            text,
            voice=voice,
            format=fmt,
            speed=args.speed,
            instructions=args.instructions,
            model=args.model,
        ) as audio:
            if args.events:
                _emit(
                    {
                        "event": "ResponseStarted",
                        "time": time.monotonic(),
                        "engine": engine.name,
                        "format": audio.format,
                        "content_type": audio.content_type,
                        "sample_rate": audio.sample_rate,
                        **audio.timings(),
                    }
                )
            save = await anyio.open_file(args.save, "wb") if args.save else None
            try:
                await _consume(args, audio, save, text, latency)
            finally:
                if save is not None:
                    with anyio.CancelScope(shield=True):
                        await save.aclose()
            if args.events:
                _emit(
                    {
                        "event": "ResponseFinished",
                        "time": time.monotonic(),
                        "bytes": audio.bytes_received,
                        **audio.timings(),
                    }
                )
    return 0


async def _consume(
    args: argparse.Namespace,
    audio: AudioStream,
    save: anyio.AsyncFile[bytes] | None,
    text: str,
    latency: Literal["low", "adaptive"] | float,
) -> None:
    async def body() -> Any:
        async for chunk in audio.aiter_bytes():
            if save is not None:
                await save.write(chunk)
                await save.flush()
            yield chunk

    if args.no_play:
        async for _ in body():
            pass
        if args.save:
            print(f"streamtts: saved {audio.bytes_received} bytes to {args.save}", file=sys.stderr)
        return

    from ..player import Player

    pcm = audio.format == "pcm"
    # The event printer ends when the player closes (its event stream ends then).
    async with (
        anyio.create_task_group() as tg,
        Player(device=_device(args.device), latency=latency) as player,
    ):
        if args.events:
            events = player.events()

            async def print_events() -> None:
                async for event in events:
                    _emit(event.to_dict())

            tg.start_soon(print_events)
        result = await player.play(
            body(),
            format=audio.format,
            expected_duration=estimate_duration(text, args.speed),
            pcm_rate=audio.sample_rate if pcm else None,
            pcm_channels=audio.channels if pcm else None,
            pcm_format=audio.sample_format if pcm else None,
        )
    first = result.first_sound_latency
    print(
        f"streamtts: played {result.duration:.2f} s"
        + (f", first sound after {first:.3f} s" if first is not None else "")
        + f", {result.underruns} underruns",
        file=sys.stderr,
    )
