"""`RelaySink.tap`: the same speech to the local device (real PortAudio into a null sink) and to
relay listeners at once — the route an app (or the Speaker) takes to play "as well as" locally."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import numpy as np
import pytest
from support.audio import NullSink, assert_same_audio

from streamtts.opus import OggOpusDecoder
from streamtts.relay import RelayEnd, RelayHead, RelayHub, RelayMessage, RelayPacket, RelaySink

pytestmark = [pytest.mark.device, pytest.mark.anyio]

RATE = 48000
#: As in test_player: a long output latency rides out the stalls of a shared machine, so the
#: recording stays sample-exact (no timing is asserted).
DEVICE_LATENCY = 0.25


async def test_tapped_source_plays_locally_unchanged_and_reaches_listeners_whole(
    null_sink: NullSink,
) -> None:
    from streamtts.player import Player

    t = np.arange(int(0.8 * RATE)) / RATE
    pcm = (0.2 * np.sin(2 * np.pi * 330 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)))
    pcm = pcm.astype(np.float32).reshape(-1, 1)

    async def source() -> AsyncIterator[bytes]:
        for i in range(0, len(pcm), 2400):
            yield pcm[i : i + 2400].tobytes()
            await anyio.sleep(0.01)

    hub = RelayHub()
    received: list[RelayMessage] = []

    async def listen() -> None:
        async with hub.listen() as listener:
            async for message in listener:
                received.append(message)
                if isinstance(message, RelayEnd):
                    return

    with null_sink.record() as rec:
        async with Player(device_latency=DEVICE_LATENCY) as player, anyio.create_task_group() as tg:
            tg.start_soon(listen)
            async with RelaySink(hub).tap(source(), pcm_rate=RATE, text="both") as tapped:
                result = await player.play(
                    tapped, format="pcm", pcm_rate=RATE, pcm_channels=1, pcm_format="f32le"
                )
        recording = rec.stop()
    assert result.frames == len(pcm)
    assert_same_audio(recording, pcm)  # the local device got the source unchanged
    head = received[0]
    assert isinstance(head, RelayHead)
    assert head.text == "both"
    assert isinstance(received[-1], RelayEnd)
    assert received[-1].reason == "done"
    # The listeners' packets, re-muxed, decode to the same length (the content is Opus-coded).
    packets = [m for m in received if isinstance(m, RelayPacket)]
    assert packets[-1].end - head.head.pre_skip == len(pcm)
    assert [p.sequence for p in packets] == list(range(len(packets)))
    decoded = _decode(head, packets)
    assert len(decoded) == len(pcm)
    assert float(np.corrcoef(decoded[:, 0], pcm[:, 0])[0, 1]) > 0.95


def _decode(head: RelayHead, packets: list[RelayPacket]) -> np.ndarray:
    """Rebuild an Ogg Opus stream from relay packets and decode it with libopus."""
    from streamtts.ogg import OggWriter
    from streamtts.opus import OpusTags

    writer = OggWriter(1)
    writer.add(head.head.to_bytes(), 0)
    data = writer.page()
    writer.add(OpusTags("relay", ()).to_bytes(), 0)
    data += writer.page()
    for p in packets:
        writer.add(p.data, p.end, eos=p.final)
        data += writer.page(eos=p.final)
    dec = OggOpusDecoder(RATE)
    return np.concatenate(dec.feed(data) + dec.close())
