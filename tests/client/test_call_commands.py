"""Every call command in every state against the sandbox, the events they fire, and how calls end.

The table under test is PROTOCOL.md's "Call states and what commands do", written out here on its
own (not imported from the SDK) so that the SDK and the sandbox are both checked against the spec.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import pytest

from telcoflow import ActiveCall, CallState, TelcoflowClientConfig, events
from telcoflow.events import AgentMode, CallEvent
from telcoflow.exceptions import WSSCallClosedError, WSSCallCommandError
from telcoflow.sandbox import CalleeSpec, CallSpec, Sandbox, SimCall

from ..helpers import WAIT, CallInbox, serving

pytestmark = pytest.mark.anyio


def untimed(commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The command log without its timeline positions (``at_s``), for exact comparisons."""
    return [{k: v for k, v in c.items() if k != "at_s"} for c in commands]


P, A, C, D = CallState.PENDING, CallState.ANSWERED, CallState.CONNECTED, CallState.DISCONNECTED

#: Wire name -> how the application sends it. ``agent.interrupt`` is what
#: ``clear_send_audio_buffer()`` sends after emptying the local buffer.
COMMANDS: dict[str, Callable[[ActiveCall], Awaitable[None]]] = {
    "call.answer": lambda call: call.answer(),
    "call.connect": lambda call: call.connect(ring_time_seconds=2),
    "agent.whisper": lambda call: call.whisper(),
    "agent.barge": lambda call: call.barge(),
    "agent.spy": lambda call: call.spy(),
    "agent.interrupt": lambda call: call.clear_send_audio_buffer(),
    "call.close": lambda call: call.close(),
    "call.disconnect": lambda call: call.disconnect(),
}

ALLOWED: dict[CallState, set[str]] = {
    P: {"call.answer", "call.connect", "call.disconnect", "agent.interrupt"},
    A: {"call.connect", "call.close", "call.disconnect", "agent.interrupt"},
    C: {
        "agent.whisper",
        "agent.barge",
        "agent.spy",
        "agent.interrupt",
        "call.close",
        "call.disconnect",
    },
}

MODE_OF = {
    "agent.whisper": AgentMode.WHISPER,
    "agent.barge": AgentMode.BARGE,
    "agent.spy": AgentMode.SPY,
}


class _HasAgentMode(Protocol):
    @property
    def agent_mode(self) -> AgentMode | None: ...


def mode_of(call: _HasAgentMode) -> AgentMode | None:
    """``call.agent_mode`` (an ``ActiveCall``'s or a ``SimCall``'s) unnarrowed: after an ``assert
    call.agent_mode is None`` mypy would keep that type across the ``await`` that changes it."""
    return call.agent_mode


#: A callee that picks up at once, so that reaching CONNECTED is quick.
QUICK_CALLEE = CallSpec(callee=CalleeSpec(answer_after_s=0.05))


LIVE_CASES = [
    pytest.param(state, name, name in ALLOWED[state], id=f"{state.value}-{name}")
    for state in (P, A, C)
    for name in COMMANDS
]


async def reach(call: ActiveCall, sim: SimCall, state: CallState) -> None:
    """Bring a fresh (PENDING) call to ``state`` with the commands that lead there."""
    if state in (A, C):
        await call.answer()
    if state is C:
        await call.connect(ring_time_seconds=2)
    assert call.state is state
    assert sim.state is state


# --- the state table ------------------------------------------------------------------------------


@pytest.mark.parametrize(("state", "name", "allowed"), LIVE_CASES)
async def test_command_in_live_state(
    sandbox: Sandbox, inbox: CallInbox, state: CallState, name: str, allowed: bool
) -> None:
    sim = await sandbox.create_call(QUICK_CALLEE)
    call = await inbox.next()
    await reach(call, sim, state)
    mode_before = call.agent_mode
    assert sim.agent_mode is mode_before
    logged = len(sim.commands)

    if not allowed:
        with pytest.raises(WSSCallCommandError) as refused:
            await COMMANDS[name](call)
        assert refused.value.error_code == "INVALID_STATE"
        assert refused.value.command == name
        assert refused.value.call_id == call.call_id
        assert call.state is state
        assert sim.state is state
        assert call.agent_mode is mode_before
        assert sim.agent_mode is mode_before
        assert call.is_active
        assert untimed(sim.commands[logged:]) == [
            {"command": name, "success": False, "error_code": "INVALID_STATE"}
        ]
        # A refusal changes nothing: the call still takes the commands its state allows.
        await call.clear_send_audio_buffer()
        assert untimed(sim.commands[-1:])[0] == {
            "command": "agent.interrupt",
            "success": True,
            "error_code": None,
        }
        assert sim.state is state
        return

    await COMMANDS[name](call)
    assert untimed(sim.commands[logged:]) == [
        {"command": name, "success": True, "error_code": None}
    ]
    with anyio.fail_after(WAIT):
        if name == "call.answer":
            assert (call.state, sim.state) == (A, A)
            assert call.agent_mode is None
            assert sim.agent_mode is None
        elif name == "call.connect":
            assert (call.state, sim.state) == (C, C)
            assert call.agent_mode is AgentMode.BARGE
            assert sim.agent_mode is AgentMode.BARGE
        elif name in MODE_OF:
            assert (call.state, sim.state) == (C, C)
            assert call.agent_mode is MODE_OF[name]
            assert sim.agent_mode is MODE_OF[name]
        elif name == "agent.interrupt":
            assert (call.state, sim.state) == (state, state)
            assert call.agent_mode is mode_before
            assert sim.agent_mode is mode_before
            assert call.is_active
        elif name == "call.disconnect":
            assert await call.wait_terminated() == "agent_disconnect"
            assert await sim.wait_ended() == "agent_disconnect"
            assert call.state is D
            assert sim.state is D
        elif name == "call.close" and state is A:
            assert await call.wait_terminated() == "agent_close"
            assert await sim.wait_ended() == "agent_close"
            assert call.state is D
            assert sim.state is D
        else:  # close while CONNECTED: the agent leaves, caller and callee stay
            assert name == "call.close"
            assert state is C
            assert await call.wait_terminated() == "agent_close"
            assert call.state is D
            await sim.wait_for(lambda c: c.agent is None)
            assert sim.state is C
            assert sim.agent_mode is None
            assert sim.ended_reason is None


@pytest.mark.parametrize("name", list(COMMANDS))
async def test_command_after_call_ended_raises_closed(
    sandbox: Sandbox, inbox: CallInbox, name: str
) -> None:
    sim = await sandbox.create_call()
    call = await inbox.next()
    await call.answer()
    await sim.hangup_caller()
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "caller_hangup"
    assert call.state is D
    logged = len(sim.commands)
    with pytest.raises(WSSCallClosedError) as closed:
        await COMMANDS[name](call)
    assert closed.value.call_id == call.call_id
    assert call.state is D
    assert len(sim.commands) == logged


@pytest.mark.parametrize("ending", ["caller_hangup", "disconnect", "close", "force_disconnect"])
async def test_every_command_refused_locally_however_the_call_ended(
    sandbox: Sandbox, inbox: CallInbox, ending: str
) -> None:
    sim = await sandbox.create_call()
    call = await inbox.next()
    await call.answer()
    if ending == "caller_hangup":
        await sim.hangup_caller()
    elif ending == "force_disconnect":
        await call.force_disconnect()
    else:
        await getattr(call, ending)()
    with anyio.fail_after(WAIT):
        await call.wait_terminated()
        await sim.wait_ended()
    for name, send in COMMANDS.items():
        with pytest.raises(WSSCallClosedError):
            await send(call)
        assert call.state is D, name


# --- connect --------------------------------------------------------------------------------------


async def test_connect_unanswered_leaves_the_call_answered_and_usable(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call(callee=CalleeSpec(answer=False))
    call = await inbox.next()
    failed: list[Any] = []
    got_failure = anyio.Event()

    @call.on(events.CALL_CONNECT_FAILED)
    def on_failed(error: Any) -> None:
        failed.append(error)
        got_failure.set()

    await call.answer()
    with pytest.raises(WSSCallCommandError) as unanswered:
        await call.connect(ring_time_seconds=1)
    assert unanswered.value.error_code == "CALL_UNANSWERED"
    assert unanswered.value.command == "call.connect"
    assert call.state is A
    assert sim.state is A
    assert call.is_active
    assert call.agent_mode is None
    assert untimed(sim.commands[-1:])[0] == {
        "command": "call.connect",
        "success": False,
        "error_code": "CALL_UNANSWERED",
    }
    with anyio.fail_after(WAIT):
        await got_failure.wait()
    assert failed == [unanswered.value]
    assert failed[0] is unanswered.value

    # Still a live call: audio flows and commands work.
    with anyio.fail_after(WAIT):
        chunk = await anext(aiter(call.audio_stream()))
    assert len(chunk) == 960
    await call.clear_send_audio_buffer()
    await call.disconnect()
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "agent_disconnect"
        assert await sim.wait_ended() == "agent_disconnect"


@pytest.mark.parametrize("state", [P, A])
async def test_connect_declined_is_rejected_and_the_state_stays(
    sandbox: Sandbox, inbox: CallInbox, state: CallState
) -> None:
    sim = await sandbox.create_call(callee=CalleeSpec(decline=True))
    call = await inbox.next()
    await reach(call, sim, state)
    with pytest.raises(WSSCallCommandError) as rejected:
        await call.connect(ring_time_seconds=5)
    assert rejected.value.error_code == "CALL_REJECTED"
    assert call.state is state
    assert sim.state is state
    assert call.is_active
    assert untimed(sim.commands[-1:])[0] == {
        "command": "call.connect",
        "success": False,
        "error_code": "CALL_REJECTED",
    }
    # The state's commands still work: from PENDING the call can still be answered.
    if state is P:
        await call.answer()
        assert sim.state is A


@pytest.mark.parametrize("ring", [0, -1, 121, 1.5])
async def test_connect_with_a_bad_ring_time_raises_before_sending(
    sandbox: Sandbox, inbox: CallInbox, ring: Any
) -> None:
    sim = await sandbox.create_call(QUICK_CALLEE)
    call = await inbox.next()
    await call.answer()
    with pytest.raises(ValueError, match="ring_time_seconds"):
        await call.connect(ring_time_seconds=ring)
    # Commands are handled in order: had connect gone out, it would be logged before this one.
    await call.clear_send_audio_buffer()
    assert [c["command"] for c in sim.commands] == ["call.answer", "agent.interrupt"]
    assert call.state is A
    assert sim.state is A


async def test_connect_accepts_the_longest_ring_time(sandbox: Sandbox, inbox: CallInbox) -> None:
    sim = await sandbox.create_call(QUICK_CALLEE)
    call = await inbox.next()
    await call.answer()
    await call.connect(ring_time_seconds=120)
    assert call.state is C
    assert sim.state is C


async def test_connect_with_the_longest_ring_time_and_the_longest_command_timeout(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    # Any valid configuration and ring time must add up to a timeout the wire accepts.
    with pytest.raises(ValueError, match="command_timeout"):
        make_config(command_timeout=301)
    async with serving(make_config(command_timeout=300)) as (_, inbox):
        sim = await sandbox.create_call(QUICK_CALLEE)
        call = await inbox.next()
        await call.answer()
        await call.connect(ring_time_seconds=120)
        assert call.state is C
        assert sim.state is C


# --- agent modes, close, disconnect ---------------------------------------------------------------


async def test_agent_mode_follows_each_mode_command_on_both_sides(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call(QUICK_CALLEE)
    call = await inbox.next()
    await call.answer()
    assert mode_of(call) is None
    assert mode_of(sim) is None
    await call.connect(ring_time_seconds=2)
    assert call.agent_mode is AgentMode.BARGE
    assert sim.agent_mode is AgentMode.BARGE
    for name in ("agent.whisper", "agent.spy", "agent.barge", "agent.spy", "agent.whisper"):
        await COMMANDS[name](call)
        assert call.agent_mode is MODE_OF[name], name
        assert sim.agent_mode is MODE_OF[name], name
    assert call.state is C
    assert sim.state is C


async def test_close_while_connected_leaves_caller_and_callee_together(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call(QUICK_CALLEE)
    call = await inbox.next()
    await reach(call, sim, C)
    await call.whisper()
    await call.close()
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "agent_close"
        await sim.wait_for(lambda c: c.agent is None)
    assert call.state is D
    assert sim.state is C
    assert sim.agent_mode is None
    assert sim.ended_reason is None
    # The humans stay until one of them hangs up.
    await sim.hangup_callee()
    assert sim.state is D
    assert sim.ended_reason == "callee_hangup"


@pytest.mark.parametrize("state", [P, A, C])
async def test_disconnect_ends_the_call_for_everyone(
    sandbox: Sandbox, inbox: CallInbox, state: CallState
) -> None:
    sim = await sandbox.create_call(QUICK_CALLEE)
    call = await inbox.next()
    await reach(call, sim, state)
    await call.disconnect()
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "agent_disconnect"
        assert await sim.wait_ended() == "agent_disconnect"
    assert call.state is D
    assert sim.state is D
    assert sim.agent is None


async def test_the_sandbox_logs_every_command_with_its_outcome(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call(QUICK_CALLEE)
    call = await inbox.next()
    await call.answer()
    with pytest.raises(WSSCallCommandError):
        await call.answer()
    with pytest.raises(WSSCallCommandError):
        await call.spy()
    await call.clear_send_audio_buffer()
    await call.connect(ring_time_seconds=2)
    with pytest.raises(WSSCallCommandError):
        await call.connect(ring_time_seconds=2)
    await call.whisper()
    await call.close()
    assert untimed(sim.commands) == [
        {"command": "call.answer", "success": True, "error_code": None},
        {"command": "call.answer", "success": False, "error_code": "INVALID_STATE"},
        {"command": "agent.spy", "success": False, "error_code": "INVALID_STATE"},
        {"command": "agent.interrupt", "success": True, "error_code": None},
        {"command": "call.connect", "success": True, "error_code": None},
        {"command": "call.connect", "success": False, "error_code": "INVALID_STATE"},
        {"command": "agent.whisper", "success": True, "error_code": None},
        {"command": "call.close", "success": True, "error_code": None},
    ]


# --- hang-ups -------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [P, A, C])
async def test_caller_hangup_terminates_the_call(
    sandbox: Sandbox, inbox: CallInbox, state: CallState
) -> None:
    sim = await sandbox.create_call(QUICK_CALLEE)
    call = await inbox.next()
    reasons: list[str] = []
    delivered = anyio.Event()

    @call.on(events.CALL_TERMINATED)
    def on_terminated(reason: str) -> None:
        reasons.append(reason)
        delivered.set()

    await reach(call, sim, state)
    await sim.hangup_caller()
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "caller_hangup"
        await delivered.wait()
    assert reasons == ["caller_hangup"]
    assert call.state is D
    assert call.termination_reason == "caller_hangup"
    assert sim.ended_reason == "caller_hangup"


async def test_caller_hangup_as_the_callee_answers_is_reported_as_caller_hangup(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    # The caller hangs up the moment the sandbox puts the callee through, while the sandbox is
    # still sending connect's response: the agent must still learn why the call ended. Several
    # rounds, because which task runs first is up to the scheduler (trio shuffles it).
    for _ in range(8):
        sim = await sandbox.create_call(QUICK_CALLEE)
        call = await inbox.next()
        await call.answer()
        outcome: list[str] = []

        async def connect(call: ActiveCall = call, outcome: list[str] = outcome) -> None:
            try:
                await call.connect(ring_time_seconds=2)
                outcome.append("connected")
            except WSSCallClosedError:
                outcome.append("closed")  # also fine: the call ended before the answer came

        async with anyio.create_task_group() as tg:
            tg.start_soon(connect)
            with anyio.fail_after(WAIT):
                await sim.wait_state(C)
            await sim.hangup_caller()
        with anyio.fail_after(WAIT):
            reason = await call.wait_terminated()
        assert (reason, sim.ended_reason) == ("caller_hangup", "caller_hangup"), outcome


async def test_callee_hangup_terminates_the_call(sandbox: Sandbox, inbox: CallInbox) -> None:
    sim = await sandbox.create_call(QUICK_CALLEE)
    call = await inbox.next()
    delivered = anyio.Event()
    reasons: list[str] = []

    @call.on(events.CALL_TERMINATED)
    def on_terminated(reason: str) -> None:
        reasons.append(reason)
        delivered.set()

    await reach(call, sim, C)
    await sim.hangup_callee()
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "callee_hangup"
        await delivered.wait()
    assert reasons == ["callee_hangup"]
    assert call.state is D
    assert sim.ended_reason == "callee_hangup"


# --- events: exactly once, in order, every handler shape ------------------------------------------


class Recorder:
    """Registers four handler shapes (sync/async x zero/one argument) for every call event."""

    def __init__(self, call: ActiveCall) -> None:
        self.fired: list[tuple[str, str, Any]] = []
        self.terminated = anyio.Event()
        for event in CallEvent:
            self._register(call, event)

    def _register(self, call: ActiveCall, event: CallEvent) -> None:
        name = event.value
        fired = self.fired

        def sync0() -> None:
            fired.append((name, "sync0", None))

        def sync1(payload: Any) -> None:
            fired.append((name, "sync1", payload))

        async def async0() -> None:
            await anyio.lowlevel.checkpoint()
            fired.append((name, "async0", None))

        async def async1(payload: Any) -> None:
            await anyio.lowlevel.checkpoint()
            fired.append((name, "async1", payload))
            if name == events.CALL_TERMINATED:
                self.terminated.set()

        call.on(event, sync0)  # the enum
        call.on(name, sync1)  # the string constant
        call.on(name)(async0)  # as a decorator
        call.on(event, async1)

    def expected(self, *occurrences: tuple[str, Any]) -> list[tuple[str, str, Any]]:
        return [
            (name, shape, payload if shape.endswith("1") else None)
            for name, payload in occurrences
            for shape in ("sync0", "sync1", "async0", "async1")
        ]


async def test_events_on_connect_failure_fire_once_in_order(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    async with serving(make_config()) as (_, inbox):
        sim = await sandbox.create_call(callee=CalleeSpec(decline=True))
        call = await inbox.next()
        recorder = Recorder(call)
        await call.answer()
        with pytest.raises(WSSCallCommandError) as rejected:
            await call.connect(ring_time_seconds=2)
        await sim.hangup_caller()
        with anyio.fail_after(WAIT):
            await recorder.terminated.wait()
        # Once over, nothing fires again.
        await call.force_disconnect()
        with pytest.raises(WSSCallClosedError):
            await call.disconnect()
    # Leaving the client waited for every dispatcher: this is everything that ever fired.
    assert recorder.fired == recorder.expected(
        (events.CALL_ANSWERED, None),
        (events.CALL_CONNECT_FAILED, rejected.value),
        (events.CALL_TERMINATED, "caller_hangup"),
    )
    failure = next(p for n, s, p in recorder.fired if n == events.CALL_CONNECT_FAILED and p)
    assert failure is rejected.value
    assert isinstance(failure, WSSCallCommandError)
    assert failure.error_code == "CALL_REJECTED"


@pytest.mark.parametrize(
    ("ending", "reason"),
    [
        ("callee_hangup", "callee_hangup"),
        ("close", "agent_close"),
        ("disconnect", "agent_disconnect"),
        ("force_disconnect", "agent_force_disconnect"),
    ],
)
async def test_events_on_connect_fire_once_in_order(
    sandbox: Sandbox,
    make_config: Callable[..., TelcoflowClientConfig],
    ending: str,
    reason: str,
) -> None:
    async with serving(make_config()) as (_, inbox):
        sim = await sandbox.create_call(QUICK_CALLEE)
        call = await inbox.next()
        recorder = Recorder(call)
        await call.answer()
        await call.connect(ring_time_seconds=2)
        await call.spy()
        if ending == "callee_hangup":
            await sim.hangup_callee()
        else:
            await getattr(call, ending)()
        with anyio.fail_after(WAIT):
            await recorder.terminated.wait()
        await call.force_disconnect()
    assert recorder.fired == recorder.expected(
        (events.CALL_ANSWERED, None),
        (events.CALL_CONNECTED, None),
        (events.CALL_TERMINATED, reason),
    )


async def test_a_refused_answer_fires_answer_failed_with_the_error(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    await sandbox.create_call()
    call = await inbox.next()
    failures: list[Any] = []
    delivered = anyio.Event()
    call.on(events.CALL_ANSWER_FAILED, failures.append)
    call.on(events.CALL_ANSWER_FAILED, delivered.set)
    await call.answer()
    with pytest.raises(WSSCallCommandError) as refused:
        await call.answer()
    with anyio.fail_after(WAIT):
        await delivered.wait()
    assert failures == [refused.value]
    assert failures[0] is refused.value
    assert refused.value.error_code == "INVALID_STATE"


async def test_a_raising_handler_does_not_stop_the_others(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call()
    call = await inbox.next()
    seen: list[str] = []
    delivered = anyio.Event()

    @call.on(events.CALL_ANSWERED)
    def broken() -> None:
        raise RuntimeError("handler bug")

    call.on(events.CALL_ANSWERED, lambda: seen.append("answered"))
    call.on(events.CALL_TERMINATED, lambda reason: seen.append(reason))
    call.on(events.CALL_TERMINATED, delivered.set)
    await call.answer()
    await sim.hangup_caller()
    with anyio.fail_after(WAIT):
        await delivered.wait()
    assert seen == ["answered", "caller_hangup"]


# --- force_disconnect -----------------------------------------------------------------------------


async def test_force_disconnect_never_raises_and_terminates_once(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    async with serving(make_config()) as (client, inbox):
        sim = await sandbox.create_call()
        call = await inbox.next()
        reasons: list[str] = []
        call.on(events.CALL_TERMINATED, reasons.append)
        await call.answer()
        await call.force_disconnect()
        await call.force_disconnect()
        assert call.state is D
        assert call.termination_reason == "agent_force_disconnect"
        with anyio.fail_after(WAIT):
            assert await call.wait_terminated() == "agent_force_disconnect"
            # Dropping the media connection of an ANSWERED call counts as call.close.
            assert await sim.wait_ended() == "agent_close"
        await call.force_disconnect()
        assert client.get_call(call.call_id) is None
    assert reasons == ["agent_force_disconnect"]


async def test_force_disconnect_after_the_call_ended_changes_nothing(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    async with serving(make_config()) as (_, inbox):
        sim = await sandbox.create_call()
        call = await inbox.next()
        reasons: list[str] = []
        call.on(events.CALL_TERMINATED, reasons.append)
        await call.answer()
        await sim.hangup_caller()
        with anyio.fail_after(WAIT):
            assert await call.wait_terminated() == "caller_hangup"
        await call.force_disconnect()
        await call.force_disconnect()
        assert call.termination_reason == "caller_hangup"
        assert call.state is D
    assert reasons == ["caller_hangup"]


async def test_force_disconnect_while_connected_leaves_the_humans_together(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call(QUICK_CALLEE)
    call = await inbox.next()
    await reach(call, sim, C)
    await call.force_disconnect()
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "agent_force_disconnect"
        await sim.wait_for(lambda c: c.agent is None)
    assert sim.state is C
    assert sim.agent_mode is None
    assert sim.ended_reason is None


async def test_force_disconnect_while_pending_releases_the_call_to_be_offered_again(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call()
    first = await inbox.next()
    await first.force_disconnect()
    assert first.termination_reason == "agent_force_disconnect"
    again = await inbox.next()
    assert again is not first
    assert again.call_id == sim.call_id
    assert sim.offers == 2
    assert sim.state is P
    await again.answer()
    assert sim.state is A


async def test_caller_hangup_while_the_callee_rings_ends_the_connect(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call(callee=CalleeSpec(answer=False))
    call = await inbox.next()
    await call.answer()
    outcome: list[BaseException] = []

    async def connect() -> None:
        try:
            await call.connect(ring_time_seconds=30)
        except WSSCallClosedError as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(connect)
        with anyio.fail_after(WAIT):
            await sim.wait_for(
                lambda c: bool(c.commands) and c.commands[-1]["command"] == "call.connect"
            )
        await sim.hangup_caller()
    assert len(outcome) == 1
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "caller_hangup"
    assert call.state is D
