"""Catching async generators that were abandoned: garbage collected before they finished.

An async generator left suspended at a ``yield`` is finalized by the garbage collector through
the event loop's finalizer hook (`sys.set_asyncgen_hooks`): trio warns (``ResourceWarning``, an
error in this suite), asyncio quietly schedules its ``aclose()``. `abandoned_async_generators`
wraps the running loop's hooks, so it sees every such finalization on both backends:

    async def test_x() -> None:
        with abandoned_async_generators("httpx", "httpcore") as abandoned:
            ...
            gc.collect()
        assert abandoned == []
"""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["abandoned_async_generators"]


@contextmanager
def abandoned_async_generators(*packages: str) -> Iterator[list[str]]:
    """Record the generators of ``packages`` first iterated inside the block and finalized
    unfinished (inside it, or by the garbage collection done when it ends).

    Use it inside the running event loop (each loop installs its hooks when it starts). The
    loop's own finalizer still runs for each generator, after it is recorded.

    Args:
        packages: Top-level package names whose generators count (e.g. ``"httpx"``).

    Yields:
        The list the qualified names (``module.qualname``) are appended to.
    """
    found: list[str] = []
    hooks = sys.get_asyncgen_hooks()
    loop_firstiter, loop_finalizer = hooks.firstiter, hooks.finalizer

    def finalizer(agen: AsyncGenerator[Any, Any]) -> None:
        frame = getattr(agen, "ag_frame", None)  # None once it has finished
        module = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
        if module.split(".")[0] in packages:
            found.append(f"{module}.{getattr(agen, '__qualname__', '?')}")
        if loop_finalizer is not None:
            loop_finalizer(agen)

    sys.set_asyncgen_hooks(firstiter=loop_firstiter, finalizer=finalizer)
    try:
        yield found
        gc.collect()  # generators already unreachable are finalized now, still recorded
    finally:
        sys.set_asyncgen_hooks(firstiter=loop_firstiter, finalizer=loop_finalizer)
