"""A simulated call: its state (the server is the authority), its parties, and its media.

Every 20 ms tick of the media clock the call takes a frame from each voice (caller, callee, the
agent's playout buffer), sends the agent what it hears, and records what every party heard,
silence included, on the call's timeline. Commands change the state through the call's table in
the core (:func:`~telcoflow._core.call_state_after`), the same table the client reads.

A call knows nothing of control connections or sessions: what happens to it that the rest of the
sandbox must know (it ended, the agent left it, the agent let it go while it rang) is reported to
its :class:`CallHost`, a narrow interface the switchboard implements.

The parties of an outbound call (dialled by the agent): the dialled number plays the caller's
part (the human on the call from the start, heard by the agent once it answers, recorded as
``caller``); ``connect`` rings the callee as on an inbound call.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.to_thread
import attrs

from .._core import (
    CHANNEL_CALLEE,
    CHANNEL_CALLER,
    CHANNEL_MIXED,
    AgentMode,
    AudioMode,
    CallState,
    Command,
    CommandRequest,
    Direction,
    ErrorCode,
    TerminationReason,
    agent_leaves,
    agent_mode_after,
    allowed_commands,
    call_state_after,
    encode_audio,
    frame_bytes_for,
)
from ._clock import MAX_CATCH_UP_S, TICK_S, MediaClock
from ._faults import FaultInjector
from ._media import AgentMedia, CallStats
from ._pcm import AudioSource, Silence, WavSource, mix, wav_header_for, write_wav
from ._spec import CalleeSpec, CallSpec, NumberSpec, Voice

__all__ = ["CallHost", "CallStats", "SimCall"]

logger = logging.getLogger("telcoflow.sandbox")

#: A ringing callee that declines does so after this long (or the ring time, if shorter).
DECLINE_AFTER_S = 0.5
#: A dialled number rings this long before the call counts as unanswered (PROTOCOL.md).
OUTBOUND_RING_S = 60.0
#: Commands remembered per call (a misbehaving agent may send any number).
MAX_COMMANDS_KEPT = 1000
#: Default sample rate of recordings of a call that was never handed to an agent.
DEFAULT_RATE = 24000

PARTIES = ("caller", "callee", "agent")

#: Ended reasons of a dialled call that never reached its remote party.
CALL_REJECTED = "call_rejected"
CALL_UNANSWERED = "call_unanswered"


class CallHost(Protocol):
    """What a call tells the rest of the sandbox, and asks of it."""

    def describe(self, call: SimCall) -> dict[str, Any]:
        """The call's session as the HTTP API shows it: ``session_id``, ``bound_to``,
        ``offers``."""
        ...

    async def call_ended(self, call: SimCall) -> None:
        """The call is over for everyone."""
        ...

    async def agent_left(self, call: SimCall) -> None:
        """The agent is out of a call that goes on (``call.close`` while CONNECTED)."""
        ...

    async def agent_released(self, call: SimCall, agent: AgentMedia) -> None:
        """The agent's media connection closed while the call was still ringing."""
        ...


class SimCall:
    """One simulated call, from creation until both humans have hung up."""

    def __init__(
        self,
        host: CallHost,
        faults: FaultInjector,
        call_id: str,
        spec: CallSpec,
        *,
        connector_uuid: str,
        to_number: str,
        direction: Direction = Direction.INBOUND,
        record: bool = True,
        number: NumberSpec | None = None,
    ) -> None:
        self._host = host
        self._faults = faults
        self.call_id = call_id
        self.spec = spec
        self.connector_uuid = connector_uuid
        self.direction = direction
        self.from_number = spec.from_number
        self.to_number = to_number
        self.created_at = time.time()
        self._created_mono = anyio.current_time()
        #: When the caller's hang-up clock started (a dialled number's: when it answered).
        self._hangup_from = self._created_mono
        self._hangup_after = spec.caller_hangup_after_s
        self._number = number
        self.state = CallState.PENDING
        self.agent_mode: AgentMode | None = None
        self.ended_reason: str | None = None
        #: The agent's commands and their outcomes (the most recent ones).
        self.commands: list[dict[str, Any]] = []
        self.stats = CallStats()
        self.agent: AgentMedia | None = None
        self.sample_rate: int | None = None
        self.audio_mode = AudioMode.MIXED
        self._record = record
        self.recordings: dict[str, bytearray] = {p: bytearray() for p in PARTIES}
        #: The retention policy dropped this ended call's recordings.
        self.recordings_discarded = False
        self._ticks_before_rate = 0
        self._caller: AudioSource = Silence()
        self._callee: AudioSource = Silence()
        self._ringing = False
        #: While it rings quietly: since when its silence has not been recorded yet.
        self._quiet_since: float | None = None
        self._changed = anyio.Event()
        self._waiting = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._started = anyio.Event()
        self._ended = anyio.Event()

    def __repr__(self) -> str:
        return f"<SimCall {self.call_id} {self.direction.value} {self.state.value}>"

    # --- observation -----------------------------------------------------------------------------

    @property
    def session_id(self) -> str | None:
        """The control-plane session the call belongs to."""
        return self._host.describe(self)["session_id"]  # type: ignore[no-any-return]

    @property
    def bound_to(self) -> str | None:
        """The control connection (its ``smWsId``) holding the call's session, or None."""
        return self._host.describe(self)["bound_to"]  # type: ignore[no-any-return]

    @property
    def offers(self) -> int:
        """How many times the call was notified (``session.notify``, to any connection)."""
        return self._host.describe(self)["offers"]  # type: ignore[no-any-return]

    def to_json(self) -> dict[str, Any]:
        """The call as the HTTP API shows it."""
        session = self._host.describe(self)
        return {
            "call_id": self.call_id,
            "session_id": session["session_id"],
            "direction": self.direction.value,
            "bound_to": session["bound_to"],
            "from": self.from_number,
            "to": self.to_number,
            "state": self.state.value,
            "agent_mode": self.agent_mode.value if self.agent_mode else None,
            "ended_reason": self.ended_reason,
            "sample_rate": self.sample_rate or DEFAULT_RATE,
            "created_at": self.created_at,
            "offers": session["offers"],
            "agent_connected": self.agent is not None,
            "commands": [dict(c) for c in self.commands],
            "stats": self.stats.to_json(),
        }

    @property
    def ended(self) -> bool:
        """True once the call is over for everyone."""
        return self.state is CallState.DISCONNECTED

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def discard_recordings(self) -> None:
        """Free the recordings of an ended call (the retention policy)."""
        self.recordings = {p: bytearray() for p in PARTIES}
        self.recordings_discarded = True

    async def wait_for(self, predicate: Callable[[SimCall], bool]) -> None:
        """Wait until ``predicate(call)`` holds: checked at every change of the call, and every
        20 ms tick while someone waits (so predicates on recordings work too)."""
        self._waiting += 1
        if self._waiting == 1:
            self._notify()  # a quietly ringing call ticks again while someone waits
        try:
            while not predicate(self):
                await self._changed.wait()
        finally:
            self._waiting -= 1

    async def wait_state(self, *states: CallState | str) -> None:
        """Wait until the call is in one of ``states``."""
        wanted = {CallState(s) for s in states}
        await self.wait_for(lambda c: c.state in wanted)

    async def wait_ended(self) -> str:
        """Wait until the call is over for everyone; returns the reason."""
        await self._ended.wait()
        assert self.ended_reason is not None
        return self.ended_reason

    def recording(self, party: str) -> bytes:
        """What ``party`` (caller, callee or agent) heard, as PCM16 at the call's sample rate."""
        if party not in PARTIES:
            raise ValueError(f"party must be one of {', '.join(PARTIES)}, not {party!r}")
        self._settle_quiet()
        if self.recordings_discarded:
            raise ValueError(f"the recordings of call {self.call_id} were discarded (retention)")
        if self.sample_rate is None and self._record:  # never handed over: silence all along
            return bytes(frame_bytes_for(DEFAULT_RATE) * self._ticks_before_rate)
        return bytes(self.recordings[party])

    def timeline_s(self) -> float | None:
        """Where the call is now on its recordings' timeline (seconds since it was placed), so
        a command can be lined up with what the parties heard; None when not recording."""
        if not self._record or self.recordings_discarded:
            return None
        self._settle_quiet()
        if self.sample_rate is None:
            return self._ticks_before_rate * TICK_S
        return len(self.recordings["caller"]) / (2 * self.sample_rate)

    def recording_wav(self, party: str) -> bytes:
        """What ``party`` heard, as a WAV file."""
        return write_wav(self.recording(party), self.sample_rate or DEFAULT_RATE)

    def recording_wav_stream(self, party: str) -> tuple[int, Callable[[int], Iterator[bytes]]]:
        """What ``party`` heard so far as a WAV file of known length, made chunk by chunk
        (the recording of a live call goes on growing; what was heard until now is sent)."""
        if party not in PARTIES:
            raise ValueError(f"party must be one of {', '.join(PARTIES)}, not {party!r}")
        self._settle_quiet()
        if self.recordings_discarded:
            raise ValueError(f"the recordings of call {self.call_id} were discarded (retention)")
        if self.sample_rate is None and self._record:
            pcm: bytes | bytearray = self.recording(party)
        else:
            pcm = self.recordings[party]
        size = len(pcm)
        header = write_wav(b"", self.sample_rate or DEFAULT_RATE)
        header = wav_header_for(header, size)

        def chunks(n: int) -> Iterator[bytes]:
            yield header
            for i in range(0, size, n):
                yield bytes(pcm[i : min(i + n, size)])

        return len(header) + size, chunks

    # --- format and the agent --------------------------------------------------------------------

    def set_format(self, sample_rate: int, audio_mode: AudioMode) -> None:
        """The call's audio format: that of the control connection it is handed to (``call.in``).

        Nothing but silence has been recorded while ringing, so a call handed again to a
        connection of another rate simply changes rate; once answered the rate is fixed.
        """
        self.audio_mode = audio_mode
        if sample_rate == self.sample_rate or self.state is not CallState.PENDING:
            return
        self._settle_quiet()
        ticks = self._ticks_before_rate
        if self.sample_rate is not None:
            ticks = len(self.recordings["caller"]) // frame_bytes_for(self.sample_rate)
        self.sample_rate = sample_rate
        voice = self._number.voice if self._number is not None else self.spec.caller
        self._use_voice("caller", voice)
        if self._record:
            for party in PARTIES:
                self.recordings[party] = bytearray(frame_bytes_for(sample_rate) * ticks)

    def _use_voice(self, party: str, voice: Voice) -> None:
        """``party`` speaks ``voice`` from now on: at once for a tone; a WAV is converted to
        the call's rate in a worker thread first (silence meanwhile), never on the loop."""
        rate = self.sample_rate or DEFAULT_RATE
        if not voice.needs_conversion:
            self._set_source(party, voice.source(rate))
            return
        self._set_source(party, Silence())
        self._start_soon(self._convert, party, voice, rate)

    def _set_source(self, party: str, source: AudioSource) -> None:
        if party == "caller":
            self._caller = source
        else:
            self._callee = source

    async def _convert(self, party: str, voice: Voice, rate: int) -> None:
        pcm = await anyio.to_thread.run_sync(voice.convert, rate, abandon_on_cancel=True)
        if self.sample_rate in (None, rate) and self.state is not CallState.DISCONNECTED:
            self._set_source(party, WavSource(pcm, voice.loop))

    def can_take_agent(self) -> bool:
        """Whether an agent's media connection may join the call now."""
        return self.state is not CallState.DISCONNECTED and self.agent is None

    def attach(self, agent: AgentMedia) -> None:
        """The agent's media connection is up."""
        self.agent = agent
        self._notify()

    async def agent_gone(self, agent: AgentMedia) -> None:
        """The agent's media connection closed (without ``call.close``/``call.disconnect``, or
        after one): PROTOCOL.md counts it as ``call.close`` once the call is answered."""
        if self.agent is not agent:
            return
        self.agent = None
        if self.state is CallState.PENDING:
            logger.info("call %s: released while ringing; notified again", self.call_id)
            self._notify()
            await self._host.agent_released(self, agent)
        elif self.state is CallState.ANSWERED:
            reason = TerminationReason.MEDIA_LOST if agent.lost else TerminationReason.AGENT_CLOSE
            await self.end(reason.value)
        elif self.state is CallState.CONNECTED:
            self.agent_mode = None
            self._notify()
            await self._host.agent_left(self)

    # --- ending ----------------------------------------------------------------------------------

    async def end(self, reason: str) -> None:
        """End the call for everyone."""
        if self.state is CallState.DISCONNECTED:
            return
        logger.info("call %s: ended (%s)", self.call_id, reason)
        self._settle_quiet()  # its silence so far, if it ended while ringing quietly
        self._quiet_since = None
        self.state = CallState.DISCONNECTED
        self.ended_reason = reason
        self.agent_mode = None
        agent, self.agent = self.agent, None
        self._release_voices()
        self._ended.set()
        self._notify()
        with anyio.CancelScope(shield=True):
            if agent is not None:
                await agent.terminate(reason)
            await self._host.call_ended(self)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    def _release_voices(self) -> None:
        """An ended call speaks no more: let go of its parties' WAV audio (a five-minute WAV
        is megabytes, and ended calls are kept for the HTTP API) and of their sources."""
        self._caller = self._callee = Silence()
        spec = self.spec
        if spec.caller.wav is not None or spec.callee.voice.wav is not None:
            self.spec = attrs.evolve(
                spec,
                caller=Voice.silence() if spec.caller.wav is not None else spec.caller,
                callee=attrs.evolve(spec.callee, voice=Voice.silence())
                if spec.callee.voice.wav is not None
                else spec.callee,
            )

    async def hangup_caller(self) -> None:
        """The caller hangs up: the whole call ends."""
        await self.end(TerminationReason.CALLER_HANGUP.value)

    async def hangup_callee(self) -> None:
        """The callee hangs up: the whole call ends. Refused unless the callee is on the call."""
        if self.state is not CallState.CONNECTED:
            raise ValueError(f"the callee is not on call {self.call_id} (state {self.state.value})")
        await self.end(TerminationReason.CALLEE_HANGUP.value)

    # --- rings that do not involve the agent -----------------------------------------------------

    async def ring_own_phone(self, on_missed: Callable[[], Any]) -> None:
        """``MISSED_ONLY``: the called number's own phone (the callee) rings first. Answered,
        the caller and the callee talk without the agent; missed, ``on_missed`` runs."""
        await self._started.wait()
        callee = self.spec.callee
        ring = self.spec.missed_after_s
        answered = callee.answer and not callee.decline and callee.answer_after_s <= ring
        delay = min(DECLINE_AFTER_S, ring) if callee.decline else ring
        if answered:
            delay = callee.answer_after_s
        self._start_soon(self._after_phone, delay, answered, on_missed)

    async def _after_phone(
        self, delay: float, answered: bool, on_missed: Callable[[], Any]
    ) -> None:
        await anyio.sleep(delay)
        if self.state is not CallState.PENDING or self.agent is not None:
            return
        if answered:
            logger.info("call %s: answered by the number's own phone", self.call_id)
            self.state = CallState.CONNECTED
            self._use_voice("callee", self.spec.callee.voice)
            self._notify()
            await self._host.agent_left(self)
        else:
            result = on_missed()
            if hasattr(result, "__await__"):
                await result

    def ring_remote(self) -> None:
        """A dialled call: ring the remote number; it answers (the call is ANSWERED: agent and
        remote party hear each other), declines, or does not answer within the ring time."""
        self._start_soon(self._ring_remote)

    async def _ring_remote(self) -> None:
        number = self._number or NumberSpec()
        failure: str | None = None
        if number.decline:
            await anyio.sleep(min(DECLINE_AFTER_S, OUTBOUND_RING_S))
            failure = CALL_REJECTED
        elif not number.answer or number.answer_after_s > OUTBOUND_RING_S:
            await anyio.sleep(OUTBOUND_RING_S)
            failure = CALL_UNANSWERED
        else:
            await anyio.sleep(number.answer_after_s)
        if self.state is not CallState.PENDING:
            return
        if failure is not None:
            await self.end(failure)
            return
        self.state = CallState.ANSWERED
        self._hangup_from = anyio.current_time()
        self._hangup_after = number.hangup_after_s
        self._notify()
        logger.info("call %s: %s answered", self.call_id, self.to_number)

    def _start_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._tg is None:
            raise RuntimeError(f"call {self.call_id} is not running")
        self._tg.start_soon(fn, *args)

    # --- commands --------------------------------------------------------------------------------

    async def handle_command(self, agent: AgentMedia, req: CommandRequest) -> None:
        """Carry out one of the agent's commands and send its one response (now, or after the
        delay of a ``delay_command`` fault)."""
        entry: dict[str, Any] = {
            "command": req.command,
            "success": None,
            "error_code": None,
            "at_s": self.timeline_s(),
        }
        self.commands.append(entry)
        if len(self.commands) > MAX_COMMANDS_KEPT:
            del self.commands[: len(self.commands) - MAX_COMMANDS_KEPT]
        fault = self._faults.take_command_fault(self.call_id, req.command)
        delay = fault.seconds if fault is not None and fault.kind == "delay" else 0.0

        async def respond(
            success: bool, code: str | None = None, message: str | None = None
        ) -> None:
            entry["success"], entry["error_code"] = success, code
            self._notify()
            if delay > 0 and self._tg is not None:
                self._tg.start_soon(self._respond_later, agent, req, delay, success, code, message)
            else:
                await agent.respond(req.command_id, success, code, message)

        if fault is not None and fault.kind == "fail":
            await respond(False, fault.error_code, "injected failure (sandbox fault)")
            return
        try:
            command = Command(req.command)
        except ValueError:
            await respond(False, ErrorCode.INVALID_COMMAND, f"unknown command {req.command!r}")
            return
        if self.agent is not agent or self.state is CallState.DISCONNECTED:
            await respond(False, ErrorCode.CALL_TERMINATED, "the call has ended")
            return
        if command not in allowed_commands(self.state):
            await respond(
                False,
                ErrorCode.INVALID_STATE,
                f"{command.value} is not allowed in state {self.state.value}",
            )
            return
        if command is Command.CONNECT:
            ring = (req.data or {}).get("ringTimeSeconds", 60)
            if isinstance(ring, bool) or not isinstance(ring, (int, float)) or not 1 <= ring <= 120:
                await respond(False, ErrorCode.INVALID_COMMAND, "ringTimeSeconds must be 1..120")
            elif self._ringing:
                await respond(False, ErrorCode.INVALID_STATE, "the callee is already being rung")
            else:
                self._ringing = True
                self._start_soon(self._ring, agent, req, float(ring), respond)
            return
        if command is Command.INTERRUPT:
            agent.interrupt()
        after = call_state_after(self.state, command)
        if not agent_leaves(command):
            self._apply(after, command)
            await respond(True)
            return
        await respond(True)
        if after is CallState.DISCONNECTED:
            reason = (
                TerminationReason.AGENT_DISCONNECT
                if command is Command.DISCONNECT
                else TerminationReason.AGENT_CLOSE
            )
            await self.end(reason.value)
        else:  # the table keeps the call: close while CONNECTED
            await self._agent_leaves(agent)

    async def _respond_later(
        self,
        agent: AgentMedia,
        req: CommandRequest,
        delay: float,
        success: bool,
        code: str | None,
        message: str | None,
    ) -> None:
        await anyio.sleep(delay)
        await agent.respond(req.command_id, success, code, message)

    def _apply(self, after: CallState, command: Command) -> None:
        """The effect of a successful command that keeps the agent on the call."""
        self.state = after
        self.agent_mode = agent_mode_after(command, self.agent_mode)
        self._notify()

    async def remove_agent(self) -> None:
        """The agent leaves a CONNECTED call without asking (a REST close): as ``call.close``."""
        if self.agent is not None and self.state is CallState.CONNECTED:
            await self._agent_leaves(self.agent)

    async def _agent_leaves(self, agent: AgentMedia) -> None:
        """``call.close`` while CONNECTED: the agent leaves; caller and callee stay connected."""
        self.agent = None
        self.agent_mode = None
        self._notify()
        await agent.terminate(TerminationReason.AGENT_CLOSE.value)
        await self._host.agent_left(self)

    async def _ring(
        self,
        agent: AgentMedia,
        req: CommandRequest,
        ring_s: float,
        respond: Callable[..., Any],
    ) -> None:
        callee: CalleeSpec = self.spec.callee
        failure: tuple[str, str] | None = None
        # The ring's own outcome comes within the ring time: a timeout_ms at least that long
        # (the official SDK sends exactly the ring time) must not race it into TIMEOUT.
        limit = req.timeout_ms / 1000
        if limit >= ring_s:
            limit = math.inf
        try:
            with anyio.move_on_after(limit) as timer:
                if callee.decline:
                    await anyio.sleep(min(DECLINE_AFTER_S, ring_s))
                    failure = (ErrorCode.CALL_REJECTED, "the callee declined")
                elif not callee.answer or callee.answer_after_s > ring_s:
                    await anyio.sleep(ring_s)
                    failure = (
                        ErrorCode.CALL_UNANSWERED,
                        f"the callee did not answer within {ring_s:g} s",
                    )
                else:
                    await anyio.sleep(callee.answer_after_s)
        finally:
            self._ringing = False
        if self.agent is not agent or self.state is CallState.DISCONNECTED:
            return  # ending the call answered the command with CALL_TERMINATED
        if timer.cancelled_caught:
            await respond(False, ErrorCode.TIMEOUT, "no outcome within the command's timeout")
        elif Command.CONNECT not in allowed_commands(self.state):
            await respond(False, ErrorCode.INVALID_STATE, f"the call is {self.state.value} now")
        elif failure is not None:
            await respond(False, *failure)
        else:
            self._apply(call_state_after(self.state, Command.CONNECT), Command.CONNECT)
            self._use_voice("callee", callee.voice)
            await respond(True)

    # --- media clock -----------------------------------------------------------------------------

    async def run(self, clock: MediaClock) -> None:
        """The call's life: quiet while it only rings, then one tick of media per tick of
        ``clock`` until it ends."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            self._started.set()
            await self._ring_quietly()
            if self.ended:
                tg.cancel_scope.cancel()
                return
            phase, seen = clock.listen()
            skipped_before = clock.skipped_ticks
            try:
                while self.state is not CallState.DISCONNECTED:
                    now = await clock.wait(phase, seen)
                    due, seen = now - seen, now
                    if clock.skipped_ticks != skipped_before:  # the clock skipped ahead
                        self.stats.skipped_ms += (clock.skipped_ticks - skipped_before) * 20
                        skipped_before = clock.skipped_ticks
                    if due * TICK_S > MAX_CATCH_UP_S:
                        self.stats.skipped_ms += (due - 1) * 20
                        clock.warn(f"call {self.call_id} {due * TICK_S:.1f} s behind")
                        due = 1
                    for _ in range(due):
                        if not await self._tick():
                            break
                    if self._waiting:
                        self._notify()
            finally:
                clock.leave()
                self.stats.skipped_ms += (clock.skipped_ticks - skipped_before) * 20
            tg.cancel_scope.cancel()

    async def _ring_quietly(self) -> None:
        """While the call only rings (nothing flows, everyone hears silence), it does not follow
        the clock: a thousand ringing calls cost nothing. Its silence is added to the
        recordings when it stops ringing (or is looked at); its hang-up still comes on time."""
        self._quiet_since = anyio.current_time()
        while self.state is CallState.PENDING and self.agent is None and not self._waiting:
            deadline = math.inf
            if self._hangup_after is not None and self.direction is Direction.INBOUND:
                deadline = self._hangup_from + self._hangup_after
            with anyio.move_on_at(deadline):
                await self._changed.wait()
            if anyio.current_time() >= deadline:
                self._settle_quiet(until=deadline)
                self._quiet_since = None
                await self.end(TerminationReason.CALLER_HANGUP.value)
                return
        self._settle_quiet()
        self._quiet_since = None

    def _settle_quiet(self, until: float | None = None) -> None:
        """Account the silent ticks of the quiet ringing so far, or ``until`` then (recordings
        stay on the call's timeline)."""
        since = self._quiet_since
        if since is None:
            return
        now = anyio.current_time() if until is None else until
        ticks = int((now - since) / TICK_S)
        if ticks <= 0:
            return
        self._quiet_since = since + ticks * TICK_S
        if self.sample_rate is None:
            self._ticks_before_rate += ticks
        elif self._record:
            silence = bytes(frame_bytes_for(self.sample_rate) * ticks)
            for party in PARTIES:
                self.recordings[party] += silence

    async def started(self) -> None:
        """Wait until the call's task runs (its task group can take work)."""
        await self._started.wait()

    async def _tick(self) -> bool:
        """One tick of the call's life; False once the call has ended."""
        if self.state is CallState.DISCONNECTED:
            return False
        now = anyio.current_time()
        hangup = self._hangup_after
        live = self.state is not CallState.PENDING or self.direction is Direction.INBOUND
        if hangup is not None and live and now - self._hangup_from >= hangup:
            await self.end(TerminationReason.CALLER_HANGUP.value)
            return False
        if self.sample_rate is None:
            self._ticks_before_rate += 1
            return True
        await self._media(now)
        return True

    async def _media(self, now: float) -> None:
        state, agent, mode = self.state, self.agent, self.agent_mode
        rate = self.sample_rate
        assert rate is not None
        fb = frame_bytes_for(rate)
        live = state is CallState.ANSWERED or state is CallState.CONNECTED
        caller = self._caller.read(fb) if live else b""
        callee = self._callee.read(fb) if state is CallState.CONNECTED else b""
        said = agent.pop_frame() if agent is not None and live else b""

        to_caller = said if state is CallState.ANSWERED or mode is AgentMode.BARGE else b""
        caller_hears = mix(to_caller, callee)
        to_callee = said if mode is AgentMode.BARGE or mode is AgentMode.WHISPER else b""
        callee_hears = mix(caller, to_callee) if state is CallState.CONNECTED else b""
        agent_hears = b""
        if agent is not None and live:
            agent_hears = mix(caller, callee)
            frames: list[str | bytes] = [encode_audio(CHANNEL_MIXED, agent_hears)]
            if agent.audio_mode is AudioMode.ISOLATED:
                frames.append(encode_audio(CHANNEL_CALLER, caller))
                if callee:
                    frames.append(encode_audio(CHANNEL_CALLEE, callee))
            grant = agent.regrant()
            if grant is not None:
                frames.append(grant)
            agent.frame_sent(now)
            await agent.send(frames)
        if self._record:
            silence = bytes(fb)
            self.recordings["caller"] += caller_hears or silence
            self.recordings["callee"] += callee_hears or silence
            self.recordings["agent"] += agent_hears or silence
