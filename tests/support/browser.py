"""Headless Chromium for browser tests (Debian's ``/usr/bin/chromium`` driven by Playwright).

Never ``playwright install``: the browser comes from the system package (``scripts/setup``).
`launch_chromium` starts it with the flags that work on these machines; `wait_for` polls a page
expression until it is truthy (no fixed sleeps in tests).
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

__all__ = ["CHROMIUM", "CHROMIUM_FLAGS", "chromium_path", "launch_chromium", "wait_for"]

CHROMIUM = "/usr/bin/chromium"

#: Flags seen to work headless on a 2-core machine without a GPU or a sound card. The autoplay
#: flag lets an AudioContext made on page load run without a click.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--headless=new",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
)


def chromium_path() -> str | None:
    """The Chromium binary, or None if it is not installed."""
    path = os.environ.get("STREAMTTS_CHROMIUM", CHROMIUM)
    return path if os.path.exists(path) else shutil.which("chromium")


def launch_chromium(playwright: Any, *, audible: bool = False) -> Any:
    """Launch headless Chromium with `CHROMIUM_FLAGS`.

    Args:
        playwright: A started ``sync_playwright()`` object.
        audible: Drop Playwright's ``--mute-audio`` (to record the page at a null sink).
    """
    path = chromium_path()
    if path is None:
        raise RuntimeError(f"Chromium is not installed at {CHROMIUM} (scripts/setup installs it)")
    ignore = ["--mute-audio"] if audible else None
    return playwright.chromium.launch(
        executable_path=path,
        headless=True,
        args=list(CHROMIUM_FLAGS),
        ignore_default_args=ignore,
    )


def wait_for(page: Any, expression: str, *, timeout: float = 30.0, interval: float = 0.05) -> Any:
    """Evaluate *expression* in *page* until it is truthy; return its value.

    Raises:
        TimeoutError: Still falsy after *timeout* seconds (the message shows the last value
            and the page's ``streamtts.stats()`` when there is one).
    """
    deadline = time.monotonic() + timeout
    value: Any = None
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        time.sleep(interval)
    stats = page.evaluate("window.streamtts ? window.streamtts.stats() : null")
    raise TimeoutError(f"{expression!r} still {value!r} after {timeout} s; stats: {stats}")
