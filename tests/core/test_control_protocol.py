"""ControlProtocol in both roles, driven with whole messages and no I/O: the connection's state
table, and request/response correlation (PROTOCOL.md "Control plane"; hosted-1.0.0.md §1.6)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from telcoflow._core import (
    AudioMode,
    BadRequest,
    CallFlowSetup,
    ControlMessage,
    ControlProtocol,
    ControlState,
    ErrorMessage,
    LocalProtocolError,
    MessageIgnored,
    RemoteProtocolError,
    RequestCompleted,
    Response,
    Role,
    SessionCreate,
    SessionOpen,
    SessionReady,
    Setup,
    SetupDone,
    UnknownMessage,
    WaMessageOut,
    encode_control,
)

from ._support import (
    CALL_IN,
    CLOSED,
    NOTIFY,
    counter,
    ready_client,
    ready_pair,
    ready_server,
    requests,
    state_of,
    top,
)

PUSHES: list[ControlMessage] = [NOTIFY, CALL_IN, CLOSED]
SERVER_FRAMES: list[ControlMessage] = [
    SetupDone("sm"),
    ErrorMessage("X", "y"),
    Response("r", True),
    *PUSHES,
]
CLIENT_FRAMES: list[ControlMessage] = [Setup(), SessionReady("sess-1"), *requests()]


def _name(value: object) -> str:
    return type(value).__name__


def in_state(role: Role, state: ControlState) -> ControlProtocol:
    """A protocol object of ``role`` brought to ``state`` along the happy path."""
    if state is ControlState.IDLE:
        return ControlProtocol(role)
    if state is ControlState.SETUP:
        proto = ControlProtocol(role)
        if role is Role.CLIENT:
            proto.send(Setup())
        else:
            proto.receive(encode_control(Setup()))
        return proto
    proto = ready_client() if role is Role.CLIENT else ready_server()
    if state is ControlState.CLOSED:
        proto.connection_lost()
    return proto


# --- the connection's states ----------------------------------------------------------------------


def test_client_sends_setup_first() -> None:
    proto = ControlProtocol(Role.CLIENT)
    assert proto.state is ControlState.IDLE
    assert proto.send(Setup(16000, AudioMode.ISOLATED)) == (
        '{"type": "setup", "data": {"sampleRate": 16000, "audioMode": "isolated"}}'
    )
    assert state_of(proto) is ControlState.SETUP


def test_client_may_not_send_setup_twice() -> None:
    proto = ControlProtocol(Role.CLIENT)
    proto.send(Setup())
    with pytest.raises(LocalProtocolError, match=r"client may not send Setup .* state SETUP"):
        proto.send(Setup())
    assert proto.state is ControlState.SETUP
    proto.receive(top("setup.done", smWsId="sm"))
    with pytest.raises(LocalProtocolError, match="READY"):
        proto.send(Setup())


@pytest.mark.parametrize("state", [ControlState.IDLE, ControlState.SETUP], ids=str)
@pytest.mark.parametrize("msg", [SessionReady("s"), *requests()], ids=_name)
def test_client_may_not_send_requests_before_setup_done(
    state: ControlState, msg: ControlMessage
) -> None:
    proto = in_state(Role.CLIENT, state)
    with pytest.raises(LocalProtocolError) as info:
        proto.send(msg)
    assert type(msg).__name__ in str(info.value)
    assert state.value in str(info.value)
    assert "we are the client" in str(info.value)
    assert proto.state is state
    assert proto.pending() == []


@pytest.mark.parametrize("state", list(ControlState), ids=str)
@pytest.mark.parametrize("msg", SERVER_FRAMES, ids=_name)
def test_client_may_never_send_server_frames(state: ControlState, msg: ControlMessage) -> None:
    proto = in_state(Role.CLIENT, state)
    with pytest.raises(LocalProtocolError, match=type(msg).__name__):
        proto.send(msg)
    assert proto.state is state


@pytest.mark.parametrize("state", list(ControlState), ids=str)
@pytest.mark.parametrize("msg", CLIENT_FRAMES, ids=_name)
def test_server_may_never_send_client_frames(state: ControlState, msg: ControlMessage) -> None:
    proto = in_state(Role.SERVER, state)
    with pytest.raises(LocalProtocolError, match=r"server may not send"):
        proto.send(msg)
    assert proto.state is state


def test_setup_done_makes_the_client_ready() -> None:
    proto = ControlProtocol(Role.CLIENT)
    proto.send(Setup())
    assert proto.receive(top("setup.done", smWsId="sm-1")) == SetupDone("sm-1")
    assert proto.state is ControlState.READY


@pytest.mark.parametrize("msg", [SetupDone("c"), Response("r", True), *PUSHES], ids=_name)
def test_client_receiving_before_sending_setup_is_a_remote_error(msg: ControlMessage) -> None:
    proto = ControlProtocol(Role.CLIENT)
    with pytest.raises(RemoteProtocolError, match=r"server may not send .* state IDLE"):
        proto.receive(encode_control(msg))
    assert proto.state is ControlState.IDLE


@pytest.mark.parametrize("msg", [Response("r", True), *PUSHES], ids=_name)
def test_pushes_before_setup_done_are_remote_errors(msg: ControlMessage) -> None:
    proto = in_state(Role.CLIENT, ControlState.SETUP)
    with pytest.raises(RemoteProtocolError) as info:
        proto.receive(encode_control(msg))
    text = str(info.value)
    assert type(msg).__name__ in text
    assert "SETUP" in text
    assert "server may not send" in text
    assert proto.state is ControlState.SETUP


@pytest.mark.parametrize("state", [ControlState.IDLE, ControlState.SETUP], ids=str)
def test_a_refused_setup_closes(state: ControlState) -> None:
    # (ours) An invalid setup, or a first frame that is not one, is answered by error + close.
    server = in_state(Role.SERVER, state)
    text = server.send(ErrorMessage("INVALID_SETUP", "sampleRate 44100"))
    assert server.state is ControlState.CLOSED
    client = in_state(Role.CLIENT, state)
    assert client.receive(text) == ErrorMessage("INVALID_SETUP", "sampleRate 44100")
    assert client.state is ControlState.CLOSED


def test_ready_client_receives_pushes_and_errors() -> None:
    proto = ready_client()
    for msg in [*PUSHES, ErrorMessage("X", "y")]:
        assert proto.receive(encode_control(msg)) == msg
    assert proto.state is ControlState.READY


def test_second_setup_done_is_a_remote_error() -> None:
    proto = ready_client()
    with pytest.raises(RemoteProtocolError, match="SetupDone"):
        proto.receive(top("setup.done", smWsId="again"))
    assert proto.state is ControlState.READY


@pytest.mark.parametrize("role", list(Role), ids=str)
@pytest.mark.parametrize("state", list(ControlState), ids=str)
def test_unknown_types_pass_in_any_state(role: Role, state: ControlState) -> None:
    proto = in_state(role, state)
    assert proto.receive(top("maintenance", at=5)) == UnknownMessage("maintenance")
    assert proto.state is state


def test_malformed_frame_leaves_state_and_pending() -> None:
    proto = ready_client()
    proto.send(SessionOpen("s", "r1"))
    with pytest.raises(RemoteProtocolError):
        proto.receive(top("call.in", sessionId=1))
    with pytest.raises(RemoteProtocolError):
        proto.receive(b"\x00\x00\x00")
    with pytest.raises(RemoteProtocolError):
        proto.receive("{")
    assert proto.state is ControlState.READY
    assert proto.pending() == ["r1"]
    assert proto.receive(encode_control(CALL_IN)) == CALL_IN


def test_server_receives_setup() -> None:
    proto = ControlProtocol(Role.SERVER)
    setup = Setup(8000, AudioMode.ISOLATED)
    assert proto.receive(encode_control(setup)) == setup
    assert proto.state is ControlState.SETUP


def test_a_bad_setup_leaves_the_server_idle_to_refuse_it() -> None:
    proto = ControlProtocol(Role.SERVER)
    with pytest.raises(RemoteProtocolError, match="sample_rate"):
        proto.receive(json.dumps({"type": "setup", "data": {"sampleRate": 44100}}))
    assert proto.state is ControlState.IDLE
    proto.send(ErrorMessage("INVALID_SETUP", "sampleRate must be 8000, 16000 or 24000"))
    assert state_of(proto) is ControlState.CLOSED


@pytest.mark.parametrize("msg", [SetupDone("c"), *PUSHES], ids=_name)
def test_server_cannot_send_before_a_setup(msg: ControlMessage) -> None:
    proto = ControlProtocol(Role.SERVER)
    with pytest.raises(LocalProtocolError, match=r"server may not send .* state IDLE"):
        proto.send(msg)
    assert proto.state is ControlState.IDLE


@pytest.mark.parametrize("msg", PUSHES, ids=_name)
def test_server_cannot_push_before_setup_done(msg: ControlMessage) -> None:
    proto = in_state(Role.SERVER, ControlState.SETUP)
    with pytest.raises(LocalProtocolError, match=type(msg).__name__):
        proto.send(msg)
    assert proto.state is ControlState.SETUP


def test_server_accepts_then_pushes() -> None:
    proto = in_state(Role.SERVER, ControlState.SETUP)
    assert proto.send(SetupDone("sm-7")) == '{"type":"setup.done","smWsId":"sm-7"}'
    assert proto.state is ControlState.READY
    for msg in PUSHES:
        assert proto.send(msg) == encode_control(msg)
    assert proto.state is ControlState.READY


def test_server_rejects_a_second_setup() -> None:
    proto = in_state(Role.SERVER, ControlState.SETUP)
    with pytest.raises(RemoteProtocolError, match=r"client may not send Setup .* SETUP"):
        proto.receive(encode_control(Setup()))
    proto.send(SetupDone("c"))
    with pytest.raises(RemoteProtocolError, match="READY"):
        proto.receive(encode_control(Setup()))


@pytest.mark.parametrize("state", [ControlState.IDLE, ControlState.SETUP], ids=str)
@pytest.mark.parametrize("msg", [SessionReady("s"), *requests()], ids=_name)
def test_server_refuses_requests_before_setup_done(
    state: ControlState, msg: ControlMessage
) -> None:
    proto = in_state(Role.SERVER, state)
    with pytest.raises(RemoteProtocolError) as info:
        proto.receive(encode_control(msg))
    assert f"client may not send {type(msg).__name__}" in str(info.value)
    assert state.value in str(info.value)
    assert "we are the server" in str(info.value)
    assert proto.state is state
    assert proto.pending() == []


@pytest.mark.parametrize("state", [ControlState.IDLE, ControlState.SETUP], ids=str)
def test_a_malformed_request_before_setup_done_is_refused_by_the_state_table(
    state: ControlState,
) -> None:
    proto = in_state(Role.SERVER, state)
    with pytest.raises(RemoteProtocolError) as info:
        proto.receive(top("session.open", reqId="r1"))
    # Whatever the server is told to answer, it must be able to answer.
    assert not isinstance(info.value, BadRequest)
    assert state.value in str(info.value)


def test_server_ignores_server_frames_from_a_client() -> None:
    proto = ControlProtocol(Role.SERVER)
    assert proto.receive(encode_control(SetupDone("c"))) == UnknownMessage("setup.done")
    assert proto.receive(encode_control(Response("r", True))) == UnknownMessage("response")
    assert proto.state is ControlState.IDLE


@pytest.mark.parametrize("role", list(Role), ids=str)
def test_nothing_flows_after_the_connection_is_lost(role: Role) -> None:
    proto = in_state(role, ControlState.CLOSED)
    assert proto.state is ControlState.CLOSED
    ours, theirs = (
        (CLIENT_FRAMES, SERVER_FRAMES) if role is Role.CLIENT else (SERVER_FRAMES, CLIENT_FRAMES)
    )
    for msg in ours:
        # (A server's response is refused first for having nothing to answer.)
        with pytest.raises(LocalProtocolError, match=r"CLOSED|not awaiting a response"):
            proto.send(msg)
    for msg in theirs:
        with pytest.raises(RemoteProtocolError, match="CLOSED"):
            proto.receive(encode_control(msg))
    assert proto.connection_lost() == []


# --- request ids ----------------------------------------------------------------------------------


def test_request_ids_are_uuid4_by_default() -> None:
    proto = ControlProtocol(Role.CLIENT)
    ids = [proto.new_request_id() for _ in range(50)]
    assert len(set(ids)) == 50
    for req_id in ids:
        parsed = uuid.UUID(req_id)
        assert parsed.version == 4
        assert str(parsed) == req_id  # the canonical 36-character form, as the official client


def test_request_ids_are_injectable() -> None:
    proto = ControlProtocol(Role.CLIENT, new_id=counter("req-"))
    assert [proto.new_request_id() for _ in range(3)] == ["req-1", "req-2", "req-3"]


# --- correlation: client --------------------------------------------------------------------------


def test_a_response_completes_its_request() -> None:
    proto = ready_client()
    req = SessionOpen("sess-1", proto.new_request_id())
    text = proto.send(req)
    assert json.loads(text)["reqId"] == req.req_id
    assert proto.pending() == [req.req_id]
    response = Response(req.req_id, True, {"session": {"id": "sess-1"}})
    assert proto.receive(encode_control(response)) == RequestCompleted(req, response)
    assert proto.pending() == []


def test_responses_are_correlated_by_id_in_any_order() -> None:
    proto = ready_client()
    sent = requests()
    for req in sent:
        proto.send(req)
    assert proto.pending() == ["r1", "r2", "r3", "r4"]
    for req in reversed(sent):
        response = Response(req.req_id, False, None, "QUOTA_EXCEEDED", {"n": req.req_id})
        event = proto.receive(encode_control(response))
        assert isinstance(event, RequestCompleted)
        assert event.request is req
        assert event.response == response
    assert proto.pending() == []


def test_session_ready_is_not_a_request() -> None:
    proto = ready_client()
    assert proto.send(SessionReady("sess-1")) == '{"type": "session.ready", "sessionId": "sess-1"}'
    assert proto.pending() == []


@pytest.mark.parametrize(
    "why",
    ["unknown", "duplicate", "late"],
)
def test_responses_to_no_pending_request_are_ignored(why: str) -> None:
    proto = ready_client()
    proto.send(SessionOpen("s", "r1"))
    proto.send(SessionOpen("s", "r2"))
    if why == "unknown":
        req_id = "never-sent"
    elif why == "duplicate":
        req_id = "r1"
        assert isinstance(proto.receive(encode_control(Response("r1", True))), RequestCompleted)
    else:
        req_id = "r1"
        proto.forget("r1")  # the caller stopped waiting (30 s)
    event = proto.receive(encode_control(Response(req_id, True)))
    assert isinstance(event, MessageIgnored)
    assert repr(req_id) in event.reason
    assert proto.pending() == (["r1", "r2"] if why == "unknown" else ["r2"])
    assert proto.state is ControlState.READY


def test_forget_is_idempotent() -> None:
    proto = ready_client()
    proto.send(SessionOpen("s", "r1"))
    proto.forget("r1")
    proto.forget("r1")
    proto.forget("never-sent")
    assert proto.pending() == []


def test_a_pending_request_id_may_not_be_reused() -> None:
    proto = ready_client()
    proto.send(SessionOpen("s", "r1"))
    with pytest.raises(LocalProtocolError, match="'r1' is already pending"):
        proto.send(SessionCreate("TELCO", "+1", "r1"))
    assert proto.pending() == ["r1"]
    # Once answered (or forgotten), the id is free again.
    proto.receive(encode_control(Response("r1", True)))
    proto.send(CallFlowSetup("ALL", True, False, False, "r1"))
    assert proto.pending() == ["r1"]


def test_connection_lost_returns_the_unanswered_requests_and_closes() -> None:
    proto = ready_client()
    sent = requests()
    for req in sent:
        proto.send(req)
    proto.receive(encode_control(Response("r2", True)))
    proto.forget("r3")
    assert proto.connection_lost() == [sent[0], sent[3]]
    assert proto.state is ControlState.CLOSED
    assert proto.pending() == []
    with pytest.raises(RemoteProtocolError, match="CLOSED"):
        proto.receive(encode_control(Response("r1", True)))
    with pytest.raises(LocalProtocolError, match="CLOSED"):
        proto.send(SessionOpen("s", "r9"))
    assert proto.connection_lost() == []


def test_a_response_before_setup_done_is_a_remote_error() -> None:
    proto = in_state(Role.CLIENT, ControlState.SETUP)
    with pytest.raises(RemoteProtocolError, match="Response"):
        proto.receive(encode_control(Response("r1", True)))


# --- correlation: server --------------------------------------------------------------------------


@pytest.mark.parametrize("req", requests(), ids=_name)
def test_server_answers_each_request_exactly_once(req: Any) -> None:
    proto = ready_server()
    assert proto.receive(encode_control(req)) == req
    assert proto.pending() == [req.req_id]
    text = proto.send(Response(req.req_id, True))
    assert json.loads(text) == {
        "type": "response",
        "reqId": req.req_id,
        "ok": True,
        "content": None,
        "errorCode": None,
        "errorContent": None,
    }
    assert proto.pending() == []
    with pytest.raises(LocalProtocolError, match=f"{req.req_id!r} is not awaiting a response"):
        proto.send(Response(req.req_id, False, None, "INVALID_REQUEST"))


def test_server_may_not_answer_what_it_never_received() -> None:
    proto = ready_server()
    proto.receive(encode_control(SessionOpen("s", "r1")))
    with pytest.raises(LocalProtocolError, match="'r2' is not awaiting a response"):
        proto.send(Response("r2", True))
    assert proto.pending() == ["r1"]
    assert proto.state is ControlState.READY


def test_server_session_ready_awaits_no_response() -> None:
    proto = ready_server()
    assert proto.receive(encode_control(SessionReady("s"))) == SessionReady("s")
    assert proto.pending() == []


def test_a_reused_unanswered_request_id_is_a_remote_error() -> None:
    proto = ready_server()
    proto.receive(encode_control(SessionOpen("s", "r1")))
    with pytest.raises(RemoteProtocolError, match="'r1' reused while unanswered"):
        proto.receive(encode_control(SessionCreate("TELCO", "+1", "r1")))
    assert proto.pending() == ["r1"]
    proto.send(Response("r1", True))
    assert proto.receive(encode_control(SessionOpen("s", "r1"))) == SessionOpen("s", "r1")


def test_server_connection_lost_returns_the_unanswered_requests() -> None:
    proto = ready_server()
    sent = requests()
    for req in sent:
        proto.receive(encode_control(req))
    proto.send(Response("r1", True))
    assert proto.connection_lost() == sent[1:]
    assert proto.state is ControlState.CLOSED
    assert proto.pending() == []


# --- BadRequest: the server answers a request it cannot read --------------------------------------


def test_a_bad_request_awaits_exactly_one_response() -> None:
    proto = ready_server()
    with pytest.raises(BadRequest, match="missing field 'sessionId'") as info:
        proto.receive(top("session.open", reqId="r1"))
    assert info.value.req_id == "r1"
    assert proto.pending() == ["r1"]
    assert proto.state is ControlState.READY
    text = proto.send(Response("r1", False, None, "INVALID_REQUEST", {"message": str(info.value)}))
    assert json.loads(text)["errorCode"] == "INVALID_REQUEST"
    assert proto.pending() == []
    with pytest.raises(LocalProtocolError, match="not awaiting a response"):
        proto.send(Response("r1", False, None, "INVALID_REQUEST"))


@pytest.mark.parametrize(
    "raw",
    [
        top("session.open", reqId="r1", sessionId=5),
        top("session.create", reqId="r1", channel="TELCO"),
        json.dumps({"type": "call_flow.setup", "reqId": "r1", "data": {"outboundCall": True}}),
        json.dumps({"type": "wa.msg.out", "reqId": "r1", "data": "hello"}),
    ],
    ids=lambda raw: json.loads(raw)["type"],
)
def test_every_request_kind_can_be_a_bad_request(raw: str) -> None:
    proto = ready_server()
    with pytest.raises(BadRequest) as info:
        proto.receive(raw)
    assert info.value.req_id == "r1"
    proto.send(Response("r1", False, None, "INVALID_REQUEST"))


def test_a_bad_request_is_never_lost_as_a_request() -> None:
    # It is answered, but connection_lost returns only the requests that were read.
    proto = ready_server()
    with pytest.raises(BadRequest):
        proto.receive(top("session.open", reqId="bad"))
    proto.receive(encode_control(SessionOpen("s", "good")))
    assert sorted(proto.pending()) == ["bad", "good"]
    assert proto.connection_lost() == [SessionOpen("s", "good")]


def test_a_bad_request_reusing_a_pending_id_is_not_answerable() -> None:
    proto = ready_server()
    proto.receive(encode_control(SessionOpen("s", "r1")))
    with pytest.raises(RemoteProtocolError, match="'r1' reused") as info:
        proto.receive(top("session.open", reqId="r1"))
    # Not a BadRequest: answering it would answer the first request too.
    assert not isinstance(info.value, BadRequest)
    assert proto.pending() == ["r1"]
    proto.send(Response("r1", True))
    with pytest.raises(LocalProtocolError):
        proto.send(Response("r1", True))


def test_a_request_reusing_a_bad_requests_id_is_a_remote_error() -> None:
    proto = ready_server()
    with pytest.raises(BadRequest):
        proto.receive(top("session.open", reqId="r1"))
    with pytest.raises(RemoteProtocolError, match="'r1' reused while unanswered"):
        proto.receive(encode_control(SessionOpen("s", "r1")))


def test_client_never_sees_bad_requests() -> None:
    # Requests are unknown frames to a client: nothing to answer there.
    proto = ready_client()
    assert proto.receive(top("session.open", reqId="r1")) == UnknownMessage("session.open")


# --- both ends together ---------------------------------------------------------------------------


def test_control_client_and_server_agree_end_to_end() -> None:
    client, server = ready_pair()
    assert client.state is server.state is ControlState.READY
    assert client.receive(server.send(NOTIFY)) == NOTIFY

    open_req = SessionOpen(NOTIFY.session_id, client.new_request_id())
    assert server.receive(client.send(open_req)) == open_req
    answer = Response(open_req.req_id, True, {"session": {"id": NOTIFY.session_id}})
    assert client.receive(server.send(answer)) == RequestCompleted(open_req, answer)

    assert server.receive(client.send(SessionReady(NOTIFY.session_id))) == SessionReady(
        NOTIFY.session_id
    )
    assert client.receive(server.send(CALL_IN)) == CALL_IN

    create = SessionCreate("TELCO", "+15550003", client.new_request_id())
    flow = CallFlowSetup("MISSED_ONLY", True, False, False, client.new_request_id())
    wa = WaMessageOut("s", "m", "v1", {"text": "hi"}, client.new_request_id())
    for req in (create, flow, wa):
        assert server.receive(client.send(req)) == req
    assert sorted(client.pending()) == sorted(server.pending())
    refused = Response(wa.req_id, False, None, "INVALID_CHANNEL", None)
    assert client.receive(server.send(refused)) == RequestCompleted(wa, refused)

    assert client.receive(server.send(CLOSED)) == CLOSED
    assert client.connection_lost() == [create, flow]
    assert server.connection_lost() == [create, flow]
