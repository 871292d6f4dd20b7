"""The media plane as a pure state machine, for either role.

Client: correlates command responses with the commands it sent, keeps the call's state as the
agent sees it (the server's answers imply it, through the table in :mod:`._states`), and
accounts the credit granted by ``buffer_request`` frames so that it never sends audio beyond it.
Server (the sandbox): checks that every command gets exactly one response and counts audio sent
beyond credit. No I/O, no clock.

The credit model (PROTOCOL.md, ``buffer_request``): the server is the authority on how much
audio it can take. Each grant adds to one pooled counter (:attr:`MediaProtocol.credit`); every
byte sent takes one from it, on both sides, so both counters agree to the byte without any
message saying so. The client cuts frames of ``prefer_audio_frame_bytes`` (20 ms at its rate
when the server does not say) and never sends a byte beyond credit; the server drops and counts
what arrives beyond it. Grants on channels other than 0 are not for the agent and are ignored.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ._audio import CHANNEL_MIXED, SAMPLE_RATES, encode_audio, frame_bytes_for
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import AgentAudioReceived, CommandCompleted, MessageIgnored
from ._media_codec import decode_audio, decode_media, encode_media
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
from ._states import CallState, Command, agent_leaves, state_after
from ._wire import MAX_CREDIT_GRANT_BYTES, MAX_TIMEOUT_MS, Role

__all__ = ["MediaEvent", "MediaProtocol"]

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


def _uuid4() -> str:
    return str(uuid.uuid4())


class MediaProtocol:
    """One media connection's protocol state, as seen by ``role``.

    ``new_id`` makes command ids (uuid4 strings, as the official client's; injectable so that
    tests are deterministic).
    """

    def __init__(
        self, role: Role, *, sample_rate: int = 24000, new_id: Callable[[], str] = _uuid4
    ) -> None:
        if sample_rate not in SAMPLE_RATES:
            raise LocalProtocolError(
                f"sample_rate must be one of 8000, 16000, 24000, not {sample_rate!r}"
            )
        self.role = role
        #: Client: the call's state as the agent sees it (following the server's answers).
        self.call_state = CallState.PENDING
        #: Bytes of audio granted and not yet sent (client) or not yet received (server).
        self.credit = 0
        #: Size of one audio frame's payload: what the server prefers, else 20 ms at our rate.
        self._default_frame = frame_bytes_for(sample_rate)
        self.frame_bytes = self._default_frame
        #: Open commands: command_id -> command (client: sent; server: received, not answered).
        self._open: dict[str, Command | str] = {}
        self._new_id = new_id
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
        command_id = self._new_id()
        if command_id in self._open:
            raise LocalProtocolError(f"command id {command_id!r} is already open")
        self._open[command_id] = command
        return command_id, encode_media(CommandRequest(command_id, command.value, timeout_ms, data))

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
        size = self.frame_bytes
        if max_frames is not None:
            available = min(available, max_frames * size)
        if available <= 0:
            return []
        frames = [
            encode_audio(CHANNEL_MIXED, buffer[i : min(i + size, available)])
            for i in range(0, available, size)
        ]
        del buffer[:available]
        self.credit -= available
        return frames

    def terminate_locally(self) -> None:
        """Client: the call is over for the agent without the server saying so (the media
        connection was lost, or torn down here): nothing more may be sent."""
        self.terminated = True
        self.call_state = CallState.DISCONNECTED
        self.credit = 0
        self._open.clear()

    # --- server ----------------------------------------------------------------------------------

    def grant(self, requested_bytes: int, channel_id: int = CHANNEL_MIXED) -> str:
        """Server: grant ``requested_bytes`` more bytes of credit."""
        self._require(Role.SERVER, "grant credit")
        if not 0 <= requested_bytes <= MAX_CREDIT_GRANT_BYTES:
            raise LocalProtocolError(
                f"a grant must be within 0..{MAX_CREDIT_GRANT_BYTES} bytes, not {requested_bytes}"
            )
        if channel_id == CHANNEL_MIXED:  # credit on another channel is not the agent's
            self.credit += requested_bytes
        return encode_media(BufferRequest(requested_bytes, self.frame_bytes, channel_id))

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
        return encode_media(CommandResponse(command_id, success, result, error_code, error_message))

    def terminate(self, reason: str) -> str:
        """Server: the ``call.terminated`` event; the call is over for the agent."""
        self._require(Role.SERVER, "terminate calls")
        self.terminated = True
        return encode_media(CallTerminatedEvent(reason))

    def call_error(self, error_code: str, error_message: str | None = None) -> str:
        """Server: a non-fatal ``call.error`` report."""
        self._require(Role.SERVER, "report call errors")
        return encode_media(CallErrorEvent(error_code, error_message))

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
                if msg.requested_bytes <= 0:
                    return MessageIgnored("a grant of no bytes")
                self.credit += msg.requested_bytes
                self.frame_bytes = msg.prefer_audio_frame_bytes or self._default_frame
                return msg
            case CallTerminatedEvent():
                self.terminate_locally()
                return msg
            case CommandRequest():
                raise RemoteProtocolError("the server sent a command frame")  # pragma: no cover
            case AudioFrame() | CallErrorEvent() | UnknownCallEvent() | UnknownMessage():
                return msg
        raise RemoteProtocolError(f"unexpected {type(msg).__name__} from the server")

    def _state_after(self, command: Command) -> CallState:
        if agent_leaves(command):
            return CallState.DISCONNECTED
        try:
            return state_after(self.call_state, command)
        except LocalProtocolError:
            # The server is the authority: it accepted a command our table does not allow in
            # the state we believe the call is in. Keep that state rather than guess one.
            return self.call_state

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
