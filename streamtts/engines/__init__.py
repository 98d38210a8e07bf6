"""Speech engines: text in, an async stream of audio bytes in a declared format out.

* `OpenAIEngine` — any OpenAI-compatible ``/v1/audio/speech`` endpoint over httpx, streamed.
* `EspeakEngine` — the embedded espeak-ng, offline (extra ``streamtts[offline]``).
* `default_engine()` — the first when an API key or base URL is configured, else the second.
"""

from __future__ import annotations

import os

from .base import (
    REQUEST_FORMATS,
    UNSUPPORTED_FORMATS,
    AudioStream,
    Engine,
    check_request_format,
    estimate_duration,
    response_format_of,
)
from .espeak import ESPEAK_VOICES, EspeakAudio, EspeakEngine
from .openai import OpenAIEngine

__all__ = [
    "ESPEAK_VOICES",
    "REQUEST_FORMATS",
    "UNSUPPORTED_FORMATS",
    "AudioStream",
    "Engine",
    "EspeakAudio",
    "EspeakEngine",
    "OpenAIEngine",
    "check_request_format",
    "default_engine",
    "estimate_duration",
    "response_format_of",
]


def default_engine(*, api_key: str | None = None, base_url: str | None = None) -> Engine:
    """The engine to use when the caller did not choose one.

    `OpenAIEngine` when an API key or base URL is given or set in the environment
    (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``), otherwise the offline `EspeakEngine`.
    """
    if api_key or base_url or os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"):
        return OpenAIEngine(api_key=api_key, base_url=base_url)
    return EspeakEngine()
