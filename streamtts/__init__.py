"""streamtts: text-to-speech that talks while the text is still being written."""

from __future__ import annotations

from .errors import (
    APIError,
    AudioDeviceError,
    AuthenticationError,
    BackendUnavailable,
    BadRequestError,
    ConnectError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterrupted,
    StreamTimeout,
    StreamTTSError,
    TransportError,
    UnsupportedFormat,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AudioDeviceError",
    "AuthenticationError",
    "BackendUnavailable",
    "BadRequestError",
    "ConnectError",
    "ProtocolError",
    "RateLimitError",
    "ServerError",
    "StreamInterrupted",
    "StreamTTSError",
    "StreamTimeout",
    "TransportError",
    "UnsupportedFormat",
    "UsageError",
    "__version__",
]
