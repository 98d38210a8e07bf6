"""streamtts: text-to-speech that talks while the text is still being written.

The public API, importable from ``streamtts`` (docs and examples use only these names)::

    async with streamtts.Speaker() as speaker:
        await speaker.say("Hello there.")
        await speaker.say_stream(llm_tokens)      # any async iterable of text pieces

Layers: the sans-I/O format readers (`OggReader`, `OggOpusDecoder`, `WavReader`, `PcmReader`),
the pure policies (`StartPolicy`, `SentenceSegmenter`, `SilenceTrimmer`), the real-time player
(`Player`) and the engines (`OpenAIEngine`, `EspeakEngine`) under the `Speaker`.
Importing streamtts needs no native library: libopus, PortAudio and espeak-ng are loaded at
first use, and a missing one raises `BackendUnavailable` naming what to install.
"""

from __future__ import annotations

from .device import DeviceInfo, list_output_devices
from .engines import (
    AudioStream,
    Engine,
    EspeakEngine,
    OpenAIEngine,
    default_engine,
    estimate_duration,
)
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
from .events import (
    ChecksumMismatch,
    DataLost,
    Event,
    FirstByteReceived,
    HeaderReceived,
    PlaybackError,
    PlaybackFinished,
    PlaybackRecovered,
    PlaybackStarted,
    PlaybackStopped,
    RequestSent,
    SentenceEvent,
    SentenceFinished,
    SentenceQueued,
    SentenceStarted,
    SourceEvent,
    SourceFinished,
    SpeechError,
    SpeechInterrupted,
    StreamEnded,
    StreamEvent,
    StreamTruncated,
    SyncLost,
    Underrun,
)
from .formats import AudioReader, detect_format, make_reader, sniff
from .ogg import OggPacket, OggReader, OggWriter
from .opus import (
    OggOpusDecoder,
    OggOpusEncoder,
    OpusHead,
    OpusTags,
    decode_opus_stream,
    packet_samples,
)
from .player import PlaybackResult, Player, PlayerStats
from .policy import StartPolicy
from .relay import RelayHub, RelayListener, RelayPlayhead, RelayResult, RelaySink
from .resample import Resampler
from .segment import Segment, SentenceSegmenter
from .speaker import SayResult, Speaker
from .trim import SilenceTrimmer, silence_runs
from .wav import PcmReader, WavReader, wav_header

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AudioDeviceError",
    "AudioReader",
    "AudioStream",
    "AuthenticationError",
    "BackendUnavailable",
    "BadRequestError",
    "ChecksumMismatch",
    "ConnectError",
    "DataLost",
    "DeviceInfo",
    "Engine",
    "EspeakEngine",
    "Event",
    "FirstByteReceived",
    "HeaderReceived",
    "OggOpusDecoder",
    "OggOpusEncoder",
    "OggPacket",
    "OggReader",
    "OggWriter",
    "OpenAIEngine",
    "OpusHead",
    "OpusTags",
    "PcmReader",
    "PlaybackError",
    "PlaybackFinished",
    "PlaybackRecovered",
    "PlaybackResult",
    "PlaybackStarted",
    "PlaybackStopped",
    "Player",
    "PlayerStats",
    "ProtocolError",
    "RateLimitError",
    "RelayHub",
    "RelayListener",
    "RelayPlayhead",
    "RelayResult",
    "RelaySink",
    "RequestSent",
    "Resampler",
    "SayResult",
    "Segment",
    "SentenceEvent",
    "SentenceFinished",
    "SentenceQueued",
    "SentenceSegmenter",
    "SentenceStarted",
    "ServerError",
    "SilenceTrimmer",
    "SourceEvent",
    "SourceFinished",
    "Speaker",
    "SpeechError",
    "SpeechInterrupted",
    "StartPolicy",
    "StreamEnded",
    "StreamEvent",
    "StreamInterrupted",
    "StreamTTSError",
    "StreamTimeout",
    "StreamTruncated",
    "SyncLost",
    "TransportError",
    "Underrun",
    "UnsupportedFormat",
    "UsageError",
    "WavReader",
    "__version__",
    "decode_opus_stream",
    "default_engine",
    "detect_format",
    "estimate_duration",
    "list_output_devices",
    "make_reader",
    "packet_samples",
    "silence_runs",
    "sniff",
    "wav_header",
]
