"""The local OpenAI-compatible speech server (``streamtts serve``) and its network impairment.

Starlette and uvicorn are the optional extra ``streamtts[server]``; they are imported only when
an app is created or served, so importing this package needs neither.
"""

from __future__ import annotations

from .app import MAX_BODY_BYTES, MAX_INPUT_CHARS, MODELS, create_app, parse_speech_request
from .impair import Impairment, audio_clock, impair
from .run import serve

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_INPUT_CHARS",
    "MODELS",
    "Impairment",
    "audio_clock",
    "create_app",
    "impair",
    "parse_speech_request",
    "serve",
]
