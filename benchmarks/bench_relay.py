"""Browser relay: fan-out cost, first packet over the WebSocket, first sound in Chromium; JSON.

1. `RelayHub` fan-out: a 10 s utterance (20 ms packets) published to 1, 10 and 100 listeners,
   each drained by its own task, pacing off (a fake clock): microseconds per packet and per
   packet-listener. Publishing is a loop over the listeners' queues: the cost per listener
   should stay flat.
2. Loopback WebSocket: from sending ``speak`` to the head and to the first packet at a client,
   beside the engine's own first byte in-process (what the relay adds is the difference).
3. Headless Chromium (the page): ``firstSoundMs`` (Speak to the first frame at the output),
   underruns, and frames played against the exact decoded length.

Figures are medians of several runs (best-of for the CPU-bound part). Run:
``.venv/bin/python benchmarks/bench_relay.py`` (needs Chromium for part 3).
"""

from __future__ import annotations

import concurrent.futures
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.browser import launch_chromium, wait_for
from support.loopback import serve_asgi

from streamtts.engines.espeak import EspeakEngine
from streamtts.opus import OggOpusDecoder, OggOpusEncoder
from streamtts.relay import RelayEnd, RelayHub, RelayListener
from streamtts.server.relay_ws import create_relay_app

TEXT = "The relay sends each packet to every listener as soon as it is demuxed."
RUNS = 5  # medians of: enough to see the spread on a shared machine, short enough to run often


def fanout() -> dict[str, object]:
    rng = np.random.default_rng(1)
    pcm = (0.1 * rng.standard_normal((480_000, 1))).astype(np.float32)
    enc = OggOpusEncoder(48_000, 1, page_ms=1000)
    data = enc.encode(pcm) + enc.finish()

    async def one(listeners: int) -> float:
        now = [0.0]

        async def sleep(seconds: float) -> None:
            now[0] += seconds
            await anyio.lowlevel.checkpoint()

        hub = RelayHub(clock=lambda: now[0], sleep=sleep)
        subs = [hub.listen(max_queue=60) for _ in range(listeners)]

        async def drain(listener: RelayListener) -> None:
            async for message in listener:
                if isinstance(message, RelayEnd):
                    return

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(data), 4096):
                yield data[i : i + 4096]

        async with anyio.create_task_group() as tg:
            for sub in subs:
                tg.start_soon(drain, sub)
            t0 = time.perf_counter()
            result = await hub.relay_ogg(chunks())
        elapsed = time.perf_counter() - t0
        return elapsed / result.packets * 1e6

    out: dict[str, object] = {}
    for n in (1, 10, 100):
        best = min(anyio.run(one, n) for _ in range(3))
        out[f"listeners_{n}"] = {
            "us_per_packet": round(best, 1),
            "us_per_packet_listener": round(best / n, 2),
        }
    return out


def websocket_first_packet() -> dict[str, object]:
    from websockets.sync.client import connect

    async def engine_first_byte() -> float:
        t0 = time.perf_counter()
        async with EspeakEngine().stream(TEXT, format="opus") as audio:
            async for _ in audio.aiter_bytes():
                return time.perf_counter() - t0
        return float("nan")

    engine = [anyio.run(engine_first_byte) * 1000 for _ in range(RUNS)]
    heads, firsts = [], []
    with serve_asgi(create_relay_app()) as url:
        for run in range(RUNS):
            text = f"{TEXT} Run {run}."
            with connect(url.replace("http", "ws") + "/relay") as ws:
                ws.recv()
                t0 = time.perf_counter()
                ws.send(json.dumps({"type": "speak", "text": text}))
                ours = False
                while True:
                    message = ws.recv()
                    if isinstance(message, str):
                        parsed = json.loads(message)
                        if parsed["type"] == "head" and parsed["text"] == text:
                            heads.append((time.perf_counter() - t0) * 1000)
                            ours = True
                    elif ours:
                        firsts.append((time.perf_counter() - t0) * 1000)
                        break
                ws.send(json.dumps({"type": "stop"}))
    return {
        "engine_first_byte_ms_median": round(statistics.median(engine), 1),
        "ws_head_ms_median": round(statistics.median(heads), 1),
        "ws_first_packet_ms_median": round(statistics.median(firsts), 1),
        "ws_first_packet_ms_all": [round(x, 1) for x in firsts],
    }


def browser() -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    async def ogg() -> bytes:
        async with EspeakEngine().stream(TEXT, voice="alloy", format="opus") as audio:
            return b"".join([c async for c in audio.aiter_bytes()])

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        data = pool.submit(anyio.run, ogg).result()
    dec = OggOpusDecoder(48_000)
    expected = sum(len(b) for b in dec.feed(data) + dec.close())
    runs = []
    with serve_asgi(create_relay_app()) as url, sync_playwright() as pw:
        chromium = launch_chromium(pw)
        for _ in range(RUNS):
            page = chromium.new_page()
            page.goto(url + "/")
            page.evaluate("window.streamtts.ready")
            page.evaluate("([t]) => window.streamtts.speak(t, 'alloy')", [TEXT])
            runs.append(wait_for(page, "window.streamtts.stats().utterancesEnded >= 1 && "
                                       "window.streamtts.stats()"))
            page.close()
        chromium.close()
    first = [r["firstSoundMs"] for r in runs]
    return {
        "first_sound_ms_median": round(statistics.median(first), 1),
        "first_sound_ms_all": [round(x, 1) for x in first],
        "underruns_all": [r["underruns"] for r in runs],
        "underrun_log": [r["underrunLog"] for r in runs if r["underrunLog"]],
        "frames_expected": expected,
        "frames_played_all": [r["framesPlayed"] for r in runs],
        "start_buffer_ms": runs[-1]["startBufferMs"],
    }


def main() -> None:
    result = {
        "fanout": fanout(),
        "websocket": websocket_first_packet(),
        "browser": browser(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
