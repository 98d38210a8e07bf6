"""The embedded offline engine: espeak-ng (bundled by the ``espeakng-loader`` wheel) through ctypes.

How it works: the text is cut into sentences (long ones at clauses). Each piece is synthesized by
libespeak-ng in synchronous mode — its callback collects 22 050 Hz int16 chunks — in a worker
thread holding the one global lock (the library is global state and not thread-safe); the lock is
released between pieces, so concurrent streams interleave and none waits for another's reader.
The piece's PCM is then resampled (`streamtts.resample.Resampler`) to 24 or 48 kHz and encoded
(`streamtts.opus.OggOpusEncoder`, or a WAV header / raw s16le) in ~100 ms blocks in worker threads,
and the bytes go to the reader through a bounded memory object stream: the first sentence is
audible while the rest of the text has not been synthesized yet, and a slow reader holds the
synthesis back instead of letting it pile up. Leaving the context sets a cancel flag that the
synth callback checks (espeak stops mid-sentence) and cancels the producer task.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import numpy as np
import numpy.typing as npt
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._backends import load_espeakng_loader
from ..errors import BackendUnavailable, BadRequestError, UsageError
from .base import AudioStream, Engine, check_request_format

if TYPE_CHECKING:
    from ..opus import OggOpusEncoder
    from ..resample import Resampler

__all__ = ["ESPEAK_VOICES", "EspeakEngine", "split_text"]

#: OpenAI voice names → distinct espeak-ng voices (accent × voice variant), so that switching the
#: voice in an app written for OpenAI audibly switches the speaker here too.
ESPEAK_VOICES: dict[str, str] = {
    "alloy": "en-us+f3",
    "ash": "en-us+m3",
    "ballad": "en-gb-x-gbcwmd+m6",
    "coral": "en-gb+f4",
    "echo": "en-gb+m2",
    "fable": "en-gb-x-rp+m5",
    "nova": "en-us+f5",
    "onyx": "en-us+m7",
    "sage": "en-gb-scotland+f2",
    "shimmer": "en-us-nyc+f1",
    "verse": "en-029+m1",
    "marin": "en-gb-x-gbclan+f5",
    "cedar": "en-us+m6",
}

DEFAULT_VOICE = "alloy"

# --- libespeak-ng constants (speak_lib.h) -----------------------------------------------------
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000  # add the sentence pause after the text (we set it on all but the last piece)
_RATE = 1  # espeak_PARAMETER espeakRATE
_EE_OK = 0

#: Length of the sound buffers handed to the synth callback, in ms. Synthesis runs ~1000x real
#: time, so this only sets the callback count; 60 ms is the library's own default.
_BUFLENGTH_MS = 60
#: espeak-ng's speaking rate at 1.0x, words per minute (its default, ``espeakRATE_NORMAL``).
_WPM_NORMAL = 175
#: espeak-ng accepts 80–450 wpm (``espeakRATE_MINIMUM``/``espeakRATE_MAXIMUM``).
_WPM_MIN, _WPM_MAX = 80, 450
#: OpenAI's accepted speed range; the same rule here, so code moves between engines unchanged.
SPEED_MIN, SPEED_MAX = 0.25, 4.0

#: Pieces longer than this are cut at clause punctuation, then at spaces: one piece is synthesized
#: whole under the lock, and 400 characters (~25 s of speech, ~1 MB of PCM) keeps that short.
_MAX_PIECE_CHARS = 400
#: Samples (22 050 Hz) resampled and encoded per worker-thread call: 100 ms, so the first bytes
#: leave after ~1 ms of CPU while a thread hop (~0.1 ms) stays negligible per block.
_BLOCK_SAMPLES = 2205
#: Blocks the producer may run ahead of the reader (~3 s of audio): absorbs scheduling jitter,
#: bounds memory, and a cancelled stream wastes little synthesis.
_BUFFER_BLOCKS = 32
#: Opus bitrate: RFC 7587 §3.1.1 recommends 28–40 kbit/s for fullband speech.
_OPUS_BITRATE = 32_000

_SENTENCE_END = re.compile(
    r"(?:(?<=[.!?…。！？])|(?<=[.!?…。！？][\"'”’)\]]))\s+|\n\s*\n"
)
_CLAUSE_END = re.compile(r"(?<=[,;:—–])\s+")


def split_text(text: str, max_chars: int = _MAX_PIECE_CHARS) -> list[str]:
    """Cut text into sentences, and sentences longer than *max_chars* at clauses, then spaces.

    The pieces joined with single spaces give the text back (whitespace normalised).
    """
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = " ".join(sentence.split())
        if not sentence:
            continue
        if len(sentence) <= max_chars:
            pieces.append(sentence)
            continue
        current = ""
        for clause in _CLAUSE_END.split(sentence):
            for word in _split_long(clause, max_chars):
                if current and len(current) + 1 + len(word) > max_chars:
                    pieces.append(current)
                    current = word
                else:
                    current = f"{current} {word}" if current else word
        if current:
            pieces.append(current)
    return pieces


def _split_long(clause: str, max_chars: int) -> Iterator[str]:
    if len(clause) <= max_chars:
        yield clause
        return
    for word in clause.split(" "):
        while len(word) > max_chars:  # one enormous "word": cut it blindly
            yield word[:max_chars]
            word = word[max_chars:]
        if word:
            yield word


# --- the library: one per process, used under _LOCK only --------------------------------------

_LOCK = threading.Lock()
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _VoiceStruct(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


class _Espeak:
    """libespeak-ng loaded and initialised; every method must be called with `_LOCK` held."""

    def __init__(self) -> None:
        loader = load_espeakng_loader()
        try:
            lib = ctypes.CDLL(loader.get_library_path())
            data_path: str = loader.get_data_path()
        except (OSError, RuntimeError) as exc:
            raise BackendUnavailable(
                f"the espeak-ng library bundled by espeakng-loader could not be loaded: {exc}"
            ) from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceStruct))
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFLENGTH_MS, data_path.encode(), 0
        )
        if rate <= 0:
            raise BackendUnavailable(f"espeak-ng failed to initialise with data at {data_path}")
        self.sample_rate: int = rate
        self._lib = lib
        self._sink: list[bytes] = []
        self._cancel: threading.Event | None = None
        self._callback = _CALLBACK(self._on_audio)  # kept referenced: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self.voices = self._list_voices()
        variants_dir = Path(data_path) / "voices" / "!v"
        self.variants = {p.lower(): p for p in os.listdir(variants_dir)}

    def _list_voices(self) -> dict[str, str]:
        """Lower-cased voice names, identifiers and language codes → espeak identifier."""
        found: dict[str, str] = {}
        array = self._lib.espeak_ListVoices(None)
        i = 0
        while array[i]:
            voice = array[i].contents
            identifier = (voice.identifier or b"").decode()
            keys = [(voice.name or b"").decode(), identifier, identifier.rsplit("/", 1)[-1]]
            # languages: repeated (priority byte, NUL-terminated code), ending with a 0 priority.
            raw = ctypes.string_at(voice.languages, 256) if voice.languages else b""
            pos = 0
            while pos < len(raw) and raw[pos] != 0:
                end = raw.find(b"\0", pos + 1)
                keys.append(raw[pos + 1 : end].decode("ascii", "replace"))
                pos = end + 1
            for key in keys:
                if key:
                    found.setdefault(key.lower(), identifier)
            i += 1
        return found

    def resolve(self, name: str) -> str | None:
        """The espeak ``identifier[+variant]`` for an OpenAI or espeak voice name, or None."""
        spec = ESPEAK_VOICES.get(name.strip().lower(), name.strip())
        base, _, variant = spec.partition("+")
        identifier = self.voices.get(base.lower())
        if identifier is None:
            return None
        if not variant:
            return identifier
        real_variant = self.variants.get(variant.lower())
        return None if real_variant is None else f"{identifier}+{real_variant}"

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], count: int, events: int) -> int:
        try:
            if self._cancel is not None and self._cancel.is_set():
                return 1  # abort the synthesis
            if wav and count > 0:
                self._sink.append(ctypes.string_at(wav, count * 2))
            return 0
        except BaseException:  # never let an exception unwind through C
            return 1

    def synthesize(
        self, text: str, voice_id: str, wpm: int, cancel: threading.Event, end_pause: bool
    ) -> bytes:
        """Synthesize *text* whole; returns int16 mono PCM at `sample_rate`."""
        if self._lib.espeak_SetVoiceByName(voice_id.encode()) != _EE_OK:
            raise BadRequestError(f"espeak-ng refused the voice {voice_id!r}", status_code=400)
        self._lib.espeak_SetParameter(_RATE, wpm, 0)
        data = text.replace("\0", " ").encode("utf-8") + b"\0"
        flags = _CHARS_UTF8 | (_ENDPAUSE if end_pause else 0)
        self._sink = []
        self._cancel = cancel
        try:
            self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, flags, None, None)
        finally:
            self._cancel = None
            pcm, self._sink = b"".join(self._sink), []
        return pcm


_library: _Espeak | None = None


def _get_library() -> _Espeak:
    """The initialised library (loaded on first use; blocking: call from a worker thread)."""
    global _library
    with _LOCK:
        if _library is None:
            _library = _Espeak()
        return _library


def _synthesize(
    text: str, voice_id: str, wpm: int, cancel: threading.Event, end_pause: bool
) -> bytes:
    library = _get_library()
    with _LOCK:
        return library.synthesize(text, voice_id, wpm, cancel, end_pause)


# --- per-stream encoding ------------------------------------------------------------------------


class _Encoder:
    """Resample 22 050 Hz int16 to the output rate and encode to Ogg Opus, WAV or raw s16le."""

    def __init__(
        self,
        fmt: str,
        rate_in: int,
        rate_out: int,
        *,
        page_ms: float,
        frame_ms: float,
        bitrate: int,
    ) -> None:
        from ..resample import Resampler

        self._fmt = fmt
        self._resampler: Resampler = Resampler(rate_in, rate_out, 1)
        self._opus: OggOpusEncoder | None = None
        if fmt == "opus":
            from ..opus import OggOpusEncoder

            self._opus = OggOpusEncoder(
                rate_out, 1, bitrate=bitrate, frame_ms=frame_ms, page_ms=page_ms
            )
        self._rate_out = rate_out

    def header(self) -> bytes:
        if self._fmt == "wav":
            from ..wav import wav_header

            return wav_header(self._rate_out, 1, frames=None)
        return b""

    def process(self, pcm16: bytes) -> bytes:
        block = np.frombuffer(pcm16, dtype="<i2").astype(np.float32).reshape(-1, 1)
        block *= np.float32(1.0 / 32768.0)
        return self._emit(self._resampler.process(block))

    def finish(self) -> bytes:
        out = self._emit(self._resampler.flush())
        if self._opus is not None:
            out += self._opus.finish()
        return out

    def _emit(self, block: npt.NDArray[np.float32]) -> bytes:
        if len(block) == 0:
            return b""
        if self._opus is not None:
            return self._opus.encode(block)
        scaled = np.rint(block * 32768.0)
        pcm: bytes = np.clip(scaled, -32768, 32767).astype("<i2").tobytes()
        return pcm


class EspeakAudio(AudioStream):
    """The audio of one `EspeakEngine.stream` call.

    Attributes:
        voice_id: The espeak-ng voice used (``identifier+variant``).
        synthesis_finished: ``time.monotonic()`` when espeak finished the last piece of text
            (None until then).
    """

    def __init__(
        self,
        receive: MemoryObjectReceiveStream[bytes],
        *,
        fmt: str,
        sample_rate: int,
        voice_id: str,
    ) -> None:
        super().__init__()
        self._receive = receive
        self._error: BaseException | None = None
        self.voice_id = voice_id
        self.synthesis_finished: float | None = None
        self.format = {"opus": "ogg", "wav": "wav", "pcm": "pcm"}[fmt]
        self.content_type = {"opus": "audio/ogg", "wav": "audio/wav", "pcm": "audio/pcm"}[fmt]
        self.sample_rate = sample_rate
        self.channels = 1
        self.sample_format = None if fmt == "opus" else "s16le"

    async def _next(self) -> bytes | None:
        try:
            chunk = await self._receive.receive()
        except anyio.EndOfStream:
            if self._error is not None:
                raise self._error from None
            if self.finished is None:
                self.finished = time.monotonic()
            return None
        except anyio.ClosedResourceError as exc:
            raise UsageError("the audio stream was read after it was closed") from exc
        self._mark_chunk(chunk)
        return chunk

    async def aclose(self) -> None:
        self._receive.close()


class EspeakEngine(Engine):
    """Offline speech with the embedded espeak-ng, streamed like an HTTP response.

    Args:
        voice: Default voice: an OpenAI name (``alloy``, ``onyx``… mapped to distinct espeak
            voices, see `ESPEAK_VOICES`) or an espeak-ng name (``en-us``, ``de``, ``en-gb+f3``).
        sample_rate: Output rate of Opus and WAV (24000 or 48000); ``pcm`` is always 24 kHz
            s16le mono, like OpenAI's.
        page_ms: Audio per Ogg page (20 ms: one packet per page, the lowest latency; OpenAI's
            streams use about 1 s).
        frame_ms: Opus frame duration.
        bitrate: Opus bitrate in bit/s.
    """

    name = "espeak"

    def __init__(
        self,
        *,
        voice: str = DEFAULT_VOICE,
        sample_rate: int = 24_000,
        page_ms: float = 20.0,
        frame_ms: float = 20.0,
        bitrate: int = _OPUS_BITRATE,
    ) -> None:
        if sample_rate not in (24_000, 48_000):
            raise UsageError(f"sample_rate must be 24000 or 48000, not {sample_rate}")
        self.voice = voice
        self.sample_rate = sample_rate
        self.page_ms = page_ms
        self.frame_ms = frame_ms
        self.bitrate = bitrate

    def describe(self) -> str:
        return "espeak-ng (embedded, offline)"

    async def resolve_voice(self, voice: str | None = None) -> str:
        """The espeak-ng voice (``identifier+variant``) a voice name maps to.

        Raises:
            BadRequestError: Unknown voice (status_code 400).
            BackendUnavailable: espeakng-loader is not installed.
        """
        library = await anyio.to_thread.run_sync(_get_library)
        name = voice or self.voice
        voice_id = library.resolve(name)
        if voice_id is None:
            raise BadRequestError(
                f"unknown voice {name!r}: use an OpenAI voice ({', '.join(ESPEAK_VOICES)}) "
                "or an espeak-ng voice name such as 'en-us', 'en-gb+f3' or 'de'",
                status_code=400,
            )
        return voice_id

    def stream(
        self,
        text: str,
        *,
        voice: str | None = None,
        format: str = "opus",
        speed: float | None = None,
        instructions: str | None = None,
        model: str | None = None,
        page_ms: float | None = None,
    ) -> AbstractAsyncContextManager[AudioStream]:
        """Synthesize *text*; see `Engine.stream`. ``instructions`` and ``model`` are ignored.

        Args:
            page_ms: Audio per Ogg page for this stream (default: the engine's ``page_ms``).

        Raises:
            BadRequestError: Empty text, unknown voice, speed outside 0.25–4.0 (status 400).
            UsageError: A format other than opus, wav, pcm.
            BackendUnavailable: espeakng-loader (or libopus for Opus) is not installed.
        """
        return self._stream(
            text,
            voice=voice,
            format=format,
            speed=speed,
            page_ms=self.page_ms if page_ms is None else page_ms,
        )

    @asynccontextmanager
    async def _stream(
        self, text: str, *, voice: str | None, format: str, speed: float | None, page_ms: float
    ) -> AsyncIterator[AudioStream]:
        fmt = check_request_format(format)
        pieces = split_text(text)
        if not pieces:
            raise BadRequestError("the input text is empty", status_code=400)
        if speed is not None and not SPEED_MIN <= speed <= SPEED_MAX:
            raise BadRequestError(
                f"speed must be between {SPEED_MIN} and {SPEED_MAX}, not {speed}", status_code=400
            )
        wpm = min(_WPM_MAX, max(_WPM_MIN, round(_WPM_NORMAL * (speed or 1.0))))
        voice_id = await self.resolve_voice(voice)
        library = await anyio.to_thread.run_sync(_get_library)
        rate_out = 24_000 if fmt == "pcm" else self.sample_rate
        encoder = _Encoder(
            fmt,
            library.sample_rate,
            rate_out,
            page_ms=max(page_ms, self.frame_ms),
            frame_ms=self.frame_ms,
            bitrate=self.bitrate,
        )
        send, receive = anyio.create_memory_object_stream[bytes](_BUFFER_BLOCKS)
        audio = EspeakAudio(receive, fmt=fmt, sample_rate=rate_out, voice_id=voice_id)
        cancel = threading.Event()
        # An exception of the caller's block is taken out of the task group and re-raised after
        # it, as itself: anyio would wrap it in an ExceptionGroup.
        body_error: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._produce, pieces, voice_id, wpm, encoder, send, audio, cancel)
                audio.request_sent = audio.started
                audio.headers_received = time.monotonic()
                try:
                    yield audio
                except BaseException as exc:  # re-raised below, cancellation included
                    body_error = exc
                finally:
                    cancel.set()
                    tg.cancel_scope.cancel()
        finally:
            send.close()
            receive.close()
        if body_error is not None:
            raise body_error

    @staticmethod
    async def _produce(
        pieces: list[str],
        voice_id: str,
        wpm: int,
        encoder: _Encoder,
        send: MemoryObjectSendStream[bytes],
        audio: EspeakAudio,
        cancel: threading.Event,
    ) -> None:
        async with send:
            try:
                header = encoder.header()
                if header:
                    await send.send(header)
                for index, piece in enumerate(pieces):
                    last = index == len(pieces) - 1
                    pcm = await anyio.to_thread.run_sync(
                        _synthesize, piece, voice_id, wpm, cancel, not last
                    )
                    if last:
                        audio.synthesis_finished = time.monotonic()
                    step = _BLOCK_SAMPLES * 2
                    for start in range(0, len(pcm), step):
                        data = await anyio.to_thread.run_sync(
                            encoder.process, pcm[start : start + step]
                        )
                        if data:
                            await send.send(data)
                tail = await anyio.to_thread.run_sync(encoder.finish)
                if tail:
                    await send.send(tail)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass  # the reader left: stop quietly
            except Exception as exc:  # handed to the reader, raised from aiter_bytes()
                audio._error = exc
