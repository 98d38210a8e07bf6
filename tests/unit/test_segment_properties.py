"""SentenceSegmenter properties for any text and any chunking (hypothesis)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from streamtts.segment import Segment, SentenceSegmenter, speakable_text

# Pieces that exercise every rule, mixed with arbitrary characters.
PIECES = [
    "Dr.", "Mr. ", "e.g.", "U.S.", "J. ", "3.14", "$2.50", "v1.2.3", "example.com/a.b", "a@b.c",
    "...", "…", ".", "!", "?", "?!", ",", ";", ":", "—", "–", "。", "！", "？", "，", "、",
    "\"", "'", "”", ")", "(", "「", "」", "**", "_", "`", "```", "#", "## ", "- ", "* ", "1. ",
    "12) ", "> ", "|", "[link](http://x.y/z)", "---", " ", "  ", "\n", "\n\n", "\t", "\r\n",
    "hello", "World", "the", "a", "I", "你好", "天气", "🎉", "👍🏽", "e\u0301", "\u200d", "wait",
]  # fmt: skip

texts = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=3)), max_size=60).map("".join)


@st.composite
def text_and_cuts(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = draw(texts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


options = st.fixed_dictionaries(
    {
        "min_first_words": st.integers(1, 5),
        "max_first_words": st.integers(1, 12),
        "max_chars": st.integers(2, 80),
        "early_first": st.booleans(),
    }
)


def run(chunks: list[str], opts: dict[str, object]) -> tuple[list[Segment], list[Segment]]:
    seg = SentenceSegmenter(**opts)  # type: ignore[arg-type]
    fed: list[Segment] = []
    for chunk in chunks:
        fed += seg.feed(chunk)
    return fed, seg.close()


def segments_of(chunks: list[str], opts: dict[str, object]) -> list[Segment]:
    fed, closed = run(chunks, opts)
    return fed + closed


@settings(max_examples=400, deadline=None)
@given(text_and_cuts(), options)
def test_segments_concatenate_to_the_input_for_any_chunking(
    data: tuple[str, list[str]], opts: dict[str, object]
) -> None:
    text, chunks = data
    fed, closed = run(chunks, opts)
    segments = fed + closed
    assert "".join(s.text for s in segments) == text
    # Identical to feeding the whole text at once, and to feeding it character by character.
    assert segments_of([text], opts) == segments
    assert segments_of(list(text), opts) == segments


@settings(max_examples=300, deadline=None)
@given(text_and_cuts(), options)
def test_offsets_are_consistent(data: tuple[str, list[str]], opts: dict[str, object]) -> None:
    text, chunks = data
    segments = segments_of(chunks, opts)
    pos = 0
    for s in segments:
        assert s.text
        assert s.start == pos
        assert s.end == s.start + len(s.text)
        assert text[s.start : s.end] == s.text
        pos = s.end
    assert pos == len(text)


@settings(max_examples=300, deadline=None)
@given(text_and_cuts(), options)
def test_no_segment_without_speech_except_a_final_remainder(
    data: tuple[str, list[str]], opts: dict[str, object]
) -> None:
    _, chunks = data
    fed, closed = run(chunks, opts)
    segments = fed + closed
    for i, s in enumerate(segments):
        if s.kind == "final":
            assert i == len(segments) - 1
            continue
        assert s.speakable.strip()
        assert any(ch.isalnum() for ch in s.speakable)
        if i > 0:
            assert not s.text[0].isspace()


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.integers(2, 40))
def test_feed_and_close_never_raise_on_arbitrary_unicode(text: str, max_chars: int) -> None:
    seg = SentenceSegmenter(max_chars=max_chars)
    segments = seg.feed(text) + seg.close()
    assert "".join(s.text for s in segments) == text
    for s in segments:
        assert isinstance(s.speakable, str)


@settings(max_examples=200, deadline=None)
@given(texts, st.integers(10, 60))
def test_no_segment_is_much_longer_than_max_chars_unless_it_has_nothing_to_say(
    text: str, max_chars: int
) -> None:
    segments = segments_of([text], {"max_chars": max_chars})
    for s in segments:
        # A split falls at the last word/clause boundary before max_chars, or at max_chars; the
        # whitespace after a word may run past it. Text with nothing to say is never split.
        head_has_speech = any(ch.isalnum() for ch in speakable_text(s.text[:max_chars]))
        assert len(s.text.rstrip()) <= max_chars or not head_has_speech
