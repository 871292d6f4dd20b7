"""``ActiveCall``: one call's commands, audio and events, over its own media connection.

The call is a facade over four parts (:mod:`telcoflow._call`), each with its invariant:
commands correlated with their responses, outbound audio within the server's credit, bounded
inbound queues, and the ordered event channel. The facade owns what joins them: the reader that
routes the connection's events to them, and the call's end (:meth:`ActiveCall._terminate`),
which is synchronous, so that no task ever sees a call half ended.

Each call is supervised by its own task group inside the client's: the reader, the sender, a
heartbeat, the event dispatcher (handlers one at a time, in order) and the application's
incoming-call handler. When the call ends the I/O tasks stop, the events already fired are still
delivered, and the handler may finish its own work. The client runs a call only through the
methods of its contract (``_serve``, ``_wait_delivered``, ``_cancel``) and the two functions it
gives the constructor.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, overload

import anyio

from . import events
from ._call import AudioIn, AudioOut, CallCommands, CallDetails, CallEvents, CallStats
from ._core import (
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
    MediaEvent,
    MediaProtocol,
    MessageIgnored,
    Role,
    TerminationReason,
    UnknownCallEvent,
    UnknownMessage,
    frame_bytes_for,
)
from ._handlers import H
from ._net import WebSocketConnection, open_link
from .config import TelcoflowClientConfig
from .exceptions import BufferClosedError, WSSCallClosedError, WSSCallError

__all__ = ["ActiveCall", "CallDetails", "CallStats"]

# Public classes defined in private modules name the module users import them from (in reprs,
# tracebacks, pickles and generated docs).
for _public in (CallDetails, CallStats):
    _public.__module__ = __name__

logger = logging.getLogger("telcoflow_sdk.media_connection")

#: The longest ring time ``connect`` accepts (PROTOCOL.md).
MAX_RING_TIME_SECONDS = MAX_RING_TIME_S


class ActiveCall:
    """A call offered to this agent. Created by the client; the application gets it from the
    ``INCOMING_CALL`` handler or :meth:`TelcoflowClient.get_call`."""

    def __init__(
        self,
        details: CallDetails,
        config: TelcoflowClientConfig,
        connection: WebSocketConnection,
        *,
        on_ended: Callable[[ActiveCall, bool], None] | None = None,
        on_handler_error: Callable[[ActiveCall, BaseException], None] | None = None,
        state: CallState = CallState.PENDING,
    ) -> None:
        self._details = details
        self._config = config
        self._conn = connection
        #: Told once the call has ended for the agent, and whether it was released (not
        #: answered) because its handler raised: its process must not claim it again when the
        #: server offers it anew (the handler would fail the same way).
        self._on_ended = on_ended
        self._on_handler_error = on_handler_error
        self._proto = MediaProtocol(Role.CLIENT, sample_rate=config.sample_rate)
        self._proto.call_state = state
        self.stats = CallStats()
        call_id = details.call_id
        self._events = CallEvents(f"call {call_id}", logger)
        self._commands = CallCommands(
            call_id,
            self._proto,
            connection,
            self.stats,
            timeout=config.command_timeout,
            emit=self._events.emit,
        )
        self._audio_out = AudioOut(
            call_id, self._proto, connection, self.stats, config.send_buffer_bytes
        )
        chunks = config.audio_queue_chunks
        # Bounded in bytes too: a server sending large frames cannot make a call hold more
        # than this many 20 ms chunks' worth of audio.
        self._audio_in = AudioIn(
            call_id,
            config.audio_mode,
            self.stats,
            max_chunks=chunks,
            max_bytes=chunks * frame_bytes_for(config.sample_rate),
        )
        self._termination_reason: str | None = None
        self._terminated = anyio.Event()
        self._io_scope: anyio.CancelScope | None = None
        # The call's tasks are shielded from the client's cancellation: on exit the client first
        # lets each call leave politely and deliver CALL_TERMINATED, then cancels this scope.
        self._scope = anyio.CancelScope(shield=True)
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
        return self._commands.agent_mode

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
        return self._audio_in.buffered_bytes

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
        return self._audio_out.playout_pending_bytes

    @property
    def played_bytes(self) -> int:
        """Audio the server has played to the call so far (interrupted audio not counted).

        Derived from the credit it grants back as it plays, so it lags real playout by at most
        one frame and one network round trip.
        """
        return self._audio_out.played_bytes

    @property
    def played_seconds(self) -> float:
        """:attr:`played_bytes` in seconds at the call's sample rate."""
        return self.played_bytes / (2 * self.sample_rate)

    async def wait_played(self) -> None:
        """Wait until everything queued so far has been played (or the call ended): hang up
        after the last sentence, not during it."""
        await self._audio_out.wait_played()

    async def wait_played_bytes(self, n: int) -> bool:
        """Wait until :attr:`played_bytes` reaches ``n``; False if the call ended first.

        What a bridge times "first audio heard" by: the position of a sentence's first byte
        is ``played_bytes + get_send_audio_buffer_size() + playout_pending_bytes`` when it is
        queued, and it has been heard once ``played_bytes`` passes that.
        """
        return await self._audio_out.wait_played_bytes(n)

    # --- events ----------------------------------------------------------------------------------

    @overload
    def on(self, event: str, handler: None = None) -> Callable[[H], H]: ...
    @overload
    def on(self, event: str, handler: H) -> H: ...
    def on(self, event: str, handler: H | None = None) -> H | Callable[[H], H]:
        """Register a handler for a call event; usable as ``@call.on(events.CALL_TERMINATED)``.

        Handlers run one at a time, in the order events happened, each exactly once.
        """
        return self._events.handlers.on(event, handler)

    async def wait_terminated(self) -> str:
        """Wait until the call has ended for the agent; returns the reason."""
        await self._terminated.wait()
        assert self._termination_reason is not None
        return self._termination_reason

    # --- commands --------------------------------------------------------------------------------

    async def answer(self) -> None:
        """Answer the call: the caller and the agent hear each other."""
        await self._commands.run(Command.ANSWER)

    async def connect(self, ring_time_seconds: int = 60) -> None:
        """Ring the callee; on answer the call is CONNECTED (3-way, agent in barge mode).

        Raises :class:`WSSCallCommandError` with ``CALL_UNANSWERED`` or ``CALL_REJECTED`` when the
        callee does not pick up; the call then stays as it was.
        """
        check_ring_time(ring_time_seconds)
        # The server answers within the ring time, which is the command's timeout_ms (as the
        # official client sends it); we wait a command timeout longer for its answer.
        await self._commands.run(
            Command.CONNECT,
            {"ringTimeSeconds": ring_time_seconds},
            ring_time_seconds + self._config.command_timeout,
            timeout_ms=ring_time_seconds * 1000,
        )

    async def whisper(self) -> None:
        """Only the callee hears the agent (coaching)."""
        await self._commands.run(Command.WHISPER)

    async def barge(self) -> None:
        """Caller and callee both hear the agent."""
        await self._commands.run(Command.BARGE)

    async def spy(self) -> None:
        """Nobody hears the agent; the agent still hears both."""
        await self._commands.run(Command.SPY)

    async def disconnect(self) -> None:
        """End the call for everyone."""
        await self._commands.run(Command.DISCONNECT)

    async def close(self) -> None:
        """The agent leaves. A CONNECTED caller and callee stay connected; an ANSWERED call ends."""
        await self._commands.run(Command.CLOSE)

    async def force_disconnect(self) -> None:
        """Tear the media connection down locally without asking the server. Never raises."""
        try:
            self._terminate(TerminationReason.AGENT_FORCE_DISCONNECT.value)
            await self._conn.aclose(1000, "force disconnect")
        except Exception:  # pragma: no cover - aclose is shielded and swallows stream errors
            logger.debug("call %s: error while force-disconnecting", self.call_id, exc_info=True)

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
        await self._audio_out.send(pcm, wait)

    def get_send_audio_buffer_size(self) -> int:
        """Bytes queued locally and not yet sent."""
        return len(self._audio_out.buf)

    async def clear_send_audio_buffer(self) -> None:
        """Drop the audio queued locally and interrupt the server's playout (barge-in).

        Both happen before any audio queued after this call can be sent, so stale audio never
        plays after the interruption.
        """
        # Audio queued from here on waits (the send turn is held) until the interruption has
        # left; released in `finally` too in case the command never got to send it.
        release = self._audio_out.clear()
        try:
            await self._commands.run(Command.INTERRUPT, on_sent=release)
        finally:
            release()

    def audio_stream(
        self, leg: Literal["mixed", "caller", "callee"] | None = None
    ) -> AsyncIterator[bytes]:
        """What the agent hears, as chunks of PCM16; ends when the call ends for the agent.

        In ``isolated`` audio mode, ``leg`` picks the caller's leg (the default), the callee's, or
        everything mixed (``"mixed"``, what the agent hears in mixed mode).
        """
        return self._audio_in.stream(leg)

    # --- the client's contract: how telcoflow.client runs a call ---------------------------------

    async def _serve(self, handler: Callable[[ActiveCall], Any] | None) -> None:
        """Run the call: I/O tasks until it ends, then deliver pending events; the application's
        handler runs beside them and may outlive the media connection. Returns once all of
        them are done, or :meth:`_cancel` stopped them."""
        with self._scope:
            await self._supervise(handler)

    async def _wait_delivered(self) -> None:
        """Wait until the events fired so far have been delivered to their handlers (after the
        call ended: all of them, ``CALL_TERMINATED`` last)."""
        await self._events.delivered.wait()

    def _cancel(self) -> None:
        """Stop the call's tasks now, the application's handler too (the client's shutdown)."""
        self._scope.cancel()

    # --- supervision -----------------------------------------------------------------------------

    def _terminate(self, reason: str, *, released_after_failure: bool = False) -> None:
        """The call is over for the agent: fire CALL_TERMINATED once and release everyone.

        Synchronous on purpose: every part ends in the same step, so that no task sees a call
        that is over for some of them and not for others."""
        if self._termination_reason is not None:
            return
        self._termination_reason = reason
        self._proto.terminate_locally()
        self._audio_out.close()
        self._audio_in.close()
        self._commands.end(reason)
        logger.info("call %s: terminated (%s)", self.call_id, reason)
        self._events.emit(events.CALL_TERMINATED, reason)
        self._events.close()
        self._terminated.set()
        if self._io_scope is not None:
            self._io_scope.cancel()
        if self._on_ended is not None:
            self._on_ended(self, released_after_failure)

    async def _supervise(self, handler: Callable[[ActiveCall], Any] | None) -> None:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._events.dispatch, self._event_handler_failed)
                if handler is not None:
                    tg.start_soon(self._run_handler, handler)
                with anyio.CancelScope() as self._io_scope:
                    # Ended before this scope existed (so _terminate could not cancel it).
                    if self._termination_reason is not None:
                        self._io_scope.cancel()
                    async with anyio.create_task_group() as io:
                        io.start_soon(self._audio_out.send_loop)
                        await self._read_loop()
                        io.cancel_scope.cancel()
                # The call is over for the agent: answer the server's close now, not once the
                # application's handler (which may linger) returns.
                self._terminate(TerminationReason.MEDIA_LOST.value)
                await self._conn.aclose()
        finally:
            self._terminate(TerminationReason.MEDIA_LOST.value)
            await self._conn.aclose()
            self._audio_in.close()
            self._events.abort()

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
            # Released, not answered: the termination itself tells the client (on_ended), so
            # the mark goes with this termination and no other.
            self._terminate(
                TerminationReason.AGENT_FORCE_DISCONNECT.value, released_after_failure=True
            )
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

    async def _read_loop(self) -> None:
        c = self._config
        audio, credit = self._audio_in.frame, self._audio_out.credit_granted
        async with open_link(
            self._conn,
            self._proto.receive,
            logger=logger,
            ping_interval=c.ping_interval,
            ping_timeout=c.ping_timeout,
            on_bad_frame=self._bad_frame,
        ) as link:
            async for event in link:
                # The hot path first: audio, then credit (one of each per 20 ms of a call).
                if isinstance(event, AudioFrame):
                    audio(event)
                    continue
                if isinstance(event, BufferRequest):
                    credit(event.requested_bytes)
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

    def _bad_frame(self, _exc: Exception) -> None:
        self.stats.protocol_errors += 1

    def _handle(self, event: MediaEvent) -> bool:
        """Act on one event other than audio and credit; True once the call has ended."""
        match event:
            case CommandCompleted():
                self._commands.completed(event)
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
