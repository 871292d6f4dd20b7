"""The media plane as a pure state machine, for either role.

The client side correlates command responses with the commands it sent, keeps the call's state as
the server's answers imply it, and accounts the credit granted by ``buffer_request`` frames so
that it never sends audio beyond it. The server side (the sandbox) checks that every command gets
exactly one response and counts audio sent beyond credit. No I/O, no clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import attrs

from ._codec import MAX_CREDIT_GRANT_BYTES, MAX_TIMEOUT_MS, Role, decode_audio, decode_media, encode
from ._errors import LocalProtocolError, RemoteProtocolError
from ._messages import (
    CHANNEL_MIXED,
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
from ._states import CallState, Command, frame_bytes_for, state_after

__all__ = [
    "AgentAudioReceived",
    "CommandCompleted",
    "MediaEvent",
    "MediaProtocol",
    "MessageIgnored",
]


@attrs.frozen
class CommandCompleted:
    """Client: the response to a command we sent; ``state`` is the call's state after it."""

    command: Command
    response: CommandResponse
    state: CallState


@attrs.frozen
class MessageIgnored:
    """A well-formed message that has no effect here (late response, foreign credit, ...)."""

    reason: str


@attrs.frozen
class AgentAudioReceived:
    """Server: audio from the agent, cut to the credit it had; ``excess_bytes`` were beyond it."""

    pcm: bytes = attrs.field(repr=lambda pcm: f"<{len(pcm)} bytes>")
    excess_bytes: int


MediaEvent = (
    AudioFrame
    | CommandRequest
    | CommandCompleted
    | BufferRequest
    | CallTerminatedEvent
    | CallErrorEvent
    | UnknownCallEvent
    | UnknownMessage
    | MessageIgnored
    | AgentAudioReceived
)

_COMMANDS: Mapping[str, Command] = {c.value: c for c in Command}


class MediaProtocol:
    """One media connection's protocol state, as seen by ``role``."""

    def __init__(self, role: Role, *, sample_rate: int = 24000) -> None:
        self.role = role
        #: The call's state as this side knows it (the client's view follows the server's answers).
        self.call_state = CallState.PENDING
        #: Bytes of audio granted and not yet sent (client) or not yet received (server).
        self.credit = 0
        #: Preferred size of one audio frame's payload (20 ms unless the server asks otherwise).
        self.frame_bytes = frame_bytes_for(sample_rate)
        #: Open commands: command_id -> command (client: sent; server: received, not answered).
        self._open: dict[str, Command | str] = {}
        self._ids = itertools.count(1)
        self.terminated = False

    # --- client ----------------------------------------------------------------------------------

    def _require(self, role: Role, what: str) -> None:
        if self.role is not role:
            raise LocalProtocolError(f"only the {role.value} may {what}")

    def command(
        self, command: Command, timeout_ms: int, data: dict[str, Any] | None = None
    ) -> tuple[str, str]:
        """Client: a new command's id and wire text. The response will be correlated by the id."""
        self._require(Role.CLIENT, "send commands")
        if self.terminated:
            raise LocalProtocolError(f"cannot send {command.value}: the call has terminated")
        if not 0 < timeout_ms <= MAX_TIMEOUT_MS:
            raise LocalProtocolError(f"timeout_ms must be in 1..{MAX_TIMEOUT_MS}")
        command_id = f"c{next(self._ids)}"
        self._open[command_id] = command
        wire = encode(CommandRequest(command_id, command.value, timeout_ms, data))
        assert isinstance(wire, str)
        return command_id, wire

    def forget_command(self, command_id: str) -> None:
        """Client: stop waiting for ``command_id`` (timed out); a late response is then ignored."""
        self._open.pop(command_id, None)

    def open_command_ids(self) -> list[str]:
        """Commands sent and not yet answered (client), or received and not answered (server)."""
        return list(self._open)

    def take_audio(self, buffer: bytearray, max_frames: int | None = None) -> list[bytes]:
        """Client: cut as much of ``buffer`` as credit allows into wire frames, removing it.

        Frames are ``frame_bytes`` long except possibly the last; only whole samples are sent;
        at most ``max_frames`` frames (a server asking for tiny frames cannot make one call cut
        its whole buffer into thousands of frames at once).
        """
        available = min(len(buffer), self.credit) & ~1
        if max_frames is not None:
            available = min(available, max_frames * self.frame_bytes)
        if available <= 0:
            return []
        size = self.frame_bytes
        prefix = b"\x00"
        frames = [prefix + buffer[i : min(i + size, available)] for i in range(0, available, size)]
        del buffer[:available]
        self.credit -= available
        return frames

    # --- server ----------------------------------------------------------------------------------

    def grant(self, requested_bytes: int, channel_id: int = CHANNEL_MIXED) -> str:
        """Server: grant ``requested_bytes`` more bytes of credit."""
        self._require(Role.SERVER, "grant credit")
        if not 0 <= requested_bytes <= MAX_CREDIT_GRANT_BYTES:
            raise LocalProtocolError(
                f"a grant must be within 0..{MAX_CREDIT_GRANT_BYTES} bytes, not {requested_bytes}"
            )
        self.credit += requested_bytes
        wire = encode(BufferRequest(requested_bytes, self.frame_bytes, channel_id))
        assert isinstance(wire, str)
        return wire

    def respond(
        self,
        command_id: str,
        success: bool,
        result: Any = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> str:
        """Server: the one response to ``command_id``."""
        self._require(Role.SERVER, "respond to commands")
        if self._open.pop(command_id, None) is None:
            raise LocalProtocolError(f"command {command_id!r} is not open: one response each")
        wire = encode(CommandResponse(command_id, success, result, error_code, error_message))
        assert isinstance(wire, str)
        return wire

    def terminate(self, reason: str) -> str:
        """Server: the ``call.terminated`` event; the call is over for the agent."""
        self._require(Role.SERVER, "terminate calls")
        self.terminated = True
        self.call_state = CallState.DISCONNECTED
        wire = encode(CallTerminatedEvent(reason))
        assert isinstance(wire, str)
        return wire

    # --- both ------------------------------------------------------------------------------------

    def receive(self, raw: str | bytes) -> MediaEvent:
        """Decode and account one message from the peer."""
        if self.role is Role.CLIENT:
            if isinstance(raw, bytes):
                return decode_audio(raw)  # the hot path: no state to update
            return self._client_receive(decode_media(raw, Role.CLIENT))
        return self._server_receive(decode_media(raw, Role.SERVER))

    def _client_receive(self, msg: MediaMessage) -> MediaEvent:
        match msg:
            case CommandResponse(command_id=command_id):
                command = self._open.pop(command_id, None)
                if command is None:
                    return MessageIgnored(
                        f"response to unknown or timed-out command {command_id!r}"
                    )
                assert isinstance(command, Command)
                if msg.success and not self.terminated:
                    self.call_state = self._state_after(command)
                return CommandCompleted(command, msg, self.call_state)
            case BufferRequest(channel_id=channel):
                if channel != CHANNEL_MIXED:
                    return MessageIgnored(f"credit for channel {channel}; the agent sends on 0")
                if self.terminated:
                    return MessageIgnored("credit after call.terminated")
                self.credit += msg.requested_bytes
                self.frame_bytes = msg.prefer_audio_frame_bytes
                return msg
            case CallTerminatedEvent():
                self.terminated = True
                self.call_state = CallState.DISCONNECTED
                self.credit = 0  # nothing more may be sent
                self._open.clear()
                return msg
            case CommandRequest():
                raise RemoteProtocolError("the server sent a command frame")  # pragma: no cover
            case AudioFrame() | CallErrorEvent() | UnknownCallEvent() | UnknownMessage():
                return msg
        raise RemoteProtocolError(f"unexpected {type(msg).__name__} from the server")

    def _state_after(self, command: Command) -> CallState:
        state = self.call_state
        if command in (Command.CLOSE, Command.DISCONNECT):
            return CallState.DISCONNECTED
        try:
            return state_after(state, command)
        except LocalProtocolError:
            # The server is the authority: it accepted a command our table refuses. Keep our
            # state rather than guess.
            return state

    def _server_receive(self, msg: MediaMessage) -> MediaEvent:
        match msg:
            case AudioFrame(channel=channel, pcm=pcm):
                if channel != CHANNEL_MIXED:
                    raise RemoteProtocolError(
                        f"agent audio on channel {channel}; only 0 is allowed"
                    )
                allowed = min(len(pcm), self.credit)
                self.credit -= allowed
                if allowed == len(pcm):
                    return AgentAudioReceived(pcm, 0)
                return AgentAudioReceived(pcm[:allowed], len(pcm) - allowed)
            case CommandRequest(command_id=command_id):
                if command_id in self._open:
                    raise RemoteProtocolError(f"command_id {command_id!r} reused while open")
                self._open[command_id] = _COMMANDS.get(msg.command, msg.command)
                return msg
            case UnknownMessage():
                return msg
        raise RemoteProtocolError(f"unexpected {type(msg).__name__} from the agent")
