"""The sandbox's side of each WebSocket: a client's control session and an agent's media session.

The media session owns the agent's playout buffer: audio the agent sends (within credit) is queued
there and drained 20 ms per tick by the call; every drained byte is granted back as credit, which
is what makes the protocol's flow control pull-based.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio

from .._core import (
    AgentAudioReceived,
    AudioMode,
    CommandRequest,
    ControlMessage,
    ControlProtocol,
    LocalProtocolError,
    MediaProtocol,
    ProtocolError,
    Role,
)
from .._net import ConnectionClosed, WebSocketConnection

if TYPE_CHECKING:
    from ._call import SimCall

__all__ = ["AgentMedia", "ControlSession"]

logger = logging.getLogger("telcoflow.sandbox")

#: The agent's playout buffer holds 200 ms: enough to ride out scheduling jitter, little enough
#: that an interruption never leaves much stale audio, and the credit an agent starts with.
PLAYOUT_MS = 200


class ControlSession:
    """One client's control connection, after a successful setup."""

    def __init__(
        self,
        conn: WebSocketConnection,
        proto: ControlProtocol,
        *,
        connector_uuid: str,
        connection_id: str,
        sample_rate: int,
        audio_mode: AudioMode,
        media_base: str,
    ) -> None:
        self.conn = conn
        self.proto = proto
        self.connector_uuid = connector_uuid
        self.connection_id = connection_id
        self.sample_rate = sample_rate
        self.audio_mode = audio_mode
        self.media_base = media_base
        self.alive = True

    def __repr__(self) -> str:
        return f"<ControlSession {self.connection_id} {self.connector_uuid} {self.sample_rate} Hz>"

    async def send(self, msg: ControlMessage) -> bool:
        """Send ``msg``; False if the connection is gone."""
        if not self.alive:
            return False
        try:
            await self.conn.send(self.proto.send(msg))
        except (ConnectionClosed, LocalProtocolError):
            self.alive = False
            return False
        return True


class AgentMedia:
    """An agent's media connection to one call (the server role of the media plane)."""

    def __init__(self, call: SimCall, conn: WebSocketConnection, session: ControlSession) -> None:
        self.call = call
        self.conn = conn
        #: The control connection whose offer this media connection claimed.
        self.session = session
        self.audio_mode = session.audio_mode
        sample_rate = session.sample_rate
        self.proto = MediaProtocol(Role.SERVER, sample_rate=sample_rate)
        self.frame_bytes = self.proto.frame_bytes
        self.capacity = sample_rate * 2 * PLAYOUT_MS // 1000
        self.playout = bytearray()
        self.received_bytes = 0
        self.audio_started = False
        self.pending_gap_ms = 0
        #: Send time of each 20 ms frame of the agent's inbound stream, for echo latency.
        self.sent_times: list[float] = []
        self.closed = False
        #: Dropped by a fault: the call sees the loss as ``media_lost``, not as the agent closing.
        self.lost = False

    # --- outbound --------------------------------------------------------------------------------

    async def send(self, messages: list[str | bytes]) -> None:
        """Send frames; a gone connection is noticed by the reader, not here."""
        if self.closed:
            return
        try:
            await self.conn.send_many(messages)
        except ConnectionClosed:
            self.closed = True

    async def start(self) -> None:
        """Grant the initial credit: a full playout buffer."""
        await self.send([self.proto.grant(self.capacity)])

    def regrant(self) -> str | None:
        """Credit for the room the playout buffer has, once it is worth a frame or the buffer
        has run dry (so the agent's credit tells it, to the byte, that all it sent has played)."""
        room = self.capacity - len(self.playout) - self.proto.credit
        if room >= self.frame_bytes or (room > 0 and not self.playout):
            return self.proto.grant(room)
        return None

    async def respond(
        self,
        command_id: str,
        success: bool,
        error_code: str | None = None,
        error_message: str | None = None,
        result: Any = None,
    ) -> None:
        """The response to ``command_id``, unless it was already answered (for example with
        ``CALL_TERMINATED`` when the call ended while the command was under way)."""
        try:
            wire = self.proto.respond(command_id, success, result, error_code, error_message)
        except LocalProtocolError:
            return
        await self.send([wire])

    async def terminate(self, reason: str) -> None:
        """Answer what is still open, send ``call.terminated`` and close with 1000."""
        if self.closed:
            return
        for command_id in self.proto.open_command_ids():
            await self.respond(command_id, False, "CALL_TERMINATED", "the call has ended")
        await self.send([self.proto.terminate(reason)])
        self.closed = True
        await self.conn.aclose(1000, reason)

    # --- playout ---------------------------------------------------------------------------------

    def pop_frame(self) -> bytes:
        """The next 20 ms the agent says, or ``b""`` (an underrun once the agent has spoken)."""
        n = self.frame_bytes
        if not self.playout:
            if self.audio_started:
                self.pending_gap_ms += 20
            return b""
        chunk = bytes(self.playout[:n])
        del self.playout[:n]
        if len(chunk) < n:
            chunk += bytes(n - len(chunk))
        return chunk

    def interrupt(self) -> None:
        """Drop the playout buffer (``agent.interrupt``); the room is granted on the next tick."""
        self.playout.clear()
        self.pending_gap_ms = 0
        self.audio_started = False

    def _audio(self, event: AgentAudioReceived, now: float) -> None:
        stats = self.call.stats
        stats.excess_bytes += event.excess_bytes
        pcm = event.pcm
        if not pcm:
            return
        stats.agent_bytes_received += len(pcm)
        if self.pending_gap_ms:
            stats.underrun_ms += self.pending_gap_ms
            self.pending_gap_ms = 0
        self.audio_started = True
        self.playout += pcm
        self.received_bytes += len(pcm)
        index = (self.received_bytes - 1) // self.frame_bytes
        if index < len(self.sent_times):
            stats.latency_samples.append((now - self.sent_times[index]) * 1000)

    # --- inbound ---------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Read the agent's frames until the connection closes."""
        proto, call = self.proto, self.call
        while True:
            try:
                raw = await self.conn.receive()
            except ConnectionClosed:
                self.closed = True
                return
            try:
                event = proto.receive(raw)
            except ProtocolError as exc:
                call.stats.protocol_errors += 1
                logger.info("call %s: dropped bad frame from agent: %s", call.call_id, exc)
                continue
            if isinstance(event, AgentAudioReceived):
                self._audio(event, anyio.current_time())
            elif isinstance(event, CommandRequest):
                await call.handle_command(self, event)
            else:
                logger.debug("call %s: ignoring %r from agent", call.call_id, event)
