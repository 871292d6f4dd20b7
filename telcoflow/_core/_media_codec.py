"""The media plane's frames to and from the typed messages, for either role.

PROTOCOL.md, "Media plane". Text frames are ``{"type", "data": {...}}``; binary frames are a
channel byte and PCM (:mod:`._audio`).

What a client receives is read the way the official client reads it, because a real server may
send less than our sandbox does (hosted-1.0.0.md §3.3-3.4): ``success`` is a truth value,
codes and messages are any value made text, ``call.terminated`` may lack its ``reason``,
``call.error`` may name its message ``error_message`` or ``message`` or neither, and a
``buffer_request`` field that is missing or not a whole number counts as 0. Audio is accepted on
any channel and of any length of at least one byte of payload (a trailing odd byte is the
receiver's to carry over). What the sandbox receives from an agent is read strictly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._errors import LocalProtocolError, RemoteProtocolError
from ._messages import (
    AudioFrame,
    BufferRequest,
    CallErrorEvent,
    CallTerminatedEvent,
    CommandRequest,
    CommandResponse,
    MediaMessage,
    UnknownCallEvent,
    UnknownMessage,
)
from ._vocab import TerminationReason
from ._wire import (
    MAX_AUDIO_PAYLOAD_BYTES,
    MAX_CREDIT_GRANT_BYTES,
    MAX_TIMEOUT_MS,
    Role,
    bounded_int,
    coerced_text,
    dumps_client,
    dumps_server,
    envelope,
    field,
    integer,
    parse_json,
)

__all__ = ["decode_audio", "decode_media", "encode_media"]

#: Keys of ``call_event`` that are not the event's own data.
_EVENT_KEYS = frozenset({"event"})


def _command(obj: dict[str, Any]) -> CommandRequest:
    f = "command"
    d = envelope(obj, f)
    data = d.get("data")
    if data is not None and not isinstance(data, dict):
        raise RemoteProtocolError("command frame field 'data' must be an object or null")
    return CommandRequest(
        command_id=field(d, f, "command_id", str),
        command=field(d, f, "command", str),
        timeout_ms=bounded_int(d, f, "timeout_ms", 0, MAX_TIMEOUT_MS),
        data=data,
    )


def _command_response(obj: dict[str, Any]) -> CommandResponse:
    f = "command_response"
    d = envelope(obj, f)
    if "success" not in d:
        raise RemoteProtocolError(f"{f} frame is missing field 'success'")
    return CommandResponse(
        command_id=field(d, f, "command_id", str),
        success=bool(d["success"]),
        result=d.get("result"),
        error_code=coerced_text(d, "error_code"),
        error_message=coerced_text(d, "error_message", limit=4096),
    )


def _call_event(obj: dict[str, Any]) -> MediaMessage:
    d = envelope(obj, "call_event")
    event = coerced_text(d, "event")
    if event is None:
        raise RemoteProtocolError("call_event frame is missing field 'event'")
    if event == "call.terminated":
        return CallTerminatedEvent(coerced_text(d, "reason") or TerminationReason.UNKNOWN.value)
    if event == "call.error":
        message = coerced_text(d, "error_message", limit=4096)
        if message is None:
            message = coerced_text(d, "message", limit=4096)
        extra = {k: v for k, v in d.items() if k not in _EVENT_KEYS}
        return CallErrorEvent(coerced_text(d, "error_code"), message, extra)
    return UnknownCallEvent(event)


def _buffer_request(obj: dict[str, Any]) -> BufferRequest:
    d = envelope(obj, "buffer_request")
    requested = integer(d, "requested_bytes") or 0
    if requested > MAX_CREDIT_GRANT_BYTES:
        raise RemoteProtocolError(
            f"buffer_request of {requested} bytes exceeds MAX_CREDIT_GRANT_BYTES"
        )
    prefer = integer(d, "prefer_audio_frame_bytes") or 0
    # Whole samples only, and never a frame the server could not take.
    prefer = min(max(prefer, 0), MAX_AUDIO_PAYLOAD_BYTES) & ~1
    return BufferRequest(
        requested_bytes=max(requested, 0),
        prefer_audio_frame_bytes=prefer,
        channel_id=integer(d, "channelId") or 0,
    )


_DECODERS: Mapping[Role, Mapping[str, Callable[[dict[str, Any]], MediaMessage]]] = {
    Role.SERVER: {"command": _command},
    Role.CLIENT: {
        "command_response": _command_response,
        "call_event": _call_event,
        "buffer_request": _buffer_request,
    },
}


def decode_audio(raw: bytes) -> AudioFrame:
    """Decode one binary frame: a channel byte, then PCM (any length, possibly odd)."""
    n = len(raw)
    if n < 2:
        raise RemoteProtocolError(f"audio frame of {n} bytes has no audio")
    if n - 1 > MAX_AUDIO_PAYLOAD_BYTES:
        raise RemoteProtocolError(
            f"audio frame payload of {n - 1} bytes exceeds MAX_AUDIO_PAYLOAD_BYTES"
        )
    return AudioFrame(raw[0], raw[1:])


def decode_media(raw: str | bytes, receiver: Role) -> MediaMessage:
    """Decode one media-plane message received by ``receiver``."""
    if not isinstance(raw, str):
        return decode_audio(raw)
    kind, obj = parse_json(raw)
    decoder = _DECODERS[receiver].get(kind)
    if decoder is None:
        return UnknownMessage(kind)
    return decoder(obj)


def encode_media(msg: MediaMessage) -> str:
    """The text frame that carries ``msg`` (audio goes through :func:`encode_audio`)."""
    match msg:
        case CommandRequest():
            body: dict[str, Any] = {
                "command_id": msg.command_id,
                "command": msg.command,
                "timeout_ms": msg.timeout_ms,
            }
            if msg.data is not None:
                body["data"] = msg.data
            return dumps_client({"type": "command", "data": body})
        case CommandResponse():
            data = {
                "command_id": msg.command_id,
                "success": msg.success,
                "result": msg.result,
                "error_code": msg.error_code,
                "error_message": msg.error_message,
            }
            return dumps_server({"type": "command_response", "data": data})
        case CallTerminatedEvent(reason=reason):
            return dumps_server(
                {"type": "call_event", "data": {"event": "call.terminated", "reason": reason}}
            )
        case CallErrorEvent():
            data = dict(msg.data)
            data.update(event="call.error", error_code=msg.error_code)
            data["error_message"] = msg.error_message
            # The name PROTOCOL.md version 1 used, kept for one release for older clients.
            data.setdefault("message", msg.error_message)
            return dumps_server({"type": "call_event", "data": data})
        case BufferRequest():
            data = {
                "requested_bytes": msg.requested_bytes,
                "prefer_audio_frame_bytes": msg.prefer_audio_frame_bytes,
                "channelId": msg.channel_id,
            }
            return dumps_server({"type": "buffer_request", "data": data})
        case UnknownCallEvent(event=event):
            return dumps_server({"type": "call_event", "data": {"event": event}})
        case UnknownMessage(type=kind):
            return dumps_server({"type": kind, "data": {}})
    raise LocalProtocolError(f"not a media-plane text message: {msg!r}")  # pragma: no cover
