"""Small Ogg Opus test files, generated once per test session in a temporary folder.

Sources are espeak-ng speech (22050 Hz mono) and synthetic signals (tones, noise); files are
made with ``opusenc`` in the layouts the decoder must handle, re-paged with
`streamtts.ogg.OggWriter` so that packets span pages, or edited (output gain, chaining).
References come from ``opusdec --float`` (raw float32 output). Everything is a few seconds
long at most.

Use `get_corpus()` (one instance per process; the folder is removed at exit).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import struct
import subprocess
import tempfile
import wave
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamtts.ogg import OggPacket, OggReader, OggWriter
from streamtts.opus import OpusHead, packet_samples

SPEECH_TEXT = "Hello! This is a short streaming speech test, one two three."
SHORT_TEXT = "Short test."

# opusenc options of each named file, applied to the named source.
_RECIPES: dict[str, tuple[str, list[str]]] = {
    "speech": ("speech", []),  # 1 s pages (opusenc default), 512 B tag padding
    "speech_lowdelay": ("speech", ["--max-delay", "20"]),  # one packet per page
    "speech_padding": ("speech", ["--padding", "4096"]),  # OpusTags spanning pages
    "speech_highrate": ("speech", ["--bitrate", "160"]),  # 1 s pages of ~20 kB
    "short": ("short", []),
    "fs2.5": ("short", ["--framesize", "2.5"]),
    "fs5": ("short", ["--framesize", "5"]),
    "fs10": ("short", ["--framesize", "10"]),
    "fs20": ("short", ["--framesize", "20"]),
    "fs40": ("short", ["--framesize", "40"]),
    "fs60": ("short", ["--framesize", "60"]),
    "input24k": ("noise24k", []),  # input rate 24 kHz: informational only
    "stereo": ("tone_stereo", []),
    "stereo_highrate": ("tone_stereo", ["--bitrate", "256"]),
    "surround3": ("tone3", []),  # mapping family 1 (3 channels)
    "cbr255": ("short", ["--hard-cbr", "--bitrate", "102"]),  # every packet 255 bytes
    "cbr510": ("short", ["--hard-cbr", "--bitrate", "204"]),  # every packet 510 bytes
}

# Synthetic sources: (rate, seconds, tone frequencies per channel or None for noise).
_SIGNALS: dict[str, tuple[int, float, list[float] | None]] = {
    "tone_stereo": (48000, 1.2, [440.0, 660.0]),
    "noise24k": (24000, 0.8, None),
    "tone3": (48000, 0.6, [300.0, 500.0, 700.0]),
}


def write_wav16(path: Path, pcm: npt.NDArray[np.float32], rate: int) -> None:
    """Write float PCM (frames, channels) as a 16-bit WAV file (opusenc's input)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(pcm.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())


def _signal(rate: int, seconds: float, freqs: list[float] | None) -> npt.NDArray[np.float32]:
    t = np.arange(int(rate * seconds)) / rate
    if freqs is None:
        noise = np.random.default_rng(24).standard_normal(len(t)) * 0.1
        return noise.astype(np.float32)[:, None]
    return np.stack([0.25 * np.sin(2 * np.pi * f * t) for f in freqs], axis=1).astype(np.float32)


def _run(args: list[str]) -> None:
    subprocess.run(args, check=True, capture_output=True)


def ogg_pages(data: bytes) -> list[tuple[int, int]]:
    """(offset, length) of every page of a well-formed Ogg file."""
    pages = []
    pos = 0
    while pos + 27 <= len(data):
        assert data[pos : pos + 4] == b"OggS", f"no page at {pos}"
        nseg = data[pos + 26]
        size = 27 + nseg + sum(data[pos + 27 : pos + 27 + nseg])
        pages.append((pos, size))
        pos += size
    assert pos == len(data), "trailing bytes after the last page"
    return pages


def page_granule(data: bytes, offset: int) -> int:
    """Granule position of the page at ``offset``."""
    value: int = struct.unpack_from("<q", data, offset + 6)[0]
    return value


def packets_of(data: bytes) -> list[OggPacket]:
    """Every packet of a well-formed Ogg file (via the library's reader)."""
    return [item for item in OggReader().feed(data) if isinstance(item, OggPacket)]


def repage(
    data: bytes,
    *,
    max_segments: int = 255,
    packets_per_page: int = 1,
    edit_head: Callable[[OpusHead], OpusHead] | None = None,
) -> bytes:
    """Rewrite an Ogg Opus file (all chained links) with another page layout.

    Packet granules are rebuilt from the TOC durations; the last packet keeps the original
    final granule (end trimming). ``max_segments`` below 255 makes packets span pages.
    ``edit_head`` may change the OpusHead (e.g. its output gain).
    """
    out = bytearray()
    links: dict[int, list[OggPacket]] = {}
    order: list[int] = []
    for p in packets_of(data):
        if p.serial not in links:
            links[p.serial] = []
            order.append(p.serial)
        links[p.serial].append(p)
    for serial in order:
        packets = links[serial]
        writer = OggWriter(serial, max_segments=max_segments)
        head = packets[0].data
        if edit_head is not None:
            head = edit_head(OpusHead.parse(head)).to_bytes()
        writer.add(head, 0)
        out += writer.page()
        writer.add(packets[1].data, 0)
        out += writer.page()
        granule = 0
        audio = packets[2:]
        for i, p in enumerate(audio):
            granule += packet_samples(p.data)
            last = i == len(audio) - 1
            writer.add(p.data, p.granule if last else granule, eos=last and p.eos)
            if last or (i + 1) % packets_per_page == 0:
                out += writer.page()
    return bytes(out)


def read_wav_float(path: Path) -> npt.NDArray[np.float32]:
    """A 16-bit PCM WAV file as float32 (frames, channels) (enough for our sox/espeak files)."""
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF"
    assert raw[8:12] == b"WAVE"
    pos = 12
    channels = 1
    while pos + 8 <= len(raw):
        tag, size = raw[pos : pos + 4], struct.unpack_from("<I", raw, pos + 4)[0]
        if tag == b"fmt ":
            channels = struct.unpack_from("<H", raw, pos + 10)[0]
        if tag == b"data":
            pcm = np.frombuffer(raw[pos + 8 : pos + 8 + size], "<i2").astype(np.float32) / 32768
            return pcm.reshape(-1, channels)
        pos += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


class Corpus:
    """Generates and caches the test files in ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @functools.cache  # noqa: B019 - one Corpus per session; the cache lives as long as it does
    def source(self, name: str) -> Path:
        """A source WAV: ``speech``, ``short`` (espeak-ng) or a synthetic signal."""
        out = self.root / f"{name}.wav"
        if name in ("speech", "short"):
            text = SPEECH_TEXT if name == "speech" else SHORT_TEXT
            _run(["espeak-ng", "-w", str(out), text])
        else:
            rate, seconds, freqs = _SIGNALS[name]
            write_wav16(out, _signal(rate, seconds, freqs), rate)
        return out

    @functools.cache  # noqa: B019
    def opus(self, name: str) -> Path:
        """A named Ogg Opus file (see ``_RECIPES``; also ``chain``, ``chain_mixed``,
        ``repaged3``, ``repaged_cbr255``, ``repaged_cbr510``, ``gain``)."""
        out = self.root / f"{name}.opus"
        if name in _RECIPES:
            source, options = _RECIPES[name]
            _run(["opusenc", "--quiet", *options, str(self.source(source)), str(out)])
        elif name == "chain":
            out.write_bytes(self.data("short") + self.data("fs60"))
        elif name == "chain_mixed":
            out.write_bytes(self.data("short") + self.data("stereo"))
        elif name.startswith("repaged_"):
            # Few segments per page: every packet spans pages ([255, 0] lacing included).
            out.write_bytes(repage(self.data(name[len("repaged_") :]), max_segments=2))
        elif name == "repaged3":
            out.write_bytes(repage(self.data("speech"), max_segments=3, packets_per_page=4))
        elif name == "gain":
            out.write_bytes(
                repage(
                    self.data("short"),
                    packets_per_page=50,
                    edit_head=lambda h: OpusHead(
                        h.channels, h.pre_skip, h.input_sample_rate, output_gain=-6 * 256
                    ),
                )
            )
        else:
            raise KeyError(name)
        return out

    def data(self, name: str) -> bytes:
        return self.opus(name).read_bytes()

    @functools.cache  # noqa: B019
    def reference(self, name: str, rate: int = 48000) -> npt.NDArray[np.float32]:
        """``opusdec --float --rate RATE`` of a named file, (frames, channels)."""
        raw = self.root / f"{name}.{rate}.raw"
        _run(["opusdec", "--quiet", "--float", "--rate", str(rate), str(self.opus(name)), str(raw)])
        channels = _channels_of(self.data(name))
        return np.fromfile(raw, "<f4").reshape(-1, channels)


def _channels_of(data: bytes) -> int:
    """Output channels opusdec writes: the most of any link (it forces stereo on mixed chains)."""
    return max(OpusHead.parse(p.data).channels for p in packets_of(data) if p.first)


@functools.cache
def get_corpus() -> Corpus:
    """The session's corpus (created on first use, deleted when the process exits)."""
    root = Path(tempfile.mkdtemp(prefix="streamtts-corpus-"))
    atexit.register(shutil.rmtree, root, True)
    return Corpus(root)


def chunked(data: bytes, sizes: Iterable[int]) -> list[bytes]:
    """``data`` cut into pieces of the given sizes (cycled), the last piece taking the rest."""
    sizes = list(sizes)
    out = []
    pos = 0
    i = 0
    while pos < len(data):
        n = max(1, sizes[i % len(sizes)])
        out.append(data[pos : pos + n])
        pos += n
        i += 1
    return out
