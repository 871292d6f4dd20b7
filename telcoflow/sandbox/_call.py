"""A simulated call: its state (the server is the authority), its parties, and its media clock.

Every 20 ms the call's ticker takes a frame from each voice (caller, callee, the agent's playout
buffer), sends the agent what it hears, and records what every party heard, silence included, on
the call's timeline. Commands change the state through the table shared with the client.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from .._core import (
    CHANNEL_CALLEE,
    CHANNEL_CALLER,
    CHANNEL_MIXED,
    AgentMode,
    AudioMode,
    CallEnded,
    CallState,
    Command,
    CommandRequest,
    allowed_commands,
    frame_bytes_for,
)
from .._pcm import AudioSource, Silence, mix, write_wav
from ._sessions import AgentMedia, ControlSession
from ._spec import CallSpec

if TYPE_CHECKING:
    from ._server import Sandbox

__all__ = ["CallStats", "MediaClock", "SimCall"]

logger = logging.getLogger("telcoflow.sandbox")

TICK_S = 0.02
#: A ringing callee that declines does so after this long (or the ring time, if shorter).
DECLINE_AFTER_S = 0.5
#: An offer not claimed (no media connection) within this long is offered again (PROTOCOL.md).
OFFER_CLAIM_TIMEOUT_S = 10.0
#: When the ticker falls this far behind (a stalled machine), it skips ahead instead of bursting.
MAX_CATCH_UP_S = 1.0
#: Default sample rate of recordings of a call that was never offered to any client.
DEFAULT_RATE = 24000

PARTIES = ("caller", "callee", "agent")


class MediaClock:
    """The sandbox's 20 ms media clock, which every call follows.

    A timer per call cost a wake-up, a timer-heap entry and an ``epoll_wait`` per call per tick;
    this is one timer for all calls. Calls are spread over ``phases`` offsets within the 20 ms
    (round robin as they start), as calls placed at random moments would be on a real server:
    all calls on one instant would hand every client its frames in one burst per tick, which is
    cheaper for it than what it will meet in production. It ticks only while calls listen.
    """

    def __init__(self, phases: int = 4) -> None:
        self.phases = phases
        self._ticks = [0] * phases
        self._ticked = [anyio.Event() for _ in range(phases)]
        self._listeners = 0
        self._next_phase = 0
        self._wanted = anyio.Event()

    def listen(self) -> tuple[int, int]:
        """Start following the clock: returns the phase assigned and its current tick."""
        self._listeners += 1
        self._wanted.set()
        phase = self._next_phase
        self._next_phase = (phase + 1) % self.phases
        return phase, self._ticks[phase]

    def leave(self) -> None:
        self._listeners -= 1

    async def wait(self, phase: int, seen: int) -> int:
        """Wait for the phase's first tick after ``seen``; returns its current tick (more than
        one tick may have passed if the caller was slow: it catches up)."""
        while self._ticks[phase] <= seen:
            await self._ticked[phase].wait()
        return self._ticks[phase]

    async def run(self) -> None:
        """Tick every ``TICK_S / phases`` while there are listeners; skip ahead after a stall."""
        step = TICK_S / self.phases
        while True:
            if not self._listeners:
                self._wanted = anyio.Event()
                await self._wanted.wait()
            start = anyio.current_time()
            n = 0
            while self._listeners:
                n += 1
                delay = start + n * step - anyio.current_time()
                if delay > 0:
                    await anyio.sleep(delay)
                elif -delay > MAX_CATCH_UP_S:
                    logger.warning("media clock %.1f s behind; skipping", -delay)
                    start, n = anyio.current_time(), 0
                    continue
                phase = n % self.phases
                self._ticks[phase] += 1
                ticked, self._ticked[phase] = self._ticked[phase], anyio.Event()
                ticked.set()
                if delay <= 0:
                    await anyio.lowlevel.checkpoint()  # behind: still let the calls run


_MODES = {
    Command.WHISPER: AgentMode.WHISPER,
    Command.BARGE: AgentMode.BARGE,
    Command.SPY: AgentMode.SPY,
}


class CallStats:
    """What the sandbox measured of the agent on one call."""

    def __init__(self) -> None:
        self.agent_bytes_received = 0
        self.underrun_ms = 0
        self.excess_bytes = 0
        self.protocol_errors = 0
        self.latency_samples: list[float] = []

    def latency(self) -> dict[str, float] | None:
        """Echo latency p50/p99 in milliseconds, or None before any echoed byte."""
        samples = sorted(self.latency_samples)
        if not samples:
            return None

        def pct(p: float) -> float:
            return round(samples[min(len(samples) - 1, int(p * len(samples)))], 2)

        return {"p50": pct(0.50), "p99": pct(0.99)}

    def to_json(self) -> dict[str, Any]:
        return {
            "agent_bytes_received": self.agent_bytes_received,
            "underrun_ms": self.underrun_ms,
            "excess_bytes": self.excess_bytes,
            "protocol_errors": self.protocol_errors,
            "echo_latency_ms": self.latency(),
        }


class SimCall:
    """One simulated inbound call, from creation until both humans have hung up."""

    def __init__(
        self, sandbox: Sandbox, call_id: str, spec: CallSpec, connector_uuid: str, record: bool
    ) -> None:
        self.sandbox = sandbox
        self.call_id = call_id
        self.spec = spec
        self.connector_uuid = connector_uuid
        self.created_at = time.time()
        self._created_mono = anyio.current_time()
        self.state = CallState.PENDING
        self.agent_mode: AgentMode | None = None
        self.ended_reason: str | None = None
        self.commands: list[dict[str, Any]] = []
        self.stats = CallStats()
        self.agent: AgentMedia | None = None
        self.offered_to: ControlSession | None = None
        self.offer_deadline = 0.0
        self.offers = 0
        self.sample_rate: int | None = None
        self.audio_mode = AudioMode.MIXED
        self._record = record
        self.recordings: dict[str, bytearray] = {p: bytearray() for p in PARTIES}
        self._ticks_before_rate = 0
        self._caller: AudioSource = Silence()
        self._callee: AudioSource = Silence()
        self._ringing = False
        self._changed = anyio.Event()
        self._waiting = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._ended = anyio.Event()

    def __repr__(self) -> str:
        return f"<SimCall {self.call_id} {self.state.value}>"

    # --- observation -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The call as the HTTP API shows it."""
        return {
            "call_id": self.call_id,
            "from": self.spec.from_number,
            "to": self.spec.to_number,
            "state": self.state.value,
            "agent_mode": self.agent_mode.value if self.agent_mode else None,
            "ended_reason": self.ended_reason,
            "sample_rate": self.sample_rate or DEFAULT_RATE,
            "created_at": self.created_at,
            "offers": self.offers,
            "agent_connected": self.agent is not None,
            "commands": [dict(c) for c in self.commands],
            "stats": self.stats.to_json(),
        }

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[SimCall], bool]) -> None:
        """Wait until ``predicate(call)`` holds: checked at every change of the call, and every
        20 ms tick while someone waits (so predicates on recordings work too)."""
        self._waiting += 1
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
        if self.sample_rate is None and self._record:  # never offered: silence all along
            return bytes(frame_bytes_for(DEFAULT_RATE) * self._ticks_before_rate)
        return bytes(self.recordings[party])

    def recording_wav(self, party: str) -> bytes:
        """What ``party`` heard, as a WAV file."""
        return write_wav(self.recording(party), self.sample_rate or DEFAULT_RATE)

    # --- format and offers -----------------------------------------------------------------------

    def set_format(self, sample_rate: int) -> None:
        """The call's sample rate: that of the connection it is offered to, while it rings.

        Nothing but silence has been recorded while ringing, so a call offered again to a
        connection of another rate simply changes rate; once answered the rate is fixed.
        """
        if sample_rate == self.sample_rate or self.state is not CallState.PENDING:
            return
        ticks = self._ticks_before_rate
        if self.sample_rate is not None:
            ticks = len(self.recordings["caller"]) // frame_bytes_for(self.sample_rate)
        self.sample_rate = sample_rate
        self._caller = self.spec.caller.source(sample_rate)
        if self._record:
            for party in PARTIES:
                self.recordings[party] = bytearray(frame_bytes_for(sample_rate) * ticks)

    def attach(self, agent: AgentMedia) -> None:
        self.agent = agent
        self.audio_mode = agent.audio_mode
        self.offered_to = None
        self._notify()

    async def agent_gone(self, agent: AgentMedia) -> None:
        """The agent's media connection closed without ``call.close``/``call.disconnect``."""
        if self.agent is not agent:
            return
        self.agent = None
        if self.state is CallState.PENDING:
            logger.info("call %s: released while ringing; offering again", self.call_id)
            self._notify()
            await self.sandbox.offer(self, exclude=agent.session)
        elif self.state is CallState.ANSWERED:
            await self.end("media_lost" if agent.lost else "agent_close")
        elif self.state is CallState.CONNECTED:
            self.agent_mode = None
            self._notify()

    # --- ending ----------------------------------------------------------------------------------

    async def end(self, reason: str) -> None:
        """End the call for everyone."""
        if self.state is CallState.DISCONNECTED:
            return
        logger.info("call %s: ended (%s)", self.call_id, reason)
        self.state = CallState.DISCONNECTED
        self.ended_reason = reason
        self.agent_mode = None
        agent, self.agent = self.agent, None
        offered, self.offered_to = self.offered_to, None
        self.sandbox.revoke_tokens(self.call_id)
        self._ended.set()
        self._notify()
        with anyio.CancelScope(shield=True):
            if agent is not None:
                await agent.terminate(reason)
            elif offered is not None:
                await offered.send(CallEnded(self.call_id, reason))
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def hangup_caller(self) -> None:
        """The caller hangs up: the whole call ends."""
        await self.end("caller_hangup")

    async def hangup_callee(self) -> None:
        """The callee hangs up: the whole call ends. Refused unless the callee is on the call."""
        if self.state is not CallState.CONNECTED:
            raise ValueError(f"the callee is not on call {self.call_id} (state {self.state.value})")
        await self.end("callee_hangup")

    # --- commands --------------------------------------------------------------------------------

    async def handle_command(self, agent: AgentMedia, req: CommandRequest) -> None:
        """Carry out one of the agent's commands and send its one response."""
        entry: dict[str, Any] = {"command": req.command, "success": None, "error_code": None}
        self.commands.append(entry)

        async def respond(
            success: bool, code: str | None = None, message: str | None = None
        ) -> None:
            entry["success"], entry["error_code"] = success, code
            self._notify()
            await self.sandbox.respond(self, agent, req, success, code, message, delay)

        fault = self.sandbox.take_command_fault(self.call_id, req.command)
        delay = fault.seconds if fault is not None and fault.kind == "delay" else 0.0
        if fault is not None and fault.kind == "fail":
            await respond(False, fault.error_code, "injected failure (sandbox fault)")
            return

        try:
            command = Command(req.command)
        except ValueError:
            await respond(False, "INVALID_COMMAND", f"unknown command {req.command!r}")
            return
        if self.agent is not agent or self.state is CallState.DISCONNECTED:
            await respond(False, "CALL_TERMINATED", "the call has ended")
            return
        if command not in allowed_commands(self.state):
            await respond(
                False,
                "INVALID_STATE",
                f"{command.value} is not allowed in state {self.state.value}",
            )
            return
        if command is Command.ANSWER:
            self.state = CallState.ANSWERED
            await respond(True)
        elif command is Command.CONNECT:
            ring = (req.data or {}).get("ringTimeSeconds", 60)
            if isinstance(ring, bool) or not isinstance(ring, int) or not 1 <= ring <= 120:
                await respond(False, "INVALID_COMMAND", "ringTimeSeconds must be an integer 1..120")
            elif self._ringing:
                await respond(False, "INVALID_STATE", "the callee is already being rung")
            else:
                assert self._tg is not None
                self._ringing = True
                self._tg.start_soon(self._ring, agent, req, ring, respond)
        elif command in _MODES:
            self.agent_mode = _MODES[command]
            await respond(True)
        elif command is Command.INTERRUPT:
            agent.interrupt()
            await respond(True)
        elif command is Command.CLOSE:
            await respond(True)
            if self.state is CallState.CONNECTED:
                await self._agent_leaves(agent)
            else:
                await self.end("agent_close")
        elif command is Command.DISCONNECT:
            await respond(True)
            await self.end("agent_disconnect")

    async def _agent_leaves(self, agent: AgentMedia) -> None:
        """``call.close`` while CONNECTED: the agent leaves; caller and callee stay connected."""
        self.agent = None
        self.agent_mode = None
        self._notify()
        await agent.terminate("agent_close")

    async def _ring(
        self,
        agent: AgentMedia,
        req: CommandRequest,
        ring_s: int,
        respond: Callable[..., Any],
    ) -> None:
        callee = self.spec.callee
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
                    failure = ("CALL_REJECTED", "the callee declined")
                elif not callee.answer or callee.answer_after_s > ring_s:
                    await anyio.sleep(ring_s)
                    failure = ("CALL_UNANSWERED", f"the callee did not answer within {ring_s} s")
                else:
                    await anyio.sleep(callee.answer_after_s)
        finally:
            self._ringing = False
        if self.agent is not agent or self.state is CallState.DISCONNECTED:
            return  # ending the call answered the command with CALL_TERMINATED
        if timer.cancelled_caught:
            await respond(False, "TIMEOUT", "no outcome within the command's timeout")
        elif failure is not None:
            await respond(False, *failure)
        else:
            self.state = CallState.CONNECTED
            self.agent_mode = AgentMode.BARGE
            self._callee = callee.voice.source(self.sample_rate or DEFAULT_RATE)
            await respond(True)

    # --- media clock -----------------------------------------------------------------------------

    async def run(self, clock: MediaClock) -> None:
        """The call's life: one tick of media per tick of ``clock`` until it ends."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            phase, seen = clock.listen()
            try:
                while self.state is not CallState.DISCONNECTED:
                    now = await clock.wait(phase, seen)
                    due, seen = now - seen, now
                    if due * TICK_S > MAX_CATCH_UP_S:
                        logger.warning(
                            "call %s: media %.1f s behind; skipping",
                            self.call_id,
                            due * TICK_S,
                        )
                        due = 1
                    for _ in range(due):
                        if not await self._tick():
                            break
                    if self._waiting:
                        self._notify()
            finally:
                clock.leave()
            tg.cancel_scope.cancel()

    async def _tick(self) -> bool:
        """One tick of the call's life; False once the call has ended."""
        if self.state is CallState.DISCONNECTED:
            return False
        now = anyio.current_time()
        hangup = self.spec.caller_hangup_after_s
        if hangup is not None and now - self._created_mono >= hangup:
            await self.end("caller_hangup")
            return False
        if (
            self.state is CallState.PENDING
            and self.agent is None
            and self.offered_to is not None
            and now >= self.offer_deadline
        ):
            logger.info("call %s: offer not claimed in time; offering again", self.call_id)
            await self.sandbox.offer(self, exclude=self.offered_to)
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
            frames: list[str | bytes] = []
            if agent.audio_mode is AudioMode.ISOLATED:
                frames.append(bytes((CHANNEL_CALLER,)) + caller)
                if callee:
                    frames.append(bytes((CHANNEL_CALLEE,)) + callee)
                agent_hears = mix(caller, callee)
            else:
                agent_hears = mix(caller, callee)
                frames.append(bytes((CHANNEL_MIXED,)) + agent_hears)
            grant = agent.regrant()
            if grant is not None:
                frames.append(grant)
            agent.sent_times.append(now)
            await agent.send(frames)
        if self._record:
            silence = bytes(fb)
            self.recordings["caller"] += caller_hears or silence
            self.recordings["callee"] += callee_hears or silence
            self.recordings["agent"] += agent_hears or silence
