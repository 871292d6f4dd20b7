"""``ActiveCall``: one call's commands, audio and events, over its own media connection.

Each call is supervised by its own task group inside the client's: a reader (routes audio into a
bounded memory channel, command responses to their waiters, events to the dispatcher), a
credit-driven sender, a heartbeat, an event dispatcher that runs handlers one at a time in order,
and the application's incoming-call handler. When the call ends the I/O tasks stop, the events
already fired are still delivered, and the handler may finish its own work.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, overload

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from . import events
from ._core import (
    CHANNEL_CALLEE,
    CHANNEL_CALLER,
    CHANNEL_MIXED,
    MAX_RING_TIME_S,
    AgentMode,
    AudioFrame,
    AudioMode,
    BufferRequest,
    CallErrorEvent,
    CallState,
    CallTerminatedEvent,
    Command,
    CommandCompleted,
    Direction,
    ErrorCode,
    MediaEvent,
    MediaProtocol,
    MessageIgnored,
    Role,
    TerminationReason,
    UnknownCallEvent,
    UnknownMessage,
    agent_mode_after,
    frame_bytes_for,
)
from ._handlers import H, HandlerRegistry
from ._net import ConnectionClosed, Pulse, WebSocketConnection, open_link
from .config import TelcoflowClientConfig
from .exceptions import (
    BufferClosedError,
    BufferFullError,
    WSSCallClosedError,
    WSSCallCommandError,
    WSSCallCommandTimeoutError,
    WSSCallError,
)

__all__ = ["ActiveCall", "CallDetails", "CallStats"]

logger = logging.getLogger("telcoflow_sdk.media_connection")

_FAILED_EVENT = {
    Command.ANSWER: events.CALL_ANSWER_FAILED,
    Command.CONNECT: events.CALL_CONNECT_FAILED,
}
_DONE_EVENT = {Command.ANSWER: events.CALL_ANSWERED, Command.CONNECT: events.CALL_CONNECTED}

#: Frames per socket write at most: 1 s of 20 ms frames, so a burst of credit is sent in a few
#: writes, and a server asking for tiny frames cannot stall the event loop with one huge write.
MAX_FRAMES_PER_WRITE = 50

#: The longest ring time ``connect`` accepts (PROTOCOL.md).
MAX_RING_TIME_SECONDS = MAX_RING_TIME_S

_LEGS: dict[str, int] = {"mixed": CHANNEL_MIXED, "caller": CHANNEL_CALLER, "callee": CHANNEL_CALLEE}


@attrs.frozen
class CallDetails:
    """What the server told us about a call (``call.in``, and the notification before it)."""

    call_id: str
    session_id: str
    from_number: str
    to_number: str
    direction: str = Direction.INBOUND.value
    org_uuid: str = ""
    created_at: float = 0.0


class CallStats:
    """Counters of one call: audio each way, drops, protocol errors, command latencies."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "command_latencies_ms",
        "dropped_inbound_bytes",
        "dropped_inbound_chunks",
        "frames_received",
        "ignored_frames",
        "protocol_errors",
    )

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_received = 0
        self.dropped_inbound_chunks = 0
        self.dropped_inbound_bytes = 0
        #: Audio on channels this call does not read (not logged: a server may send them all).
        self.ignored_frames = 0
        self.protocol_errors = 0
        #: Round-trip time of each answered command, in milliseconds, by command name.
        self.command_latencies_ms: dict[str, list[float]] = {}

    def latency(self, command: str) -> dict[str, float] | None:
        """``{"count", "p50", "max"}`` of a command's latencies (ms), or None if never answered."""
        samples = sorted(self.command_latencies_ms.get(command, ()))
        if not samples:
            return None
        return {"count": len(samples), "p50": samples[len(samples) // 2], "max": samples[-1]}

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)}"
            for name in self.__slots__
            if name != "command_latencies_ms"
        )
        return f"CallStats({fields})"


class _Waiter:
    __slots__ = ("done", "outcome")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.outcome: CommandCompleted | WSSCallError | None = None


class _AudioQueue:
    """Inbound audio of one channel, bounded in chunks and in bytes: when full, the oldest audio
    is dropped (a slow consumer loses the past, never stalls the connection).

    Closing it keeps what is queued: audio heard before the call ended is still delivered, then
    iteration ends.
    """

    __slots__ = ("_bytes", "_chunks", "_max_bytes", "_max_chunks", "_pulse", "closed")

    def __init__(self, max_chunks: int, max_bytes: int) -> None:
        self._chunks: deque[bytes] = deque()
        self._bytes = 0
        self._max_chunks = max_chunks
        self._max_bytes = max_bytes
        self._pulse = Pulse()
        self.closed = False

    def close(self) -> None:
        self.closed = True
        self._pulse.fire()

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def put(self, chunk: bytes) -> int:
        """Queue ``chunk``; returns the bytes of older audio dropped to make room (0 if none;
        once closed, the chunk itself is dropped)."""
        if self.closed:
            return len(chunk)
        chunks = self._chunks
        chunks.append(chunk)
        self._bytes += len(chunk)
        dropped = 0
        while len(chunks) > self._max_chunks or (self._bytes > self._max_bytes and len(chunks) > 1):
            old = chunks.popleft()
            self._bytes -= len(old)
            dropped += len(old)
        self._pulse.fire()
        return dropped

    async def get(self) -> bytes | None:
        """The next chunk, or None once the queue is closed and empty."""
        while not self._chunks:
            if self.closed:
                return None
            await self._pulse.wait()
        chunk = self._chunks.popleft()
        self._bytes -= len(chunk)
        return chunk


class _AudioStream:
    """``async for chunk in call.audio_stream()``: ends when the call ends for the agent."""

    __slots__ = ("_queue",)

    def __init__(self, queue: _AudioQueue) -> None:
        self._queue = queue

    def __aiter__(self) -> _AudioStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._queue.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk


class ActiveCall:
    """A call offered to this agent. Created by the client; the application gets it from the
    ``INCOMING_CALL`` handler or :meth:`TelcoflowClient.get_call`."""

    def __init__(
        self,
        details: CallDetails,
        config: TelcoflowClientConfig,
        connection: WebSocketConnection,
        *,
        on_ended: Callable[[ActiveCall], None] | None = None,
        on_handler_error: Callable[[ActiveCall, BaseException], None] | None = None,
        state: CallState = CallState.PENDING,
    ) -> None:
        self._details = details
        self._on_handler_error = on_handler_error
        self._config = config
        self._conn = connection
        self._on_ended = on_ended
        #: Released (not answered) because its handler raised: its process must not claim
        #: it again when the server offers it anew (the handler would fail the same way).
        self._released_after_failure = False
        self._proto = MediaProtocol(Role.CLIENT, sample_rate=config.sample_rate)
        self._proto.call_state = state
        self._handlers = HandlerRegistry((e.value for e in events.CallEvent), "call")
        self._waiters: dict[str, _Waiter] = {}
        self._agent_mode: AgentMode | None = None
        self._termination_reason: str | None = None
        self._out = bytearray()
        self._out_capacity = config.send_buffer_bytes
        #: Fired to wake the sender task while it waits for audio or credit.
        self._sender_idle = Pulse()
        self._events_send, self._events_receive = anyio.create_memory_object_stream[
            tuple[str, Any]
        ](math.inf)
        chunks = config.audio_queue_chunks
        # Bounded in bytes too: a server sending large frames cannot make a call hold more
        # than this many 20 ms chunks' worth of audio.
        max_bytes = chunks * frame_bytes_for(config.sample_rate)
        channels = (
            (CHANNEL_MIXED, CHANNEL_CALLER, CHANNEL_CALLEE)
            if config.audio_mode is AudioMode.ISOLATED
            else (CHANNEL_MIXED,)
        )
        self._queues: dict[int, _AudioQueue] = {c: _AudioQueue(chunks, max_bytes) for c in channels}
        #: A trailing odd byte of a channel's last frame, kept for its next (audio is a stream).
        self._odd: dict[int, bytes] = {}
        self._io_scope: anyio.CancelScope | None = None
        # The call's tasks are shielded from the client's cancellation: on exit the client first
        # lets each call leave politely and deliver CALL_TERMINATED, then cancels this scope.
        self._scope = anyio.CancelScope(shield=True)
        self._events_done = anyio.Event()
        self._terminated = anyio.Event()
        self.stats = CallStats()
        # Playback accounting from the server's credit: its playout buffer holds `capacity`
        # bytes (the largest credit it ever granted at once), so capacity - credit is what it
        # still has to play, and every grant beyond the first is room that playing freed.
        self._capacity = 0
        self._granted = 0
        self._dropped = 0
        #: Fired when audio was sent or played, or the call ended.
        self._progress = Pulse()
        #: ``call.error`` reports so far (logged at WARNING a few times, then rarely).
        self._call_errors = 0

    def __repr__(self) -> str:
        return (
            f"<ActiveCall {self.call_id} {self.direction} {self.state.value} "
            f"from={self.caller_number} to={self.callee_number}>"
        )

    # --- properties ------------------------------------------------------------------------------

    @property
    def call_id(self) -> str:
        """The call's id (``call.in``'s ``callId``): the same id the sandbox's HTTP API uses."""
        return self._details.call_id

    @property
    def session_id(self) -> str:
        """The control-plane session the call belongs to."""
        return self._details.session_id

    @property
    def org_uuid(self) -> str:
        """The organisation the call belongs to, as the server names it (may be empty)."""
        return self._details.org_uuid

    @property
    def caller_number(self) -> str:
        """Who is calling (``call.in``'s ``from``; the connector's number on a dialled call)."""
        return self._details.from_number

    @property
    def callee_number(self) -> str:
        """The number called (``call.in``'s ``to``; the dialled number on a dialled call)."""
        return self._details.to_number

    @property
    def direction(self) -> str:
        """``"MT"`` for an inbound call to the connector's number, ``"MO"`` for one dialled."""
        return self._details.direction

    @property
    def created_at(self) -> float:
        """When the call was notified (unix seconds, the server's clock; 0 if not said)."""
        return self._details.created_at

    @property
    def state(self) -> CallState:
        """The call's state as the server's answers imply it."""
        return self._proto.call_state

    @property
    def agent_mode(self) -> AgentMode | None:
        """Who hears the agent once connected (barge, whisper, spy); ``None`` before."""
        return self._agent_mode

    @property
    def sample_rate(self) -> int:
        """Sample rate of every audio chunk in and out (Hz)."""
        return self._config.sample_rate

    @property
    def audio_mode(self) -> AudioMode:
        """``mixed`` (one inbound stream) or ``isolated`` (caller and callee legs apart)."""
        return self._config.audio_mode

    @property
    def inbound_buffered_bytes(self) -> int:
        """Audio received and not yet taken from ``audio_stream()``, in bytes (all legs): how
        far behind the application is. Bounded: past ``audio_queue_chunks`` 20 ms chunks'
        worth, the oldest audio is dropped."""
        return sum(q.buffered_bytes for q in self._queues.values())

    @property
    def termination_reason(self) -> str | None:
        """Why the call ended for the agent (the ``CALL_TERMINATED`` payload), or ``None``."""
        return self._termination_reason

    @property
    def is_active(self) -> bool:
        """True until the call has ended for the agent."""
        return self._termination_reason is None

    # --- playback position -----------------------------------------------------------------------

    @property
    def playout_pending_bytes(self) -> int:
        """Audio the server holds and has not played yet (from its credit accounting)."""
        return max(0, self._capacity - self._proto.credit)

    @property
    def played_bytes(self) -> int:
        """Audio the server has played to the call so far (interrupted audio not counted).

        Derived from the credit it grants back as it plays, so it lags real playout by at most
        one frame and one network round trip.
        """
        return max(0, self._granted - self._capacity - self._dropped)

    @property
    def played_seconds(self) -> float:
        """:attr:`played_bytes` in seconds at the call's sample rate."""
        return self.played_bytes / (2 * self.sample_rate)

    async def wait_played(self) -> None:
        """Wait until everything queued so far has been played (or the call ended): hang up
        after the last sentence, not during it."""
        while self._termination_reason is None and (self._out or self.playout_pending_bytes):
            await self._progress.wait()

    async def wait_played_bytes(self, n: int) -> bool:
        """Wait until :attr:`played_bytes` reaches ``n``; False if the call ended first.

        What a bridge times "first audio heard" by: the position of a sentence's first byte
        is ``played_bytes + get_send_audio_buffer_size() + playout_pending_bytes`` when it is
        queued, and it has been heard once ``played_bytes`` passes that.
        """
        while self.played_bytes < n:
            if self._termination_reason is not None:
                return False
            await self._progress.wait()
        return True

    # --- events ----------------------------------------------------------------------------------

    @overload
    def on(self, event: str, handler: None = None) -> Callable[[H], H]: ...
    @overload
    def on(self, event: str, handler: H) -> H: ...
    def on(self, event: str, handler: H | None = None) -> H | Callable[[H], H]:
        """Register a handler for a call event; usable as ``@call.on(events.CALL_TERMINATED)``.

        Handlers run one at a time, in the order events happened, each exactly once.
        """
        return self._handlers.on(event, handler)

    def _emit(self, name: str, payload: Any) -> None:
        try:
            self._events_send.send_nowait((name, payload))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            logger.debug("call %s: %s after the dispatcher stopped", self.call_id, name)

    async def wait_terminated(self) -> str:
        """Wait until the call has ended for the agent; returns the reason."""
        await self._terminated.wait()
        assert self._termination_reason is not None
        return self._termination_reason

    # --- commands --------------------------------------------------------------------------------

    async def answer(self) -> None:
        """Answer the call: the caller and the agent hear each other."""
        await self._command(Command.ANSWER)

    async def connect(self, ring_time_seconds: int = 60) -> None:
        """Ring the callee; on answer the call is CONNECTED (3-way, agent in barge mode).

        Raises :class:`WSSCallCommandError` with ``CALL_UNANSWERED`` or ``CALL_REJECTED`` when the
        callee does not pick up; the call then stays as it was.
        """
        check_ring_time(ring_time_seconds)
        # The server answers within the ring time, which is the command's timeout_ms (as the
        # official client sends it); we wait a command timeout longer for its answer.
        await self._command(
            Command.CONNECT,
            {"ringTimeSeconds": ring_time_seconds},
            ring_time_seconds + self._config.command_timeout,
            timeout_ms=ring_time_seconds * 1000,
        )

    async def whisper(self) -> None:
        """Only the callee hears the agent (coaching)."""
        await self._command(Command.WHISPER)

    async def barge(self) -> None:
        """Caller and callee both hear the agent."""
        await self._command(Command.BARGE)

    async def spy(self) -> None:
        """Nobody hears the agent; the agent still hears both."""
        await self._command(Command.SPY)

    async def disconnect(self) -> None:
        """End the call for everyone."""
        await self._command(Command.DISCONNECT)

    async def close(self) -> None:
        """The agent leaves. A CONNECTED caller and callee stay connected; an ANSWERED call ends."""
        await self._command(Command.CLOSE)

    async def force_disconnect(self) -> None:
        """Tear the media connection down locally without asking the server. Never raises."""
        try:
            self._terminate(TerminationReason.AGENT_FORCE_DISCONNECT.value)
            await self._conn.aclose(1000, "force disconnect")
        except Exception:  # pragma: no cover - aclose is shielded and swallows stream errors
            logger.debug("call %s: error while force-disconnecting", self.call_id, exc_info=True)

    async def _command(
        self,
        command: Command,
        data: dict[str, Any] | None = None,
        timeout: float | None = None,
        *,
        timeout_ms: int | None = None,
    ) -> Any:
        if self._termination_reason is not None:
            raise WSSCallClosedError(
                f"cannot {command.value}: call {self.call_id} has ended "
                f"({self._termination_reason})",
                self.call_id,
            )
        timeout = self._config.command_timeout if timeout is None else timeout
        if timeout_ms is None:
            timeout_ms = max(1, int(timeout * 1000))
        command_id, wire = self._proto.command(command, timeout_ms, data)
        waiter = self._waiters[command_id] = _Waiter()
        logger.debug("call %s: -> %s (%s)", self.call_id, command.value, command_id)
        started = anyio.current_time()
        try:
            # The send is inside the timeout too: a server that stops reading must not hold a
            # command past its timeout (the frame stays queued; a late answer is ignored).
            with anyio.move_on_after(timeout):
                try:
                    await self._conn.send(wire)
                except ConnectionClosed:
                    raise self._closed_error(command) from None
                await waiter.done.wait()
        finally:
            del self._waiters[command_id]
        outcome = waiter.outcome
        if outcome is None:
            self._proto.forget_command(command_id)
            error: WSSCallError = WSSCallCommandTimeoutError(
                f"{command.value} on call {self.call_id}: no response within {timeout:g} s",
                self.call_id,
                command=command.value,
                timeout=timeout,
            )
            if command in _FAILED_EVENT:
                self._emit(_FAILED_EVENT[command], error)
            raise error
        latency = (anyio.current_time() - started) * 1000
        self.stats.command_latencies_ms.setdefault(command.value, []).append(latency)
        if isinstance(outcome, WSSCallError):
            raise outcome
        return outcome.response.result

    def _closed_error(self, command: Command) -> WSSCallClosedError:
        reason = self._termination_reason or "media connection closed"
        return WSSCallClosedError(
            f"{command.value} on call {self.call_id}: the call ended ({reason})", self.call_id
        )

    def _complete(self, completed: CommandCompleted) -> None:
        command, response = completed.command, completed.response
        waiter = self._waiters.get(response.command_id)
        outcome: CommandCompleted | WSSCallError = completed
        if response.success:
            self._agent_mode = agent_mode_after(command, self._agent_mode)
            if command in _DONE_EVENT:
                self._emit(_DONE_EVENT[command], None)
        else:
            outcome = self._command_error(command, response.error_code, response.error_message)
            if command in _FAILED_EVENT:
                self._emit(_FAILED_EVENT[command], outcome)
        logger.debug(
            "call %s: <- %s %s %s",
            self.call_id,
            command.value,
            "ok" if response.success else "failed",
            response.error_code or "",
        )
        if waiter is not None:
            waiter.outcome = outcome
            waiter.done.set()

    def _command_error(
        self, command: Command, code: str | None, message: str | None
    ) -> WSSCallError:
        text = f"{command.value} on call {self.call_id} failed: {code}" + (
            f" ({message})" if message else ""
        )
        if code == ErrorCode.CALL_TERMINATED:
            return WSSCallClosedError(text, self.call_id)
        if code == ErrorCode.TIMEOUT:
            return WSSCallCommandTimeoutError(text, self.call_id, command=command.value)
        return WSSCallCommandError(
            text, self.call_id, command=command.value, error_code=code, error_message=message
        )

    # --- audio -----------------------------------------------------------------------------------

    async def send_audio(self, pcm: bytes, *, wait: bool = False) -> None:
        """Queue PCM16 mono audio at the call's sample rate; it is sent as the server grants credit.

        Raises :class:`BufferFullError` past ``send_buffer_bytes`` (nothing is queued),
        :class:`BufferClosedError` once the call has ended and ``ValueError`` for an odd length.
        With ``wait=True`` it waits for room instead of raising ``BufferFullError`` (audio
        longer than the buffer is queued piece by piece as it drains). Audio that credit allows
        right away is written from the calling task; that returns at once unless the
        connection is backed up (64 KiB unsent), when it waits for room like any write.
        """
        if self._termination_reason is not None:
            raise BufferClosedError(f"call {self.call_id} has ended; audio not queued")
        if not isinstance(pcm, (bytes, bytearray, memoryview)):
            raise TypeError(f"audio must be bytes of PCM16, not {type(pcm).__name__}")
        n = len(pcm)
        if n & 1:
            raise ValueError(f"audio of {n} bytes is not whole 16-bit samples (odd length)")
        queued = len(self._out)
        if queued + n <= self._out_capacity:
            self._out += pcm
            if not self._sender_idle.waited_on:
                return  # the sender is awake and will take it
            # The sender waits for audio: send what credit allows from this task rather than
            # wake it (one task switch less per frame). take_audio and send_many's queueing run
            # without a checkpoint in between, so frames keep their order with the sender's.
            frames = self._proto.take_audio(self._out, MAX_FRAMES_PER_WRITE)
            if self._out:
                self._sender_idle.fire()  # more than one write's worth, or not enough credit
            if frames:
                await self._send_frames(frames)
            return
        if not wait:
            raise BufferFullError(
                f"call {self.call_id}: {n} bytes do not fit in the send buffer "
                f"({queued} of {self._out_capacity} bytes queued)"
            )
        view = memoryview(pcm)
        pos = 0
        while pos < n:
            if self._termination_reason is not None:
                raise BufferClosedError(
                    f"call {self.call_id} ended with {n - pos} bytes of audio not queued"
                )
            room = (self._out_capacity - len(self._out)) & ~1
            if room <= 0:
                await self._progress.wait()
                continue
            take = min(room, n - pos)
            self._out += view[pos : pos + take]
            pos += take
            self._sender_idle.fire()

    def get_send_audio_buffer_size(self) -> int:
        """Bytes queued locally and not yet sent."""
        return len(self._out)

    async def clear_send_audio_buffer(self) -> None:
        """Drop the audio queued locally and interrupt the server's playout (barge-in).

        Both happen before any audio queued after this call can be sent, so stale audio never
        plays after the interruption.
        """
        self._out.clear()
        self._dropped += self.playout_pending_bytes
        self._progress.fire()
        await self._command(Command.INTERRUPT)

    def audio_stream(
        self, leg: Literal["mixed", "caller", "callee"] | None = None
    ) -> AsyncIterator[bytes]:
        """What the agent hears, as chunks of PCM16; ends when the call ends for the agent.

        In ``isolated`` audio mode, ``leg`` picks the caller's leg (the default), the callee's, or
        everything mixed (``"mixed"``, what the agent hears in mixed mode).
        """
        if leg is None:
            leg = "caller" if self.audio_mode is AudioMode.ISOLATED else "mixed"
        channel = _LEGS.get(leg)
        queue = None if channel is None else self._queues.get(channel)
        if queue is None:
            raise ValueError(f"no {leg!r} audio in {self.audio_mode.value} audio mode")
        return _AudioStream(queue)

    # --- supervision -----------------------------------------------------------------------------

    def _terminate(self, reason: str) -> None:
        """The call is over for the agent: fire CALL_TERMINATED once and release everyone."""
        if self._termination_reason is not None:
            return
        self._termination_reason = reason
        self._proto.terminate_locally()
        self._out.clear()
        self._sender_idle.fire()
        for queue in self._queues.values():
            queue.close()
        for waiter in self._waiters.values():
            if waiter.outcome is None:
                waiter.outcome = WSSCallClosedError(
                    f"call {self.call_id} ended ({reason}) before the command was answered",
                    self.call_id,
                )
                waiter.done.set()
        logger.info("call %s: terminated (%s)", self.call_id, reason)
        self._emit(events.CALL_TERMINATED, reason)
        self._events_send.close()
        self._terminated.set()
        self._progress.fire()
        if self._io_scope is not None:
            self._io_scope.cancel()
        if self._on_ended is not None:
            self._on_ended(self)

    async def _serve(self, handler: Callable[[ActiveCall], Any] | None) -> None:
        """Run the call: I/O tasks until it ends, then deliver pending events; the application's
        handler runs beside them and may outlive the media connection."""
        with self._scope:
            await self._supervise(handler)

    async def _supervise(self, handler: Callable[[ActiveCall], Any] | None) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._dispatch_events)
                if handler is not None:
                    tg.start_soon(self._run_handler, handler)
                with anyio.CancelScope() as self._io_scope:
                    if self._termination_reason is not None:
                        self._io_scope.cancel()
                    async with anyio.create_task_group() as io:
                        io.start_soon(self._send_loop)
                        await self._read_loop()
                        io.cancel_scope.cancel()
                # The call is over for the agent: answer the server's close now, not once the
                # application's handler (which may linger) returns.
                self._terminate(TerminationReason.MEDIA_LOST.value)
                await self._conn.aclose()
        finally:
            self._terminate(TerminationReason.MEDIA_LOST.value)
            await self._conn.aclose()
            for queue in self._queues.values():
                queue.close()
            self._events_receive.close()

    async def _run_handler(self, handler: Callable[[ActiveCall], Any]) -> None:
        try:
            result = handler(self)
            if hasattr(result, "__await__"):
                await result
        except Exception as exc:
            if not await self.handler_failed(exc):
                logger.exception("call %s: INCOMING_CALL handler raised", self.call_id)
        except anyio.get_cancelled_exc_class():
            if anyio.current_effective_deadline() == -math.inf:
                raise  # our own scopes are cancelling: let it through
            # asyncio's task.cancel() aimed at the handler alone: the call goes on without it.
            logger.info("call %s: INCOMING_CALL handler was cancelled", self.call_id)

    async def _event_handler_failed(self, exc: Exception) -> bool:
        logger.error("call %s: an event handler raised", self.call_id, exc_info=exc)
        if self._on_handler_error is not None:
            self._on_handler_error(self, exc)
        return True

    async def handler_failed(self, exc: Exception) -> bool:
        """The application's handler for this call raised ``exc``: the policy (README, "When
        a handler raises"). A handler that stops because the call ended under it (the caller
        hung up while it was sending) ends quietly: that is how calls end. Otherwise the error
        is logged once with the call id, and the call is not left stuck: one still ringing is
        released (the server offers it to another process), one answered is left politely
        (``close()``). Returns True: dealt with."""
        if self._termination_reason is not None and isinstance(
            exc, (BufferClosedError, WSSCallClosedError)
        ):
            logger.debug("call %s: the handler stopped as the call ended: %s", self.call_id, exc)
            return True
        state = self.state
        if self._termination_reason is not None:
            what = "the call had ended"
        elif state is CallState.PENDING:
            what = "releasing the call (not answered) so that another process can take it"
        else:
            what = "the agent leaves the call"
        logger.error(
            "call %s: the INCOMING_CALL handler raised; %s", self.call_id, what, exc_info=exc
        )
        if self._on_handler_error is not None:
            self._on_handler_error(self, exc)
        if self._termination_reason is not None:
            return True
        if state is CallState.PENDING:
            self._released_after_failure = True
            await self.force_disconnect()
            return True
        with anyio.move_on_after(self._config.command_timeout):
            try:
                await self.close()
                return True
            except WSSCallError as error:
                logger.debug("call %s: close after the handler failed: %s", self.call_id, error)
        await self.force_disconnect()
        return True

    async def _dispatch_events(self) -> None:
        try:
            async with self._events_receive:
                async for name, payload in self._events_receive:
                    await self._handlers.fire(
                        name, payload, logger, f"call {self.call_id}", self._event_handler_failed
                    )
        finally:
            self._events_done.set()

    async def _send_frames(self, frames: list[bytes]) -> None:
        try:
            await self._conn.send_many(frames)
        except ConnectionClosed:
            return  # the reader sees the connection end and terminates the call
        self.stats.bytes_sent += sum(len(f) for f in frames) - len(frames)
        self._progress.fire()

    async def _send_loop(self) -> None:
        proto, out = self._proto, self._out
        while self._termination_reason is None and self._conn.closed is None:
            frames = proto.take_audio(out, MAX_FRAMES_PER_WRITE)
            if not frames:
                await self._sender_idle.wait()
                continue
            await self._send_frames(frames)
            if len(frames) == MAX_FRAMES_PER_WRITE:
                await anyio.lowlevel.checkpoint()  # more to send: let other tasks run first

    def _bad_frame(self, _exc: Exception) -> None:
        self.stats.protocol_errors += 1

    async def _read_loop(self) -> None:
        c = self._config
        async with open_link(
            self._conn,
            self._proto.receive,
            logger=logger,
            ping_interval=c.ping_interval,
            ping_timeout=c.ping_timeout,
            on_bad_frame=self._bad_frame,
        ) as link:
            async for event in link:
                if isinstance(event, AudioFrame):
                    self._audio(event)  # the hot path first
                    continue
                if self._handle(event):
                    return
            if self._termination_reason is None:
                closed = link.closed
                logger.warning(
                    "call %s: media connection lost (code %s)",
                    self.call_id,
                    closed.code if closed else "?",
                )
            self._terminate(TerminationReason.MEDIA_LOST.value)

    def _audio(self, frame: AudioFrame) -> None:
        stats = self.stats
        channel = frame.channel
        queue = self._queues.get(channel)
        if queue is None:
            stats.ignored_frames += 1
            return
        pcm = frame.pcm
        stats.frames_received += 1
        stats.bytes_received += len(pcm)
        odd = self._odd
        if odd or len(pcm) & 1:
            # Audio is a byte stream: a server may cut frames anywhere, and whole samples must
            # reach the application.
            pcm = odd.pop(channel, b"") + pcm
            if len(pcm) & 1:
                odd[channel] = pcm[-1:]
                pcm = pcm[:-1]
            if not pcm:
                return
        dropped = queue.put(pcm)
        if dropped:
            stats.dropped_inbound_chunks += 1
            stats.dropped_inbound_bytes += dropped
            if stats.dropped_inbound_chunks % 500 == 1:
                logger.warning(
                    "call %s: inbound audio not consumed; dropped %d oldest chunks so far",
                    self.call_id,
                    stats.dropped_inbound_chunks,
                )

    def _handle(self, event: MediaEvent) -> bool:
        """Act on one non-audio event; True once the call has ended."""
        match event:
            case BufferRequest():
                self._granted += event.requested_bytes
                self._capacity = max(self._capacity, self._proto.credit)
                if self._out:
                    self._sender_idle.fire()
                self._progress.fire()
            case CommandCompleted():
                self._complete(event)
            case CallTerminatedEvent(reason=reason):
                self._terminate(reason)
                return True
            case CallErrorEvent(error_code=code, error_message=message):
                self._call_errors += 1
                n = self._call_errors
                level = logging.WARNING if n <= 10 or n % 100 == 0 else logging.DEBUG
                logger.log(
                    level, "call %s: server reported %s: %s (#%d)", self.call_id, code, message, n
                )
            case MessageIgnored(reason=reason):
                logger.debug("call %s: %s", self.call_id, reason)
            case UnknownCallEvent(event=name):
                logger.debug("call %s: ignoring unknown call event %r", self.call_id, name)
            case UnknownMessage(type=kind):
                logger.debug("call %s: ignoring unknown frame type %r", self.call_id, kind)
            case _:
                logger.debug("call %s: ignoring %r", self.call_id, event)
        return False


def check_ring_time(ring_time_seconds: object) -> None:
    """``ValueError`` unless ``ring_time_seconds`` is an integer within 1..120."""
    if (
        isinstance(ring_time_seconds, bool)
        or not isinstance(ring_time_seconds, int)
        or not 1 <= ring_time_seconds <= MAX_RING_TIME_SECONDS
    ):
        raise ValueError(
            f"ring_time_seconds must be an integer in 1..{MAX_RING_TIME_SECONDS}, "
            f"not {ring_time_seconds!r}"
        )
