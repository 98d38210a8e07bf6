"""Shared fixtures: the PulseAudio device for ``device`` tests, the anyio backend.

Device tests play through a real PortAudio stream into a private PulseAudio null sink and
record its monitor (see `support.audio`). They need the daemon's binaries (CI installs them with
``scripts/setup``); when run by hand on a machine without PulseAudio they are skipped with that
reason, never otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.audio import NullSink, ensure_pulse, pulse_available


@pytest.fixture(scope="session")
def pulse_server() -> None:
    """The PulseAudio daemon with its default null sink is running (started if needed)."""
    if not pulse_available():
        pytest.skip("PulseAudio is not installed (scripts/setup installs it); no audio device")
    ensure_pulse()


@pytest.fixture
def null_sink(pulse_server: None) -> Iterator[NullSink]:
    """A private 48 kHz float32 mono null sink; PortAudio streams opened in the test play into it.

    Record it with ``null_sink.record()`` (before playing) and ``recording.stop()`` after.
    """
    sink = NullSink(rate=48000, channels=1)
    try:
        with sink.route():
            yield sink
    finally:
        sink.close()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``@pytest.mark.anyio``) run on asyncio unless a test module overrides it."""
    return "asyncio"
