"""Trimming the silence around each TTS response, streaming (sans-I/O), so sentences join naturally.

OpenAI's TTS (and most others) adds up to ~1 s of silence before and after the speech of every
request. Played back to back, sentences requested one by one would then be separated by 1–2 s.
`SilenceTrimmer` removes that silence as the audio streams through it and keeps exactly
``lead_keep`` before the first sound and ``pause - lead_keep`` after the last one, so the
concatenation of the trimmed responses has a ``pause`` between the last sound of one and the first
sound of the next (within one 5 ms analysis frame).

How it works
------------
The signal is cut into 5 ms frames at fixed positions (sample ``k * frame``), whatever the block
sizes: a partial frame waits for its remaining samples, so every decision, and the output, is
identical for any blocking. Each frame's mean square over all channels is compared with two
thresholds (hysteresis): a frame is *loud* at ``threshold_db`` and above, and *sound* at
``threshold_db - 10 dB`` and above.

* Leading edge: nothing is output until the first loud frame. Then the start of speech is moved
  back to the earliest sound frame within the 200 ms before it (a soft attack: "f", "s", "h"
  before the vowel, possibly across a stop's closure), and the pre-roll is kept before that.
  Only the last ~210 ms are kept while waiting, so memory is bounded.
* Trailing edge: after speech started, every sound frame releases all audio up to its end. The
  quiet frames after the last sound frame are held back, because only the end of the stream tells
  whether they are a pause or the trailing silence. A pause that reaches ``max_pause`` is released
  and streamed from then on (the hold must stay bounded, and the player must not starve): pauses
  inside the speech shorter than that are kept intact. At `SilenceTrimmer.flush` the start of the
  held silence is output, the rest is dropped.
* Speech is heard somewhere inside its first and last sound frames; its edges are taken at the
  middle of those frames, so the pre-roll and the tail kept are ``lead_keep`` and ``pause -
  lead_keep`` within half a frame each.
* Where a cut falls in non-zero samples (noise), a 4 ms raised-cosine fade is applied inside the
  kept silence, never over the speech, so the cut does not click. When there is less silence than
  should be kept, zeros are added (``pad=True``) so the pause stays exact.

Between the first and the last sound frame, the output is sample-identical to the input.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from .errors import UsageError

__all__ = ["SilenceTrimmer", "silence_runs"]

Float32Array = npt.NDArray[np.float32]

# 5 ms frames: short enough that the kept silence is within 5 ms of the design, long enough (110+
# samples at 22 kHz) that the energy of a quiet fricative is not mistaken for silence between two
# zero crossings.
FRAME_SECONDS: Final = 0.005
# A frame this far below the onset threshold still counts as sound (hysteresis): speech must be
# clearly present to start, but its soft edges (decaying fricatives, breath) are kept.
HYSTERESIS_DB: Final = 10.0
# How far before the first loud frame a soft attack is looked for: a voiceless onset ("s", "f",
# "h") plus a stop closure ("st-", "sp-") lasts up to ~150 ms in normal speech.
ATTACK_SECONDS: Final = 0.2
# Fade over a cut in non-zero samples: 4 ms removes the click of a step and is shorter than the
# default pre-roll, so it lies entirely in the kept silence.
FADE_SECONDS: Final = 0.004


class SilenceTrimmer:
    """Trim leading and trailing silence of one stream of decoded PCM, block by block.

    Feed the blocks of one response to `process` and call `flush` at its end; concatenate what
    they return. The result starts ``lead_keep`` before the first sound and ends ``pause -
    lead_keep`` after the last sound (each within half a 5 ms frame), so **the speaker joins
    sentences by simply playing the trimmed responses back to back**: the silence between the last
    sound of one and the first sound of the next is ``pause`` (within one frame). For the very
    first response only the short pre-roll delays the first sound. Attributes `lead_samples`,
    `tail_samples` and `frame_samples` give these amounts in samples.

    How the speaker uses it: one trimmer per response (or `flush` between responses), between
    the decoder and the ring buffer; play the outputs of consecutive responses back to back with
    nothing inserted. Audio after the last sound is held until the next sound or the end of the
    response (`held_samples` says how much): count only the returned audio as buffered. If the
    response arrives slower than real time, the player can run dry inside a held pause; the
    pause is then longer by the time it waited.

    Audio whose level never reaches ``threshold_db`` is treated as silence: nothing is output
    for it (with ``leading=True``).

    After `flush`, the trimmer is reset and can trim another stream.

    Args:
        sample_rate: Sample rate of the PCM, in Hz.
        channels: Number of channels; blocks are float32 arrays shaped ``(frames, channels)``
            (1-D arrays are accepted when ``channels == 1``).
        pause: Silence between two trimmed responses played back to back, in seconds. 0.15 s is
            a natural pause between sentences in read speech (longer sounds hesitant, shorter
            runs the sentences together).
        threshold_db: Onset level, in dBFS of 5 ms RMS; sound continues down to 10 dB lower.
            Voiceless fricatives of a normalized TTS voice measure about -50…-30 dBFS (espeak-ng
            "f", "th": -47…-38) and vowels -25…-10: at -50 the onset needs real speech, and the
            -60 dBFS sound level keeps the soft edges while staying above coded silence and
            background noise (below -70 dBFS).
        leading: Trim the leading silence (else output starts at the first sample).
        trailing: Trim the trailing silence (else nothing is held back).
        lead_keep: Pre-roll kept before the first sound, in seconds. 10 ms keeps the attack of a
            consonant that starts below the threshold; at most ``pause``.
        max_pause: Longest silence held back, in seconds. 1.5 s is longer than any pause between
            sentences inside one response and than the trailing silence TTS services add
            (0.5–1 s); a longer silence is released as it comes and kept intact.
        pad: Add zeros where there is less silence than ``lead_keep`` before the first sound or
            ``pause - lead_keep`` after the last, so that the joins are exact.

    Raises:
        UsageError: If an argument is out of range.
    """

    def __init__(
        self,
        sample_rate: int,
        channels: int,
        *,
        pause: float = 0.15,
        threshold_db: float = -50.0,
        leading: bool = True,
        trailing: bool = True,
        lead_keep: float = 0.010,
        max_pause: float = 1.5,
        pad: bool = True,
    ) -> None:
        if sample_rate <= 0 or channels <= 0:
            raise UsageError("sample_rate and channels must be positive")
        if pause < 0 or lead_keep < 0 or max_pause < 0:
            raise UsageError("pause, lead_keep and max_pause must not be negative")
        self.sample_rate = sample_rate
        self.channels = channels
        self.leading = leading
        self.trailing = trailing
        self.pad = pad
        self.threshold_db = threshold_db

        self.frame_samples = max(1, round(FRAME_SECONDS * sample_rate))
        #: Silence kept before the first sound, in samples (``lead_keep``).
        self.lead_samples = round(min(lead_keep, pause) * sample_rate)
        #: Silence kept after the last sound, in samples (``pause - lead_keep``).
        self.tail_samples = round(pause * sample_rate) - self.lead_samples
        # Speech is heard somewhere in its first and last sound frames: taking the middle of those
        # frames as its edges makes the error at most half a frame each side (a pause between two
        # responses then within one frame of the design, instead of up to two frames over it).
        half = self.frame_samples // 2
        self._lead_cut = max(0, self.lead_samples - half)  # kept before the first sound frame
        self._tail_cut = max(0, self.tail_samples - half)  # kept after the last sound frame
        self._loud = 10.0 ** (threshold_db / 10.0)  # mean square of a loud frame
        self._sound = 10.0 ** ((threshold_db - HYSTERESIS_DB) / 10.0)
        self._attack_frames = round(ATTACK_SECONDS / FRAME_SECONDS)
        self._max_pause_frames = max(1, round(max_pause * sample_rate / self.frame_samples))
        # Frames kept while waiting for the onset: the attack window, the pre-roll, one spare.
        self._pre_frames = self._attack_frames + -(-self._lead_cut // self.frame_samples) + 1
        fade = round(FADE_SECONDS * sample_rate)
        self._fade_in = _fade_window(min(fade, self._lead_cut))
        self._fade_out = _fade_window(min(fade, self._tail_cut))[::-1]
        self._empty: Float32Array = np.zeros((0, channels), dtype=np.float32)
        self._reset()

    def _reset(self) -> None:
        self._pending = self._empty  # samples of the current, incomplete frame
        self._frames_done = 0  # frames classified so far (absolute position / frame_samples)
        self._started = not self.leading  # speech found (or no leading trim)
        self._pre = self._empty  # last frames before the onset (whole frames)
        self._held: list[Float32Array] = []  # the quiet frames after the last sound frame
        self._run = 0  # length of the current quiet run, in frames

    # ---- public API ----------------------------------------------------------------------

    @property
    def held_samples(self) -> int:
        """Samples received but neither returned nor dropped yet: the silence held after the last
        sound, the incomplete last frame and, before speech starts, the recent audio that may
        still become its pre-roll (at most ~210 ms)."""
        return sum(len(block) for block in self._held) + len(self._pending) + len(self._pre)

    def process(self, block: npt.ArrayLike) -> Float32Array:
        """Trim one block; return the audio that is final so far (possibly empty).

        Args:
            block: float32 PCM shaped ``(frames, channels)``, any number of frames.

        Returns:
            float32 ``(n, channels)``, a new array (never a view of ``block``).

        Raises:
            UsageError: If the block does not have ``channels`` channels.
        """
        data: Float32Array = np.concatenate((self._pending, self._as_pcm(block)))
        whole = len(data) // self.frame_samples * self.frame_samples
        self._pending = data[whole:]
        if whole == 0:
            return self._join([])
        return self._route(data[:whole])

    def flush(self) -> Float32Array:
        """End of the stream: return the rest, with its trailing silence trimmed.

        The trimmer is then reset for a new stream.
        """
        # The last frame may be short: it is classified on the samples it has.
        out = [self._route(self._pending)] if len(self._pending) else []
        if self._started and self.trailing and self._run < self._max_pause_frames:
            tail = self._join(self._held)
            kept: Float32Array = tail[: self._tail_cut].copy()
            if len(tail) > self._tail_cut and len(self._fade_out):
                kept[len(kept) - len(self._fade_out) :] *= self._fade_out[:, None]
            out.append(kept)
            if self.pad and len(kept) < self._tail_cut:
                out.append(np.zeros((self._tail_cut - len(kept), self.channels), np.float32))
        self._reset()
        return self._join(out)

    # ---- internals -----------------------------------------------------------------------

    def _join(self, parts: list[Float32Array]) -> Float32Array:
        """Concatenate blocks into a new array (also when there are none)."""
        joined: Float32Array = np.concatenate([self._empty, *parts])
        return joined

    def _as_pcm(self, block: npt.ArrayLike) -> Float32Array:
        pcm = np.asarray(block, dtype=np.float32)
        if pcm.ndim == 1 and self.channels == 1:
            pcm = pcm.reshape(-1, 1)
        if pcm.ndim != 2 or pcm.shape[1] != self.channels:
            raise UsageError(
                f"expected PCM shaped (frames, {self.channels}), got shape {pcm.shape}"
            )
        return pcm

    def _levels(self, data: Float32Array) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Loud and sound flags of the frames of ``data`` (the last one may be short)."""
        f = self.frame_samples
        whole = len(data) // f
        squares = np.square(data, dtype=np.float64)
        power = squares[: whole * f].reshape(whole, f * self.channels).mean(axis=1)
        if len(data) > whole * f:
            power = np.append(power, squares[whole * f :].mean())
        return power >= self._loud, power >= self._sound

    def _route(self, data: Float32Array) -> Float32Array:
        """Classify the frames of ``data`` and return the audio they release."""
        f = self.frame_samples
        loud, sound = self._levels(data)
        out: list[Float32Array] = []
        if not self._started:
            onsets = np.flatnonzero(loud)
            if len(onsets) == 0:
                self._remember_pre(data)
                self._frames_done += len(loud)
                return self._join([])
            j = int(onsets[0])
            out.append(self._onset(data, sound, j))
            data, sound = data[(j + 1) * f :], sound[j + 1 :]
            self._frames_done += j + 1
            self._started = True
        self._frames_done += len(sound)
        if not self.trailing:
            out.append(data.copy())
        else:
            sounding = np.flatnonzero(sound)
            if len(sounding):
                last_end = min((int(sounding[-1]) + 1) * f, len(data))
                out += self._held
                out.append(data[:last_end])
                self._held = [data[last_end:]] if last_end < len(data) else []
                self._run = len(sound) - 1 - int(sounding[-1])
            else:
                self._held.append(data)
                self._run += len(sound)
            if self._run >= self._max_pause_frames:
                out += self._held  # too long to hold: a real pause, kept intact
                self._held = []
        return self._join(out)

    def _remember_pre(self, data: Float32Array) -> None:
        keep = self._pre_frames * self.frame_samples
        self._pre = np.concatenate((self._pre, data))[-keep:]

    def _onset(self, data: Float32Array, sound: npt.NDArray[np.bool_], j: int) -> Float32Array:
        """Output from the pre-roll up to the end of the first loud frame, ``data`` frame ``j``."""
        f = self.frame_samples
        _, pre_sound = self._levels(self._pre)
        window: Float32Array = np.concatenate((self._pre, data[: (j + 1) * f]))
        flags = np.concatenate((pre_sound, sound[: j + 1]))
        onset = len(pre_sound) + j
        lo = max(0, onset - self._attack_frames)
        first = lo + int(np.argmax(flags[lo : onset + 1]))  # the loud frame itself is sound
        window_start = (self._frames_done - len(pre_sound)) * f  # absolute sample of window[0]
        start = (self._frames_done - len(pre_sound) + first) * f - self._lead_cut
        self._pre = self._empty
        if start <= 0:
            # Less silence before the speech than the pre-roll: nothing was dropped (the window
            # then starts at sample 0), pad it to the pre-roll.
            if self.pad and start < 0:
                return self._join([np.zeros((-start, self.channels), np.float32), window])
            return window
        kept: Float32Array = window[start - window_start :].copy()
        if len(self._fade_in):
            kept[: len(self._fade_in)] *= self._fade_in[:, None]
        return kept


def _fade_window(n: int) -> npt.NDArray[np.float32]:
    """Rising half-cosine of ``n`` samples, from just above 0 to just below 1."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / max(n, 1)
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


def silence_runs(
    pcm: npt.ArrayLike,
    sample_rate: int,
    threshold_db: float = -50.0,
    min_duration: float = 0.05,
) -> list[tuple[int, int]]:
    """Find the silent stretches of a recording.

    A sample is silent when its absolute value (the largest over channels) is below
    ``threshold_db`` dBFS; a run of silent samples counts when it lasts at least
    ``min_duration``. Working on samples rather than frames gives exact edges; the minimum
    duration ignores the zero crossings inside speech (a few samples each).

    Args:
        pcm: Audio shaped ``(frames,)`` or ``(frames, channels)``, full scale 1.0.
        sample_rate: Its sample rate, in Hz.
        threshold_db: Level below which a sample is silent, in dBFS (peak, not RMS).
        min_duration: Shortest run reported, in seconds (> 0).

    Returns:
        ``(start, end)`` sample indices (end exclusive) of each run, in order.
    """
    x = np.asarray(pcm)
    if x.ndim not in (1, 2):
        raise UsageError(f"expected PCM shaped (frames,) or (frames, channels), got {x.shape}")
    amplitude = np.abs(x) if x.ndim == 1 else np.abs(x).max(axis=1, initial=0.0)
    silent = amplitude < 10.0 ** (threshold_db / 20.0)
    edges = np.diff(np.concatenate(([0], silent.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    shortest = max(1, round(min_duration * sample_rate))
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True) if e - s >= shortest]
