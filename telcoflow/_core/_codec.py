"""Encoding and decoding of whole WebSocket messages to and from the typed messages.

Framing is wsproto's job; this module sees one complete text (``str``) or binary (``bytes``)
message at a time. Decoding is role-aware: a client decodes what a server may send and the other
way round; a type the receiving role does not know (including one only the other side may send)
decodes as ``UnknownMessage`` and is ignored, as PROTOCOL.md asks for forward compatibility. Every
failure is a :class:`RemoteProtocolError` that names the frame and the field.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ._errors import RemoteProtocolError
from ._messages import (
    CHANNELS,
    AudioFrame,
    BufferRequest,
    CallEnded,
    CallErrorEvent,
    CallIncoming,
    CallTerminatedEvent,
    CommandRequest,
    CommandResponse,
    ControlMessage,
    ErrorMessage,
    MediaMessage,
    Setup,
    SetupDone,
    UnknownCallEvent,
    UnknownMessage,
)

__all__ = [
    "MAX_AUDIO_PAYLOAD_BYTES",
    "MAX_CREDIT_GRANT_BYTES",
    "MAX_TEXT_MESSAGE_CHARS",
    "Role",
    "decode_control",
    "decode_media",
    "encode",
]

#: Every text frame of the protocol is a small JSON object (the largest, ``call.incoming``, is a
#: few hundred bytes). Anything past this is hostile or broken, and parsing it would cost memory.
MAX_TEXT_MESSAGE_CHARS = 64 * 1024

#: One binary frame carries 20 ms of audio (at most 960 bytes at 24 kHz); allow ample room for
#: peers that use larger frames, but refuse payloads that could only be an attack.
MAX_AUDIO_PAYLOAD_BYTES = 64 * 1024

#: One ``buffer_request`` grants playout room of at most a few seconds; 16 MiB (almost three
#: minutes at 24 kHz) is far beyond any real server, and keeps the credit counter sane.
MAX_CREDIT_GRANT_BYTES = 16 * 1024 * 1024

#: Identifiers (call ids, command ids, tokens) are short; bound them like the whole message.
MAX_ID_CHARS = 256

#: A command may wait at most this long for its response (the longest ring time plus margin).
MAX_TIMEOUT_MS = 10 * 60 * 1000


class Role(enum.Enum):
    """Which side of a connection this codec or protocol object plays."""

    CLIENT = "client"
    SERVER = "server"


_T = TypeVar("_T")


def _field(data: Mapping[str, Any], frame: str, key: str, kind: type[_T]) -> _T:
    try:
        value = data[key]
    except KeyError:
        raise RemoteProtocolError(f"{frame} frame is missing field {key!r}") from None
    # bool is an int in Python; a protocol int is never a bool.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RemoteProtocolError(
            f"{frame} frame field {key!r} must be {kind.__name__}, not {type(value).__name__}"
        )
    if kind is str and len(value) > MAX_ID_CHARS:  # type: ignore[arg-type]
        raise RemoteProtocolError(f"{frame} frame field {key!r} is longer than {MAX_ID_CHARS}")
    return value


def _optional_str(data: Mapping[str, Any], frame: str, key: str) -> str | None:
    if data.get(key) is None:
        return None
    value = data[key]
    if not isinstance(value, str):
        raise RemoteProtocolError(f"{frame} frame field {key!r} must be a string or null")
    return value


def _bounded_int(data: Mapping[str, Any], frame: str, key: str, low: int, high: int) -> int:
    value = _field(data, frame, key, int)
    if not low <= value <= high:
        raise RemoteProtocolError(f"{frame} frame field {key!r} is {value}, outside {low}..{high}")
    return value


def _parse_json(raw: str) -> tuple[str, dict[str, Any]]:
    if len(raw) > MAX_TEXT_MESSAGE_CHARS:
        raise RemoteProtocolError(
            f"text frame of {len(raw)} characters exceeds MAX_TEXT_MESSAGE_CHARS "
            f"({MAX_TEXT_MESSAGE_CHARS})"
        )
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"text frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RemoteProtocolError(f"text frame must be a JSON object, not {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise RemoteProtocolError("text frame has no string 'type'")
    data = obj.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RemoteProtocolError(f"{kind} frame 'data' must be an object")
    return kind, data


def _dumps(kind: str, data: Mapping[str, Any]) -> str:
    return json.dumps({"type": kind, "data": data}, separators=(",", ":"))


# --- decoding ------------------------------------------------------------------------------------


def _setup(d: dict[str, Any]) -> Setup:
    rate = _field(d, "setup", "sampleRate", int)
    mode = _field(d, "setup", "audioMode", str) if "audioMode" in d else "mixed"
    try:
        return Setup(sample_rate=rate, audio_mode=mode)
    except ValueError as exc:
        raise RemoteProtocolError(f"setup frame: {exc}") from None


def _call_incoming(d: dict[str, Any]) -> CallIncoming:
    f = "call.incoming"
    created = d.get("createdAt", 0.0)
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        raise RemoteProtocolError(f"{f} frame field 'createdAt' must be a number")
    try:
        created = float(created)
    except OverflowError:  # a JSON integer may have any number of digits
        raise RemoteProtocolError(f"{f} frame field 'createdAt' is out of range") from None
    if not math.isfinite(created):
        raise RemoteProtocolError(f"{f} frame field 'createdAt' must be finite")
    return CallIncoming(
        call_id=_field(d, f, "callId", str),
        from_number=_field(d, f, "from", str),
        to_number=_field(d, f, "to", str),
        direction=_field(d, f, "direction", str),
        media_url=_field(d, f, "mediaUrl", str),
        media_token=_field(d, f, "mediaToken", str),
        created_at=created,
    )


_CONTROL_DECODERS: Mapping[Role, Mapping[str, Callable[[dict[str, Any]], ControlMessage]]] = {
    # What a server receives.
    Role.SERVER: {"setup": _setup},
    # What a client receives.
    Role.CLIENT: {
        "setup.done": lambda d: SetupDone(_field(d, "setup.done", "connectionId", str)),
        "error": lambda d: ErrorMessage(
            _field(d, "error", "code", str), _field(d, "error", "message", str)
        ),
        "call.incoming": _call_incoming,
        "call.ended": lambda d: CallEnded(
            _field(d, "call.ended", "callId", str), _field(d, "call.ended", "reason", str)
        ),
    },
}


def decode_control(raw: str | bytes, receiver: Role) -> ControlMessage:
    """Decode one control-plane message received by ``receiver``."""
    if not isinstance(raw, str):
        raise RemoteProtocolError("binary frames are not allowed on the control connection")
    kind, data = _parse_json(raw)
    decoder = _CONTROL_DECODERS[receiver].get(kind)
    if decoder is None:
        return UnknownMessage(kind)
    return decoder(data)


def _command(d: dict[str, Any]) -> CommandRequest:
    f = "command"
    data = d.get("data")
    if data is not None and not isinstance(data, dict):
        raise RemoteProtocolError("command frame field 'data' must be an object or null")
    return CommandRequest(
        command_id=_field(d, f, "command_id", str),
        command=_field(d, f, "command", str),
        timeout_ms=_bounded_int(d, f, "timeout_ms", 0, MAX_TIMEOUT_MS),
        data=data,
    )


def _command_response(d: dict[str, Any]) -> CommandResponse:
    f = "command_response"
    return CommandResponse(
        command_id=_field(d, f, "command_id", str),
        success=_field(d, f, "success", bool),
        result=d.get("result"),
        error_code=_optional_str(d, f, "error_code"),
        error_message=_optional_str(d, f, "error_message"),
    )


def _call_event(d: dict[str, Any]) -> MediaMessage:
    f = "call_event"
    event = _field(d, f, "event", str)
    if event == "call.terminated":
        return CallTerminatedEvent(_field(d, "call.terminated", "reason", str))
    if event == "call.error":
        return CallErrorEvent(
            _field(d, "call.error", "error_code", str), _field(d, "call.error", "message", str)
        )
    return UnknownCallEvent(event)


def _buffer_request(d: dict[str, Any]) -> BufferRequest:
    f = "buffer_request"
    frame = _bounded_int(d, f, "prefer_audio_frame_bytes", 2, MAX_AUDIO_PAYLOAD_BYTES)
    if frame % 2:
        raise RemoteProtocolError(f"{f} frame field 'prefer_audio_frame_bytes' must be even")
    channel = d.get("channelId", 0)
    if isinstance(channel, bool) or not isinstance(channel, int):
        raise RemoteProtocolError(f"{f} frame field 'channelId' must be int")
    return BufferRequest(
        requested_bytes=_bounded_int(d, f, "requested_bytes", 0, MAX_CREDIT_GRANT_BYTES),
        prefer_audio_frame_bytes=frame,
        channel_id=channel,
    )


_MEDIA_DECODERS: Mapping[Role, Mapping[str, Callable[[dict[str, Any]], MediaMessage]]] = {
    Role.SERVER: {"command": _command},
    Role.CLIENT: {
        "command_response": _command_response,
        "call_event": _call_event,
        "buffer_request": _buffer_request,
    },
}


def decode_audio(raw: bytes) -> AudioFrame:
    """Decode one binary frame: a channel byte, then whole PCM16 samples."""
    n = len(raw)
    if n < 3:
        raise RemoteProtocolError(f"audio frame of {n} bytes has no samples")
    if not n & 1:  # channel byte + an odd number of PCM bytes
        raise RemoteProtocolError(f"audio frame payload of {n - 1} bytes is not whole samples")
    if n - 1 > MAX_AUDIO_PAYLOAD_BYTES:
        raise RemoteProtocolError(
            f"audio frame payload of {n - 1} bytes exceeds MAX_AUDIO_PAYLOAD_BYTES"
        )
    channel = raw[0]
    if channel not in CHANNELS:
        raise RemoteProtocolError(f"audio frame on unknown channel {channel}")
    return AudioFrame(channel, raw[1:])


def decode_media(raw: str | bytes, receiver: Role) -> MediaMessage:
    """Decode one media-plane message received by ``receiver``."""
    if not isinstance(raw, str):
        return decode_audio(raw)
    kind, data = _parse_json(raw)
    decoder = _MEDIA_DECODERS[receiver].get(kind)
    if decoder is None:
        return UnknownMessage(kind)
    return decoder(data)


# --- encoding ------------------------------------------------------------------------------------


def encode(msg: ControlMessage | MediaMessage) -> str | bytes:
    """Encode a message into the text or binary WebSocket message that carries it."""
    match msg:
        case AudioFrame(channel=channel, pcm=pcm):
            return bytes((channel,)) + pcm
        case Setup(sample_rate=rate, audio_mode=mode):
            return _dumps("setup", {"sampleRate": rate, "audioMode": mode.value})
        case SetupDone(connection_id=cid):
            return _dumps("setup.done", {"connectionId": cid})
        case ErrorMessage(code=code, message=message):
            return _dumps("error", {"code": code, "message": message})
        case CallIncoming():
            return _dumps(
                "call.incoming",
                {
                    "callId": msg.call_id,
                    "from": msg.from_number,
                    "to": msg.to_number,
                    "direction": msg.direction,
                    "mediaUrl": msg.media_url,
                    "mediaToken": msg.media_token,
                    "createdAt": msg.created_at,
                },
            )
        case CallEnded(call_id=cid, reason=reason):
            return _dumps("call.ended", {"callId": cid, "reason": reason})
        case CommandRequest():
            body: dict[str, Any] = {
                "command_id": msg.command_id,
                "command": msg.command,
                "timeout_ms": msg.timeout_ms,
            }
            if msg.data is not None:
                body["data"] = msg.data
            return _dumps("command", body)
        case CommandResponse():
            return _dumps(
                "command_response",
                {
                    "command_id": msg.command_id,
                    "success": msg.success,
                    "result": msg.result,
                    "error_code": msg.error_code,
                    "error_message": msg.error_message,
                },
            )
        case CallTerminatedEvent(reason=reason):
            return _dumps("call_event", {"event": "call.terminated", "reason": reason})
        case CallErrorEvent(error_code=code, message=message):
            return _dumps(
                "call_event", {"event": "call.error", "error_code": code, "message": message}
            )
        case BufferRequest():
            return _dumps(
                "buffer_request",
                {
                    "requested_bytes": msg.requested_bytes,
                    "prefer_audio_frame_bytes": msg.prefer_audio_frame_bytes,
                    "channelId": msg.channel_id,
                },
            )
        case UnknownCallEvent(event=event):
            return _dumps("call_event", {"event": event})
        case UnknownMessage(type=kind):
            return _dumps(kind, {})
