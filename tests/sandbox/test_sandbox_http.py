"""The sandbox's HTTP API (SANDBOX.md) over real HTTP with httpx, alongside an SDK client, and an
interoperability check of its WebSocket endpoints with an independent client (trio-websocket)."""

from __future__ import annotations

import base64
import io
import json
import wave
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest

from telcoflow import (
    ActiveCall,
    CallState,
    TelcoflowClient,
    TelcoflowClientConfig,
    events,
)
from telcoflow.audio import tone_level
from telcoflow.sandbox import Sandbox

from ..helpers import WAIT, CallInbox

pytestmark = pytest.mark.anyio

MakeConfig = Callable[..., TelcoflowClientConfig]

#: The fields SANDBOX.md documents for a call, and for its stats.
CALL_FIELDS = {
    "call_id",
    "session_id",
    "direction",
    "bound_to",
    "from",
    "to",
    "state",
    "agent_mode",
    "ended_reason",
    "commands",
    "stats",
}
STATS_FIELDS = {"agent_bytes_received", "underrun_ms", "excess_bytes", "echo_latency_ms"}


@pytest.fixture
async def http(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.http_url, timeout=WAIT) as client:
        yield client


async def _echo(call: ActiveCall, chunks: int) -> list[bytes]:
    """Echo ``chunks`` chunks of what the agent hears back to the call; returns them."""
    heard: list[bytes] = []
    with anyio.fail_after(WAIT):
        async for chunk in call.audio_stream():
            await call.send_audio(chunk)
            heard.append(chunk)
            if len(heard) == chunks:
                break
    return heard


async def _post_call(http: httpx.AsyncClient, **body: Any) -> str:
    response = await http.post("/sandbox/calls", json=body)
    assert response.status_code == 201, response.text
    call_id = response.json()["call_id"]
    assert isinstance(call_id, str)
    return call_id


# --- health and creating calls --------------------------------------------------------------------


async def test_health_reports_ok_and_the_connectors(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    response = await http.get("/sandbox/health")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    health = response.json()
    assert health["status"] == "ok"
    assert health["connectors"] == [
        {
            "api_key": sandbox.api_key,
            "connector_uuid": sandbox.connector_uuid,
            "number": sandbox.number,
        }
    ]
    assert health["calls"] == {"live": 0, "kept": 0}
    assert health["media"]["skipped_ms"] == 0
    assert health["connections"]["open"] >= 1  # this request's


async def test_post_call_places_a_ringing_call(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/sandbox/calls",
        json={
            "from": "+6511110000",
            "to": "+6522220000",
            "caller": {"tone_hz": 300},
            "caller_hangup_after_s": None,
            "callee": {"answer": False},
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"call_id", "state"}
    assert body["state"] == "PENDING"
    sim = sandbox.get_call(body["call_id"])
    assert sim is not None
    assert (sim.spec.from_number, sim.spec.to_number) == ("+6511110000", "+6522220000")
    assert sim.spec.caller.tone_hz == 300
    assert sim.spec.callee.answer is False
    assert sim.state is CallState.PENDING


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"caller": {"tone_hz": 0}}, "caller.tone_hz"),
        ({"caller": {"tone_hz": "loud"}}, "caller.tone_hz"),
        ({"caller": {"tone_hz": 50_000}}, "caller.tone_hz"),
        ({"caller": {"wav_base64": "this is not base64!"}}, "caller.wav_base64"),
        (
            {"caller": {"wav_base64": base64.b64encode(b"RIFF but not a wave").decode()}},
            "caller.wav_base64",
        ),
        ({"caller": {"wav_base64": 12}}, "caller.wav_base64"),
        ({"caller": "a tone please"}, "caller"),
        ({"caller_hangup_after_s": -1}, "caller_hangup_after_s"),
        ({"caller_hangup_after_s": "soon"}, "caller_hangup_after_s"),
        ({"callee": {"answer_after_s": -0.5}}, "callee.answer_after_s"),
        ({"callee": {"answer": "yes"}}, "callee.answer"),
        ({"from": 6590000001}, "from"),
        ({"to": ""}, "to"),
        ({"connector_uuid": "no-such-connector"}, "connector_uuid"),
        ([{"from": "+6590000001"}], "body"),
        ("a call, please", "body"),
        (b"{not json", "JSON"),
    ],
    ids=lambda v: v if isinstance(v, str) and " " not in v else None,
)
async def test_post_call_rejects_bad_bodies_naming_the_field(
    sandbox: Sandbox, http: httpx.AsyncClient, body: Any, field: str
) -> None:
    if isinstance(body, bytes):
        response = await http.post(
            "/sandbox/calls", content=body, headers={"content-type": "application/json"}
        )
    else:
        response = await http.post("/sandbox/calls", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert isinstance(error, str)
    assert field in error
    assert sandbox.calls == []


# --- what a call shows ----------------------------------------------------------------------------


async def test_get_call_shows_every_documented_field_as_the_call_goes(
    sandbox: Sandbox, http: httpx.AsyncClient, client: TelcoflowClient, inbox: CallInbox
) -> None:
    call_id = await _post_call(
        http, **{"from": "+6533330000", "to": "+6544440000", "callee": {"answer_after_s": 0}}
    )
    call = await inbox.next()
    # The id the API gave is the id the SDK sees; the numbers are the offer's.
    assert call.call_id == call_id
    assert (call.caller_number, call.callee_number) == ("+6533330000", "+6544440000")

    ringing = (await http.get(f"/sandbox/calls/{call_id}")).json()
    assert set(ringing) >= CALL_FIELDS
    assert set(ringing["stats"]) >= STATS_FIELDS
    assert ringing["call_id"] == call_id
    assert (ringing["from"], ringing["to"]) == ("+6533330000", "+6544440000")
    assert ringing["state"] == "PENDING"
    assert ringing["agent_mode"] is None
    assert ringing["ended_reason"] is None
    assert ringing["commands"] == []
    assert ringing["stats"]["agent_bytes_received"] == 0
    assert ringing["stats"]["excess_bytes"] == 0
    assert ringing["stats"]["echo_latency_ms"] is None

    await call.answer()
    await _echo(call, 25)
    await call.connect(ring_time_seconds=5)
    live = (await http.get(f"/sandbox/calls/{call_id}")).json()
    assert live["state"] == "CONNECTED"
    assert live["agent_mode"] == "barge"
    assert live["ended_reason"] is None
    answer_at, connect_at = (c.pop("at_s") for c in live["commands"])
    assert 0 <= answer_at <= connect_at  # where each arrived on the recordings' timeline
    assert live["commands"] == [
        {"command": "call.answer", "success": True, "error_code": None},
        {"command": "call.connect", "success": True, "error_code": None},
    ]
    stats = live["stats"]
    assert stats["agent_bytes_received"] > 0
    assert stats["excess_bytes"] == 0  # the SDK never sends beyond its credit
    assert isinstance(stats["underrun_ms"], int)
    assert set(stats["echo_latency_ms"]) == {"p50", "p99"}
    assert 0 <= stats["echo_latency_ms"]["p50"] <= stats["echo_latency_ms"]["p99"]

    await call.spy()
    assert (await http.get(f"/sandbox/calls/{call_id}")).json()["agent_mode"] == "spy"


async def test_list_calls_shows_every_call(sandbox: Sandbox, http: httpx.AsyncClient) -> None:
    assert (await http.get("/sandbox/calls")).json() == {"calls": []}
    ids = [await _post_call(http), await _post_call(http, **{"from": "+6555550000"})]
    response = await http.get("/sandbox/calls")
    assert response.status_code == 200
    listed = response.json()["calls"]
    assert [c["call_id"] for c in listed] == ids
    for entry in listed:
        assert set(entry) >= CALL_FIELDS
        single = (await http.get(f"/sandbox/calls/{entry['call_id']}")).json()
        assert entry == single  # nobody is connected: the calls do not change meanwhile
    assert listed[1]["from"] == "+6555550000"


# --- hanging up -----------------------------------------------------------------------------------


async def test_delete_hangs_up_the_caller(
    sandbox: Sandbox, http: httpx.AsyncClient, client: TelcoflowClient, inbox: CallInbox
) -> None:
    call_id = await _post_call(http)
    call = await inbox.next()
    reasons: list[str] = []
    done = anyio.Event()
    call.on(events.CALL_TERMINATED, reasons.append)
    call.on(events.CALL_TERMINATED, done.set)
    await call.answer()

    response = await http.delete(f"/sandbox/calls/{call_id}")
    assert response.status_code == 200
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "caller_hangup"
        await done.wait()
    assert reasons == ["caller_hangup"]
    assert call.state is CallState.DISCONNECTED
    shown = (await http.get(f"/sandbox/calls/{call_id}")).json()
    assert (shown["state"], shown["ended_reason"]) == ("DISCONNECTED", "caller_hangup")


async def test_delete_of_a_ringing_call_withdraws_the_offer(
    sandbox: Sandbox, http: httpx.AsyncClient, client: TelcoflowClient, inbox: CallInbox
) -> None:
    call_id = await _post_call(http)
    call = await inbox.next()  # offered, media open, not answered
    assert (await http.delete(f"/sandbox/calls/{call_id}")).status_code == 200
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "caller_hangup"
    assert client.get_call(call_id) is None


async def test_callee_hangup_ends_a_connected_call(
    sandbox: Sandbox, http: httpx.AsyncClient, client: TelcoflowClient, inbox: CallInbox
) -> None:
    call_id = await _post_call(http, callee={"answer_after_s": 0})
    call = await inbox.next()
    await call.answer()
    await call.connect(ring_time_seconds=5)
    assert call.state is CallState.CONNECTED

    response = await http.post(f"/sandbox/calls/{call_id}/callee/hangup")
    assert response.status_code == 200
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "callee_hangup"
    shown = (await http.get(f"/sandbox/calls/{call_id}")).json()
    assert (shown["state"], shown["ended_reason"]) == ("DISCONNECTED", "callee_hangup")


# --- recordings -----------------------------------------------------------------------------------


def _parse_wav(data: bytes) -> tuple[int, int, int, bytes]:
    with wave.open(io.BytesIO(data), "rb") as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.readframes(w.getnframes())


async def test_recordings_are_wavs_at_the_connection_rate(
    sandbox: Sandbox, http: httpx.AsyncClient, make_config: MakeConfig
) -> None:
    async with TelcoflowClient(make_config(sample_rate=16000)) as client:
        inbox = CallInbox(client)
        try:
            call_id = await _post_call(http, caller={"tone_hz": 440})
            call = await inbox.next()
            await call.answer()
            heard = await _echo(call, 25)
            assert {len(chunk) for chunk in heard} == {640}  # 20 ms at 16 kHz
            assert (await http.delete(f"/sandbox/calls/{call_id}")).status_code == 200
            with anyio.fail_after(WAIT):
                await call.wait_terminated()
        finally:
            inbox.close()

    recordings = {}
    for party in ("caller", "callee", "agent"):
        response = await http.get(f"/sandbox/calls/{call_id}/recording/{party}.wav")
        assert response.status_code == 200
        channels, width, rate, pcm = _parse_wav(response.content)
        assert (channels, width, rate) == (1, 2, 16000), party
        assert len(pcm) > 0, party
        assert len(pcm) % 640 == 0, party  # whole 20 ms ticks
        recordings[party] = pcm
    # Same timeline for every party, silence included.
    assert len(recordings["caller"]) == len(recordings["callee"]) == len(recordings["agent"])
    assert len(recordings["agent"]) >= 25 * 640
    assert tone_level(recordings["agent"], 16000, 440) > 0.02  # the agent heard the caller
    assert tone_level(recordings["caller"], 16000, 440) > 0.02  # who heard the echo
    assert not any(recordings["callee"])  # never connected: the callee heard silence


async def test_unknown_call_is_404(http: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/sandbox/calls/call-nope"),
        ("DELETE", "/sandbox/calls/call-nope"),
        ("POST", "/sandbox/calls/call-nope/callee/hangup"),
        ("GET", "/sandbox/calls/call-nope/recording/caller.wav"),
    ]:
        response = await http.request(method, path)
        assert response.status_code == 404, (method, path)
        assert "call-nope" in response.json()["error"], (method, path)


async def test_unknown_party_is_404(http: httpx.AsyncClient) -> None:
    call_id = await _post_call(http)
    response = await http.get(f"/sandbox/calls/{call_id}/recording/bystander.wav")
    assert response.status_code == 404
    assert "bystander" in response.json()["error"]


# --- interoperability: an independent WebSocket client --------------------------------------------


def _skip_unless_trio(anyio_backend: str) -> None:
    if anyio_backend != "trio":
        pytest.skip("trio-websocket runs under trio only")


def _control_headers(sandbox: Sandbox) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-api-key", sandbox.api_key.encode()),
        (b"x-connector-uuid", sandbox.connector_uuid.encode()),
        (b"x-sdk-version", b"1.0.0"),
    ]


async def _json_of_type(ws: Any, kind: str) -> dict[str, Any]:
    """The next text frame of type ``kind`` (skipping others)."""
    while True:
        message = await ws.get_message()
        assert isinstance(message, str)
        frame: dict[str, Any] = json.loads(message)
        if frame["type"] == kind:
            return frame


async def test_trio_websocket_speaks_the_control_and_media_planes(
    anyio_backend: str, sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    _skip_unless_trio(anyio_backend)
    from trio_websocket import open_websocket_url

    with anyio.fail_after(WAIT):
        async with open_websocket_url(
            f"{sandbox.base_url}/v1/agent/session-manager", extra_headers=_control_headers(sandbox)
        ) as control:
            setup = {"type": "setup", "data": {"sampleRate": 16000, "audioMode": "mixed"}}
            await control.send_message(json.dumps(setup))
            done = json.loads(await control.get_message())
            assert done["type"] == "setup.done"
            assert isinstance(done["smWsId"], str)
            [session] = sandbox.control_sessions()
            assert session.connection_id == done["smWsId"]
            assert session.sample_rate == 16000

            call_id = await _post_call(http, **{"from": "+6566660000"})
            note = json.loads(await control.get_message())
            assert note["type"] == "session.notify"
            assert (note["channel"], note["activity"]) == ("TELCO", "NEW_INCOMING_CALL")
            assert (note["remoteAddress"], note["localAddress"]) == ("+6566660000", "+6590000002")
            assert isinstance(note["createdAt"], int)
            sid = note["sessionId"]

            await control.send_message(
                json.dumps({"type": "session.open", "sessionId": sid, "reqId": "r1"})
            )
            response = json.loads(await control.get_message())
            assert response == {
                "type": "response",
                "reqId": "r1",
                "ok": True,
                "content": {
                    "session": {
                        "id": sid,
                        "channel": "TELCO",
                        "remoteAddress": "+6566660000",
                        "localAddress": "+6590000002",
                        "openedAt": response["content"]["session"]["openedAt"],
                    }
                },
                "errorCode": None,
                "errorContent": None,
            }
            await control.send_message(json.dumps({"type": "session.ready", "sessionId": sid}))
            call_in = json.loads(await control.get_message())
            assert call_in["type"] == "call.in"
            assert (call_in["sessionId"], call_in["callId"]) == (sid, call_id)
            assert (call_in["from"], call_in["to"]) == ("+6566660000", "+6590000002")
            assert call_in["orgUuid"]

            bearer = [(b"authorization", f"Bearer {call_in['token']}".encode())]
            async with open_websocket_url(call_in["url"], extra_headers=bearer) as media:
                command = {
                    "type": "command",
                    "data": {"command_id": "c1", "command": "call.answer", "timeout_ms": 5000},
                }
                await media.send_message(json.dumps(command))
                response = None
                while response is None:
                    message = await media.get_message()
                    assert isinstance(message, str)  # nothing flows while PENDING
                    frame = json.loads(message)
                    if frame["type"] == "command_response":
                        response = frame["data"]
                assert response["command_id"] == "c1"
                assert response["success"] is True
                while isinstance(message := await media.get_message(), str):
                    pass
                assert message[0] == 0  # channel 0: what the agent hears
                assert len(message) == 1 + 640  # 20 ms of PCM16 at 16 kHz
                await media.send_message(
                    json.dumps(
                        {
                            "type": "command",
                            "data": {
                                "command_id": "c2",
                                "command": "call.close",
                                "timeout_ms": 5000,
                            },
                        }
                    )
                )
                closed = await _json_of_type(control, "session.closed")
                assert closed == {
                    "type": "session.closed",
                    "sessionId": sid,
                    "reason": "CALL_TERMINATED",
                }
    shown = (await http.get(f"/sandbox/calls/{call_id}")).json()
    assert [c["command"] for c in shown["commands"]] == ["call.answer", "call.close"]
    assert (shown["session_id"], shown["direction"]) == (sid, "MT")


async def test_trio_websocket_hears_session_closed_for_an_unclaimed_call(
    anyio_backend: str, sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    _skip_unless_trio(anyio_backend)
    from trio_websocket import open_websocket_url

    with anyio.fail_after(WAIT):
        async with open_websocket_url(
            f"{sandbox.base_url}/v1/agent/session-manager", extra_headers=_control_headers(sandbox)
        ) as control:
            setup = {"type": "setup", "data": {"sampleRate": 24000, "audioMode": "mixed"}}
            await control.send_message(json.dumps(setup))
            assert json.loads(await control.get_message())["type"] == "setup.done"
            call_id = await _post_call(http)
            note = json.loads(await control.get_message())
            assert note["type"] == "session.notify"
            # The caller hangs up before anyone claims the call.
            assert (await http.delete(f"/sandbox/calls/{call_id}")).status_code == 200
            ended = json.loads(await control.get_message())
            assert ended == {
                "type": "session.closed",
                "sessionId": note["sessionId"],
                "reason": "CALL_TERMINATED",
            }


async def _close_rejected_socket(rejected: BaseException) -> None:
    """trio-websocket 0.12.2 leaves the socket of a rejected handshake open (its reader task raises
    ``ConnectionRejected`` without closing the stream); close it so no ResourceWarning follows."""
    from trio_websocket import WebSocketConnection

    tb = rejected.__traceback__
    while tb is not None:
        connection = tb.tb_frame.f_locals.get("self")
        if isinstance(connection, WebSocketConnection):
            await connection._stream.aclose()
            return
        tb = tb.tb_next


async def test_trio_websocket_with_a_bad_api_key_gets_http_401(
    anyio_backend: str, sandbox: Sandbox
) -> None:
    _skip_unless_trio(anyio_backend)
    from trio_websocket import ConnectionRejected, open_websocket_url

    headers = [
        (b"x-api-key", b"not-the-key"),
        (b"x-connector-uuid", sandbox.connector_uuid.encode()),
    ]
    with anyio.fail_after(WAIT), pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(
            f"{sandbox.base_url}/v1/agent/session-manager", extra_headers=headers
        ):
            pytest.fail("a bad API key was accepted")
    await _close_rejected_socket(info.value)
    assert info.value.status_code == 401
    assert info.value.body is not None
    assert b"credentials" in info.value.body
    assert sandbox.control_sessions() == []


async def test_upgrade_with_a_bad_api_key_is_answered_http_401(
    sandbox: Sandbox, http: httpx.AsyncClient
) -> None:
    """The refusal is a plain HTTP response: any HTTP client sees it (both backends)."""
    response = await http.get(
        "/v1/agent/session-manager",
        headers={
            "connection": "Upgrade",
            "upgrade": "websocket",
            "sec-websocket-version": "13",
            "sec-websocket-key": base64.b64encode(b"0123456789abcdef").decode(),
            "x-api-key": "not-the-key",
            "x-connector-uuid": sandbox.connector_uuid,
        },
    )
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/plain")
    assert "not-the-key" not in response.text
    assert sandbox.control_sessions() == []
