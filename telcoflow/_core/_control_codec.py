"""The control plane's frames to and from the typed messages, for either role.

PROTOCOL.md, "Control plane". The envelope is not uniform, and this module is where that is
written down once:

- server → client frames carry every field at the top level, beside ``type``;
- client → server ``setup``, ``call_flow.setup`` and ``wa.msg.out`` carry a ``data`` object;
  ``session.open``, ``session.ready`` and ``session.create`` carry their fields at the top level;
- requests carry a top-level ``reqId``.

A client reads the server's frames leniently (missing optional fields take defaults, ``ok`` is a
truth value, codes are any value made text), as the official client does; the sandbox reads a
client's frames strictly. A type the receiving role does not know (including one only the other
side may send) decodes as :class:`UnknownMessage` and is ignored, for forward compatibility.
A request the server cannot read but whose ``reqId`` it can raises :class:`BadRequest`, so that
the server can still answer it (``INVALID_REQUEST``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._errors import LocalProtocolError, RemoteProtocolError
from ._messages import (
    CallFlowSetup,
    CallIn,
    ControlMessage,
    ErrorMessage,
    Response,
    SessionClosed,
    SessionCreate,
    SessionNotify,
    SessionOpen,
    SessionReady,
    Setup,
    SetupDone,
    UnknownMessage,
    WaMessageOut,
)
from ._wire import (
    MAX_URL_CHARS,
    Role,
    coerced_text,
    dumps_client,
    dumps_server,
    envelope,
    field,
    number,
    optional_text,
    parse_json,
    text,
)

__all__ = ["BadRequest", "decode_control", "encode_control"]


class BadRequest(RemoteProtocolError):
    """A request the server cannot carry out as sent; ``req_id`` is its id, for the answer."""

    def __init__(self, message: str, req_id: str) -> None:
        super().__init__(message)
        self.req_id = req_id


# --- what a server receives ----------------------------------------------------------------------


def _setup(obj: dict[str, Any]) -> Setup:
    d = envelope(obj, "setup")
    rate = field(d, "setup", "sampleRate", int)
    mode = field(d, "setup", "audioMode", str) if "audioMode" in d else "mixed"
    try:
        return Setup(sample_rate=rate, audio_mode=mode)
    except ValueError as exc:
        raise RemoteProtocolError(f"setup frame: {exc}") from None


def _request(
    kind: str, read: Callable[[dict[str, Any], str], ControlMessage]
) -> Callable[[dict[str, Any]], ControlMessage]:
    """A request decoder: the ``reqId`` first, so that every later error can be answered."""

    def decode(obj: dict[str, Any]) -> ControlMessage:
        req_id = field(obj, kind, "reqId", str)
        try:
            return read(obj, req_id)
        except RemoteProtocolError as exc:
            raise BadRequest(str(exc), req_id) from None

    return decode


def _session_open(obj: dict[str, Any], req_id: str) -> SessionOpen:
    return SessionOpen(field(obj, "session.open", "sessionId", str), req_id)


def _session_create(obj: dict[str, Any], req_id: str) -> SessionCreate:
    f = "session.create"
    return SessionCreate(field(obj, f, "channel", str), field(obj, f, "remoteAddress", str), req_id)


def _call_flow(obj: dict[str, Any], req_id: str) -> CallFlowSetup:
    f = "call_flow.setup"
    d = envelope(obj, f)
    flags = {}
    for key in ("outboundCall", "inboundMessage", "outboundMessage"):
        flags[key] = field(d, f, key, bool) if key in d else False
    return CallFlowSetup(
        inbound_call=field(d, f, "inboundCall", str),
        outbound_call=flags["outboundCall"],
        inbound_message=flags["inboundMessage"],
        outbound_message=flags["outboundMessage"],
        req_id=req_id,
    )


def _wa_out(obj: dict[str, Any], req_id: str) -> WaMessageOut:
    f = "wa.msg.out"
    d = envelope(obj, f)
    return WaMessageOut(
        session_id=text(d, f, "sessionId"),
        client_msg_id=text(d, f, "clientMsgId"),
        api_version=text(d, f, "apiVersion"),
        data=d.get("data"),
        req_id=req_id,
    )


# --- what a client receives ----------------------------------------------------------------------


def _response(obj: dict[str, Any]) -> Response:
    return Response(
        req_id=field(obj, "response", "reqId", str),
        ok=bool(obj.get("ok")),
        content=obj.get("content"),
        error_code=coerced_text(obj, "errorCode"),
        error_content=obj.get("errorContent"),
    )


def _notify(obj: dict[str, Any]) -> SessionNotify:
    f = "session.notify"
    return SessionNotify(
        session_id=field(obj, f, "sessionId", str),
        channel=text(obj, f, "channel"),
        remote_address=text(obj, f, "remoteAddress"),
        local_address=text(obj, f, "localAddress"),
        activity=text(obj, f, "activity"),
        created_at=number(obj, f, "createdAt"),
    )


def _call_in(obj: dict[str, Any]) -> CallIn:
    f = "call.in"
    return CallIn(
        session_id=field(obj, f, "sessionId", str),
        call_id=field(obj, f, "callId", str),
        url=field(obj, f, "url", str, limit=MAX_URL_CHARS),
        token=field(obj, f, "token", str, limit=MAX_URL_CHARS),
        org_uuid=text(obj, f, "orgUuid"),
        from_number=text(obj, f, "from"),
        to_number=text(obj, f, "to"),
    )


def _closed(obj: dict[str, Any]) -> SessionClosed:
    f = "session.closed"
    return SessionClosed(
        session_id=field(obj, f, "sessionId", str),
        reason=text(obj, f, "reason", "FORCE_CLOSE"),
        detail=optional_text(obj, f, "detail"),
    )


_DECODERS: Mapping[Role, Mapping[str, Callable[[dict[str, Any]], ControlMessage]]] = {
    Role.SERVER: {
        "setup": _setup,
        "session.open": _request("session.open", _session_open),
        "session.ready": lambda o: SessionReady(field(o, "session.ready", "sessionId", str)),
        "session.create": _request("session.create", _session_create),
        "call_flow.setup": _request("call_flow.setup", _call_flow),
        "wa.msg.out": _request("wa.msg.out", _wa_out),
    },
    Role.CLIENT: {
        "setup.done": lambda o: SetupDone(text(o, "setup.done", "smWsId")),
        "error": lambda o: ErrorMessage(text(o, "error", "code"), text(o, "error", "message")),
        "response": _response,
        "session.notify": _notify,
        "call.in": _call_in,
        "session.closed": _closed,
    },
}


def decode_control(raw: str | bytes, receiver: Role) -> ControlMessage:
    """Decode one control-plane message received by ``receiver``."""
    if not isinstance(raw, str):
        raise RemoteProtocolError("binary frames are not allowed on the control connection")
    kind, obj = parse_json(raw)
    decoder = _DECODERS[receiver].get(kind)
    if decoder is None:
        return UnknownMessage(kind)
    return decoder(obj)


# --- encoding ------------------------------------------------------------------------------------


def encode_control(msg: ControlMessage) -> str:
    """The text frame that carries ``msg``: the client's in the official client's JSON style,
    the server's compact."""
    match msg:
        case Setup(sample_rate=rate, audio_mode=mode):
            return dumps_client(
                {"type": "setup", "data": {"sampleRate": rate, "audioMode": mode.value}}
            )
        case SessionOpen(session_id=sid, req_id=req):
            return dumps_client({"type": "session.open", "sessionId": sid, "reqId": req})
        case SessionReady(session_id=sid):
            return dumps_client({"type": "session.ready", "sessionId": sid})
        case SessionCreate(channel=channel, remote_address=remote, req_id=req):
            return dumps_client(
                {
                    "type": "session.create",
                    "channel": channel,
                    "remoteAddress": remote,
                    "reqId": req,
                }
            )
        case CallFlowSetup():
            data = {
                "inboundCall": msg.inbound_call,
                "outboundCall": msg.outbound_call,
                "inboundMessage": msg.inbound_message,
                "outboundMessage": msg.outbound_message,
            }
            return dumps_client({"type": "call_flow.setup", "data": data, "reqId": msg.req_id})
        case WaMessageOut():
            data = {
                "sessionId": msg.session_id,
                "clientMsgId": msg.client_msg_id,
                "apiVersion": msg.api_version,
                "data": msg.data,
            }
            return dumps_client({"type": "wa.msg.out", "data": data, "reqId": msg.req_id})
        case SetupDone(sm_ws_id=sm):
            return dumps_server({"type": "setup.done", "smWsId": sm})
        case ErrorMessage(code=code, message=message):
            return dumps_server({"type": "error", "code": code, "message": message})
        case Response():
            return dumps_server(
                {
                    "type": "response",
                    "reqId": msg.req_id,
                    "ok": msg.ok,
                    "content": msg.content,
                    "errorCode": msg.error_code,
                    "errorContent": msg.error_content,
                }
            )
        case SessionNotify():
            return dumps_server(
                {
                    "type": "session.notify",
                    "sessionId": msg.session_id,
                    "channel": msg.channel,
                    "remoteAddress": msg.remote_address,
                    "localAddress": msg.local_address,
                    "activity": msg.activity,
                    # An integer: the official client's model refuses a fractional float.
                    "createdAt": int(msg.created_at),
                }
            )
        case CallIn():
            return dumps_server(
                {
                    "type": "call.in",
                    "sessionId": msg.session_id,
                    "callId": msg.call_id,
                    "orgUuid": msg.org_uuid,
                    "from": msg.from_number,
                    "to": msg.to_number,
                    "url": msg.url,
                    "token": msg.token,
                }
            )
        case SessionClosed():
            body: dict[str, Any] = {
                "type": "session.closed",
                "sessionId": msg.session_id,
                "reason": msg.reason,
            }
            if msg.detail is not None:
                body["detail"] = msg.detail
            return dumps_server(body)
        case UnknownMessage(type=kind):
            return dumps_server({"type": kind})
    raise LocalProtocolError(f"not a control-plane message: {msg!r}")  # pragma: no cover
