"""Typed messages for every frame of PROTOCOL.md (version 2), both planes.

Each class is one wire frame, frozen and slotted, validated at construction. The same classes
travel both ways: the client encodes what the sandbox decodes and vice versa. Secrets (media
tokens) are kept out of reprs.

Names follow the wire: requests are imperatives of what they ask (``SessionOpen``), pushes from
the server are nouns or past participles (``SessionNotify``, ``SessionClosed``). Requests carry
their ``req_id``; the one :class:`Response` to each carries it back.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._audio import SAMPLE_RATES
from ._states import AudioMode

__all__ = [
    "AudioFrame",
    "BufferRequest",
    "CallErrorEvent",
    "CallFlowSetup",
    "CallIn",
    "CallTerminatedEvent",
    "CommandRequest",
    "CommandResponse",
    "ControlMessage",
    "ControlRequest",
    "ErrorMessage",
    "MediaMessage",
    "Response",
    "SessionClosed",
    "SessionCreate",
    "SessionNotify",
    "SessionOpen",
    "SessionReady",
    "Setup",
    "SetupDone",
    "UnknownCallEvent",
    "UnknownMessage",
    "WaMessageOut",
]


def _check_rate(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value not in SAMPLE_RATES:
        rates = ", ".join(str(r) for r in sorted(SAMPLE_RATES))
        raise ValueError(f"{attr.name} must be one of {rates}, not {value!r}")


def _non_negative(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attr.name} must be >= 0, not {value}")


def _secret(_value: object) -> str:
    return "<hidden>"


# --- control plane: client -> server --------------------------------------------------------------


@attrs.frozen
class Setup:
    """First frame of every control connection: the audio format of its calls."""

    sample_rate: int = attrs.field(default=24000, validator=_check_rate)
    audio_mode: AudioMode = attrs.field(default=AudioMode.MIXED, converter=AudioMode)


@attrs.frozen
class SessionOpen:
    """Claim a session (the first claim of a connector's connections binds it)."""

    session_id: str
    req_id: str


@attrs.frozen
class SessionReady:
    """The client is ready for the session's events (``call.in``); no response."""

    session_id: str


@attrs.frozen
class SessionCreate:
    """Start an outbound session: for ``TELCO``, a call to ``remote_address``."""

    channel: str
    remote_address: str
    req_id: str


@attrs.frozen
class CallFlowSetup:
    """Which calls and messages this connection handles, until it closes."""

    inbound_call: str
    outbound_call: bool
    inbound_message: bool
    outbound_message: bool
    req_id: str


@attrs.frozen
class WaMessageOut:
    """A messaging (WA) message out; the sandbox does not serve messaging and refuses it."""

    session_id: str
    client_msg_id: str
    api_version: str
    data: Any
    req_id: str


ControlRequest = SessionOpen | SessionCreate | CallFlowSetup | WaMessageOut


# --- control plane: server -> client --------------------------------------------------------------


@attrs.frozen
class SetupDone:
    """The control connection is ready; ``sm_ws_id`` is its id on the server."""

    sm_ws_id: str


@attrs.frozen
class ErrorMessage:
    """(ours) The setup was refused; the server closes with 1008 after it."""

    code: str
    message: str


@attrs.frozen
class Response:
    """The one answer to the request with ``req_id``."""

    req_id: str
    ok: bool
    content: Any = None
    error_code: str | None = None
    error_content: Any = None


@attrs.frozen
class SessionNotify:
    """A session the connection may claim: for ``TELCO``, a call ringing the connector."""

    session_id: str
    channel: str = "TELCO"
    remote_address: str = ""
    local_address: str = ""
    activity: str = "NEW_INCOMING_CALL"
    created_at: float = 0.0


@attrs.frozen
class CallIn:
    """The call of a readied session, and where its media connection is."""

    session_id: str
    call_id: str
    url: str
    token: str = attrs.field(repr=_secret)
    org_uuid: str = ""
    from_number: str = ""
    to_number: str = ""


@attrs.frozen
class SessionClosed:
    """A session is over; ``detail`` (ours) says more, e.g. ``CALL_UNANSWERED``."""

    session_id: str
    reason: str
    detail: str | None = None


# --- media plane ---------------------------------------------------------------------------------


@attrs.frozen
class CommandRequest:
    """Client → server: one command, answered by exactly one :class:`CommandResponse`."""

    command_id: str
    command: str
    timeout_ms: int = attrs.field(validator=_non_negative)
    data: dict[str, Any] | None = None


@attrs.frozen
class CommandResponse:
    """Server → client: the outcome of the command with the same ``command_id``."""

    command_id: str
    success: bool
    result: Any = None
    error_code: str | None = None
    error_message: str | None = None


@attrs.frozen
class CallTerminatedEvent:
    """``call_event`` ``call.terminated``: the call is over for the agent."""

    reason: str


@attrs.frozen
class CallErrorEvent:
    """``call_event`` ``call.error``: a non-fatal error report (e.g. ``TTS_SESSION_ERROR``)."""

    error_code: str | None
    error_message: str | None
    data: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class UnknownCallEvent:
    """A ``call_event`` this version does not know (ignored: forward compatibility)."""

    event: str


@attrs.frozen
class BufferRequest:
    """Server → client: credit to send ``requested_bytes`` more bytes of audio on ``channel_id``.

    ``prefer_audio_frame_bytes`` is the preferred size of a frame (0: not said).
    """

    requested_bytes: int = attrs.field(validator=_non_negative)
    prefer_audio_frame_bytes: int = attrs.field(default=0, validator=_non_negative)
    channel_id: int = 0


@attrs.frozen
class AudioFrame:
    """A binary frame: PCM16 on a channel (see ``CHANNEL_*``)."""

    channel: int
    pcm: bytes = attrs.field(repr=lambda pcm: f"<{len(pcm)} bytes>")


@attrs.frozen
class UnknownMessage:
    """A text frame of a ``type`` this version does not know (ignored: forward compatibility)."""

    type: str


ControlMessage = (
    Setup
    | SessionOpen
    | SessionReady
    | SessionCreate
    | CallFlowSetup
    | WaMessageOut
    | SetupDone
    | ErrorMessage
    | Response
    | SessionNotify
    | CallIn
    | SessionClosed
    | UnknownMessage
)
MediaMessage = (
    CommandRequest
    | CommandResponse
    | CallTerminatedEvent
    | CallErrorEvent
    | UnknownCallEvent
    | BufferRequest
    | AudioFrame
    | UnknownMessage
)
