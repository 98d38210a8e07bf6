"""`import streamtts` must work without libopus/PortAudio; using them then names what to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run_isolated(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_import_works_when_native_libraries_cannot_be_found() -> None:
    # Make ctypes.util.find_library fail for everything, as on a machine without libopus and
    # PortAudio, then import streamtts and try the backends.
    proc = _run_isolated(
        """
        import ctypes.util
        ctypes.util.find_library = lambda name: None
        import streamtts
        from streamtts._backends import load_opuslib, load_sounddevice
        for load in (load_opuslib, load_sounddevice):
            try:
                load()
            except streamtts.BackendUnavailable as exc:
                assert isinstance(exc, ImportError)
                print(type(exc).__name__, "|", exc)
            else:
                raise SystemExit(f"{load.__name__} did not fail")
        """
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    assert "apt-get install libopus0" in lines[0]
    assert "apt-get install libportaudio2" in lines[1]
