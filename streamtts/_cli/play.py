"""``streamtts play SOURCE``: play a file, an http(s) URL or stdin as the bytes arrive."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal

import anyio

if TYPE_CHECKING:
    from ..player import Player

Latency = Literal["adaptive", "low"] | float

__all__ = ["add_arguments", "run"]

#: Refresh period of the live status line on a terminal. 100 ms reads as "live" and costs
#: nothing; faster only flickers.
STATUS_INTERVAL = 0.1

#: Bytes read at once from stdin.
STDIN_CHUNK = 16384


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's options."""
    parser.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help="audio file, http(s) URL (streamed GET) or '-' for stdin; Ogg Opus, WAV or raw PCM",
    )
    parser.add_argument(
        "--format",
        choices=["opus", "wav", "pcm"],
        help="the stream's format (default: detected from its first bytes / Content-Type)",
    )
    parser.add_argument(
        "--rate", type=int, default=None, help="sample rate of raw PCM (default 24000)"
    )
    parser.add_argument(
        "--channels", type=int, default=None, help="channels of raw PCM (default 1)"
    )
    parser.add_argument(
        "--device", help="output device: index or (part of its) name (default: system default)"
    )
    parser.add_argument(
        "--list-devices", action="store_true", help="list the output devices and exit"
    )
    parser.add_argument(
        "--latency",
        default="adaptive",
        metavar="adaptive|low|SECONDS",
        help="start policy: adaptive (default), low, or a fixed preroll in seconds",
    )
    parser.add_argument(
        "--device-latency",
        default=None,
        metavar="low|high|SECONDS",
        help="output latency of the device (default 0.1 s: safe on a busy machine)",
    )
    parser.add_argument(
        "--expected-duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="expected audio length: lets the adaptive start play slow links through",
    )
    parser.add_argument(
        "--events", action="store_true", help="print each playback event as a JSON line on stdout"
    )


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit code."""
    from ..errors import StreamTTSError

    try:
        if args.list_devices:
            return _list_devices()
        if not args.source:
            _error("SOURCE is required (a file, an http(s) URL or '-')")
            return 2
        source = args.source
        if source != "-" and not source.startswith(("http://", "https://")):
            if not os.path.exists(source):
                _error(f"no such file: {source}")
                return 1
            if not os.path.isfile(source):
                _error(f"not a file: {source}")
                return 1
        latency = _parse_latency(args.latency)
        if latency is None:
            _error(f"--latency must be 'adaptive', 'low' or seconds, not {args.latency!r}")
            return 2
        device_latency = _parse_device_latency(args.device_latency)
        if device_latency is None:
            _error(f"--device-latency must be 'low', 'high' or seconds, not "
                   f"{args.device_latency!r}")
            return 2
        return anyio.run(_play, args, latency, device_latency)
    except StreamTTSError as exc:
        _error(str(exc))
        return 1
    except OSError as exc:
        _error(f"{exc.strerror or exc}: {exc.filename or args.source}")
        return 1


def _error(message: str) -> None:
    print(f"streamtts play: error: {' '.join(message.split())}", file=sys.stderr)


def _parse_latency(text: str) -> Latency | None:
    if text == "adaptive":
        return "adaptive"
    if text == "low":
        return "low"
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 else None


def _parse_device_latency(text: str | None) -> str | float | None:
    from ..device import DEVICE_LATENCY

    if text is None:
        return DEVICE_LATENCY
    if text in ("low", "high"):
        return text
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value > 0 else None


def _list_devices() -> int:
    from ..device import list_output_devices

    devices = list_output_devices()
    if not devices:
        _error("no output devices found (is a sound server running? scripts/pulse start)")
        return 1
    for dev in devices:
        mark = "*" if dev.is_default else " "
        print(
            f"{mark} {dev.index:3d}  {dev.name}  ({dev.hostapi}, {dev.channels} ch, "
            f"{dev.default_samplerate:g} Hz)"
        )
    return 0


async def _play(args: argparse.Namespace, latency: Latency, device_latency: str | float) -> int:
    from ..player import Player

    device: int | str | None = args.device
    if isinstance(device, str) and device.isdigit():
        device = int(device)
    source: str = args.source
    error: Exception | None = None
    code = 1
    async with Player(device, latency=latency, device_latency=device_latency) as player:
        status = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            if args.events:
                tg.start_soon(_print_events, player)
            if sys.stderr.isatty():
                tg.start_soon(_status_line, player, status)
            try:
                code = await _play_source(player, source, args)
            except Exception as exc:  # raised below, outside the task group (no group)
                error = exc
            finally:
                status.cancel()
                await player.aclose()  # ends the event stream: the printer drains it and stops
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
    if error is not None:
        raise error
    return code


async def _play_source(player: Player, source: str, args: argparse.Namespace) -> int:
    """Play SOURCE; errors are raised as streamtts errors (mapped by `run`)."""
    import httpx

    from ..errors import ConnectError, StreamTimeout, TransportError

    options = {
        "format": args.format,
        "expected_duration": args.expected_duration,
        "pcm_rate": args.rate,
        "pcm_channels": args.channels,
    }
    if source == "-":
        await player.play(_stdin_chunks(), **options)
        return 0
    if not source.startswith(("http://", "https://")):
        await player.play(source, **options)
        return 0
    timeout = httpx.Timeout(30.0, connect=10.0)
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=True) as client,
            client.stream("GET", source) as response,
        ):
            if response.status_code >= 400:
                body = (await response.aread())[:300].decode("utf-8", "replace")
                _error(f"HTTP {response.status_code} from {source}: {body}")
                return 1
            await player.play(response, **options)
    except httpx.ConnectError as exc:
        raise ConnectError(f"cannot connect to {source}: {exc}") from exc
    except httpx.TimeoutException as exc:
        raise StreamTimeout(f"no answer from {source}: {exc}") from exc
    except httpx.HTTPError as exc:
        raise TransportError(f"{source}: {exc}") from exc
    return 0


async def _stdin_chunks() -> AsyncIterator[bytes]:
    stdin = anyio.wrap_file(sys.stdin.buffer)
    while chunk := await stdin.read(STDIN_CHUNK):
        yield chunk


async def _print_events(player: Player) -> None:
    async with player.events() as events:
        async for event in events:
            print(json.dumps(event.to_dict()), flush=True)


async def _status_line(player: Player, scope: anyio.CancelScope) -> None:
    with scope:
        while True:
            s = player.stats()
            rate = f" · arriving {s.arrival_rate:.1f}× real time" if s.arrival_rate else ""
            state = "playing" if s.playing else ("buffering" if s.buffered_ms else "waiting")
            sys.stderr.write(
                f"\r\x1b[K{state} · buffered {s.buffered_ms:5.0f} ms · underruns {s.underruns}"
                f" ({s.underrun_ms:.0f} ms){rate}"
            )
            sys.stderr.flush()
            await anyio.sleep(STATUS_INTERVAL)
