"""The bounded event subscription shared by `Player.events` and `Speaker.events`.

A subscriber that falls more than ``maxlen`` events behind loses the oldest ones (counted in
``dropped``) — events are never allowed to hold back audio. The stream ends when its owner closes
(`_end`) or when the consumer closes it (`aclose`), which also wakes a consumer waiting in
``async for``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio

from .events import Event

__all__ = ["EventStream"]

_E = TypeVar("_E", bound=Event)


class EventStream(Generic[_E]):
    """Async iterator over an owner's events from the moment it was created.

    Bounded: when the consumer falls more than ``maxlen`` events behind, the oldest are dropped
    and counted in ``dropped``. It ends when the owner closes or `aclose` is called.
    """

    def __init__(
        self,
        maxlen: int,
        *,
        unsubscribe: Callable[[EventStream[_E]], None],
        on_drop: Callable[[], None] | None = None,
    ) -> None:
        self._items: deque[_E] = deque(maxlen=maxlen)
        self._wake = anyio.Event()
        self._closed = False
        self._unsubscribe = unsubscribe
        self._on_drop = on_drop
        self.dropped = 0

    def _put(self, event: _E) -> None:
        if self._closed:
            return
        if len(self._items) == self._items.maxlen:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
        self._items.append(event)
        self._wake.set()

    def _end(self) -> None:
        self._closed = True
        self._wake.set()

    def drain(self) -> list[_E]:
        """The events queued now, without waiting (the queue is emptied)."""
        items = list(self._items)
        self._items.clear()
        return items

    def __aiter__(self) -> EventStream[_E]:
        return self

    async def __anext__(self) -> _E:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            self._wake = anyio.Event()
            await self._wake.wait()
        return self._items.popleft()

    async def aclose(self) -> None:
        """Stop receiving events; a consumer waiting in ``async for`` ends its loop."""
        self._items.clear()
        self._end()
        self._unsubscribe(self)

    async def __aenter__(self) -> EventStream[_E]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
