"""The one error tree of streamtts.

```
StreamTTSError
├── ProtocolError (also ValueError) ........ the remote data is not what it claims to be
│   └── UnsupportedFormat .................. well-formed, but nothing here can play it
├── TransportError ......................... the network failed us
│   ├── ConnectError ....................... could not reach the server
│   ├── StreamTimeout ...................... no byte for longer than the read timeout
│   └── StreamInterrupted .................. the connection dropped mid-response
├── APIError ............................... the server answered with an error status
│   ├── AuthenticationError ................ 401/403: missing or wrong API key
│   ├── BadRequestError .................... 400/404/422: the server's own message
│   ├── RateLimitError ..................... 429 after the retries
│   └── ServerError ........................ 5xx after the retries
├── AudioDeviceError ....................... no device, device lost, PortAudio failure
├── BackendUnavailable (also ImportError) .. a system library / extra is not installed
└── UsageError (also RuntimeError) ......... the API was called wrongly
```

Underruns, resyncs, CRC mismatches and holes are *events* (`streamtts.events`), never exceptions:
they describe the stream, and playback carries on.
"""

from __future__ import annotations

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
]


class StreamTTSError(Exception):
    """Base class of every error raised by streamtts."""


class ProtocolError(StreamTTSError, ValueError):
    """The remote data cannot be used: it holds no valid stream of the expected kind.

    Damage inside a valid stream is reported as events instead; this is raised only when there is
    nothing usable (e.g. an HTML page where audio was expected).
    """


class UnsupportedFormat(ProtocolError):
    """A well-formed stream in a format or variant streamtts cannot play (e.g. MP3, Opus mapping
    family 255)."""


class TransportError(StreamTTSError):
    """The network failed: the audio received before the failure is still played."""


class ConnectError(TransportError):
    """The server could not be reached (refused, DNS failure, TLS failure)."""


class StreamTimeout(TransportError):
    """No data arrived for longer than the configured timeout."""


class StreamInterrupted(TransportError):
    """The connection was closed before the response was complete."""


class APIError(StreamTTSError):
    """The server answered with an error status.

    Attributes:
        status_code: The HTTP status code.
        body: The response body as text (may be empty).
    """

    def __init__(self, message: str, *, status_code: int, body: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class AuthenticationError(APIError):
    """401/403: the API key is missing or wrong (set OPENAI_API_KEY or pass api_key=)."""


class BadRequestError(APIError):
    """400/404/422: the server rejected the request; the message is the server's own."""


class RateLimitError(APIError):
    """429: still rate-limited after the retries."""


class ServerError(APIError):
    """5xx: the server failed, still after the retries."""


class AudioDeviceError(StreamTTSError):
    """The audio device could not be opened or was lost (no sound server, unplugged device)."""


class BackendUnavailable(StreamTTSError, ImportError):
    """A native library or optional package needed for this part is not installed.

    The message names what to install (e.g. ``apt-get install libopus0``).
    """


class UsageError(StreamTTSError, RuntimeError):
    """The API was used wrongly (e.g. feeding a closed decoder, playing on a closed player)."""
