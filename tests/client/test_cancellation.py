"""Cancelling the client or a call at any moment leaves no task, socket or file descriptor behind.

A full scenario (enter, offer, answer, echo, connect, close, ``run_forever`` with an echoing
handler, disconnect, reconnect, exit with calls in flight) runs inside a cancel scope that is
cancelled at one of many moments: a named step of the scenario plus a few scheduler checkpoints,
or a number of checkpoints from the start. Each run then checks the client's tasks and sockets,
the sandbox's view (the agent gone from every call, answered calls ended ``agent_close``,
connected ones left), and, with the sandbox closed too, the process's file descriptors and tasks
against a baseline taken before the sandbox started.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from telcoflow import (
    ActiveCall,
    CallState,
    TelcoflowClient,
    TelcoflowClientConfig,
    WSSCallClosedError,
    WSSCallCommandError,
    events,
)
from telcoflow._net import CLOSE_TIMEOUT
from telcoflow.sandbox import CalleeSpec, Sandbox, SimCall

from ..helpers import WAIT, live_task_names, state_of
from .test_client_lifecycle import client_sockets, sdk_tasks

pytestmark = pytest.mark.anyio

#: Calls placed with this caller number are taken by the echoing INCOMING_CALL handler; the
#: others are handed to the scenario itself.
ECHO_FROM = "+6590000777"

#: The named steps of :func:`scenario`, in order; a cancellation lands just after one of them.
STEPS = [
    "start",  # before ``async with TelcoflowClient``: cancel while it connects
    "entered",
    "placed",  # the offer is out: cancel while the client opens the media connection
    "offered",  # cancel during answer()
    "answered",  # during the echo
    "echoed",  # during connect(): the callee is ringing
    "connected",  # during the echo of a CONNECTED call
    "echoed_connected",  # during close()
    "closed",
    "serving",  # run_forever() and the echoing handler take over
    "placed_echo",
    "echo_answered",  # the handler echoes until the caller hangs up
    "echo_ended",
    "answered_again",  # an ANSWERED call is in flight...
    "disconnected",  # ...when disconnect() closes it and run_forever returns
    "reconnected",  # connect() again
    "exiting",  # an ANSWERED and a PENDING call in flight: cancel during __aexit__
    "exited",
]

#: Checkpoints counted from the start of the scenario (enter, setup, first offer).
FROM_START = [0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144]


# --- measures -------------------------------------------------------------------------------------


def live_tasks() -> list[str]:
    """Names of every live task of the event loop (the test's own, the sandbox's, the SDK's)."""
    return sorted(live_task_names())


def open_fds() -> list[str]:
    """What each open file descriptor of this process is (``socket:[inode]``, a path, ...)."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the directory listing's own descriptor, closed meanwhile
            continue
    return sorted(targets)


@asynccontextmanager
async def nothing_left_behind() -> AsyncIterator[None]:
    """Wraps a test's whole life (sandbox included): every descriptor and task it opened must be
    gone at the end, and every object it dropped must have been closed (``gc.collect`` runs now,
    so an unclosed socket's ResourceWarning fails this test rather than a later one)."""
    gc.collect()
    fds, tasks = open_fds(), live_tasks()
    yield
    gc.collect()
    assert open_fds() == fds
    assert live_tasks() == tasks


def config_for(sb: Sandbox, **options: Any) -> TelcoflowClientConfig:
    return TelcoflowClientConfig.sandbox(
        api_key=sb.api_key, connector_uuid=sb.connector_uuid, base_url=sb.base_url, **options
    )


async def agent_gone(sb: Sandbox) -> None:
    """The sandbox's view once the client has left: no control connection, no agent on any call,
    no call left ANSWERED (it ends ``agent_close``), connected calls go on without the agent."""
    with anyio.fail_after(WAIT):
        await sb.wait_for(lambda: not sb.control_sessions() and all(map(released, sb.calls)))
    for sim in sb.calls:
        if sim.state is CallState.DISCONNECTED:
            assert sim.ended_reason in ("agent_close", "caller_hangup"), sim
        elif sim.state is CallState.CONNECTED:
            assert sim.agent_mode is None


def released(sim: SimCall) -> bool:
    """No agent on the call any more, as the sandbox sees it."""
    if sim.agent is not None or sim.state is CallState.ANSWERED:
        return False
    # A ringing call is offered to nobody (it rings until a client connects).
    return sim.state is not CallState.PENDING or sim.bound_to is None


# --- the scenario ---------------------------------------------------------------------------------


class Script:
    """The steps a scenario has reached; a canceller waits for one of them."""

    def __init__(self) -> None:
        self.reached: list[str] = []
        #: CALL_TERMINATED payloads delivered, by call id, for every call the client delivered.
        self.terminated: dict[str, list[str]] = {}
        self.calls: list[ActiveCall] = []
        self._events = {step: anyio.Event() for step in STEPS}

    def step(self, name: str) -> None:
        self.reached.append(name)
        self._events[name].set()

    async def wait(self, name: str) -> None:
        await self._events[name].wait()


async def echo(call: ActiveCall, frames: int | None) -> None:
    """Send back what the call hears: ``frames`` more frames, or until the call ends."""
    target = None if frames is None else call.stats.frames_received + frames
    async for chunk in call.audio_stream():
        await call.send_audio(chunk)
        if target is not None and call.stats.frames_received >= target:
            return


async def scenario(sb: Sandbox, config: TelcoflowClientConfig, script: Script) -> None:
    client = TelcoflowClient(config)
    send, receive = anyio.create_memory_object_stream[ActiveCall](10)

    @client.on(events.INCOMING_CALL)
    async def agent(call: ActiveCall) -> None:
        script.calls.append(call)
        call.on(events.CALL_TERMINATED, script.terminated.setdefault(call.call_id, []).append)
        if call.caller_number != ECHO_FROM:
            send.send_nowait(call)
            return
        await call.answer()
        script.step("echo_answered")
        await echo(call, None)
        script.step("echo_ended")

    with send, receive:
        script.step("start")
        async with client:
            script.step("entered")
            await sb.create_call(callee=CalleeSpec(answer_after_s=0.05))
            script.step("placed")
            call = await receive.receive()
            script.step("offered")
            await call.answer()
            script.step("answered")
            await echo(call, 3)
            script.step("echoed")
            await call.connect(ring_time_seconds=5)
            script.step("connected")
            await echo(call, 3)
            script.step("echoed_connected")
            await call.close()
            script.step("closed")

            async def operator() -> None:
                sim = await sb.create_call(from_number=ECHO_FROM, caller_hangup_after_s=0.2)
                script.step("placed_echo")
                await sim.wait_ended()
                await script.wait("echo_ended")
                await sb.create_call()
                await (await receive.receive()).answer()
                script.step("answered_again")
                await client.disconnect()
                script.step("disconnected")

            async with anyio.create_task_group() as tg:
                tg.start_soon(operator)
                script.step("serving")
                await client.run_forever()

            await client.connect()
            script.step("reconnected")
            await sb.create_call()
            await (await receive.receive()).answer()
            await sb.create_call()
            await receive.receive()
            script.step("exiting")
        script.step("exited")


async def run_cancelled(
    sb: Sandbox, step: str, checkpoints: int, **options: Any
) -> tuple[Script, anyio.CancelScope]:
    """Run the scenario; just after ``step``, let ``checkpoints`` scheduler checkpoints pass and
    cancel it."""
    script = Script()

    async def canceller(scope: anyio.CancelScope) -> None:
        await script.wait(step)
        for _ in range(checkpoints):
            await anyio.lowlevel.checkpoint()
        scope.cancel()

    with anyio.fail_after(WAIT):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(canceller, scope)
                await scenario(sb, config_for(sb, **options), script)
                tg.cancel_scope.cancel()  # the scenario ended before the cancellation
    return script, scope


async def test_the_scenario_runs_to_the_end(anyio_backend: str) -> None:
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        script, _ = await run_cancelled(sb, "exited", 0)
        assert script.reached == STEPS
        assert sdk_tasks() == []
        assert client_sockets(sb.port) == 0
        await agent_gone(sb)
        reasons = sorted(str(c.ended_reason) for c in sb.calls if c.ended_reason)
        assert reasons == ["agent_close", "agent_close", "caller_hangup"]


@pytest.mark.parametrize(
    ("step", "checkpoints"),
    [(step, n) for step in STEPS[:-1] for n in (0, 4)] + [("start", n) for n in FROM_START[1:]],
)
async def test_cancelling_the_client_at_any_moment_leaves_nothing(
    anyio_backend: str, step: str, checkpoints: int
) -> None:
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        script, scope = await run_cancelled(sb, step, checkpoints)
        assert scope.cancel_called
        if step != "exiting":
            assert script.reached[-1] != "exited", "the cancellation came too late to count"
        assert sdk_tasks() == []
        assert client_sockets(sb.port) == 0
        await agent_gone(sb)


@pytest.mark.parametrize("step", ["offered", "answered", "connected", "echo_answered", "exiting"])
async def test_cancelling_the_client_still_tells_each_call_it_ended(
    anyio_backend: str, step: str
) -> None:
    """API.md: CALL_TERMINATED fires exactly once when the call is over for the agent, whoever
    ended it; a client stopped by cancellation (Ctrl-C, a supervisor's cancel scope) ends its
    calls as its exit does, so each must hear of it, with the reason an exit gives."""
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        script, _ = await run_cancelled(sb, step, 0)
        assert script.calls
        for call in script.calls:
            assert call.state is CallState.DISCONNECTED
            assert call.termination_reason in (
                "agent_close",
                "agent_force_disconnect",
                "caller_hangup",
            ), call.termination_reason
            assert script.terminated[call.call_id] == [call.termination_reason], call


@pytest.mark.parametrize("step", ["answered", "connected", "exiting"])
async def test_asyncio_task_cancel_at_any_moment_leaves_nothing(
    anyio_backend: str, step: str
) -> None:
    """``task.cancel()`` of the task that runs the client (asyncio's own way to stop it)."""
    if anyio_backend != "asyncio":
        pytest.skip("asyncio task cancellation (trio has only cancel scopes)")
    import asyncio

    async with nothing_left_behind(), Sandbox(record=False) as sb:
        script = Script()
        task = asyncio.ensure_future(scenario(sb, config_for(sb), script))
        with anyio.fail_after(WAIT):
            await script.wait(step)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert sdk_tasks() == []
        assert client_sockets(sb.port) == 0
        await agent_gone(sb)


# --- an offer that arrives as the client leaves ---------------------------------------------------


@pytest.mark.parametrize("checkpoints", [0, 1, 2])
async def test_an_offer_arriving_as_the_client_exits_is_left_ringing(
    anyio_backend: str, checkpoints: int
) -> None:
    """Leaving ``async with`` (or being cancelled) just as a call is offered must not raise: the
    offer is not taken and the call rings on for the next client. Each try leaves after a
    different number of scheduler steps, so that the offer is read at each moment of the exit."""
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        config = config_for(sb)
        for _ in range(15):
            with anyio.fail_after(WAIT):
                async with TelcoflowClient(config):
                    await sb.create_call()
                    for _ in range(checkpoints):
                        await anyio.lowlevel.checkpoint()
            assert sdk_tasks() == []
            assert client_sockets(sb.port) == 0
        await agent_gone(sb)
        assert {c.state for c in sb.calls} == {CallState.PENDING}


@pytest.mark.parametrize("who", ["exit", "close_then_exit"])
async def test_a_call_closed_politely_on_exit_reports_the_servers_reason(
    anyio_backend: str, who: str
) -> None:
    """Leaving ``async with`` closes an ANSWERED call with ``call.close`` (the server ends it
    ``agent_close`` and says so in ``call.terminated``); the application must hear that reason,
    as it does when it calls ``close()`` itself, not ``agent_force_disconnect``."""
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        client = TelcoflowClient(config_for(sb))
        inbox, calls = anyio.create_memory_object_stream[ActiveCall](10)
        client.on(events.INCOMING_CALL, inbox.send_nowait)
        terminated: list[str] = []
        with inbox, calls, anyio.fail_after(WAIT):
            async with client:
                sim = await sb.create_call()
                call = await calls.receive()
                call.on(events.CALL_TERMINATED, terminated.append)
                await call.answer()
                if who == "close_then_exit":
                    await call.close()
            assert sim.ended_reason == "agent_close"
            assert call.termination_reason == "agent_close"
            assert terminated == ["agent_close"]


# --- one call: its handler, a command in flight ---------------------------------------------------


async def test_cancelling_a_handler_leaves_its_call_and_the_client_usable(
    anyio_backend: str,
) -> None:
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        client = TelcoflowClient(config_for(sb))
        taken, handed = anyio.create_memory_object_stream[tuple[ActiveCall, anyio.CancelScope]](10)
        terminated: list[str] = []

        @client.on(events.INCOMING_CALL)
        async def agent(call: ActiveCall) -> None:
            call.on(events.CALL_TERMINATED, terminated.append)
            with anyio.CancelScope() as scope:
                await call.answer()
                taken.send_nowait((call, scope))
                await echo(call, None)

        with taken, handed, anyio.fail_after(WAIT):
            async with client:
                first = await sb.create_call()
                call, scope = await handed.receive()
                scope.cancel()  # the handler stops echoing; the call is still ours
                await call.clear_send_audio_buffer()  # a command round trip
                assert call.state is CallState.ANSWERED
                assert client.get_call(call.call_id) is call

                second = await sb.create_call()
                other, _ = await handed.receive()  # the next call's handler runs as usual
                assert second.state is CallState.ANSWERED
                await call.close()
                assert await first.wait_ended() == "agent_close"
                assert state_of(call) is CallState.DISCONNECTED
                assert other.is_active
                await other.close()
                await other.wait_terminated()
            assert sdk_tasks() == []
            assert client_sockets(sb.port) == 0
            await agent_gone(sb)
            assert terminated == ["agent_close", "agent_close"]


async def test_asyncio_task_cancel_of_a_handler_does_not_take_the_client_down(
    anyio_backend: str,
) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("asyncio task cancellation (trio has only cancel scopes)")
    import asyncio

    async with nothing_left_behind(), Sandbox(record=False) as sb:
        client = TelcoflowClient(config_for(sb))
        taken, handed = anyio.create_memory_object_stream[tuple[ActiveCall, asyncio.Task[Any]]](10)
        terminated: list[str] = []

        @client.on(events.INCOMING_CALL)
        async def agent(call: ActiveCall) -> None:
            call.on(events.CALL_TERMINATED, terminated.append)
            task = asyncio.current_task()
            assert task is not None
            await call.answer()
            taken.send_nowait((call, task))
            await echo(call, None)

        with taken, handed, anyio.fail_after(WAIT):
            async with client:
                await sb.create_call()
                call, task = await handed.receive()
                task.cancel()
                # Whatever becomes of that call, the client goes on taking calls...
                second = await sb.create_call()
                other, _ = await handed.receive()
                assert second.state is CallState.ANSWERED
                assert other.is_active
                assert client.connected
                # ...and if the call ended with its handler, the application is told so.
                if not call.is_active:
                    await call.wait_terminated()
                    assert call.termination_reason != "media_lost", "nothing was lost"
                    sim = sb.get_call(call.call_id)
                    assert sim is not None
                    await sb.wait_for(lambda: released(sim))
                    assert terminated == [call.termination_reason]
            assert sdk_tasks() == []
            assert client_sockets(sb.port) == 0
            await agent_gone(sb)
            assert len(terminated) == 2, "CALL_TERMINATED fires once for each call"


@pytest.mark.parametrize("callee", ["answers", "declines"])
async def test_cancelled_connect_leaves_the_call_usable_and_its_late_response_harmless(
    anyio_backend: str, callee: str
) -> None:
    spec = CalleeSpec(answer_after_s=0.3) if callee == "answers" else CalleeSpec(decline=True)
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        client = TelcoflowClient(config_for(sb))
        inbox, calls = anyio.create_memory_object_stream[ActiveCall](10)
        client.on(events.INCOMING_CALL, inbox.send_nowait)
        fired: list[str] = []
        with inbox, calls, anyio.fail_after(WAIT):
            async with client:
                sim = await sb.create_call(callee=spec)
                call = await calls.receive()
                for name in (events.CALL_CONNECTED, events.CALL_CONNECT_FAILED):
                    call.on(name, lambda payload, name=name: fired.append(name))
                await call.answer()

                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(call.connect, 5)
                        await sim.wait_for(lambda c: len(c.commands) == 2)  # ringing
                        scope.cancel()
                assert scope.cancelled_caught
                assert call.state is CallState.ANSWERED
                # The call takes commands while the callee rings; each gets its own response.
                await call.clear_send_audio_buffer()
                await call.send_audio(bytes(960))

                # The late outcome arrives: not an error anywhere, the state follows the server.
                await sim.wait_for(lambda c: c.commands[1]["success"] is not None)
                await call.clear_send_audio_buffer()  # its response comes after connect's
                assert state_of(call) is sim.state
                if callee == "answers":
                    assert sim.state is CallState.CONNECTED
                    await call.spy()
                    assert sim.agent_mode is not None
                else:
                    assert sim.state is CallState.ANSWERED
                    with pytest.raises(WSSCallCommandError) as info:
                        await call.connect(ring_time_seconds=1)  # the callee declines again
                    assert info.value.error_code == "CALL_REJECTED"
                await call.close()
            assert sdk_tasks() == []
            assert client_sockets(sb.port) == 0
            await agent_gone(sb)
            if callee == "answers":
                assert sim.state is CallState.CONNECTED
                assert fired == [events.CALL_CONNECTED]  # it did connect: once
            else:
                assert sim.ended_reason == "agent_close"
                assert fired == [events.CALL_CONNECT_FAILED] * 2


@pytest.mark.parametrize("state", [CallState.ANSWERED, CallState.CONNECTED])
async def test_cancelled_close_still_ends_the_call_once(
    anyio_backend: str, state: CallState
) -> None:
    """The server acts on a ``call.close`` whose sender stopped waiting: the call ends for the
    agent all the same, CALL_TERMINATED fires once, and nothing is left."""
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        client = TelcoflowClient(config_for(sb))
        inbox, calls = anyio.create_memory_object_stream[ActiveCall](10)
        client.on(events.INCOMING_CALL, inbox.send_nowait)
        terminated: list[str] = []
        with inbox, calls, anyio.fail_after(WAIT):
            async with client:
                sim = await sb.create_call(callee=CalleeSpec(answer_after_s=0.0))
                call = await calls.receive()
                call.on(events.CALL_TERMINATED, terminated.append)
                await call.answer()
                if state is CallState.CONNECTED:
                    await call.connect(ring_time_seconds=5)
                # The response is held back; the call.terminated that follows the close is not.
                await sb.inject_fault(
                    {"kind": "delay_command", "seconds": 0.3, "command": "call.close"}
                )

                async def close() -> None:
                    # Ending the call answers the held-back close with CALL_TERMINATED at once:
                    # that answer and our cancellation race, and either may reach close() first.
                    with contextlib.suppress(WSSCallClosedError):
                        await call.close()

                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(close)
                        await sim.wait_for(lambda c: c.commands[-1]["command"] == "call.close")
                        scope.cancel()
                assert await call.wait_terminated() == "agent_close"
                assert client.calls == []
            assert sdk_tasks() == []
            assert client_sockets(sb.port) == 0
            await agent_gone(sb)
            assert terminated == ["agent_close"]
            assert sim.state is (
                CallState.CONNECTED if state is CallState.CONNECTED else CallState.DISCONNECTED
            )


# --- connecting, setting up, reconnecting ---------------------------------------------------------


Until = Callable[[], Awaitable[object]]


def on(event: anyio.Event) -> Until:
    """Until ``event`` is set."""
    return event.wait


def held(sb: Sandbox, what: str) -> Until:
    """Until the sandbox holds a connection with a hang fault (``"setup"``, ``"media"``)."""

    async def wait() -> None:
        await sb.wait_for(lambda: sb.held(what) >= 1)

    return wait


async def cancel_when(until: Until, checkpoints: int, scope: anyio.CancelScope) -> None:
    await until()
    for _ in range(checkpoints):
        await anyio.lowlevel.checkpoint()
    scope.cancel()


async def enter_until_cancelled(
    config: TelcoflowClientConfig, until: Until, checkpoints: int
) -> None:
    """Enter a client and stay, until ``checkpoints`` after ``until``, when it is cancelled."""
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_when, until, checkpoints, scope)
            async with TelcoflowClient(config) as client:
                await client.run_forever()
    assert scope.cancelled_caught


@pytest.mark.parametrize("checkpoints", [0, 1, 3, 10])
async def test_cancel_while_the_server_never_answers_the_handshake(
    anyio_backend: str, checkpoints: int
) -> None:
    async with nothing_left_behind():
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        accepted, dropped = anyio.Event(), anyio.Event()

        async def silent(stream: anyio.abc.SocketStream) -> None:
            accepted.set()
            async with stream:
                try:
                    while True:  # read the upgrade request, answer nothing
                        await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    dropped.set()

        config = TelcoflowClientConfig.sandbox(
            api_key="k", connector_uuid="c", base_url=f"ws://127.0.0.1:{port}"
        )
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, silent)
            with anyio.fail_after(WAIT):
                await enter_until_cancelled(config, on(accepted), checkpoints)
                assert sdk_tasks() == []
                assert client_sockets(port) == 0
                await dropped.wait()
            tg.cancel_scope.cancel()


@pytest.mark.parametrize("checkpoints", [0, 1, 3, 10])
async def test_cancel_while_the_server_never_completes_setup(
    anyio_backend: str, checkpoints: int
) -> None:
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        await sb.inject_fault({"kind": "hang_setup", "seconds": 60})
        with anyio.fail_after(WAIT):
            await enter_until_cancelled(config_for(sb), held(sb, "setup"), checkpoints)
            await sb.wait_for(lambda: sb.released("setup") == 1)
        assert sdk_tasks() == []
        assert client_sockets(sb.port) == 0


async def test_cancel_while_a_dead_server_holds_setup_takes_at_most_the_close_timeout(
    anyio_backend: str,
) -> None:
    """A server that reads nothing more after the upgrade: the close handshake cannot complete,
    and the cancellation waits only for its bounded timeout."""
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        await sb.inject_fault({"kind": "hang_setup", "seconds": 60, "read": False})
        start = anyio.current_time()
        with anyio.fail_after(WAIT):
            await enter_until_cancelled(config_for(sb), held(sb, "setup"), 0)
        assert anyio.current_time() - start < CLOSE_TIMEOUT + 1.0
        assert sdk_tasks() == []
        assert client_sockets(sb.port) == 0


@pytest.mark.parametrize("checkpoints", [0, 1, 3, 10])
async def test_cancel_while_a_media_connection_is_opening(
    anyio_backend: str, checkpoints: int
) -> None:
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        await sb.inject_fault({"kind": "hang_media", "seconds": 60})
        sim = await sb.create_call()  # notified as soon as the client is up
        with anyio.fail_after(WAIT):
            await enter_until_cancelled(config_for(sb), held(sb, "media"), checkpoints)
        assert sdk_tasks() == []
        assert client_sockets(sb.port) == 0
        with anyio.fail_after(WAIT):
            await sb.wait_for(lambda: sb.released("media") == 1)
            await sb.wait_for(lambda: not sb.control_sessions())
        assert sim.state is CallState.PENDING


async def test_a_call_ending_while_its_media_connection_opens_leaves_nothing(
    anyio_backend: str,
) -> None:
    """``session.closed`` on the control connection cancels the opening of that one call."""
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        await sb.inject_fault({"kind": "hang_media", "seconds": 60})
        with anyio.fail_after(WAIT):
            async with TelcoflowClient(config_for(sb)) as client:
                sim = await sb.create_call()
                await held(sb, "media")()
                await sim.hangup_caller()  # session.closed reaches the client while it opens
                await sb.wait_for(lambda: sb.released("media") == 1)  # it gave up the media...
                assert client_sockets(sb.port) == 1  # ...and kept its control connection
                assert client.calls == []
                assert client.connected
            assert sdk_tasks() == []
            assert client_sockets(sb.port) == 0


class _LogEvent(logging.Handler):
    """Sets ``event`` when a record whose message starts with ``prefix`` is logged."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.event = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.prefix):
            self.event.set()


@pytest.fixture
def reconnecting() -> Iterator[_LogEvent]:
    """Set when the client logs that it will reconnect after a backoff delay."""
    handler = _LogEvent("reconnecting in")
    log = logging.getLogger("telcoflow_sdk.control_connection")
    level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    yield handler
    log.removeHandler(handler)
    log.setLevel(level)


@pytest.mark.parametrize("checkpoints", [0, 1, 3, 10])
async def test_cancel_during_reconnect_backoff(
    anyio_backend: str, checkpoints: int, reconnecting: _LogEvent
) -> None:
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        config = config_for(sb, reconnect={"initial_delay": 30.0, "max_delay": 30.0})
        with anyio.fail_after(WAIT), anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_when, on(reconnecting.event), checkpoints, scope)
                async with TelcoflowClient(config) as client:
                    sim = await sb.create_call()
                    async with anyio.create_task_group() as inner:
                        client.on(events.INCOMING_CALL, lambda call: inner.start_soon(call.answer))
                        await sim.wait_state(CallState.ANSWERED)
                    await sb.inject_fault({"kind": "drop_control"})
                    await client.run_forever()
        assert scope.cancelled_caught
        assert sdk_tasks() == []
        assert client_sockets(sb.port) == 0
        await agent_gone(sb)
        assert sim.ended_reason == "agent_close"


@pytest.mark.parametrize("checkpoints", [0, 1, 3, 10])
async def test_cancel_during_a_reconnect_attempt(anyio_backend: str, checkpoints: int) -> None:
    async with nothing_left_behind(), Sandbox(record=False) as sb:
        config = config_for(sb, reconnect={"initial_delay": 0.01, "max_delay": 0.01})
        with anyio.fail_after(WAIT), anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_when, held(sb, "setup"), checkpoints, scope)
                async with TelcoflowClient(config) as client:
                    await sb.inject_fault({"kind": "hang_setup", "seconds": 60})
                    await sb.inject_fault({"kind": "drop_control"})
                    await client.run_forever()
        assert scope.cancelled_caught
        assert sdk_tasks() == []
        assert client_sockets(sb.port) == 0


async def test_exit_cancels_handlers_of_calls_that_already_ended(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    """A handler still busy after its call ended must not keep the client's exit waiting."""
    started = anyio.Event()
    cancelled = anyio.Event()

    async def lingering(call: ActiveCall) -> None:
        await call.answer()
        await call.wait_terminated()
        started.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    with anyio.fail_after(WAIT):
        async with TelcoflowClient(make_config()) as client:
            client.on(events.INCOMING_CALL, lingering)
            sim = await sandbox.create_call()
            await sim.wait_state(CallState.ANSWERED)
            await sim.hangup_caller()
            await started.wait()
            assert client.calls == []
        assert cancelled.is_set()
