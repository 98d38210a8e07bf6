"""The audio server disappears mid-play: a typed `AudioDeviceError`, no hang, and a new
Player/Speaker plays once the server is back.

The PulseAudio daemon at ``/run/pulse/native`` is shared with every other test run on the
machine, so it is never touched: each test starts a PRIVATE daemon (its own runtime folder and
socket, a null sink with ``norewinds=1``), runs the player or speaker in a subprocess whose
``PULSE_SERVER`` points at that socket (the ALSA pulse plugin honours it), kills the daemon with
SIGKILL once audio is playing, and checks what the subprocess reports. Then it starts the daemon
again on the same socket and tells the subprocess to play again, with a new Player/Speaker.

What was found (and fixed in the library): PortAudio's ALSA host API ends its callback thread
when the server goes away (it prints ``PaAlsaStream_WaitForFrames ... failed`` to stderr and runs
the stream-finished callback); no callback follows, so ``play()`` waited forever for the last
sample to leave the device. The device edge now records the end of the stream
(`DeviceOutput.fault`, with a watchdog on the callback counter for host APIs that just stop
calling back) and the player's poller turns it into `AudioDeviceError` for every ``play()``.
A SIGSTOPped (hung) server was also tried by hand: the pulse plugin keeps calling back, so
playback continues silently and nothing hangs.

Hang guard: every line expected from the subprocess has a generous deadline (`LINE_TIMEOUT`),
far above the few hundred milliseconds it takes; it only turns a hang into a failure.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.audio import REPO, pulse_available

pytestmark = [pytest.mark.device]

#: Seconds allowed for each line the subprocess prints; its real pace is well under a second.
#: Only a hang (the bug this file guards against) gets near it.
LINE_TIMEOUT = 30.0

#: Seconds allowed for the private daemon to accept clients (it takes 25–50 ms).
START_TIMEOUT = 10.0


class PrivatePulse:
    """A PulseAudio daemon of our own, on a socket of our own, with a null sink as default.

    Not daemonized (``--daemonize=no``) so that it is our child: killing it by its pid is exact.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = folder / "native"
        self.server = f"unix:{self.socket}"
        self._proc: subprocess.Popen[bytes] | None = None
        (folder / "default.pa").write_text(
            "load-module module-null-sink sink_name=fault_null rate=48000 channels=1 "
            "format=float32le norewinds=1\n"
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
            "set-default-sink fault_null\n"
        )

    def start(self) -> None:
        """Start the daemon and wait until it accepts clients."""
        assert self._proc is None
        env = {**os.environ, "XDG_RUNTIME_DIR": str(self.folder), "HOME": str(self.folder)}
        env.pop("PULSE_SERVER", None)
        self._proc = subprocess.Popen(
            [
                "pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
                "--disable-shm=yes", "--system=no", "--use-pid-file=no",
                f"--log-target=file:{self.folder / 'pulse.log'}",
                "-F", str(self.folder / "default.pa"),
            ],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            probe = subprocess.run(
                ["pactl", "info"], env={**env, "PULSE_SERVER": self.server},
                capture_output=True, timeout=10, check=False,
            )
            if probe.returncode == 0:
                return
            time.sleep(0.02)
        log = (self.folder / "pulse.log").read_text(errors="replace")
        self.kill()
        raise RuntimeError(f"the private PulseAudio daemon did not start:\n{log}")

    def kill(self) -> None:
        """SIGKILL the daemon (the server disappears, as on a crash) and reap it."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)
            self._proc = None
        self.socket.unlink(missing_ok=True)


@pytest.fixture
def private_pulse() -> Iterator[PrivatePulse]:
    if not pulse_available():
        pytest.skip("PulseAudio is not installed (scripts/setup installs it); no audio device")
    # Not tmp_path: a unix socket path must stay under 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="stt-fault-", dir="/tmp"))
    folder.chmod(0o700)
    pulse = PrivatePulse(folder)
    try:
        yield pulse
    finally:
        pulse.kill()
        shutil.rmtree(folder, ignore_errors=True)


class Child:
    """The subprocess under test: its stdout lines are read in a thread, each with a deadline."""

    def __init__(self, code: str, server: str) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PULSE_SINK"}
        env["PULSE_SERVER"] = server
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO)])
        self.proc = subprocess.Popen(
            [sys.executable, "-W", "error::ResourceWarning", "-c", code],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str) -> str:
        """The next line, which must start with ``prefix`` (fails on a hang or an early exit)."""
        try:
            line = self.lines.get(timeout=LINE_TIMEOUT)
        except queue.Empty:
            self.proc.kill()
            pytest.fail(
                f"the subprocess hung: no line within {LINE_TIMEOUT:g} s after {self.seen}; "
                f"stderr:\n{self.finish()[1]}"
            )
        if line is None:
            pytest.fail(f"the subprocess exited after {self.seen}; stderr:\n{self.finish()[1]}")
        self.seen.append(line)
        assert line.startswith(prefix), f"expected {prefix!r}, got {line!r} after {self.seen}"
        return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self) -> tuple[int, str]:
        """Wait for the exit: (return code, stderr)."""
        try:
            _, err = self.proc.communicate(timeout=LINE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self._reader.join(5)
        return self.proc.returncode, err


# The child: plays something long, reports the typed error when the server is killed, waits
# for "again", then plays a short sound with a NEW Player/Speaker. One line per step on stdout.
# The player's SOURCE is 8 s of audio, or (`WAITING_SOURCE`) 1 s and then a wait for bytes that
# never come: a speaker's source waiting for playback to progress, a server gone silent. The
# loss of the device must end that play() too: it waits for its source, not for the device.
LONG_SOURCE = "float_wav(tone(8.0))"
WAITING_SOURCE = "waiting_source()"
PLAYER_CHILD = textwrap.dedent(
    """
    import sys, anyio
    from support.signals import float_wav, tone
    from streamtts.errors import AudioDeviceError
    from streamtts.events import PlaybackError, PlaybackStarted
    from streamtts.player import Player

    async def waiting_source():
        yield float_wav(tone(1.0))
        await anyio.sleep_forever()

    async def main():
        async with Player(device_latency=0.1) as player:
            events = player.events()
            async with anyio.create_task_group() as tg:
                async def announce():
                    async for event in events:
                        if isinstance(event, PlaybackStarted):
                            print("PLAYING", flush=True)
                            return
                tg.start_soon(announce)
                try:
                    await player.play(SOURCE)
                    print("FINISHED (the device loss was not noticed)", flush=True)
                except AudioDeviceError as exc:
                    errors = [e.error for e in events.drain() if isinstance(e, PlaybackError)]
                    print("EVENT", *errors, flush=True)
                    print("ERROR", type(exc).__name__, exc, flush=True)
                try:
                    await player.play(float_wav(tone(0.1)))
                    print("REPLAYED (a lost player played)", flush=True)
                except AudioDeviceError as exc:
                    print("REFUSED", type(exc).__name__, flush=True)
                tg.cancel_scope.cancel()
        print("CLOSED", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)
        async with Player(device_latency=0.1) as player:
            result = await player.play(float_wav(tone(0.3)))
        print("PLAYED", result.frames, flush=True)

    anyio.run(main, backend=BACKEND)
    """
)

SPEAKER_CHILD = textwrap.dedent(
    """
    import sys, anyio
    from streamtts.engines import EspeakEngine
    from streamtts.errors import AudioDeviceError
    from streamtts.events import SentenceStarted
    from streamtts.speaker import Speaker

    TEXT = ("The sound server is about to disappear. This sentence is long enough to still "
            "be playing when it does. And this one follows it. One more for good measure.")

    async def main():
        async with EspeakEngine() as engine:
            async with Speaker(engine, device_latency=0.1) as speaker:
                events = speaker.events()
                async with anyio.create_task_group() as tg:
                    async def announce():
                        async for event in events:
                            if isinstance(event, SentenceStarted):
                                print("PLAYING", flush=True)
                                return
                    tg.start_soon(announce)
                    try:
                        await speaker.say(TEXT)
                        print("FINISHED (the device loss was not noticed)", flush=True)
                    except AudioDeviceError as exc:
                        print("ERROR", type(exc).__name__, exc, flush=True)
                    tg.cancel_scope.cancel()
            print("CLOSED", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)
            async with Speaker(engine, device_latency=0.1) as speaker:
                result = await speaker.say("Back again.")
            print("PLAYED", result.frames, flush=True)

    anyio.run(main, backend=BACKEND)
    """
)


def run_fault_scenario(pulse: PrivatePulse, code: str, backend: str, *, refused: bool) -> None:
    pulse.start()
    child = Child(code.replace("BACKEND", repr(backend)), pulse.server)
    try:
        child.expect("PLAYING")
        pulse.kill()  # the server disappears mid-play
        if refused:
            assert child.expect("EVENT") == "EVENT AudioDeviceError"
        error = child.expect("ERROR")
        assert error.startswith("ERROR AudioDeviceError the audio device stopped"), error
        assert "sound server went away" in error
        if refused:
            child.expect("REFUSED AudioDeviceError")  # a lost player says so, it does not hang
        child.expect("CLOSED")  # leaving the context after the loss does not hang either
        pulse.start()  # the server is back
        child.send("again")
        frames = int(child.expect("PLAYED").split()[1])
        assert frames > 0
    finally:
        code_, err = child.finish()
    assert code_ == 0, err
    for sign in ("Traceback", "Exception ignored", "Task was destroyed", "ResourceWarning",
                 "never awaited"):
        assert sign not in err, err


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_losing_the_sound_server_mid_play_raises_a_device_error_and_a_new_player_plays(
    private_pulse: PrivatePulse, backend: str
) -> None:
    run_fault_scenario(private_pulse, PLAYER_CHILD.replace("SOURCE", LONG_SOURCE), backend,
                       refused=True)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_losing_the_sound_server_mid_sentence_fails_say_and_a_new_speaker_speaks(
    private_pulse: PrivatePulse, backend: str
) -> None:
    run_fault_scenario(private_pulse, SPEAKER_CHILD, backend, refused=False)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_losing_the_sound_server_fails_a_play_whose_source_waits_for_bytes(
    private_pulse: PrivatePulse, backend: str
) -> None:
    run_fault_scenario(private_pulse, PLAYER_CHILD.replace("SOURCE", WAITING_SOURCE), backend,
                       refused=True)
