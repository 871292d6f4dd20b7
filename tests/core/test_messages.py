"""The message classes, the shared vocabulary and the audio layout: the names and numbers both
roles must agree on (PROTOCOL.md), validated where they are built."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

import attrs
import pytest

import telcoflow._core as core
from telcoflow._core import (
    CHANNEL_CALLEE,
    CHANNEL_CALLER,
    CHANNEL_MIXED,
    CLAIM_TIMEOUT_S,
    DEFAULT_RING_TIME_S,
    FRAME_MS,
    MAX_AUDIO_PAYLOAD_BYTES,
    MAX_CREDIT_GRANT_BYTES,
    MAX_ID_CHARS,
    MAX_RING_TIME_S,
    MAX_TEXT_MESSAGE_CHARS,
    MAX_TIMEOUT_MS,
    MAX_URL_CHARS,
    MEDIA_TIMEOUT_S,
    MIN_TOKEN_TTL_S,
    PROTOCOL_SDK_VERSION,
    REQUEST_TIMEOUT_S,
    RESUME_AFTER_SETUP_S,
    SAMPLE_RATES,
    SETUP_DONE_TIMEOUT_S,
    Activity,
    AgentAudioReceived,
    AudioFrame,
    AudioMode,
    BadRequest,
    BufferRequest,
    CallIn,
    Channel,
    CloseReason,
    CommandRequest,
    Direction,
    ErrorCode,
    InboundCallFlow,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    Response,
    SessionNotify,
    Setup,
    SetupDone,
    TerminationReason,
    encode_audio,
    frame_bytes_for,
)

from ._support import CALL_IN, TOKEN

SUBMODULES = [
    "_vocab",
    "_audio",
    "_states",
    "_messages",
    "_events",
    "_errors",
    "_wire",
    "_control_codec",
    "_media_codec",
    "_control",
    "_media",
]


# --- the package's API ----------------------------------------------------------------------------


def test_all_is_complete_and_resolves() -> None:
    exported: set[str] = set()
    for name in SUBMODULES:
        module = importlib.import_module(f"telcoflow._core.{name}")
        exported |= set(module.__all__)
        for attr in module.__all__:
            assert hasattr(module, attr), f"{name}.{attr}"
    assert set(core.__all__) == exported
    assert len(core.__all__) == len(set(core.__all__))
    for attr in core.__all__:
        assert getattr(core, attr) is not None


def test_error_hierarchy() -> None:
    assert issubclass(RemoteProtocolError, ProtocolError)
    assert issubclass(LocalProtocolError, ProtocolError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)
    # A BadRequest is the peer's fault, and carries the id the server answers.
    assert issubclass(BadRequest, RemoteProtocolError)
    bad = BadRequest("session.open frame is missing field 'sessionId'", "r-9")
    assert bad.req_id == "r-9"
    assert "sessionId" in str(bad)


# --- vocabulary (PROTOCOL.md) ---------------------------------------------------------------------


def test_error_codes_of_both_planes() -> None:
    media = {"CALL_UNANSWERED", "CALL_REJECTED", "INVALID_STATE", "INVALID_COMMAND"}
    media |= {"CALL_TERMINATED", "TIMEOUT"}
    control = {"SESSION_BUSY", "SESSION_CLOSED", "SESSION_NOT_FOUND", "SESSION_NOT_OPEN"}
    control |= {"CHANNEL_NOT_CONFIGURED", "QUOTA_EXCEEDED", "OUTBOUND_OVERFLOW"}
    control |= {"UNAUTHORIZED", "FORBIDDEN", "INVALID_REQUEST"}
    values = {code.value for code in ErrorCode}
    assert media | control | {"INVALID_CHANNEL"} <= values
    for code in ErrorCode:
        assert code.name == code.value
        assert str(code) == code.value


def test_reasons_and_names() -> None:
    assert {r.value for r in TerminationReason} >= {
        "caller_hangup",
        "callee_hangup",
        "agent_disconnect",
        "agent_close",
        "media_lost",
        "server_shutdown",
    }
    assert TerminationReason.UNKNOWN.value == "unknown"
    assert [r.value for r in CloseReason] == ["CALL_TERMINATED", "FORCE_CLOSE", "SDK_REQUEST"]
    assert {a.value for a in Activity} == {"NEW_INCOMING_CALL", "NEW_INCOMING_MESSAGE", "RESUME"}
    assert [c.value for c in Channel] == ["TELCO", "WA"]
    assert [f.value for f in InboundCallFlow] == ["ALL", "MISSED_ONLY", "NO"]
    assert (Direction.INBOUND.value, Direction.OUTBOUND.value) == ("MT", "MO")
    # Values are str: they compare equal to the wire text and serialise as it.
    wire: str = "MT"
    assert wire == Direction.INBOUND
    assert json.dumps(Direction.OUTBOUND) == '"MO"'
    assert str(Channel.TELCO) == "TELCO"


def test_protocol_numbers() -> None:
    assert PROTOCOL_SDK_VERSION == "1.0.0"
    assert (MAX_RING_TIME_S, DEFAULT_RING_TIME_S) == (120, 60)
    assert SETUP_DONE_TIMEOUT_S == 10.0
    assert REQUEST_TIMEOUT_S == 30.0
    assert CLAIM_TIMEOUT_S == MEDIA_TIMEOUT_S == 30.0
    assert RESUME_AFTER_SETUP_S == 1.0
    assert MIN_TOKEN_TTL_S >= 60.0


def test_bounds() -> None:
    # Clients accept url and token up to 8 KiB (a hosted token is a long JWT).
    assert MAX_URL_CHARS == 8 * 1024
    assert MAX_ID_CHARS == 256
    # The server accepts agent frames of up to 64 KiB and grants at most 64 KiB at once.
    assert MAX_AUDIO_PAYLOAD_BYTES == 64 * 1024
    assert MAX_CREDIT_GRANT_BYTES >= MAX_AUDIO_PAYLOAD_BYTES
    assert MAX_CREDIT_GRANT_BYTES == 16 * 1024 * 1024
    # A call.in with a URL and a token at their limits still fits in one text frame.
    assert MAX_TEXT_MESSAGE_CHARS > 2 * MAX_URL_CHARS + 1024
    # The longest ring time fits in a command's timeout.
    assert MAX_TIMEOUT_MS >= MAX_RING_TIME_S * 1000


# --- audio layout ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "frame_bytes"), [(24000, 960), (16000, 640), (8000, 320)])
def test_frame_bytes_for(rate: int, frame_bytes: int) -> None:
    assert frame_bytes_for(rate) == frame_bytes
    # 20 ms of PCM16 mono: rate * 2 bytes per second / 50 frames per second.
    assert frame_bytes == rate * 2 * FRAME_MS // 1000


def test_sample_rates_and_channels() -> None:
    assert frozenset({8000, 16000, 24000}) == SAMPLE_RATES
    assert FRAME_MS == 20
    assert (CHANNEL_MIXED, CHANNEL_CALLER, CHANNEL_CALLEE) == (0, 1, 2)


def test_encode_audio_prefixes_the_channel() -> None:
    assert encode_audio(CHANNEL_CALLEE, b"\x01\x02") == b"\x02\x01\x02"
    assert encode_audio(0, bytearray(b"\x05")) == b"\x00\x05"
    assert encode_audio(255, memoryview(b"ab")) == b"\xffab"
    assert isinstance(encode_audio(0, bytearray(2)), bytes)


# --- message classes ------------------------------------------------------------------------------


def test_media_token_is_not_in_repr() -> None:
    assert TOKEN not in repr(CALL_IN)
    assert TOKEN not in str(CALL_IN)
    assert "call-1" in repr(CALL_IN)
    assert CALL_IN.token == TOKEN


def test_audio_reprs_show_sizes_not_samples() -> None:
    assert repr(AudioFrame(0, b"\x07\x00" * 480)) == "AudioFrame(channel=0, pcm=<960 bytes>)"
    assert repr(AgentAudioReceived(b"\x07" * 3, 2)) == (
        "AgentAudioReceived(pcm=<3 bytes>, excess_bytes=2)"
    )


@pytest.mark.parametrize(
    ("msg", "attr"),
    [(SetupDone("c"), "sm_ws_id"), (CALL_IN, "token"), (Response("r", True), "ok")],
    ids=lambda v: type(v).__name__,
)
def test_messages_are_frozen_and_slotted(msg: Any, attr: str) -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(msg, attr, "x")
    assert not hasattr(msg, "__dict__")


def test_defaults() -> None:
    assert Setup() == Setup(24000, AudioMode.MIXED)
    assert Response("r", False) == Response("r", False, None, None, None)
    notify = SessionNotify("s")
    assert (notify.channel, notify.activity, notify.created_at) == (
        "TELCO",
        "NEW_INCOMING_CALL",
        0.0,
    )
    assert BufferRequest(960) == BufferRequest(960, 0, 0)
    assert CommandRequest("c", "call.answer", 1).data is None
    assert CallIn("s", "c", "u", "t").org_uuid == ""


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Setup(sample_rate=44100), "sample_rate must be one of 8000, 16000, 24000"),
        (lambda: Setup(sample_rate=24000.0), "sample_rate"),  # type: ignore[arg-type]
        (lambda: Setup(sample_rate=True), "sample_rate"),
        (lambda: Setup(audio_mode="stereo"), "not a valid AudioMode"),
        (lambda: CommandRequest("c1", "call.answer", -1), "timeout_ms must be >= 0"),
        (lambda: BufferRequest(-1, 960), "requested_bytes must be >= 0"),
        (lambda: BufferRequest(960, -2), "prefer_audio_frame_bytes must be >= 0"),
    ],
)
def test_messages_validate_at_construction(build: Callable[[], object], match: str) -> None:
    # 24000.0 == 24000 would pass a membership test, but its frame would carry 24000.0, which
    # the server's side of the same codec refuses; True is an int to Python, never to us.
    with pytest.raises(ValueError, match=match):
        build()


def test_setup_audio_mode_is_converted() -> None:
    assert Setup(8000, "isolated").audio_mode is AudioMode.ISOLATED
