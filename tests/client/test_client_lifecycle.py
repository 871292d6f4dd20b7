"""The client's life against a real sandbox: authentication, reconnection, several clients on one
connector, shutdown with calls in flight, ``run_forever`` and the INCOMING_CALL handler."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

import telcoflow
from telcoflow import (
    ActiveCall,
    CallState,
    ClientEvent,
    TelcoflowClient,
    TelcoflowClientConfig,
    WSSAuthenticationError,
    WSSConnectionError,
    events,
)
from telcoflow.sandbox import CalleeSpec, CallSpec, Sandbox, SimCall

from ..helpers import WAIT, CallInbox, live_task_names, state_of

pytestmark = pytest.mark.anyio

MakeConfig = Callable[..., TelcoflowClientConfig]

#: Reconnect quickly so that reconnection tests stay fast.
FAST_RECONNECT = {"initial_delay": 0.05, "max_delay": 0.2}


def _is_sdk_task(name: str) -> bool:
    # Both backends name a task after its function: ``module.qualname``.
    return name.startswith("telcoflow.") and not name.startswith("telcoflow.sandbox.")


def is_connected(client: TelcoflowClient) -> bool:
    """``client.connected`` read afresh: after an ``assert not client.connected`` mypy keeps the
    narrowed value across an ``await`` that changes it."""
    return client.connected


def sdk_tasks() -> list[str]:
    """Names of the live tasks running the SDK's own code (the sandbox's tasks do not count)."""
    return sorted(n for n in live_task_names() if _is_sdk_task(n))


def client_sockets(port: int) -> int:
    """How many of this process's open file descriptors are TCP sockets connected *to* ``port``:
    the client's side of its connections to the sandbox (the sandbox's side has it as local port).
    """
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if fields[9] in inodes and remote_port == port:
                count += 1
    return count


class _Closable(Protocol):
    def close(self) -> None: ...


_C = TypeVar("_C", bound=_Closable)


class Track(Protocol):
    """What the ``inboxes`` fixture gives: ``track(box)`` returns ``box``, closed at the end."""

    def __call__(self, box: _C, /) -> _C: ...


@pytest.fixture
def inboxes() -> Iterator[Track]:
    """Closes the inboxes a test opens when it ends, passed or failed."""
    opened: list[_Closable] = []

    def track(box: _C) -> _C:
        opened.append(box)
        return box

    yield track
    for box in opened:
        box.close()


# --- authentication and reachability --------------------------------------------------------------


def auth_attempts(sandbox: Sandbox) -> list[str | None]:
    """Every control-connection upgrade the sandbox decided: the connector, or None (refused)."""
    return [u.connector_uuid for u in sandbox.control_upgrades()]


async def _hear_frames(call: ActiveCall, n: int) -> None:
    """Wait until ``n`` more frames of audio have reached ``call`` (20 ms each, real time)."""
    target = call.stats.frames_received + n
    async for _ in call.audio_stream():
        if call.stats.frames_received >= target:
            return


@pytest.mark.parametrize(
    "bad",
    [{"api_key": "wrong-secret-key"}, {"connector_uuid": "11111111-2222-4333-8444-555555555555"}],
    ids=["wrong_api_key", "unknown_connector"],
)
async def test_refused_credentials_raise_on_entry_and_are_not_retried(
    sandbox: Sandbox,
    make_config: MakeConfig,
    bad: dict[str, str],
    inboxes: Track,
) -> None:
    # Any retry would come after a millisecond or two.
    config = make_config(reconnect={"initial_delay": 0.001, "max_delay": 0.002}, **bad)
    with anyio.fail_after(WAIT):
        with pytest.raises(WSSAuthenticationError) as info:
            async with TelcoflowClient(config):
                pytest.fail("entered a client whose credentials were refused")
    assert info.value.status_code == 401
    assert "wrong-secret-key" not in str(info.value)
    assert auth_attempts(sandbox) == [None]
    assert sdk_tasks() == []
    assert client_sockets(sandbox.port) == 0
    assert sandbox.control_sessions() == []

    # Let real time pass (a good client hears 200 ms of a call): still no second attempt.
    async with TelcoflowClient(make_config()) as good:
        inbox = inboxes(CallInbox(good))
        await sandbox.create_call()
        call = await inbox.next()
        await call.answer()
        with anyio.fail_after(WAIT):
            await _hear_frames(call, 10)
    assert auth_attempts(sandbox) == [None, sandbox.connector_uuid]


@pytest.mark.parametrize("status", [401, 403, 426])
async def test_refusals_on_reconnect_stop_the_client_without_retrying(
    sandbox: Sandbox, make_config: MakeConfig, status: int
) -> None:
    async with TelcoflowClient(make_config(reconnect=FAST_RECONNECT)) as client:
        with anyio.fail_after(WAIT):
            await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 1)
        assert auth_attempts(sandbox) == [sandbox.connector_uuid]

        # From now on the sandbox refuses this connector (its key was revoked, say).
        await sandbox.inject_fault({"kind": "refuse_connections", "seconds": 60, "status": status})
        await sandbox.inject_fault({"kind": "drop_control"})
        expected = WSSConnectionError if status == 426 else WSSAuthenticationError
        with anyio.fail_after(WAIT), pytest.raises(expected) as info:
            await client.run_forever()
        assert isinstance(info.value, expected)  # what pytest.raises checked: for mypy
        assert info.value.status_code == status
        assert "injected fault" in str(info.value), "the server's text is in the error"
        assert auth_attempts(sandbox) == [sandbox.connector_uuid, None]
        assert not client.connected
    assert auth_attempts(sandbox) == [sandbox.connector_uuid, None]
    assert sdk_tasks() == []


async def test_unreachable_server_raises_connection_error() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens on this port any more
    config = TelcoflowClientConfig.sandbox(
        api_key="k", connector_uuid="c", base_url=f"ws://127.0.0.1:{port}"
    )
    with anyio.fail_after(WAIT):
        with pytest.raises(WSSConnectionError) as info:
            async with TelcoflowClient(config):
                pytest.fail("entered a client with no server")
    assert f"127.0.0.1:{port}" in str(info.value)
    assert sdk_tasks() == []


# --- reconnection and offers ----------------------------------------------------------------------


async def test_control_reconnect_keeps_calls_and_redelivers_ringing_ones(
    sandbox: Sandbox, make_config: MakeConfig, inboxes: Track
) -> None:
    async with TelcoflowClient(make_config(reconnect=FAST_RECONNECT)) as client:
        inbox = inboxes(CallInbox(client))
        sim_a = await sandbox.create_call()
        call_a = await inbox.next()
        await call_a.answer()
        first_connection, media_a = client.connection_id, sim_a.agent
        assert client.reconnects == 0

        await sandbox.control_sessions()[0].conn.abort()
        sim_b = await sandbox.create_call()  # placed while the client is away
        assert sim_b.bound_to is None
        assert sim_b.state is CallState.PENDING

        call_b = await inbox.next()
        assert call_b.call_id == sim_b.call_id
        assert client.reconnects == 1
        assert client.connection_id != first_connection
        with anyio.fail_after(WAIT):
            await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 1)

        # The answered call lived through the outage: still answered, commands and audio work.
        assert call_a.state is CallState.ANSWERED
        assert sim_a.state is CallState.ANSWERED
        assert sim_a.agent is media_a  # the same media connection, never re-opened
        assert client.get_call(call_a.call_id) is call_a
        await call_a.clear_send_audio_buffer()  # agent.interrupt: a command round trip
        heard, sent = call_a.stats.frames_received, call_a.stats.bytes_sent
        received_by_sandbox = sim_a.stats.agent_bytes_received
        with anyio.fail_after(WAIT):
            async for chunk in call_a.audio_stream():
                await call_a.send_audio(chunk)
                if call_a.stats.frames_received >= heard + 10 and call_a.stats.bytes_sent > sent:
                    break
        await call_a.close()
        with anyio.fail_after(WAIT):
            assert await sim_a.wait_ended() == "agent_close"
        assert sim_a.stats.agent_bytes_received > received_by_sandbox

        # The call placed during the outage was delivered once, and works.
        await call_b.answer()
        assert state_of(sim_b) is CallState.ANSWERED
        with pytest.raises(anyio.WouldBlock):
            inbox.next_nowait()
        assert [c.call_id for c in client.calls] == [call_b.call_id]


async def test_call_placed_with_no_client_rings_until_one_connects(
    sandbox: Sandbox, make_config: MakeConfig, inboxes: Track
) -> None:
    sim = await sandbox.create_call()
    assert sim.state is CallState.PENDING
    assert sim.bound_to is None
    assert sim.offers == 0
    client = TelcoflowClient(make_config())
    inbox = inboxes(CallInbox(client))
    async with client:
        call = await inbox.next()
        assert call.call_id == sim.call_id
        assert call.state is CallState.PENDING
        await call.answer()
        assert state_of(sim) is CallState.ANSWERED
        assert sim.offers == 1


class _Tagged:
    """Collects the calls of several clients, tagged by which client got each one."""

    def __init__(self, *clients: TelcoflowClient) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[tuple[int, ActiveCall]](100)
        for n, client in enumerate(clients):
            client.on(events.INCOMING_CALL, lambda call, n=n: self.send.send_nowait((n, call)))

    async def next(self) -> tuple[int, ActiveCall]:
        with anyio.fail_after(WAIT):
            return await self.receive.receive()

    def close(self) -> None:
        self.send.close()
        self.receive.close()


async def test_every_client_of_a_connector_is_notified_and_each_call_is_taken_once(
    sandbox: Sandbox, make_config: MakeConfig, inboxes: Track
) -> None:
    first, second = TelcoflowClient(make_config()), TelcoflowClient(make_config())
    tagged = inboxes(_Tagged(first, second))
    async with first, second:
        with anyio.fail_after(WAIT):
            await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 2)
        sims = [await sandbox.create_call() for _ in range(6)]
        got = [await tagged.next() for _ in range(6)]
        assert sorted(call.call_id for _, call in got) == sorted(s.call_id for s in sims)
        assert all(sim.offers == 2 for sim in sims), "each call was notified to both clients"
        # A marker call: once it is delivered, any duplicate of the others would have been too.
        marker = await sandbox.create_call()
        _, last = await tagged.next()
        assert last.call_id == marker.call_id
        with pytest.raises(anyio.WouldBlock):
            tagged.receive.receive_nowait()
        bound = {sim.bound_to for sim in sims}
        assert bound <= {s.connection_id for s in sandbox.control_sessions()}


async def test_a_client_at_max_calls_leaves_new_calls_to_the_others(
    sandbox: Sandbox, make_config: MakeConfig, inboxes: Track
) -> None:
    full, other = TelcoflowClient(make_config(max_calls=1)), TelcoflowClient(make_config())
    async with full:
        held = inboxes(CallInbox(full))
        first = await sandbox.create_call()
        call = await held.next()
        assert call.call_id == first.call_id
        async with other:
            spare = inboxes(CallInbox(other))
            with anyio.fail_after(WAIT):
                await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 2)
            for _ in range(3):
                sim = await sandbox.create_call()
                assert (await spare.next()).call_id == sim.call_id
            with pytest.raises(anyio.WouldBlock):
                held.next_nowait()
            assert [c.call_id for c in full.calls] == [first.call_id]


async def test_pending_call_released_by_the_only_client_is_offered_to_it_again(
    sandbox: Sandbox, client: TelcoflowClient, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call()
    call = await inbox.next()
    await call.force_disconnect()
    assert call.state is CallState.DISCONNECTED
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "agent_force_disconnect"
    again = await inbox.next()
    assert again.call_id == sim.call_id
    assert again is not call
    assert sim.state is CallState.PENDING
    assert sim.offers == 2
    await again.answer()
    assert state_of(sim) is CallState.ANSWERED


async def test_pending_call_released_by_one_client_is_notified_again_and_taken_once(
    sandbox: Sandbox, make_config: MakeConfig, inboxes: Track
) -> None:
    first, second = TelcoflowClient(make_config()), TelcoflowClient(make_config())
    tagged = inboxes(_Tagged(first, second))
    async with first, second:
        with anyio.fail_after(WAIT):
            await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 2)
        sim_x = await sandbox.create_call()
        _, call_x = await tagged.next()
        assert call_x.call_id == sim_x.call_id
        await call_x.force_disconnect()
        _, again = await tagged.next()
        assert again.call_id == sim_x.call_id
        assert again is not call_x
        assert sim_x.state is CallState.PENDING
        assert sim_x.offers > 2, "notified again once released"
        marker = await sandbox.create_call()
        assert (await tagged.next())[1].call_id == marker.call_id
        with pytest.raises(anyio.WouldBlock):
            tagged.receive.receive_nowait()


async def test_ringing_call_handed_to_a_client_of_another_rate_comes_at_that_rate(
    sandbox: Sandbox, make_config: MakeConfig, inboxes: Track
) -> None:
    """PROTOCOL.md: the sample rate is chosen per control connection, so a call that rang at a
    24 kHz client and was released unanswered must reach a 16 kHz client at 16 kHz."""
    sim = await sandbox.create_call()
    async with TelcoflowClient(make_config()) as first:  # 24 kHz
        inbox = inboxes(CallInbox(first))
        call = await inbox.next()
        assert call.call_id == sim.call_id
    with anyio.fail_after(WAIT):  # left without answering: the call is released, still ringing
        await sandbox.wait_for(lambda: sim.agent is None and not sandbox.control_sessions())
    assert sim.state is CallState.PENDING

    async with TelcoflowClient(make_config(sample_rate=16000)) as second:
        inbox = inboxes(CallInbox(second))
        call = await inbox.next()
        assert call.call_id == sim.call_id
        await call.answer()
        sizes: set[int] = set()
        with anyio.fail_after(WAIT):
            async for chunk in call.audio_stream():
                sizes.add(len(chunk))
                if call.stats.frames_received >= 5:
                    break
        assert sizes == {640}, "20 ms frames at 16 kHz are 640 bytes"
        assert sim.to_json()["sample_rate"] == 16000


async def test_connect_after_disconnect_serves_calls_again(
    sandbox: Sandbox, make_config: MakeConfig, inboxes: Track
) -> None:
    async with TelcoflowClient(make_config()) as client:
        inbox = inboxes(CallInbox(client))
        await client.disconnect()
        assert not client.connected
        with anyio.fail_after(WAIT):
            await sandbox.wait_for(lambda: not sandbox.control_sessions())
        sim = await sandbox.create_call()  # rings: nobody is connected
        await client.connect()
        assert is_connected(client)
        call = await inbox.next()
        assert call.call_id == sim.call_id
        await call.answer()
        assert sim.state is CallState.ANSWERED
    with anyio.fail_after(WAIT):
        assert await sim.wait_ended() == "agent_close"
    assert sdk_tasks() == []


# --- leaving --------------------------------------------------------------------------------------


async def test_exit_with_calls_in_flight_closes_them_and_leaves_nothing_behind(
    sandbox: Sandbox, make_config: MakeConfig, inboxes: Track
) -> None:
    sims = [await sandbox.create_call(callee=CalleeSpec(answer_after_s=0.0)) for _ in range(3)]
    pending, answered, connected = sims
    assert sdk_tasks() == []
    assert client_sockets(sandbox.port) == 0

    client = TelcoflowClient(make_config())
    inbox = inboxes(CallInbox(client))
    terminated: dict[str, list[str]] = {}
    async with client:
        calls = {}
        for _ in sims:
            call = await inbox.next()
            calls[call.call_id] = call
            call.on(
                events.CALL_TERMINATED,
                lambda reason, c=call.call_id: terminated.setdefault(c, []).append(reason),
            )
        await calls[answered.call_id].answer()
        await calls[connected.call_id].answer()
        await calls[connected.call_id].connect(ring_time_seconds=5)
        assert [s.state for s in sims] == [
            CallState.PENDING,
            CallState.ANSWERED,
            CallState.CONNECTED,
        ]
        assert sdk_tasks() != []  # the measure sees the client's tasks...
        assert client_sockets(sandbox.port) == 4  # ...and its sockets: control and 3 media

    assert sdk_tasks() == []
    assert client_sockets(sandbox.port) == 0
    assert client.calls == []
    assert not client.connected
    for call in calls.values():
        assert call.state is CallState.DISCONNECTED
    assert sorted(terminated) == sorted(calls), "CALL_TERMINATED fired for every call"
    assert all(len(reasons) == 1 for reasons in terminated.values())

    with anyio.fail_after(WAIT):
        assert await answered.wait_ended() == "agent_close"
        await sandbox.wait_for(
            lambda: (
                not sandbox.control_sessions()
                and connected.agent is None
                and pending.agent is None
                and pending.bound_to is None
            )
        )
    assert connected.state is CallState.CONNECTED  # caller and callee stay together
    assert connected.agent_mode is None
    assert pending.state is CallState.PENDING  # released: still ringing...

    async with TelcoflowClient(make_config()) as successor:  # ...and offered to the next client
        inbox = inboxes(CallInbox(successor))
        call = await inbox.next()
        assert call.call_id == pending.call_id


async def test_run_forever_returns_after_disconnect_from_another_task(
    sandbox: Sandbox, make_config: MakeConfig, inboxes: Track
) -> None:
    sims: list[SimCall] = []
    async with TelcoflowClient(make_config()) as client:
        inbox = inboxes(CallInbox(client))

        async def operator() -> None:
            sims.append(await sandbox.create_call())
            call = await inbox.next()
            await call.answer()
            await client.disconnect()

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(operator)
                await client.run_forever()
        assert not client.connected
        assert client.calls == []
        with anyio.fail_after(WAIT):
            assert await sims[0].wait_ended() == "agent_close"
            await sandbox.wait_for(lambda: not sandbox.control_sessions())
    assert sdk_tasks() == []
    assert client_sockets(sandbox.port) == 0


async def test_cancelling_run_forever_returns_and_exit_leaves_nothing(
    sandbox: Sandbox, make_config: MakeConfig, inboxes: Track
) -> None:
    async with TelcoflowClient(make_config()) as client:
        inbox = inboxes(CallInbox(client))
        sim = await sandbox.create_call()
        with anyio.fail_after(WAIT):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:

                    async def operator() -> None:
                        call = await inbox.next()
                        await call.answer()
                        scope.cancel()

                    tg.start_soon(operator)
                    await client.run_forever()
        assert scope.cancelled_caught
    assert sdk_tasks() == []
    assert client_sockets(sandbox.port) == 0
    with anyio.fail_after(WAIT):
        assert await sim.wait_ended() == "agent_close"
        await sandbox.wait_for(lambda: not sandbox.control_sessions())


async def test_run_forever_without_async_with_enters_itself_and_cancels_cleanly(
    sandbox: Sandbox, make_config: MakeConfig, inboxes: Track
) -> None:
    client = TelcoflowClient(make_config())
    inbox = inboxes(CallInbox(client))
    sim = await sandbox.create_call()  # rings until the client connects
    taken: list[ActiveCall] = []
    with anyio.fail_after(WAIT):
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def operator() -> None:
                    call = await inbox.next()
                    await call.answer()
                    taken.append(call)
                    assert client.connected
                    assert sdk_tasks() != []
                    scope.cancel()

                tg.start_soon(operator)
                await client.run_forever()
    assert scope.cancelled_caught
    assert [c.call_id for c in taken] == [sim.call_id]
    assert taken[0].state is CallState.DISCONNECTED
    assert not client.connected
    assert sdk_tasks() == []
    assert client_sockets(sandbox.port) == 0
    with anyio.fail_after(WAIT):
        assert await sim.wait_ended() == "agent_close"
        await sandbox.wait_for(lambda: not sandbox.control_sessions())


async def test_asyncio_task_cancel_of_run_forever_shuts_down_cleanly(
    anyio_backend: str, sandbox: Sandbox, make_config: MakeConfig, inboxes: Track
) -> None:
    if anyio_backend != "asyncio":
        pytest.skip("asyncio task cancellation (trio's cancel scopes are covered above)")
    import asyncio

    client = TelcoflowClient(make_config())
    inbox = inboxes(CallInbox(client))
    sim = await sandbox.create_call()
    task = asyncio.ensure_future(client.run_forever())
    call = await inbox.next()
    await call.answer()
    task.cancel()
    with anyio.fail_after(WAIT), pytest.raises(asyncio.CancelledError):
        await task
    assert not client.connected
    assert sdk_tasks() == []
    assert client_sockets(sandbox.port) == 0
    with anyio.fail_after(WAIT):
        assert await sim.wait_ended() == "agent_close"


# --- handlers and the call registry ---------------------------------------------------------------


async def test_a_raising_incoming_call_handler_is_logged_and_the_client_goes_on(
    sandbox: Sandbox,
    make_config: MakeConfig,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """README, "When a handler raises": before answering, the call is released (offered to the
    connector's other processes, never claimed again by this one), the error logged once with
    the call id; the client goes on taking calls."""
    caplog.set_level(logging.ERROR, logger="telcoflow")
    client = TelcoflowClient(make_config())
    answered = anyio.Event()

    @client.on(events.INCOMING_CALL)
    async def agent(call: ActiveCall) -> None:
        await anyio.lowlevel.checkpoint()
        if call.caller_number == "+15550999":
            raise RuntimeError(f"handler bug on {call.call_id}")
        await call.answer()
        answered.set()

    async with client:
        first = await sandbox.create_call(CallSpec(from_number="+15550999"))
        with anyio.fail_after(WAIT):
            await first.wait_for(lambda c: c.offers >= 2)  # released: offered anew
        failures = [r for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError]
        assert len(failures) == 1
        assert first.call_id in failures[0].getMessage()
        assert "releasing the call" in failures[0].getMessage()
        assert failures[0].name.startswith("telcoflow")
        assert first.state is CallState.PENDING
        assert failures[0].exc_info is not None
        assert client.handler_errors == [(first.call_id, failures[0].exc_info[1])]

        second = await sandbox.create_call()
        with anyio.fail_after(WAIT):
            await answered.wait()
        assert second.state is CallState.ANSWERED
        assert first.bound_to is None, "the failed call is not claimed again here"
        assert client.connected


async def test_get_call_and_calls_track_active_calls(
    sandbox: Sandbox, client: TelcoflowClient, inbox: CallInbox
) -> None:
    assert client.calls == []
    sim = await sandbox.create_call()
    call = await inbox.next()
    assert client.get_call(sim.call_id) is call
    assert client.calls == [call]
    assert client.get_call("call-does-not-exist") is None
    await call.answer()
    await sim.hangup_caller()
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "caller_hangup"
    assert client.get_call(sim.call_id) is None
    assert client.calls == []


async def test_on_rejects_unknown_events_and_accepts_the_enum(
    sandbox: Sandbox, make_config: MakeConfig
) -> None:
    client = TelcoflowClient(make_config())
    with pytest.raises(ValueError, match="bogus"):
        client.on("bogus", lambda call: None)
    with pytest.raises(ValueError, match=r"call\.terminated"):
        client.on(events.CALL_TERMINATED, lambda call: None)  # a call event, not a client one
    offered = anyio.Event()
    got: list[ActiveCall] = []

    @client.on(ClientEvent.INCOMING_CALL)
    def take(call: ActiveCall) -> None:
        got.append(call)
        offered.set()

    async with client:
        sim = await sandbox.create_call()
        with anyio.fail_after(WAIT):
            await offered.wait()
        assert [c.call_id for c in got] == [sim.call_id]
        with pytest.raises(ValueError, match="bogus"):
            got[0].on("bogus", lambda: None)


def test_telcoflow_sdk_reexports_the_same_objects() -> None:
    import telcoflow_sdk
    import telcoflow_sdk.events
    import telcoflow_sdk.exceptions

    assert telcoflow_sdk.TelcoflowClient is TelcoflowClient
    assert telcoflow_sdk.TelcoflowClientConfig is TelcoflowClientConfig
    assert telcoflow_sdk.ActiveCall is ActiveCall
    assert telcoflow_sdk.events.INCOMING_CALL == events.INCOMING_CALL == "call.incoming"
    assert telcoflow_sdk.events.ClientEvent is ClientEvent
    assert telcoflow_sdk.events.CallEvent is events.CallEvent
    assert telcoflow_sdk.exceptions.WSSError is telcoflow.exceptions.WSSError
    assert telcoflow_sdk.exceptions.WSSCallCommandError is telcoflow.WSSCallCommandError
    for name in set(telcoflow.__all__) - {"events", "exceptions"}:  # those are sub-packages
        assert getattr(telcoflow_sdk, name) is getattr(telcoflow, name), name
    for name in telcoflow.events.__all__:
        assert getattr(telcoflow_sdk.events, name) is getattr(telcoflow.events, name), name
    for name in telcoflow.exceptions.__all__:
        assert getattr(telcoflow_sdk.exceptions, name) is getattr(telcoflow.exceptions, name), name


def test_public_classes_name_the_module_they_are_imported_from() -> None:
    """The facades' parts live in private packages (telcoflow._call, _client, _net); a public
    class still reports the module users import it from, in reprs, tracebacks and pickles."""
    import pickle

    for name in telcoflow.__all__:
        obj = getattr(telcoflow, name)
        module = getattr(obj, "__module__", "")
        assert not module.startswith(("telcoflow._call", "telcoflow._client", "telcoflow._net")), (
            name,
            module,
        )
    policy = pickle.loads(pickle.dumps(telcoflow.ReconnectPolicy(max_attempts=3)))
    assert policy == telcoflow.ReconnectPolicy(max_attempts=3)


async def test_the_readme_echo_loop_ends_quietly_when_the_caller_hangs_up(
    sandbox: Sandbox, make_config: MakeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """The trap: the README's loop logged BufferClosedError tracebacks at ERROR whenever the
    caller hung up while the agent was still sending (5 of 5 calls with 25 ms of work per
    chunk). Hanging up is how calls end: nothing above INFO, no handler error."""
    caplog.set_level(logging.INFO, logger="telcoflow")
    caplog.set_level(logging.INFO, logger="telcoflow_sdk")
    client = TelcoflowClient(make_config())
    ended: list[str] = []
    handlers_done = 0
    all_done = anyio.Event()
    all_ended = anyio.Event()

    @client.on(events.INCOMING_CALL)
    async def agent(call: ActiveCall) -> None:
        nonlocal handlers_done

        @call.on(events.CALL_TERMINATED)
        def on_ended(reason: str) -> None:
            ended.append(reason)
            if len(ended) == 5:
                all_ended.set()

        try:
            await call.answer()
            async for chunk in call.audio_stream():
                await anyio.sleep(0.025)  # the agent's work on each chunk (a model's turn)
                await call.send_audio(chunk)
        finally:
            handlers_done += 1
            if handlers_done == 5:
                all_done.set()

    async with client:
        sims = [await sandbox.create_call(CallSpec(caller_hangup_after_s=0.5)) for _ in range(5)]
        with anyio.fail_after(WAIT):
            for sim in sims:
                await sim.wait_ended()
            await all_done.wait()
            await all_ended.wait()
    assert ended == ["caller_hangup"] * 5
    loud = [r for r in caplog.records if r.levelno > logging.INFO]
    assert loud == [], [r.getMessage() for r in loud]
    assert client.handler_errors == []


async def test_the_application_s_exception_wins_over_an_internal_failure(
    make_config: MakeConfig,
) -> None:
    """The application raises inside ``async with`` while one of the client's own tasks fails
    (an internal bug, injected into its task group): the application's exception is what
    leaves the block, the internal one kept as its context, not the other way round."""
    client = TelcoflowClient(make_config())
    failing = anyio.Event()

    async def internal_bug() -> None:
        failing.set()
        raise RuntimeError("internal bug")

    async def application() -> None:
        async with client:
            assert client._tg is not None
            client._tg.start_soon(internal_bug)
            with anyio.CancelScope(shield=True), anyio.fail_after(WAIT):
                await failing.wait()
            raise ValueError("the application's")

    with pytest.raises(ValueError, match="the application's") as info:
        await application()
    assert isinstance(info.value.__context__, RuntimeError)
    assert str(info.value.__context__) == "internal bug"


async def test_an_internal_failure_alone_is_raised(make_config: MakeConfig) -> None:
    client = TelcoflowClient(make_config())

    async def internal_bug() -> None:
        raise RuntimeError("internal bug")

    async def application() -> None:
        async with client:
            assert client._tg is not None
            client._tg.start_soon(internal_bug)
            with anyio.fail_after(WAIT):
                await anyio.sleep_forever()  # cancelled by the failure

    with pytest.raises(RuntimeError, match="internal bug"):
        await application()
