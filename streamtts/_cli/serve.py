"""``streamtts serve``: the local OpenAI-compatible speech server, with network impairment."""

from __future__ import annotations

import argparse
import sys

from ..errors import StreamTTSError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add this subcommand's options."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (8000)")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY'")
    parser.add_argument(
        "--sample-rate",
        type=int,
        choices=(24000, 48000),
        default=24000,
        help="rate of Opus and WAV responses (pcm is always 24 kHz, as OpenAI's)",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (info)")
    imp = parser.add_argument_group(
        "network impairment (each can be overridden per request: X-Impair-First-Byte-Delay…)"
    )
    imp.add_argument("--first-byte-delay", type=float, default=0.0, metavar="S")
    imp.add_argument("--rate", type=float, metavar="BYTES_PER_S", help="throughput cap")
    imp.add_argument(
        "--realtime", type=float, metavar="X", help="throughput cap, multiple of real time"
    )
    imp.add_argument("--chunk-size", type=int, metavar="BYTES", help="largest write")
    imp.add_argument("--jitter", type=float, default=0.0, metavar="S", help="random delay/write")
    imp.add_argument("--stall-at", type=float, metavar="S", help="freeze the link at S seconds…")
    imp.add_argument("--stall-for", type=float, default=0.0, metavar="S", help="…for S seconds")
    imp.add_argument("--disconnect-after", type=int, metavar="BYTES", help="drop the connection")
    imp.add_argument(
        "--page-duration",
        type=float,
        metavar="S",
        help="audio per Ogg page, 0 (one packet) to 2 s (OpenAI: about 1)",
    )
    imp.add_argument("--seed", type=int, help="seed of the jitter")


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; returns the exit code."""
    from ..engines import EspeakEngine
    from ..server import Impairment, serve
    from ..server.relay_ws import relay_routes

    try:
        impairment = Impairment(
            first_byte_delay=args.first_byte_delay,
            rate=args.rate,
            realtime=args.realtime,
            chunk_size=args.chunk_size,
            jitter=args.jitter,
            stall_at=args.stall_at,
            stall_for=args.stall_for,
            disconnect_after=args.disconnect_after,
            page_duration=args.page_duration,
            seed=args.seed,
        )
    except ValueError as exc:
        print(f"streamtts serve: error: {exc}", file=sys.stderr)
        return 2
    try:
        engine = EspeakEngine(sample_rate=args.sample_rate)
        routes = relay_routes(engine=engine, impairment=impairment, api_key=args.api_key)
        print(
            f"streamtts: serving {engine.describe()} on http://{args.host}:{args.port}/v1"
            f" (speech API) and http://{args.host}:{args.port}/ (browser page)",
            file=sys.stderr,
        )
        serve(
            args.host,
            args.port,
            engine=engine,
            api_key=args.api_key,
            impairment=impairment,
            log_level=args.log_level,
            extra_routes=routes,
        )
    except StreamTTSError as exc:
        print(f"streamtts serve: error: {exc}", file=sys.stderr)
        return 1
    return 0
