"""A lock-free single-producer / single-consumer ring buffer of float32 frames.

How it works: the storage is one preallocated ``(capacity, channels)`` float32 array. Two
counters grow forever: ``write_index`` (total frames ever written, moved ONLY by the producer) and
``read_index`` (total frames ever read, moved ONLY by the consumer). A frame with absolute index
``i`` lives at row ``i % capacity``. Each side reads the other's counter once (a snapshot), copies
data, and only then publishes its own counter with a single attribute store. Under the GIL a
store of an ``int`` attribute is atomic and ordered with the copy before it, so:

* the consumer never sees a frame before the producer has finished copying it (the producer
  publishes ``write_index`` after the copy);
* the producer never overwrites a frame the consumer is still copying (the consumer publishes
  ``read_index`` after its copy).

No lock is needed, and the consumer (the audio callback) never waits. Because the indices are
absolute and never wrap, "full" and "empty" are unambiguous (``write - read == capacity`` vs
``== 0``), and absolute positions double as timeline positions for the player.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .errors import UsageError

__all__ = ["RingBuffer"]

Frames = npt.NDArray[np.float32]


class RingBuffer:
    """Single-producer / single-consumer ring of float32 frames, shaped ``(frames, channels)``.

    One thread (or task) may call the producer methods (`write`, `writable`) and one other the
    consumer methods (`read_into`, `readable`, `skip`); the properties are safe from anywhere.

    Args:
        capacity_frames: Frames the ring can hold.
        channels: Channels per frame.
    """

    __slots__ = ("_buf", "_capacity", "_channels", "read_index", "write_index")

    def __init__(self, capacity_frames: int, channels: int) -> None:
        if capacity_frames <= 0 or channels <= 0:
            raise UsageError("RingBuffer needs a positive capacity and channel count")
        self._capacity = int(capacity_frames)
        self._channels = int(channels)
        self._buf: Frames = np.zeros((self._capacity, self._channels), dtype=np.float32)
        #: Total frames ever written. Moved only by the producer.
        self.write_index = 0
        #: Total frames ever read (or skipped). Moved only by the consumer.
        self.read_index = 0

    @property
    def capacity(self) -> int:
        """Frames the ring can hold."""
        return self._capacity

    @property
    def channels(self) -> int:
        """Channels per frame."""
        return self._channels

    def readable(self) -> int:
        """Frames written and not yet read (a snapshot)."""
        return self.write_index - self.read_index

    def writable(self) -> int:
        """Frames that can be written now without overwriting unread ones (a snapshot)."""
        return self._capacity - (self.write_index - self.read_index)

    # ------------------------------------------------------------------ producer side
    def write(self, block: npt.ArrayLike) -> int:
        """Copy as many leading frames of ``block`` as fit; return how many were written.

        Args:
            block: Frames shaped ``(n, channels)`` (or ``(n,)`` for one channel).

        Returns:
            Frames written (less than ``n`` when the ring is full; 0 when it is).
        """
        data = np.asarray(block, dtype=np.float32)
        if data.ndim == 1:
            data = data.reshape(-1, 1)
        if data.ndim != 2 or data.shape[1] != self._channels:
            raise UsageError(
                f"RingBuffer.write expects (frames, {self._channels}) frames, got {data.shape}"
            )
        w = self.write_index
        free = self._capacity - (w - self.read_index)
        n = min(free, int(data.shape[0]))
        if n <= 0:
            return 0
        start = w % self._capacity
        first = min(n, self._capacity - start)
        self._buf[start : start + first] = data[:first]
        if n > first:
            self._buf[: n - first] = data[first:n]
        self.write_index = w + n  # publish after the copy
        return n

    # ------------------------------------------------------------------ consumer side
    def read_into(self, out: Frames, start: int = 0, frames: int | None = None) -> int:
        """Copy up to ``frames`` frames into ``out[start:]`` without allocating array data.

        This is the audio callback's path: two slice copies at most, no temporary arrays.

        Args:
            out: Destination shaped ``(m, channels)``.
            start: First row of ``out`` to fill.
            frames: Most frames to copy (default: the rows of ``out`` after ``start``).

        Returns:
            Frames copied (fewer than asked when the ring holds fewer).
        """
        want = out.shape[0] - start if frames is None else frames
        r = self.read_index
        n = min(want, self.write_index - r)
        if n <= 0:
            return 0
        pos = r % self._capacity
        first = min(n, self._capacity - pos)
        out[start : start + first] = self._buf[pos : pos + first]
        if n > first:
            out[start + first : start + n] = self._buf[: n - first]
        self.read_index = r + n  # publish after the copy
        return n

    def skip(self, frames: int) -> int:
        """Drop up to ``frames`` unread frames (consumer side); return how many were dropped."""
        r = self.read_index
        n = max(0, min(frames, self.write_index - r))
        self.read_index = r + n
        return n
