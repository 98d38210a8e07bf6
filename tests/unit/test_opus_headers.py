"""OpusHead / OpusTags parsing and serialization, and TOC packet durations."""

from __future__ import annotations

import ctypes
import struct
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamtts.errors import ProtocolError, UnsupportedFormat, UsageError
from streamtts.opus import OpusHead, OpusTags, packet_samples

MONO = b"OpusHead" + bytes([1, 1, 0x38, 0x01, 0x80, 0xBB, 0, 0, 0, 0, 0])  # as opusenc writes


def _head(version: int = 1, channels: int = 2, family: int = 0, table: bytes = b"") -> bytes:
    return b"OpusHead" + struct.pack("<BBHIhB", version, channels, 312, 44100, -512, family) + table


def test_mono_head_parses_every_field() -> None:
    head = OpusHead.parse(MONO)
    assert head == OpusHead(1, pre_skip=312, input_sample_rate=48000, output_gain=0)
    assert head.stream_count == 1
    assert head.coupled_count == 0
    assert head.channel_mapping == (0,)


def test_stereo_head_with_gain_round_trips() -> None:
    data = _head()
    head = OpusHead.parse(data)
    assert head.channels == 2
    assert head.pre_skip == 312
    assert head.input_sample_rate == 44100
    assert head.gain_db == -2.0
    assert head.coupled_count == 1
    assert head.channel_mapping == (0, 1)
    assert head.to_bytes() == data


def test_family_one_head_keeps_its_mapping_table() -> None:
    data = _head(channels=3, family=1, table=bytes([2, 1, 0, 2, 1]))
    head = OpusHead.parse(data)
    assert (head.stream_count, head.coupled_count, head.channel_mapping) == (2, 1, (0, 2, 1))
    assert head.to_bytes() == data


def test_unknown_mapping_family_parses_for_the_decoder_to_reject() -> None:
    head = OpusHead.parse(_head(channels=1, family=255, table=bytes([1, 0, 0])))
    assert head.mapping_family == 255


@pytest.mark.parametrize("version", [16, 17, 255])
def test_incompatible_versions_are_unsupported(version: int) -> None:
    with pytest.raises(UnsupportedFormat):
        OpusHead.parse(_head(version=version))


@pytest.mark.parametrize("version", [0, 1, 15])
def test_compatible_versions_parse(version: int) -> None:
    assert OpusHead.parse(_head(version=version)).version == version


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_head(channels=0), "0 channels"),
        (_head(channels=3), "family 0"),
        (_head(channels=3, family=1, table=bytes([2, 1, 0])), "truncated"),
        (_head(channels=2, family=1, table=bytes([0, 0, 0, 0])), "streams"),
        (_head(channels=2, family=1, table=bytes([1, 2, 0, 1])), "streams"),
        (_head(channels=2, family=1, table=bytes([1, 1, 0, 2])), "maps a channel"),
        (_head(channels=9, family=1, table=bytes([9, 0, *range(9)])), "max 8"),
        (b"OpusHeaX" + _head()[8:], "not an OpusHead"),
    ],
)
def test_inconsistent_heads_are_protocol_errors(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        OpusHead.parse(data)


def test_every_truncation_of_a_head_is_a_protocol_error() -> None:
    data = _head(channels=3, family=1, table=bytes([2, 1, 0, 2, 1]))
    for n in range(len(data)):
        with pytest.raises(ProtocolError):
            OpusHead.parse(data[:n])


def test_silent_channels_255_are_allowed_in_the_table() -> None:
    head = OpusHead.parse(_head(channels=2, family=1, table=bytes([1, 0, 0, 255])))
    assert head.channel_mapping == (0, 255)


def _tags(vendor: bytes, comments: list[bytes], extra: bytes = b"") -> bytes:
    out = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(comments))
    for c in comments:
        out += struct.pack("<I", len(c)) + c
    return out + extra


def test_tags_parse_vendor_comments_and_padding() -> None:
    data = _tags(b"libopus 1.3.1", [b"ENCODER=opusenc", b"title=T\xc3\xa9st"], b"\0" * 512)
    tags = OpusTags.parse(data)
    assert tags.vendor == "libopus 1.3.1"
    assert tags.comments == ("ENCODER=opusenc", "title=Tést")
    assert tags.get("TITLE") == ["Tést"]
    assert tags.get("artist") == []
    assert tags.extra == b"\0" * 512
    assert tags.to_bytes() == data


def test_tags_with_a_huge_comment_count_fail_before_allocating() -> None:
    data = b"OpusTags" + struct.pack("<I", 0) + struct.pack("<I", 0xFFFFFFFF)
    with pytest.raises(ProtocolError, match="comment count"):
        OpusTags.parse(data)


@pytest.mark.parametrize(
    "data",
    [
        b"OpusTags" + struct.pack("<I", 1000) + b"short",
        b"OpusTags" + struct.pack("<I", 0) + struct.pack("<I", 1) + struct.pack("<I", 99) + b"x",
        b"OpusTagz" + bytes(8),
        b"OpusTags",
    ],
)
def test_tags_lengths_running_past_the_packet_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        OpusTags.parse(data)


def test_every_truncation_of_tags_is_a_protocol_error() -> None:
    data = _tags(b"v", [b"A=1", b"B=22"])
    for n in range(len(data)):
        with pytest.raises(ProtocolError):
            OpusTags.parse(data[:n])


def test_invalid_utf8_in_tags_is_replaced_not_fatal() -> None:
    assert OpusTags.parse(_tags(b"\xff\xfe", [b"K=\x80"])).vendor == "\ufffd\ufffd"


@given(st.binary(max_size=80))
def test_head_parser_raises_only_protocol_errors(data: bytes) -> None:
    try:
        head = OpusHead.parse(b"OpusHead" + data)
    except ProtocolError:
        return
    assert OpusHead.parse(head.to_bytes()) == head


@given(st.binary(max_size=80))
def test_tags_parser_raises_only_protocol_errors(data: bytes) -> None:
    try:
        tags = OpusTags.parse(b"OpusTags" + data)
    except ProtocolError:
        return
    assert tags.to_bytes() == b"OpusTags" + data


# ---- TOC durations ---------------------------------------------------------------------------


def _libopus_nb_samples(packet: bytes, rate: int) -> int:
    from streamtts._backends import load_opuslib

    proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32)
    fn = proto(("opus_packet_get_nb_samples", load_opuslib().api.libopus))
    result: int = fn(packet, len(packet), rate)
    return result


@pytest.mark.parametrize("rate", [8000, 12000, 16000, 24000, 48000])
def test_packet_samples_match_libopus_for_every_toc_and_count(rate: int) -> None:
    for toc in range(256):
        counts = range(64) if toc & 3 == 3 else [0]
        for count in counts:
            packet = bytes([toc, count, 0, 0])
            expected = _libopus_nb_samples(packet, rate)
            if expected <= 0:  # invalid (> 120 ms), or libopus's 0 for a zero frame count
                with pytest.raises(ProtocolError):
                    packet_samples(packet, rate)
            else:
                assert packet_samples(packet, rate) == expected, (toc, count)


@pytest.mark.parametrize(
    ("toc", "ms"),
    [(0 << 3, 10), (1 << 3, 20), (2 << 3, 40), (3 << 3, 60), (12 << 3, 10), (13 << 3, 20)]
    + [((16 + i) << 3, ms) for i, ms in enumerate([2.5, 5, 10, 20])],
)
def test_frame_durations_of_silk_hybrid_and_celt_configs(toc: int, ms: float) -> None:
    assert packet_samples(bytes([toc])) == int(ms * 48)
    assert packet_samples(bytes([toc | 1])) == int(2 * ms * 48)  # code 1: two frames
    assert packet_samples(bytes([toc | 2, 0])) == int(2 * ms * 48)  # code 2: two frames


@pytest.mark.parametrize("packet", [b"", b"\x03", b"\x03\x00", bytes([(3 << 3) | 3, 3])])
def test_malformed_toc_is_a_protocol_error(packet: bytes) -> None:
    with pytest.raises(ProtocolError):
        packet_samples(packet)


def test_packet_samples_rejects_a_non_opus_rate() -> None:
    with pytest.raises(UsageError):
        packet_samples(b"\x08", 44100)


def test_headers_work_without_libopus_and_decoding_names_what_to_install() -> None:
    code = textwrap.dedent(
        """
        import ctypes.util
        ctypes.util.find_library = lambda name: None
        from streamtts import BackendUnavailable
        from streamtts.ogg import OggWriter
        from streamtts.opus import OggOpusDecoder, OpusHead, packet_samples
        head = OpusHead(1, pre_skip=312)
        assert OpusHead.parse(head.to_bytes()) == head and packet_samples(b"\\x08") == 960
        writer = OggWriter(1)
        writer.add(head.to_bytes(), 0)
        try:
            OggOpusDecoder().feed(writer.page())
        except BackendUnavailable as exc:
            print(exc)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "libopus" in proc.stdout
