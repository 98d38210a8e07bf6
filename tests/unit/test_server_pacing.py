"""The impairment pacer on a fake clock: every knob gives exactly the schedule it promises."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from streamtts.ogg import OggWriter
from streamtts.server.impair import Impairment, OggClock, PcmClock, WavClock, impair
from streamtts.wav import wav_header


class FakeClock:
    """A clock that only moves when the pacer sleeps (or when the source says time passed)."""

    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.t += seconds


async def _source(chunks: list[bytes], clock: FakeClock, gaps: list[float] | None = None):
    for i, chunk in enumerate(chunks):
        if gaps:
            clock.t += gaps[i]
        yield chunk


def run_pacer(
    chunks: list[bytes],
    imp: Impairment,
    *,
    audio_clock: object | None = None,
    gaps: list[float] | None = None,
) -> list[tuple[float, bytes]]:
    """(departure time relative to the start, piece) of every write."""
    clock = FakeClock()
    start = clock.t
    out: list[tuple[float, bytes]] = []

    async def main() -> None:
        body: AsyncIterator[bytes] = impair(
            _source(chunks, clock, gaps),
            imp,
            clock=audio_clock,  # type: ignore[arg-type]
            now=clock.now,
            sleep=clock.sleep,
        )
        async for piece in body:
            out.append((round(clock.t - start, 9), piece))

    anyio.run(main)
    return out


def test_no_impairment_passes_chunks_through_unchanged_and_at_once() -> None:
    chunks = [b"abc", b"", b"defgh"]
    out = run_pacer(chunks, Impairment())
    assert [p for _, p in out] == [b"abc", b"defgh"]
    assert all(t == 0 for t, _ in out)


def test_first_byte_delay_delays_the_first_write_only() -> None:
    out = run_pacer([b"a" * 10, b"b" * 10], Impairment(first_byte_delay=0.3))
    assert [t for t, _ in out] == [0.3, 0.3]


def test_first_byte_delay_is_not_added_to_a_source_that_is_slower() -> None:
    out = run_pacer([b"a", b"b"], Impairment(first_byte_delay=0.3), gaps=[0.5, 0.0])
    assert [t for t, _ in out] == [0.5, 0.5]


def test_rate_cap_schedules_each_write_when_its_last_byte_has_crossed_the_link() -> None:
    out = run_pacer([b"x" * 1000, b"y" * 500], Impairment(rate=1000.0, chunk_size=250))
    assert [len(p) for _, p in out] == [250] * 6
    assert [t for t, _ in out] == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5]


def test_chunk_size_cuts_writes_but_keeps_every_byte_in_order() -> None:
    data = bytes(range(256)) * 3
    out = run_pacer([data[:100], data[100:]], Impairment(chunk_size=7))
    assert all(len(p) <= 7 for _, p in out)
    assert b"".join(p for _, p in out) == data


def test_realtime_pacing_sends_audio_when_it_is_due_at_the_given_speed() -> None:
    # 24 kHz s16 mono: 48 000 bytes per second of audio; at 2x real time 1 s of audio takes 0.5 s.
    second = b"\0" * 48_000
    out = run_pacer([second, second], Impairment(realtime=2.0), audio_clock=PcmClock(48_000))
    assert [t for t, _ in out] == [0.5, 1.0]


def test_realtime_pacing_needs_an_audio_clock() -> None:
    with pytest.raises(ValueError, match="AudioClock"):
        run_pacer([b"a"], Impairment(realtime=1.0))


def test_stall_freezes_the_link_once_and_shifts_everything_after_it() -> None:
    imp = Impairment(rate=100.0, chunk_size=10, stall_at=0.25, stall_for=2.0)
    times = [t for t, _ in run_pacer([b"z" * 60], imp)]
    assert times == [0.1, 0.2, 2.3, 2.4, 2.5, 2.6]


def test_jitter_delays_writes_within_its_bound_keeps_order_and_repeats_with_a_seed() -> None:
    imp = Impairment(rate=1000.0, chunk_size=100, jitter=0.05, seed=7)
    first = run_pacer([b"j" * 2000], imp)
    again = run_pacer([b"j" * 2000], imp)
    assert first == again
    times = [t for t, _ in first]
    assert times == sorted(times)
    for i, t in enumerate(times):
        nominal = (i + 1) * 0.1
        assert nominal <= t <= nominal + 0.05 + 1e-9
    assert any(t > (i + 1) * 0.1 for i, t in enumerate(times))


def test_disconnect_after_cuts_the_body_at_exactly_that_many_bytes() -> None:
    imp = Impairment(disconnect_after=1234)
    out = run_pacer([b"q" * 1000, b"r" * 1000, b"s" * 1000], imp)
    assert sum(len(p) for _, p in out) == 1234
    assert imp.disconnects(1234)
    assert not imp.disconnects(1233)


def test_a_body_shorter_than_disconnect_after_ends_normally() -> None:
    imp = Impairment(disconnect_after=10_000)
    out = run_pacer([b"q" * 100], imp)
    assert sum(len(p) for _, p in out) == 100
    assert not imp.disconnects(100)


# --- audio clocks -------------------------------------------------------------------------------


def test_ogg_clock_reports_the_granule_of_the_last_complete_page_under_any_split() -> None:
    writer = OggWriter(serial=5)
    writer.add(b"OpusHead" + bytes(11), 0)
    stream = writer.flush()
    granules = [960 * 50, 960 * 100, 960 * 125]
    for granule in granules:
        writer.add(b"\xf8" + bytes(40), granule)
        stream += writer.flush()
    for split in (1, 7, 27, 28, 100, len(stream)):
        clock = OggClock()
        seen = [clock.feed(stream[i : i + split]) for i in range(0, len(stream), split)]
        assert seen == sorted(seen)
        assert seen[-1] == pytest.approx(granules[-1] / 48_000)
        assert set(seen) <= {0.0, *(g / 48_000 for g in granules)}


def test_wav_clock_counts_only_the_bytes_after_the_data_header() -> None:
    header = wav_header(24_000, 1, frames=None)
    clock = WavClock(48_000)
    assert clock.feed(header[:20]) == 0.0
    assert clock.feed(header[20:]) == 0.0
    assert clock.feed(b"\0" * 24_000) == pytest.approx(0.5)


# --- X-Impair-* headers -------------------------------------------------------------------------


def test_headers_override_the_server_impairment_and_none_clears_a_knob() -> None:
    base = Impairment(rate=5000.0, jitter=0.1)
    imp = base.with_headers(
        {
            "X-Impair-First-Byte-Delay": "0.3",
            "x-impair-rate": "none",
            "X-Impair-Disconnect-After": "100",
            "X-Impair-Page-Duration": "1",
            "Content-Type": "application/json",
        }
    )
    assert imp == Impairment(
        first_byte_delay=0.3, jitter=0.1, disconnect_after=100, page_duration=1.0
    )


@pytest.mark.parametrize(
    ("header", "value", "message"),
    [
        ("X-Impair-Speed", "2", "unknown impairment header"),
        ("X-Impair-Rate", "fast", "must be a number"),
        ("X-Impair-Chunk-Size", "1.5", "must be an integer"),
        ("X-Impair-Jitter", "-1", "jitter"),
        ("X-Impair-Rate", "0", "rate must be > 0"),
        ("X-Impair-Page-Duration", "3", "page_duration"),
        ("X-Impair-Stall-At", "nan", "stall_at"),
    ],
)
def test_bad_impairment_headers_are_refused_naming_the_problem(
    header: str, value: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Impairment().with_headers({header: value})


def test_the_unknown_header_error_lists_every_knob_by_its_header_name() -> None:
    with pytest.raises(ValueError, match="unknown impairment header") as info:
        Impairment().with_headers({"X-Impair-Nothing": "1"})
    for name in (
        "First-Byte-Delay",
        "Rate",
        "Realtime",
        "Chunk-Size",
        "Jitter",
        "Stall-At",
        "Stall-For",
        "Disconnect-After",
        "Page-Duration",
        "Seed",
    ):
        assert f"X-Impair-{name}" in str(info.value)
