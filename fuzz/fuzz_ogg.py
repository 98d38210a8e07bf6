"""Fuzz target: the Ogg demuxer (`streamtts.ogg.OggReader`).

Oracles, for any input:

* the reader raises nothing (it reports damage as events) and returns only packets and events;
* the output is identical fed whole and fed in a split derived from the input;
* after every feed it holds at most one unresolved page (``buffered <= MAX_PAGE_SIZE + 3``),
  and nothing after `close`; a second `close` returns ``[]``, a feed after it is a `UsageError`;
* packets hold no more bytes than the input (apart from those released early from a page that
  then failed its CRC, or was cut short by the end of input and given up as garbage); every
  offset lies inside the input; garbage runs are non-empty;
  ``StreamTruncated`` comes once, last;
* on an input for which it reports no event at all, its packets are exactly those of a plain
  whole-buffer parse (``_fuzzlib.reference_ogg_packets``);
* a complete page appended to any input (in a chunk of its own) is delivered: the reader always
  resyncs, also past a page left unfinished before it (given up at `close`).

Run: ``python fuzz/fuzz_ogg.py fuzz/corpus/ogg -dict=fuzz/formats.dict`` (see fuzz/README.md).
"""

from __future__ import annotations

import sys

import _fuzzlib

with _fuzzlib.instrumented(__name__):
    from streamtts.errors import UsageError
    from streamtts.events import (
        ChecksumMismatch,
        DataLost,
        StreamEvent,
        StreamTruncated,
        SyncLost,
    )
    from streamtts.ogg import MAX_PAGE_SIZE, OggPacket, OggReader, build_page

Item = OggPacket | StreamEvent

# A complete page appended to every input: whatever came before, the reader must resync and
# deliver it. A BOS page of its own serial (a new chain link, as a server concatenating responses
# would send), fed as a separate chunk.
_TAIL_SERIAL = 0x7A11
_TAIL_PACKET = b"tail page packet"
_TAIL_PAGE = build_page(_TAIL_SERIAL, 0, 0, [_TAIL_PACKET], bos=True)


def read(chunks: list[bytes]) -> list[Item]:
    """Everything an `OggReader` returns for ``chunks``, checking its buffer bound and its
    behaviour after `close`."""
    reader = OggReader()
    out: list[Item] = []
    fed = 0
    for chunk in chunks:
        out += reader.feed(chunk)
        fed += len(chunk)
        assert reader.buffered <= MAX_PAGE_SIZE + 3, f"buffer {reader.buffered} after {fed} B"
        assert reader.offset == fed
    out += reader.close()
    assert reader.buffered == 0
    assert reader.close() == []
    try:
        reader.feed(b"x")
    except UsageError:
        pass
    else:
        raise AssertionError("feed() after close() did not raise UsageError")
    return out


def check_tail(data: bytes) -> None:
    """A complete page after any input is delivered."""
    items = read([data, _TAIL_PAGE])
    if any(isinstance(x, OggPacket) and x.data == _TAIL_PACKET for x in items):
        return
    # A valid page of the input may end inside the appended one (the fuzzer can make its CRC
    # come right with those bytes): then the appended page is broken, not lost.
    for offset in {x.offset for x in items}:
        page = _fuzzlib.valid_page_at(data + _TAIL_PAGE, offset)
        if page is not None and offset + page.size > len(data):
            return
    raise AssertionError("the page after the input was lost")


@_fuzzlib.contract
def check(data: bytes, chunks: list[bytes] | None = None) -> None:
    """Assert the reader's contract on ``data`` (see the module docstring)."""
    whole = read([data])
    split = read(_fuzzlib.chunk_plan(data) if chunks is None else chunks)
    assert split == whole, "output depends on the chunking"
    packets = [x for x in whole if isinstance(x, OggPacket)]
    events = [x for x in whole if not isinstance(x, OggPacket)]
    assert all(isinstance(e, StreamEvent) for e in events)
    # Pages never overlap, except a page whose packets were released early and which then
    # failed its CRC (ChecksumMismatch(released=True)) or was cut short by the end of input and
    # given up (a garbage run then starts at its offset): a page found inside it is read again.
    failed = {e.offset for e in events if isinstance(e, ChecksumMismatch) and e.released}
    failed |= {e.offset for e in events if isinstance(e, SyncLost)}
    assert sum(len(p.data) for p in packets if p.offset not in failed) <= len(data)
    for item in whole:
        assert 0 <= item.offset <= len(data), item
    for event in events:
        if isinstance(event, SyncLost):
            assert event.skipped > 0, event
            assert event.offset + event.skipped <= len(data), event
        elif isinstance(event, DataLost):
            assert (event.position, event.samples) == (-1, 0), event
    truncated = [i for i, x in enumerate(whole) if isinstance(x, StreamTruncated)]
    assert truncated in ([], [len(whole) - 1]), "StreamTruncated must come once, last"
    check_tail(data)
    if not events:
        reference = _fuzzlib.reference_ogg_packets(data)
        if reference is not None:
            got = [(p.serial, p.data, p.granule) for p in packets]
            assert got == reference, "a clean stream read differently from the reference parse"


if __name__ == "__main__":
    from make_seeds import ogg_seeds

    _fuzzlib.main(check, seeds=ogg_seeds, ogg=True)
    sys.exit(0)
