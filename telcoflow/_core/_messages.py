"""Typed messages for every frame of PROTOCOL.md.

Each class is one wire frame, frozen and slotted, validated at construction. The same classes travel
both ways: the client encodes what the sandbox decodes and vice versa. Secrets (media tokens) are
kept out of reprs.
"""

from __future__ import annotations

from typing import Any

import attrs

from ._states import SAMPLE_RATES, AudioMode

__all__ = [
    "AudioFrame",
    "BufferRequest",
    "CallEnded",
    "CallErrorEvent",
    "CallIncoming",
    "CallTerminatedEvent",
    "CommandRequest",
    "CommandResponse",
    "ControlMessage",
    "ErrorMessage",
    "MediaMessage",
    "Setup",
    "SetupDone",
    "UnknownCallEvent",
    "UnknownMessage",
]

#: Channel ids of binary frames: 0 is the agent's mixed audio (and the only channel the agent may
#: send on); 1 and 2 are the caller's and the callee's legs in isolated mode.
CHANNEL_MIXED = 0
CHANNEL_CALLER = 1
CHANNEL_CALLEE = 2
CHANNELS = frozenset({CHANNEL_MIXED, CHANNEL_CALLER, CHANNEL_CALLEE})


def _check_rate(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value not in SAMPLE_RATES:
        raise ValueError(f"{attr.name} must be one of 8000, 16000, 24000, not {value!r}")


def _non_negative(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attr.name} must be >= 0, not {value}")


# --- control plane -------------------------------------------------------------------------------


@attrs.frozen
class Setup:
    """Client → server, first control frame: the audio format for this connection."""

    sample_rate: int = attrs.field(default=24000, validator=_check_rate)
    audio_mode: AudioMode = attrs.field(default=AudioMode.MIXED, converter=AudioMode)


@attrs.frozen
class SetupDone:
    """Server → client: the control connection is ready for call offers."""

    connection_id: str


@attrs.frozen
class ErrorMessage:
    """Server → client: the setup was refused; the server closes with 1008 after it."""

    code: str
    message: str


@attrs.frozen
class CallIncoming:
    """Server → client: a call is offered; the client opens its media connection at once."""

    call_id: str
    from_number: str
    to_number: str
    direction: str
    media_url: str
    media_token: str = attrs.field(repr=False)
    created_at: float


@attrs.frozen
class CallEnded:
    """Server → client: an offered call ended before its media connection opened."""

    call_id: str
    reason: str


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
    """Server → client ``call_event`` ``call.terminated``: the call is over for the agent."""

    reason: str


@attrs.frozen
class CallErrorEvent:
    """Server → client ``call_event`` ``call.error``: a non-fatal error report."""

    error_code: str
    message: str


@attrs.frozen
class UnknownCallEvent:
    """A ``call_event`` whose name this version does not know (ignored: forward compatibility)."""

    event: str


@attrs.frozen
class BufferRequest:
    """Server → client: credit to send ``requested_bytes`` more bytes of audio on ``channel_id``."""

    requested_bytes: int = attrs.field(validator=_non_negative)
    prefer_audio_frame_bytes: int = attrs.field(validator=_non_negative)
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


ControlMessage = Setup | SetupDone | ErrorMessage | CallIncoming | CallEnded | UnknownMessage
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
