"""Property tests: both codecs and both protocol objects of both roles, fed arbitrary text, bytes,
JSON and orderings, fail only with RemoteProtocolError, round-trip every message, and keep their
correlation and credit invariants."""

from __future__ import annotations

import contextlib
import json
import string
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from telcoflow._core import (
    MAX_AUDIO_PAYLOAD_BYTES,
    MAX_CREDIT_GRANT_BYTES,
    MAX_ID_CHARS,
    MAX_TIMEOUT_MS,
    MAX_URL_CHARS,
    AgentAudioReceived,
    AudioFrame,
    AudioMode,
    BadRequest,
    BufferRequest,
    CallErrorEvent,
    CallFlowSetup,
    CallIn,
    CallState,
    CallTerminatedEvent,
    Command,
    CommandCompleted,
    CommandRequest,
    CommandResponse,
    ControlEvent,
    ControlMessage,
    ControlProtocol,
    ControlRequest,
    ControlState,
    ErrorMessage,
    LocalProtocolError,
    MediaEvent,
    MediaMessage,
    MediaProtocol,
    MessageIgnored,
    RemoteProtocolError,
    RequestCompleted,
    Response,
    Role,
    SessionClosed,
    SessionCreate,
    SessionNotify,
    SessionOpen,
    SessionReady,
    Setup,
    SetupDone,
    UnknownCallEvent,
    UnknownMessage,
    WaMessageOut,
    decode_audio,
    decode_control,
    decode_media,
    encode_audio,
    encode_control,
    encode_media,
    frame_bytes_for,
    state_after,
)

from ._support import counter, official, official_command, ready_pair

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FEW = settings(SETTINGS, max_examples=60)

CONTROL_EVENTS: tuple[type, ...] = get_args(ControlEvent)
MEDIA_EVENTS: tuple[type, ...] = get_args(MediaEvent)
assert RequestCompleted in CONTROL_EVENTS
assert Response in CONTROL_EVENTS
assert AgentAudioReceived in MEDIA_EVENTS
assert CommandCompleted in MEDIA_EVENTS


def _outcome(
    proto: ControlProtocol | MediaProtocol, raw: str | bytes
) -> tuple[object, RemoteProtocolError | None]:
    """What ``receive`` did: an event, or a RemoteProtocolError. Anything else escapes, and
    fails the test: the invariant is narrowed to RemoteProtocolError, not ProtocolError."""
    try:
        return proto.receive(raw), None
    except RemoteProtocolError as exc:
        return None, exc


# --- strategies for arbitrary input ---------------------------------------------------------------

CONTROL_TYPES = [
    "setup",
    "setup.done",
    "error",
    "response",
    "session.notify",
    "call.in",
    "session.closed",
    "session.open",
    "session.ready",
    "session.create",
    "call_flow.setup",
    "wa.msg.out",
]
MEDIA_TYPES = ["command", "command_response", "call_event", "buffer_request"]
KNOWN_TYPES = CONTROL_TYPES + MEDIA_TYPES

FIELD_NAMES = [
    # control plane
    "smWsId",
    "code",
    "message",
    "reqId",
    "ok",
    "content",
    "errorCode",
    "errorContent",
    "sessionId",
    "channel",
    "remoteAddress",
    "localAddress",
    "activity",
    "createdAt",
    "callId",
    "orgUuid",
    "from",
    "to",
    "url",
    "token",
    "reason",
    "detail",
    "sampleRate",
    "audioMode",
    "inboundCall",
    "outboundCall",
    "inboundMessage",
    "outboundMessage",
    "clientMsgId",
    "apiVersion",
    "data",
    # media plane
    "command_id",
    "command",
    "timeout_ms",
    "success",
    "result",
    "error_code",
    "error_message",
    "event",
    "requested_bytes",
    "prefer_audio_frame_bytes",
    "channelId",
]

#: Values a frame is likely to contain, so that generated frames often get past the first
#: check; "r1", "r2", "c1", "c2" are the ids of requests and commands pending in the objects.
PLAUSIBLE = st.sampled_from(
    [
        0,
        1,
        2,
        -1,
        960,
        961,
        24000,
        8000,
        10_000,
        MAX_CREDIT_GRANT_BYTES + 1,
        True,
        False,
        None,
        "",
        "r1",
        "r2",
        "c1",
        "c2",
        "sess-1",
        "mixed",
        "isolated",
        "ALL",
        "TELCO",
        "call.terminated",
        "call.error",
        "call.answer",
        "x" * (MAX_ID_CHARS + 1),
        float("nan"),
        float("inf"),
        1.5,
        960.0,
    ]
)

#: Integers a float cannot hold: JSON allows them, and a decoder must refuse them cleanly.
HUGE_INTS = st.sampled_from([10**400, -(10**400), 2**1024])

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | HUGE_INTS
    | st.floats()
    | st.text(max_size=20)
    | PLAUSIBLE
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
fields = st.dictionaries(
    st.sampled_from(FIELD_NAMES) | st.text(max_size=8), json_values | PLAUSIBLE, max_size=10
)
frame_types = st.sampled_from(KNOWN_TYPES) | st.text(max_size=16)


def _frame(kind: Any, top: dict[str, Any], data: Any, shape: int) -> str:
    """A frame of ``kind`` with fields at the top level (server control frames, requests),
    in ``data`` (setup, call_flow.setup, wa.msg.out, the media plane), or both."""
    obj: dict[str, Any] = {"type": kind}
    if shape in (0, 2):
        obj.update(top)
        obj["type"] = kind
    if shape in (1, 2):
        obj["data"] = data
    return json.dumps(obj)


shaped_frames = st.builds(
    _frame, frame_types, fields, fields | json_values, st.integers(0, 2)
) | st.builds(_frame, json_values, fields, fields, st.integers(0, 2))
json_frames = st.builds(json.dumps, json_values)
any_frames = st.one_of(
    shaped_frames,
    shaped_frames,
    json_frames,
    st.text(max_size=200),
    st.binary(max_size=200),
    st.builds(lambda ch, n: bytes([ch]) + bytes(n), st.integers(0, 255), st.integers(0, 2000)),
)
frame_lists = st.lists(any_frames, min_size=1, max_size=8)
roles = st.sampled_from(list(Role))
steps = st.integers(0, 3)


def _control(role: Role, steps: int) -> ControlProtocol:
    """A control protocol of ``role``: 0 IDLE, 1 SETUP, 2 READY with requests r1 and r2
    awaiting responses, 3 CLOSED."""
    client = ControlProtocol(Role.CLIENT, new_id=counter("r"))
    server = ControlProtocol(Role.SERVER)
    if steps >= 1:
        server.receive(client.send(Setup()))
    if steps >= 2:
        client.receive(server.send(SetupDone("sm-1")))
        for req in (SessionOpen("sess-1", "r1"), SessionCreate("TELCO", "+1", "r2")):
            server.receive(client.send(req))
    proto = client if role is Role.CLIENT else server
    if steps >= 3:
        proto.connection_lost()
    return proto


def _media(role: Role, steps: int) -> MediaProtocol:
    """A media protocol of ``role`` with commands c1.. open and some credit; 3: terminated."""
    proto = MediaProtocol(role, new_id=counter("c"))
    if role is Role.CLIENT:
        for command in list(Command)[:steps]:
            proto.command(command, 10_000)
        proto.receive(encode_media(BufferRequest(960 * steps, 2 * steps)))
        if steps >= 3:
            proto.terminate_locally()
    else:
        proto.grant(960 * steps)
        for n in range(steps):
            proto.receive(encode_media(CommandRequest(f"c{n + 1}", "call.answer", 10_000)))
        if steps >= 3:
            proto.terminate("agent_close")
    return proto


#: A session.notify whose createdAt no float can hold.
HUGE_CREATED_AT = json.dumps({"type": "session.notify", "sessionId": "s", "createdAt": 10**400})
#: Deep, but not too deep for json.loads: every value is then made text or checked.
DEEP = "[" * 900 + "]" * 900


@SETTINGS
@given(role=roles, steps=steps, frames=frame_lists)
@example(role=Role.CLIENT, steps=2, frames=[HUGE_CREATED_AT])
@example(
    role=Role.CLIENT, steps=2, frames=[f'{{"type":"response","reqId":"r1","errorCode":{DEEP}}}']
)
@example(role=Role.SERVER, steps=2, frames=['{"type":"session.open","reqId":"r3"}'] * 2)
@example(role=Role.SERVER, steps=1, frames=['{"type":"session.open","reqId":"r3"}'])
def test_control_receive_returns_an_event_or_raises_remote_protocol_error(
    role: Role, steps: int, frames: list[str | bytes]
) -> None:
    proto = _control(role, steps)
    for raw in frames:
        before = proto.pending()
        result, error = _outcome(proto, raw)
        if error is not None:
            assert str(error)
            if not isinstance(error, BadRequest):
                assert proto.pending() == before
            continue
        assert isinstance(result, CONTROL_EVENTS)
        assert isinstance(proto.state, ControlState)
        if isinstance(result, RequestCompleted):
            assert result.request.req_id == result.response.req_id
            assert result.request.req_id not in proto.pending()
        assert all(isinstance(req_id, str) for req_id in proto.pending())


@SETTINGS
@given(role=roles, steps=steps, frames=frame_lists)
@example(role=Role.CLIENT, steps=1, frames=[f'{{"type":"call_event","data":{{"event":{DEEP}}}}}'])
@example(
    role=Role.CLIENT, steps=1, frames=['{"type":"buffer_request","data":{"requested_bytes":1e300}}']
)
def test_media_receive_returns_an_event_or_raises_remote_protocol_error(
    role: Role, steps: int, frames: list[str | bytes]
) -> None:
    proto = _media(role, steps)
    for raw in frames:
        before = proto.credit
        result, error = _outcome(proto, raw)
        if error is not None:
            assert str(error)
            assert proto.credit == before  # a refused frame changes no accounting
            continue
        assert isinstance(result, MEDIA_EVENTS)
        assert proto.credit >= 0
        # Credit moves only with a grant (client), received audio (server) or the end.
        if isinstance(result, BufferRequest) and role is Role.CLIENT:
            assert proto.credit == before + result.requested_bytes
        elif isinstance(result, AgentAudioReceived):
            assert isinstance(raw, bytes)
            assert len(result.pcm) + result.excess_bytes == len(raw) - 1
            assert proto.credit == before - len(result.pcm)
        elif isinstance(result, CallTerminatedEvent):
            assert proto.credit == 0
        else:
            assert proto.credit == before


@pytest.mark.parametrize("role", list(Role), ids=str)
@SETTINGS
@given(raw=st.text() | st.binary() | shaped_frames)
@example(raw="[" * 5000)
@example(raw='{"type":"setup","data":' + "[" * 5000 + "]" * 5000 + "}")
def test_decoders_fail_only_with_remote_protocol_errors(role: Role, raw: str | bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        assert isinstance(decode_control(raw, role), get_args(ControlMessage))
    with contextlib.suppress(RemoteProtocolError):
        assert isinstance(decode_media(raw, role), get_args(MediaMessage))
    if isinstance(raw, bytes):
        with contextlib.suppress(RemoteProtocolError):
            assert isinstance(decode_audio(raw), AudioFrame)


# --- a client media connection under arbitrary orderings of server frames -------------------------

REASONS = ["caller_hangup", "callee_hangup", "agent_close", "agent_disconnect", "media_lost", None]

_OPERATIONS = {
    "command": st.tuples(st.just("command"), st.sampled_from(list(Command))),
    # Respond to the n-th command sent (modulo how many there are): usually an open one.
    "respond": st.tuples(
        st.just("respond"), st.integers(0, 20), st.sampled_from([True, False, 1, 0, "yes", ""])
    ),
    "respond_unknown": st.tuples(st.just("respond_unknown"), st.text(max_size=5), st.booleans()),
    "grant": st.tuples(
        st.just("grant"),
        st.integers(-10, 5000) | st.sampled_from([None, "960", 960.0, 0.5]),
        # Half of them unsaid (missing, 0, 1, negative): 20 ms at our rate then.
        st.integers(2, 1300) | st.sampled_from([None, 0, 1, -2, 320.0, 641, 10**9]),
        st.sampled_from([0, 0, 0, 1, 2, None]),
    ),
    "take": st.tuples(st.just("take"), st.integers(0, 6000), st.none() | st.integers(0, 10)),
    "terminated": st.tuples(st.just("terminated"), st.sampled_from(REASONS)),
    "lost": st.just(("lost",)),
    "call_error": st.just(("call_error",)),
    "unknown_event": st.just(("unknown_event",)),
    "audio": st.tuples(st.just("audio"), st.integers(0, 255), st.integers(1, 500)),
    "forget": st.tuples(st.just("forget"), st.integers(0, 20)),
}
#: Kinds repeated to weigh them: commands, responses, grants and takes make the interesting
#: sequences; an early end of the call would leave the rest of a sequence with little to do.
_WEIGHTED_KINDS = [
    *["command"] * 4,
    *["respond"] * 4,
    *["grant"] * 3,
    *["take"] * 3,
    "respond_unknown",
    "terminated",
    "lost",
    "call_error",
    "unknown_event",
    "audio",
    "forget",
]
operations = st.sampled_from(_WEIGHTED_KINDS).flatmap(_OPERATIONS.__getitem__)


def _whole(value: Any) -> int:
    """How the client reads a buffer_request number (``int(x or 0)`` for whole numbers)."""
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, float):
        return int(value) if value.is_integer() else 0
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text[:1] in "+-" else text
        return int(text) if digits.isdigit() and len(digits) <= 18 else 0
    return value if isinstance(value, int) else 0


def _allowed_after(before: CallState, event: Any) -> set[CallState]:
    """The states the client may be in after ``event``, given PROTOCOL.md's table."""
    if before is CallState.DISCONNECTED or isinstance(event, CallTerminatedEvent):
        return {CallState.DISCONNECTED}
    if isinstance(event, CommandCompleted) and event.response.success:
        # The server is the authority on close/disconnect: a success takes the agent out.
        if event.command in (Command.CLOSE, Command.DISCONNECT):
            return {CallState.DISCONNECTED}
        states: set[CallState] = {before}
        with contextlib.suppress(LocalProtocolError):
            states.add(state_after(before, event.command))
        return states
    return {before}


@SETTINGS
@given(
    ops=st.lists(operations, min_size=5, max_size=80), rate=st.sampled_from([8000, 16000, 24000])
)
@example(ops=[("grant", 1000, 640, 0), ("grant", 1000, None, 0), ("take", 3000, None)], rate=8000)
def test_client_media_invariants_under_arbitrary_orderings(
    ops: list[tuple[Any, ...]], rate: int
) -> None:
    proto = MediaProtocol(Role.CLIENT, sample_rate=rate)
    buffer = bytearray()
    granted = taken = 0
    frame = frame_bytes_for(rate)
    sent: dict[str, Command] = {}
    open_ids: set[str] = set()
    terminated = False

    for op in ops:
        before = proto.call_state
        event: Any = None
        match op:
            case ("command", command):
                if terminated:
                    with pytest.raises(LocalProtocolError):
                        proto.command(command, 10_000)
                    continue
                cid, _ = proto.command(command, 10_000)
                assert cid not in sent
                sent[cid] = command
                open_ids.add(cid)
            case ("respond", int(n), success) | ("respond_unknown", str(n), success):
                if isinstance(n, int):
                    cid = list(sent)[n % len(sent)] if sent else "c1"
                else:
                    cid = f"x{n}"
                data = {"command_id": cid, "success": success, "error_code": None}
                event = proto.receive(json.dumps({"type": "command_response", "data": data}))
                if cid in open_ids:
                    open_ids.discard(cid)
                    assert isinstance(event, CommandCompleted)
                    assert event.command is sent[cid]
                    assert event.response.success is bool(success)
                    assert event.state is proto.call_state
                else:
                    assert isinstance(event, MessageIgnored)
            case ("grant", requested, prefer, channel):
                data = {"requested_bytes": requested, "prefer_audio_frame_bytes": prefer}
                if channel is not None:
                    data["channelId"] = channel
                event = proto.receive(json.dumps({"type": "buffer_request", "data": data}))
                amount = max(_whole(requested), 0)
                if (channel or 0) == 0 and not terminated and amount > 0:
                    want = min(max(_whole(prefer), 0), MAX_AUDIO_PAYLOAD_BYTES) & ~1
                    assert event == BufferRequest(amount, want, 0)
                    granted += amount
                    frame = want or frame_bytes_for(rate)
                else:
                    assert isinstance(event, MessageIgnored)
            case ("terminated", reason):
                data = {"event": "call.terminated"}
                if reason is not None:
                    data["reason"] = reason
                event = proto.receive(json.dumps({"type": "call_event", "data": data}))
                assert event == CallTerminatedEvent(reason or "unknown")
                terminated = True
                open_ids.clear()
            case ("lost",):
                proto.terminate_locally()
                terminated = True
                open_ids.clear()
            case ("call_error",):
                event = proto.receive(encode_media(CallErrorEvent("X", "y")))
                assert isinstance(event, CallErrorEvent)
            case ("unknown_event",):
                event = proto.receive(encode_media(UnknownCallEvent("call.hold")))
                assert isinstance(event, UnknownCallEvent)
            case ("audio", channel, size):
                pcm = b"\x01" * size
                assert proto.receive(bytes([channel]) + pcm) == AudioFrame(channel, pcm)
            case ("take", more, max_frames):
                buffer.extend(b"\x02\x00" * (more // 2) + b"\x03" * (more % 2))
                credit, queued = proto.credit, len(buffer)
                assert proto.frame_bytes == frame
                frames = proto.take_audio(buffer, max_frames)
                payloads = [f[1:] for f in frames]
                total = sum(map(len, payloads))
                expected = min(credit, queued) & ~1
                if max_frames is not None:
                    expected = min(expected, max_frames * frame)
                    assert len(frames) <= max_frames
                assert total == expected
                assert len(buffer) == queued - total
                assert all(f[:1] == b"\x00" for f in frames)
                assert all(len(p) % 2 == 0 and 0 < len(p) <= frame for p in payloads)
                assert all(len(p) == frame for p in payloads[:-1])
                taken += total
            case ("forget", n):
                cid = list(sent)[n % len(sent)] if sent else "c1"
                proto.forget_command(cid)
                open_ids.discard(cid)
            case _:  # pragma: no cover
                raise AssertionError(op)

        assert proto.credit >= 0
        assert taken <= granted
        if terminated:
            assert proto.credit == 0  # a terminated call sends nothing more
            assert proto.call_state is CallState.DISCONNECTED
        else:
            assert proto.credit == granted - taken
        assert set(proto.open_command_ids()) == open_ids
        assert proto.terminated is terminated
        if op[0] == "lost":
            assert proto.call_state is CallState.DISCONNECTED
        else:
            assert proto.call_state in _allowed_after(before, event)


# --- a server media connection under arbitrary agent behaviour ------------------------------------

_SERVER_OPS = st.one_of(
    st.tuples(st.just("grant"), st.integers(0, 4000)),
    st.tuples(st.just("audio"), st.integers(1, 3000)),
    st.tuples(st.just("command"), st.integers(0, 5)),
    st.tuples(st.just("respond"), st.integers(0, 5)),
)


@SETTINGS
@given(ops=st.lists(_SERVER_OPS, min_size=1, max_size=60))
def test_server_media_accounting(ops: list[tuple[str, int]]) -> None:
    proto = MediaProtocol(Role.SERVER)
    granted = accepted = excess = 0
    open_ids: set[str] = set()
    for kind, n in ops:
        match kind:
            case "grant":
                proto.grant(n)
                granted += n
            case "audio":
                event = proto.receive(b"\x00" + bytes(n))
                assert isinstance(event, AgentAudioReceived)
                assert len(event.pcm) + event.excess_bytes == n
                # Bytes beyond credit are counted only once the credit is gone.
                assert event.excess_bytes == 0 or proto.credit == 0
                accepted += len(event.pcm)
                excess += event.excess_bytes
            case "command":
                raw = encode_media(CommandRequest(f"c{n}", "call.answer", 10_000))
                if f"c{n}" in open_ids:
                    with pytest.raises(RemoteProtocolError, match="reused while open"):
                        proto.receive(raw)
                else:
                    assert isinstance(proto.receive(raw), CommandRequest)
                    open_ids.add(f"c{n}")
            case "respond":
                if f"c{n}" in open_ids:
                    proto.respond(f"c{n}", True)
                    open_ids.discard(f"c{n}")
                else:
                    with pytest.raises(LocalProtocolError, match="not open"):
                        proto.respond(f"c{n}", True)
        assert proto.credit == granted - accepted >= 0
        assert set(proto.open_command_ids()) == open_ids
    assert accepted + excess == sum(n for kind, n in ops if kind == "audio")


# --- a control connection under arbitrary orderings of requests and responses ---------------------

_CONTROL_OPS = st.one_of(
    st.tuples(st.just("request"), st.integers(0, 3)),
    st.tuples(st.just("request"), st.integers(0, 3)),
    st.tuples(st.just("answer"), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("answer"), st.integers(0, 30), st.booleans()),
    st.tuples(st.just("replay"), st.integers(0, 30)),
    st.tuples(st.just("forged"), st.text(max_size=6)),
    st.tuples(st.just("forget"), st.integers(0, 30)),
    st.tuples(st.just("bad"), st.integers(0, 3)),
    st.tuples(st.just("push"), st.integers(0, 3)),
    st.tuples(st.just("ready"), st.text(max_size=6)),
)

_BAD_FRAMES = [
    '{{"type":"session.open","reqId":"{}"}}',
    '{{"type":"session.create","reqId":"{}","channel":5}}',
    '{{"type":"call_flow.setup","reqId":"{}","data":[]}}',
    '{{"type":"wa.msg.out","reqId":"{}","data":{{"sessionId":1}}}}',
]


def _request(kind: int, req_id: str) -> ControlRequest:
    made: list[ControlRequest] = [
        SessionOpen("sess-1", req_id),
        SessionCreate("TELCO", "+15550003", req_id),
        CallFlowSetup("ALL", True, False, False, req_id),
        WaMessageOut("sess-1", "m", "v1", {"n": kind}, req_id),
    ]
    return made[kind]


_PUSHES: list[ControlMessage] = [
    SessionNotify("sess-1", "TELCO", "+1", "+2", "RESUME", 5),
    CallIn("sess-1", "call-1", "ws://h/m", "t"),
    SessionClosed("sess-1", "CALL_TERMINATED"),
    ErrorMessage("X", "y"),
]


@SETTINGS
@given(ops=st.lists(_CONTROL_OPS, min_size=1, max_size=60))
def test_control_correlation_under_arbitrary_orderings(ops: list[tuple[Any, ...]]) -> None:
    client, server = ready_pair()
    client_pending: dict[str, ControlRequest] = {}  # sent and awaited, in send order
    server_pending: dict[str, ControlRequest | None] = {}  # received, not answered
    answered: list[str] = []  # response texts delivered, to replay
    completed: set[str] = set()
    for op in ops:
        match op:
            case ("request", kind):
                req = _request(kind, client.new_request_id())
                assert server.receive(client.send(req)) == req
                client_pending[req.req_id] = req
                server_pending[req.req_id] = req
            case ("answer", n, ok):
                if not server_pending:
                    continue
                req_id = list(server_pending)[n % len(server_pending)]
                del server_pending[req_id]
                text = server.send(Response(req_id, ok, {"n": n}, None if ok else "X", None))
                answered.append(text)
                event = client.receive(text)
                if req_id in client_pending:
                    assert isinstance(event, RequestCompleted)
                    assert event.request is client_pending.pop(req_id)
                    assert event.response.ok is ok
                    assert req_id not in completed
                    completed.add(req_id)
                else:
                    assert isinstance(event, MessageIgnored)
            case ("replay", n):
                if answered:
                    # Duplicates and late answers: each request completes at most once.
                    assert isinstance(client.receive(answered[n % len(answered)]), MessageIgnored)
            case ("forged", suffix):
                event = client.receive(encode_control(Response(f"x{suffix}", True)))
                assert isinstance(event, MessageIgnored)
            case ("forget", n):
                if client_pending:
                    client.forget(list(client_pending)[n % len(client_pending)])
                    client_pending.pop(list(client_pending)[n % len(client_pending)])
            case ("bad", kind):
                req_id = f"bad-{len(server_pending)}-{kind}-{len(answered)}"
                with pytest.raises(BadRequest) as info:
                    server.receive(_BAD_FRAMES[kind].format(req_id))
                assert info.value.req_id == req_id
                server_pending[req_id] = None
            case ("push", n):
                assert client.receive(server.send(_PUSHES[n])) == _PUSHES[n]
            case ("ready", session_id):
                assert server.receive(client.send(SessionReady(session_id))) == SessionReady(
                    session_id
                )
            case _:  # pragma: no cover
                raise AssertionError(op)
        assert client.pending() == list(client_pending)
        assert server.pending() == list(server_pending)
        assert client.state is server.state is ControlState.READY
    assert client.connection_lost() == list(client_pending.values())
    assert server.connection_lost() == [r for r in server_pending.values() if r is not None]
    assert client.state is server.state is ControlState.CLOSED
    assert client.pending() == server.pending() == []


# --- encode/decode round trips, every message both ways -------------------------------------------

ids = st.text(max_size=MAX_ID_CHARS)
#: URLs and JWTs are ASCII; at 8 KiB each a call.in still fits in one text frame.
long_ascii = st.text(
    alphabet=string.ascii_letters + string.digits + "-_.:/?=&%~", max_size=MAX_URL_CHARS
)
short_text = st.text(max_size=40)
finite = st.floats(allow_nan=False, allow_infinity=False)
plain_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | finite | short_text,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(short_text, children, max_size=3)
    ),
    max_leaves=8,
)
pcm = st.binary(min_size=1, max_size=400)
seconds = st.integers(0, 2**53)  # whole seconds: createdAt is an integer on the wire

client_control = st.one_of(
    st.builds(SetupDone, ids),
    st.builds(ErrorMessage, ids, ids),
    st.builds(Response, ids, st.booleans(), plain_json, st.none() | ids, plain_json),
    st.builds(SessionNotify, ids, ids, ids, ids, ids, seconds),
    st.builds(CallIn, ids, ids, long_ascii, long_ascii, ids, ids, ids),
    st.builds(SessionClosed, ids, ids, st.none() | ids),
    ids.filter(lambda t: t not in CONTROL_TYPES[:7]).map(UnknownMessage),
)
server_control = st.one_of(
    st.builds(Setup, st.sampled_from([8000, 16000, 24000]), st.sampled_from(AudioMode)),
    st.builds(SessionOpen, ids, ids),
    st.builds(SessionReady, ids),
    st.builds(SessionCreate, ids, ids, ids),
    st.builds(CallFlowSetup, ids, st.booleans(), st.booleans(), st.booleans(), ids),
    st.builds(WaMessageOut, ids, ids, ids, plain_json, ids),
    ids.filter(lambda t: t not in [*CONTROL_TYPES[7:], "setup"]).map(UnknownMessage),
)
client_media = st.one_of(
    st.builds(
        CommandResponse,
        ids,
        st.booleans(),
        plain_json,
        st.none() | ids,
        st.none() | st.text(max_size=4096),
    ),
    st.builds(CallTerminatedEvent, st.text(min_size=1, max_size=MAX_ID_CHARS)),
    ids.filter(lambda e: e not in ("call.terminated", "call.error")).map(UnknownCallEvent),
    st.builds(
        BufferRequest,
        st.integers(0, MAX_CREDIT_GRANT_BYTES),
        st.integers(0, MAX_AUDIO_PAYLOAD_BYTES // 2).map(lambda n: 2 * n),
        st.integers(-(2**31), 2**31),
    ),
    st.builds(AudioFrame, st.integers(0, 255), pcm),
    ids.filter(lambda t: t not in MEDIA_TYPES[1:]).map(UnknownMessage),
)
server_media = st.one_of(
    st.builds(
        CommandRequest,
        ids,
        st.sampled_from([c.value for c in Command]) | ids,
        st.integers(0, MAX_TIMEOUT_MS),
        st.none() | st.dictionaries(short_text, plain_json, max_size=3),
    ),
    st.builds(AudioFrame, st.just(0), pcm),
    ids.filter(lambda t: t != "command").map(UnknownMessage),
)

BIG_CALL_IN = CallIn(
    "s" * MAX_ID_CHARS, "c", "u" * MAX_URL_CHARS, "t" * MAX_URL_CHARS, "o", "f", "t"
)


def _wire(msg: MediaMessage) -> str | bytes:
    return encode_audio(msg.channel, msg.pcm) if isinstance(msg, AudioFrame) else encode_media(msg)


@SETTINGS
@given(msg=client_control)
@example(msg=BIG_CALL_IN)
def test_control_round_trip_client_receives(msg: ControlMessage) -> None:
    assert decode_control(encode_control(msg), Role.CLIENT) == msg
    if not isinstance(msg, (SetupDone, Response, UnknownMessage)):
        # Through the protocol objects too (a response needs a request: see the ordering
        # test; a server sends no unknown types).
        client, server = ready_pair()
        assert client.receive(server.send(msg)) == msg


@SETTINGS
@given(msg=server_control)
def test_control_round_trip_server_receives(msg: ControlMessage) -> None:
    assert decode_control(encode_control(msg), Role.SERVER) == msg
    if isinstance(msg, Setup):
        assert ControlProtocol(Role.SERVER).receive(ControlProtocol(Role.CLIENT).send(msg)) == msg
    elif not isinstance(msg, UnknownMessage):
        client, server = ready_pair()
        assert server.receive(client.send(msg)) == msg


@SETTINGS
@given(msg=server_control.filter(lambda m: not isinstance(m, UnknownMessage)))
def test_client_frames_are_the_official_clients_bytes(msg: ControlMessage) -> None:
    assert encode_control(msg) == official(msg)


@SETTINGS
@given(msg=client_media)
def test_media_round_trip_client_receives(msg: MediaMessage) -> None:
    assert decode_media(_wire(msg), Role.CLIENT) == msg


@SETTINGS
@given(msg=server_media)
def test_media_round_trip_server_receives(msg: MediaMessage) -> None:
    assert decode_media(_wire(msg), Role.SERVER) == msg
    if isinstance(msg, CommandRequest):
        assert encode_media(msg) == official_command(msg)


@FEW
@given(
    code=st.none() | ids,
    message=st.none() | ids,
    data=st.dictionaries(
        ids.filter(lambda k: k not in ("event", "error_code", "error_message", "message")),
        plain_json,
        max_size=3,
    ),
)
def test_call_error_round_trip(code: str | None, message: str | None, data: dict[str, Any]) -> None:
    decoded = decode_media(encode_media(CallErrorEvent(code, message, data)), Role.CLIENT)
    wire = {"error_code": code, "error_message": message, "message": message}
    assert decoded == CallErrorEvent(code, message, {**data, **wire})


@FEW
@given(
    kind=st.text(alphabet=string.ascii_lowercase + "._", max_size=30).filter(
        lambda k: k not in KNOWN_TYPES
    )
)
def test_unknown_types_round_trip_for_both_roles_and_planes(kind: str) -> None:
    for role in Role:
        assert decode_control(encode_control(UnknownMessage(kind)), role) == UnknownMessage(kind)
        assert decode_media(encode_media(UnknownMessage(kind)), role) == UnknownMessage(kind)
