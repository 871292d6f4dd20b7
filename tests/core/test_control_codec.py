"""The control-plane codec (PROTOCOL.md "Control plane"; hosted-1.0.0.md §1.3-1.8), both roles.

What our client sends must be byte-identical to what the official 1.0.0 client sends (the
hosted service already sees that): ``json.dumps`` with its defaults, keys in the official
order, ``reqId`` last because the official ``request()`` adds it to a copy of the frame. What
the server sends is compact, with every field at the top level. The client reads leniently (as
the official client does), the server strictly; a request the server cannot read but can
answer raises :class:`BadRequest`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from telcoflow._core import (
    MAX_ID_CHARS,
    MAX_TEXT_MESSAGE_CHARS,
    MAX_URL_CHARS,
    AudioMode,
    BadRequest,
    CallFlowSetup,
    CallIn,
    ControlMessage,
    ErrorMessage,
    RemoteProtocolError,
    Response,
    Role,
    SessionClosed,
    SessionCreate,
    SessionNotify,
    SessionOpen,
    SessionReady,
    Setup,
    SetupDone,
    UnknownMessage,
    WaMessageOut,
    decode_control,
    decode_media,
    encode_control,
)

from ._support import CALL_IN, CLOSED, NOTIFY, TOKEN, official, short, top


def client_reads(raw: str) -> ControlMessage:
    return decode_control(raw, Role.CLIENT)


def server_reads(raw: str) -> ControlMessage:
    return decode_control(raw, Role.SERVER)


# --- exact wire form: client -> server (byte-identical to the official client) --------------------


#: (message, the exact text the official client sends for it); ``_support.official`` rebuilds
#: each the way the official client's own code does (session_manager_connection.py,
#: session_manager.py, session.py), and must agree.
CLIENT_FRAMES: list[tuple[ControlMessage, str]] = [
    (
        Setup(16000, AudioMode.ISOLATED),
        '{"type": "setup", "data": {"sampleRate": 16000, "audioMode": "isolated"}}',
    ),
    (Setup(), '{"type": "setup", "data": {"sampleRate": 24000, "audioMode": "mixed"}}'),
    (
        SessionOpen("sess-1", "5d9c2b8e-7c1a-4f7e-9a53-0c8f6d1b2e3a"),
        '{"type": "session.open", "sessionId": "sess-1", '
        '"reqId": "5d9c2b8e-7c1a-4f7e-9a53-0c8f6d1b2e3a"}',
    ),
    (SessionReady("sess-1"), '{"type": "session.ready", "sessionId": "sess-1"}'),
    (
        SessionCreate("TELCO", "+15550003", "r-2"),
        '{"type": "session.create", "channel": "TELCO", "remoteAddress": "+15550003", '
        '"reqId": "r-2"}',
    ),
    (
        CallFlowSetup("MISSED_ONLY", True, False, True, "r-3"),
        '{"type": "call_flow.setup", "data": {"inboundCall": "MISSED_ONLY", "outboundCall": true, '
        '"inboundMessage": false, "outboundMessage": true}, "reqId": "r-3"}',
    ),
    (
        WaMessageOut("sess-2", "msg-1", "v1", {"text": "hi", "n": [1, 2.5, None]}, "r-4"),
        '{"type": "wa.msg.out", "data": {"sessionId": "sess-2", "clientMsgId": "msg-1", '
        '"apiVersion": "v1", "data": {"text": "hi", "n": [1, 2.5, null]}}, "reqId": "r-4"}',
    ),
]


@pytest.mark.parametrize(("msg", "text"), CLIENT_FRAMES, ids=lambda v: type(v).__name__)
def test_client_frames_are_byte_identical_to_the_official_client(
    msg: ControlMessage, text: str
) -> None:
    assert encode_control(msg) == text
    assert official(msg) == text


def test_client_frames_escape_as_json_dumps_defaults() -> None:
    # ensure_ascii, as json.dumps does by default: the official client's bytes, exactly.
    assert encode_control(SessionOpen("sé-☎", "r")) == (
        '{"type": "session.open", "sessionId": "s\\u00e9-\\u260e", "reqId": "r"}'
    )
    assert encode_control(SessionReady('a"b\\c')) == (
        '{"type": "session.ready", "sessionId": "a\\"b\\\\c"}'
    )


@pytest.mark.parametrize(
    ("msg", "envelope"),
    [
        (Setup(), True),
        (CallFlowSetup("NO", False, False, False, "r"), True),
        (WaMessageOut("s", "m", "v", None, "r"), True),
        (SessionOpen("s", "r"), False),
        (SessionReady("s"), False),
        (SessionCreate("TELCO", "+1", "r"), False),
    ],
    ids=lambda v: type(v).__name__,
)
def test_client_envelopes_are_mixed(msg: ControlMessage, envelope: bool) -> None:
    obj = json.loads(encode_control(msg))
    assert ("data" in obj) is envelope
    if envelope:
        assert isinstance(obj["data"], dict)
    # reqId is always top-level, never in data.
    assert "reqId" not in obj.get("data", {})
    assert ("reqId" in obj) is (not isinstance(msg, (Setup, SessionReady)))


# --- exact wire form: server -> client (compact, top level) ---------------------------------------

SERVER_FRAMES: list[tuple[ControlMessage, str]] = [
    (SetupDone("sm-1"), '{"type":"setup.done","smWsId":"sm-1"}'),
    (
        ErrorMessage("INVALID_SETUP", "sampleRate must be 8000, 16000 or 24000"),
        '{"type":"error","code":"INVALID_SETUP",'
        '"message":"sampleRate must be 8000, 16000 or 24000"}',
    ),
    (
        Response("r-1", True),
        '{"type":"response","reqId":"r-1","ok":true,"content":null,"errorCode":null,'
        '"errorContent":null}',
    ),
    (
        Response("r-2", False, None, "SESSION_BUSY", {"boundSmWsId": "sm-9"}),
        '{"type":"response","reqId":"r-2","ok":false,"content":null,"errorCode":"SESSION_BUSY",'
        '"errorContent":{"boundSmWsId":"sm-9"}}',
    ),
    (
        Response("r-3", True, {"sessionId": "sess-3", "created": True}),
        '{"type":"response","reqId":"r-3","ok":true,'
        '"content":{"sessionId":"sess-3","created":true},"errorCode":null,"errorContent":null}',
    ),
    (
        NOTIFY,
        '{"type":"session.notify","sessionId":"sess-1","channel":"TELCO",'
        '"remoteAddress":"+15550001","localAddress":"+15550002","activity":"NEW_INCOMING_CALL",'
        '"createdAt":1712345678}',
    ),
    (
        CALL_IN,
        '{"type":"call.in","sessionId":"sess-1","callId":"call-1","orgUuid":"org-1",'
        '"from":"+15550001","to":"+15550002","url":"wss://media.example/v1/agent/media/call-1",'
        f'"token":"{TOKEN}"}}',
    ),
    (
        CLOSED,
        '{"type":"session.closed","sessionId":"sess-1","reason":"CALL_TERMINATED",'
        '"detail":"CALL_UNANSWERED"}',
    ),
    (
        SessionClosed("sess-1", "SDK_REQUEST"),
        '{"type":"session.closed","sessionId":"sess-1","reason":"SDK_REQUEST"}',
    ),
    (UnknownMessage("maintenance"), '{"type":"maintenance"}'),
]


@pytest.mark.parametrize(("msg", "text"), SERVER_FRAMES, ids=lambda v: type(v).__name__)
def test_server_frames_are_compact_and_top_level(msg: ControlMessage, text: str) -> None:
    assert encode_control(msg) == text
    assert "data" not in json.loads(text)


@pytest.mark.parametrize(
    "msg",
    [
        Response("r", True),
        Response("r", False, None, "SESSION_NOT_FOUND"),
        Response("r", True, [1, 2], None, None),
        Response("r", False, 0, "X", ""),
    ],
    ids=short,
)
def test_response_always_carries_all_six_keys(msg: Response) -> None:
    obj = json.loads(encode_control(msg))
    assert list(obj) == ["type", "reqId", "ok", "content", "errorCode", "errorContent"]
    assert obj["ok"] is msg.ok


@pytest.mark.parametrize(
    ("created_at", "wire"),
    [
        (1_712_345_678, 1_712_345_678),
        (1_712_345_678.0, 1_712_345_678),
        (1_712_345_678.9, 1_712_345_678),
        (0.0, 0),
    ],
)
def test_created_at_is_encoded_as_an_integer(created_at: float, wire: int) -> None:
    # The official client's model refuses a fractional float (hosted-1.0.0.md §1.3).
    text = encode_control(SessionNotify("s", created_at=created_at))
    value = json.loads(text)["createdAt"]
    assert type(value) is int
    assert value == wire
    assert f'"createdAt":{wire}}}' in text


# --- round trips, in the role that receives each frame --------------------------------------------

CLIENT_RECEIVES: list[ControlMessage] = [
    SetupDone("sm-1"),
    SetupDone(""),
    ErrorMessage("INVALID_SETUP", "why"),
    Response("r-1", True, {"session": {"id": "s", "openedAt": 1_712_345_678}}),
    Response("r-2", False, None, "SESSION_BUSY", {"boundSmWsId": "sm-2"}),
    Response("r-3", True, [1, "two", None, 2.5, {"k": False}]),
    NOTIFY,
    SessionNotify("s", "WA", "+1", "+2", "RESUME", 0),
    SessionNotify("s", "TELCO", "", "", "SOMETHING_NEW", 1),
    CALL_IN,
    CallIn("s", "c", "ws://h/m", "t"),
    CLOSED,
    SessionClosed("s", "FORCE_CLOSE"),
    UnknownMessage("call.future"),
    UnknownMessage("setup"),
]

SERVER_RECEIVES: list[ControlMessage] = [
    *(Setup(rate, mode) for rate in (8000, 16000, 24000) for mode in AudioMode),
    *(msg for msg, _ in CLIENT_FRAMES[2:]),
    CallFlowSetup("ALL", False, True, False, "r-5"),
    WaMessageOut("s", "m", "v", None, "r-6"),
    UnknownMessage("response"),
    UnknownMessage("setup.done"),
]


@pytest.mark.parametrize("msg", CLIENT_RECEIVES, ids=short)
def test_client_round_trip(msg: ControlMessage) -> None:
    assert client_reads(encode_control(msg)) == msg


@pytest.mark.parametrize("msg", SERVER_RECEIVES, ids=short)
def test_server_round_trip(msg: ControlMessage) -> None:
    assert server_reads(encode_control(msg)) == msg


def test_frames_for_the_other_role_are_unknown_to_the_receiver() -> None:
    # PROTOCOL.md: unknown types are ignored; a receiver has no decoder for what it never gets.
    for msg, _ in CLIENT_FRAMES:
        kind = json.loads(encode_control(msg))["type"]
        assert client_reads(encode_control(msg)) == UnknownMessage(kind)
    for msg, _ in SERVER_FRAMES:
        kind = json.loads(encode_control(msg))["type"]
        assert server_reads(encode_control(msg)) == UnknownMessage(kind)


@pytest.mark.parametrize("role", list(Role), ids=str)
def test_unknown_types_decode_as_unknown_message(role: Role) -> None:
    assert decode_control(top("call.transferred", x=1), role) == UnknownMessage("call.transferred")
    assert decode_control(top("wa.msg.in", content={}), role) == UnknownMessage("wa.msg.in")


# --- client leniency ------------------------------------------------------------------------------


def test_client_reads_minimal_frames_with_defaults() -> None:
    # Missing optional fields take the official client's defaults ("" and 0).
    assert client_reads(top("setup.done")) == SetupDone("")
    assert client_reads(top("setup.done", smWsId=None)) == SetupDone("")
    assert client_reads(top("error")) == ErrorMessage("", "")
    assert client_reads(top("response", reqId="r")) == Response("r", False, None, None, None)
    assert client_reads(top("session.notify", sessionId="s")) == SessionNotify(
        "s", "", "", "", "", 0.0
    )
    assert client_reads(top("call.in", sessionId="s", callId="c", url="u", token="t")) == (
        CallIn("s", "c", "u", "t", "", "", "")
    )
    # A session.closed without a reason reads as FORCE_CLOSE, as the official client maps it.
    assert client_reads(top("session.closed", sessionId="s")) == SessionClosed(
        "s", "FORCE_CLOSE", None
    )
    assert client_reads(top("session.closed", sessionId="s", reason=None, detail=None)) == (
        SessionClosed("s", "FORCE_CLOSE", None)
    )


def test_client_ignores_unknown_fields() -> None:
    assert client_reads(top("setup.done", smWsId="sm", region="eu", features=["x"])) == (
        SetupDone("sm")
    )
    raw = json.loads(encode_control(CALL_IN))
    raw.update(direction="MT", extra={"nested": [1]})
    assert client_reads(json.dumps(raw)) == CALL_IN


def test_client_keeps_unknown_values() -> None:
    notify = client_reads(top("session.notify", sessionId="s", activity="HOLD", channel="SMS"))
    assert isinstance(notify, SessionNotify)
    assert (notify.activity, notify.channel) == ("HOLD", "SMS")
    closed = client_reads(top("session.closed", sessionId="s", reason="NEW_REASON"))
    assert closed == SessionClosed("s", "NEW_REASON")


def test_client_reads_fields_at_the_top_level_only() -> None:
    # A version-1 style envelope hides the fields: the required one is then missing.
    with pytest.raises(RemoteProtocolError, match="missing field 'sessionId'"):
        client_reads(json.dumps({"type": "session.notify", "data": {"sessionId": "s"}}))
    assert client_reads(json.dumps({"type": "setup.done", "data": {"smWsId": "x"}})) == (
        SetupDone("")
    )


@pytest.mark.parametrize(
    ("ok", "expected"),
    [
        (True, True),
        (1, True),
        ("yes", True),
        ("false", True),
        ([0], True),
        ({"a": 1}, True),
        (False, False),
        (0, False),
        ("", False),
        ([], False),
        ({}, False),
        (None, False),
    ],
    ids=short,
)
def test_response_ok_is_a_truth_value(ok: Any, expected: bool) -> None:
    msg = client_reads(top("response", reqId="r", ok=ok))
    assert isinstance(msg, Response)
    assert msg.ok is expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("SESSION_BUSY", "SESSION_BUSY"),
        ("", ""),
        (None, None),
        (404, "404"),
        (2.5, "2.5"),
        (True, "true"),
        (["X"], '["X"]'),
        ({"a": 1}, '{"a": 1}'),
        ("x" * (MAX_ID_CHARS + 50), "x" * MAX_ID_CHARS),
    ],
    ids=short,
)
def test_response_error_code_is_any_value_made_text(code: Any, expected: str | None) -> None:
    msg = client_reads(top("response", reqId="r", ok=False, errorCode=code))
    assert isinstance(msg, Response)
    assert msg.error_code == expected


def test_response_content_and_error_content_are_any_json() -> None:
    for value in (None, 0, "x", [1, {"a": None}], {"session": {"id": "s"}}):
        msg = client_reads(top("response", reqId="r", content=value, errorContent=value))
        assert isinstance(msg, Response)
        assert msg.content == value
        assert msg.error_content == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [(1_712_345_678, 1_712_345_678.0), (1_712_345_678.0, 1_712_345_678.0), (1.5, 1.5), (0, 0.0)],
)
def test_created_at_reads_as_a_number(value: float, expected: float) -> None:
    msg = client_reads(top("session.notify", sessionId="s", createdAt=value))
    assert isinstance(msg, SessionNotify)
    assert msg.created_at == expected
    assert isinstance(msg.created_at, float)


#: (frame, field, bad value, what the message says): a wrong type is an error naming frame and
#: field, even where a missing value would take a default.
CLIENT_WRONG_TYPES: list[tuple[str, str, Any, str]] = [
    ("setup.done", "smWsId", 17, "must be a string, not int"),
    ("setup.done", "smWsId", ["sm"], "must be a string, not list"),
    ("error", "code", 3, "must be a string"),
    ("error", "message", {"m": 1}, "must be a string"),
    ("response", "reqId", 7, "must be str, not int"),
    ("response", "reqId", None, "must be str, not NoneType"),
    ("session.notify", "sessionId", 1, "must be str, not int"),
    ("session.notify", "channel", 5, "must be a string"),
    ("session.notify", "remoteAddress", ["+1"], "must be a string"),
    ("session.notify", "localAddress", False, "must be a string"),
    ("session.notify", "activity", {}, "must be a string"),
    ("session.notify", "createdAt", "1712345678", "must be a number"),
    ("session.notify", "createdAt", True, "must be a number"),
    ("session.notify", "createdAt", [1], "must be a number"),
    ("call.in", "sessionId", None, "must be str, not NoneType"),
    ("call.in", "callId", 42, "must be str, not int"),
    ("call.in", "url", {"u": 1}, "must be str, not dict"),
    ("call.in", "token", 1234, "must be str, not int"),
    ("call.in", "orgUuid", 5, "must be a string"),
    ("call.in", "from", 15550001, "must be a string"),
    ("call.in", "to", True, "must be a string"),
    ("session.closed", "sessionId", 1.5, "must be str, not float"),
    ("session.closed", "reason", 3, "must be a string"),
    ("session.closed", "detail", ["x"], "must be a string"),
]

CLIENT_VALID: dict[str, dict[str, Any]] = {
    "setup.done": {"smWsId": "sm-1"},
    "error": {"code": "C", "message": "m"},
    "response": {"reqId": "r", "ok": True},
    "session.notify": {k: v for k, v in json.loads(encode_control(NOTIFY)).items() if k != "type"},
    "call.in": {k: v for k, v in json.loads(encode_control(CALL_IN)).items() if k != "type"},
    "session.closed": {"sessionId": "s", "reason": "CALL_TERMINATED", "detail": "d"},
}


@pytest.mark.parametrize("kind", list(CLIENT_VALID))
def test_client_valid_base_frames_decode(kind: str) -> None:
    assert not isinstance(client_reads(top(kind, **CLIENT_VALID[kind])), UnknownMessage)


@pytest.mark.parametrize(("kind", "key", "value", "match"), CLIENT_WRONG_TYPES)
def test_client_wrong_types_raise_naming_frame_and_field(
    kind: str, key: str, value: Any, match: str
) -> None:
    fields = dict(CLIENT_VALID[kind], **{key: value})
    with pytest.raises(RemoteProtocolError, match=match) as info:
        client_reads(top(kind, **fields))
    assert kind in str(info.value)
    assert repr(key) in str(info.value)


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("response", "reqId"),
        ("session.notify", "sessionId"),
        ("call.in", "sessionId"),
        ("call.in", "callId"),
        ("call.in", "url"),
        ("call.in", "token"),
        ("session.closed", "sessionId"),
    ],
)
def test_client_required_fields(kind: str, key: str) -> None:
    fields = dict(CLIENT_VALID[kind])
    del fields[key]
    with pytest.raises(RemoteProtocolError, match=f"{kind} frame is missing field '{key}'"):
        client_reads(top(kind, **fields))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=short)
def test_created_at_must_be_finite(value: float) -> None:
    raw = top("session.notify", sessionId="s", createdAt=value)  # NaN/Infinity: JSON extensions
    with pytest.raises(RemoteProtocolError, match="'createdAt' must be finite"):
        client_reads(raw)


def test_huge_integer_created_at_is_a_protocol_error() -> None:
    # A JSON integer beyond float range: refused as a protocol error, not an OverflowError.
    with pytest.raises(RemoteProtocolError, match="'createdAt' is out of range"):
        client_reads(top("session.notify", sessionId="s", createdAt=10**400))


@pytest.mark.parametrize("key", ["url", "token"])
def test_url_and_token_up_to_max_url_chars(key: str) -> None:
    fields = dict(CLIENT_VALID["call.in"])
    fields[key] = "x" * MAX_URL_CHARS
    msg = client_reads(top("call.in", **fields))
    assert isinstance(msg, CallIn)
    assert getattr(msg, key) == "x" * MAX_URL_CHARS
    fields[key] = "x" * (MAX_URL_CHARS + 1)
    with pytest.raises(RemoteProtocolError, match=f"'{key}' is longer than {MAX_URL_CHARS}"):
        client_reads(top("call.in", **fields))


def test_a_long_jwt_and_url_together_are_accepted() -> None:
    fields = dict(CLIENT_VALID["call.in"], url="wss://h/" + "u" * 5000, token="t" * 6000)
    assert isinstance(client_reads(top("call.in", **fields)), CallIn)


CLIENT_IDS = [
    ("setup.done", "smWsId"),
    ("error", "code"),
    ("response", "reqId"),
    ("session.notify", "sessionId"),
    ("session.notify", "remoteAddress"),
    ("session.notify", "activity"),
    ("call.in", "sessionId"),
    ("call.in", "callId"),
    ("call.in", "orgUuid"),
    ("call.in", "from"),
    ("call.in", "to"),
    ("session.closed", "sessionId"),
    ("session.closed", "reason"),
    ("session.closed", "detail"),
]


@pytest.mark.parametrize(("kind", "key"), CLIENT_IDS)
def test_client_ids_up_to_max_id_chars(kind: str, key: str) -> None:
    fields = dict(CLIENT_VALID[kind], **{key: "x" * MAX_ID_CHARS})
    client_reads(top(kind, **fields))
    fields[key] = "x" * (MAX_ID_CHARS + 1)
    with pytest.raises(RemoteProtocolError, match=f"'{key}' is longer than {MAX_ID_CHARS}"):
        client_reads(top(kind, **fields))


def test_limits_count_characters_not_escapes() -> None:
    # "é" is 6 characters of JSON escape but one character of text.
    fields = dict(CLIENT_VALID["call.in"], callId="é" * MAX_ID_CHARS)
    msg = client_reads(json.dumps({"type": "call.in", **fields}))
    assert isinstance(msg, CallIn)
    assert msg.call_id == "é" * MAX_ID_CHARS


# --- server strictness, and BadRequest ------------------------------------------------------------


def test_server_reads_setup_strictly() -> None:
    assert server_reads(json.dumps({"type": "setup", "data": {"sampleRate": 16000}})) == Setup(
        16000, AudioMode.MIXED
    )
    with pytest.raises(RemoteProtocolError, match="setup frame is missing field 'sampleRate'"):
        server_reads(top("setup"))
    # The official client's envelope is data; top-level fields are not a setup.
    with pytest.raises(RemoteProtocolError, match="missing field 'sampleRate'"):
        server_reads(top("setup", sampleRate=16000, audioMode="mixed"))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"sampleRate": "24000"}, "'sampleRate' must be int, not str"),
        ({"sampleRate": 24000.0}, "'sampleRate' must be int, not float"),
        ({"sampleRate": True}, "'sampleRate' must be int, not bool"),
        ({"sampleRate": None}, "'sampleRate' must be int, not NoneType"),
        ({"sampleRate": 44100}, "sample_rate must be one of 8000, 16000, 24000"),
        ({"sampleRate": 0}, "sample_rate must be one of"),
        ({"sampleRate": 24000, "audioMode": 1}, "'audioMode' must be str, not int"),
        ({"sampleRate": 24000, "audioMode": None}, "'audioMode' must be str"),
        ({"sampleRate": 24000, "audioMode": "stereo"}, "'stereo' is not a valid AudioMode"),
        ([24000], "'data' must be an object"),
        ("24000", "'data' must be an object"),
    ],
    ids=short,
)
def test_server_refuses_a_bad_setup(data: Any, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        server_reads(json.dumps({"type": "setup", "data": data}))
    # Not a request: there is nothing to answer, so never a BadRequest.
    assert not isinstance(info.value, BadRequest)
    assert "setup" in str(info.value)


SERVER_VALID: dict[str, dict[str, Any]] = {
    kind: {k: v for k, v in json.loads(encode_control(msg)).items() if k != "type"}
    for msg, _ in CLIENT_FRAMES[2:]
    for kind in [json.loads(encode_control(msg))["type"]]
}


@pytest.mark.parametrize("kind", list(SERVER_VALID))
def test_server_valid_base_frames_decode(kind: str) -> None:
    assert not isinstance(server_reads(top(kind, **SERVER_VALID[kind])), UnknownMessage)


#: Stands for "no such field" in :data:`BAD_REQUESTS`.
class _Delete:
    def __repr__(self) -> str:
        return "DELETE"


DELETE: Any = _Delete()

#: The four requests, each answered by one response.
REQUEST_KINDS = ["session.open", "session.create", "call_flow.setup", "wa.msg.out"]

#: (request type, path to the field, bad value or DELETE, what the message says).
BAD_REQUESTS: list[tuple[str, tuple[str, ...], Any, str]] = [
    ("session.open", ("sessionId",), DELETE, "missing field 'sessionId'"),
    ("session.open", ("sessionId",), 5, "'sessionId' must be str, not int"),
    ("session.open", ("sessionId",), "x" * (MAX_ID_CHARS + 1), "'sessionId' is longer than"),
    ("session.create", ("channel",), DELETE, "missing field 'channel'"),
    ("session.create", ("channel",), ["TELCO"], "'channel' must be str, not list"),
    ("session.create", ("remoteAddress",), DELETE, "missing field 'remoteAddress'"),
    ("session.create", ("remoteAddress",), 15550003, "'remoteAddress' must be str, not int"),
    ("call_flow.setup", ("data",), DELETE, "missing field 'inboundCall'"),
    ("call_flow.setup", ("data",), [1], "'data' must be an object"),
    ("call_flow.setup", ("data", "inboundCall"), DELETE, "missing field 'inboundCall'"),
    ("call_flow.setup", ("data", "inboundCall"), 1, "'inboundCall' must be str, not int"),
    ("call_flow.setup", ("data", "outboundCall"), 1, "'outboundCall' must be bool, not int"),
    ("call_flow.setup", ("data", "inboundMessage"), "no", "'inboundMessage' must be bool"),
    ("call_flow.setup", ("data", "outboundMessage"), None, "'outboundMessage' must be bool"),
    ("wa.msg.out", ("data",), "x", "'data' must be an object"),
    ("wa.msg.out", ("data", "sessionId"), 5, "'sessionId' must be a string"),
    ("wa.msg.out", ("data", "clientMsgId"), [], "'clientMsgId' must be a string"),
    ("wa.msg.out", ("data", "apiVersion"), 2, "'apiVersion' must be a string"),
]


def _broken(kind: str, path: tuple[str, ...], value: Any) -> str:
    obj: dict[str, Any] = {"type": kind, **json.loads(json.dumps(SERVER_VALID[kind]))}
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(obj)


@pytest.mark.parametrize(("kind", "path", "value", "match"), BAD_REQUESTS, ids=short)
def test_an_unreadable_request_is_a_bad_request_with_its_id(
    kind: str, path: tuple[str, ...], value: Any, match: str
) -> None:
    raw = _broken(kind, path, value)
    with pytest.raises(BadRequest, match=match) as info:
        server_reads(raw)
    assert info.value.req_id == SERVER_VALID[kind]["reqId"]
    assert kind in str(info.value)
    assert isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize("kind", REQUEST_KINDS)
@pytest.mark.parametrize(
    "req_id",
    [DELETE, None, 5, ["r"], "x" * (MAX_ID_CHARS + 1)],
    ids=["missing", "null", "int", "list", "long"],
)
def test_a_request_without_a_usable_req_id_cannot_be_answered(kind: str, req_id: Any) -> None:
    raw = _broken(kind, ("reqId",), req_id)
    with pytest.raises(RemoteProtocolError, match="'reqId'") as info:
        server_reads(raw)
    assert not isinstance(info.value, BadRequest)


def test_call_flow_flags_default_to_false() -> None:
    raw = json.dumps({"type": "call_flow.setup", "data": {"inboundCall": "NO"}, "reqId": "r"})
    assert server_reads(raw) == CallFlowSetup("NO", False, False, False, "r")


def test_session_ready_is_strict_and_not_a_request() -> None:
    with pytest.raises(RemoteProtocolError, match="missing field 'sessionId'") as info:
        server_reads(top("session.ready"))
    assert not isinstance(info.value, BadRequest)
    with pytest.raises(RemoteProtocolError, match="'sessionId' must be str"):
        server_reads(top("session.ready", sessionId=1, reqId="r"))


def test_server_ignores_unknown_fields() -> None:
    raw = top("session.open", sessionId="s", reqId="r", hint="x", data={"y": 1})
    assert server_reads(raw) == SessionOpen("s", "r")


# --- malformed text frames, both roles ------------------------------------------------------------


MALFORMED: list[tuple[str, str]] = [
    ("", "not valid JSON"),
    ("{", "not valid JSON"),
    ("{'type': 'setup'}", "not valid JSON"),
    ("[1, 2]", "must be a JSON object, not list"),
    ('"setup"', "must be a JSON object, not str"),
    ("42", "must be a JSON object, not int"),
    ("null", "must be a JSON object, not NoneType"),
    ("{}", "no string 'type'"),
    ('{"type": 7}', "no string 'type'"),
    ('{"type": null}', "no string 'type'"),
    ('{"type": ["setup"]}', "no string 'type'"),
    ("[" * 100_000, "exceeds MAX_TEXT_MESSAGE_CHARS"),
]


@pytest.mark.parametrize(("raw", "match"), MALFORMED, ids=lambda v: v[:20])
@pytest.mark.parametrize("role", list(Role), ids=str)
def test_malformed_text_frames(raw: str, match: str, role: Role) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        decode_control(raw, role)
    with pytest.raises(RemoteProtocolError, match=match):
        decode_media(raw, role)


@pytest.mark.parametrize("role", list(Role), ids=str)
def test_deeply_nested_json_is_a_protocol_error(role: Role) -> None:
    raw = "[" * 50_000 + "]" * 10_000
    assert len(raw) <= MAX_TEXT_MESSAGE_CHARS
    with pytest.raises(RemoteProtocolError, match="not valid JSON"):
        decode_control(raw, role)


def test_text_frame_size_limit_boundary() -> None:
    head = '{"type":"setup.done","smWsId":"c"}'
    at_limit = head + " " * (MAX_TEXT_MESSAGE_CHARS - len(head))
    assert client_reads(at_limit) == SetupDone("c")
    with pytest.raises(RemoteProtocolError, match=f"{MAX_TEXT_MESSAGE_CHARS + 1} characters"):
        client_reads(at_limit + " ")


@pytest.mark.parametrize("raw", [b"", b"\x00\x01\x02", b"{}", bytearray(b"{}")], ids=short)
@pytest.mark.parametrize("role", list(Role), ids=str)
def test_binary_frames_are_refused_on_the_control_connection(role: Role, raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="binary frames are not allowed"):
        decode_control(raw, role)
