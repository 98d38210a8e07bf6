"""Each impairment knob of the local server, verified by what arrives at a real client.

Times are only used as lower bounds measured from the client's request start, which precedes
everything the server does: a slow machine can only make them larger, so they cannot flake.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import anyio
import pytest
from support.loopback import serve_asgi
from support.oggtools import parse_pages

from streamtts.engines import OpenAIEngine
from streamtts.errors import StreamInterrupted
from streamtts.server import create_app

TEXT = "Testing the link."


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve_asgi(create_app()) as url:
        yield url


class Received:
    def __init__(self) -> None:
        self.request_start = 0.0
        self.headers_at = 0.0
        self.arrivals: list[tuple[float, int]] = []  # (time since request start, bytes)
        self.data = b""
        self.error: Exception | None = None

    @property
    def last(self) -> float:
        return self.arrivals[-1][0]

    def max_gap(self) -> float:
        times = [t for t, _ in self.arrivals]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def fetch(
    base_url: str, headers: dict[str, str], *, fmt: str = "pcm", text: str = TEXT
) -> Received:
    got = Received()

    async def main() -> None:
        async with OpenAIEngine(base_url=f"{base_url}/v1", api_key="x", max_retries=0) as engine:
            got.request_start = time.monotonic()
            try:
                async with engine.stream(text, format=fmt, extra_headers=headers) as audio:
                    assert audio.headers_received is not None
                    got.headers_at = audio.headers_received - got.request_start
                    async for chunk in audio.aiter_bytes():
                        got.arrivals.append((time.monotonic() - got.request_start, len(chunk)))
                        got.data += chunk
            except StreamInterrupted as exc:
                got.error = exc

    anyio.run(main)
    return got


def test_without_impairment_the_whole_body_arrives(base_url: str) -> None:
    got = fetch(base_url, {})
    assert got.error is None
    assert len(got.data) > 20_000


def test_first_byte_delay_holds_back_the_headers_and_the_first_byte(base_url: str) -> None:
    got = fetch(base_url, {"X-Impair-First-Byte-Delay": "0.4"})
    assert got.headers_at >= 0.4
    assert got.arrivals[0][0] >= 0.4


def test_rate_cap_limits_the_throughput(base_url: str) -> None:
    rate = 100_000.0
    got = fetch(base_url, {"X-Impair-Rate": str(rate), "X-Impair-Chunk-Size": "2000"})
    assert got.error is None
    # The last byte cannot arrive before the whole body has crossed a link of that rate.
    assert got.last >= len(got.data) / rate


def test_realtime_pacing_delivers_the_audio_no_faster_than_the_multiple(base_url: str) -> None:
    got = fetch(base_url, {"X-Impair-Realtime": "4", "X-Impair-Chunk-Size": "4800"})
    audio_seconds = len(got.data) / 48_000  # 24 kHz s16 mono
    assert audio_seconds > 0.5
    assert got.last >= audio_seconds / 4


def test_stall_freezes_the_stream_for_the_given_time(base_url: str) -> None:
    rate = 200_000.0
    headers = {
        "X-Impair-Rate": str(rate),
        "X-Impair-Chunk-Size": "2000",
        "X-Impair-Stall-At": "0.05",
        "X-Impair-Stall-For": "0.6",
    }
    got = fetch(base_url, headers)
    assert got.error is None
    assert got.last >= len(got.data) / rate + 0.6
    assert got.max_gap() >= 0.45  # one long silence on the link (margin for scheduling noise)


@pytest.mark.parametrize("limit", [1, 777, 5000])
def test_disconnect_after_n_bytes_interrupts_the_stream_after_exactly_n_bytes(
    base_url: str, limit: int
) -> None:
    got = fetch(base_url, {"X-Impair-Disconnect-After": str(limit)})
    assert len(got.data) == limit
    assert isinstance(got.error, StreamInterrupted)


def test_one_byte_writes_deliver_the_same_stream(base_url: str) -> None:
    plain = fetch(base_url, {}, fmt="opus")
    tiny = fetch(base_url, {"X-Impair-Chunk-Size": "1"}, fmt="opus")
    assert tiny.error is None
    tiny_pages, plain_pages = parse_pages(tiny.data), parse_pages(plain.data)
    assert tiny_pages[0].body == plain_pages[0].body  # the same OpusHead
    assert abs(len(tiny_pages) - len(plain_pages)) <= 2  # the same speech, page for page


@pytest.mark.parametrize(("seconds", "granules"), [(0, 960), (0.2, 9600), (1.0, 48_000)])
def test_page_duration_sets_the_audio_per_ogg_page(
    base_url: str, seconds: float, granules: int
) -> None:
    text = "A few sentences of speech. Enough for several pages of audio. One more."
    got = fetch(base_url, {"X-Impair-Page-Duration": str(seconds)}, fmt="opus", text=text)
    pages = parse_pages(got.data)
    audio_pages = [p for p in pages if p.granule > 0]
    full_pages = audio_pages[:-1]  # the last page holds what was left
    steps = [b.granule - a.granule for a, b in itertools.pairwise(full_pages)]
    assert len(steps) >= 2
    # Every full page holds the duration asked for (to within one 20 ms packet).
    assert all(granules <= s < granules + 960 for s in steps), steps
