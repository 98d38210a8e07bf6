"""`Collector`: a speaker's events gathered in a list, waited on by kind and fields."""

from __future__ import annotations

from typing import Any

import anyio

from streamtts.events import Event
from streamtts.speaker import Speaker

__all__ = ["Collector"]


class Collector:
    """Appends a speaker's events to a list (shared with other entries: order is kept)."""

    def __init__(self, into: list[Any] | None = None) -> None:
        self.events: list[Any] = [] if into is None else into
        self._changed = anyio.Event()

    async def run(self, speaker: Speaker) -> None:
        async for event in speaker.events():
            self.events.append(event)
            self._changed.set()
            self._changed = anyio.Event()

    async def wait_for(self, kind: type[Event], **fields: Any) -> None:
        """Return once an event of ``kind`` with these field values has been seen."""

        def match(e: Any) -> bool:
            return isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())

        while not any(match(e) for e in self.events):
            await self._changed.wait()

    def of(self, kind: type[Event], utterance: int | None = None) -> list[Any]:
        """The events of ``kind`` seen so far (of one utterance, if given)."""
        return [
            e
            for e in self.events
            if isinstance(e, kind) and (utterance is None or e.utterance == utterance)
        ]
