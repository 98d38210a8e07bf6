"""The public API is exactly what `streamtts.__all__` says (model: httpx's exported-members test).

A name added to or removed from the public surface must be added to or removed from EXPECTED
here too, on purpose.
"""

from __future__ import annotations

import subprocess
import sys

import streamtts

EXPECTED = {
    # errors
    "StreamTTSError", "ProtocolError", "UnsupportedFormat", "TransportError", "ConnectError",
    "StreamTimeout", "StreamInterrupted", "APIError", "AuthenticationError", "BadRequestError",
    "RateLimitError", "ServerError", "AudioDeviceError", "BackendUnavailable", "UsageError",
    # stream events (sans-I/O readers)
    "StreamEvent", "SyncLost", "ChecksumMismatch", "DataLost", "StreamTruncated",
    "HeaderReceived", "StreamEnded",
    # playback and speech events
    "Event", "PlaybackStarted", "Underrun", "PlaybackRecovered", "SourceFinished",
    "PlaybackFinished", "PlaybackStopped", "PlaybackError", "SourceEvent", "SentenceEvent",
    "SentenceQueued", "RequestSent", "FirstByteReceived", "SentenceStarted", "SentenceFinished",
    "SpeechInterrupted", "SpeechError",
    # format readers and writers
    "OggReader", "OggPacket", "OggWriter", "OggOpusDecoder", "OggOpusEncoder", "OpusHead",
    "OpusTags", "decode_opus_stream", "packet_samples", "WavReader", "PcmReader", "wav_header",
    "AudioReader", "detect_format", "make_reader", "sniff", "Resampler",
    # pure policies
    "StartPolicy", "SentenceSegmenter", "Segment", "SilenceTrimmer", "silence_runs",
    # playback
    "Player", "PlaybackResult", "PlayerStats", "DeviceInfo", "list_output_devices",
    # engines and speaker
    "Engine", "AudioStream", "OpenAIEngine", "EspeakEngine", "default_engine",
    "estimate_duration", "Speaker", "SayResult",
    # browser relay
    "RelayHub", "RelayListener", "RelayPlayhead", "RelayResult", "RelaySink",
    "__version__",
}  # fmt: skip


def test_all_is_exactly_the_pinned_public_surface() -> None:
    assert set(streamtts.__all__) == EXPECTED
    assert len(streamtts.__all__) == len(set(streamtts.__all__)), "duplicates in __all__"


def test_every_public_name_is_importable_and_documented() -> None:
    for name in streamtts.__all__:
        obj = getattr(streamtts, name)
        if name != "__version__":
            assert obj.__doc__, f"streamtts.{name} has no docstring"


def test_public_classes_and_functions_say_they_belong_to_streamtts() -> None:
    for name in streamtts.__all__:
        obj = getattr(streamtts, name)
        module = getattr(obj, "__module__", None)
        if module is not None and callable(obj):
            assert module.startswith("streamtts."), (name, module)


def test_importing_streamtts_loads_no_native_library_or_optional_extra() -> None:
    code = (
        "import sys, streamtts; "
        "print(sorted(m for m in ('opuslib', 'sounddevice', 'espeakng_loader', 'starlette',"
        " 'uvicorn') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    assert out == "[]"
