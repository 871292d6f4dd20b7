"""What the core tests share: sample messages, wire helpers and protocol objects moved along the
happy path. Everything here is synchronous and byte-free, like the core itself."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

from telcoflow._core import (
    BufferRequest,
    CallFlowSetup,
    CallIn,
    CommandRequest,
    CommandResponse,
    ControlMessage,
    ControlProtocol,
    ControlState,
    Role,
    SessionClosed,
    SessionCreate,
    SessionNotify,
    SessionOpen,
    SessionReady,
    Setup,
    SetupDone,
    WaMessageOut,
    encode_media,
)

__all__ = [
    "CALL_IN",
    "CLOSED",
    "NOTIFY",
    "TOKEN",
    "counter",
    "grant",
    "official",
    "official_command",
    "ready_client",
    "ready_pair",
    "ready_server",
    "requests",
    "respond",
    "short",
    "state_of",
    "top",
]

TOKEN = "eyJhbGciOiJIUzI1NiJ9.secret-media-token.sig"

NOTIFY = SessionNotify(
    session_id="sess-1",
    channel="TELCO",
    remote_address="+15550001",
    local_address="+15550002",
    activity="NEW_INCOMING_CALL",
    created_at=1_712_345_678,
)
CALL_IN = CallIn(
    session_id="sess-1",
    call_id="call-1",
    url="wss://media.example/v1/agent/media/call-1",
    token=TOKEN,
    org_uuid="org-1",
    from_number="+15550001",
    to_number="+15550002",
)
CLOSED = SessionClosed("sess-1", "CALL_TERMINATED", "CALL_UNANSWERED")


def requests(prefix: str = "r") -> list[SessionOpen | SessionCreate | CallFlowSetup | WaMessageOut]:
    """One request of each kind, with ids ``{prefix}1`` .. ``{prefix}4``."""
    return [
        SessionOpen("sess-1", f"{prefix}1"),
        SessionCreate("TELCO", "+15550003", f"{prefix}2"),
        CallFlowSetup("ALL", True, False, False, f"{prefix}3"),
        WaMessageOut("sess-2", "msg-1", "v1", {"text": "hi"}, f"{prefix}4"),
    ]


def short(value: object) -> str:
    """A test id: the value's repr, cut short (some parameters are kilobytes long)."""
    if isinstance(value, (set, frozenset)):
        return ",".join(sorted(str(v) for v in value)) or "none"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...<{len(text)}>"


def counter(prefix: str) -> Callable[[], str]:
    """A deterministic ``new_id``: ``{prefix}1``, ``{prefix}2``, ..."""
    numbers = itertools.count(1)
    return lambda: f"{prefix}{next(numbers)}"


def top(kind: str, **fields: Any) -> str:
    """A control frame from the server: every field at the top level, beside ``type``."""
    return json.dumps({"type": kind, **fields})


def state_of(proto: ControlProtocol) -> ControlState:
    """``proto.state``, read afresh (mypy keeps an attribute narrowed across method calls)."""
    return proto.state


def ready_client(**kw: Any) -> ControlProtocol:
    proto = ControlProtocol(Role.CLIENT, **kw)
    proto.send(Setup())
    proto.receive(top("setup.done", smWsId="sm-1"))
    assert proto.state is ControlState.READY
    return proto


def ready_server(**kw: Any) -> ControlProtocol:
    proto = ControlProtocol(Role.SERVER, **kw)
    proto.receive(json.dumps({"type": "setup", "data": {"sampleRate": 24000}}))
    proto.send(SetupDone("sm-1"))
    assert proto.state is ControlState.READY
    return proto


def ready_pair() -> tuple[ControlProtocol, ControlProtocol]:
    client, server = ControlProtocol(Role.CLIENT), ControlProtocol(Role.SERVER)
    server.receive(client.send(Setup()))
    client.receive(server.send(SetupDone("sm-1")))
    return client, server


def respond(command_id: str, success: bool = True, **kw: Any) -> str:
    """A server's ``command_response``."""
    return encode_media(CommandResponse(command_id, success, **kw))


def grant(requested: int, prefer: int = 960, channel: int = 0) -> str:
    """A server's ``buffer_request``."""
    return encode_media(BufferRequest(requested, prefer, channel))


def official(msg: ControlMessage) -> str:
    """What the official client's own code would send for ``msg``: its dicts, in its order,
    through ``json.dumps`` with the defaults (``request()`` copies the frame and adds reqId)."""
    match msg:
        case Setup():
            frame: dict[str, Any] = {
                "type": "setup",
                "data": {"sampleRate": msg.sample_rate, "audioMode": msg.audio_mode.value},
            }
        case SessionOpen():
            frame = {"type": "session.open", "sessionId": msg.session_id, "reqId": msg.req_id}
        case SessionReady():
            frame = {"type": "session.ready", "sessionId": msg.session_id}
        case SessionCreate():
            frame = {"type": "session.create", "channel": msg.channel}
            frame.update(remoteAddress=msg.remote_address, reqId=msg.req_id)
        case CallFlowSetup():
            data = {"inboundCall": msg.inbound_call, "outboundCall": msg.outbound_call}
            data.update(inboundMessage=msg.inbound_message, outboundMessage=msg.outbound_message)
            frame = {"type": "call_flow.setup", "data": data, "reqId": msg.req_id}
        case WaMessageOut():
            data = {"sessionId": msg.session_id, "clientMsgId": msg.client_msg_id}
            data.update(apiVersion=msg.api_version, data=msg.data)
            frame = {"type": "wa.msg.out", "data": data, "reqId": msg.req_id}
        case _:  # pragma: no cover
            raise AssertionError(msg)
    return json.dumps(frame)


def official_command(msg: CommandRequest) -> str:
    """What the official client sends for ``msg`` (voice_session.py:309-324)."""
    payload: dict[str, Any] = {
        "command_id": msg.command_id,
        "command": msg.command,
        "timeout_ms": msg.timeout_ms,
    }
    if msg.data is not None:
        payload["data"] = msg.data
    return json.dumps({"type": "command", "data": payload})
