"""Closing a streamed httpx response whose body was abandoned mid-way, leaving nothing behind.

How it works: httpx reads a body through a chain of nested async generators (``aiter_bytes`` →
``aiter_raw`` → the transport's and httpcore's ``__aiter__``). Closing the outer one (or the
response) while the chain is suspended at a ``yield`` leaves the inner generators suspended:
the garbage collector finalizes them later, and trio warns about each (``ResourceWarning: Async
generator ... was garbage collected before it had been exhausted``; httpx issue #3686). So the
response is closed first (the connection is dropped), then the chain is stepped: the innermost
read now fails at once, and that error ends every generator of the chain on the way out.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx

__all__ = ["close_streamed_response"]

#: Steps taken through the chain after the close. The first one fails on the closed connection;
#: a few more allow for bytes the HTTP parser had already buffered (each step yields a chunk of
#: at most 64 kB of them). The bound only guards against an iterator that never ends.
MAX_STEPS = 8


async def close_streamed_response(body: AsyncIterator[bytes], response: httpx.Response) -> None:
    """Close ``response`` and the iterator ``body`` over it (call it shielded).

    Args:
        body: The iterator returned by ``response.aiter_bytes()`` (or ``aiter_raw()``).
        response: The streamed response it reads.
    """
    try:
        await response.aclose()
    finally:
        for _ in range(MAX_STEPS):
            try:
                await body.__anext__()
            except Exception:
                break
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
