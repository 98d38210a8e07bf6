"""OggOpusDecoder against opusdec (opus-tools 0.2 = libopusfile + libopus) on real files.

At 48 kHz opusdec decodes with libopus directly, so our output must be bit-identical (max abs
difference <= 1e-6) and of exactly the same length for every chunking of the input. At lower
rates opusdec decodes at 48 kHz and resamples, so there we check the exact length against it and
the samples against libopus at that rate through opuslib's own (independent) decoder class.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
from support.corpus import Corpus, chunked, get_corpus, ogg_pages, packets_of

from streamtts.events import ChecksumMismatch, DataLost, HeaderReceived, StreamEnded, SyncLost
from streamtts.opus import OggOpusDecoder, decode_opus_stream, packet_samples

Pcm = npt.NDArray[np.float32]

FILES = [
    "speech",
    "speech_lowdelay",
    "speech_padding",
    "speech_highrate",
    "fs2.5",
    "fs5",
    "fs10",
    "fs20",
    "fs40",
    "fs60",
    "input24k",
    "stereo",
    "stereo_highrate",
    "surround3",
    "repaged3",
    "repaged_cbr255",
    "repaged_cbr510",
    "chain",
    "chain_mixed",
    "gain",
]


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    return get_corpus()


def decode_chunks(chunks: list[bytes], rate: int = 48000) -> tuple[Pcm, OggOpusDecoder]:
    decoder = OggOpusDecoder(rate)
    blocks: list[Pcm] = []
    for chunk in chunks:
        blocks += decoder.feed(chunk)
    blocks += decoder.close()
    channels = max(b.shape[1] for b in blocks)
    blocks = [np.repeat(b, channels, axis=1) if b.shape[1] < channels else b for b in blocks]
    return np.concatenate(blocks), decoder


def assert_identical(out: Pcm, ref: Pcm) -> None:
    assert out.shape == ref.shape
    assert out.dtype == np.float32
    assert float(np.max(np.abs(out - ref))) <= 1e-6


def splits(data: bytes, seed: int) -> Iterator[tuple[str, list[bytes]]]:
    rng = random.Random(seed)
    yield "whole", [data]
    yield "7", chunked(data, [7])
    yield "4096", chunked(data, [4096])
    yield "random", chunked(data, [rng.randint(1, 3000) for _ in range(64)])


@pytest.mark.parametrize("name", FILES)
def test_decode_is_bit_identical_to_opusdec_for_every_chunking(corpus: Corpus, name: str) -> None:
    data = corpus.data(name)
    ref = corpus.reference(name)
    for label, chunks in splits(data, seed=len(data)):
        out, _ = decode_chunks(chunks)
        assert out.shape == ref.shape, label
        assert float(np.max(np.abs(out - ref))) <= 1e-6, label


def test_byte_by_byte_feed_of_a_short_file_is_bit_identical(corpus: Corpus) -> None:
    data = corpus.data("fs20")
    out, _ = decode_chunks(chunked(data, [1]))
    assert_identical(out, corpus.reference("fs20"))


def test_first_pcm_of_a_one_second_page_file_comes_before_its_first_page_ends(
    corpus: Corpus,
) -> None:
    data = corpus.data("speech")
    first_audio_page_offset, first_audio_page_size = _audio_pages(data)[0]
    decoder = OggOpusDecoder()
    for i in range(len(data)):
        if decoder.feed(data[i : i + 1]):
            break
    assert first_audio_page_offset < i + 1 < first_audio_page_offset + first_audio_page_size // 4


def test_decode_opus_stream_matches_opusdec_and_joins_mono_and_stereo_links(
    corpus: Corpus,
) -> None:
    assert_identical(
        decode_opus_stream([corpus.data("chain_mixed")]), corpus.reference("chain_mixed")
    )


def test_chained_links_each_report_header_and_end_with_no_gap(corpus: Corpus) -> None:
    data = corpus.data("chain")
    out, decoder = decode_chunks(chunked(data, [4096]))
    kinds = [type(e) for e in decoder.events]
    assert kinds == [HeaderReceived, StreamEnded, HeaderReceived, StreamEnded]
    ends = [e for e in decoder.events if isinstance(e, StreamEnded)]
    first = decode_opus_stream([corpus.data("short")])
    second = decode_opus_stream([corpus.data("fs60")])
    assert ends[0].position == len(first)
    assert ends[1].position == len(second)
    assert_identical(out, np.concatenate([first, second]))


def test_output_gain_from_the_header_is_applied_like_opusdec(corpus: Corpus) -> None:
    out, decoder = decode_chunks([corpus.data("gain")])
    assert decoder.head is not None
    assert decoder.head.gain_db == -6.0
    assert_identical(out, corpus.reference("gain"))
    plain = decode_opus_stream([corpus.data("short")])
    # Gain only: same length, -6 dB (x0.501) within libopus's gain approximation.
    assert out.shape == plain.shape
    ratio = float(np.sum(np.abs(out))) / float(np.sum(np.abs(plain)))
    assert ratio == pytest.approx(10 ** (-6 / 20), rel=1e-3)


def test_input_sample_rate_of_the_header_is_not_the_decode_rate(corpus: Corpus) -> None:
    out, decoder = decode_chunks([corpus.data("input24k")])
    assert decoder.head is not None
    assert decoder.head.input_sample_rate == 24000
    header = decoder.events[0]
    assert isinstance(header, HeaderReceived)
    assert header.sample_rate == 48000
    assert len(out) == 2 * 24000 * 0.8  # 0.8 s of 24 kHz input, decoded at 48 kHz


def _libopus_reference(data: bytes, rate: int) -> Pcm:
    """libopus at ``rate`` through opuslib's Decoder class, with RFC 7845 pre-skip (ceil) and
    end trimming (floor) applied here: an independent path to the same result."""
    import opuslib

    packets = packets_of(data)
    head = packets[0].data
    channels, pre_skip = head[9], int.from_bytes(head[10:12], "little")
    decoder = opuslib.Decoder(rate, channels)
    pcm = b"".join(decoder.decode_float(p.data, rate * 120 // 1000) for p in packets[2:])
    out = np.frombuffer(pcm, np.float32).reshape(-1, channels)
    k = 48000 // rate
    skip = -(-pre_skip // k)
    length = (packets[-1].granule - pre_skip) // k
    return out[skip : skip + length]


@pytest.mark.parametrize("rate", [8000, 12000, 16000, 24000])
@pytest.mark.parametrize("name", ["speech", "stereo", "fs2.5"])
def test_reduced_rates_have_opusdec_length_and_libopus_samples(
    corpus: Corpus, name: str, rate: int
) -> None:
    data = corpus.data(name)
    ref_len = len(corpus.reference(name, rate))
    expected = _libopus_reference(data, rate)
    for label, chunks in splits(data, seed=rate):
        out, decoder = decode_chunks(chunks, rate)
        assert len(out) == ref_len, label
        assert_identical(out, expected)
        header = decoder.events[0]
        assert isinstance(header, HeaderReceived)
        assert header.sample_rate == rate


def test_24khz_decode_is_close_to_opusdec_resampled_output(corpus: Corpus) -> None:
    out, _ = decode_chunks([corpus.data("speech")], 24000)
    ref = corpus.reference("speech", 24000)
    assert out.shape == ref.shape
    snr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - out) ** 2.0))
    assert snr > 40


def test_packets_of_exactly_255_and_510_bytes_span_pages(corpus: Corpus) -> None:
    for name, size in (("repaged_cbr255", 255), ("repaged_cbr510", 510)):
        data = corpus.data(name)
        audio = packets_of(data)[2:]
        assert {len(p.data) for p in audio[:-1]} == {size}
        pages = ogg_pages(data)
        assert len(pages) > len(audio)  # packets continue across pages
        assert_identical(decode_opus_stream([data]), corpus.reference(name))


# ---- damaged copies ------------------------------------------------------------------------


def _audio_pages(data: bytes) -> list[tuple[int, int]]:
    """Pages after the two header pages (files whose headers take one page each)."""
    return ogg_pages(data)[2:]


def test_garbage_between_pages_is_skipped_and_audio_is_identical(corpus: Corpus) -> None:
    data = corpus.data("speech")
    offset, _ = _audio_pages(data)[1]
    garbage = bytes(random.Random(5).randrange(256) for _ in range(3000)) + b"OggS\x00junk"
    damaged = data[:offset] + garbage + data[offset:]
    for label, chunks in splits(damaged, seed=9):
        out, decoder = decode_chunks(chunks)
        assert_identical(out, corpus.reference("speech"))
        assert sum(isinstance(e, SyncLost) for e in decoder.events) == 1, label
        assert not any(isinstance(e, DataLost) for e in decoder.events), label


@pytest.mark.parametrize("name", ["speech", "speech_lowdelay"])
def test_cut_page_is_concealed_keeping_the_timeline_length(corpus: Corpus, name: str) -> None:
    data = corpus.data(name)
    ref = corpus.reference(name)
    pages = _audio_pages(data)
    assert len(pages) >= 4
    offset, size = pages[len(pages) // 2 - 1]  # not next to the EOS page (see below)
    damaged = data[:offset] + data[offset + size :]
    lost = sum(packet_samples(p.data) for p in packets_of(data) if p.offset == offset)
    clean_before = page_start_sample(data, offset)
    for label, chunks in splits(damaged, seed=3):
        out, decoder = decode_chunks(chunks)
        assert out.shape == ref.shape, label
        holes = [e for e in decoder.events if isinstance(e, DataLost)]
        assert len(holes) == 1, label
        assert holes[0].reason == "sequence-gap"
        assert holes[0].samples == lost
        assert holes[0].position == clean_before
        assert_identical(out[:clean_before], ref[:clean_before])


def test_cut_page_before_the_eos_page_keeps_the_length_exactly(corpus: Corpus) -> None:
    # The EOS granule is trimmed, so the hole's duration is only known up to that trim: the
    # concealment may be shorter than the lost page, the total length is still exact.
    data = corpus.data("speech")
    ref = corpus.reference("speech")
    offset, size = _audio_pages(data)[-2]
    damaged = data[:offset] + data[offset + size :]
    lost = sum(packet_samples(p.data) for p in packets_of(data) if p.offset == offset)
    out, decoder = decode_chunks(chunked(damaged, [4096]))
    assert out.shape == ref.shape
    holes = [e for e in decoder.events if isinstance(e, DataLost)]
    assert len(holes) == 1
    assert lost - 960 < holes[0].samples <= lost
    clean_before = page_start_sample(data, offset)
    assert_identical(out[:clean_before], ref[:clean_before])


def page_start_sample(data: bytes, offset: int) -> int:
    """Output sample (48 kHz, after pre-skip) where the packets ending on the page at ``offset``
    begin."""
    packets = packets_of(data)
    pre_skip = int.from_bytes(packets[0].data[10:12], "little")
    before = sum(packet_samples(p.data) for p in packets[2:] if p.offset < offset)
    return before - pre_skip


@pytest.mark.parametrize("name", ["speech", "speech_lowdelay"])
def test_flipped_byte_never_raises_and_keeps_length(corpus: Corpus, name: str) -> None:
    data = corpus.data(name)
    ref = corpus.reference(name)
    pages = _audio_pages(data)
    offset, size = pages[len(pages) // 2]
    for where in (offset + 5, offset + 20, offset + size - 3):  # header, lacing/body, body
        damaged = bytearray(data)
        damaged[where] ^= 0x5A
        clean_before = page_start_sample(data, offset)
        for label, chunks in splits(bytes(damaged), seed=where):
            out, decoder = decode_chunks(chunks)
            assert out.shape == ref.shape, (where, label)
            assert_identical(out[:clean_before], ref[:clean_before])
            assert any(isinstance(e, (ChecksumMismatch, DataLost)) for e in decoder.events)


def test_truncated_file_returns_what_arrived_without_raising(corpus: Corpus) -> None:
    data = corpus.data("speech")
    offset, size = _audio_pages(data)[1]
    cut = offset + size // 2
    out, decoder = decode_chunks(chunked(data[:cut], [4096]))
    ref = corpus.reference("speech")
    # With early release, the packets of the cut page that arrived whole are decoded too.
    complete = [p for p in packets_of(data) if p.offset == offset]
    assert (
        page_start_sample(data, offset)
        < len(out)
        < page_start_sample(data, offset) + sum(packet_samples(p.data) for p in complete)
    )
    assert_identical(out, ref[: len(out)])
    assert not any(isinstance(e, StreamEnded) for e in decoder.events)
