"""The official client's session plane against the sandbox: competing session managers, a lost
control connection, the REST plane, outbound calls and call flows."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from interop_kit import (
    Audio,
    Handled,
    OfficialAgent,
    SandboxApi,
    SandboxInfo,
    SandboxProcess,
    async_test,
    collect_audio,
    poll_until,
    seconds_of,
    tone_pcm,
    within,
)

from telcoflow import (
    CallFlowBuilder,
    ChannelType,
    CloseReason,
    InboundCallMode,
    SessionActivityType,
    SessionManager,
    SessionManagerConfig,
    WSSAuthenticationError,
    WSSChannelNotConfigured,
    WSSConnectionError,
    WSSSessionAlreadyExists,
)
from telcoflow.exceptions import WSSSessionBusy

CALLER = "+6590000001"
CALLER_HZ = 440
AGENT_HZ = 1000


async def echo(handled: Handled) -> None:
    """Send back what the call's ``audio_stream()`` yields, until it ends."""
    async for chunk in handled.call.audio_stream():
        await handled.call.send_audio(chunk)


@async_test
async def test_competing_session_managers_claim_each_call_once(sandbox: SandboxInfo) -> None:
    """Two session managers of one connector (at different sample rates), each claiming every
    notification: both are notified of each call, each call is delivered exactly once (in the
    winner's format), and the loser's ``open_session`` raises ``WSSSessionBusy`` naming the
    winner's connection."""
    n = 6
    async with (
        SandboxApi(sandbox) as api,
        OfficialAgent(sandbox, sample_rate=8000) as first,
        OfficialAgent(sandbox, sample_rate=24000) as second,
    ):
        agents = (first, second)
        assert first.id
        assert second.id
        assert first.id != second.id
        call_ids = await asyncio.gather(
            *(api.place_call({"from": f"+65900001{i:02d}"}) for i in range(n))
        )
        session_of = {(await api.call(c))["session_id"]: c for c in call_ids}

        async def outcomes() -> dict[str, list[str]]:
            return {
                sid: [
                    "won" if sid in a.sessions else "busy" if sid in a.busy else "?" for a in agents
                ]
                for sid in session_of
            }

        await poll_until(
            outcomes,
            lambda o: all("?" not in v for v in o.values()),
            "every claim of every call to be answered",
        )
        for a in agents:
            assert not a.open_errors, a.open_errors
            assert sorted(x.session_id for x in a.notifications) == sorted(session_of)
            assert {x.activity for x in a.notifications} == {SessionActivityType.NEW_INCOMING_CALL}
        winners = {}
        for sid in session_of:
            won = [a for a in agents if sid in a.sessions]
            lost = [a for a in agents if sid in a.busy]
            assert len(won) == 1, (sid, won, lost)
            assert len(lost) == 1, (sid, won, lost)
            assert lost[0].busy[sid].bound_sm_ws_id == won[0].id
            winners[sid] = won[0]

        await poll_until(
            lambda: _count(first, second),
            lambda count: count >= n,
            f"{n} calls delivered to on_incoming_call",
        )
        delivered = [(h, a) for a in agents for h in a.handled]
        assert sorted(h.call.id for h, _ in delivered) == sorted(call_ids)
        for handled, a in delivered:
            assert winners[handled.session.id] is a
            assert await handled.call.answer()
        for handled, a in delivered:
            state = await api.call(handled.call.id)
            assert (state["state"], state["bound_to"]) == ("ANSWERED", a.id)
            assert state["sample_rate"] == a.sample_rate  # the winner's format
        assert _delivered(first, second) == n  # still once each, all calls answered

        for call_id in call_ids:
            await api.hangup(call_id)
        for handled, _ in delivered:
            await handled.wait_terminated()
            assert await handled.wait_closed() == CloseReason.CALL_TERMINATED


def _delivered(*agents: OfficialAgent) -> int:
    return sum(len(a.handled) for a in agents)


async def _count(*agents: OfficialAgent) -> int:
    return _delivered(*agents)


@async_test
async def test_busy_names_the_claimer_after_its_control_connection_was_lost(
    sandbox: SandboxInfo,
) -> None:
    """A session whose call has live media is busy for everyone else, also once its claimer's
    control connection is gone: ``WSSSessionBusy.bound_sm_ws_id`` still names the connection
    whose claim the media completed (PROTOCOL.md: ``errorContent: {boundSmWsId}``, a string)."""
    async with (
        SandboxApi(sandbox) as api,
        OfficialAgent(sandbox) as holder,
        OfficialAgent(sandbox, claim=False) as other,
    ):
        call_id = await api.place_call({"from": CALLER})
        handled = await holder.next_call()
        assert await handled.call.answer()
        await other.wait_for(lambda: len(other.notifications) == 1, "the other's notification")
        claimer = holder.id
        await api.fault({"kind": "drop_control", "connection_id": claimer})
        await holder.wait_id_change(claimer)
        with pytest.raises(WSSSessionBusy) as busy:
            await other.sm.open_session(handled.session.id)
        assert (await api.call(call_id))["state"] == "ANSWERED"
        assert isinstance(busy.value.bound_sm_ws_id, str), busy.value
        assert busy.value.bound_sm_ws_id == claimer


@async_test
async def test_control_connection_dropped_mid_call(sandbox: SandboxInfo) -> None:
    """The sandbox drops the control connection (``drop_control``) during an answered call: the
    official client reconnects with a new ``smWsId``; the live call's media and commands keep
    working; a call placed after the reconnect is delivered and answered."""
    rate = 16000
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox, sample_rate=rate) as agent:
        first_id = await api.place_call({"from": CALLER, "caller": {"tone_hz": CALLER_HZ}})
        first = await agent.next_call()
        assert await first.call.answer()
        agent.spawn(echo(first))
        await api.wait_call(
            first_id,
            lambda c: c["stats"]["agent_bytes_received"] >= seconds_of(rate, 0.5),
            "the echo to start",
        )

        old = agent.id
        dropped = await api.fault({"kind": "drop_control"})
        assert dropped["dropped"] == [old]
        new = await agent.wait_id_change(old)
        reconnected = time.time()
        # The official client drops its TELCO sessions on reconnect (documented) ...
        assert await first.wait_closed() == CloseReason.FORCE_CLOSE
        # ... but not the call: its media connection is independent of the control plane.
        state = await api.call(first_id)
        assert state["state"] == "ANSWERED"
        assert state["bound_to"] is None
        received = state["stats"]["agent_bytes_received"]
        await api.wait_call(
            first_id,
            lambda c: c["stats"]["agent_bytes_received"] >= received + seconds_of(rate, 1.0),
            "the echo to go on after the reconnect",
        )
        await first.call.clear_send_audio_buffer()  # a command (agent.interrupt); raises if refused

        second_id = await api.place_call({"from": "+6590000003"})
        second = await agent.next_call()
        assert second.call.id == second_id
        assert second.notification is not None
        assert second.notification.activity == SessionActivityType.NEW_INCOMING_CALL
        assert await second.call.answer()
        state = await api.call(second_id)
        assert (state["state"], state["bound_to"]) == ("ANSWERED", new)

        closing = time.time()
        heard = await api.recording(first_id, "caller")
        heard.assert_heard(
            CALLER_HZ, heard.at(reconnected) + 0.2, heard.at(closing) - 0.1, "the first caller"
        )
        assert await first.call.close()
        await first.wait_terminated()
        final = await api.call(first_id)
        assert (final["state"], final["ended_reason"]) == ("DISCONNECTED", "agent_close")
        assert final["stats"]["excess_bytes"] == 0
        # A call with live media is not notified again (RESUME) to the new connection.
        assert [n.session_id for n in agent.notifications].count(first.session.id) == 1
        assert len(agent.handled) == 2

        assert await second.call.close()
        await second.wait_terminated()
        assert await second.wait_closed() == CloseReason.CALL_TERMINATED


@async_test
async def test_rest_list_sessions(sandbox: SandboxInfo) -> None:
    """``sm.list_sessions()`` lists the open session of a call that is up (with its filters), and
    no longer once the call is over (the default filter is OPEN)."""
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox) as agent:
        call_id = await api.place_call({"from": CALLER})
        handled = await agent.next_call()
        assert await handled.call.answer()
        sid = handled.session.id

        listed = {s.id: s for s in await agent.sm.list_sessions()}
        assert sid in listed, listed
        info = listed[sid]
        assert (info.channel, info.initiator, info.state) == ("TELCO", "CONNECTOR", "OPEN")
        assert (info.remote_address, info.local_address) == (CALLER, sandbox.number)
        assert isinstance(info.opened_at, int)
        assert info.opened_at > 0
        assert info.closed_at is None
        mine = await agent.sm.list_sessions(channel=ChannelType.TELCO, remote_address=CALLER)
        assert [s.id for s in mine] == [sid]
        assert await agent.sm.list_sessions(remote_address="+6599999999") == []

        assert await handled.call.close()
        await handled.wait_terminated()
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED
        assert sid not in {s.id for s in await agent.sm.list_sessions()}
        assert (await api.call(call_id))["state"] == "DISCONNECTED"

        async with httpx.AsyncClient(base_url=sandbox.http_url, trust_env=False) as http:
            closed = await http.get(
                "/public/v1/sessions", params={"state": "CLOSED"}, headers=api.credentials()
            )
            assert closed.status_code == 200, closed.text
            items = {i["id"]: i for i in closed.json()["items"]}
            assert items[sid]["state"] == "CLOSED"
            assert isinstance(items[sid]["closedAt"], int)
            refused = await http.get("/public/v1/sessions")
            assert refused.status_code == 401
            assert refused.json()["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize("connected", [False, True], ids=["answered", "connected"])
@async_test
async def test_rest_close_ends_the_agents_part(sandbox: SandboxInfo, connected: bool) -> None:
    """``POST /public/v1/sessions/{id}/close``: the agent leaves the call (as with ``close()``:
    an answered call ends, a connected one goes on without it); ``on_terminated`` fires and
    ``on_closed`` reports ``SDK_REQUEST``."""
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox) as agent:
        call_id = await api.place_call({"from": CALLER, "callee": {"answer_after_s": 0.2}})
        handled = await agent.next_call()
        assert await handled.call.answer()
        if connected:
            assert await handled.call.connect(ring_time_seconds=5)
        response = await api.rest_close(handled.session.id)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["reason"] == "SDK_REQUEST"
        assert isinstance(body["closedAt"], int)
        await handled.wait_terminated()
        assert await handled.wait_closed() == CloseReason.SDK_REQUEST
        state = await api.call(call_id)
        if connected:
            assert (state["state"], state["agent_mode"]) == ("CONNECTED", None), state
        else:
            assert state["state"] == "DISCONNECTED", state
        assert handled.session.id not in {s.id for s in await agent.sm.list_sessions()}
        missing = await api.rest_close("ses-does-not-exist")
        assert missing.status_code == 404
        assert missing.json()["code"] == "SESSION_NOT_FOUND"


@async_test
async def test_outbound_call(sandbox: SandboxInfo) -> None:
    """``create_session(TELCO, number)`` → ``ready()``: the sandbox dials; a number never
    configured answers after 1 s with a 440 Hz tone, and ``on_incoming_call`` gets the call; the
    agent and the remote party hear each other."""
    rate = 16000
    number = "+6590000099"
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox, sample_rate=rate) as agent:
        dialled = time.monotonic()
        session = await agent.dial(number)
        handled = await agent.next_call()
        assert time.monotonic() - dialled >= 0.9, "the remote party answered before 1 s"
        call = handled.call
        assert handled.session is session
        assert (call.caller_number, call.callee_number) == (sandbox.number, number)
        [state] = [c for c in await api.calls() if c["session_id"] == session.id]
        assert (state["direction"], state["state"], state["to"]) == ("MO", "ANSWERED", number)
        [listed] = await agent.sm.list_sessions(remote_address=number)
        assert (listed.id, listed.initiator, listed.state) == (session.id, "SDK", "OPEN")

        # The call is answered by the remote party: the agent speaks first (which opens the
        # official client's media connection) and listens.
        await call.send_audio(tone_pcm(AGENT_HZ, rate, 1.0))
        reader = agent.spawn(collect_audio(handled))

        async def heard() -> int:
            return len(handled.received)

        await poll_until(heard, lambda n: n >= seconds_of(rate, 1.0), "a second of the remote")
        remote = Audio.from_pcm(bytes(handled.received), rate)
        remote.assert_heard(CALLER_HZ, 0.0, remote.duration, "the agent (the remote party)")
        await api.wait_call(
            state["call_id"],
            lambda c: c["stats"]["agent_bytes_received"] >= seconds_of(rate, 1.0),
            "the agent's second at the sandbox",
        )
        listened = await api.recording(state["call_id"], "caller")
        listened.assert_heard(AGENT_HZ, 1.2, listened.duration - 0.3, "the remote party")

        # One open session per remote address: dialling it again is refused by the client.
        with pytest.raises(WSSSessionAlreadyExists) as exists:
            await agent.sm.create_session(ChannelType.TELCO, number)
        assert exists.value.session_id == session.id
        # Messaging is not served by the sandbox.
        with pytest.raises(WSSChannelNotConfigured):
            await agent.sm.create_session(ChannelType.WA, "+6590000095")

        assert await call.disconnect()
        await handled.wait_terminated()
        await within(reader, 5, "audio_stream() to end")
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED
        final = await api.call(state["call_id"])
        assert (final["state"], final["ended_reason"]) == ("DISCONNECTED", "agent_disconnect")


@async_test
async def test_outbound_remote_party_hangs_up(sandbox: SandboxInfo) -> None:
    """A dialled number configured to hang up after a second: the call ends for the agent
    (``on_terminated``, ``on_closed(CALL_TERMINATED)``)."""
    number = "+6590000094"
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox) as agent:
        await api.set_number(number, {"answer_after_s": 0.2, "hangup_after_s": 1.0})
        session = await agent.dial(number)
        handled = await agent.next_call()
        assert await handled.call.get_send_audio_buffer_size() == 0  # opens the media
        reader = agent.spawn(collect_audio(handled))
        await handled.wait_terminated()
        await within(reader, 5, "audio_stream() to end")
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED
        [state] = [c for c in await api.calls() if c["session_id"] == session.id]
        assert state["state"] == "DISCONNECTED"
        assert state["ended_reason"] == "caller_hangup"
        assert len(handled.received) >= seconds_of(16000, 0.5)


@async_test
async def test_outbound_call_declined(sandbox: SandboxInfo) -> None:
    """A dialled number that declines (``PUT /sandbox/numbers``): the session closes
    (``CALL_TERMINATED``) and no call is delivered."""
    number = "+6590000098"
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox) as agent:
        await api.set_number(number, {"decline": True})
        session = await agent.dial(number)
        assert await agent_closed(agent, session.id) == CloseReason.CALL_TERMINATED
        assert agent.handled == []
        [state] = [c for c in await api.calls() if c["session_id"] == session.id]
        assert (state["state"], state["ended_reason"]) == ("DISCONNECTED", "call_rejected")


async def agent_closed(agent: OfficialAgent, session_id: str) -> CloseReason:
    """The first reason ``on_closed`` reported for the session (bounded wait)."""
    await agent.wait_for(lambda: bool(agent.close_reasons.get(session_id)), "on_closed")
    return agent.close_reasons[session_id][0]


@async_test
async def test_call_flow(sandbox: SandboxInfo) -> None:
    """``setup_call_flow``: ``inboundCall NO`` means no notifications (another connection with
    the default flow is told of the call), outbound calls still allowed; ``outboundCall false``
    refuses ``create_session`` with ``WSSChannelNotConfigured``; back to ``ALL``, the call still
    ringing is notified (``RESUME``) and can be taken."""
    async with (
        SandboxApi(sandbox) as api,
        OfficialAgent(sandbox) as agent,
        OfficialAgent(sandbox, claim=False) as witness,
    ):
        no_inbound = CallFlowBuilder().inbound_call(InboundCallMode.NO).outbound_call(True).build()
        await agent.sm.setup_call_flow(no_inbound)
        call_id = await api.place_call({"from": CALLER})
        await witness.wait_for(lambda: len(witness.notifications) == 1, "the witness's notify")
        assert (await api.call(call_id))["offers"] == 1  # the witness only

        # Outbound calls are still allowed on the connection that takes no inbound ones.
        session = await agent.dial("+6590000097")
        dialled = await agent.next_call()
        assert dialled.session is session
        assert await dialled.call.disconnect()
        await dialled.wait_terminated()
        assert agent.notifications == []  # many round trips later: still not notified

        inbound_only = CallFlowBuilder().inbound_call(InboundCallMode.ALL).build()
        await agent.sm.setup_call_flow(inbound_only)
        with pytest.raises(WSSChannelNotConfigured):
            await agent.sm.create_session(ChannelType.TELCO, "+6590000096")

        handled = await agent.next_call()
        assert handled.call.id == call_id
        assert handled.notification is not None
        assert handled.notification.activity == SessionActivityType.RESUME
        assert await handled.call.answer()
        state = await api.call(call_id)
        assert (state["state"], state["bound_to"]) == ("ANSWERED", agent.id)
        await api.hangup(call_id)
        await handled.wait_terminated()
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED


@async_test
async def test_call_not_yet_answered_is_notified_again_after_a_reconnect(
    sandbox: SandboxInfo,
) -> None:
    """A call delivered but not answered yet (the official client opens media lazily) when the
    control connection drops: the sandbox notifies it again (``RESUME``) to the reconnected
    client, which claims it, gets a new ``Call`` for it and answers that."""
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox) as agent:
        call_id = await api.place_call({"from": CALLER})
        first = await agent.next_call()
        old = agent.id
        await api.fault({"kind": "drop_control"})
        new = await agent.wait_id_change(old)
        assert await first.wait_closed() == CloseReason.FORCE_CLOSE
        again = await agent.next_call()
        assert again.call.id == call_id
        assert again.call is not first.call
        assert again.notification is not None
        assert again.notification.activity == SessionActivityType.RESUME
        assert again.session.id == first.session.id
        assert await again.call.answer()
        state = await api.call(call_id)
        assert (state["state"], state["bound_to"]) == ("ANSWERED", new)
        await api.hangup(call_id)
        await again.wait_terminated()
        assert await again.wait_closed() == CloseReason.CALL_TERMINATED


@async_test
async def test_reconnect_after_refused_connections(sandbox: SandboxInfo) -> None:
    """While the sandbox refuses connections (503) the official client keeps retrying; once it
    accepts them again the client is back and takes calls."""
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox) as agent:
        old = agent.id
        await api.fault({"kind": "refuse_connections", "seconds": 1.5, "status": 503})
        refused_from = time.monotonic()
        await api.fault({"kind": "drop_control"})
        await agent.wait_id_change(old, timeout=15)
        assert time.monotonic() - refused_from >= 1.4, "reconnected while connections were refused"
        call_id = await api.place_call({"from": CALLER})
        handled = await agent.next_call()
        assert handled.call.id == call_id
        assert await handled.call.answer()
        assert await handled.call.disconnect()
        await handled.wait_terminated()


@async_test
async def test_call_flow_missed_only(sandbox: SandboxInfo) -> None:
    """``inboundCall MISSED_ONLY``: a call the number's own phone answers never reaches the
    agent; one it misses is notified once it has rung out, and the agent takes it."""
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox) as agent:
        missed_only = CallFlowBuilder().inbound_call(InboundCallMode.MISSED_ONLY).build()
        await agent.sm.setup_call_flow(missed_only)
        taken = await api.place_call(
            {"from": CALLER, "callee": {"answer_after_s": 0.2}, "missed_after_s": 5}
        )
        state = await api.wait_call(taken, lambda c: c["state"] == "CONNECTED", "the phone")
        assert state["offers"] == 0
        placed = time.monotonic()
        missed = await api.place_call(
            {"from": "+6590000004", "callee": {"answer": False}, "missed_after_s": 0.5}
        )
        handled = await agent.next_call()
        assert time.monotonic() - placed >= 0.4, "notified before the number's phone rang out"
        assert handled.call.id == missed
        assert [n.session_id for n in agent.notifications] == [handled.session.id]
        assert await handled.call.answer()
        assert (await api.call(missed))["state"] == "ANSWERED"
        assert (await api.call(taken))["offers"] == 0
        await api.hangup(missed)
        await handled.wait_terminated()


@async_test
async def test_session_close_of_a_call(sandbox: SandboxInfo) -> None:
    """``session.close()`` of a TELCO session closes its call (``call.close``) and returns once
    the sandbox confirmed it with ``session.closed`` (``CALL_TERMINATED``), not by its own
    10 s fallback (which would report ``SDK_REQUEST``)."""
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox) as agent:
        call_id = await api.place_call({"from": CALLER})
        handled = await agent.next_call()
        assert await handled.call.answer()
        started = time.monotonic()
        await within(handled.session.close(), 15, "session.close()")
        assert time.monotonic() - started < 5, "session.close() waited for its own fallback"
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED
        await handled.wait_terminated()
        final = await api.call(call_id)
        assert (final["state"], final["ended_reason"]) == ("DISCONNECTED", "agent_close")


#: Two applications' own credentials, given to ``serve --connector`` (repeatable).
APPS = (
    ("first-app-key", "11111111-2222-4333-8444-555555555555"),
    ("second-app-key", "66666666-7777-4888-9999-000000000000"),
)


@async_test
async def test_application_credentials_and_connector_isolation(tmp_path: Path) -> None:
    """``serve --connector KEY:UUID`` (twice): the official client connects with each
    application's own credentials, and one connector never sees another's calls."""
    flags = [arg for key, uuid in APPS for arg in ("--connector", f"{key}:{uuid}")]
    process = SandboxProcess(tmp_path, extra_args=tuple(flags))
    sandbox = await asyncio.to_thread(process.start)
    try:
        listed = {c["connector_uuid"] for c in sandbox.connectors}
        assert {uuid for _, uuid in APPS} <= listed, sandbox.connectors
        first, second = (sandbox.as_connector(key, uuid) for key, uuid in APPS)
        assert first.number != second.number
        async with (
            SandboxApi(sandbox) as api,
            OfficialAgent(first) as first_agent,
            OfficialAgent(second) as second_agent,
        ):
            call_id = await api.place_call({"from": CALLER, "connector_uuid": APPS[1][1]})
            handled = await second_agent.next_call()
            assert handled.call.id == call_id
            assert handled.call.callee_number == second.number
            assert await handled.call.answer()
            assert (await api.call(call_id))["offers"] == 1
            other_id = await api.place_call({"from": CALLER, "connector_uuid": APPS[0][1]})
            other = await first_agent.next_call()
            assert other.call.id == other_id
            assert other.call.callee_number == first.number
            assert (await api.call(other_id))["offers"] == 1
            assert [n.session_id for n in first_agent.notifications] == [other.session.id]
            assert [n.session_id for n in second_agent.notifications] == [handled.session.id]
            assert [s.id for s in await first_agent.sm.list_sessions()] == [other.session.id]
            assert [s.id for s in await second_agent.sm.list_sessions()] == [handled.session.id]
            assert await handled.call.disconnect()
            assert await other.call.disconnect()
    finally:
        await asyncio.to_thread(process.stop)


@async_test
async def test_wrong_credentials_are_refused(sandbox: SandboxInfo) -> None:
    """A wrong API key: the control connection is refused with the sandbox's reason (the
    official client raises ``WSSConnectionError`` with the body's text), and the REST plane
    answers ``UNAUTHORIZED`` (``WSSAuthenticationError``)."""
    config = SessionManagerConfig.create(
        api_key="not-the-key", connector_uuid=sandbox.connector_uuid, base_url=sandbox.base_url
    )
    sm = SessionManager(config)
    try:
        with pytest.raises(WSSConnectionError) as refused:
            await sm.__aenter__()
        assert "credentials" in str(refused.value), refused.value
        with pytest.raises(WSSAuthenticationError) as rest:
            await sm.list_sessions()
        assert "UNAUTHORIZED" in str(rest.value), rest.value
    finally:
        await sm.__aexit__(None, None, None)


@async_test
async def test_outbound_call_connect_and_whisper(sandbox: SandboxInfo) -> None:
    """An outbound call can be connected like an inbound one; in whisper the agent is heard by
    the number's subscriber only (the party ``connect`` rang, recorded as the callee), not by
    the dialled remote party (recorded as the caller)."""
    rate = 16000
    number = "+6590000093"
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox, sample_rate=rate) as agent:
        await api.set_number(number, {"answer_after_s": 0.2, "tone_hz": CALLER_HZ})
        session = await agent.dial(number)
        handled = await agent.next_call()
        call = handled.call
        assert await call.connect(ring_time_seconds=5)
        [state] = [c for c in await api.calls() if c["session_id"] == session.id]
        call_id = state["call_id"]
        assert (await api.call(call_id))["state"] == "CONNECTED"
        assert await call.whisper()
        began = time.time()
        await call.send_audio(tone_pcm(AGENT_HZ, rate, 1.5))
        await api.wait_call(
            call_id,
            lambda c: c["stats"]["agent_bytes_received"] >= seconds_of(rate, 1.5),
            "the whispered tone at the sandbox",
        )
        ended = time.time()
        remote = await api.recording(call_id, "caller")
        subscriber = await api.recording(call_id, "callee")
        window = (began + 0.2, ended)
        subscriber.assert_heard(AGENT_HZ, *map(subscriber.at, window), "the subscriber")
        remote.assert_not_heard(AGENT_HZ, *map(remote.at, window), "the remote party")
        assert await call.disconnect()
        await handled.wait_terminated()
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED
