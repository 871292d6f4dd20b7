"""The OpenAI Realtime stand-in on its own: its pure pieces, and its wire driven by this SDK's
own WebSocket client (so on asyncio and trio). Every event it sends is validated against the
``openai`` library's own event models, so the real client parses all of it."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from telcoflow._net import (
    ConnectionClosed,
    HandshakeRejected,
    WebSocketConnection,
    connect_websocket,
)
from telcoflow.testing._engine import Answer, Response, tone16
from telcoflow.testing.openai_realtime import (
    OpenAIRealtimeStandIn,
    default_session,
    merge_session,
    session_problem,
    truncate_problem,
)

from ..helpers import WAIT

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)


# --- pure pieces --------------------------------------------------------------------------------


def test_merge_session_merges_objects_and_replaces_the_rest() -> None:
    base = default_session("gpt-realtime")
    merged = merge_session(
        base,
        {
            "instructions": "Be brief.",
            "tools": [{"type": "function", "name": "f"}],
            "audio": {"input": {"turn_detection": None}, "output": {"voice": "marin"}},
        },
    )
    assert merged["instructions"] == "Be brief."
    assert merged["tools"] == [{"type": "function", "name": "f"}]
    assert merged["audio"]["input"]["turn_detection"] is None
    assert merged["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert merged["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "marin",
        "speed": 1.0,
    }
    assert base["audio"]["input"]["turn_detection"]["type"] == "server_vad"  # not mutated


def test_the_default_session_is_what_the_library_parses() -> None:
    event = SERVER_EVENT.validate_python(
        {"type": "session.created", "event_id": "e", "session": default_session("m")}
    )
    assert event.session.audio.input.turn_detection.interrupt_response is True


def test_session_problems() -> None:
    good = default_session("m")
    assert session_problem(good) is None
    wrong_rate = merge_session(good, {"audio": {"input": {"format": {"rate": 16000}}}})
    assert session_problem(wrong_rate) == "Invalid value: 16000. Supported values are: 24000."
    wrong_kind = merge_session(good, {"audio": {"output": {"format": {"type": "audio/opus"}}}})
    assert "'audio/opus'" in (session_problem(wrong_kind) or "")
    pcmu = merge_session(good, {"audio": {"input": {"format": {"type": "audio/pcmu"}}}})
    assert session_problem(pcmu) is None


def test_truncate_problem_is_the_real_servers_message() -> None:
    pcm = tone16(440, 1.0, 24000)
    r = Response("item_1", Answer(), 24000, [pcm[i : i + 1920] for i in range(0, len(pcm), 1920)])
    for _ in range(10):
        r.next_chunk(0.0)
    assert r.sent_ms == 400
    assert truncate_problem(r, "item_1", 0, 400) is None
    assert truncate_problem(r, "item_1", 0, 401) == (
        "Audio content of 400ms is already shorter than 401ms"
    )
    assert truncate_problem(None, "item_9", 0, 1) == "Item with item_id 'item_9' not found"
    assert "content_index" in (truncate_problem(r, "item_1", 1, 1) or "")


# --- over the wire ------------------------------------------------------------------------------


class Peer:
    """A raw Realtime client: sends events, reads them validated by the library's models."""

    def __init__(self, conn: WebSocketConnection) -> None:
        self.conn = conn
        self.seen: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.conn.send(json.dumps(event))

    async def next(self) -> dict[str, Any]:
        with anyio.fail_after(WAIT):
            event: dict[str, Any] = json.loads(await self.conn.receive())
        SERVER_EVENT.validate_python(event)  # the real client's models accept it whole
        self.seen.append(event)
        return event

    async def until(self, kind: str) -> list[dict[str, Any]]:
        """Events up to and including the next of ``kind``."""
        out = []
        while True:
            event = await self.next()
            out.append(event)
            if event["type"] == kind:
                return out

    async def speak(self, seconds: float = 0.3, rate: int = 24000) -> None:
        pcm = tone16(440, seconds, rate) + bytes(2 * int(0.4 * rate))
        step = 2 * rate // 50
        for i in range(0, len(pcm), step):
            chunk = base64.b64encode(pcm[i : i + step]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": chunk})


@pytest.fixture
async def stand_in() -> AsyncIterator[OpenAIRealtimeStandIn]:
    async with OpenAIRealtimeStandIn(pace=8.0) as s:
        yield s


async def open_peer(s: OpenAIRealtimeStandIn, key: str | None = None) -> Peer:
    conn = await connect_websocket(
        f"{s.websocket_base_url}/realtime?model=gpt-realtime",
        headers=[("Authorization", f"Bearer {key or s.api_key}")],
    )
    peer = Peer(conn)
    assert (await peer.next())["type"] == "session.created"
    return peer


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events if e["type"] != "response.output_audio.delta"]


@pytest.mark.anyio
async def test_a_turn_on_the_wire(stand_in: OpenAIRealtimeStandIn) -> None:
    peer = await open_peer(stand_in)
    update = {"audio": {"input": {"transcription": {"model": "gpt-transcribe"}}}}
    await peer.send({"type": "session.update", "session": update})
    updated = await peer.next()
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["transcription"] == {"model": "gpt-transcribe"}
    await peer.speak()
    events = await peer.until("response.done")
    assert types(events) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "conversation.item.done",
        "response.content_part.added",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.delta",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert audio == tone16(660.0, 1.0, 24000)  # the script's first answer, whole
    assert events[-1]["response"]["status"] == "completed"
    session = stand_in.sessions[0]
    assert session.updates == [update]
    assert len(session.engine.heard[24000]) == 2 * int(0.7 * 24000)
    assert session.responses[0].status == "completed"
    await peer.conn.aclose()
    with anyio.fail_after(WAIT):
        await stand_in.wait_for(lambda: session.closed)
    assert session.close_code == 1000
    assert session.client_closed_at is not None


@pytest.mark.anyio
async def test_bad_key_and_path_are_refused(stand_in: OpenAIRealtimeStandIn) -> None:
    with pytest.raises(HandshakeRejected) as info:
        await open_peer(stand_in, key="sk-wrong")
    assert info.value.status_code == 401
    assert "invalid_api_key" in info.value.body
    with pytest.raises(HandshakeRejected) as info:
        await connect_websocket(f"{stand_in.websocket_base_url}/other")
    assert info.value.status_code == 404
    assert stand_in.rejected == [(401, "/v1/realtime"), (404, "/v1/other")]
    assert stand_in.sessions == []


@pytest.mark.anyio
async def test_errors_leave_the_connection_usable(stand_in: OpenAIRealtimeStandIn) -> None:
    peer = await open_peer(stand_in)
    await peer.send({"type": "no.such.event"})
    error = (await peer.next())["error"]
    assert error["code"] == "invalid_value"
    await peer.send({"type": "response.cancel"})
    error = (await peer.next())["error"]
    assert error["message"] == "Cancellation failed: no active response found"
    await stand_in.sessions[0].send_error("boom")
    assert (await peer.next())["error"]["message"] == "boom"
    await peer.send({"type": "response.create"})
    await peer.send({"type": "response.create"})
    events = await peer.until("error")
    assert events[-1]["error"]["code"] == "conversation_already_has_active_response"
    await peer.until("response.done")
    assert [e["code"] for e in stand_in.sessions[0].errors_sent] == [
        "invalid_value",
        "response_cancel_not_active",
        "server_error",
        "conversation_already_has_active_response",
    ]
    await peer.conn.aclose()


@pytest.mark.anyio
async def test_cancel_truncate_delete(stand_in: OpenAIRealtimeStandIn) -> None:
    peer = await open_peer(stand_in)
    await peer.send({"type": "response.create", "response": {"instructions": "Greet."}})
    first = await peer.until("response.output_audio.delta")
    item = first[-1]["item_id"]
    await peer.send({"type": "response.cancel"})
    done = (await peer.until("response.done"))[-1]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "client_cancelled"
    session = stand_in.sessions[0]
    generated = session.engine.current.sent_ms  # type: ignore[union-attr]
    await peer.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item,
            "content_index": 0,
            "audio_end_ms": generated + 1,
        }
    )
    assert (await peer.next())["error"]["message"] == (
        f"Audio content of {generated}ms is already shorter than {generated + 1}ms"
    )
    await peer.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item,
            "content_index": 0,
            "audio_end_ms": 40,
        }
    )
    assert (await peer.next())["type"] == "conversation.item.truncated"
    await peer.send({"type": "conversation.item.delete", "item_id": item})
    assert (await peer.next())["type"] == "conversation.item.deleted"
    await peer.send({"type": "conversation.item.delete", "item_id": item})
    assert (await peer.next())["error"]["code"] == "item_not_found"
    assert session.cancels == 1
    assert session.response_creates == [{"instructions": "Greet."}]
    assert session.responses[0].instructions == "Greet."
    assert [(t.item_id, t.audio_end_ms, t.generated_ms) for t in session.truncations] == [
        (item, 40, generated)
    ]
    assert session.deletes == [item]
    await peer.conn.aclose()


@pytest.mark.anyio
async def test_barge_in_cancels_with_late_deltas() -> None:
    script = (Answer(550.0, 4.0, "A long answer indeed."), Answer(660.0, 0.2, "Short."))
    async with OpenAIRealtimeStandIn(script, pace=2.0, late_deltas=2) as s:
        peer = await open_peer(s)
        await peer.speak()
        await peer.until("response.output_audio.delta")
        await peer.speak()
        before = await peer.until("input_audio_buffer.speech_started")
        after = await peer.until("response.done")
        assert [e["type"] for e in after[:2]] == ["response.output_audio.delta"] * 2
        assert "response.output_audio.delta" not in types(after)
        assert after[-1]["response"]["status"] == "cancelled"
        assert after[-1]["response"]["status_details"]["reason"] == "turn_detected"
        assert before[-1]["type"] == "input_audio_buffer.speech_started"
        assert s.sessions[0].engine.interruptions == 1
        # The caller's turn then gets the next answer.
        events = await peer.until("response.done")
        assert events[-1]["response"]["status"] == "completed"
        await peer.conn.aclose()


@pytest.mark.anyio
async def test_function_call_then_answer() -> None:
    script = (Answer(500.0, 0.2, "Sunny.", tool=("weather", {"city": "Paris"})),)
    async with OpenAIRealtimeStandIn(script, pace=8.0) as s:
        peer = await open_peer(s)
        await peer.speak()
        events = await peer.until("response.done")
        call = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert (call["name"], json.loads(call["arguments"])) == ("weather", {"city": "Paris"})
        assert "response.output_audio.delta" not in [e["type"] for e in events]
        output = {"type": "function_call_output", "call_id": call["call_id"], "output": "{}"}
        await peer.send({"type": "conversation.item.create", "item": output})
        await peer.until("conversation.item.done")
        await peer.send({"type": "response.create"})
        events = await peer.until("response.done")
        audio = b"".join(
            base64.b64decode(e["delta"])
            for e in events
            if e["type"] == "response.output_audio.delta"
        )
        assert audio == tone16(500.0, 0.2, 24000)
        bad = {"type": "function_call_output", "call_id": "call_nope", "output": "{}"}
        await peer.send({"type": "conversation.item.create", "item": bad})
        assert (await peer.next())["error"]["code"] == "invalid_tool_call_id"
        assert s.sessions[0].tool_outputs == [{"call_id": call["call_id"], "output": "{}"}]
        await peer.conn.aclose()


@pytest.mark.anyio
async def test_manual_turns_and_pcmu(stand_in: OpenAIRealtimeStandIn) -> None:
    peer = await open_peer(stand_in)
    update = {
        "audio": {
            "input": {"turn_detection": None, "format": {"type": "audio/pcmu"}},
            "output": {"format": {"type": "audio/pcmu"}},
        }
    }
    await peer.send({"type": "session.update", "session": update})
    await peer.until("session.updated")
    from telcoflow.audio import ulaw_encode

    tone = tone16(440, 0.3, 8000)
    await peer.send(
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(ulaw_encode(tone)).decode()}
    )
    await peer.send({"type": "input_audio_buffer.commit"})
    assert (await peer.next())["type"] == "input_audio_buffer.committed"
    session = stand_in.sessions[0]
    assert len(session.engine.heard[8000]) == len(tone)
    await peer.send({"type": "response.create"})
    events = await peer.until("response.done")
    audio = b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )
    assert len(audio) == 8000  # one second of µ-law, a byte a sample
    assert "input_audio_buffer.speech_started" not in types(peer.seen)
    await peer.conn.aclose()


@pytest.mark.anyio
async def test_server_close_and_shutdown() -> None:
    closed: list[int] = []

    async def read(peer: Peer) -> None:
        with pytest.raises(ConnectionClosed) as info:
            await peer.next()
        closed.append(info.value.code)

    async with (
        anyio.create_task_group() as tg,
        OpenAIRealtimeStandIn(session_created_delay=0.05) as s,
    ):
        peer = await open_peer(s)
        tg.start_soon(read, peer)
        await s.sessions[0].close(1011)
        with anyio.fail_after(WAIT):
            await s.wait_for(lambda: s.sessions[0].closed)
        assert s.sessions[0].close_code == 1011
        assert s.sessions[0].client_closed_at is None
        tg.start_soon(read, await open_peer(s))
    assert closed == [1011, 1001]
