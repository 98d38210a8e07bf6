"""Sentence segmentation of streamed (LLM) text, sans-I/O.

`SentenceSegmenter` receives text in arbitrary chunks (`feed`) and returns the segments that are
complete so far, so that speech can start on the first sentence while the model is still writing
the next ones. Concatenating the ``text`` of every segment returned gives back the input exactly;
`Segment.speakable` is the version meant for the TTS engine (markdown removed, whitespace
normalized).

How it works
------------
Segments are cut only at a *gap*: a run of whitespace, or the zero-width point after CJK
punctuation or an em dash (which need no space after them). A cut is placed at the first
non-space character after the gap, so each segment carries its own trailing whitespace and none
starts with a space. The decision for a gap is made when that character has arrived (plus, for a
few cases, the next characters of the new line: a list marker ``12. `` is read to its end, and an
opening quote/bracket is skipped to find the first letter). Until the data for a decision is
there, scanning stops at that gap and resumes on the next `feed`; decisions therefore depend only
on the text, never on how it was chunked, and each is made as soon as it is certain.

A gap ends a sentence when the token before it ends in ``.``, ``!``, ``?``, ``…`` or a CJK
``。！？`` (followed by any closing quotes, brackets or emphasis markers), except: a ``.`` of a
title or Latin abbreviation (``Dr.``, ``e.g.``, ``vs.``), an initial (``J.``), a dotted acronym
(``U.S.``), an ordered-list marker (``1.``), or ``No.``/``Jan.`` before a number; a ``.`` or an
ellipsis followed by a lowercase word (``etc. and``, ``wait... what``); a quote closed on ``!`` or
``?`` followed by a lowercase word (``"Go!" he said``). Dots with no space after them (``3.14``,
``example.com/a.b``, ``v1.2``) never reach the rules: they are not followed by a gap.

A gap containing a newline ends a block when it holds an empty line, or when the line it ends or
the line it starts is a list item, heading, quote or table row.

The first segment of the stream may be cut early (kind ``"clause"``) to cut the time to first
sound; a sentence longer than ``max_chars`` is split at its last clause boundary, else at its last
word boundary, else (a single enormous token) at ``max_chars``. A piece with nothing speakable
(only markup or symbols) is never returned by `feed`: it is joined to the next segment.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final, Literal

from .errors import UsageError

__all__ = ["Segment", "SegmentKind", "SentenceSegmenter", "speakable_text"]

SegmentKind = Literal["sentence", "clause", "final"]

# Ends a sentence when followed by a gap (ASCII ones) or by anything (CJK ones, see _NOSPACE).
_TERMINATORS: Final = frozenset(".!?…。！？‽")
_CJK_TERMINATORS: Final = frozenset("。！？")
# Clause boundaries for the early first segment and for splitting long sentences.
_CLAUSE: Final = frozenset(",;:—–，、；：")
# Punctuation after which a segment may be cut with no whitespace (CJK text has no spaces; an em
# dash is usually written without them).
_NOSPACE: Final = frozenset("。！？，、；：—")
# Characters that may close a sentence after its terminator: the cut goes after them.
_CLOSERS: Final = frozenset("\"'”’»›)]}」』】）〉》*_`")
# Characters skipped when looking for the first letter of the next sentence.
_OPENERS: Final = frozenset("\"'“‘«‹([{「『【（〈《*_`¿¡")
_CLOSER_CHARS: Final = "".join(sorted(_CLOSERS))
_OPENER_CHARS: Final = "".join(sorted(_OPENERS))

# Abbreviations whose dot never ends a sentence: titles precede a name, Latin abbreviations
# introduce the rest of the sentence. Lowercased, without the final dot.
_ALWAYS_ABBREVIATIONS: Final = frozenset(
    {
        "mr", "mrs", "ms", "mx", "dr", "prof", "sr", "st", "rev", "hon", "gen", "col", "capt",
        "cpt", "lt", "sgt", "cmdr", "gov", "sen", "rep", "pres", "mt", "vs", "v", "e.g",
        "i.e", "cf", "viz", "al", "approx", "ca", "mme", "mlle", "messrs",
    }
)  # fmt: skip
# Abbreviations whose dot ends a sentence unless a digit follows ("No. 5", "Fig. 3", "Jan. 5").
_NUMBER_ABBREVIATIONS: Final = frozenset(
    {
        "no", "nos", "nr", "vol", "vols", "fig", "figs", "p", "pp", "ch", "sec", "art", "eq",
        "ref", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    }
)  # fmt: skip
# Dotted abbreviations that often end a sentence ("at 5 p.m. Then"): decided by the next letter,
# like any other word. Every other dotted acronym ("U.S.", "U.K.") never ends a sentence.
_DOTTED_SENTENCE_ENDERS: Final = frozenset({"a.m", "p.m", "b.c", "a.d"})
_DOTTED_ACRONYM: Final = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")


@dataclass(frozen=True, slots=True)
class Segment:
    """One piece of the input, as returned by `SentenceSegmenter`.

    Attributes:
        text: The exact input substring, including its trailing whitespace and any markdown.
        start: Offset of ``text`` in the whole input (characters).
        end: ``start + len(text)``.
        kind: ``"sentence"`` (ended by punctuation or the end of a block), ``"clause"`` (an early
            first piece, or a piece of a sentence longer than ``max_chars``) or ``"final"`` (what
            was left at `SentenceSegmenter.close`).
    """

    text: str
    start: int
    end: int
    kind: SegmentKind

    @property
    def speakable(self) -> str:
        """The text to send to the TTS engine: see `speakable_text`."""
        return speakable_text(self.text)


# --------------------------------------------------------------------------------------------
# Markdown → speakable text
# --------------------------------------------------------------------------------------------

_MD_FENCE: Final = re.compile(r"^[ \t]*(?:```|~~~)[^\n]*$", re.MULTILINE)
_MD_RULE: Final = re.compile(r"^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$", re.MULTILINE)
_MD_HEADING: Final = re.compile(r"^[ \t]*#{1,6}(?=[ \t]|$)", re.MULTILINE)
_MD_QUOTE: Final = re.compile(r"^[ \t]*(?:>[ \t]?)+", re.MULTILINE)
_MD_BULLET: Final = re.compile(r"^[ \t]*[-*+](?=[ \t])", re.MULTILINE)
_MD_LINK: Final = re.compile(r"!?\[([^\]\n]*)\]\([^()\s]*(?:\s+\"[^\"\n]*\")?\)")
_MD_TABLE_RULE: Final = re.compile(r"^[ \t]*\|?(?:[ \t]*:?-+:?[ \t]*\|)+[ \t]*:?-*:?[ \t]*$", re.M)
# Emphasis/strike markers at the edge of a word; "snake_case", "2 * 3" and "5*3" keep theirs.
_MD_EMPHASIS: Final = re.compile(r"(?<![\w*_~])[*_~]+(?=\S)|(?<=\S)[*_~]+(?![\w*_~])")
_WHITESPACE: Final = re.compile(r"\s+")


def speakable_text(text: str) -> str:
    """Remove markdown markup from ``text`` and normalize its whitespace.

    Removed: code fences and backticks, horizontal rules, heading ``#``, quote ``>``, list bullets
    (``-``, ``*``, ``+``; numbers of ordered lists are kept, they are read), emphasis markers
    (``**``, ``_``, ``~~``), table pipes, and link targets (``[text](url)`` → ``text``). Runs of
    whitespace become one space; leading and trailing whitespace is stripped.

    Args:
        text: Any text, typically a `Segment.text`.

    Returns:
        The text to speak; empty if ``text`` holds only whitespace and markup.
    """
    text = _MD_FENCE.sub("", text)
    text = _MD_RULE.sub("", text)
    text = _MD_TABLE_RULE.sub("", text)
    text = _MD_HEADING.sub("", text)
    text = _MD_QUOTE.sub("", text)
    text = _MD_BULLET.sub("", text)
    text = _MD_LINK.sub(r"\1", text)
    text = text.replace("`", "").replace("|", " ")
    text = _MD_EMPHASIS.sub("", text)
    return _WHITESPACE.sub(" ", text).strip()


def _has_speech(text: str) -> bool:
    # Something a TTS engine will pronounce: a letter or digit once markup is gone (a lone emoji
    # or "---" is not worth a request of its own).
    return any(ch.isalnum() for ch in text) and any(ch.isalnum() for ch in speakable_text(text))


def _is_wordlike_cjk(ch: str) -> bool:
    # Han, kana and hangul: each character counts as a word for the early first segment (CJK text
    # has no spaces to count words by).
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # hiragana, katakana
        or 0x3400 <= code <= 0x4DBF  # CJK extension A
        or 0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0xAC00 <= code <= 0xD7AF  # hangul syllables
        or 0xF900 <= code <= 0xFAFF  # CJK compatibility ideographs
        or 0x20000 <= code <= 0x2FA1F  # CJK extensions B–F, compatibility supplement
    )


def _joins_previous(ch: str) -> bool:
    # Characters that must stay with the one before them (combining marks, variation selectors,
    # emoji modifiers, the second half of a ZWJ sequence): never start a segment with one.
    return (
        unicodedata.category(ch).startswith("M")
        or ch == "\u200d"
        or 0xFE00 <= ord(ch) <= 0xFE0F
        or 0x1F3FB <= ord(ch) <= 0x1F3FF
        or 0xE0020 <= ord(ch) <= 0xE007F
    )


class _Undecided(Exception):
    """Internal: the decision at a gap needs characters that have not arrived yet."""


@dataclass(slots=True)
class _LineState:
    # Whether the current line is a list item, heading, quote or table row, and the absolute
    # offset just after its marker token ("12." of "12. Item"), -1 if none.
    item: bool = False
    marker_end: int = -1


class SentenceSegmenter:
    """Split streamed text into sentences as soon as each one is certain.

    Sans-I/O: `feed` text as it arrives, get the complete segments back; `close` at the end of
    the text returns the rest. The concatenation of every returned ``Segment.text`` equals the
    concatenation of everything fed, and the offsets are consistent with it.

    A segment is released when the first non-space character after it has arrived (that is when
    its trailing whitespace, and for a ``.`` whether it ends a sentence, is known). With typical
    LLM tokens (``" Next"``), that is the very next token.

    Args:
        min_first_words: The first segment may end at a clause boundary (``, ; : — –`` or CJK
            ``，、``) once it has at least this many words. 3 is the shortest clause that still
            sounds natural on its own (no cut after the "Sure," of "Sure, I can help with that.").
        max_first_words: Otherwise the first segment ends at the first word boundary after this
            many words. 10 words arrive within ~0.2–0.5 s from an LLM and last ~4 s spoken:
            short enough that synthesis starts early, long enough for a natural phrase and to
            cover the synthesis of the next segment.
        max_chars: A sentence longer than this (~15 s of speech at 250) is split at its last
            clause boundary, else its last word boundary, so that no request takes long to
            synthesize and the next one can be queued.
        early_first: Set to False to disable the early first segment (the first segment is then a
            whole sentence like the others).

    Raises:
        UsageError: If an option is out of range.
    """

    def __init__(
        self,
        *,
        min_first_words: int = 3,
        max_first_words: int = 10,
        max_chars: int = 250,
        early_first: bool = True,
    ) -> None:
        if min_first_words < 1 or max_first_words < 1:
            raise UsageError("min_first_words and max_first_words must be at least 1")
        if max_chars < 2:
            raise UsageError("max_chars must be at least 2")
        self.min_first_words = min_first_words
        self.max_first_words = max_first_words
        self.max_chars = max_chars
        self.early_first = early_first

        self._buf = ""  # the text of the current (unfinished) segment and everything after it
        self._base = 0  # absolute offset of _buf[0] in the whole input
        self._i = 0  # next position of _buf to scan
        self._closed = False
        self._emitted = 0
        self._line = _LineState()
        self._at_line_start = True  # no non-space character seen on the current line yet
        self._reset_segment()

    # ---- public API ----------------------------------------------------------------------

    def feed(self, text: str) -> list[Segment]:
        """Add text; return the segments that are now complete (possibly none).

        Raises:
            UsageError: If called after `close`.
        """
        if self._closed:
            raise UsageError("feed() called after close()")
        if not text:
            return []
        self._buf += text
        return self._scan(final=False)

    def close(self) -> list[Segment]:
        """End of text: return every remaining segment (the last one has kind ``"final"``).

        The last segment's `Segment.speakable` is empty only if the input ended with markup or
        whitespace after the last spoken sentence (or held nothing to speak at all); skip such a
        segment. Calling `close` again returns an empty list.
        """
        if self._closed:
            return []
        out = self._scan(final=True)
        self._closed = True
        if self._buf:
            out.append(self._make(len(self._buf), "final"))
        return out

    @property
    def closed(self) -> bool:
        """True once `close` has been called."""
        return self._closed

    # ---- scanning ------------------------------------------------------------------------

    def _reset_segment(self) -> None:
        self._words = 0  # words in the current segment (tokens holding a letter or digit)
        self._token_counted = False  # the current token has been counted as a word
        self._token_start = 0  # start of the current/last token in _buf
        self._last_nonspace = -1  # index in _buf of the last non-space character, -1 if none
        self._gap_newlines = 0  # newlines in the current whitespace run
        self._split_at = self.max_chars  # _buf index at which a long segment is split
        # Latest places where a long segment could be split: (index, line state after it).
        self._clause_cut: tuple[int, _LineState] | None = None
        self._word_cut: tuple[int, _LineState] | None = None

    def _scan(self, *, final: bool) -> list[Segment]:
        out: list[Segment] = []
        buf = self._buf
        i = self._i
        while i < len(buf):
            if i >= self._split_at:
                cut = self._long_split(i)
                if cut is not None:
                    out.append(cut)
                    buf = self._buf
                    i = 0
                    continue
            ch = buf[i]
            if ch.isspace():
                if ch == "\n":
                    self._gap_newlines += 1
                    self._at_line_start = True
                self._token_counted = False
                i += 1
                continue
            gap = i > 0 and (buf[i - 1].isspace() or self._nospace_gap(i))
            if gap or self._at_line_start:
                try:
                    kind = self._decide(i, gap=gap, final=final)
                except _Undecided:
                    break
                if gap:
                    self._gap_newlines = 0
                    self._token_start = i
                    self._token_counted = False
                if kind is not None and _has_speech(buf[:i]):
                    out.append(self._make(i, kind))
                    buf = self._buf
                    i = 0
                    continue
            # A word is a token holding a letter or digit; each CJK character is a word.
            if _is_wordlike_cjk(ch) or (not self._token_counted and ch.isalnum()):
                self._words += 1
                self._token_counted = True
            self._last_nonspace = i
            i += 1
        self._i = i
        return out

    def _make(self, cut: int, kind: SegmentKind) -> Segment:
        """Emit ``_buf[:cut]`` and start a new segment at ``cut``."""
        text = self._buf[:cut]
        seg = Segment(text, self._base, self._base + cut, kind)
        self._buf = self._buf[cut:]
        self._base += cut
        self._i = 0
        self._emitted += 1
        self._reset_segment()
        return seg

    def _nospace_gap(self, i: int) -> bool:
        # A zero-width gap at i: the characters before (closers skipped) end in CJK punctuation or
        # an em dash, and the one at i neither closes nor continues that punctuation.
        buf = self._buf
        ch = buf[i]
        if ch in _CLOSERS or ch in _TERMINATORS or ch in _CLAUSE or _joins_previous(ch):
            return False
        j = i - 1
        while j >= 0 and buf[j] in _CLOSERS:
            j -= 1
        return j >= 0 and buf[j] in _NOSPACE

    def _decide(self, i: int, *, gap: bool, final: bool) -> SegmentKind | None:
        """Decide whether to cut before ``_buf[i]``, the first non-space after a gap.

        Raises `_Undecided` (changing no state) when characters after ``i`` are needed.
        """
        line = self._line
        block_end = False
        if self._at_line_start:
            new_line = self._line_marker(i, final=final)
            block_end = (
                gap
                and self._gap_newlines > 0
                and (self._gap_newlines >= 2 or line.item or new_line.item)
            )
        else:
            new_line = line
        kind: SegmentKind | None = None
        if gap:
            token = self._buf[self._token_start : self._last_nonspace + 1]
            # The token's text without the closers after its punctuation; " " if there is no
            # token (leading whitespace of the input), which matches no rule.
            core = token.rstrip(_CLOSER_CHARS) or token or " "
            sentence = self._sentence_end(core, i, final=final)
            if sentence or block_end:
                kind = "sentence"
            elif self.early_first and self._emitted == 0:
                at_clause = core[-1] in _CLAUSE and self._words >= self.min_first_words
                # Word boundary after enough words, but not right after an abbreviation's dot.
                at_word = (
                    self._words >= self.max_first_words
                    and self._buf[i - 1].isspace()
                    and core[-1] != "."
                )
                if at_clause or at_word:
                    kind = "clause"
        # Nothing was undecided: commit the line state and remember split candidates.
        self._line = new_line
        self._at_line_start = False
        if gap and kind is None:
            self._word_cut = (i, new_line) if self._buf[i - 1].isspace() else self._word_cut
            if core[-1] in _CLAUSE:
                self._clause_cut = (i, new_line)
        return kind

    def _line_marker(self, i: int, *, final: bool) -> _LineState:
        """Classify the line whose first non-space character is ``_buf[i]``."""
        buf = self._buf
        n = len(buf)

        def at(j: int) -> str:
            if j < n:
                return buf[j]
            if final:
                return ""
            raise _Undecided

        ch = buf[i]
        if ch in ">|":  # block quote, table row
            return _LineState(True, -1)
        if ch in "-*+":
            if at(i + 1) in (" ", "\t"):
                return _LineState(True, self._base + i + 1)
            return _LineState()
        j = i
        if ch == "#":
            while j - i < 7 and at(j) == "#":
                j += 1
            if j - i <= 6 and at(j) in (" ", "\t", "\n", ""):
                return _LineState(True, -1)
            return _LineState()
        if ch.isdigit() and ch.isascii():
            while j - i < 10 and at(j).isdigit() and at(j).isascii():
                j += 1
            if at(j) in (".", ")") and at(j + 1) in (" ", "\t"):
                return _LineState(True, self._base + j + 1)
        return _LineState()

    def _next_letter(self, i: int, *, final: bool) -> str:
        """The first character at or after ``i`` that is not an opening quote/bracket/marker."""
        buf = self._buf
        j = i
        while j < len(buf) and buf[j] in _OPENERS:
            j += 1
        if j < len(buf):
            return buf[j]
        if final:
            return ""
        raise _Undecided

    def _sentence_end(self, core: str, i: int, *, final: bool) -> bool:
        """Does the token ``core`` (closers removed) end a sentence, ``_buf[i]`` coming next?"""
        last = core[-1]
        if last not in _TERMINATORS:
            return False
        if last in _CJK_TERMINATORS:
            return True
        if last in "!?‽":
            # '"Go!" he shouted': a quote closed on ! or ? and followed by a lowercase word is
            # dialogue inside the sentence.
            quoted = self._last_nonspace + 1 - self._token_start > len(core)
            return not (quoted and self._next_letter(i, final=final).islower())
        if last == "…" or core.endswith(".."):
            # An ellipsis continues the sentence when a lowercase word follows: "wait... what".
            return not self._next_letter(i, final=final).islower()
        # A single dot.
        end_abs = self._base + self._token_start + len(core)
        if end_abs == self._line.marker_end:
            return False  # "1." of an ordered list item
        word = core[:-1].lstrip(_OPENER_CHARS)
        lower = word.lower()
        if lower in _ALWAYS_ABBREVIATIONS:
            return False
        nxt = self._next_letter(i, final=final)
        if lower in _NUMBER_ABBREVIATIONS and nxt.isdigit():
            return False
        if len(word) == 1 and word.isalpha() and word.isupper():
            return False  # an initial: "J. R. R. Tolkien"
        if _DOTTED_ACRONYM.fullmatch(word) and lower not in _DOTTED_SENTENCE_ENDERS:
            return False  # "U.S.", "U.K."
        # Any other word: a sentence does not start with a lowercase letter ("etc. and more").
        return not nxt.islower()

    def _long_split(self, i: int) -> Segment | None:
        """Split the current segment, longer than ``max_chars``, before position ``i``."""
        buf = self._buf
        if not _has_speech(buf[:i]):
            self._split_at = i + self.max_chars  # nothing to say yet: look again later
            return None
        for candidate in (self._clause_cut, self._word_cut):
            if candidate is not None and _has_speech(buf[: candidate[0]]):
                cut, line = candidate
                # The text after the cut is scanned again: restore the line state at the cut.
                self._line = line
                self._at_line_start = False
                return self._make(cut, "clause")
        # One enormous token: cut inside it, but not in whitespace (the gap would be lost) nor
        # before a character that belongs to the previous one.
        if buf[i].isspace() or buf[i - 1].isspace():
            return None
        cut = i
        while cut > 1 and _joins_previous(buf[cut]):
            cut -= 1
        if not _has_speech(buf[:cut]):
            return None
        line, at_start = self._line, self._at_line_start
        seg = self._make(cut, "clause")
        self._line, self._at_line_start = line, at_start
        # The rest of the token is scanned again; it is not a new line.
        return seg
