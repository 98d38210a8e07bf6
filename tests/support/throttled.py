"""A tiny HTTP server on 127.0.0.1 that sends one body at a controlled pace.

The pace is set as a multiple of real time of the audio it serves (``speed=1.2``: 1.2 seconds of
audio per second), in bursts of ``burst`` seconds of audio, after a first-byte delay, with
optional stalls (``stalls=[(at_audio_seconds, pause_seconds)]``). Bytes map to audio time
linearly (exact for WAV/PCM, close for Opus). The schedule is absolute (burst ``n`` is due at a
fixed time from the first byte), so a slow loop never drifts it, and a stall is a pause without
a catch-up burst afterwards. A client that closes the connection during a wait (the first-byte
delay, a stall, between bursts) is seen at once.

It runs in its own process (this file is also the server script), so its pacing is independent
of the test process's event loop and GIL, as a real remote server's would be. It reports whether
the client went away before the end (``client_closed_early``): that is how a test sees that a
cancelled player closed its HTTP response.

    with ThrottledServer.for_audio(wav, seconds=2.0, speed=1.2) as server:
        response = client.stream("GET", server.url)
"""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["ThrottledServer"]


class ThrottledServer:
    """Serves ``body`` to every GET, paced (see the module docstring). Use it as a context manager.

    Args:
        body: The response body.
        bytes_per_second: Pace of the body after the first byte.
        burst_bytes: Bytes sent at once (one ``send``) per burst.
        first_byte_delay: Seconds between the request and the first body byte.
        stalls: ``(byte offset, seconds)``: pause that long before sending that offset.
        content_type: The ``Content-Type`` header.
        status: HTTP status code (a non-200 sends ``body`` as the error body at once).
        header: Leading bytes sent at once with the first burst; the pace applies after them.
    """

    def __init__(
        self,
        body: bytes,
        *,
        bytes_per_second: float,
        burst_bytes: int = 4096,
        first_byte_delay: float = 0.0,
        stalls: Sequence[tuple[int, float]] = (),
        content_type: str = "application/octet-stream",
        status: int = 200,
        header: int = 0,
    ) -> None:
        self.body = body
        self.config = {
            "bytes_per_second": bytes_per_second,
            "burst_bytes": max(1, burst_bytes),
            "first_byte_delay": first_byte_delay,
            "stalls": sorted(stalls),
            "content_type": content_type,
            "status": status,
            "header": header,
        }
        self.requests = 0
        self.client_closed_early = False
        self.finished = threading.Event()  # set when a response ended (complete or not)
        self._port = 0
        self._proc: subprocess.Popen[str] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._reader: threading.Thread | None = None

    @classmethod
    def for_audio(
        cls,
        body: bytes,
        *,
        seconds: float,
        speed: float,
        burst: float = 0.02,
        first_byte_delay: float = 0.0,
        stalls: Sequence[tuple[float, float]] = (),
        content_type: str = "application/octet-stream",
        header: int = 0,
    ) -> ThrottledServer:
        """A server for ``body`` holding ``seconds`` of audio, sent at ``speed`` × real time.

        Args:
            body: The audio file's bytes.
            seconds: Audio duration of ``body``.
            speed: Audio seconds sent per second (1.0: real time).
            burst: Audio seconds per burst.
            first_byte_delay: Seconds before the first byte.
            stalls: ``(audio seconds, pause seconds)``: pause before that point of the audio.
            content_type: The ``Content-Type`` header.
            header: Leading bytes that hold no audio (a WAV header): sent at once, so that
                every burst and stall falls on the audio's own time line.
        """
        per_second = (len(body) - header) / seconds
        return cls(
            body,
            bytes_per_second=per_second * speed,
            burst_bytes=max(1, round(per_second * burst)),
            first_byte_delay=first_byte_delay,
            stalls=[(header + round(at * per_second), pause) for at, pause in stalls],
            content_type=content_type,
            header=header,
        )

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/audio``."""
        assert self._port, "enter the server first"
        return f"http://127.0.0.1:{self._port}/audio"

    def __enter__(self) -> ThrottledServer:
        self._dir = tempfile.TemporaryDirectory(prefix="throttled-")
        folder = Path(self._dir.name)
        (folder / "body").write_bytes(self.body)
        (folder / "config.json").write_text(json.dumps(self.config))
        self._proc = subprocess.Popen(
            [sys.executable, __file__, str(folder)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(f"throttled server did not start: {line!r}")
        self._port = int(line.split()[1])
        self._reader = threading.Thread(target=self._read_reports, daemon=True)
        self._reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_reports(self) -> None:
        proc = self._proc
        assert proc is not None
        assert proc.stdout is not None
        for line in proc.stdout:
            word = line.strip()
            if word == "REQUEST":
                self.requests += 1
            elif word in ("COMPLETE", "EARLY"):
                self.client_closed_early = self.client_closed_early or word == "EARLY"
                self.finished.set()

    def close(self) -> None:
        """Stop the server process."""
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self._proc.kill()
                self._proc.wait()
            if self._reader is not None:
                self._reader.join(5)
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


# ----------------------------------------------------------------------------- the server process


def _report(word: str) -> None:
    print(word, flush=True)


def _serve(conn: socket.socket, body: bytes, cfg: dict[str, Any]) -> None:
    with conn:
        try:
            complete = _respond(conn, body, cfg)
        except OSError:  # the client went away (reset, broken pipe)
            complete = False
        _report("COMPLETE" if complete else "EARLY")


def _client_left_within(conn: socket.socket, seconds: float) -> bool:
    """Wait ``seconds``, or less: True as soon as the client closed the connection.

    Waiting this way (not sleeping) lets a client that leaves during the first-byte delay or a
    stall be reported at once, as a real server would see it, rather than at the next send.
    """
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([conn], [], [], left)
        if not readable:
            return False
        try:
            if not conn.recv(4096):  # EOF: the client closed
                return True
        except OSError:  # reset
            return True
        # Bytes after the request (none are expected): ignored, keep waiting.
    return False


def _respond(conn: socket.socket, body: bytes, cfg: dict[str, Any]) -> bool:
    conn.settimeout(10)
    request = b""
    while b"\r\n\r\n" not in request:
        data = conn.recv(4096)
        if not data:
            return False
        request += data
    _report("REQUEST")
    status = int(cfg["status"])
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Status')}\r\n"
        f"Content-Type: {cfg['content_type']}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    conn.sendall(head)
    if status != 200:
        conn.sendall(body)
        return True
    rate = float(cfg["bytes_per_second"])
    burst = int(cfg["burst_bytes"])
    stalls = [(int(at), float(pause)) for at, pause in cfg["stalls"]]
    header = int(cfg["header"])
    start = time.monotonic() + float(cfg["first_byte_delay"])
    if _client_left_within(conn, start - time.monotonic()):
        return False
    conn.sendall(body[:header])
    sent = header
    paused = 0.0
    while sent < len(body):
        while stalls and stalls[0][0] <= sent:
            paused += stalls.pop(0)[1]
        delay = start + paused + (sent - header) / rate - time.monotonic()
        if _client_left_within(conn, delay):
            return False
        end = min(len(body), sent + burst)
        if stalls and sent < stalls[0][0] < end:
            end = stalls[0][0]
        conn.sendall(body[sent:end])
        sent = end
    # Wait for the client to close (it has read everything): a reset now is not "early".
    conn.shutdown(socket.SHUT_WR)
    conn.settimeout(10)
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass
    return True


def _main(folder: Path) -> None:
    body = (folder / "body").read_bytes()
    cfg = json.loads((folder / "config.json").read_text())
    server = socket.create_server(("127.0.0.1", 0))
    _report(f"PORT {server.getsockname()[1]}")
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_serve, args=(conn, body, cfg), daemon=True).start()


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
