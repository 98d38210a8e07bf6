"""The ``streamtts`` command: ``say``, ``play``, ``serve``.

Each subcommand lives in ``streamtts/_cli/<name>.py`` with two functions:
``add_arguments(parser)`` and ``run(args) -> int`` (the exit code). They are imported only when
used, so ``streamtts --help`` works without any native library.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

#: name -> one-line help. The module streamtts._cli.<name> implements it.
SUBCOMMANDS: dict[str, str] = {
    "say": "speak text (offline with the embedded engine, or through an OpenAI-compatible API)",
    "play": "play an audio stream (file, http(s) URL or '-') as it arrives",
    "serve": "run the local OpenAI-compatible speech server (with network impairment)",
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (imports each subcommand module to add its options)."""
    parser = argparse.ArgumentParser(
        prog="streamtts", description="Streaming text-to-speech that talks while text arrives."
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"streamtts {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f"streamtts._cli.{name}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``streamtts`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args._run(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
