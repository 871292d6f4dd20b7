"""The Gemini Live stand-in itself: its sans-IO wire helpers, and its protocol over TLS driven
by this SDK's own WebSocket client, under asyncio and trio (the real google-genai client is
in test_gemini.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import anyio
import pytest

from telcoflow._net import (
    ConnectionClosed,
    HandshakeRejected,
    WebSocketConnection,
    connect_websocket,
)
from telcoflow.testing._engine import Answer, tone16
from telcoflow.testing.gemini_live import (
    GeminiLiveStandIn,
    camelize,
    decode_base64,
    mime_rate,
    parse_target,
    read_setup,
)

WAIT = 10.0
PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"


# --- sans-IO -------------------------------------------------------------------------------------


def test_camelize_normalises_keys_but_not_user_data() -> None:
    message = {
        "realtime_input": {"audio": {"mime_type": "audio/pcm;rate=8000", "data": "AA"}},
        "tool_response": {
            "function_responses": [{"id": "1", "will_continue": True, "response": {"a_b": 1}}]
        },
        "setup": {"tools": [{"function_declarations": [{"parameters_json_schema": {"x_y": 1}}]}]},
    }
    assert camelize(message) == {
        "realtimeInput": {"audio": {"mimeType": "audio/pcm;rate=8000", "data": "AA"}},
        "toolResponse": {
            "functionResponses": [{"id": "1", "willContinue": True, "response": {"a_b": 1}}]
        },
        "setup": {"tools": [{"functionDeclarations": [{"parametersJsonSchema": {"x_y": 1}}]}]},
    }
    assert camelize({"alreadyCamel": [{"turnComplete": True}]}) == {
        "alreadyCamel": [{"turnComplete": True}]
    }


@pytest.mark.parametrize(
    ("mime", "rate"),
    [
        ("audio/pcm;rate=16000", 16000),
        ("audio/pcm; rate=8000", 8000),
        ("audio/pcm;channels=1;RATE=24000", 24000),
        ("audio/pcm", 16000),
        (None, 16000),
        ("audio/pcm;rate=fast", 16000),
    ],
)
def test_mime_rate(mime: str | None, rate: int) -> None:
    assert mime_rate(mime) == rate


def test_parse_target() -> None:
    assert parse_target(PATH) == ("v1beta", "BidiGenerateContent", {})
    constrained = PATH.replace("v1beta", "v1alpha") + "Constrained?key=k1"
    assert parse_target(constrained) == ("v1alpha", "BidiGenerateContentConstrained", {"key": "k1"})
    assert parse_target(PATH.replace("v1beta", "v1")) is not None
    assert parse_target(PATH.replace("v1beta", "v2")) is None
    assert parse_target("/v1/agent/control") is None


def test_decode_base64_both_alphabets() -> None:
    data = bytes(range(256))
    assert decode_base64(base64.b64encode(data).decode()) == data
    assert decode_base64(base64.urlsafe_b64encode(data).decode().rstrip("=")) == data
    with pytest.raises(ValueError, match=r"base64|Invalid|Non-base64"):
        decode_base64("not base64!")


def test_read_setup() -> None:
    setup = read_setup(
        {
            "model": "models/m",
            "generationConfig": {
                "responseModalities": ["AUDIO"],
                "speechConfig": {"voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Puck"}}},
            },
            "systemInstruction": {"parts": [{"text": "Be "}, {"text": "brief."}]},
            "tools": [{"functionDeclarations": [{"name": "a"}, {"name": "b"}]}],
            "outputAudioTranscription": {},
            "sessionResumption": {"handle": "h1"},
            "contextWindowCompression": {"slidingWindow": {}},
        }
    )
    assert (setup.model, setup.modalities, setup.voice) == ("models/m", ("AUDIO",), "Puck")
    assert setup.system_instruction == "Be brief."
    assert setup.tools == ("a", "b")
    assert (setup.input_transcription, setup.output_transcription) == (False, True)
    assert (setup.resumption, setup.resumption_handle) == (True, "h1")
    assert setup.context_window_compression == {"slidingWindow": {}}
    bare = read_setup({"model": "models/m"})
    assert (bare.voice, bare.system_instruction, bare.resumption) == (None, None, False)


# --- over the wire (both backends) ---------------------------------------------------------------


async def _connect(
    standin: GeminiLiveStandIn, *, key: str | None = None, query: bool = False, path: str = PATH
) -> WebSocketConnection:
    key = key or standin.api_key
    url = f"wss://127.0.0.1:{standin.port}{path}"
    headers: list[tuple[str, str]] = []
    if query:
        url += f"?key={key}"
    else:
        headers.append(("x-goog-api-key", key))
    return await connect_websocket(url, headers=headers, ssl_context=standin.client_ssl_context())


async def _receive(conn: WebSocketConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await conn.receive())
    return message


async def _until(conn: WebSocketConnection, key: str, into: list[dict[str, Any]]) -> dict[str, Any]:
    """Messages until one whose serverContent (or top level) has ``key``."""
    while True:
        message = await _receive(conn)
        into.append(message)
        if key in message or key in message.get("serverContent", {}):
            return message


def _audio(pcm: bytes, rate: int = 16000) -> str:
    blob = {"data": base64.b64encode(pcm).decode(), "mime_type": f"audio/pcm;rate={rate}"}
    return json.dumps({"realtime_input": {"audio": blob}})


@pytest.mark.anyio
async def test_a_turn_over_the_wire() -> None:
    script = (Answer(660.0, 0.2, "Hi."),)
    async with GeminiLiveStandIn(script=script, pace=4.0) as standin:
        with anyio.fail_after(WAIT):
            conn = await _connect(standin, query=True)
            await conn.send(json.dumps({"setup": {"model": "models/x", "session_resumption": {}}}))
            hello = await _receive(conn)
            assert hello["setupComplete"]["sessionId"].startswith("standin-session-")
            await conn.send(_audio(tone16(440.0, 0.2, 8000), rate=8000))
            await conn.send(_audio(bytes(2 * 4000), rate=8000))  # 0.5 s of quiet: turn over
            seen: list[dict[str, Any]] = []
            await _until(conn, "sessionResumptionUpdate", seen)
            await conn.aclose()
            await standin.wait_for(lambda: standin.connections[0].closed)
    kinds = [next(iter(m.get("serverContent", m))) for m in seen]
    chunks = [m for m in seen if "modelTurn" in m.get("serverContent", {})]
    assert kinds[0] == "inputTranscription"
    assert kinds[-4:] == [
        "generationComplete",
        "turnComplete",
        "usageMetadata",
        "sessionResumptionUpdate",
    ]
    assert len(chunks) == 5  # 200 ms in 40 ms chunks
    part = chunks[0]["serverContent"]["modelTurn"]["parts"][0]["inlineData"]
    assert part["mimeType"] == "audio/pcm;rate=24000"
    pcm = b"".join(
        base64.b64decode(c["serverContent"]["modelTurn"]["parts"][0]["inlineData"]["data"])
        for c in chunks
    )
    assert pcm == tone16(660.0, 0.2, 24000)
    record = standin.connections[0]
    assert record.key_source == "query"
    assert record.audio_rates == [8000, 8000]
    assert seen[-1]["sessionResumptionUpdate"]["newHandle"] == record.handles_issued[0]


@pytest.mark.anyio
async def test_turn_complete_waits_for_the_playback_estimate() -> None:
    script = (Answer(660.0, 0.4, "Hi."),)
    async with GeminiLiveStandIn(script=script, pace=4.0) as standin:
        with anyio.fail_after(WAIT):
            conn = await _connect(standin)
            await conn.send(json.dumps({"setup": {"model": "models/x"}}))
            await _receive(conn)
            await conn.send(json.dumps({"realtime_input": {"text": "hello"}}))
            seen: list[dict[str, Any]] = []
            await _until(conn, "generationComplete", seen)
            generated = anyio.current_time()
            await _until(conn, "turnComplete", seen)
            waited = anyio.current_time() - generated
            await conn.aclose()
    # 0.4 s of audio sent at 4x (0.1 s): turnComplete about 0.3 s after generationComplete.
    assert 0.2 <= waited <= 1.0
    assert standin.connections[0].texts == ["hello"]
    assert "sessionResumptionUpdate" not in standin.connections[0].sent  # not asked for


@pytest.mark.anyio
async def test_unknown_path_is_refused() -> None:
    async with GeminiLiveStandIn() as standin:
        with anyio.fail_after(WAIT), pytest.raises(HandshakeRejected) as info:
            await _connect(standin, path="/ws/other")
    assert info.value.status_code == 404


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("key", "setup"), [("wrong", {}), (None, {"session_resumption": {"handle": "nope"}})]
)
async def test_bad_key_or_handle_is_closed_with_1008(
    key: str | None, setup: dict[str, Any]
) -> None:
    async with GeminiLiveStandIn() as standin:
        with anyio.fail_after(WAIT):
            conn = await _connect(standin, key=key)
            await conn.send(json.dumps({"setup": setup}))
            with pytest.raises(ConnectionClosed) as info:
                await conn.receive()
    assert info.value.code == 1008


@pytest.mark.anyio
async def test_unknown_client_messages_are_recorded() -> None:
    async with GeminiLiveStandIn() as standin:
        with anyio.fail_after(WAIT):
            conn = await _connect(standin)
            await conn.send(json.dumps({"setup": {}}))
            await _receive(conn)
            await conn.send("not json")
            await conn.send(json.dumps({"future_thing": {"a_b": 1}}))
            await conn.send(json.dumps({"realtime_input": {"activity_start": {}}}))
            await conn.send(json.dumps({"realtime_input": {"activityEnd": {}}}))
            record = standin.connections[0]
            await standin.wait_for(lambda: len(record.activity) == 2)
            await conn.aclose()
    assert record.unknown == [{"raw": "not json"}, {"futureThing": {"aB": 1}}]
    assert record.activity == ["activityStart", "activityEnd"]


@pytest.mark.anyio
async def test_tool_call_then_barge_in_over_the_wire() -> None:
    script = (Answer(660.0, 1.0, "Done.", tool=("book", {"party_size": 2})),)
    async with GeminiLiveStandIn(script=script) as standin:
        with anyio.fail_after(WAIT):
            conn = await _connect(standin)
            await conn.send(json.dumps({"setup": {}}))
            await _receive(conn)
            await conn.send(json.dumps({"client_content": {"turns": [], "turn_complete": True}}))
            seen: list[dict[str, Any]] = []
            call = (await _until(conn, "toolCall", seen))["toolCall"]["functionCalls"][0]
            assert (call["name"], call["args"]) == ("book", {"party_size": 2})
            answer = {"id": call["id"], "name": "book", "response": {"ok_now": True}}
            unknown = {"id": "nope", "name": "book", "response": {}}
            body = {"tool_response": {"function_responses": [answer, unknown]}}
            await conn.send(json.dumps(body))
            await _until(conn, "modelTurn", seen)
            await conn.send(_audio(tone16(440.0, 0.04, 16000)))  # the caller talks over it
            await _until(conn, "interrupted", seen)
            done = await _receive(conn)
            await conn.aclose()
    assert done == {"serverContent": {"turnComplete": True}}
    record = standin.connections[0]
    assert record.unmatched_tool_ids == ["nope"]
    assert record.tool_responses[0]["functionResponses"][0]["response"] == {"ok_now": True}
    assert standin.conversation(record).interruptions == 1
    assert "generationComplete" not in record.sent
