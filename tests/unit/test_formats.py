"""Format detection from bytes and Content-Type, and the reader factory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.wavtools import build_wav, s16

from streamtts.errors import ProtocolError, UnsupportedFormat, UsageError
from streamtts.formats import (
    PLAYABLE_FORMATS,
    AudioReader,
    MediaType,
    detect_format,
    format_from_content_type,
    make_reader,
    parse_content_type,
    sniff,
)
from streamtts.wav import PcmReader, WavReader

WAV = build_wav(s16([1, 2, 3]))
MP3_FRAME = bytes([0xFF, 0xFB, 0x90, 0x64])  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz
ADTS = bytes([0xFF, 0xF1, 0x50, 0x80, 0x02, 0x1F, 0xFC])  # AAC LC, 44.1 kHz


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"OggS\x00\x02", "ogg"),
        (WAV, "wav"),
        (b"RF64\xff\xff\xff\xffWAVEds64", "wav"),
        (b"ID3\x04\x00", "mp3"),
        (MP3_FRAME, "mp3"),
        (ADTS, "aac"),
        (b"fLaC\x00\x00\x00\x22", "flac"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81", "webm"),
        (b"\x00\x00\x00\x20ftypM4A \x00\x00", "mp4"),
        (b"FORM\x00\x00\x10\x00AIFFCOMM", "aiff"),
        (b"RIFF\x00\x10\x00\x00AVI LIST", "riff"),
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"<!DOCTYPE html>\n<html>", "html"),
        (b"\xef\xbb\xbf  \n<HTML><HEAD>", "html"),
        (b'<?xml version="1.0"?><Error>', "xml"),
        (b'\n  {"error": {"message": "bad"}}', "json"),
        (b"[1, 2, 3]", "json"),
        (b"Internal Server Error\n", "text"),
        (bytes(range(16)), "unknown"),
    ],
)
def test_sniff_names_what_the_bytes_are(head: bytes, kind: str) -> None:
    found = sniff(head)
    assert found is not None
    assert found.kind == kind
    assert found.playable == (kind in PLAYABLE_FORMATS)


def test_detect_format_is_ogg_or_wav_and_none_otherwise() -> None:
    assert detect_format(b"OggS") == "ogg"
    assert detect_format(WAV[:12]) == "wav"
    assert detect_format(MP3_FRAME) is None
    assert detect_format(b"<html>") is None


@pytest.mark.parametrize(
    "head", [b"", b"O", b"Og", b"Ogg", b"R", b"RIFF", b"RIFF\x00\x00\x00\x00WA"]
)
def test_too_few_bytes_give_none_until_they_decide(head: bytes) -> None:
    assert sniff(head) is None
    assert detect_format(head) is None


def test_every_prefix_of_a_signature_waits_and_the_whole_one_decides() -> None:
    for data, kind in [(WAV, "wav"), (b"OggS\x00", "ogg"), (b"fLaC", "flac")]:
        decided = [sniff(data[:n]) for n in range(len(data) + 1)]
        first = next(i for i, found in enumerate(decided) if found is not None)
        assert all(found is None for found in decided[:first])
        assert all(found is not None and found.kind == kind for found in decided[first:])


def test_leading_blank_text_waits_for_the_first_character() -> None:
    assert sniff(b"  \r\n\t ") is None
    found = sniff(b"  \r\n\t ", final=True)
    assert found is not None
    assert found.kind == "text"
    assert sniff(b"<!DOC") is None  # could still become an HTML page


def test_final_always_decides() -> None:
    for head in [b"", b"O", b"RIFF", b"\xff", b"<"]:
        assert sniff(head, final=True) is not None


def test_error_bodies_are_quoted_in_the_description() -> None:
    found = sniff(b'{"error": {"message": "You exceeded your current quota", "type": "x"}}')
    assert found is not None
    assert "You exceeded your current quota" in found.description
    long_page = sniff(b"<html>" + b"word " * 200)
    assert long_page is not None
    assert len(long_page.description) < 200


def test_errors_are_unsupported_format_for_audio_and_protocol_error_otherwise() -> None:
    mp3 = sniff(b"ID3\x03")
    html = sniff(b"<html><body>Captive portal</body></html>")
    assert mp3 is not None
    assert html is not None
    assert isinstance(mp3.error(), UnsupportedFormat)
    assert "response_format" in str(mp3.error())
    err = html.error(expected="audio")
    assert type(err) is ProtocolError
    assert str(err).startswith("expected audio, got an HTML page")


@settings(max_examples=300, deadline=None)
@given(head=st.binary(max_size=600), final=st.booleans())
def test_sniff_never_raises_and_playable_means_ogg_or_wav(head: bytes, final: bool) -> None:
    found = sniff(head, final=final)
    if found is not None:
        assert found.playable == (found.kind in ("ogg", "wav"))
        assert found.description
    elif final:
        pytest.fail("final=True must decide")


@pytest.mark.parametrize(
    ("content_type", "fmt"),
    [
        ("audio/ogg; codecs=opus", "ogg"),
        ('audio/ogg; codecs="opus"', "ogg"),
        ("audio/opus", "ogg"),
        ("application/ogg", "ogg"),
        ("audio/ogg; codecs=vorbis", "vorbis"),
        ("audio/wav", "wav"),
        ("audio/x-wav", "wav"),
        ("AUDIO/WAVE", "wav"),
        ("audio/pcm", "pcm"),
        ("audio/L16;rate=24000;channels=1", "pcm"),
        ("audio/mpeg", "mp3"),
        ("audio/flac", "flac"),
        ("audio/aac", "aac"),
        ("text/html; charset=utf-8", "html"),
        ("application/json", "json"),
        ("application/problem+json", "json"),
        ("application/octet-stream", None),
        ("", None),
        (None, None),
        ("video/x-unknown", None),
    ],
)
def test_format_from_content_type(content_type: str | None, fmt: str | None) -> None:
    assert format_from_content_type(content_type) == fmt


def test_parse_content_type_reads_pcm_parameters() -> None:
    assert parse_content_type("audio/L16; rate=24000; channels=2") == MediaType(
        "pcm", "audio/l16", 24000, 2, "s16be"
    )
    assert parse_content_type("audio/L16;rate=16000") == MediaType(
        "pcm", "audio/l16", 16000, 1, "s16be"
    )
    assert parse_content_type("audio/pcm") == MediaType("pcm", "audio/pcm", None, None, "s16le")
    assert parse_content_type("audio/basic") == MediaType("pcm", "audio/basic", 8000, 1, "mulaw")
    assert parse_content_type("audio/L16;rate=abc") == MediaType(
        "pcm", "audio/l16", None, 1, "s16be"
    )
    assert parse_content_type("audio/wav") == MediaType("wav", "audio/wav")


def test_make_reader_builds_the_reader_of_each_playable_format() -> None:
    wav = make_reader("wav")
    assert isinstance(wav, WavReader)
    pcm = make_reader("pcm", pcm_rate=16000, pcm_channels=2, pcm_format="f32le")
    assert isinstance(pcm, PcmReader)
    assert (pcm.sample_rate, pcm.channels) == (16000, 2)
    (block,) = pcm.feed(np.zeros(4, "<f4").tobytes())
    assert block.shape == (2, 2)
    for reader in (wav, pcm):
        assert isinstance(reader, AudioReader)


def test_make_reader_for_ogg_is_the_opus_decoder_at_the_requested_rate() -> None:
    reader = make_reader("opus", sample_rate=24000)
    assert isinstance(reader, AudioReader)
    assert type(reader).__name__ == "OggOpusDecoder"
    assert reader.sample_rate == 24000


def test_make_reader_refuses_what_it_cannot_play() -> None:
    with pytest.raises(UnsupportedFormat, match="MP3"):
        make_reader("mp3")
    with pytest.raises(ProtocolError, match="HTML"):
        make_reader("html")
    with pytest.raises(UsageError):
        make_reader("nonsense")
    with pytest.raises(UsageError):
        make_reader("pcm", pcm_format="s12le")


def test_a_utf8_character_cut_by_the_chunk_end_is_still_text() -> None:
    head = '{"error": "Clé invalide"}'.encode()[:13]  # ends inside "é"
    found = sniff(head)
    assert found is not None
    assert found.kind == "json"
    invalid = sniff(b"abc\xff\xfe" + bytes(20))
    assert invalid is not None
    assert invalid.kind == "unknown"


def test_quiet_raw_pcm_does_not_look_like_mp3() -> None:
    for first_samples in ([-1, 3, 0, 0, 0, 0], [-1, -2, 5, 0, 0, 0], [0, 0, 0, 0, 0, 0]):
        head = np.array(first_samples, "<i2").tobytes()
        found = sniff(head)
        assert found is not None
        assert found.kind == "unknown", first_samples
