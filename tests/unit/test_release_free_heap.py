"""`release_free_heap`: glibc's malloc_trim where there is one, a no-op elsewhere."""

from __future__ import annotations

import platform
import sys

import pytest

from streamtts import _backends


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
    reason="malloc_trim is glibc's",
)
def test_glibc_malloc_trim_is_found_and_returns_freed_memory() -> None:
    trim = _backends._malloc_trim()
    assert trim is not None
    blocks = [bytearray(100_000) for _ in range(50)]
    del blocks  # freed; whether glibc kept it or not, trimming must succeed and return 0/1
    assert trim(0) in (0, 1)
    _backends.release_free_heap()  # and the public wrapper calls it without error


def test_other_platforms_have_no_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    _backends._malloc_trim.cache_clear()
    monkeypatch.setattr(sys, "platform", "darwin")
    try:
        assert _backends._malloc_trim() is None
        _backends.release_free_heap()  # a no-op, not an error
    finally:
        _backends._malloc_trim.cache_clear()
