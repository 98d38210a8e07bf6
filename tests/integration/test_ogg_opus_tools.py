"""The Ogg layer against opus-tools: real opusenc files read identically under every split, and
files re-paged by `OggWriter` (packets spanning pages) are accepted by opusinfo and decode
bit-identically with opusdec."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.oggtools import (
    events,
    make_opus_file,
    packets,
    parse_pages,
    read_every_split,
    reference_packets,
    require_tool,
)

from streamtts.ogg import OggReader, OggWriter

TEXT = "The quick brown fox jumps over the lazy dog. Streaming speech starts at once."


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ogg")
    # 1-second pages (opusenc's default), and large packets (60 ms at 256 kbps: ~1900 bytes,
    # several lacing segments each) so that re-paging makes packets span pages.
    (folder / "default.opus").write_bytes(make_opus_file(folder, TEXT, name="default"))
    big = make_opus_file(
        folder, TEXT, name="big", extra_args=["--bitrate", "256", "--framesize", "60"]
    )
    (folder / "big.opus").write_bytes(big)
    return folder


def test_opusenc_file_reads_identically_to_a_whole_file_parse_under_every_split(
    speech: Path,
) -> None:
    data = (speech / "default.opus").read_bytes()
    items = read_every_split(data)
    assert events(items) == []
    got = packets(items)
    assert [(p.serial, p.data, p.granule) for p in got] == reference_packets(data)
    # OpusHead (BOS page) waits for its CRC; everything after it is released early.
    assert [p.verified for p in got] == [p.page_sequence == 0 for p in got]
    assert got[-1].eos


def test_first_audio_packet_of_a_one_second_page_is_released_before_the_page_completes(
    speech: Path,
) -> None:
    data = (speech / "default.opus").read_bytes()
    pages = parse_pages(data)
    audio_page = pages[2]
    assert len(audio_page.lacing) >= 40  # a ~1 s page of 20 ms packets
    reader = OggReader()
    reader.feed(data[: audio_page.offset])
    first_at = None
    for i in range(audio_page.offset, audio_page.offset + audio_page.size):
        if packets(reader.feed(data[i : i + 1])):
            first_at = i + 1 - audio_page.offset
            break
    assert first_at is not None
    assert first_at == 27 + len(audio_page.lacing) + audio_page.lacing[0]
    assert first_at < audio_page.size // 10


def _samples_48k(packet: bytes) -> int:
    """Samples (48 kHz) of an Opus packet, from its TOC byte (RFC 6716 §3.1)."""
    config = packet[0] >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        frame = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        frame = (480, 960)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        frame = (120, 240, 480, 960)[config & 3]
    code = packet[0] & 3
    frames = 1 if code == 0 else 2 if code < 3 else packet[1] & 0x3F
    return frame * frames


def _repage(data: bytes, max_segments: int) -> bytes:
    """The same stream with every audio packet re-laid on pages of ``max_segments`` segments."""
    original = reference_packets(data)
    writer = OggWriter(0x5EED, max_segments=max_segments)
    writer.add(original[0][1], 0)
    out = writer.page()  # OpusHead alone on the first page, OpusTags ends its own page
    writer.add(original[1][1], 0)
    out += writer.page()
    pages = parse_pages(data)
    first_audio = pages[2]
    on_first_page = sum(1 for v in first_audio.lacing if v < 255)
    durations = [_samples_48k(p[1]) for p in original[2:]]
    granule = first_audio.granule - sum(durations[:on_first_page])
    final = pages[-1].granule
    for k, (_, packet, _) in enumerate(original[2:]):
        granule += durations[k]
        last = k == len(original) - 3
        writer.add(packet, final if last else granule, eos=last)
    return out + writer.flush()


def test_repaged_file_with_packets_spanning_pages_is_accepted_and_decodes_identically(
    speech: Path,
) -> None:
    opusinfo, opusdec = require_tool("opusinfo"), require_tool("opusdec")
    data = (speech / "big.opus").read_bytes()
    repaged = _repage(data, max_segments=3)
    pages = parse_pages(repaged)
    assert any(p.flags & 1 for p in pages), "no packet spans pages"
    assert any(p.granule == -1 for p in pages)
    (speech / "repaged.opus").write_bytes(repaged)

    info = subprocess.run(
        [opusinfo, str(speech / "repaged.opus")], capture_output=True, text=True, timeout=60
    )
    assert info.returncode == 0, info.stdout + info.stderr
    assert "WARNING" not in info.stdout + info.stderr

    def decode(name: str) -> bytes:
        out = speech / f"{name}.raw"
        subprocess.run(
            [opusdec, "--quiet", "--rate", "48000", "--float", str(speech / name), str(out)],
            check=True,
            timeout=60,
        )
        return out.read_bytes()

    assert decode("repaged.opus") == decode("big.opus")
    # And our reader gives back the same packets from the re-paged file.
    items = read_every_split(repaged)
    assert events(items) == []
    assert [p.data for p in packets(items)] == [p[1] for p in reference_packets(data)]
