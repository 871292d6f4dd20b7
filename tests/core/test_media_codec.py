"""The media-plane codec (PROTOCOL.md "Media plane"; hosted-1.0.0.md §3.2-3.4), both roles.

Text frames are ``{"type", "data": {...}}``; binary frames are a channel byte and PCM. The
client's ``command`` is byte-identical to the official client's (``json.dumps`` defaults); the
server's frames are compact. What a client receives is read as the official client reads it
(truth values, codes made text, optional reasons and messages, lenient credit fields); what the
server receives from an agent is read strictly.
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
    MAX_ID_CHARS,
    MAX_TIMEOUT_MS,
    AudioFrame,
    BufferRequest,
    CallErrorEvent,
    CallTerminatedEvent,
    CommandRequest,
    CommandResponse,
    MediaMessage,
    RemoteProtocolError,
    Role,
    UnknownCallEvent,
    UnknownMessage,
    decode_audio,
    decode_control,
    decode_media,
    encode_audio,
    encode_media,
)

from ._support import official_command, short


def frame(kind: str, data: Any) -> str:
    return json.dumps({"type": kind, "data": data})


def client_reads(raw: str | bytes) -> MediaMessage:
    return decode_media(raw, Role.CLIENT)


def server_reads(raw: str | bytes) -> MediaMessage:
    return decode_media(raw, Role.SERVER)


def event(**data: Any) -> MediaMessage:
    return client_reads(frame("call_event", data))


def credit(**data: Any) -> MediaMessage:
    return client_reads(frame("buffer_request", data))


# --- exact wire form ------------------------------------------------------------------------------


def test_command_is_byte_identical_to_the_official_client() -> None:
    # voice_session.py:309-324: {"type":"command","data":{command_id, command, timeout_ms, data?}}
    # through json.dumps with its defaults; "data" only when there is some.
    assert encode_media(CommandRequest("c1", "call.answer", 10_000)) == (
        '{"type": "command", "data": {"command_id": "c1", "command": "call.answer", '
        '"timeout_ms": 10000}}'
    )
    assert encode_media(CommandRequest("c2", "call.connect", 60_000, {"ringTimeSeconds": 60})) == (
        '{"type": "command", "data": {"command_id": "c2", "command": "call.connect", '
        '"timeout_ms": 60000, "data": {"ringTimeSeconds": 60}}}'
    )
    # An empty data object is still sent: only None leaves it out.
    assert '"data": {}}}' in encode_media(CommandRequest("c3", "agent.interrupt", 1, {}))
    for msg in (
        CommandRequest("c1", "call.answer", 10_000),
        CommandRequest("c2", "call.connect", 60_000, {"ringTimeSeconds": 60}),
        CommandRequest("é", "agent.spy", 1, {"k": [None, 1.5]}),
    ):
        assert encode_media(msg) == official_command(msg)


SERVER_FRAMES: list[tuple[MediaMessage, str]] = [
    (
        CommandResponse("c1", True),
        '{"type":"command_response","data":{"command_id":"c1","success":true,"result":null,'
        '"error_code":null,"error_message":null}}',
    ),
    (
        CommandResponse("c2", False, None, "CALL_UNANSWERED", "the callee did not answer"),
        '{"type":"command_response","data":{"command_id":"c2","success":false,"result":null,'
        '"error_code":"CALL_UNANSWERED","error_message":"the callee did not answer"}}',
    ),
    (
        CallTerminatedEvent("caller_hangup"),
        '{"type":"call_event","data":{"event":"call.terminated","reason":"caller_hangup"}}',
    ),
    (
        CallErrorEvent("TTS_SESSION_ERROR", "voice cloning failed"),
        '{"type":"call_event","data":{"event":"call.error","error_code":"TTS_SESSION_ERROR",'
        '"error_message":"voice cloning failed","message":"voice cloning failed"}}',
    ),
    (
        BufferRequest(4800, 960, 0),
        '{"type":"buffer_request","data":{"requested_bytes":4800,"prefer_audio_frame_bytes":960,'
        '"channelId":0}}',
    ),
    (UnknownCallEvent("call.hold"), '{"type":"call_event","data":{"event":"call.hold"}}'),
    (UnknownMessage("stats"), '{"type":"stats","data":{}}'),
]


@pytest.mark.parametrize(("msg", "text"), SERVER_FRAMES, ids=lambda v: type(v).__name__)
def test_server_frames_are_compact(msg: MediaMessage, text: str) -> None:
    assert encode_media(msg) == text


def test_call_error_carries_both_message_names_and_its_data() -> None:
    # error_message (the README's), and message (PROTOCOL.md version 1's) for older clients.
    obj = json.loads(encode_media(CallErrorEvent("X", None, {"detail": "d", "message": "old"})))
    assert obj["data"] == {
        "detail": "d",
        "message": "old",
        "event": "call.error",
        "error_code": "X",
        "error_message": None,
    }


def test_audio_frames_are_binary_with_a_channel_prefix() -> None:
    assert encode_audio(CHANNEL_CALLEE, b"\x01\x02") == b"\x02\x01\x02"
    assert decode_audio(b"\x01\xaa\xbb") == AudioFrame(CHANNEL_CALLER, b"\xaa\xbb")


# --- round trips, in the role that receives each frame --------------------------------------------

CLIENT_RECEIVES: list[MediaMessage] = [
    CommandResponse("c1", True, result={"state": "ANSWERED"}),
    CommandResponse("c2", True),
    CommandResponse("c3", False, None, "CALL_UNANSWERED", "the callee did not answer"),
    CommandResponse("c4", False, [1, "two", None], "TIMEOUT", None),
    CommandResponse("c5", False, None, "", ""),
    CallTerminatedEvent("caller_hangup"),
    CallTerminatedEvent("unknown"),
    UnknownCallEvent("call.recording_started"),
    BufferRequest(48_000, 960, 0),
    BufferRequest(0, 320, 1),
    BufferRequest(MAX_CREDIT_GRANT_BYTES, MAX_AUDIO_PAYLOAD_BYTES, 2),
    BufferRequest(960, 0, 0),
    AudioFrame(CHANNEL_MIXED, b"\x01\x02" * 480),
    AudioFrame(CHANNEL_CALLER, b"\x00"),
    AudioFrame(CHANNEL_CALLEE, b"\xff\x7f" * 160 + b"\x01"),
    AudioFrame(200, b"\x00\x00"),
    UnknownMessage("stats"),
    UnknownMessage("command"),
]

SERVER_RECEIVES: list[MediaMessage] = [
    CommandRequest("c1", "call.answer", 10_000),
    CommandRequest("c2", "call.connect", 60_000, {"ringTimeSeconds": 60}),
    CommandRequest("c3", "agent.interrupt", 1, {}),
    CommandRequest("c4", "call.future_command", MAX_TIMEOUT_MS, {"nested": {"a": [1, 2.5]}}),
    CommandRequest("c5", "call.answer", 0),
    AudioFrame(CHANNEL_MIXED, b"\x10\x00" * 480),
    AudioFrame(CHANNEL_MIXED, b"\x10\x00\x01"),
    UnknownMessage("buffer_request"),
    UnknownMessage("command_response"),
    UnknownMessage("call_event"),
]


def _wire(msg: MediaMessage) -> str | bytes:
    return encode_audio(msg.channel, msg.pcm) if isinstance(msg, AudioFrame) else encode_media(msg)


@pytest.mark.parametrize("msg", CLIENT_RECEIVES, ids=short)
def test_client_round_trip(msg: MediaMessage) -> None:
    assert client_reads(_wire(msg)) == msg


@pytest.mark.parametrize("msg", SERVER_RECEIVES, ids=short)
def test_server_round_trip(msg: MediaMessage) -> None:
    assert server_reads(_wire(msg)) == msg


def test_call_error_round_trip_keeps_every_key_but_event_as_data() -> None:
    # The official client hands call.error handlers every key of data but "event"; so does ours.
    msg = CallErrorEvent("TTS_SESSION_ERROR", "failed", {"sessionId": "tts-1"})
    decoded = client_reads(encode_media(msg))
    assert decoded == CallErrorEvent(
        "TTS_SESSION_ERROR",
        "failed",
        {
            "sessionId": "tts-1",
            "error_code": "TTS_SESSION_ERROR",
            "error_message": "failed",
            "message": "failed",
        },
    )
    assert isinstance(decoded, CallErrorEvent)
    # ... and is a fixed point from then on.
    assert client_reads(encode_media(decoded)) == decoded


def test_frames_for_the_other_role_are_unknown_to_the_receiver() -> None:
    assert client_reads(encode_media(CommandRequest("c1", "call.answer", 10))) == (
        UnknownMessage("command")
    )
    for msg, _ in SERVER_FRAMES:
        kind = json.loads(encode_media(msg))["type"]
        assert server_reads(encode_media(msg)) == UnknownMessage(kind)


@pytest.mark.parametrize("role", list(Role), ids=str)
def test_unknown_types_decode_as_unknown_message(role: Role) -> None:
    assert decode_media(frame("stats", {"jitter": 0.1}), role) == UnknownMessage("stats")
    assert decode_media('{"type":"transcript"}', role) == UnknownMessage("transcript")


def test_media_frames_are_unknown_on_the_control_plane() -> None:
    assert decode_control(encode_media(BufferRequest(1, 2)), Role.CLIENT) == (
        UnknownMessage("buffer_request")
    )


# --- client leniency: command_response ------------------------------------------------------------


def test_minimal_command_response() -> None:
    assert client_reads(frame("command_response", {"command_id": "c", "success": True})) == (
        CommandResponse("c", True, None, None, None)
    )


@pytest.mark.parametrize(
    ("success", "expected"),
    [
        (True, True),
        (1, True),
        ("yes", True),
        ("false", True),
        ([0], True),
        ({"ok": 1}, True),
        (False, False),
        (0, False),
        ("", False),
        ([], False),
        ({}, False),
        (None, False),
    ],
    ids=short,
)
def test_success_is_a_truth_value(success: Any, expected: bool) -> None:
    msg = client_reads(frame("command_response", {"command_id": "c", "success": success}))
    assert isinstance(msg, CommandResponse)
    assert msg.success is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("INVALID_STATE", "INVALID_STATE"),
        (None, None),
        (500, "500"),
        (False, "false"),
        (["X"], '["X"]'),
        ({"code": 1}, '{"code": 1}'),
        ("x" * (MAX_ID_CHARS + 1), "x" * MAX_ID_CHARS),
    ],
    ids=short,
)
def test_error_code_is_any_value_made_text(value: Any, expected: str | None) -> None:
    data = {"command_id": "c", "success": False, "error_code": value}
    msg = client_reads(frame("command_response", data))
    assert isinstance(msg, CommandResponse)
    assert msg.error_code == expected


def test_error_message_is_any_value_made_text_up_to_4096() -> None:
    for value, expected in [(7, "7"), ("m" * 5000, "m" * 4096), (None, None), ("", "")]:
        data = {"command_id": "c", "success": False, "error_message": value}
        msg = client_reads(frame("command_response", data))
        assert isinstance(msg, CommandResponse)
        assert msg.error_message == expected


def test_result_is_any_json() -> None:
    for result in (None, 0, "x", [1, None], {"state": "ANSWERED"}):
        data = {"command_id": "c", "success": True, "result": result}
        msg = client_reads(frame("command_response", data))
        assert isinstance(msg, CommandResponse)
        assert msg.result == result


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"command_id": "c"}, "command_response frame is missing field 'success'"),
        ({"success": True}, "command_response frame is missing field 'command_id'"),
        ({"command_id": 5, "success": True}, "'command_id' must be str, not int"),
        ({"command_id": None, "success": True}, "'command_id' must be str, not NoneType"),
        (
            {"command_id": "c" * (MAX_ID_CHARS + 1), "success": True},
            f"'command_id' is longer than {MAX_ID_CHARS}",
        ),
        (None, "missing field 'success'"),
        ([1], "'data' must be an object"),
    ],
    ids=short,
)
def test_command_response_needs_an_id_and_a_success(data: Any, match: str) -> None:
    # As the official client: both must be present (media_messages.py:150).
    with pytest.raises(RemoteProtocolError, match=match):
        client_reads(frame("command_response", data))


# --- client leniency: call_event ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({}, "unknown"),
        ({"reason": None}, "unknown"),
        ({"reason": "caller_hangup"}, "caller_hangup"),
        ({"reason": "a_future_reason"}, "a_future_reason"),
        ({"reason": 7}, "7"),
    ],
    ids=short,
)
def test_call_terminated_reason_is_optional(data: dict[str, Any], reason: str) -> None:
    assert event(event="call.terminated", **data) == CallTerminatedEvent(reason)


def test_call_error_message_names() -> None:
    # error_message (the README's), message (PROTOCOL.md version 1's), or neither.
    got = event(event="call.error", error_code="X", error_message="new")
    assert isinstance(got, CallErrorEvent)
    assert (got.error_code, got.error_message) == ("X", "new")
    got = event(event="call.error", error_code="X", message="old")
    assert isinstance(got, CallErrorEvent)
    assert got.error_message == "old"
    got = event(event="call.error", error_code="X", error_message="new", message="old")
    assert isinstance(got, CallErrorEvent)
    assert got.error_message == "new"
    got = event(event="call.error", error_code="X")
    assert isinstance(got, CallErrorEvent)
    assert got.error_message is None
    got = event(event="call.error", error_code="X", error_message=None, message="old")
    assert isinstance(got, CallErrorEvent)
    assert got.error_message == "old"


def test_call_error_codes_are_optional_and_made_text() -> None:
    assert event(event="call.error") == CallErrorEvent(None, None, {})
    got = event(event="call.error", error_code=42, error_message=["m"])
    assert got == CallErrorEvent("42", '["m"]', {"error_code": 42, "error_message": ["m"]})


def test_call_error_data_is_every_key_but_event() -> None:
    got = event(event="call.error", error_code="TTS_SESSION_ERROR", detail={"n": 1})
    assert isinstance(got, CallErrorEvent)
    assert got.data == {"error_code": "TTS_SESSION_ERROR", "detail": {"n": 1}}


def test_unknown_and_coerced_event_names() -> None:
    assert event(event="call.hold", x=1) == UnknownCallEvent("call.hold")
    assert event(event=5) == UnknownCallEvent("5")
    with pytest.raises(RemoteProtocolError, match="call_event frame is missing field 'event'"):
        event(reason="caller_hangup")
    with pytest.raises(RemoteProtocolError, match="missing field 'event'"):
        event(event=None)
    with pytest.raises(RemoteProtocolError, match="missing field 'event'"):
        client_reads('{"type":"call_event"}')
    with pytest.raises(RemoteProtocolError, match="'data' must be an object"):
        client_reads(frame("call_event", "call.terminated"))


# --- client leniency: buffer_request --------------------------------------------------------------


def test_full_buffer_request() -> None:
    assert credit(requested_bytes=4800, prefer_audio_frame_bytes=640, channelId=0) == (
        BufferRequest(4800, 640, 0)
    )


@pytest.mark.parametrize(
    ("prefer", "expected"),
    [
        ("missing", 0),
        (None, 0),
        (0, 0),
        (640, 640),
        (961, 960),
        (1, 0),
        (3, 2),
        (-4, 0),
        (640.0, 640),
        (640.5, 0),
        ("640", 640),
        (True, 0),
        (MAX_AUDIO_PAYLOAD_BYTES, MAX_AUDIO_PAYLOAD_BYTES),
        (MAX_AUDIO_PAYLOAD_BYTES + 1, MAX_AUDIO_PAYLOAD_BYTES),
        (10**9, MAX_AUDIO_PAYLOAD_BYTES),
        (10**400, MAX_AUDIO_PAYLOAD_BYTES),
    ],
    ids=lambda v: repr(v)[:20],
)
def test_prefer_is_even_and_clamped_and_zero_when_unsaid(prefer: Any, expected: int) -> None:
    # 0 means "not said": the client then uses 20 ms at its rate (see test_media_protocol).
    data: dict[str, Any] = {"requested_bytes": 960}
    if prefer != "missing":
        data["prefer_audio_frame_bytes"] = prefer
    assert credit(**data) == BufferRequest(960, expected, 0)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("missing", 0),
        (None, 0),
        (0, 0),
        (-5, 0),
        (960, 960),
        (961, 961),
        (960.0, 960),
        (960.5, 0),
        ("960", 960),  # as the official client's int(x or 0) reads it
        ("9.5", 0),
        (False, 0),
        (MAX_CREDIT_GRANT_BYTES, MAX_CREDIT_GRANT_BYTES),
        (float(MAX_CREDIT_GRANT_BYTES), MAX_CREDIT_GRANT_BYTES),
    ],
    ids=short,
)
def test_requested_bytes_reads_whole_numbers(requested: Any, expected: int) -> None:
    data: dict[str, Any] = {"prefer_audio_frame_bytes": 960}
    if requested != "missing":
        data["requested_bytes"] = requested
    assert credit(**data) == BufferRequest(expected, 960, 0)


@pytest.mark.parametrize(
    "requested", [MAX_CREDIT_GRANT_BYTES + 1, 10**12, 1e300, 10**400], ids=lambda v: repr(v)[:20]
)
def test_a_grant_beyond_max_credit_grant_bytes_is_refused(requested: Any) -> None:
    with pytest.raises(RemoteProtocolError, match="exceeds MAX_CREDIT_GRANT_BYTES"):
        credit(requested_bytes=requested, prefer_audio_frame_bytes=960)


@pytest.mark.parametrize(
    ("channel", "expected"),
    [("missing", 0), (None, 0), (0, 0), (1, 1), (2.0, 2), (7, 7), (-1, -1), (1.5, 0)],
    ids=short,
)
def test_channel_id_reads_whole_numbers(channel: Any, expected: int) -> None:
    data: dict[str, Any] = {"requested_bytes": 960, "prefer_audio_frame_bytes": 960}
    if channel != "missing":
        data["channelId"] = channel
    assert credit(**data) == BufferRequest(960, 960, expected)


def test_a_buffer_request_without_data_grants_nothing() -> None:
    assert client_reads('{"type":"buffer_request"}') == BufferRequest(0, 0, 0)
    assert client_reads(frame("buffer_request", None)) == BufferRequest(0, 0, 0)
    with pytest.raises(RemoteProtocolError, match="'data' must be an object"):
        client_reads(frame("buffer_request", [960]))


def test_unknown_fields_are_ignored() -> None:
    grant = {"requested_bytes": 960, "prefer_audio_frame_bytes": 960, "channelId": 0, "seq": 7}
    assert credit(**grant) == BufferRequest(960, 960, 0)
    data = {"command_id": "c1", "success": True, "elapsed_ms": 3}
    assert client_reads(frame("command_response", data)) == CommandResponse("c1", True)


# --- audio, both roles ----------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role), ids=str)
@pytest.mark.parametrize("raw", [b"", b"\x00"], ids=short)
def test_audio_without_a_payload_byte_is_refused(role: Role, raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match=f"audio frame of {len(raw)} bytes has no audio"):
        decode_media(raw, role)
    with pytest.raises(RemoteProtocolError, match="has no audio"):
        decode_audio(raw)


@pytest.mark.parametrize(
    "raw", [b"\x00\x01", b"\x00\x01\x02\x03", b"\x00" + b"\x01" * 961], ids=lambda b: f"{len(b)}B"
)
def test_odd_payloads_are_accepted(raw: bytes) -> None:
    # A trailing odd byte is the receiver's to carry over into the next frame.
    assert decode_audio(raw) == AudioFrame(0, raw[1:])


@pytest.mark.parametrize("channel", [0, 1, 2, 3, 127, 255])
def test_any_channel_is_decoded(channel: int) -> None:
    assert decode_audio(bytes([channel, 1, 0])) == AudioFrame(channel, b"\x01\x00")
    assert client_reads(bytes([channel, 9])) == AudioFrame(channel, b"\x09")


def test_payload_size_limit() -> None:
    pcm = bytes(MAX_AUDIO_PAYLOAD_BYTES)
    assert decode_audio(b"\x00" + pcm) == AudioFrame(0, pcm)
    with pytest.raises(RemoteProtocolError, match="exceeds MAX_AUDIO_PAYLOAD_BYTES"):
        decode_audio(b"\x00" + pcm + b"\x00")
    with pytest.raises(RemoteProtocolError, match="exceeds MAX_AUDIO_PAYLOAD_BYTES"):
        server_reads(b"\x00" + pcm + b"\x00\x00")


# --- server strictness: command -------------------------------------------------------------------

VALID_COMMAND = {"command_id": "c1", "command": "call.answer", "timeout_ms": 10_000}


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("command_id", "missing", "command frame is missing field 'command_id'"),
        ("command_id", 1, "'command_id' must be str, not int"),
        ("command_id", None, "'command_id' must be str, not NoneType"),
        ("command_id", "c" * (MAX_ID_CHARS + 1), f"'command_id' is longer than {MAX_ID_CHARS}"),
        ("command", "missing", "command frame is missing field 'command'"),
        ("command", ["call.answer"], "'command' must be str, not list"),
        ("timeout_ms", "missing", "command frame is missing field 'timeout_ms'"),
        ("timeout_ms", "10000", "'timeout_ms' must be int, not str"),
        ("timeout_ms", 10000.0, "'timeout_ms' must be int, not float"),
        ("timeout_ms", True, "'timeout_ms' must be int, not bool"),
        ("timeout_ms", -1, r"'timeout_ms' is -1, outside 0\.\.600000"),
        ("timeout_ms", MAX_TIMEOUT_MS + 1, "'timeout_ms' is 600001, outside"),
        ("data", [1], "'data' must be an object or null"),
        ("data", "ringTimeSeconds=60", "'data' must be an object or null"),
    ],
    ids=short,
)
def test_server_reads_commands_strictly(key: str, value: Any, match: str) -> None:
    data: dict[str, Any] = dict(VALID_COMMAND)
    if value == "missing":
        del data[key]
    else:
        data[key] = value
    with pytest.raises(RemoteProtocolError, match=match):
        server_reads(frame("command", data))


def test_command_bounds_are_accepted() -> None:
    for timeout in (0, MAX_TIMEOUT_MS):
        msg = server_reads(frame("command", dict(VALID_COMMAND, timeout_ms=timeout)))
        assert isinstance(msg, CommandRequest)
        assert msg.timeout_ms == timeout
    msg = server_reads(frame("command", dict(VALID_COMMAND, command_id="c" * MAX_ID_CHARS)))
    assert isinstance(msg, CommandRequest)
    assert server_reads(frame("command", dict(VALID_COMMAND, data=None))) == CommandRequest(
        "c1", "call.answer", 10_000, None
    )


def test_a_command_needs_its_envelope() -> None:
    with pytest.raises(RemoteProtocolError, match="missing field 'command_id'"):
        server_reads(json.dumps({"type": "command", **VALID_COMMAND}))
    with pytest.raises(RemoteProtocolError, match="'data' must be an object"):
        server_reads(frame("command", [VALID_COMMAND]))
