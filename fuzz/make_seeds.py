"""Seed corpora of the fuzz targets: small valid streams of every layout the readers handle.

Made at run time (nothing binary is committed): Ogg pages with `streamtts.ogg.build_page` /
`OggWriter`, Ogg Opus with the project's `OggOpusEncoder` (and with ``opusenc`` on espeak-ng
speech when those tools are installed: real encoder output), WAV with `wav_header` and hand-built
chunks. Each seed is a few kB at most, so that mutations stay cheap.

Usage::

    python fuzz/make_seeds.py [OUT]      # writes OUT/{ogg,opus,wav}/<name> (default fuzz/corpus)
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamtts.ogg import OggPacket, OggReader, OggWriter, build_page
from streamtts.wav import wav_header

__all__ = ["make_all", "ogg_seeds", "opus_seeds", "real_opus_seeds", "wav_seeds"]

# Seeds are this long: a few pages of audio, enough for every page layout (0.25 s at 20 ms per
# packet is 12 packets), small enough that one fuzz iteration stays in the millisecond range.
_SECONDS = 0.25


def _tone(rate: int, channels: int, seconds: float = _SECONDS) -> npt.NDArray[np.float32]:
    t = np.arange(int(rate * seconds)) / rate
    waves = [0.3 * np.sin(2 * np.pi * (330 + 110 * c) * t) for c in range(channels)]
    return np.stack(waves, axis=1).astype(np.float32)


def _encode(rate: int = 48000, channels: int = 1, **options: object) -> bytes:
    from streamtts.opus import OggOpusEncoder

    encoder = OggOpusEncoder(rate, channels, serial=0x5EED, **options)  # type: ignore[arg-type]
    return encoder.encode(_tone(rate, channels)) + encoder.finish()


def _repage(
    data: bytes, max_segments: int, serial: int = 0x5EED, *, head: bytes | None = None
) -> bytes:
    """The same Opus packets in pages of at most ``max_segments`` segments (packets then span
    pages), granules recomputed from the packet durations and the original final granule;
    with ``head``, that OpusHead packet replaces the original one."""
    from streamtts.opus import packet_samples

    items = [p for p in OggReader().feed(data) if isinstance(p, OggPacket)]
    writer = OggWriter(serial, max_segments=max_segments)
    out = bytearray()
    granule = 0
    for k, packet in enumerate(items):
        if k >= 2:
            granule += packet_samples(packet.data)
        last = k == len(items) - 1
        payload = head if head is not None and k == 0 else packet.data
        writer.add(payload, packet.granule if last else granule, eos=last)
        if k < 2:  # the headers each on their own page(s), as RFC 7845 requires
            out += writer.page()
    out += writer.flush()
    return bytes(out)


def opus_seeds() -> dict[str, bytes]:
    """Ogg Opus streams from `OggOpusEncoder`, in the layouts the decoder must handle."""
    seeds = {
        "mono48k-page20": _encode(page_ms=20),
        "mono48k-page100": _encode(page_ms=100),
        "mono48k-fs2.5": _encode(frame_ms=2.5, page_ms=20, bitrate=24000),
        "mono48k-fs60": _encode(frame_ms=60, page_ms=120),
        "stereo48k": _encode(channels=2, page_ms=60),
        "mono24k-padding": _encode(rate=24000, padding=700, page_ms=40),
        "mono16k-fec": _encode(rate=16000, fec=True, page_ms=40, bitrate=16000),
    }
    # 128 kb/s: 320-byte packets, which span pages of one segment each.
    seeds["spanning-pages"] = _repage(_encode(page_ms=100, bitrate=128000), max_segments=1)
    seeds["chained-truncated-link"] = seeds["mono48k-page20"][:1200] + seeds["stereo48k"]
    seeds["chained-whole"] = seeds["mono48k-page100"] + seeds["stereo48k"]
    vorbis = build_page(77, 0, 0, [b"\x01vorbis" + bytes(22)], bos=True)
    head = seeds["mono48k-page20"]
    first_page = 27 + head[26] + sum(head[27 : 27 + head[26]])
    seeds["grouped-with-vorbis"] = head[:first_page] + vorbis + head[first_page:]
    # Mapping family 1 (the multistream decoder): the stereo stream's packets are valid
    # one-stream (coupled) multistream packets.
    from streamtts.opus import OpusHead

    stereo = OpusHead.parse(OggReader().feed(seeds["stereo48k"])[0].data)  # type: ignore[union-attr]
    family1 = OpusHead(2, stereo.pre_skip, 48000, 0, 1, 1, 1, (0, 1)).to_bytes()
    seeds["family1-stereo"] = _repage(seeds["stereo48k"], 255, head=family1)
    # Bodies that are not Ogg, for the decoder's diagnosis of what it got instead.
    seeds["not-ogg-wav"] = wav_header(24000, 1) + bytes(64)
    seeds["not-ogg-html"] = b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>"
    return seeds


def real_opus_seeds(directory: Path) -> dict[str, bytes]:
    """``opusenc`` output of a short espeak-ng phrase (real encoder layouts: 1 s pages, 512 B
    tag padding; and one packet per page) and of a 3-channel tone (mapping family 1). Empty if
    the tools are not installed."""
    espeak, opusenc = shutil.which("espeak-ng"), shutil.which("opusenc")
    if espeak is None or opusenc is None:
        return {}
    wav = directory / "speech.wav"
    subprocess.run([espeak, "-w", str(wav), "Hi there."], check=True, timeout=60)
    surround = directory / "tone3.wav"  # 3 channels: opusenc writes mapping family 1
    with wave.open(str(surround), "wb") as out_wav:
        out_wav.setnchannels(3)
        out_wav.setsampwidth(2)
        out_wav.setframerate(48000)
        out_wav.writeframes((_tone(48000, 3, 0.1) * 32767).astype("<i2").tobytes())
    out = {}
    # 12 kb/s keeps the speech small; the 3-channel file needs 64 (below ~16 kb/s per channel
    # opusenc downmixes to stereo).
    for name, source, extra in (
        ("opusenc-default", wav, ["--bitrate", "12"]),
        ("opusenc-lowdelay", wav, ["--bitrate", "12", "--max-delay", "20"]),
        ("opusenc-3ch", surround, ["--bitrate", "64"]),
    ):
        target = directory / f"{name}.opus"
        subprocess.run(
            [opusenc, "--quiet", *extra, str(source), str(target)],
            check=True,
            timeout=60,
        )
        out[name] = target.read_bytes()
    return out


def ogg_seeds() -> dict[str, bytes]:
    """Ogg framing layouts: packet sizes at the lacing edges, packets spanning pages, two
    interleaved streams, empty pages, sequence wrap-around."""
    seeds: dict[str, bytes] = {}
    sizes = [0, 1, 254, 255, 256, 510, 600]
    for max_segments in (255, 3, 1):
        writer = OggWriter(1, max_segments=max_segments)
        out = bytearray()
        for k, n in enumerate(sizes):
            writer.add(bytes([k + 1]) * n, 960 * (k + 1), eos=k == len(sizes) - 1)
            if k % 2:
                out += writer.page()
        out += writer.flush()
        seeds[f"sizes-maxseg{max_segments}"] = bytes(out)
    a = [build_page(10, k, 960 * k, [bytes([k]) * 40], bos=k == 0) for k in range(4)]
    b = [build_page(20, k, 480 * k, [bytes([k]) * 30, b"z"], bos=k == 0) for k in range(4)]
    seeds["interleaved"] = b"".join(x for pair in zip(a, b, strict=True) for x in pair)
    seeds["empty-pages"] = b"".join(
        (
            build_page(5, 0, 0, [b"head"], bos=True),
            build_page(5, 1, -1, []),
            build_page(5, 2, 960, [b"x" * 255, b""]),
            build_page(5, 3, 960, [], eos=True),
        )
    )
    seeds["sequence-wrap"] = b"".join(
        build_page(6, (0xFFFFFFFE + k) & 0xFFFFFFFF, 960 * k, [b"w" * 10]) for k in range(4)
    )
    seeds["long-packet"] = b"".join(
        (
            build_page(7, 0, -1, [b"L" * 255] * 20, bos=True),
            build_page(7, 1, 1000, [b"L" * 255] * 3 + [b"end"], continued=True, eos=True),
        )
    )
    seeds["garbage-between"] = a[0] + b"\x00OggS junk" * 3 + a[1] + a[2]
    return seeds


def _chunk(tag: bytes, body: bytes, size: int | None = None) -> bytes:
    out = tag + struct.pack("<I", len(body) if size is None else size) + body
    return out + b"\0" if len(body) % 2 else out


def wav_seeds() -> dict[str, bytes]:
    """WAV in every sample format, sized and streaming; metadata chunks, odd sizes, extensible,
    RF64, one WAV after another; and bodies that are not WAV (for the sniffer)."""
    seeds: dict[str, bytes] = {}
    ramp = np.linspace(-1, 1, 16, dtype=np.float32)
    frames = {
        "u8": ((ramp * 127) + 128).astype(np.uint8).tobytes(),
        "s16le": (ramp * 32767).astype("<i2").tobytes(),
        "s24le": b"".join(int(v * 8388607).to_bytes(3, "little", signed=True) for v in ramp),
        "s32le": (ramp * 2147483000).astype("<i4").tobytes(),
        "f32le": ramp.astype("<f4").tobytes(),
        "f64le": ramp.astype("<f8").tobytes(),
        "alaw": bytes(range(0, 256, 16)),
        "mulaw": bytes(range(0, 256, 16)),
    }
    for fmt, data in frames.items():
        seeds[f"{fmt}-sized"] = wav_header(8000, 1, sample_format=fmt, frames=16) + data
        seeds[f"{fmt}-streaming"] = wav_header(8000, 1, sample_format=fmt) + data
    stereo = frames["s16le"]
    seeds["s16le-stereo"] = wav_header(24000, 2, frames=8) + stereo
    fmt16 = struct.pack("<HHIIHH", 1, 1, 24000, 48000, 2, 16)
    body = (
        b"WAVE" + _chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00tts\x00\x00") + _chunk(b"fmt ", fmt16)
    )
    body += _chunk(b"fact", b"\x10\x00\x00\x00") + _chunk(b"data", stereo[:15])  # odd: pad byte
    seeds["metadata-odd"] = b"RIFF" + struct.pack("<I", len(body)) + body + _chunk(b"LIST", b"x")
    guid = struct.pack("<H", 1) + bytes.fromhex("000000001000800000aa00389b71")
    extensible = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 16000, 32000, 2, 16, 22, 16, 4) + guid
    seeds["extensible"] = (
        b"RIFF\xff\xff\xff\xffWAVE" + _chunk(b"fmt ", extensible) + _chunk(b"data", stereo)
    )
    ds64 = struct.pack("<QQQI", 0, len(stereo), 16, 0)
    seeds["rf64"] = (
        b"RF64\xff\xff\xff\xffWAVE"
        + _chunk(b"ds64", ds64)
        + _chunk(b"fmt ", fmt16)
        + _chunk(b"data", stereo, size=0xFFFFFFFF)
    )
    seeds["two-wavs"] = seeds["s16le-sized"] + seeds["f32le-sized"]
    seeds["html"] = b"<!DOCTYPE html><html><head><title>Portal</title></head></html>"
    seeds["json"] = b'{"error": {"message": "rate limited", "code": 429}}'
    seeds["ogg-head"] = b"OggS\x00\x02" + bytes(22)
    seeds["id3"] = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(20)
    seeds["riff-avi"] = b"RIFF\x10\x00\x00\x00AVI LIST" + bytes(8)
    # Content-Type values: each input also goes through parse_content_type (as Latin-1 text).
    seeds["ct-l16"] = b"audio/L16; rate=24000; channels=1"
    seeds["ct-ogg"] = b'audio/ogg; codecs="opus"'
    seeds["ct-problem-json"] = b"application/problem+json; charset=utf-8"
    return seeds


def make_all(directory: Path | None = None) -> dict[str, dict[str, bytes]]:
    """Every target's seeds: ``{"ogg": {...}, "opus": {...}, "wav": {...}}``.

    Args:
        directory: A scratch folder for the opusenc seeds (a temporary one if None).
    """
    opus = opus_seeds()
    with tempfile.TemporaryDirectory() as scratch:
        opus |= real_opus_seeds(directory or Path(scratch))
    ogg = ogg_seeds() | {f"opus-{k}": v for k, v in opus.items() if "page20" in k or "span" in k}
    return {"ogg": ogg, "opus": opus, "wav": wav_seeds()}


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent / "corpus"
    for target, seeds in make_all().items():
        folder = out / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / f"seed-{name}").write_bytes(data)
        print(f"{folder}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
