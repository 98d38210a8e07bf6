"""RingBuffer: the lock-free single-producer / single-consumer handoff to the audio callback."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtts.errors import UsageError
from streamtts.ring import RingBuffer


def ramp(start: int, n: int, channels: int = 1) -> np.ndarray:
    """Frames whose values are their absolute index (channel c adds c/10)."""
    base = np.arange(start, start + n, dtype=np.float32).reshape(-1, 1)
    return base + np.arange(channels, dtype=np.float32) / 10


def test_frames_come_out_in_the_order_they_went_in() -> None:
    ring = RingBuffer(16, 2)
    assert ring.write(ramp(0, 10, 2)) == 10
    out = np.full((10, 2), -1.0, dtype=np.float32)
    assert ring.read_into(out) == 10
    np.testing.assert_array_equal(out, ramp(0, 10, 2))
    assert ring.readable() == 0
    assert ring.writable() == 16


def test_wraparound_splits_the_copy_but_not_the_data() -> None:
    ring = RingBuffer(8, 1)
    ring.write(ramp(0, 6))
    out = np.zeros((5, 1), dtype=np.float32)
    ring.read_into(out)
    assert ring.write(ramp(6, 7)) == 7  # rows 6,7 then 0..4: crosses the end of the storage
    got = np.zeros((8, 1), dtype=np.float32)
    assert ring.read_into(got) == 8
    np.testing.assert_array_equal(got, ramp(5, 8))
    assert (ring.read_index, ring.write_index) == (13, 13)


def test_a_full_ring_takes_only_what_fits() -> None:
    ring = RingBuffer(8, 1)
    assert ring.write(ramp(0, 5)) == 5
    assert ring.write(ramp(5, 5)) == 3
    assert ring.writable() == 0
    assert ring.write(ramp(8, 1)) == 0
    out = np.zeros((8, 1), dtype=np.float32)
    ring.read_into(out)
    np.testing.assert_array_equal(out, ramp(0, 8))


def test_an_empty_ring_leaves_the_output_untouched() -> None:
    ring = RingBuffer(4, 1)
    out = np.full((3, 1), 7.0, dtype=np.float32)
    assert ring.read_into(out) == 0
    assert (out == 7.0).all()


def test_partial_reads_fill_from_the_given_row_and_stop_at_the_data() -> None:
    ring = RingBuffer(8, 1)
    ring.write(ramp(0, 3))
    out = np.full((6, 1), -1.0, dtype=np.float32)
    assert ring.read_into(out, 2) == 3
    np.testing.assert_array_equal(out[:, 0], [-1, -1, 0, 1, 2, -1])
    ring.write(ramp(3, 4))
    out2 = np.zeros((6, 1), dtype=np.float32)
    assert ring.read_into(out2, 0, 2) == 2
    np.testing.assert_array_equal(out2[:2], ramp(3, 2))
    assert ring.readable() == 2


def test_skip_drops_unread_frames_only() -> None:
    ring = RingBuffer(8, 1)
    ring.write(ramp(0, 5))
    assert ring.skip(3) == 3
    assert ring.skip(10) == 2
    assert ring.readable() == 0
    ring.write(ramp(5, 2))
    out = np.zeros((2, 1), dtype=np.float32)
    ring.read_into(out)
    np.testing.assert_array_equal(out, ramp(5, 2))


def test_mono_blocks_may_be_one_dimensional() -> None:
    ring = RingBuffer(4, 1)
    assert ring.write(np.array([1.0, 2.0], dtype=np.float32)) == 2
    out = np.zeros((2, 1), dtype=np.float32)
    ring.read_into(out)
    np.testing.assert_array_equal(out[:, 0], [1.0, 2.0])


@pytest.mark.parametrize("shape", [(4, 2), (4, 1, 1)])
def test_blocks_of_the_wrong_shape_are_refused(shape: tuple[int, ...]) -> None:
    ring = RingBuffer(8, 1)
    with pytest.raises(UsageError):
        ring.write(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize(("capacity", "channels"), [(0, 1), (4, 0)])
def test_an_empty_ring_cannot_be_made(capacity: int, channels: int) -> None:
    with pytest.raises(UsageError):
        RingBuffer(capacity, channels)


ops = st.lists(
    st.tuples(st.sampled_from(["write", "read"]), st.integers(0, 20), st.integers(0, 5)),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 16), channels=st.integers(1, 3), steps=ops)
def test_behaves_like_a_bounded_fifo(
    capacity: int, channels: int, steps: list[tuple[str, int, int]]
) -> None:
    ring = RingBuffer(capacity, channels)
    model: deque[np.ndarray] = deque()
    counter = 0
    for op, n, start in steps:
        if op == "write":
            block = ramp(counter, n, channels)
            written = ring.write(block)
            assert written == min(n, capacity - len(model))
            model.extend(block[:written])
            counter += written
        else:
            out = np.full((start + n, channels), -1.0, dtype=np.float32)
            got = ring.read_into(out, start, n)
            expected = [model.popleft() for _ in range(min(n, len(model)))]
            assert got == len(expected)
            if expected:
                np.testing.assert_array_equal(out[start : start + got], np.array(expected))
            assert (out[:start] == -1.0).all()
            assert (out[start + got :] == -1.0).all()
        assert ring.readable() == len(model)
        assert ring.writable() == capacity - len(model)


def test_a_producer_and_a_consumer_thread_lose_and_reorder_nothing() -> None:
    total, ring = 200_000, RingBuffer(1024, 1)
    received = np.zeros(total, dtype=np.float32)

    def produce() -> None:
        sent = 0
        while sent < total:
            sent += ring.write(ramp(sent, min(700, total - sent)))

    thread = threading.Thread(target=produce)
    thread.start()
    got = 0
    out = np.zeros((480, 1), dtype=np.float32)
    while got < total:
        n = ring.read_into(out)
        received[got : got + n] = out[:n, 0]
        got += n
    thread.join()
    np.testing.assert_array_equal(received, np.arange(total, dtype=np.float32))
