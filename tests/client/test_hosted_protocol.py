"""Our client against a minimal hosted-service stand-in (tests/hosted_server.py), written from
hosted-1.0.0.md and PROTOCOL.md alone: the wire shapes the official 1.0.0 client sends, the
lenient frames a real server may send, and the control plane's claims, losses and refusals.

Every test runs under asyncio and trio, over loopback sockets. Nothing waits by sleeping: waits
are on the server's records or the client's events, bounded by ``WAIT``; what must not happen is
checked after a later frame's effect has been seen.
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from telcoflow import ActiveCall, TelcoflowClient, TelcoflowClientConfig, events
from telcoflow.exceptions import (
    WSSAuthenticationError,
    WSSCallCommandError,
    WSSConnectionError,
    WSSError,
)

from ..helpers import WAIT, CallInbox, serving
from ..hosted_server import (
    CONNECTOR_NUMBER,
    CONTROL_PATH,
    OMIT,
    HostedServer,
    MediaConnection,
    Session,
)

pytestmark = pytest.mark.anyio

API_KEY = "hosted-test-key"
CONNECTOR_UUID = "7d0f2c1e-5b8a-4c3d-9e6f-1a2b3c4d5e6f"
SDK_LOGGER = "telcoflow_sdk"


@pytest.fixture
async def server() -> AsyncIterator[HostedServer]:
    async with HostedServer(api_key=API_KEY, connector_uuid=CONNECTOR_UUID) as s:
        yield s


def make_config(server: HostedServer, **options: Any) -> TelcoflowClientConfig:
    options.setdefault("reconnect", {"initial_delay": 0.05, "max_delay": 0.1})
    return TelcoflowClientConfig.sandbox(
        api_key=API_KEY, connector_uuid=CONNECTOR_UUID, base_url=server.base_url, **options
    )


def is_uuid4(value: object) -> bool:
    try:
        parsed = uuid.UUID(str(value))
    except ValueError:
        return False
    return parsed.version == 4 and str(parsed) == value


async def take_call(
    server: HostedServer, inbox: CallInbox, **options: Any
) -> tuple[Session, ActiveCall, MediaConnection]:
    """Notify a new inbound call; the call the application gets, and its media connection."""
    session = await server.notify(server.new_session(**options))
    call = await inbox.next(WAIT)
    assert call.session_id == session.id
    return session, call, await server.media(session)


async def read_audio(stream: AsyncIterator[bytes], n: int) -> bytes:
    """At least ``n`` bytes from an audio stream."""
    got = b""
    with anyio.fail_after(WAIT):
        while len(got) < n:
            got += await anext(stream)
    return got


def on_terminated(call: ActiveCall) -> tuple[list[str], anyio.Event]:
    """The payloads of ``call``'s CALL_TERMINATED events, and an event set by the first."""
    reasons: list[str] = []
    done = anyio.Event()

    def ended(reason: str) -> None:
        reasons.append(reason)
        done.set()

    call.on(events.CALL_TERMINATED, ended)
    return reasons, done


def pcm(n: int, seed: int = 1) -> bytes:
    """``n`` bytes of recognisable PCM16."""
    return bytes((seed + i * 7) % 256 for i in range(n))


def sdk_records(
    caplog: pytest.LogCaptureFixture, start: int = 0, above: int = logging.DEBUG
) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records[start:] if r.name.startswith(SDK_LOGGER) and r.levelno > above
    ]


# --- the wire: control plane ---------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "mode"), [(24000, "mixed"), (8000, "isolated")])
async def test_control_upgrade_headers_and_setup_frame(
    server: HostedServer, rate: int, mode: str
) -> None:
    async with TelcoflowClient(make_config(server, sample_rate=rate, audio_mode=mode)) as client:
        control = await server.control()
        request = control.request
        assert request.method == "GET"
        assert request.path == CONTROL_PATH
        assert request.headers["x-api-key"] == API_KEY
        assert request.headers["x-connector-uuid"] == CONNECTOR_UUID
        assert request.headers["x-sdk-version"] == "1.0.0"
        assert request.headers["user-agent"].startswith("telcoflow-anyio/")
        first = control.messages()[0]
        assert first == {"type": "setup", "data": {"sampleRate": rate, "audioMode": mode}}
        assert isinstance(control.received[0], str)  # a text frame
        # setup.done's top-level smWsId is the connection's id.
        assert client.connection_id == control.sm_ws_id
        assert client.connected


async def test_inbound_call_wire_and_details(server: HostedServer) -> None:
    delivered: list[tuple[ActiveCall, bool]] = []
    got_call = anyio.Event()

    async with TelcoflowClient(make_config(server)) as client:

        def incoming(call: ActiveCall) -> None:
            session = server.sessions[call.session_id]
            media_open = session.media is not None and not session.media.closed.is_set()
            delivered.append((call, media_open))
            got_call.set()

        client.on(events.INCOMING_CALL, incoming)

        control = await server.control()
        session = await server.notify(server.new_session(remote_address="+6598765432"))
        with anyio.fail_after(WAIT):
            await got_call.wait()

        call, media_open = delivered[0]
        assert media_open, "the handler got the call before its media connection was open"
        assert call.call_id == session.call_id
        assert call.session_id == session.id
        assert call.org_uuid == server.org_uuid
        assert call.caller_number == "+6598765432"  # call.in's from
        assert call.callee_number == CONNECTOR_NUMBER  # call.in's to
        assert call.direction == "MT"
        assert call.state.value == "PENDING"
        assert client.get_call(session.call_id) is call

        kinds = [m["type"] for m in control.messages()]
        assert kinds == ["setup", "session.open", "session.ready"]
        claim, ready = control.messages()[1:]
        assert set(claim) == {"type", "sessionId", "reqId"}
        assert claim["sessionId"] == session.id
        assert is_uuid4(claim["reqId"])
        assert ready == {"type": "session.ready", "sessionId": session.id}

        media = await server.media(session)
        assert media.request.target == session.media_target
        assert media.request.headers["authorization"] == f"Bearer {session.token}"
        assert media.request.headers["x-sdk-version"] == "1.0.0"


async def test_command_frames(server: HostedServer) -> None:
    async with serving(make_config(server)) as (_client, inbox):
        _session, call, media = await take_call(server, inbox)
        terminated, done = on_terminated(call)
        await call.answer()
        await call.connect(ring_time_seconds=7)
        await call.clear_send_audio_buffer()
        await call.close()
        with anyio.fail_after(WAIT):
            assert await call.wait_terminated() == "agent_close"

        commands = media.commands
        assert [c["command"] for c in commands] == [
            "call.answer",
            "call.connect",
            "agent.interrupt",
            "call.close",
        ]
        for c in commands:
            assert set(c) <= {"command_id", "command", "timeout_ms", "data"}
            assert is_uuid4(c["command_id"])
            assert isinstance(c["timeout_ms"], int)
            assert isinstance(c.get("data", {}), dict)
        assert len({c["command_id"] for c in commands}) == len(commands)
        answer, connect, interrupt, close = commands
        assert answer["timeout_ms"] == 10000
        assert connect["timeout_ms"] == 7 * 1000  # the ring time, as the official client sends
        assert connect["data"] == {"ringTimeSeconds": 7}
        assert interrupt["timeout_ms"] == close["timeout_ms"] == 10000
        with anyio.fail_after(WAIT):
            await done.wait()
        assert terminated == ["agent_close"]


async def test_jwt_sized_token_and_long_media_url(server: HostedServer) -> None:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    token = ".".join([b64(b'{"alg":"RS256","typ":"JWT"}'), b64(bytes(3000)), b64(bytes(256))])
    assert len(token) >= 4096
    call_id = "call-" + "c" * 60
    target = f"/v1/agent/media/{call_id}?region=sg&sig=" + "s" * 3000
    async with serving(make_config(server)) as (_client, inbox):
        session, call, media = await take_call(
            server, inbox, call_id=call_id, token=token, media_target=target
        )
        assert call.call_id == call_id
        assert media.request.target == target
        assert media.request.headers["authorization"] == f"Bearer {token}"
        await call.answer()  # the media works
        assert media.commands[0]["command"] == "call.answer"
        assert session.media is media


async def test_tokens_and_key_are_never_logged(
    server: HostedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = ["tok-refused-" + "r" * 40, "tok-used-" + "u" * 40]
    async with serving(make_config(server)) as (client, inbox):
        control = await server.control()
        refused = await server.notify(server.new_session(on_ready="nothing"))
        await server.wait_for(lambda: control.messages("session.ready"))
        await control.call_in(refused, token=tokens[0])  # refused: 401, logged
        await server.wait_for(lambda: [r.status for r in server.upgrades(refused.media_target)])
        _session, call, _media = await take_call(server, inbox, token=tokens[1])
        await call.answer()
        await client.list_sessions()
    logged = [r.getMessage() + (r.exc_text or "") for r in caplog.records]
    assert any(refused.call_id in m for m in logged)  # the refusal was logged, and DEBUG was on
    for secret in [*tokens, API_KEY]:
        assert not [m for m in logged if secret in m], f"{secret[:12]}... was logged"


# --- lenient frames a real server may send -------------------------------------------------------


async def test_call_terminated_without_reason(server: HostedServer) -> None:
    async with serving(make_config(server)) as (_client, inbox):
        _session, call, media = await take_call(server, inbox)
        reasons, done = on_terminated(call)
        await media.terminate(reason=OMIT)
        with anyio.fail_after(WAIT):
            await done.wait()
        assert reasons == ["unknown"]
        assert call.termination_reason == "unknown"
        assert call.state.value == "DISCONNECTED"


@pytest.mark.parametrize(
    "fields",
    [
        {"error_code": "TTS_SESSION_ERROR", "error_message": "voice clone session failed"},
        {"error_code": "TTS_SESSION_ERROR"},
    ],
    ids=["error_message", "no_message"],
)
async def test_call_error_variants_are_non_fatal(
    server: HostedServer, caplog: pytest.LogCaptureFixture, fields: dict[str, str]
) -> None:
    caplog.set_level(logging.DEBUG, logger=SDK_LOGGER)
    async with serving(make_config(server)) as (_client, inbox):
        _session, call, media = await take_call(server, inbox)
        await media.call_event("call.error", **fields)
        await call.answer()  # a later frame's effect: the error was read and the call goes on
        assert call.is_active
        assert call.stats.protocol_errors == 0
        text = " ".join(r.getMessage() for r in sdk_records(caplog, above=logging.NOTSET))
        assert "TTS_SESSION_ERROR" in text
        if "error_message" in fields:
            assert fields["error_message"] in text


@pytest.mark.parametrize("prefer", [OMIT, 0], ids=["missing", "zero"])
async def test_buffer_request_without_preferred_frame_size(
    server: HostedServer, prefer: Any
) -> None:
    rate = 16000
    frame = rate * 2 // 50  # 20 ms
    async with serving(make_config(server, sample_rate=rate)) as (_client, inbox):
        _session, call, media = await take_call(server, inbox)
        await call.answer()
        audio = pcm(20 * frame)
        await call.send_audio(audio)
        await media.grant(10 * frame, prefer=prefer)
        await server.wait_for(lambda: len(media.audio) >= 10 * frame)
        await call.clear_send_audio_buffer()  # a later frame: nothing beyond the credit came
        assert media.audio == audio[: 10 * frame]
        sizes = [len(f) - 1 for f in media.audio_frames]
        assert sizes == [frame] * 10, f"frames of {sizes} bytes, expected 20 ms ({frame})"
        assert all(f[0] == 0 for f in media.audio_frames)


@pytest.mark.parametrize(
    ("reply", "error_code"),
    [
        ({"success": 1, "result": OMIT, "error_code": OMIT, "error_message": OMIT}, None),
        ({"result": OMIT, "error_code": OMIT, "error_message": OMIT}, None),
        ({"success": False, "error_code": "INVALID_STATE", "error_message": OMIT}, "INVALID_STATE"),
        ({"success": 0, "result": OMIT, "error_code": OMIT, "error_message": OMIT}, "failed"),
    ],
    ids=["success_1", "only_id_and_success", "code_without_message", "bare_failure"],
)
async def test_command_response_lenient(
    server: HostedServer, reply: dict[str, Any], error_code: str | None
) -> None:
    async with serving(make_config(server)) as (_client, inbox):
        session, call, _media = await take_call(server, inbox)
        session.replies["call.answer"] = reply
        if error_code is None:
            await call.answer()
            assert call.state.value == "ANSWERED"
        else:
            with pytest.raises(WSSCallCommandError) as info:
                await call.answer()
            if error_code != "failed":
                assert info.value.error_code == error_code
            assert call.state.value == "PENDING"
            assert call.is_active
        assert call.stats.protocol_errors == 0


async def test_isolated_mode_reads_channel_zero_too(server: HostedServer) -> None:
    async with serving(make_config(server, audio_mode="isolated")) as (_client, inbox):
        _session, call, media = await take_call(server, inbox)
        await call.answer()
        mixed, caller, callee = pcm(640, 1), pcm(640, 2), pcm(640, 3)
        await media.send_audio(mixed, channel=0)
        await media.send_audio(caller, channel=1)
        await media.send_audio(callee, channel=2)
        assert await read_audio(call.audio_stream("mixed"), 640) == mixed
        assert await read_audio(call.audio_stream(), 640) == caller
        assert await read_audio(call.audio_stream("callee"), 640) == callee
        assert call.stats.ignored_frames == 0
        assert call.stats.protocol_errors == 0


async def test_audio_on_unread_channels_is_ignored_quietly(
    server: HostedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SDK_LOGGER)
    async with serving(make_config(server)) as (_client, inbox):
        _session, call, media = await take_call(server, inbox)
        await call.answer()
        stream = call.audio_stream()
        mark = len(caplog.records)
        unread = [1, 2, 3, 7, 255] * 4  # mixed mode reads channel 0 only
        for channel in unread:
            await media.send_audio(pcm(640, channel), channel=channel)
        marker = pcm(640, 99)
        await media.send_audio(marker, channel=0)
        assert await read_audio(stream, 640) == marker
        assert call.stats.ignored_frames == len(unread)
        assert call.is_active
        assert not sdk_records(caplog, mark, above=logging.INFO), "logged per ignored frame"

        await media.send_bytes(b"\x00")  # under 2 bytes: no audio at all
        marker = pcm(640, 98)
        await media.send_audio(marker, channel=0)
        assert await read_audio(stream, 640) == marker
        assert call.is_active


async def test_odd_length_audio_frames_are_a_byte_stream(server: HostedServer) -> None:
    async with serving(make_config(server)) as (_client, inbox):
        _session, call, media = await take_call(server, inbox)
        await call.answer()
        audio = pcm(642, 5)
        await media.send_audio(audio[:321])
        await media.send_audio(audio[321:])
        assert await read_audio(call.audio_stream(), 642) == audio
        assert call.stats.protocol_errors == 0


# --- claims --------------------------------------------------------------------------------------


async def test_session_busy_is_quiet(
    server: HostedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SDK_LOGGER)
    async with serving(make_config(server)) as (client, inbox):
        control = await server.control()
        busy = await server.notify(server.new_session(hold_open=True))
        claim = await server.wait_for(
            lambda: next((m for m in control.messages("session.open")), None)
        )
        mark = len(caplog.records)
        await control.respond(
            claim["reqId"],
            ok=False,
            error_code="SESSION_BUSY",
            error_content={"boundSmWsId": "sm-another-process"},
        )
        # A later call is taken: the refusal was read and raised nothing.
        later, call, _media = await take_call(server, inbox)
        assert call.session_id == later.id
        assert client.connected
        assert [m["sessionId"] for m in control.messages("session.ready")] == [later.id]
        assert not [r for r in sdk_records(caplog, mark) if busy.id in r.getMessage()]
        with pytest.raises(anyio.WouldBlock):
            inbox.next_nowait()


async def test_session_closed_before_call_in(
    server: HostedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SDK_LOGGER)
    async with serving(make_config(server)) as (client, inbox):
        control = await server.control()
        gone = await server.notify(server.new_session(on_ready="closed"))
        later, call, _media = await take_call(server, inbox)
        assert call.session_id == later.id
        assert [m["sessionId"] for m in control.messages("session.open")] == [gone.id, later.id]
        assert gone.media is None
        assert not server.upgrades(gone.media_target)
        assert [c.session_id for c in client.calls] == [later.id]
        assert not [r for r in sdk_records(caplog, above=logging.INFO) if gone.id in r.getMessage()]
        with pytest.raises(anyio.WouldBlock):
            inbox.next_nowait()


async def test_max_calls_leaves_further_calls_to_others(server: HostedServer) -> None:
    async with serving(make_config(server, max_calls=1)) as (client, inbox):
        control = await server.control()
        first, call, _media = await take_call(server, inbox)
        second = await server.notify(server.new_session())
        # Two later round trips on the same connection: the notify was read before them.
        await client.setup_call_flow()
        await client.setup_call_flow()
        claimed = [m["sessionId"] for m in control.messages("session.open")]
        assert claimed == [first.id]
        assert second.bound is None
        assert call.is_active
        with pytest.raises(anyio.WouldBlock):
            inbox.next_nowait()


async def test_two_processes_share_a_connector(server: HostedServer) -> None:
    config = make_config(server)
    async with serving(config) as (a, inbox_a), serving(config) as (b, inbox_b):
        await server.wait_for(lambda: len(server.live_controls()) == 2)
        shared = await server.notify(server.new_session())  # to both: the first claim wins
        await server.wait_for(
            lambda: all(c.messages("session.open") for c in server.live_controls())
        )
        winner = next(c for c in server.live_controls() if c.sm_ws_id == shared.bound)
        loser = next(c for c in server.live_controls() if c is not winner)
        inboxes = {a.connection_id: inbox_a, b.connection_id: inbox_b}
        call = await inboxes[winner.sm_ws_id].next(WAIT)
        assert call.session_id == shared.id
        # The loser goes on taking calls; the busy one never reached it.
        later = await server.notify(server.new_session(), to=loser)
        other = await inboxes[loser.sm_ws_id].next(WAIT)
        assert other.session_id == later.id
        assert [m["sessionId"] for m in loser.messages("session.ready")] == [later.id]


async def test_refused_media_upgrade_delivers_no_call(server: HostedServer) -> None:
    async with serving(make_config(server)) as (client, inbox):
        control = await server.control()
        refused = await server.notify(server.new_session(on_ready="nothing"))
        await server.wait_for(lambda: control.messages("session.ready"))
        await control.call_in(refused, token="not-the-token")
        await server.wait_for(lambda: [r.status for r in server.upgrades(refused.media_target)])
        later, call, _media = await take_call(server, inbox)
        assert call.session_id == later.id
        assert [r.status for r in server.upgrades(refused.media_target)] == [401]
        assert client.get_call(refused.call_id) is None
        with pytest.raises(anyio.WouldBlock):
            inbox.next_nowait()


async def test_unknown_and_repeated_frames_are_ignored(
    server: HostedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=SDK_LOGGER)
    async with serving(make_config(server)) as (client, inbox):
        control = await server.control()
        await control.send_text("{not json")
        await control.send_json({"type": "connector.brand_new", "anything": [1, 2]})
        await control.send_bytes(b"\x00\x01\x02")
        await control.send_json(
            {"type": "session.closed", "sessionId": "not-ours", "reason": "FORCE_CLOSE"}
        )
        session = server.new_session()
        await server.notify(session, createdAt=1712345678.5, region="sg-1", priority=3)
        call = await inbox.next(WAIT)
        assert call.created_at == 1712345678.5
        media = await server.media(session)
        await media.send_text("{not json")
        await media.send_json({"type": "media.brand_new", "data": {}})
        await media.call_event("call.brand_new", detail=1)
        await media.send_json(
            {"type": "command_response", "data": {"command_id": "unknown", "success": True}}
        )
        await control.call_in(session)  # again: its call is already ours
        await call.answer()
        await client.setup_call_flow()  # later frames on both planes took effect
        assert client.connected
        assert call.is_active
        assert client.calls == [call]
        assert len(server.upgrades(session.media_target)) == 1
        unknown = [r for r in sdk_records(caplog) if "brand_new" in r.getMessage()]
        assert not unknown, "unknown types are logged at DEBUG"
        with pytest.raises(anyio.WouldBlock):
            inbox.next_nowait()


async def test_session_closed_does_not_end_a_connected_call(server: HostedServer) -> None:
    async with serving(make_config(server)) as (client, inbox):
        session, call, media = await take_call(server, inbox)
        await call.answer()
        await server.end_session(session)  # the media plane stays the authority
        await client.setup_call_flow()
        await call.clear_send_audio_buffer()
        assert call.is_active
        await media.terminate("callee_hangup")
        with anyio.fail_after(WAIT):
            assert await call.wait_terminated() == "callee_hangup"


# --- control connection lost mid-call ------------------------------------------------------------


async def test_control_drop_keeps_calls_and_reconnects(server: HostedServer) -> None:
    async with serving(make_config(server)) as (client, inbox):
        first = await server.control()
        await client.setup_call_flow(inbound="ALL", outbound=True)
        (flow,) = first.messages("call_flow.setup")
        assert set(flow) == {"type", "data", "reqId"}
        assert flow["data"] == {
            "inboundCall": "ALL",
            "outboundCall": True,
            "inboundMessage": False,
            "outboundMessage": False,
        }
        assert is_uuid4(flow["reqId"])
        held, call, media = await take_call(server, inbox)
        await call.answer()

        # Hold the client's reconnection so that the media is used while the control is down.
        server.control_gate = anyio.Event()
        await first.drop()
        await server.wait_for(lambda: len(server.upgrades()) == 2)
        assert not client.connected

        await call.clear_send_audio_buffer()  # a command, answered
        assert media.commands[-1]["command"] == "agent.interrupt"
        outgoing = pcm(3200, 7)
        await media.grant(3200, prefer=640)
        await call.send_audio(outgoing)
        await server.wait_for(lambda: media.audio == outgoing)
        incoming = pcm(640, 8)
        await media.send_audio(incoming)
        assert await read_audio(call.audio_stream(), 640) == incoming

        server.control_gate.set()
        second = await server.control(1)
        assert second.messages()[0] == first.messages()[0]  # the same setup, sent again
        (again,) = await server.wait_for(lambda: second.messages("call_flow.setup"))
        assert again["data"] == flow["data"]
        assert is_uuid4(again["reqId"])
        assert again["reqId"] != flow["reqId"]
        assert client.reconnects == 1
        assert client.connection_id == second.sm_ws_id

        await server.notify(held, activity="RESUME", to=second)
        other = server.new_session(remote_address="+6591112222")
        await server.notify(other, activity="RESUME", to=second)
        resumed = await inbox.next(WAIT)
        assert resumed.session_id == other.id
        assert resumed.caller_number == "+6591112222"
        assert [m["sessionId"] for m in second.messages("session.open")] == [other.id]
        assert call.is_active
        assert client.get_call(call.call_id) is call
        assert not media.closed.is_set()
        await call.clear_send_audio_buffer()  # the first call's media still works
        with pytest.raises(anyio.WouldBlock):
            inbox.next_nowait()


async def test_resume_right_after_setup_done_is_not_lost(server: HostedServer) -> None:
    async with serving(make_config(server)) as (_client, inbox):
        first = await server.control()
        waiting = server.new_session()
        server.resume_on_setup.append(waiting)  # the official client loses this one
        await first.drop()
        call = await inbox.next(WAIT)
        assert call.session_id == waiting.id
        second = await server.control(1)
        assert [m["sessionId"] for m in second.messages("session.open")] == [waiting.id]


async def test_other_refusals_are_retried(server: HostedServer) -> None:
    async with serving(make_config(server)) as (client, inbox):
        first = await server.control()
        server.refuse_control = (503, "down for maintenance")
        await first.drop()
        await server.wait_for(lambda: [r for r in server.upgrades() if r.status == 503])
        server.refuse_control = None
        second = await server.control(1)
        session = await server.notify(server.new_session(), to=second)
        call = await inbox.next(WAIT)
        assert call.session_id == session.id
        assert client.connected


async def test_heartbeat_both_ways(server: HostedServer) -> None:
    async with serving(make_config(server, ping_interval=0.05)) as (_client, inbox):
        control = await server.control()
        _session, call, media = await take_call(server, inbox)
        await control.ping(b"sm")
        await media.ping(b"media")
        await server.wait_for(lambda: control.pongs and media.pongs)  # the client answers ours
        await server.wait_for(lambda: control.pings >= 2 and media.pings >= 2)  # and pings us
        assert call.is_active


async def test_silent_control_connection_is_replaced(server: HostedServer) -> None:
    config = make_config(server, ping_interval=0.05, ping_timeout=0.5)
    async with serving(config) as (client, inbox):
        first = await server.control()
        _session, call, _media = await take_call(server, inbox)
        first.answer_pings = False  # the server (or the network) stopped answering
        second = await server.control(1)
        session = await server.notify(server.new_session(), to=second)
        later = await inbox.next(WAIT)
        assert later.session_id == session.id
        assert client.reconnects == 1
        assert call.is_active  # the media plane answers its pings: the call goes on


# --- refused upgrades ----------------------------------------------------------------------------


async def stopped_or_retried(server: HostedServer, client: TelcoflowClient) -> list[WSSError]:
    """Run the client until it stops with an error (returned) or tries a third upgrade (a
    retry after the refused reconnection: nothing returned)."""
    outcome: list[WSSError] = []

    async def run() -> None:
        try:
            await client.run_forever()
        except WSSError as exc:
            outcome.append(exc)
        server.changed()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await server.wait_for(lambda: outcome or len(server.upgrades()) > 2, WAIT)
        tg.cancel_scope.cancel()
    return outcome


REFUSALS = [
    (401, "invalid api key", WSSAuthenticationError),
    (403, "connector disabled by its owner", WSSAuthenticationError),
    (426, "SDK version 1.0.0 is no longer accepted", WSSConnectionError),
]


@pytest.mark.parametrize(("status", "body", "error"), REFUSALS, ids=["401", "403", "426"])
async def test_refused_upgrade_raises_with_body(
    server: HostedServer, status: int, body: str, error: type[Exception]
) -> None:
    server.refuse_control = (status, body)
    with pytest.raises(error) as info:
        async with TelcoflowClient(make_config(server)):
            pass
    assert type(info.value) is error
    assert body in str(info.value)
    assert [r.status for r in server.upgrades()] == [status]


async def test_wrong_credentials_are_refused(server: HostedServer) -> None:
    config = TelcoflowClientConfig.sandbox(
        api_key="not-the-key", connector_uuid=CONNECTOR_UUID, base_url=server.base_url
    )
    with pytest.raises(WSSAuthenticationError) as info:
        async with TelcoflowClient(config):
            pass
    assert "invalid API key or connector" in str(info.value)
    assert "not-the-key" not in str(info.value)  # errors never carry a secret
    assert [r.status for r in server.upgrades()] == [401]


@pytest.mark.parametrize(("status", "body", "error"), REFUSALS, ids=["401", "403", "426"])
async def test_refused_reconnect_is_not_retried(
    server: HostedServer, status: int, body: str, error: type[Exception]
) -> None:
    async with TelcoflowClient(make_config(server)) as client:
        first = await server.control()
        server.refuse_control = (status, body)
        await first.drop()
        (stopped,) = await stopped_or_retried(server, client)
        assert type(stopped) is error
        assert body in str(stopped)
        assert [r.status for r in server.upgrades()] == [101, status]


async def test_setup_error_raises(server: HostedServer) -> None:
    server.setup_error = ("INVALID_SETUP", "audioMode 'stereo' is not supported")
    with pytest.raises(WSSConnectionError) as info:
        async with TelcoflowClient(make_config(server)):
            pass
    assert "INVALID_SETUP" in str(info.value)
    assert "stereo" in str(info.value)
    assert len(server.upgrades()) == 1


async def test_setup_error_on_reconnect_is_not_retried(server: HostedServer) -> None:
    async with TelcoflowClient(make_config(server)) as client:
        first = await server.control()
        server.setup_error = ("INVALID_SETUP", "audioMode 'stereo' is not supported")
        await first.drop()
        outcome = await stopped_or_retried(server, client)
        assert len(server.upgrades()) == 2, "the refused setup was retried"
        (stopped,) = outcome
        assert isinstance(stopped, WSSConnectionError)
        assert "INVALID_SETUP" in str(stopped)


# --- dialling ------------------------------------------------------------------------------------


async def test_dial_answered(server: HostedServer) -> None:
    async with TelcoflowClient(make_config(server)) as client:
        control = await server.control()
        call = await client.dial("+6590000003", ring_time_seconds=30)
        create, claim, ready = control.messages()[1:4]
        assert set(create) == {"type", "channel", "remoteAddress", "reqId"}
        assert create["type"] == "session.create"
        assert create["channel"] == "TELCO"
        assert create["remoteAddress"] == "+6590000003"
        assert is_uuid4(create["reqId"])
        session = server.sessions[call.session_id]
        assert claim == {"type": "session.open", "sessionId": session.id, "reqId": claim["reqId"]}
        assert is_uuid4(claim["reqId"])
        assert ready == {"type": "session.ready", "sessionId": session.id}
        assert call.direction == "MO"
        assert call.state.value == "ANSWERED"
        assert call.call_id == session.call_id
        assert call.caller_number == CONNECTOR_NUMBER
        assert call.callee_number == "+6590000003"
        media = await server.media(session)
        assert media.request.headers["authorization"] == f"Bearer {session.token}"
        await call.clear_send_audio_buffer()
        assert media.commands[-1]["command"] == "agent.interrupt"


@pytest.mark.parametrize("detail", ["CALL_UNANSWERED", "CALL_REJECTED"])
async def test_dial_not_answered(server: HostedServer, detail: str) -> None:
    server.dial_options = {"on_ready": "closed", "close_detail": detail}
    async with TelcoflowClient(make_config(server)) as client:
        with anyio.fail_after(WAIT), pytest.raises(WSSCallCommandError) as info:
            await client.dial("+6590000004", ring_time_seconds=20)
        assert info.value.error_code == detail
        (session,) = server.sessions.values()
        assert session.media is None
        assert client.calls == []


@pytest.mark.parametrize("code", ["CHANNEL_NOT_CONFIGURED", "QUOTA_EXCEEDED", "OUTBOUND_OVERFLOW"])
async def test_dial_refused(server: HostedServer, code: str) -> None:
    server.dial_error = code
    async with TelcoflowClient(make_config(server)) as client:
        control = await server.control()
        with anyio.fail_after(WAIT), pytest.raises(WSSCallCommandError) as info:
            await client.dial("+6590000005")
        assert info.value.error_code == code
        assert not control.messages("session.open")


# --- REST plane ----------------------------------------------------------------------------------


async def test_list_sessions_over_rest(server: HostedServer) -> None:
    async with serving(make_config(server)) as (client, inbox):
        session, _call, _media = await take_call(server, inbox)
        records = await client.list_sessions()
        (record,) = records
        assert record.id == session.id
        assert record.channel == "TELCO"
        assert record.initiator == "CONNECTOR"
        assert record.state == "OPEN"
        assert record.remote_address == session.remote_address
        assert record.local_address == CONNECTOR_NUMBER
        assert record.closed_at is None
        (request,) = [r for r in server.requests if not r.is_upgrade]
        assert request.method == "GET"
        assert request.target == "/public/v1/sessions?state=OPEN"
        assert request.headers["x-api-key"] == API_KEY
        assert request.headers["x-connector-uuid"] == CONNECTOR_UUID
        assert request.headers["x-sdk-version"] == "1.0.0"
