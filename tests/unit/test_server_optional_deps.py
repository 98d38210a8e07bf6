"""The server's dependencies are optional: importing works without them, using them says what to
install."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_without_starlette_and_uvicorn_the_server_names_the_extra_to_install() -> None:
    code = """
        import sys
        sys.modules["starlette"] = None  # as if not installed: importing it raises ImportError
        sys.modules["uvicorn"] = None
        import streamtts.server
        from streamtts.errors import BackendUnavailable
        for call in (streamtts.server.create_app, streamtts.server.serve):
            try:
                call()
            except BackendUnavailable as exc:
                print(exc)
            else:
                raise SystemExit(f"{call.__name__} did not fail")
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all("streamtts[server]" in line for line in lines)
