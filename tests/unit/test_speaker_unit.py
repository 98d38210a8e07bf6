"""Speaker parts that need no device: arguments, results, events, text positions, conversion.

(Objects holding anyio primitives are made inside a running event loop: hence the async tests.)
"""

from __future__ import annotations

import numpy as np
import pytest

from streamtts.errors import UsageError
from streamtts.events import (
    Event,
    FirstByteReceived,
    RequestSent,
    SentenceEvent,
    SentenceFinished,
    SentenceQueued,
    SentenceStarted,
    SpeechError,
    SpeechInterrupted,
)
from streamtts.relay import RelayHub, RelaySink
from streamtts.resample import Conformer
from streamtts.speaker import (
    DEFAULT_CHARS_PER_SECOND,
    SayResult,
    Speaker,
    _Sentence,
    _Utterance,
)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_in_flight": 0},
        {"pause": -0.1},
        {"format": "mp3"},
        {"format": "ogg-vorbis"},
        {"speed": 0.0},
        {"sample_rate": 0},
    ],
)
@pytest.mark.anyio
async def test_bad_arguments_are_refused_with_a_usage_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Speaker(**kwargs)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_say_on_a_speaker_that_was_not_entered_is_a_usage_error() -> None:
    speaker = Speaker()
    with pytest.raises(UsageError, match="open Speaker"):
        await speaker.say("Hello.")


def test_say_result_reports_the_heard_text_duration_and_latency() -> None:
    result = SayResult(
        utterance=0,
        text="Hello there. Bye.",
        sample_rate=48000,
        frames=24000,
        char_offset=12,
        sentences=1,
        interrupted=True,
        requested_at=10.0,
        request_sent=10.001,
        first_byte=10.2,
        first_sound=10.35,
        finished=10.85,
        underruns=0,
        underrun_ms=0.0,
    )
    assert result.heard_text == "Hello there."
    assert result.duration == 0.5
    assert result.first_sound_latency == pytest.approx(0.35)


@pytest.mark.parametrize(
    "event",
    [
        SentenceQueued(1.0, 0, 0, 1, "Hi.", 4, 8),
        RequestSent(1.0, 0, 0, 1, "Hi."),
        FirstByteReceived(1.0, 0, 0, 1, "Hi.", 120.0),
        SentenceStarted(1.0, 480, 0, 1, "Hi."),
        SentenceFinished(1.0, 960, 0, 1, "Hi.", 480),
        SpeechInterrupted(1.0, 700, 0, 1, "Hi.", 220, 5, "stop"),
        SpeechError(1.0, 0, 0, 1, "Hi.", "ServerError", "HTTP 500"),
    ],
)
def test_speaker_events_are_playback_events_with_sentence_fields(event: SentenceEvent) -> None:
    assert isinstance(event, Event)
    data = event.to_dict()
    assert data["event"] == type(event).__name__
    assert (data["utterance"], data["sentence"], data["text"]) == (0, 1, "Hi.")
    with pytest.raises(AttributeError):
        event.sentence = 2  # type: ignore[misc]


def _utterance() -> _Utterance:
    utt = _Utterance(0, 0.0, text="One two. Three four five six.")
    first = _Sentence(0, "One two.", 0, 9, frames_in=1000, done=True, src_start=0, src_end=1000)
    second = _Sentence(
        1, "Three four five six.", 9, 29, frames_in=2000, done=True, src_start=1500, src_end=3500
    )
    utt.sentences += [first, second]
    return utt


@pytest.mark.parametrize(
    ("heard", "sentence", "offset"),
    [
        (0, 0, 0),
        (500, 0, 4),  # halfway through the first sentence: half of its 9 characters
        (1000, 0, 9),  # its end
        (1200, 0, 9),  # in the pause: the first sentence was heard whole
        (2500, 1, 19),  # halfway through the second
        (9999, 1, 29),
    ],
)
@pytest.mark.anyio
async def test_the_heard_position_maps_to_the_sentence_and_a_proportional_text_offset(
    heard: int, sentence: int, offset: int
) -> None:
    speaker = Speaker()
    current, got = speaker._position_in_text(_utterance(), heard)
    assert current is not None
    assert current.index == sentence
    assert got == offset


@pytest.mark.anyio
async def test_the_speaking_rate_starts_at_the_default_and_is_learned_from_played_audio() -> None:
    speaker = Speaker(speed=2.0)
    assert speaker._estimate(30) == pytest.approx(30 / (2 * DEFAULT_CHARS_PER_SECOND))
    speaker._learned_chars, speaker._learned_seconds = 100, 10.0
    assert speaker._estimate(30) == pytest.approx(3.0)


def test_conform_mixes_stereo_to_mono_and_resamples_to_the_speaker_rate() -> None:
    conform = Conformer(24000, 2, 48000, 1)
    left = np.full(2400, 0.5, dtype=np.float32)
    stereo = np.stack([left, -left * 0.0], axis=1)
    out = np.concatenate([conform.process(stereo), conform.flush()])
    assert out.shape == (4800, 1)
    assert np.allclose(out[200:-200], 0.25, atol=1e-3)  # the mean of the channels, away from edges


def _sink() -> RelaySink:
    return RelaySink(RelayHub())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"output": "relay"}, "needs relay"),
        ({"output": "both"}, "needs relay"),
        ({"output": "speakers"}, "output must be"),
        ({"output": "device", "relay": "sink"}, "output='both'"),
        ({"output": "relay", "relay": "sink", "device": 3}, "opens no device"),
        ({"output": "relay", "relay": "sink", "channels": 6}, "1 or 2 channels"),
    ],
)
@pytest.mark.anyio
async def test_an_output_that_disagrees_with_relay_or_device_is_refused(
    kwargs: dict[str, object], match: str
) -> None:
    if kwargs.get("relay") == "sink":
        kwargs = {**kwargs, "relay": _sink()}
    with pytest.raises(UsageError, match=match):
        Speaker(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("relay", "output", "expected"),
    [(False, None, "device"), (True, None, "both"), (True, "relay", "relay")],
)
@pytest.mark.anyio
async def test_the_output_defaults_to_both_with_a_relay_and_to_the_device_without(
    relay: bool, output: str | None, expected: str
) -> None:
    speaker = Speaker(relay=_sink() if relay else None, output=output)  # type: ignore[arg-type]
    assert speaker.output == expected


@pytest.mark.anyio
async def test_a_relay_only_speaker_has_no_player() -> None:
    speaker = Speaker(relay=_sink(), output="relay")
    with pytest.raises(UsageError, match="no Player"):
        _ = speaker.player


@pytest.mark.anyio
async def test_the_tracker_sleeps_until_the_next_boundary_can_be_played_within_bounds() -> None:
    from streamtts.speaker import TRACK_INTERVAL, TRACK_MAX_INTERVAL

    speaker = Speaker(relay=_sink(), output="relay")  # frames played: 0 (nothing relayed yet)
    utt = _utterance()
    speaker._by_source[0] = utt
    assert speaker._track_delay() == TRACK_MAX_INTERVAL  # not begun: PlaybackStarted wakes it
    utt.begin = 0  # the first sentence starts at frame 0: due within one frame
    assert speaker._track_delay() == TRACK_INTERVAL
    utt.next_start = 1  # the first sentence started: its end (frame 1000) is next
    assert speaker._track_delay() == pytest.approx(1000 / 48000)
    utt.next_end = 1  # then the second's start, at frame 1500
    assert speaker._track_delay() == pytest.approx(1501 / 48000)
    utt.begin = 48000  # far ahead: capped
    assert speaker._track_delay() == TRACK_MAX_INTERVAL
    utt.begin = -1501  # already due: the shortest sleep
    assert speaker._track_delay() == TRACK_INTERVAL
