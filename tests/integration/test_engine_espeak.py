"""The embedded espeak-ng engine: formats, voices, speed, streaming order, cancellation."""

from __future__ import annotations

import threading

import anyio
import numpy as np
import pytest

from streamtts.engines import ESPEAK_VOICES, EspeakEngine
from streamtts.engines.espeak import EspeakAudio, split_text
from streamtts.errors import BadRequestError, UsageError
from streamtts.opus import decode_opus_stream
from streamtts.wav import WavReader

TEXT = "Hello world. This is the embedded engine speaking."
LONG_TEXT = " ".join(
    f"This is sentence number {i}, spoken by the offline engine." for i in range(60)
)


def speak(
    text: str = TEXT, *, backend: str = "asyncio", engine: EspeakEngine | None = None, **kw: object
) -> tuple[EspeakAudio, bytes]:
    async def main() -> tuple[EspeakAudio, bytes]:
        async with (engine or EspeakEngine()).stream(text, **kw) as audio:  # type: ignore[arg-type]
            data = b"".join([c async for c in audio.aiter_bytes()])
            assert isinstance(audio, EspeakAudio)
            return audio, data

    return anyio.run(main, backend=backend)


def pcm_samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_pcm_is_24khz_s16le_mono_speech_of_a_plausible_length(backend: str) -> None:
    audio, data = speak(format="pcm", backend=backend)
    assert (audio.format, audio.sample_rate, audio.channels) == ("pcm", 24000, 1)
    assert audio.content_type == "audio/pcm"
    assert len(data) % 2 == 0
    seconds = len(data) / 2 / 24000
    assert 1.5 < seconds < 6.0  # eight words
    x = pcm_samples(data)
    assert np.sqrt(np.mean(x**2)) > 0.01  # speech, not silence


def test_wav_has_a_streaming_header_at_the_declared_rate_and_the_same_audio_as_pcm() -> None:
    audio, wav = speak(format="wav")
    _, pcm = speak(format="pcm")
    assert (audio.format, audio.content_type) == ("wav", "audio/wav")
    reader = WavReader()
    blocks = reader.feed(wav) + reader.close()
    assert reader.sample_rate == 24000
    assert reader.channels == 1
    frames = sum(len(b) for b in blocks)
    assert abs(frames - len(pcm) // 2) <= 240  # same speech (espeak varies by a few samples)


@pytest.mark.parametrize("rate", [24000, 48000])
def test_opus_decodes_to_the_length_the_engine_synthesized(rate: int) -> None:
    audio, ogg = speak(engine=EspeakEngine(sample_rate=rate), format="opus")
    _, pcm = speak(format="pcm")
    assert (audio.format, audio.content_type) == ("ogg", "audio/ogg")
    assert ogg.startswith(b"OggS")
    decoded = decode_opus_stream([ogg], sample_rate=24000)
    assert abs(len(decoded) - len(pcm) // 2) <= 480  # within 20 ms
    assert float(np.sqrt(np.mean(decoded**2))) > 0.01


def test_every_openai_voice_is_a_distinct_espeak_voice_and_sounds_different() -> None:
    engine = EspeakEngine()

    async def resolve_all() -> list[str]:
        return [await engine.resolve_voice(v) for v in ESPEAK_VOICES]

    ids = anyio.run(resolve_all)
    assert len(set(ids)) == len(ids)
    clips = {
        v: speak("Good morning.", voice=v, format="pcm")[1] for v in ("alloy", "onyx", "fable")
    }
    assert len(set(clips.values())) == 3
    # Not just different bytes: a female and a male variant differ in pitch, hence zero crossings.
    crossings = {v: np.mean(np.abs(np.diff(np.sign(pcm_samples(c)))) > 0) for v, c in clips.items()}
    assert crossings["alloy"] != pytest.approx(crossings["onyx"], rel=0.05)


def test_espeak_voice_names_work_and_unknown_voices_are_bad_requests() -> None:
    audio, data = speak("Guten Tag.", voice="de", format="pcm")
    assert audio.voice_id.endswith("/de")
    assert data
    assert speak("Hi.", voice="en-gb+f3", format="pcm")[0].voice_id.endswith("+f3")
    for bad in ("nobody", "en-us+nonexistent"):
        with pytest.raises(BadRequestError, match="unknown voice") as info:
            speak(voice=bad)
        assert info.value.status_code == 400


def test_speed_changes_the_duration_and_out_of_range_is_refused() -> None:
    slow = len(speak(format="pcm", speed=0.75)[1])
    fast = len(speak(format="pcm", speed=2.0)[1])
    assert fast < slow * 0.7
    with pytest.raises(BadRequestError, match="speed"):
        speak(speed=5.0)


def test_empty_text_and_unplayable_formats_are_refused_before_any_work() -> None:
    with pytest.raises(BadRequestError, match="empty"):
        speak("   \n ")
    with pytest.raises(UsageError, match="not supported"):
        speak(format="mp3")


def test_the_first_bytes_are_handed_out_before_the_synthesis_of_a_long_text_finished() -> None:
    async def main() -> tuple[float | None, float | None]:
        async with EspeakEngine().stream(LONG_TEXT, format="pcm") as audio:
            assert isinstance(audio, EspeakAudio)
            chunks = audio.aiter_bytes()
            await anext(chunks)
            finished_when_first_read = audio.synthesis_finished
            async for _ in chunks:  # the rest
                pass
            return finished_when_first_read, audio.synthesis_finished

    at_first_chunk, at_end = anyio.run(main)
    assert at_first_chunk is None  # the synthesis was still going on
    assert at_end is not None


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_leaving_early_stops_the_synthesis_and_no_thread_is_left_behind(backend: str) -> None:
    before = threading.active_count()

    async def main() -> EspeakAudio:
        async with EspeakEngine().stream(LONG_TEXT, format="opus") as audio:
            assert isinstance(audio, EspeakAudio)
            async for _ in audio.aiter_bytes():
                break
        return audio

    audio = anyio.run(main, backend=backend)
    assert audio.synthesis_finished is None
    # anyio's idle worker threads may linger, but no synthesis keeps running: a new stream works.
    assert speak("Still works.", format="pcm")[1]
    assert threading.active_count() <= before + 4


def test_cancelling_the_reader_cancels_the_stream() -> None:
    async def main() -> EspeakAudio | None:
        seen: list[EspeakAudio] = []
        with anyio.move_on_after(0.05):
            async with EspeakEngine().stream(LONG_TEXT * 3, format="opus") as audio:
                assert isinstance(audio, EspeakAudio)
                seen.append(audio)
                async for _ in audio.aiter_bytes():
                    await anyio.sleep(0.01)  # a slow reader: the producer waits on the buffer
        return seen[0] if seen else None

    audio = anyio.run(main)
    assert audio is not None
    assert audio.synthesis_finished is None


def test_two_streams_read_in_reverse_order_do_not_deadlock() -> None:
    # The global espeak lock is held only while a piece is synthesized, never while waiting for a
    # reader, so the second stream can be read to the end while the first one is open and unread.
    async def main() -> tuple[int, int]:
        engine = EspeakEngine()
        with anyio.fail_after(30):
            async with engine.stream(LONG_TEXT, format="pcm") as a:
                async with engine.stream("Second stream.", format="pcm") as b:
                    second = sum([len(c) async for c in b.aiter_bytes()])
                first = sum([len(c) async for c in a.aiter_bytes()])
        return first, second

    first, second = anyio.run(main)
    assert first > second > 0


def test_split_text_cuts_at_sentences_and_keeps_every_word() -> None:
    text = 'One. Two! "Three?" Four…\n\nFive ' + "word, " * 200
    pieces = split_text(text, max_chars=100)
    assert pieces[:4] == ["One.", "Two!", '"Three?"', "Four…"]
    assert all(len(p) <= 100 for p in pieces)
    assert " ".join(pieces).split() == text.split()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_an_error_in_the_callers_block_comes_out_as_itself(backend: str) -> None:
    class Oops(Exception):
        pass

    async def main() -> None:
        async with EspeakEngine().stream(TEXT) as audio:
            async for _ in audio.aiter_bytes():
                raise Oops

    with pytest.raises(Oops):
        anyio.run(main, backend=backend)
