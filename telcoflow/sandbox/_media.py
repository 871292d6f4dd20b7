"""The sandbox's side of an agent's media connection: credit, the agent's playout buffer, and
the commands it sends.

The media session owns the agent's playout buffer: audio the agent sends (within credit) is
queued there and drained 20 ms per tick by the call; every drained byte is granted back as
credit, which is what makes the protocol's flow control pull-based. Agent audio is a byte
stream: a frame of odd length leaves its last byte in the buffer, to be played with the next
(PROTOCOL.md: "a trailing odd byte is kept for the next frame, not dropped").
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Protocol

import anyio

from .._core import (
    AgentAudioReceived,
    AudioMode,
    CommandRequest,
    ErrorCode,
    LocalProtocolError,
    MediaProtocol,
    ProtocolError,
    Role,
)
from .._net import ConnectionClosed, WebSocketConnection, open_link

__all__ = ["AgentMedia", "CallStats", "CommandHandler"]

logger = logging.getLogger("telcoflow.sandbox")

#: The agent's playout buffer holds 200 ms: enough to ride out scheduling jitter, little enough
#: that an interruption never leaves much stale audio, and the credit an agent starts with.
PLAYOUT_MS = 200

#: Echo latency samples kept per call (the most recent: 200 s of 20 ms frames), and how far back
#: the send times of the agent's inbound frames are remembered to measure them (30 s).
MAX_LATENCY_SAMPLES = 10_000
SENT_TIMES_KEPT = 1500

#: The sandbox pings its peers this often and drops those that do not answer in time.
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 10.0


class CallStats:
    """What the sandbox measured of the agent on one call."""

    def __init__(self) -> None:
        self.agent_bytes_received = 0
        self.underrun_ms = 0
        self.excess_bytes = 0
        self.protocol_errors = 0
        #: Media time the sandbox could not keep up with (an overloaded machine): audio lost.
        self.skipped_ms = 0
        self.latency_samples: deque[float] = deque(maxlen=MAX_LATENCY_SAMPLES)

    def latency(self) -> dict[str, float] | None:
        """Echo latency p50/p99 in milliseconds, or None before any echoed byte."""
        samples = sorted(self.latency_samples)
        if not samples:
            return None

        def pct(p: float) -> float:
            return round(samples[min(len(samples) - 1, int(p * len(samples)))], 2)

        return {"p50": pct(0.50), "p99": pct(0.99)}

    def to_json(self) -> dict[str, Any]:
        """The stats as the HTTP API shows them."""
        return {
            "agent_bytes_received": self.agent_bytes_received,
            "underrun_ms": self.underrun_ms,
            "excess_bytes": self.excess_bytes,
            "protocol_errors": self.protocol_errors,
            "skipped_ms": self.skipped_ms,
            "echo_latency_ms": self.latency(),
        }


class CommandHandler(Protocol):
    """What the media session needs of its call."""

    call_id: str
    stats: CallStats

    async def handle_command(self, agent: AgentMedia, req: CommandRequest) -> None:
        """Carry out one command and send its one response."""
        ...


class AgentMedia:
    """An agent's media connection to one call (the server role of the media plane)."""

    def __init__(
        self,
        call: CommandHandler,
        conn: WebSocketConnection,
        *,
        sample_rate: int,
        audio_mode: AudioMode,
        sm_ws_id: str,
    ) -> None:
        self.call = call
        self.conn = conn
        #: The control connection whose claim this media connection completes.
        self.sm_ws_id = sm_ws_id
        self.audio_mode = audio_mode
        self.proto = MediaProtocol(Role.SERVER, sample_rate=sample_rate)
        self.frame_bytes = self.proto.frame_bytes
        self.capacity = sample_rate * 2 * PLAYOUT_MS // 1000
        self.playout = bytearray()
        self.received_bytes = 0
        self.audio_started = False
        self.pending_gap_ms = 0
        #: Send time of the recent 20 ms frames of the agent's inbound stream (echo latency):
        #: frame ``_frames_sent - len(sent_times) + i`` was sent at ``sent_times[i]``.
        self.sent_times: deque[float] = deque(maxlen=SENT_TIMES_KEPT)
        self._frames_sent = 0
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

    async def report_error(self, error_code: str, error_message: str | None) -> None:
        """A non-fatal ``call.error`` (the ``call_error`` fault)."""
        await self.send([self.proto.call_error(error_code, error_message)])

    async def terminate(self, reason: str) -> None:
        """Answer what is still open, send ``call.terminated`` and close with 1000."""
        if self.closed:
            return
        for command_id in self.proto.open_command_ids():
            await self.respond(command_id, False, ErrorCode.CALL_TERMINATED, "the call has ended")
        await self.send([self.proto.terminate(reason)])
        self.closed = True
        await self.conn.aclose(1000, reason)

    # --- playout ---------------------------------------------------------------------------------

    def pop_frame(self) -> bytes:
        """The next 20 ms the agent says, or ``b""`` (an underrun once the agent has spoken).

        A buffer holding less than a frame plays what it has, padded with silence; a last odd
        byte waits for the byte that completes its sample.
        """
        n = self.frame_bytes
        playout = self.playout
        if len(playout) < 2:
            if self.audio_started:
                self.pending_gap_ms += 20
            return b""
        take = min(n, len(playout) & ~1)
        chunk = bytes(playout[:take])
        del playout[:take]
        if take < n:
            chunk += bytes(n - take)
        return chunk

    def frame_sent(self, now: float) -> None:
        """A 20 ms frame of what the agent hears was sent now (for echo latency)."""
        self.sent_times.append(now)
        self._frames_sent += 1

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
        kept = index - (self._frames_sent - len(self.sent_times))
        if 0 <= kept < len(self.sent_times):
            stats.latency_samples.append((now - self.sent_times[kept]) * 1000)

    # --- inbound ---------------------------------------------------------------------------------

    def _bad_frame(self, _exc: ProtocolError) -> None:
        self.call.stats.protocol_errors += 1

    async def serve(self) -> None:
        """Read the agent's frames until the connection closes."""
        async with open_link(
            self.conn,
            self.proto.receive,
            logger=logger,
            ping_interval=PING_INTERVAL_S,
            ping_timeout=PING_TIMEOUT_S,
            loud_level=logging.INFO,
            task_name="telcoflow.sandbox.media.heartbeat",
            on_bad_frame=self._bad_frame,
        ) as link:
            async for event in link:
                if isinstance(event, AgentAudioReceived):
                    self._audio(event, anyio.current_time())
                elif isinstance(event, CommandRequest):
                    await self.call.handle_command(self, event)
                else:
                    logger.debug("call %s: ignoring %r from agent", self.call.call_id, event)
        self.closed = True
