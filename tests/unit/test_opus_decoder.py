"""OggOpusDecoder behaviours on streams built here (OggOpusEncoder packets, hand-made pages)."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.corpus import chunked, packets_of

from streamtts.errors import ProtocolError, UnsupportedFormat, UsageError
from streamtts.events import DataLost, HeaderReceived, StreamEnded, SyncLost
from streamtts.ogg import OggWriter, build_page
from streamtts.opus import OggOpusDecoder, OggOpusEncoder, OpusHead, OpusTags, decode_opus_stream

Pcm = npt.NDArray[np.float32]
RATES = [8000, 12000, 16000, 24000, 48000]


def _signal(seconds: float, rate: int = 48000, channels: int = 1, seed: int = 0) -> Pcm:
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 300 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2
    noise = 0.05 * rng.standard_normal(len(t))
    return np.repeat((tone + noise)[:, None], channels, axis=1).astype(np.float32)


def _packets(seconds: float = 0.5, channels: int = 1) -> tuple[OpusHead, list[bytes]]:
    """An OpusHead and the audio packets (20 ms each) of an encoded test signal."""
    encoder = OggOpusEncoder(48000, channels, serial=1)
    data = encoder.encode(_signal(seconds, channels=channels)) + encoder.finish()
    packets = packets_of(data)
    return OpusHead.parse(packets[0].data), [p.data for p in packets[2:]]


def _stream(
    head: OpusHead,
    packets: list[bytes],
    *,
    serial: int = 7,
    per_page: int = 1,
    granules: list[int] | None = None,
    final: int | None = None,
    eos: bool = True,
    tags: OpusTags | None = None,
) -> bytes:
    """Build an Ogg Opus stream; granules default to the running 20 ms packet count."""
    writer = OggWriter(serial)
    writer.add(head.to_bytes(), 0)
    out = writer.page()
    writer.add((tags or OpusTags("test")).to_bytes(), 0)
    out += writer.page()
    if granules is None:
        granules = [960 * (i + 1) for i in range(len(packets))]
    for i, packet in enumerate(packets):
        last = i == len(packets) - 1
        granule = final if last and final is not None else granules[i]
        writer.add(packet, granule, eos=last and eos)
        if last or (i + 1) % per_page == 0:
            out += writer.page()
    return out


def _decode(data: bytes, rate: int = 48000, chunk: int = 0) -> tuple[Pcm, OggOpusDecoder]:
    decoder = OggOpusDecoder(rate)
    blocks: list[Pcm] = []
    for piece in chunked(data, [chunk]) if chunk else [data]:
        blocks += decoder.feed(piece)
    blocks += decoder.close()
    out = np.concatenate(blocks) if blocks else np.zeros((0, decoder.channels or 1), np.float32)
    assert decoder.position == len(out)
    return out, decoder


def _raw(head: OpusHead, packets: list[bytes], rate: int = 48000) -> Pcm:
    """Every decoded sample, nothing dropped (reference through our decoder with pre-skip 0
    and no end trim)."""
    data = _stream(replace(head, pre_skip=0), packets, eos=False)
    return _decode(data, rate)[0]


def _holes(decoder: OggOpusDecoder) -> list[DataLost]:
    return [e for e in decoder.events if isinstance(e, DataLost)]


# ---- timing: pre-skip, trimming, start ------------------------------------------------------


@pytest.mark.parametrize("rate", RATES)
def test_pre_skip_is_dropped_exactly_once_at_every_rate(rate: int) -> None:
    head, packets = _packets()
    raw = _raw(head, packets, rate)
    data = _stream(replace(head, pre_skip=1200), packets, per_page=5, eos=False)
    k = 48000 // rate
    for chunk in (0, 1, 7, 300):
        out, _ = _decode(data, rate, chunk)
        assert np.array_equal(out, raw[1200 // k :]), chunk


@pytest.mark.parametrize("rate", RATES)
def test_end_trim_on_the_eos_page_gives_final_granule_minus_pre_skip(rate: int) -> None:
    head, packets = _packets()
    final = 960 * len(packets) - 700
    data = _stream(head, packets, per_page=4, final=final)
    raw = _raw(head, packets, rate)
    k = 48000 // rate
    expected = raw[-(-head.pre_skip // k) :][: (final - head.pre_skip) // k]
    for chunk in (0, 1, 13):
        out, decoder = _decode(data, rate, chunk)
        assert np.array_equal(out, expected), chunk
        ended = decoder.events[-1]
        assert isinstance(ended, StreamEnded)
        assert ended.position == len(expected)


def test_trim_of_several_whole_packets_never_emits_trimmed_samples_early() -> None:
    head, packets = _packets()
    packets = packets[:25]
    final = 960 * (len(packets) - 3) - 100  # the EOS page holds 5 packets, 3.1 of them trimmed
    data = _stream(head, packets, per_page=5, final=final)
    expected = _raw(head, packets)[head.pre_skip : final]
    decoder = OggOpusDecoder()
    emitted = 0
    for byte in chunked(data, [1]):
        emitted += sum(len(b) for b in decoder.feed(byte))
        assert emitted <= len(expected)
    out, _ = _decode(data, chunk=1)
    assert np.array_equal(out, expected)


def test_end_trim_applies_only_on_the_eos_page() -> None:
    head, packets = _packets()
    granules = [960 * (i + 1) for i in range(len(packets))]
    granules[9] -= 500  # a smaller granule on an ordinary page: not a trim
    out, _ = _decode(_stream(head, packets, granules=granules, eos=False))
    assert np.array_equal(out, _raw(head, packets)[head.pre_skip :])


def test_stream_starting_at_a_later_granule_is_not_padded() -> None:
    head, packets = _packets()
    offset = 48000 * 3
    granules = [offset + 960 * (i + 1) for i in range(len(packets))]
    data = _stream(head, packets, granules=granules, final=granules[-1] - 300)
    out, decoder = _decode(data, chunk=9)
    assert len(out) == 960 * len(packets) - 300 - head.pre_skip
    assert not _holes(decoder)


def test_invalid_first_granule_on_a_non_eos_page_does_not_stop_playback() -> None:
    head, packets = _packets()
    granules = [960 * (i + 1) - 48000 for i in range(len(packets))]  # smaller than its samples
    out, _ = _decode(_stream(head, packets, granules=granules, eos=False))
    assert np.array_equal(out, _raw(head, packets)[head.pre_skip :])


def test_single_eos_page_shorter_than_its_packets_is_trimmed_at_the_end() -> None:
    head, packets = _packets(0.1)
    data = _stream(head, packets, per_page=100, final=1000)
    out, _ = _decode(data)
    assert np.array_equal(out, _raw(head, packets)[head.pre_skip : 1000])


# ---- loss --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 48000])
def test_missing_pages_are_concealed_for_their_duration(rate: int) -> None:
    head, packets = _packets()
    full = _stream(head, packets, per_page=2)
    # Drop the page holding packets 6 and 7 (pages: head, tags, then 2 packets each).
    pages = _page_spans(full)
    start, end = pages[2 + 3]
    out_full, _ = _decode(full, rate)
    for chunk in (0, 1, 50):
        out, decoder = _decode(full[:start] + full[end:], rate, chunk)
        assert out.shape == out_full.shape
        (hole,) = _holes(decoder)
        k = 48000 // rate
        assert hole.reason == "sequence-gap"
        assert hole.samples == 2 * 960 // k
        assert hole.position == (6 * 960 - head.pre_skip) // k
        assert np.array_equal(out[: hole.position], out_full[: hole.position])


def test_granule_jump_without_lost_pages_is_concealed() -> None:
    head, packets = _packets()
    granules = [960 * (i + 1) + (1920 if i >= 10 else 0) for i in range(len(packets))]
    out, decoder = _decode(_stream(head, packets, granules=granules))
    assert len(out) == granules[-1] - head.pre_skip
    (hole,) = _holes(decoder)
    assert hole.reason == "granule-gap"
    assert hole.samples == 1920


def test_empty_packet_is_concealed_as_20_ms_and_decoding_continues() -> None:
    head, packets = _packets()
    damaged = [*packets[:5], b"", *packets[6:]]
    out, decoder = _decode(_stream(head, damaged, per_page=3))
    assert len(out) == 960 * len(packets) - head.pre_skip
    (hole,) = _holes(decoder)
    assert hole.reason == "empty-packet"
    assert hole.samples == 960
    assert hole.position == 5 * 960 - head.pre_skip


def test_undecodable_packet_is_concealed_for_its_toc_duration() -> None:
    head, packets = _packets()
    bad = bytes([(19 << 3) | 1, 1, 2, 3])  # code 1 (2 x 20 ms) with an odd payload: invalid
    damaged = [*packets[:5], bad, *packets[7:]]
    granules = [int(g) for g in np.cumsum([960] * 5 + [1920] + [960] * (len(packets) - 7))]
    out, decoder = _decode(_stream(head, damaged, granules=granules))
    assert len(out) == 960 * len(packets) - head.pre_skip
    (hole,) = _holes(decoder)
    assert hole.reason == "bad-packet"
    assert hole.samples == 1920


def test_lost_one_second_page_is_concealed_to_its_exact_length() -> None:
    head, packets = _packets(3.0)
    full = _stream(head, packets, per_page=50)  # 1 s pages, as opusenc writes them
    start, end = _page_spans(full)[2 + 1]
    out_full, _ = _decode(full)
    for chunk in (0, 7, 4096):
        out, decoder = _decode(full[:start] + full[end:], chunk=chunk)
        assert out.shape == out_full.shape
        (hole,) = _holes(decoder)
        assert (hole.reason, hole.samples) == ("sequence-gap", 48000)


HOURS_48 = 3 * 3600 * 48000  # a granule jump of three hours
MAX_FILL = 2 * 48000  # the longest hole concealed (opus._MAX_FILL_48)
ALLOWANCE = 2 * 48000  # concealment allowed beyond the real audio (opus._FILL_ALLOWANCE_48)


def test_granule_jump_of_hours_conceals_only_a_bounded_pause_and_reports_it() -> None:
    head, packets = _packets()
    granules = [960 * (i + 1) + (HOURS_48 if i >= 10 else 0) for i in range(len(packets))]
    data = _stream(head, packets, per_page=2, granules=granules)
    for chunk in (0, 1, 29):
        out, decoder = _decode(data, chunk=chunk)
        (hole,) = _holes(decoder)
        assert (hole.reason, hole.samples) == ("granule-gap", MAX_FILL)
        # Found at the end of the page holding packets 10 and 11 (packet 10 was already out).
        assert hole.position == 11 * 960 - head.pre_skip
        # The rest of the link lines up after the pause, and its end is trimmed as usual.
        assert len(out) == 960 * len(packets) + MAX_FILL - head.pre_skip
        ended = decoder.events[-1]
        assert isinstance(ended, StreamEnded)
        assert ended.position == len(out)


def test_lost_pages_spanning_hours_are_one_hole_with_a_bounded_pause() -> None:
    head, packets = _packets()
    granules = [960 * (i + 1) + (HOURS_48 if i >= 10 else 0) for i in range(len(packets))]
    full = _stream(head, packets, per_page=2, granules=granules)
    start, end = _page_spans(full)[2 + 5]  # packets 10 and 11: the first page after the jump
    out, decoder = _decode(full[:start] + full[end:])
    (hole,) = _holes(decoder)
    assert (hole.reason, hole.samples) == ("sequence-gap", MAX_FILL)
    assert len(out) == 960 * (len(packets) - 2) + MAX_FILL - head.pre_skip


def _jumping_pages(count: int, jump: int) -> bytes:
    """A mono Ogg Opus stream of ``count`` 29-byte pages, each one 20 ms packet (a bare TOC
    byte) whose granule jumps ``jump`` samples past the previous page's."""
    out = build_page(9, 0, 0, [OpusHead(1).to_bytes()], bos=True)
    out += build_page(9, 1, 0, [OpusTags("x").to_bytes()])
    granule = 0
    for k in range(count):
        granule += 960 + jump
        out += build_page(9, 2 + k, granule, [b"\xf8"])
    return out


def test_pages_that_each_jump_cannot_amplify_a_small_input_into_minutes_of_concealment() -> None:
    # Shaped like the fuzzer's finding: 100 tiny pages, each jumping 10 s (formerly decoded to
    # 1000 s of concealment from 3 kB).
    data = _jumping_pages(100, 10 * 48000)
    assert len(data) < 3000
    real = 100 * 960
    whole, decoder = _decode(data)
    assert len(whole) <= 2 * real + ALLOWANCE
    holes = _holes(decoder)
    assert len(holes) == 99  # every jump is reported, concealed or not
    assert {h.reason for h in holes} == {"granule-gap"}
    assert sum(h.samples for h in holes) == len(whole) - real
    for chunk in (1, 29, 100):
        out, chunked_decoder = _decode(data, chunk=chunk)
        assert np.array_equal(out, whole)
        assert chunked_decoder.events == decoder.events


def test_concealment_never_exceeds_the_real_audio_plus_the_allowance() -> None:
    # Holes of 1.5 s after every 20 ms of real audio: the first is concealed in full, later
    # ones only as far as the budget goes.
    data = _jumping_pages(20, 72000)
    out, decoder = _decode(data)
    holes = _holes(decoder)
    assert holes[0].samples == 72000
    assert holes[1].samples < 72000
    real = 20 * 960
    concealed = 0
    for k, hole in enumerate(holes):
        concealed += hole.samples
        assert concealed <= ALLOWANCE + 960 * (k + 2), k  # real audio decoded before hole k+1
    assert len(out) == real + concealed


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_damage_after_the_headers_never_raises(data: st.DataObject) -> None:
    head, packets = _packets(0.3)
    stream = bytearray(_stream(head, packets, per_page=3))
    headers_end = _page_spans(bytes(stream))[1][1]
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        at = data.draw(st.integers(headers_end, len(stream) - 1))
        if kind == "flip":
            stream[at] ^= data.draw(st.integers(1, 255))
        elif kind == "cut":
            del stream[at : at + data.draw(st.integers(1, 400))]
        else:
            stream[at:at] = data.draw(st.binary(min_size=1, max_size=300))
    chunk = data.draw(st.sampled_from([0, 1, 7, 64]))
    out, _decoder = _decode(bytes(stream), chunk=chunk)
    assert out.dtype == np.float32
    assert out.shape[1] == 1
    assert len(out) <= 10 * 48000  # bounded even with damaged granules


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 400), min_size=1, max_size=30))
def test_output_is_identical_for_every_chunking(sizes: list[int]) -> None:
    head, packets = _packets(0.3)
    data = _stream(head, packets, per_page=4, final=960 * len(packets) - 333)
    whole, _ = _decode(data)
    decoder = OggOpusDecoder()
    blocks = [b for piece in chunked(data, sizes) for b in decoder.feed(piece)]
    blocks += decoder.close()
    assert np.array_equal(np.concatenate(blocks), whole)


# ---- headers and stream selection ----------------------------------------------------------


def test_nothing_plays_before_tags_spanning_pages_are_complete() -> None:
    head, packets = _packets(0.2)
    tags = OpusTags("test", ("A=1",), b"\0" * 70000)  # OpusTags over two pages
    data = _stream(head, packets, tags=tags)
    spans = _page_spans(data)
    tags_end = spans[2][1]
    assert spans[1][1] - spans[1][0] > 60000  # the tags really span pages
    decoder = OggOpusDecoder()
    for i, byte in enumerate(chunked(data, [1])):
        if decoder.feed(byte):
            assert i >= tags_end
            break
    assert decoder.tags == tags


def test_first_pcm_comes_before_the_first_one_second_page_is_complete() -> None:
    encoder = OggOpusEncoder(48000, 1, page_ms=1000, serial=3)
    data = encoder.encode(_signal(2.5)) + encoder.finish()
    first_audio_page_end = _page_spans(data)[2][1]
    decoder = OggOpusDecoder()
    first_pcm_at = -1
    for i, byte in enumerate(chunked(data, [1])):
        if decoder.feed(byte):
            first_pcm_at = i + 1
            break
    assert 0 < first_pcm_at < first_audio_page_end / 2


def test_chained_links_have_their_own_pre_skip_and_no_gap() -> None:
    a, b = OggOpusEncoder(48000, 1, serial=1), OggOpusEncoder(24000, 2, serial=2)
    first = a.encode(_signal(0.31)) + a.finish()
    second = b.encode(_signal(0.27, 24000, 2)) + b.finish()
    decoder = OggOpusDecoder(24000)
    blocks = [b for piece in chunked(first + second, [100]) for b in decoder.feed(piece)]
    blocks += decoder.close()
    assert {b.shape[1] for b in blocks[:3]} == {1}
    assert blocks[-1].shape[1] == 2
    heads = [e for e in decoder.events if isinstance(e, HeaderReceived)]
    ends = [e for e in decoder.events if isinstance(e, StreamEnded)]
    assert [h.channels for h in heads] == [1, 2]
    assert [e.position for e in ends] == [7440, 6480]
    assert sum(map(len, blocks)) == 7440 + 6480
    assert decoder.channels == 2
    joined = decode_opus_stream([first + second], 24000)
    assert joined.shape == (7440 + 6480, 2)


def test_interleaved_non_opus_stream_is_ignored() -> None:
    head, packets = _packets(0.2)
    opus = _stream(head, packets, serial=5)
    spans = _page_spans(opus)
    other = [build_page(9, 0, 0, [b"\x01vorbis" + bytes(22)], bos=True)]
    other += [build_page(9, i + 1, 100 * i, [bytes([i]) * 40]) for i in range(len(spans))]
    mixed = opus[: spans[0][1]] + other[0]
    for i, (start, end) in enumerate(spans[1:]):
        mixed += opus[start:end] + other[i + 1]
    out, decoder = _decode(mixed, chunk=33)
    assert np.array_equal(out, _decode(opus)[0])
    assert not _holes(decoder)
    assert not any(isinstance(e, SyncLost) for e in decoder.events)


def test_first_of_two_grouped_opus_streams_is_decoded() -> None:
    head, packets = _packets(0.2)
    x = _page_spans(_stream(head, packets, serial=1))
    one = _stream(head, packets, serial=1)
    two = _stream(head, packets[::-1], serial=2)
    y = _page_spans(two)
    mixed = one[: x[0][1]] + two[: y[0][1]]  # both BOS pages first
    for (s1, e1), (s2, e2) in zip(x[1:], y[1:], strict=True):
        mixed += one[s1:e1] + two[s2:e2]
    out, decoder = _decode(mixed)
    assert np.array_equal(out, _decode(one)[0])
    assert sum(isinstance(e, HeaderReceived) for e in decoder.events) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "no data"),
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "got HTML"),
        (b'{"error": {"message": "Invalid API key"}}', "got JSON"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(40), "got RIFF/WAV"),
        (b"ID3\x04" + bytes(100), "MP3"),
        (build_page(1, 0, 0, [b"\x01vorbis" + bytes(22)], bos=True), r"not Opus \(vorbis\)"),
        (build_page(1, 5, 960, [b"\x08" * 30]), "without an OpusHead"),
        (bytes(random.Random(1).randrange(256) for _ in range(3000)), "unknown data"),
    ],
)
def test_input_without_an_opus_stream_raises_a_protocol_error_saying_what_it_is(
    data: bytes, message: str
) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_opus_stream([data[i : i + 10] for i in range(0, len(data), 10)])


def test_html_is_rejected_as_soon_as_it_is_recognised() -> None:
    decoder = OggOpusDecoder()
    with pytest.raises(ProtocolError, match="got HTML"):
        decoder.feed(b"<html><head><title>Error</title></head>")
    with pytest.raises(ProtocolError):  # the error sticks
        decoder.feed(b"more")


def test_vorbis_stream_is_rejected_at_its_first_data_page() -> None:
    decoder = OggOpusDecoder()
    assert decoder.feed(build_page(1, 0, 0, [b"\x01vorbis" + bytes(22)], bos=True)) == []
    with pytest.raises(ProtocolError, match="vorbis"):
        decoder.feed(build_page(1, 1, 0, [bytes(50)]))


@pytest.mark.parametrize(
    "head",
    [
        OpusHead(1, mapping_family=2, stream_count=1, channel_mapping=(0,)),
        OpusHead(1, mapping_family=255, stream_count=1, channel_mapping=(0,)),
    ],
)
def test_unplayable_mapping_families_are_unsupported(head: OpusHead) -> None:
    with pytest.raises(UnsupportedFormat, match="family"):
        OggOpusDecoder().feed(_stream(head, [b"\x08"]))


def test_incompatible_header_version_is_unsupported() -> None:
    data = bytearray(_stream(OpusHead(1), [b"\x08"]))
    head, _ = _packets(0.1)
    page = build_page(7, 0, 0, [bytes([*head.to_bytes()[:8], 16, *head.to_bytes()[9:]])], bos=True)
    data[: _page_spans(bytes(data))[0][1]] = page
    with pytest.raises(UnsupportedFormat, match="version 16"):
        decode_opus_stream([bytes(data)])


def test_stereo_output_is_frames_by_channels_float32() -> None:
    head, packets = _packets(0.2, channels=2)
    out, decoder = _decode(_stream(head, packets))
    assert out.dtype == np.float32
    assert out.shape == (960 * len(packets) - head.pre_skip, 2)
    assert out.flags.c_contiguous
    assert decoder.channels == 2


def test_blocks_do_not_alias_the_decoders_buffer() -> None:
    head, packets = _packets(0.3)
    data = _stream(head, packets)
    decoder = OggOpusDecoder()
    first = decoder.feed(data[: len(data) // 2])
    kept = [b.copy() for b in first]
    decoder.feed(data[len(data) // 2 :])
    decoder.close()
    assert all(np.array_equal(a, b) for a, b in zip(first, kept, strict=True))


def test_pop_events_returns_only_new_events() -> None:
    head, packets = _packets(0.2)
    data = _stream(head, packets)
    decoder = OggOpusDecoder()
    decoder.feed(data[:200])
    first = decoder.pop_events()
    assert [type(e) for e in first] == [HeaderReceived]
    decoder.feed(data[200:])
    decoder.close()
    assert [type(e) for e in decoder.pop_events()] == [StreamEnded]
    assert decoder.pop_events() == []
    assert len(decoder.events) == 2


def test_feeding_a_closed_decoder_is_a_usage_error() -> None:
    head, packets = _packets(0.1)
    decoder = OggOpusDecoder()
    decoder.feed(_stream(head, packets))
    decoder.close()
    with pytest.raises(UsageError):
        decoder.feed(b"x")


def test_unsupported_decode_rate_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        OggOpusDecoder(44100)


def _page_spans(data: bytes) -> list[tuple[int, int]]:
    spans = []
    pos = 0
    while pos < len(data):
        nseg = data[pos + 26]
        end = pos + 27 + nseg + sum(data[pos + 27 : pos + 27 + nseg])
        spans.append((pos, end))
        pos = end
    return spans


def _voiced(seconds: float, rate: int) -> Pcm:
    """A speech-like harmonic signal with a moving pitch (SILK encodes it, so FEC applies)."""
    t = np.arange(int(rate * seconds)) / rate
    phase = 2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 0.7 * t)) / rate
    x = sum(np.sin(h * phase) / h for h in range(1, 15)) * 0.2
    return (x * (0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t))).astype(np.float32)[:, None]


def test_forward_error_correction_recovers_lost_packets_better_than_concealment() -> None:
    encoder = OggOpusEncoder(16000, 1, bitrate=32000, application="voip", fec=True, serial=1)
    data = encoder.encode(_voiced(2.0, 16000)) + encoder.finish()
    reference, _ = _decode(data)
    spans = _page_spans(data)  # one packet per page
    errors: dict[bool, list[float]] = {True: [], False: []}
    for lost in (20, 40, 60, 70, 80):
        start, end = spans[2 + lost]
        for fec in (True, False):
            decoder = OggOpusDecoder(fec=fec)
            out = np.concatenate(decoder.feed(data[:start] + data[end:]) + decoder.close())
            assert out.shape == reference.shape
            (hole,) = _holes(decoder)
            a, b = hole.position, hole.position + hole.samples
            errors[fec].append(float(np.sum((out[a:b] - reference[a:b]) ** 2)))
    assert all(f <= p for f, p in zip(errors[True], errors[False], strict=True))
    assert sum(errors[True]) < 0.5 * sum(errors[False])


def test_chain_link_whose_eos_page_was_lost_still_hands_over_to_the_next_link() -> None:
    head, packets = _packets(0.3)
    first = _stream(head, packets, serial=1, per_page=2)
    second = _stream(head, packets, serial=2, per_page=2)
    spans = _page_spans(first)
    out, decoder = _decode(first[: spans[-1][0]] + second, chunk=64)
    one, _ = _decode(first)
    two, _ = _decode(second)
    kept = 960 * 2 * (len(spans) - 3) - head.pre_skip  # audio pages but the last: 2 packets
    assert len(out) == kept + len(two)  # no trim without the EOS page, no gap
    assert np.array_equal(out[:kept], one[:kept])
    assert np.array_equal(out[kept:], two)
    assert [type(e) for e in decoder.events].count(HeaderReceived) == 2


def test_page_with_granule_minus_one_where_packets_end_is_played_without_retiming() -> None:
    head, packets = _packets()
    granules = [960 * (i + 1) for i in range(len(packets))]
    granules[7] = -1  # invalid: a packet ends on this page
    out, decoder = _decode(_stream(head, packets, granules=granules))
    expected, _ = _decode(_stream(head, packets))
    assert np.array_equal(out, expected)
    assert not _holes(decoder)
