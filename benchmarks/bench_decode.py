"""Ogg Opus decode speed and first-PCM latency; prints JSON.

1. Throughput (× real time) of demux + decode of 48 kHz mono speech (espeak-ng → opusenc,
   ~20 s, 1 s pages) fed in 4 kB chunks: `OggOpusDecoder` (libopus through ctypes into a reused
   buffer) side by side with the same `OggReader` feeding the ``opuslib.Decoder`` class (one
   ctypes buffer allocated per packet), best of several runs each, alternated.
2. First-PCM point with 1 s pages: bytes (and ms of a real-time-paced delivery, computed from
   the byte offset and the stream's average bitrate, not slept) that must arrive before the
   first PCM comes out, with early packet release vs. a whole-page demuxer (the same decoder
   given each page only once it is complete).

Run: ``.venv/bin/python benchmarks/bench_decode.py`` (needs espeak-ng and opusenc).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from streamtts.ogg import OggPacket, OggReader
from streamtts.opus import OggOpusDecoder, OpusHead

TEXT = (
    "Streaming speech synthesis should start quickly and never stutter, even when the network "
    "is slow. The decoder hands each packet to the audio device as soon as its bytes arrive. "
) * 3
CHUNK = 4096  # a typical network read
REPEATS = 5  # best of: the machine is shared, the minimum is the least disturbed run


def make_speech(folder: Path) -> bytes:
    wav, opus = folder / "speech.wav", folder / "speech.opus"
    subprocess.run(["espeak-ng", "-w", str(wav), TEXT], check=True, capture_output=True)
    subprocess.run(["opusenc", "--quiet", str(wav), str(opus)], check=True, capture_output=True)
    return opus.read_bytes()


def run_ours(data: bytes) -> int:
    decoder = OggOpusDecoder(48000)
    frames = 0
    for i in range(0, len(data), CHUNK):
        for block in decoder.feed(data[i : i + CHUNK]):
            frames += len(block)
    for block in decoder.close():
        frames += len(block)
    return frames


def run_opuslib_class(data: bytes) -> int:
    """Same demuxer, opuslib's Decoder class, pre-skip applied (no end trim: within 20 ms)."""
    import opuslib

    reader = OggReader()
    decoder = None
    skip = 0
    frames = 0
    seen = 0
    for i in range(0, len(data), CHUNK):
        for item in reader.feed(data[i : i + CHUNK]):
            if not isinstance(item, OggPacket):
                continue
            seen += 1
            if seen == 1:
                head = OpusHead.parse(item.data)
                decoder = opuslib.Decoder(48000, head.channels)
                skip = head.pre_skip
            elif seen > 2 and decoder is not None:
                pcm = np.frombuffer(decoder.decode_float(item.data, 5760), np.float32)
                drop = min(skip, len(pcm))
                skip -= drop
                frames += len(pcm) - drop
    return frames


def throughput(data: bytes) -> dict[str, float]:
    seconds = run_ours(data) / 48000
    best = {"streamtts": float("inf"), "opuslib_class": float("inf")}
    for _ in range(REPEATS):
        for name, fn in (("streamtts", run_ours), ("opuslib_class", run_opuslib_class)):
            start = time.perf_counter()
            fn(data)
            best[name] = min(best[name], time.perf_counter() - start)
    return {
        "audio_s": round(seconds, 3),
        "bytes": len(data),
        "streamtts_x_realtime": round(seconds / best["streamtts"], 1),
        "opuslib_class_x_realtime": round(seconds / best["opuslib_class"], 1),
        "speedup": round(best["opuslib_class"] / best["streamtts"], 2),
    }


def first_pcm_offset(data: bytes, *, whole_pages: bool) -> int:
    """Bytes received when the first PCM comes out (input delivered byte by byte)."""
    decoder = OggOpusDecoder(48000)
    if not whole_pages:
        for i in range(len(data)):
            if decoder.feed(data[i : i + 1]):
                return i + 1
        return len(data)
    pos = 0
    while pos < len(data):  # hand over one complete page at a time
        nseg = data[pos + 26]
        end = pos + 27 + nseg + sum(data[pos + 27 : pos + 27 + nseg])
        if decoder.feed(data[pos:end]):
            return end
        pos = end
    return len(data)


def first_pcm(data: bytes) -> dict[str, float]:
    duration = run_ours(data) / 48000
    bytes_per_s = len(data) / duration  # real-time-paced delivery at the stream's bitrate
    headers = 0
    for _ in range(2):  # OpusHead and OpusTags pages (opusenc: one page each)
        nseg = data[headers + 26]
        headers += 27 + nseg + sum(data[headers + 27 : headers + 27 + nseg])
    early = first_pcm_offset(data, whole_pages=False)
    page = first_pcm_offset(data, whole_pages=True)
    return {
        "page_ms": 1000,
        "bitrate_kbps": round(8 * bytes_per_s / 1000, 1),
        "header_pages_bytes": headers,
        "early_release_bytes": early,
        "early_release_ms": round(1000 * early / bytes_per_s, 1),
        "whole_page_bytes": page,
        "whole_page_ms": round(1000 * page / bytes_per_s, 1),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        data = make_speech(Path(folder))
    result = {"throughput_4k_chunks": throughput(data), "first_pcm_realtime_feed": first_pcm(data)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
