"""The codec: every frame of PROTOCOL.md encodes and decodes, in the role that receives it.

Synchronous and socket-free: the core works on whole WebSocket messages (``str`` and ``bytes``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from telcoflow._core import (
    CHANNEL_CALLEE,
    CHANNEL_CALLER,
    CHANNEL_MIXED,
    MAX_AUDIO_PAYLOAD_BYTES,
    MAX_CREDIT_GRANT_BYTES,
    MAX_TEXT_MESSAGE_CHARS,
    AudioFrame,
    AudioMode,
    BufferRequest,
    CallEnded,
    CallErrorEvent,
    CallIncoming,
    CallTerminatedEvent,
    CommandRequest,
    CommandResponse,
    ErrorMessage,
    RemoteProtocolError,
    Role,
    Setup,
    SetupDone,
    UnknownCallEvent,
    UnknownMessage,
    decode_audio,
    decode_control,
    decode_media,
    encode,
)
from telcoflow._core._codec import MAX_ID_CHARS, MAX_TIMEOUT_MS

TOKEN = "tok-3f9a-very-secret-media-token"

INCOMING = CallIncoming(
    call_id="call-1",
    from_number="+15550001",
    to_number="+15550002",
    direction="MT",
    media_url="wss://media.example/v1/media/call-1",
    media_token=TOKEN,
    created_at=1_700_000_000.25,
)


def frame(kind: str, data: Any) -> str:
    return json.dumps({"type": kind, "data": data})


# --- round trips ----------------------------------------------------------------------------------

CLIENT_CONTROL = [
    SetupDone("conn-1"),
    ErrorMessage("UNSUPPORTED_SAMPLE_RATE", "sampleRate must be 8000, 16000 or 24000"),
    INCOMING,
    CallEnded("call-1", "caller_hangup"),
]

SERVER_CONTROL = [
    Setup(),
    *(Setup(rate, mode) for rate in (8000, 16000, 24000) for mode in AudioMode),
]

CLIENT_MEDIA = [
    CommandResponse("c1", True, result={"state": "ANSWERED"}),
    CommandResponse("c2", True),
    CommandResponse("c3", False, None, "CALL_UNANSWERED", "the callee did not answer"),
    CommandResponse("c4", False, [1, "two", None], "TIMEOUT", None),
    CallTerminatedEvent("caller_hangup"),
    CallErrorEvent("MEDIA_GLITCH", "a packet was lost"),
    UnknownCallEvent("call.recording_started"),
    BufferRequest(48_000, 960, 0),
    BufferRequest(0, 320, 1),
    AudioFrame(CHANNEL_MIXED, b"\x01\x02" * 480),
    AudioFrame(CHANNEL_CALLER, b"\x00\x00"),
    AudioFrame(CHANNEL_CALLEE, b"\xff\x7f" * 160),
]

SERVER_MEDIA = [
    CommandRequest("c1", "call.answer", 10_000),
    CommandRequest("c2", "call.connect", 70_000, {"ringTimeSeconds": 60}),
    CommandRequest("c3", "agent.interrupt", 1, {}),
    CommandRequest("c4", "call.future_command", MAX_TIMEOUT_MS, {"nested": {"a": [1, 2.5]}}),
    AudioFrame(CHANNEL_MIXED, b"\x10\x00" * 480),
]


@pytest.mark.parametrize("msg", CLIENT_CONTROL, ids=lambda m: type(m).__name__)
def test_client_decodes_server_control_frames(msg: Any) -> None:
    wire = encode(msg)
    assert isinstance(wire, str)
    assert decode_control(wire, Role.CLIENT) == msg


@pytest.mark.parametrize("msg", SERVER_CONTROL, ids=repr)
def test_server_decodes_setup(msg: Setup) -> None:
    wire = encode(msg)
    assert isinstance(wire, str)
    assert decode_control(wire, Role.SERVER) == msg


@pytest.mark.parametrize("msg", CLIENT_MEDIA, ids=lambda m: type(m).__name__)
def test_client_decodes_server_media_frames(msg: Any) -> None:
    assert decode_media(encode(msg), Role.CLIENT) == msg


@pytest.mark.parametrize("msg", SERVER_MEDIA, ids=lambda m: type(m).__name__)
def test_server_decodes_client_media_frames(msg: Any) -> None:
    assert decode_media(encode(msg), Role.SERVER) == msg


def test_audio_frames_are_binary_with_a_channel_prefix() -> None:
    assert encode(AudioFrame(CHANNEL_CALLEE, b"\x01\x02")) == b"\x02\x01\x02"
    assert decode_audio(b"\x01\xaa\xbb") == AudioFrame(CHANNEL_CALLER, b"\xaa\xbb")


def test_integer_created_at_decodes_as_float() -> None:
    data = json.loads(encode(INCOMING))["data"]
    data["createdAt"] = 1_700_000_000
    msg = decode_control(frame("call.incoming", data), Role.CLIENT)
    assert isinstance(msg, CallIncoming)
    assert msg.created_at == 1_700_000_000.0
    assert isinstance(msg.created_at, float)


def test_setup_without_audio_mode_defaults_to_mixed() -> None:
    assert decode_control(frame("setup", {"sampleRate": 16000}), Role.SERVER) == Setup(
        16000, AudioMode.MIXED
    )


def test_null_or_missing_data_is_an_empty_object() -> None:
    assert decode_control('{"type":"call.future"}', Role.CLIENT) == UnknownMessage("call.future")
    with pytest.raises(RemoteProtocolError, match="connectionId"):
        decode_control('{"type":"setup.done","data":null}', Role.CLIENT)


def test_unknown_fields_are_ignored() -> None:
    data = {"connectionId": "conn-9", "region": "eu", "features": ["x"]}
    assert decode_control(frame("setup.done", data), Role.CLIENT) == SetupDone("conn-9")
    data = {"requested_bytes": 960, "prefer_audio_frame_bytes": 960, "channelId": 0, "seq": 7}
    assert decode_media(frame("buffer_request", data), Role.CLIENT) == BufferRequest(960, 960, 0)


def test_command_response_with_null_error_fields() -> None:
    raw = frame(
        "command_response",
        {"command_id": "c1", "success": True, "result": None, "error_code": None},
    )
    assert decode_media(raw, Role.CLIENT) == CommandResponse("c1", True)


# --- exact wire form (PROTOCOL.md field names) ----------------------------------------------------


def test_command_wire_form() -> None:
    assert encode(CommandRequest("c1", "call.answer", 10_000)) == (
        '{"type":"command","data":{"command_id":"c1","command":"call.answer","timeout_ms":10000}}'
    )
    wire = encode(CommandRequest("c2", "call.connect", 70_000, {"ringTimeSeconds": 60}))
    assert json.loads(wire) == {
        "type": "command",
        "data": {
            "command_id": "c2",
            "command": "call.connect",
            "timeout_ms": 70_000,
            "data": {"ringTimeSeconds": 60},
        },
    }


def test_buffer_request_wire_form() -> None:
    assert encode(BufferRequest(4800, 960, 0)) == (
        '{"type":"buffer_request","data":'
        '{"requested_bytes":4800,"prefer_audio_frame_bytes":960,"channelId":0}}'
    )


def test_call_incoming_wire_form() -> None:
    assert json.loads(encode(INCOMING)) == {
        "type": "call.incoming",
        "data": {
            "callId": "call-1",
            "from": "+15550001",
            "to": "+15550002",
            "direction": "MT",
            "mediaUrl": "wss://media.example/v1/media/call-1",
            "mediaToken": TOKEN,
            "createdAt": 1_700_000_000.25,
        },
    }


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        (
            Setup(16000, "isolated"),
            {"type": "setup", "data": {"sampleRate": 16000, "audioMode": "isolated"}},
        ),
        (SetupDone("conn-1"), {"type": "setup.done", "data": {"connectionId": "conn-1"}}),
        (ErrorMessage("BAD", "why"), {"type": "error", "data": {"code": "BAD", "message": "why"}}),
        (
            CallEnded("call-1", "caller_hangup"),
            {"type": "call.ended", "data": {"callId": "call-1", "reason": "caller_hangup"}},
        ),
        (
            CommandResponse("c1", False, None, "INVALID_STATE", "not now"),
            {
                "type": "command_response",
                "data": {
                    "command_id": "c1",
                    "success": False,
                    "result": None,
                    "error_code": "INVALID_STATE",
                    "error_message": "not now",
                },
            },
        ),
        (
            CallTerminatedEvent("agent_close"),
            {"type": "call_event", "data": {"event": "call.terminated", "reason": "agent_close"}},
        ),
        (
            CallErrorEvent("X", "y"),
            {
                "type": "call_event",
                "data": {"event": "call.error", "error_code": "X", "message": "y"},
            },
        ),
    ],
    ids=lambda v: type(v).__name__,
)
def test_text_frame_wire_forms(msg: Any, expected: dict[str, Any]) -> None:
    assert json.loads(encode(msg)) == expected


def test_wire_text_is_compact_json() -> None:
    wire = encode(SetupDone("c"))
    assert wire == '{"type":"setup.done","data":{"connectionId":"c"}}'


# --- unknown and wrong-side frames are ignored, not fatal -----------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_unknown_types_decode_as_unknown_message(role: Role) -> None:
    assert decode_control(frame("call.transferred", {"x": 1}), role) == UnknownMessage(
        "call.transferred"
    )
    assert decode_media(frame("stats", {"jitter": 0.1}), role) == UnknownMessage("stats")


def test_frames_for_the_other_role_are_unknown_to_the_receiver() -> None:
    # PROTOCOL.md: unknown types are ignored; a receiver has no decoder for frames it never gets.
    assert decode_control(encode(Setup()), Role.CLIENT) == UnknownMessage("setup")
    assert decode_control(encode(SetupDone("c")), Role.SERVER) == UnknownMessage("setup.done")
    cmd = encode(CommandRequest("c1", "call.answer", 10))
    assert decode_media(cmd, Role.CLIENT) == UnknownMessage("command")
    grant = encode(BufferRequest(1, 2))
    assert decode_media(grant, Role.SERVER) == UnknownMessage("buffer_request")


# --- malformed text frames ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("{'type': 'setup'}", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, not list"),
        ('"setup"', "must be a JSON object, not str"),
        ("42", "must be a JSON object, not int"),
        ("null", "must be a JSON object, not NoneType"),
        ("{}", "no string 'type'"),
        ('{"type": 7, "data": {}}', "no string 'type'"),
        ('{"type": null}', "no string 'type'"),
        ('{"type": "setup", "data": [1]}', "'data' must be an object"),
        ('{"type": "setup", "data": "x"}', "'data' must be an object"),
        ("[" * 100_000, "exceeds MAX_TEXT_MESSAGE_CHARS"),
    ],
)
@pytest.mark.parametrize("role", list(Role))
def test_malformed_text_frames(raw: str, match: str, role: Role) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode_control(raw, role)
    with pytest.raises(RemoteProtocolError, match=match):
        decode_media(raw, role)


def test_deeply_nested_json_is_a_protocol_error() -> None:
    raw = "[" * 50_000 + "]" * 10_000
    assert len(raw) <= MAX_TEXT_MESSAGE_CHARS
    with pytest.raises(RemoteProtocolError, match="not valid JSON"):
        decode_media(raw, Role.CLIENT)


def test_text_frame_size_limit_boundary() -> None:
    head = '{"type":"setup.done","data":{"connectionId":"c"}}'
    at_limit = head + " " * (MAX_TEXT_MESSAGE_CHARS - len(head))
    assert decode_control(at_limit, Role.CLIENT) == SetupDone("c")
    with pytest.raises(RemoteProtocolError, match=f"{MAX_TEXT_MESSAGE_CHARS + 1} characters"):
        decode_control(at_limit + " ", Role.CLIENT)


@pytest.mark.parametrize("raw", [b"", b"\x00\x01\x02", bytearray(b"{}")])
def test_binary_frames_are_refused_on_the_control_connection(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="binary frames are not allowed"):
        decode_control(raw, Role.CLIENT)


def _valid(kind: str) -> dict[str, Any]:
    """A valid data object for ``kind``, to break one field at a time."""
    return {
        "setup": {"sampleRate": 24000, "audioMode": "mixed"},
        "setup.done": {"connectionId": "conn-1"},
        "error": {"code": "BAD", "message": "why"},
        "call.incoming": json.loads(encode(INCOMING))["data"],
        "call.ended": {"callId": "call-1", "reason": "caller_hangup"},
        "command": {"command_id": "c1", "command": "call.answer", "timeout_ms": 10_000},
        "command_response": {"command_id": "c1", "success": True},
        "call.terminated": {"event": "call.terminated", "reason": "caller_hangup"},
        "call.error": {"event": "call.error", "error_code": "X", "message": "y"},
        "buffer_request": {"requested_bytes": 960, "prefer_audio_frame_bytes": 960},
    }[kind]


#: (kind, receiving role, plane) for every typed text frame.
_FRAMES = {
    "setup": (Role.SERVER, decode_control),
    "setup.done": (Role.CLIENT, decode_control),
    "error": (Role.CLIENT, decode_control),
    "call.incoming": (Role.CLIENT, decode_control),
    "call.ended": (Role.CLIENT, decode_control),
    "command": (Role.SERVER, decode_media),
    "command_response": (Role.CLIENT, decode_media),
    "call.terminated": (Role.CLIENT, decode_media),
    "call.error": (Role.CLIENT, decode_media),
    "buffer_request": (Role.CLIENT, decode_media),
}


def _decode(kind: str, data: dict[str, Any]) -> Any:
    role, decoder = _FRAMES[kind]
    wire_type = "call_event" if kind.startswith("call.") and decoder is decode_media else kind
    return decoder(json.dumps({"type": wire_type, "data": data}), role)


@pytest.mark.parametrize("kind", list(_FRAMES))
def test_valid_base_frames_decode(kind: str) -> None:
    assert not isinstance(_decode(kind, _valid(kind)), UnknownMessage)


REQUIRED = [
    ("setup", "sampleRate"),
    ("setup.done", "connectionId"),
    ("error", "code"),
    ("error", "message"),
    *(
        ("call.incoming", key)
        for key in ("callId", "from", "to", "direction", "mediaUrl", "mediaToken")
    ),
    ("call.ended", "callId"),
    ("call.ended", "reason"),
    ("command", "command_id"),
    ("command", "command"),
    ("command", "timeout_ms"),
    ("command_response", "command_id"),
    ("command_response", "success"),
    ("call.terminated", "event"),
    ("call.terminated", "reason"),
    ("call.error", "error_code"),
    ("call.error", "message"),
    ("buffer_request", "requested_bytes"),
    ("buffer_request", "prefer_audio_frame_bytes"),
]


@pytest.mark.parametrize(("kind", "key"), REQUIRED)
def test_missing_required_field_is_named(kind: str, key: str) -> None:
    data = _valid(kind)
    del data[key]
    with pytest.raises(RemoteProtocolError, match=f"missing field '{key}'"):
        _decode(kind, data)


WRONG_TYPES = [
    ("setup", "sampleRate", "24000", "must be int, not str"),
    ("setup", "sampleRate", 24000.0, "must be int, not float"),
    ("setup", "sampleRate", True, "must be int, not bool"),
    ("setup", "audioMode", 1, "must be str, not int"),
    ("setup.done", "connectionId", 17, "must be str, not int"),
    ("setup.done", "connectionId", None, "must be str, not NoneType"),
    ("error", "code", ["BAD"], "must be str, not list"),
    ("call.incoming", "callId", {"id": 1}, "must be str, not dict"),
    ("call.incoming", "mediaToken", 1234, "must be str, not int"),
    ("call.incoming", "createdAt", "1700000000", "'createdAt' must be a number"),
    ("call.incoming", "createdAt", True, "'createdAt' must be a number"),
    ("call.incoming", "createdAt", None, "'createdAt' must be a number"),
    ("call.ended", "reason", False, "must be str, not bool"),
    ("command", "command_id", 1, "must be str, not int"),
    ("command", "timeout_ms", "10000", "must be int, not str"),
    ("command", "timeout_ms", 10000.0, "must be int, not float"),
    ("command", "timeout_ms", True, "must be int, not bool"),
    ("command", "data", [1], "'data' must be an object or null"),
    ("command", "data", "ringTimeSeconds=60", "'data' must be an object or null"),
    ("command_response", "command_id", None, "must be str, not NoneType"),
    ("command_response", "success", 1, "must be bool, not int"),
    ("command_response", "success", "true", "must be bool, not str"),
    ("command_response", "error_code", 500, "'error_code' must be a string or null"),
    ("command_response", "error_message", ["x"], "'error_message' must be a string or null"),
    ("call.terminated", "reason", None, "must be str, not NoneType"),
    ("call.error", "error_code", 3, "must be str, not int"),
    ("buffer_request", "requested_bytes", "960", "must be int, not str"),
    ("buffer_request", "requested_bytes", True, "must be int, not bool"),
    ("buffer_request", "requested_bytes", 960.0, "must be int, not float"),
    ("buffer_request", "prefer_audio_frame_bytes", False, "must be int, not bool"),
    ("buffer_request", "channelId", True, "'channelId' must be int"),
    ("buffer_request", "channelId", "0", "'channelId' must be int"),
    ("buffer_request", "channelId", None, "'channelId' must be int"),
]


@pytest.mark.parametrize(("kind", "key", "value", "match"), WRONG_TYPES)
def test_wrong_field_type_is_named(kind: str, key: str, value: Any, match: str) -> None:
    data = _valid(kind)
    data[key] = value
    with pytest.raises(RemoteProtocolError, match=match) as info:
        _decode(kind, data)
    assert repr(key) in str(info.value)


def test_call_event_without_a_string_event() -> None:
    with pytest.raises(RemoteProtocolError, match="'event' must be str"):
        decode_media(frame("call_event", {"event": 5}), Role.CLIENT)
    with pytest.raises(RemoteProtocolError, match="missing field 'event'"):
        decode_media(frame("call_event", {"reason": "x"}), Role.CLIENT)


OUT_OF_RANGE = [
    ("setup", "sampleRate", 44100, "sample_rate must be one of 8000, 16000, 24000"),
    ("setup", "sampleRate", 0, "sample_rate must be one of"),
    ("setup", "audioMode", "stereo", "'stereo' is not a valid AudioMode"),
    ("call.incoming", "createdAt", float("nan"), "'createdAt' must be finite"),
    ("call.incoming", "createdAt", float("inf"), "'createdAt' must be finite"),
    ("call.incoming", "createdAt", float("-inf"), "'createdAt' must be finite"),
    ("command", "timeout_ms", -1, r"'timeout_ms' is -1, outside 0\.\.600000"),
    ("command", "timeout_ms", MAX_TIMEOUT_MS + 1, "'timeout_ms' is 600001, outside"),
    ("buffer_request", "requested_bytes", -1, "'requested_bytes' is -1, outside"),
    ("buffer_request", "requested_bytes", MAX_CREDIT_GRANT_BYTES + 1, "'requested_bytes' is"),
    ("buffer_request", "prefer_audio_frame_bytes", 0, "'prefer_audio_frame_bytes' is 0"),
    ("buffer_request", "prefer_audio_frame_bytes", 961, "'prefer_audio_frame_bytes' must be even"),
    (
        "buffer_request",
        "prefer_audio_frame_bytes",
        MAX_AUDIO_PAYLOAD_BYTES + 2,
        "'prefer_audio_frame_bytes' is",
    ),
]


@pytest.mark.parametrize(("kind", "key", "value", "match"), OUT_OF_RANGE)
def test_out_of_range_values(kind: str, key: str, value: Any, match: str) -> None:
    data = _valid(kind)
    data[key] = value
    with pytest.raises(RemoteProtocolError, match=match):
        _decode(kind, data)


def test_range_boundaries_are_accepted() -> None:
    cmd = _valid("command")
    for timeout in (0, MAX_TIMEOUT_MS):
        cmd["timeout_ms"] = timeout
        assert _decode("command", cmd).timeout_ms == timeout
    grant = _valid("buffer_request")
    grant.update(requested_bytes=MAX_CREDIT_GRANT_BYTES, prefer_audio_frame_bytes=2)
    assert _decode("buffer_request", grant) == BufferRequest(MAX_CREDIT_GRANT_BYTES, 2, 0)
    grant.update(requested_bytes=0, prefer_audio_frame_bytes=MAX_AUDIO_PAYLOAD_BYTES)
    assert _decode("buffer_request", grant) == BufferRequest(0, MAX_AUDIO_PAYLOAD_BYTES, 0)


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("setup.done", "connectionId"),
        ("call.incoming", "callId"),
        ("call.incoming", "mediaToken"),
        ("command", "command_id"),
        ("command_response", "command_id"),
        ("call.terminated", "reason"),
    ],
)
def test_overlong_identifiers_are_refused(kind: str, key: str) -> None:
    data = _valid(kind)
    data[key] = "x" * MAX_ID_CHARS
    _decode(kind, data)
    data[key] = "x" * (MAX_ID_CHARS + 1)
    with pytest.raises(RemoteProtocolError, match=f"'{key}' is longer than {MAX_ID_CHARS}"):
        _decode(kind, data)


def test_huge_integer_created_at_is_a_protocol_error() -> None:
    # A JSON integer beyond float range: the decoder must refuse it as a protocol error, not
    # let OverflowError escape from math.isfinite()/float() to the connection layer.
    data = _valid("call.incoming")
    data["createdAt"] = 10**400
    with pytest.raises(RemoteProtocolError, match="createdAt"):
        _decode("call.incoming", data)


# --- malformed binary frames ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "audio frame of 0 bytes has no samples"),
        (b"\x00", "audio frame of 1 bytes has no samples"),
        (b"\x00\x01", "audio frame of 2 bytes has no samples"),
        (b"\x00\x01\x02\x03", "payload of 3 bytes is not whole samples"),
        (b"\x00" + b"\x01" * 961, "payload of 961 bytes is not whole samples"),
        (b"\x03\x00\x00", "unknown channel 3"),
        (b"\xff\x00\x00", "unknown channel 255"),
        (b"\x00" + bytes(MAX_AUDIO_PAYLOAD_BYTES + 2), "exceeds MAX_AUDIO_PAYLOAD_BYTES"),
    ],
)
@pytest.mark.parametrize("role", list(Role))
def test_malformed_audio_frames(raw: bytes, match: str, role: Role) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode_audio(raw)
    with pytest.raises(RemoteProtocolError, match=match):
        decode_media(raw, role)


def test_largest_audio_frame_is_accepted() -> None:
    pcm = bytes(MAX_AUDIO_PAYLOAD_BYTES)
    assert decode_audio(b"\x00" + pcm) == AudioFrame(0, pcm)


# --- message classes ------------------------------------------------------------------------------


def test_media_token_is_not_in_repr() -> None:
    assert TOKEN not in repr(INCOMING)
    assert TOKEN not in str(INCOMING)
    assert "call-1" in repr(INCOMING)
    decoded = decode_control(encode(INCOMING), Role.CLIENT)
    assert TOKEN not in repr(decoded)
    assert decoded.media_token == TOKEN


def test_audio_repr_shows_size_not_samples() -> None:
    assert repr(AudioFrame(0, b"\x07\x00" * 480)) == "AudioFrame(channel=0, pcm=<960 bytes>)"


def test_messages_are_frozen() -> None:
    with pytest.raises(AttributeError):
        SetupDone("c").connection_id = "d"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Setup(sample_rate=44100), "sample_rate must be one of"),
        (lambda: Setup(audio_mode="stereo"), "not a valid AudioMode"),
        (lambda: CommandRequest("c1", "call.answer", -1), "timeout_ms must be >= 0"),
        (lambda: BufferRequest(-1, 960), "requested_bytes must be >= 0"),
        (lambda: BufferRequest(960, -2), "prefer_audio_frame_bytes must be >= 0"),
    ],
)
def test_messages_validate_at_construction(build: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()


def test_setup_refuses_a_float_sample_rate() -> None:
    # 24000.0 == 24000, so a membership test accepts it; but the frame it encodes carries
    # "sampleRate": 24000.0, which the server side of this same codec refuses (must be int).
    with pytest.raises(ValueError, match="sample_rate"):
        Setup(sample_rate=24000.0)  # type: ignore[arg-type]


def test_setup_audio_mode_is_converted() -> None:
    assert Setup(8000, "isolated").audio_mode is AudioMode.ISOLATED
