"""SentenceSegmenter: where tricky texts are cut, whatever the chunking."""

from __future__ import annotations

import random

import pytest

from streamtts.errors import UsageError
from streamtts.segment import Segment, SentenceSegmenter, speakable_text


def segment_whole(text: str, **options: object) -> list[Segment]:
    seg = SentenceSegmenter(**options)  # type: ignore[arg-type]
    return seg.feed(text) + seg.close()


def segment_chunks(chunks: list[str], **options: object) -> list[Segment]:
    seg = SentenceSegmenter(**options)  # type: ignore[arg-type]
    out: list[Segment] = []
    for chunk in chunks:
        out += seg.feed(chunk)
    return out + seg.close()


def random_chunks(text: str, rng: random.Random) -> list[str]:
    chunks = []
    i = 0
    while i < len(text):
        n = rng.randint(1, 6)
        chunks.append(text[i : i + n])
        i += n
    return chunks


def assert_same_for_every_chunking(text: str, **options: object) -> list[Segment]:
    whole = segment_whole(text, **options)
    assert segment_chunks(list(text), **options) == whole
    rng = random.Random(text)
    for _ in range(5):
        assert segment_chunks(random_chunks(text, rng), **options) == whole
    return whole


# Sentence rules alone (no early first segment): text → expected segment texts.
SENTENCE_CASES = [
    ("Hello world. This is a test.", ["Hello world. ", "This is a test."]),
    ("Stop! Really? Yes…  Fine.", ["Stop! ", "Really? ", "Yes…  ", "Fine."]),
    ("What?! No way!!! Ok.", ["What?! ", "No way!!! ", "Ok."]),
    (
        "Dr. Smith met Mr. and Mrs. Jones. They talked.",
        ["Dr. Smith met Mr. and Mrs. Jones. ", "They talked."],
    ),
    (
        "Use tools, e.g. hammers, i.e. heavy ones. Done.",
        ["Use tools, e.g. hammers, i.e. heavy ones. ", "Done."],
    ),
    (
        "Apples, pears, etc. are fruit. Cats etc. Dogs too.",
        ["Apples, pears, etc. are fruit. ", "Cats etc. ", "Dogs too."],
    ),
    ("It was cats vs. dogs. Who won?", ["It was cats vs. dogs. ", "Who won?"]),
    ("The U.S. Army marched. Then it rained.", ["The U.S. Army marched. ", "Then it rained."]),
    (
        "J. R. R. Tolkien wrote books. I read them.",
        ["J. R. R. Tolkien wrote books. ", "I read them."],
    ),
    ("Pi is 3.14 and tea costs $2.50. Cheap.", ["Pi is 3.14 and tea costs $2.50. ", "Cheap."]),
    ("Update to v1.2.3 now. Or 2.0.", ["Update to v1.2.3 now. ", "Or 2.0."]),
    (
        "See example.com/a.b for more. Mail a.b@c.de today.",
        ["See example.com/a.b for more. ", "Mail a.b@c.de today."],
    ),
    ("Visit https://x.org/?q=1. Thanks.", ["Visit https://x.org/?q=1. ", "Thanks."]),
    ("Wait... what is that? Hmm... Nothing.", ["Wait... what is that? ", "Hmm... ", "Nothing."]),
    ("Wait… what? Ok.", ["Wait… what? ", "Ok."]),
    ('He said "hi." Then he left.', ['He said "hi." ', "Then he left."]),
    ("She asked (quietly.) Nobody answered.", ["She asked (quietly.) ", "Nobody answered."]),
    ("“Go!” he shouted. They went.", ["“Go!” he shouted. ", "They went."]),
    (
        '"Really?" she asked. "Yes!" Then silence.',
        ['"Really?" she asked. ', '"Yes!" ', "Then silence."],
    ),
    ("Stop! he is here.", ["Stop! ", "he is here."]),
    (
        "Born Jan. 5 in Oslo. Moved in Dec. Then left.",
        ["Born Jan. 5 in Oslo. ", "Moved in Dec. ", "Then left."],
    ),
    ("See z.B. dies. Oder d.h. das.", ["See z.B. dies. ", "Oder d.h. das."]),
    ("It is **done.** Next step.", ["It is **done.** ", "Next step."]),
    ("See No. 5 now. I said no. Then left.", ["See No. 5 now. ", "I said no. ", "Then left."]),
    ("We met at 5 p.m. Then we ate.", ["We met at 5 p.m. ", "Then we ate."]),
    ("你好。今天天气很好！", ["你好。", "今天天气很好！"]),
    ("你好！「是吗？」他说。", ["你好！", "「是吗？」", "他说。"]),
    ("Line one\nstill the same sentence. Next.", ["Line one\nstill the same sentence. ", "Next."]),
    (
        "First paragraph without dot\n\nSecond one",
        ["First paragraph without dot\n\n", "Second one"],
    ),
    (
        "Options:\n- red\n- green\n\nPick one.",
        ["Options:\n", "- red\n", "- green\n\n", "Pick one."],
    ),
    ("* star item\n+ plus item\nafter", ["* star item\n", "+ plus item\n", "after"]),
    (
        "Steps:\n1. Open it\n2. Close it\n10. Done",
        ["Steps:\n", "1. Open it\n", "2. Close it\n", "10. Done"],
    ),
    ("# Title\nSome text\n## Sub\nMore.", ["# Title\n", "Some text\n", "## Sub\n", "More."]),
    ("Great job! 🎉 See you.", ["Great job! ", "🎉 See you."]),
    ("Great job! 🎉\n\nSee you.", ["Great job! ", "🎉\n\nSee you."]),
    ("Hello.\n\n---\n\nWorld.", ["Hello.\n\n", "---\n\nWorld."]),
    ("  Leading space. Trailing space.  ", ["  Leading space. ", "Trailing space.  "]),
    ("No punctuation at all", ["No punctuation at all"]),
    ("End with dot.", ["End with dot."]),
    ("1,000 people came; 2,500 left. Ok.", ["1,000 people came; 2,500 left. ", "Ok."]),
    ("Time is 12:30. Go.", ["Time is 12:30. ", "Go."]),
    ("A sentence.\r\nAnother one.", ["A sentence.\r\n", "Another one."]),
]


@pytest.mark.parametrize(("text", "expected"), SENTENCE_CASES)
def test_sentence_boundaries_are_found_for_every_chunking(text: str, expected: list[str]) -> None:
    segments = assert_same_for_every_chunking(text, early_first=False)
    assert [s.text for s in segments] == expected


FIRST_CASES = [
    # Clause boundary with enough words.
    (
        "I think that, in general, it works. Yes.",
        ["I think that, ", "in general, it works. ", "Yes."],
    ),
    # Too few words before the first comma: wait for the next boundary.
    ("Sure, I can help with that. Ok.", ["Sure, I can help with that. ", "Ok."]),
    # Ten words without punctuation: cut at the word boundary after the tenth.
    (
        "one two three four five six seven eight nine ten eleven twelve.",
        ["one two three four five six seven eight nine ten ", "eleven twelve."],
    ),
    # Never right after an abbreviation's dot.
    (
        "one two three four five six seven eight nine Dr. Who is here.",
        ["one two three four five six seven eight nine Dr. Who ", "is here."],
    ),
    # A short first sentence is just a sentence.
    ("Hi. How are you, my friend, today?", ["Hi. ", "How are you, my friend, today?"]),
    # Markup is not counted as words.
    ("- **a**, b, c, d: e f.", ["- **a**, b, c, ", "d: e f."]),
    # CJK clause punctuation, each character a word.
    ("今天天气很好，我们去公园吧。好的。", ["今天天气很好，", "我们去公园吧。", "好的。"]),
    # An em dash without spaces.
    ("Three little words—and more. End.", ["Three little words—", "and more. ", "End."]),
]


@pytest.mark.parametrize(("text", "expected"), FIRST_CASES)
def test_first_segment_is_cut_early(text: str, expected: list[str]) -> None:
    segments = assert_same_for_every_chunking(text)
    assert [s.text for s in segments] == expected
    ends_sentence = expected[0].rstrip()[-1] in ".?!"
    assert segments[0].kind == ("sentence" if ends_sentence else "clause")


def test_only_the_first_segment_is_cut_early() -> None:
    text = "One. Then, however, a longer sentence follows, with commas."
    segments = assert_same_for_every_chunking(text)
    assert [s.text for s in segments] == [
        "One. ",
        "Then, however, a longer sentence follows, with commas.",
    ]


def test_kinds_are_sentence_then_final() -> None:
    segments = segment_whole("One is here. Two is here. Three", early_first=False)
    assert [s.kind for s in segments] == ["sentence", "sentence", "final"]


def test_long_sentence_is_split_at_its_last_clause_boundary() -> None:
    text = "word " * 20 + "clause, " + "more " * 40 + "end. Short."
    segments = assert_same_for_every_chunking(text, early_first=False, max_chars=150)
    assert segments[0].text == "word " * 20 + "clause, "
    assert segments[0].kind == "clause"
    assert all(len(s.text) <= 150 for s in segments)
    assert "".join(s.text for s in segments) == text


def test_long_sentence_without_clauses_is_split_at_word_boundaries() -> None:
    text = " ".join(f"w{i}" for i in range(200)) + "."
    segments = assert_same_for_every_chunking(text, early_first=False, max_chars=100)
    assert len(segments) > 5
    for s in segments[:-1]:
        assert s.kind == "clause"
        assert s.text.endswith(" ")
        assert not s.text[0].isspace()
        assert len(s.text) <= 100


def test_enormous_token_is_split_at_max_chars() -> None:
    text = "x" * 1000
    segments = assert_same_for_every_chunking(text, max_chars=300)
    assert [len(s.text) for s in segments] == [300, 300, 300, 100]


def test_cjk_without_punctuation_is_split_at_max_chars() -> None:
    text = "字" * 70
    segments = assert_same_for_every_chunking(text, max_chars=30, early_first=False)
    assert [len(s.text) for s in segments] == [30, 30, 10]


def test_hard_split_never_separates_a_combining_mark() -> None:
    text = ("e\u0301" * 40)[:-1] + "."  # 'é' as e + combining acute, cut would fall between
    segments = assert_same_for_every_chunking(text, max_chars=11, early_first=False)
    for s in segments[1:]:
        assert s.text[0] == "e"


def test_offsets_match_the_input() -> None:
    text = "Alpha beta. Gamma delta! Epsilon?"
    segments = segment_whole(text)
    pos = 0
    for s in segments:
        assert s.start == pos
        assert s.end == s.start + len(s.text)
        assert text[s.start : s.end] == s.text
        pos = s.end
    assert pos == len(text)


def test_dot_at_end_of_buffer_waits_for_the_next_character() -> None:
    seg = SentenceSegmenter(early_first=False)
    assert seg.feed("It costs 3.") == []
    assert [s.text for s in seg.feed("14 dollars. Dr.")] == ["It costs 3.14 dollars. "]
    assert seg.feed(" Who") == []
    assert seg.feed(" is here.") == []
    assert [s.text for s in seg.close()] == ["Dr. Who is here."]


def test_exclamation_is_released_when_the_next_word_starts() -> None:
    seg = SentenceSegmenter(early_first=False)
    assert seg.feed("Hello!") == []
    assert seg.feed("  ") == []
    assert [s.text for s in seg.feed("H")] == ["Hello!  "]


def test_list_marker_needs_its_space_before_a_decision() -> None:
    seg = SentenceSegmenter(early_first=False)
    assert seg.feed("Intro line\n12") == []
    assert seg.feed(".") == []
    assert [s.text for s in seg.feed(" ")] == ["Intro line\n"]


def test_close_twice_returns_nothing_and_feed_after_close_raises() -> None:
    seg = SentenceSegmenter()
    seg.feed("Hi")
    assert [s.text for s in seg.close()] == ["Hi"]
    assert seg.close() == []
    assert seg.closed
    with pytest.raises(UsageError):
        seg.feed("more")


def test_empty_and_whitespace_input() -> None:
    assert segment_whole("") == []
    segments = segment_whole("  \n ")
    assert [(s.text, s.kind, s.speakable) for s in segments] == [("  \n ", "final", "")]


def test_markup_only_text_is_joined_to_the_next_segment() -> None:
    segments = segment_whole("**\n\n---\n\n# \n\nReal text. More.", early_first=False)
    assert [s.text for s in segments] == ["**\n\n---\n\n# \n\nReal text. ", "More."]
    assert segments[0].speakable == "Real text."


@pytest.mark.parametrize(
    "options",
    [{"min_first_words": 0}, {"max_first_words": 0}, {"max_chars": 1}],
)
def test_bad_options_raise_usage_error(options: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        SentenceSegmenter(**options)  # type: ignore[arg-type]


SPEAKABLE_CASES = [
    ("**Bold** and _italic_ and ~~gone~~ text. ", "Bold and italic and gone text."),
    ("# Heading\n", "Heading"),
    ("- item one\n", "item one"),
    ("* star item\n", "star item"),
    ("1. First\n", "1. First"),
    ("> quoted text\n", "quoted text"),
    ("Read [the docs](https://x.org/a.b) now.", "Read the docs now."),
    ("See ![a cat](cat.png).", "See a cat."),
    ("Run `pip install x` first.", "Run pip install x first."),
    ("```python\nprint(1)\n```\n", "print(1)"),
    ("snake_case and 2 * 3 and 5*3 stay.", "snake_case and 2 * 3 and 5*3 stay."),
    ("  many   spaces\n\nand\tlines  ", "many spaces and lines"),
    ("| a | b |\n|---|---|\n| 1 | 2 |\n", "a b 1 2"),
    ("---\n", ""),
    ("Emoji 🎉 kept.", "Emoji 🎉 kept."),
]


@pytest.mark.parametrize(("text", "expected"), SPEAKABLE_CASES)
def test_speakable_removes_markdown_and_normalizes_whitespace(text: str, expected: str) -> None:
    assert speakable_text(text) == expected
    assert Segment(text, 0, len(text), "final").speakable == expected


def test_markdown_answer_is_segmented_and_spoken_without_markup() -> None:
    text = (
        "## Summary\n\n"
        "Here is **what** to do:\n\n"
        "1. Install it with `pip install streamtts`.\n"
        "2. Read [the guide](https://example.com/guide.html).\n\n"
        "That's all, e.g. for v2.1 too."
    )
    segments = assert_same_for_every_chunking(text)
    assert [s.speakable for s in segments] == [
        "Summary",
        "Here is what to do:",
        "1. Install it with pip install streamtts.",
        "2. Read the guide.",
        "That's all, e.g. for v2.1 too.",
    ]
