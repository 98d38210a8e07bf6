"""The relay's client messages: valid requests parse, malformed ones get their close code."""

from __future__ import annotations

import json

import pytest

from streamtts.opus import OpusHead
from streamtts.relay import (
    CLOSE_INVALID_DATA,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    MAX_CLIENT_MESSAGE,
    JoinRequest,
    Rejection,
    RelayEnd,
    RelayHead,
    SpeakRequest,
    StopRequest,
    parse_client_message,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type": "join"}', JoinRequest()),
        ('{"type": "stop"}', StopRequest()),
        ('{"type": "speak", "text": "Hi."}', SpeakRequest("Hi.")),
        ('{"type":"speak","text":"Hi.","voice":" nova ","speed":1.5}',
         SpeakRequest("Hi.", "nova", 1.5)),
    ],
)
def test_valid_requests_parse(text: str, expected: object) -> None:
    assert parse_client_message(text) == expected


@pytest.mark.parametrize(
    ("text", "data", "code"),
    [
        (None, b"\x00\x01", CLOSE_UNSUPPORTED),
        ("{not json", None, CLOSE_INVALID_DATA),
        ("[1, 2]", None, CLOSE_POLICY),
        ('{"type": "dance"}', None, CLOSE_POLICY),
        ('{"text": "no type"}', None, CLOSE_POLICY),
        ('{"type": "speak"}', None, CLOSE_POLICY),
        ('{"type": "speak", "text": "   "}', None, CLOSE_POLICY),
        ('{"type": "speak", "text": 5}', None, CLOSE_POLICY),
        ('{"type": "speak", "text": "a", "voice": 3}', None, CLOSE_POLICY),
        ('{"type": "speak", "text": "a", "speed": "fast"}', None, CLOSE_POLICY),
        ('{"type": "speak", "text": "a", "speed": true}', None, CLOSE_POLICY),
        ('{"type": "speak", "text": "a", "speed": 9}', None, CLOSE_POLICY),
        ('{"type": "speak", "text": "' + "a" * 5000 + '"}', None, CLOSE_POLICY),
        (json.dumps({"type": "speak", "text": "x" * MAX_CLIENT_MESSAGE}), None, CLOSE_TOO_BIG),
    ],
)
def test_malformed_messages_are_rejected_with_their_close_code(
    text: str | None, data: bytes | None, code: int
) -> None:
    rejection = parse_client_message(text, data)
    assert isinstance(rejection, Rejection)
    assert rejection.code == code
    assert rejection.reason
    assert len(rejection.reason.encode()) <= 123


def test_rejection_reason_fits_a_close_frame_even_with_multibyte_text() -> None:
    rejection = parse_client_message('{"type": "' + "é" * 200 + '"}')
    assert isinstance(rejection, Rejection)
    assert len(rejection.reason.encode()) <= 123
    rejection.reason.encode().decode()  # still valid UTF-8


def test_head_and_end_messages_carry_what_the_page_needs() -> None:
    head = OpusHead(2, pre_skip=312, output_gain=-256)
    message = json.loads(RelayHead(4, head, 9600, "Hi.", "nova").to_json())
    assert message["type"] == "head"
    assert (message["utterance"], message["channels"], message["preSkip"]) == (4, 2, 312)
    assert (message["sampleRate"], message["gainDb"], message["start"]) == (48000, -1.0, 9600)
    import base64

    assert OpusHead.parse(base64.b64decode(message["opusHead"])) == head
    end = json.loads(RelayEnd(4, "done", 48000, 50).to_json())
    assert end == {"type": "end", "utterance": 4, "reason": "done", "position": 48000,
                   "packets": 50}
