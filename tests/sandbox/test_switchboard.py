"""The sandbox's session-manager plane (PROTOCOL.md v2) as a raw client sees it: notification to
every connection, first claim binds, ``call.in`` only after ``session.ready``, ``session.closed``
on every end, ``RESUME``, the claim/ready/media timeouts, call flows, outbound calls, messaging
refused, the REST plane, several connectors, the faults of the new plane.

The "agents" here are raw control connections driven through the core's client role, so that
every frame the sandbox sends is seen as it is, and every rule is tested without the SDK's own
policies (claiming at once, ignoring what it holds) in the way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest

from telcoflow import TelcoflowClient
from telcoflow._core import (
    CallFlowSetup,
    CallIn,
    Command,
    ControlEvent,
    ControlProtocol,
    ErrorMessage,
    MediaProtocol,
    RequestCompleted,
    Response,
    Role,
    SessionClosed,
    SessionCreate,
    SessionNotify,
    SessionOpen,
    SessionReady,
    Setup,
    SetupDone,
    WaMessageOut,
    encode_audio,
)
from telcoflow._net import HandshakeRejected, WebSocketConnection, connect_websocket
from telcoflow.audio import tone_level
from telcoflow.sandbox import CalleeSpec, Connector, NumberSpec, Sandbox, Voice

from ..helpers import WAIT, CallInbox

pytestmark = pytest.mark.anyio


class RawAgent:
    """One raw control connection: send requests, read what the sandbox sends, in order."""

    def __init__(self, conn: WebSocketConnection, proto: ControlProtocol, sm_ws_id: str) -> None:
        self.conn = conn
        self.proto = proto
        self.sm_ws_id = sm_ws_id
        self.seen: list[ControlEvent] = []

    async def next(self, kind: type[Any] | None = None) -> Any:
        """The next frame (of ``kind``, skipping others, which are kept in ``seen``)."""
        with anyio.fail_after(WAIT):
            while True:
                event = self.proto.receive(await self.conn.receive())
                self.seen.append(event)
                if kind is None or isinstance(event, kind):
                    return event

    async def request(self, msg: Any) -> Response:
        await self.conn.send(self.proto.send(msg))
        done = await self.next(RequestCompleted)
        assert isinstance(done, RequestCompleted)
        return done.response

    async def open(self, session_id: str) -> Response:
        return await self.request(SessionOpen(session_id, self.proto.new_request_id()))

    async def ready(self, session_id: str) -> None:
        await self.conn.send(self.proto.send(SessionReady(session_id)))

    async def take(self, note: SessionNotify) -> CallIn:
        """Claim and ready ``note``'s session: its ``call.in``."""
        assert (await self.open(note.session_id)).ok
        await self.ready(note.session_id)
        call_in = await self.next(CallIn)
        assert isinstance(call_in, CallIn)
        return call_in

    async def flow(self, inbound: str, outbound: bool = True) -> Response:
        rid = self.proto.new_request_id()
        return await self.request(CallFlowSetup(inbound, outbound, False, False, rid))


@asynccontextmanager
async def raw_agent(
    sandbox: Sandbox, *, key: str | None = None, uuid: str | None = None, rate: int = 24000
) -> AsyncIterator[RawAgent]:
    conn = await connect_websocket(
        f"{sandbox.base_url}/v1/agent/session-manager",
        headers=[
            ("x-api-key", key or sandbox.api_key),
            ("x-connector-uuid", uuid or sandbox.connector_uuid),
        ],
    )
    try:
        proto = ControlProtocol(Role.CLIENT)
        with anyio.fail_after(WAIT):
            await conn.send(proto.send(Setup(rate)))
            done = proto.receive(await conn.receive())
        assert isinstance(done, SetupDone)
        yield RawAgent(conn, proto, done.sm_ws_id)
    finally:
        await conn.aclose()


async def settled(sandbox: Sandbox, *agents: RawAgent) -> None:
    """Let every agent's connection get past its first second, after which RESUMEs reach it at
    once (the rule under test is about time itself, so this waits for a time, not an event)."""
    joined = [
        s.joined_at for s in sandbox.control_sessions() for a in agents if s.sm_ws_id == a.sm_ws_id
    ]
    assert len(joined) == len(agents)
    await anyio.sleep(max(0.0, max(joined) + 1.05 - anyio.current_time()))


# --- notify, claim, ready -------------------------------------------------------------------------


async def test_a_call_is_notified_to_every_connection_and_the_first_claim_binds(
    sandbox: Sandbox,
) -> None:
    async with raw_agent(sandbox) as a, raw_agent(sandbox) as b:
        sim = await sandbox.create_call(from_number="+6511112222")
        note_a, note_b = await a.next(SessionNotify), await b.next(SessionNotify)
        assert note_a == note_b
        assert (note_a.channel, note_a.activity) == ("TELCO", "NEW_INCOMING_CALL")
        assert (note_a.remote_address, note_a.local_address) == ("+6511112222", sandbox.number)
        assert note_a.session_id == sim.session_id

        won = await a.open(note_a.session_id)
        assert won.ok
        assert won.content["session"]["id"] == note_a.session_id
        assert isinstance(won.content["session"]["openedAt"], int)
        lost = await b.open(note_a.session_id)
        assert (lost.ok, lost.error_code) == (False, "SESSION_BUSY")
        assert lost.error_content == {"boundSmWsId": a.sm_ws_id}
        again = await a.open(note_a.session_id)
        assert again.ok, "a repeated claim by the bound connection answers ok again"
        assert sim.bound_to == a.sm_ws_id

        # call.in only after session.ready, and only to the bound connection.
        assert not [e for e in a.seen if isinstance(e, CallIn)]
        await a.ready(note_a.session_id)
        call_in = await a.next(CallIn)
        assert (call_in.session_id, call_in.call_id) == (note_a.session_id, sim.call_id)
        assert call_in.url.endswith(f"/v1/agent/media/{sim.call_id}")
        assert call_in.org_uuid == sandbox.connectors[0].org_uuid
        await b.ready(note_a.session_id)  # not its session: ignored
        marker = await sandbox.create_call()
        assert (await b.next(SessionNotify)).session_id == marker.session_id
        assert not [e for e in b.seen if isinstance(e, CallIn)]


async def test_unknown_and_closed_sessions_are_refused_with_their_codes(sandbox: Sandbox) -> None:
    async with raw_agent(sandbox) as a:
        missing = await a.open("ses-nope")
        assert (missing.ok, missing.error_code) == (False, "SESSION_NOT_FOUND")
        sim = await sandbox.create_call()
        note = await a.next(SessionNotify)
        await sim.hangup_caller()
        closed = await a.next(SessionClosed)
        assert closed == SessionClosed(note.session_id, "CALL_TERMINATED")
        late = await a.open(note.session_id)
        assert (late.ok, late.error_code) == (False, "SESSION_CLOSED")


async def test_session_closed_reaches_the_bound_connection_only(sandbox: Sandbox) -> None:
    async with raw_agent(sandbox) as a, raw_agent(sandbox) as b:
        sim = await sandbox.create_call()
        note = await a.next(SessionNotify)
        await b.next(SessionNotify)
        assert (await a.open(note.session_id)).ok
        await sim.hangup_caller()
        assert (await a.next(SessionClosed)).reason == "CALL_TERMINATED"
        marker = await sandbox.create_call()
        assert (await b.next(SessionNotify)).session_id == marker.session_id
        assert not [e for e in b.seen if isinstance(e, SessionClosed)]


async def test_a_released_ringing_call_is_notified_again_as_resume(sandbox: Sandbox) -> None:
    async with raw_agent(sandbox) as a, raw_agent(sandbox) as b:
        await settled(sandbox, a, b)
        sim = await sandbox.create_call()
        note = await a.next(SessionNotify)
        await b.next(SessionNotify)
        call_in = await a.take(note)
        media = await connect_websocket(
            call_in.url, headers=[("authorization", f"Bearer {call_in.token}")]
        )
        with anyio.fail_after(WAIT):
            await sim.wait_for(lambda c: c.agent is not None)
        await media.aclose()  # while PENDING: releases the session
        for agent in (a, b):
            resumed = await agent.next(SessionNotify)
            assert (resumed.session_id, resumed.activity) == (note.session_id, "RESUME")
        assert sim.bound_to is None
        second = await b.take(resumed)
        assert second.token != call_in.token, "a new call.in brings a new token"


async def test_a_connection_that_joins_hears_of_ringing_calls_after_its_first_second(
    sandbox: Sandbox,
) -> None:
    sim = await sandbox.create_call()
    async with raw_agent(sandbox) as late:
        note = await late.next(SessionNotify)
        [sm] = sandbox.control_sessions()
        assert anyio.current_time() - sm.joined_at >= 1.0
        assert (note.session_id, note.activity) == (sim.session_id, "RESUME")


async def test_a_lost_connection_s_claims_are_notified_again(sandbox: Sandbox) -> None:
    async with raw_agent(sandbox) as b:
        await settled(sandbox, b)
        async with raw_agent(sandbox) as a:
            sim = await sandbox.create_call()
            note = await a.next(SessionNotify)
            await b.next(SessionNotify)
            assert (await a.open(note.session_id)).ok
        resumed = await b.next(SessionNotify)
        assert (resumed.session_id, resumed.activity) == (sim.session_id, "RESUME")
        assert (await b.open(resumed.session_id)).ok


@pytest.mark.parametrize("stage", ["claimed", "readied"])
async def test_a_claim_not_followed_up_in_time_is_released(stage: str) -> None:
    async with (
        Sandbox(claim_timeout=0.3, media_timeout=0.3) as sandbox,
        raw_agent(sandbox) as a,
        raw_agent(sandbox) as b,
    ):
        await settled(sandbox, a, b)
        sim = await sandbox.create_call()
        note = await a.next(SessionNotify)
        await b.next(SessionNotify)
        assert (await a.open(note.session_id)).ok
        if stage == "readied":
            await a.ready(note.session_id)
            await a.next(CallIn)
        resumed = await b.next(SessionNotify)
        assert (resumed.session_id, resumed.activity) == (sim.session_id, "RESUME")
        assert sim.bound_to is None
        call_in = await b.take(resumed)
        assert call_in.call_id == sim.call_id


async def test_setup_with_a_bad_rate_gets_an_error_then_a_close(sandbox: Sandbox) -> None:
    conn = await connect_websocket(
        f"{sandbox.base_url}/v1/agent/session-manager",
        headers=[("x-api-key", sandbox.api_key), ("x-connector-uuid", sandbox.connector_uuid)],
    )
    try:
        with anyio.fail_after(WAIT):
            await conn.send('{"type": "setup", "data": {"sampleRate": 44100}}')
            proto = ControlProtocol(Role.CLIENT)
            error = proto.receive(await conn.receive())
            assert isinstance(error, ErrorMessage)
            assert error.code == "INVALID_SETUP"
            assert "44100" in error.message
    finally:
        await conn.aclose()


async def test_the_old_control_endpoint_is_gone(sandbox: Sandbox) -> None:
    with pytest.raises(HandshakeRejected) as info:
        await connect_websocket(
            f"{sandbox.base_url}/v1/agent/control",
            headers=[("x-api-key", sandbox.api_key), ("x-connector-uuid", sandbox.connector_uuid)],
        )
    assert info.value.status_code == 404


async def test_a_malformed_request_gets_an_invalid_request_response(sandbox: Sandbox) -> None:
    conn = await connect_websocket(
        f"{sandbox.base_url}/v1/agent/session-manager",
        headers=[("x-api-key", sandbox.api_key), ("x-connector-uuid", sandbox.connector_uuid)],
    )
    try:
        with anyio.fail_after(WAIT):
            await conn.send('{"type": "setup", "data": {"sampleRate": 24000}}')
            await conn.receive()  # setup.done
            await conn.send('{"type": "session.open", "reqId": "r-1", "sessionId": 42}')
            answer = json.loads(await conn.receive())
        assert answer["type"] == "response"
        assert (answer["reqId"], answer["ok"], answer["errorCode"]) == (
            "r-1",
            False,
            "INVALID_REQUEST",
        )
        assert "sessionId" in answer["errorContent"]["message"]
    finally:
        await conn.aclose()


# --- call flows -----------------------------------------------------------------------------------


async def test_call_flow_no_means_no_notifications(sandbox: Sandbox) -> None:
    async with raw_agent(sandbox) as quiet, raw_agent(sandbox) as busy:
        assert (await quiet.flow("NO")).ok
        first = await sandbox.create_call()
        await busy.take(await busy.next(SessionNotify))  # held: never notified again
        assert (await quiet.flow("ALL")).ok
        marker = await sandbox.create_call()
        assert (await quiet.next(SessionNotify)).session_id == marker.session_id
        notes = [e.session_id for e in quiet.seen if isinstance(e, SessionNotify)]
        assert first.session_id not in notes


async def test_call_flow_missed_only_rings_the_number_s_own_phone_first(sandbox: Sandbox) -> None:
    async with raw_agent(sandbox) as a:
        assert (await a.flow("MISSED_ONLY")).ok
        answered = await sandbox.create_call(callee=CalleeSpec(answer_after_s=0.1))
        with anyio.fail_after(WAIT):
            await answered.wait_state("CONNECTED")  # the phone took it: caller and callee talk
        missed = await sandbox.create_call(callee=CalleeSpec(decline=True), missed_after_s=5)
        note = await a.next(SessionNotify)
        assert note.session_id == missed.session_id
        assert not any(
            isinstance(e, SessionNotify) and e.session_id == answered.session_id for e in a.seen
        )
        assert answered.agent_mode is None


async def test_an_unknown_call_flow_is_refused(sandbox: Sandbox) -> None:
    async with raw_agent(sandbox) as a:
        refused = await a.flow("SOMETIMES")
        assert (refused.ok, refused.error_code) == (False, "INVALID_REQUEST")


# --- outbound calls and messaging -----------------------------------------------------------------


async def test_an_outbound_call_rings_a_configured_number_and_comes_answered(
    sandbox: Sandbox,
) -> None:
    sandbox.set_number("+6593334444", NumberSpec(answer_after_s=0.2, voice=Voice.tone(660)))
    async with raw_agent(sandbox) as a, raw_agent(sandbox) as other:
        created = await a.request(SessionCreate("TELCO", "+6593334444", a.proto.new_request_id()))
        assert created.ok
        assert created.content["created"] is True
        sid = created.content["sessionId"]
        busy = await other.open(sid)
        assert busy.error_code == "SESSION_BUSY", "bound at once to the connection that dialled"
        assert (await a.open(sid)).ok
        await a.ready(sid)
        call_in = await a.next(CallIn)
        assert (call_in.from_number, call_in.to_number) == (sandbox.number, "+6593334444")
        sim = sandbox.get_call(call_in.call_id)
        assert sim is not None
        assert (sim.direction.value, sim.state.value) == ("MO", "ANSWERED")
        again = await a.request(SessionCreate("TELCO", "+6593334444", a.proto.new_request_id()))
        assert again.content == {"sessionId": sid, "created": False}

        conn = await connect_websocket(
            call_in.url, headers=[("authorization", f"Bearer {call_in.token}")]
        )
        try:
            media = MediaProtocol(Role.CLIENT)
            heard = bytearray()
            with anyio.fail_after(WAIT):
                while len(heard) < 48000:
                    message = await conn.receive()
                    if isinstance(message, bytes):
                        heard += message[1:]
                    else:
                        media.receive(message)
            assert tone_level(bytes(heard), 24000, 660) > 0.1, "the agent hears the number"
        finally:
            await conn.aclose()


@pytest.mark.parametrize(
    ("number", "detail"),
    [(NumberSpec(decline=True), "CALL_REJECTED"), (NumberSpec(answer=False), "CALL_UNANSWERED")],
)
async def test_an_outbound_call_nobody_answers_closes_with_the_reason(
    sandbox: Sandbox, number: NumberSpec, detail: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import telcoflow.sandbox._call as call_module

    monkeypatch.setattr(call_module, "OUTBOUND_RING_S", 0.3)  # the protocol's 60 s, shortened
    sandbox.set_number("+6595556666", number)
    async with raw_agent(sandbox) as a:
        created = await a.request(SessionCreate("TELCO", "+6595556666", a.proto.new_request_id()))
        sid = created.content["sessionId"]
        assert (await a.open(sid)).ok
        await a.ready(sid)
        closed = await a.next(SessionClosed)
        assert closed == SessionClosed(sid, "CALL_TERMINATED", detail)


@pytest.mark.parametrize(
    ("channel", "remote", "flow", "code"),
    [
        ("WA", "+6590000009", True, "CHANNEL_NOT_CONFIGURED"),
        ("TELCO", "+6590000009", False, "CHANNEL_NOT_CONFIGURED"),
        ("TELCO", "not-a-number", True, "INVALID_REQUEST"),
        ("SMOKE", "+6590000009", True, "INVALID_REQUEST"),
    ],
)
async def test_outbound_refusals(
    sandbox: Sandbox, channel: str, remote: str, flow: bool, code: str
) -> None:
    async with raw_agent(sandbox) as a:
        if not flow:
            assert (await a.flow("ALL", outbound=False)).ok
        refused = await a.request(SessionCreate(channel, remote, a.proto.new_request_id()))
        assert (refused.ok, refused.error_code) == (False, code)


async def test_messaging_is_refused_with_a_valid_messaging_code(sandbox: Sandbox) -> None:
    async with raw_agent(sandbox) as a:
        refused = await a.request(WaMessageOut("ses-x", "m1", "v1", {"text": "hi"}, "req-9"))
        assert (refused.ok, refused.error_code) == (False, "INVALID_CHANNEL")


async def test_the_sdk_dials_out(sandbox: Sandbox, client: TelcoflowClient) -> None:
    sandbox.set_number("+6597778888", NumberSpec(answer_after_s=0.1))
    with anyio.fail_after(WAIT):
        call = await client.dial("+6597778888")
    assert (call.direction, call.state.value) == ("MO", "ANSWERED")
    assert (call.caller_number, call.callee_number) == (sandbox.number, "+6597778888")
    sim = sandbox.get_call(call.call_id)
    assert sim is not None
    with anyio.fail_after(WAIT):
        async for chunk in call.audio_stream():
            await call.send_audio(chunk)
            if sim.stats.agent_bytes_received > 4800:
                break
    await call.disconnect()
    with anyio.fail_after(WAIT):
        assert await sim.wait_ended() == "agent_disconnect"


# --- REST plane -----------------------------------------------------------------------------------


async def test_the_rest_plane_needs_credentials_and_answers_code_and_message(
    sandbox: Sandbox,
) -> None:
    async with httpx.AsyncClient(base_url=sandbox.http_url, timeout=WAIT) as http:
        refused = await http.get("/public/v1/sessions")
        assert refused.status_code == 401
        assert refused.json()["code"] == "UNAUTHORIZED"
        auth = {"x-api-key": sandbox.api_key, "x-connector-uuid": sandbox.connector_uuid}
        sim = await sandbox.create_call()
        listed = (await http.get("/public/v1/sessions", headers=auth)).json()["items"]
        assert [item["id"] for item in listed] == [sim.session_id]
        assert listed[0]["state"] == "OPEN"
        assert listed[0]["initiator"] == "CONNECTOR"
        assert listed[0]["closedAt"] is None
        closed = await http.post(f"/public/v1/sessions/{sim.session_id}/close", headers=auth)
        assert closed.status_code == 200
        assert closed.json()["reason"] == "SDK_REQUEST"
        assert sim.ended
        gone = await http.post("/public/v1/sessions/ses-nope/close", headers=auth)
        assert (gone.status_code, gone.json()["code"]) == (404, "SESSION_NOT_FOUND")
        open_only = await http.get("/public/v1/sessions?state=OPEN", headers=auth)
        assert open_only.json()["items"] == []


async def test_a_rest_close_ends_the_agent_s_part_with_sdk_request(
    sandbox: Sandbox, client: TelcoflowClient, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call()
    call = await inbox.next()
    await call.answer()
    [record] = await client.list_sessions()
    assert record.id == call.session_id
    assert await client.close_session(call.session_id)
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "agent_close"
    assert sim.ended_reason == "agent_close"
    assert [s.close_reason.value for s in sandbox.sessions() if s.close_reason] == ["SDK_REQUEST"]
    assert not await client.close_session("ses-nope")


# --- connectors -----------------------------------------------------------------------------------


async def test_one_connector_never_sees_another_s_calls() -> None:
    first_connector = Connector("first-key", "11111111-1111-4111-8111-111111111111")
    second = Connector("second-key", "22222222-2222-4222-8222-222222222222")
    async with Sandbox(connectors=[first_connector, second]) as sb:
        assert sb.connectors[0].number != sb.connectors[1].number
        async with (
            raw_agent(sb) as first,
            raw_agent(sb, key="second-key", uuid=second.connector_uuid) as other,
        ):
            mine = await sb.create_call(connector_uuid=second.connector_uuid)
            note = await other.next(SessionNotify)
            assert note.session_id == mine.session_id
            assert note.local_address == sb.connectors[1].number
            stranger = await first.open(note.session_id)
            assert stranger.error_code == "SESSION_NOT_FOUND"
            marker = await sb.create_call()
            assert (await first.next(SessionNotify)).session_id == marker.session_id
            seen = [e.session_id for e in first.seen if isinstance(e, SessionNotify)]
            assert mine.session_id not in seen


# --- audio and faults -----------------------------------------------------------------------------


async def test_odd_agent_frames_are_a_byte_stream(sandbox: Sandbox) -> None:
    async with raw_agent(sandbox) as a:
        sim = await sandbox.create_call()
        call_in = await a.take(await a.next(SessionNotify))
        conn = await connect_websocket(
            call_in.url, headers=[("authorization", f"Bearer {call_in.token}")]
        )
        try:
            proto = MediaProtocol(Role.CLIENT)
            _, answer = proto.command(Command.ANSWER, 5000)
            await conn.send(answer)
            pcm = bytes(range(256)) * 4  # 1024 bytes, sent as frames of 333, 333 and 358
            frames = [pcm[:333], pcm[333:666], pcm[666:]]
            await conn.send_many([encode_audio(0, frame) for frame in frames])
            with anyio.fail_after(WAIT):
                await sim.wait_for(lambda c: c.stats.agent_bytes_received == 1024)
                await sim.wait_for(lambda c: pcm[:960] in c.recording("caller"))
            assert sim.stats.excess_bytes == 0
            assert sim.stats.protocol_errors == 0
        finally:
            await conn.aclose()


class _Logged(logging.Handler):
    """Sets ``event`` when a record containing ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


async def test_the_call_error_fault_reaches_the_agent(sandbox: Sandbox, inbox: CallInbox) -> None:
    sim = await sandbox.create_call()
    call = await inbox.next()
    await call.answer()
    logged = _Logged("TTS_SESSION_ERROR")
    log = logging.getLogger("telcoflow_sdk.media_connection")
    log.addHandler(logged)
    try:
        await sandbox.inject_fault(
            {"kind": "call_error", "call_id": sim.call_id, "error_message": "voice clone failed"}
        )
        with anyio.fail_after(WAIT):
            await logged.event.wait()
    finally:
        log.removeHandler(logged)
    assert call.is_active, "call.error is not fatal"
    assert sim.state.value == "ANSWERED"
