"""OpenAIRealtimeAdapter on the real ``openai`` client against the OpenAI Realtime stand-in.

What the adapter sends is what the real library sends (the stand-in records it), and every
server event the stand-in sends comes back through the library's parser and the adapter's
normalisation. The library is asyncio-only, so these run on asyncio; one test checks that the
adapter refuses trio at once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import openai
import pytest
from openai.types.realtime import RealtimeServerEvent
from pydantic import TypeAdapter

from telcoflow import TelcoflowClientConfig
from telcoflow.audio import tone_level
from telcoflow.bridge import (
    AgentTranscript,
    AudioDelta,
    GenerationDone,
    ModelError,
    ModelEvent,
    SessionConfig,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    ToolCalls,
    ToolResult,
    ToolSpec,
    TurnDone,
    Usage,
    UserTranscript,
    end_call,
    tool,
)
from telcoflow.bridge.openai import OpenAIRealtimeAdapter, RealtimeNormaliser, session_body
from telcoflow.exceptions import WSSConnectionError
from telcoflow.sandbox import CallSpec, Sandbox
from telcoflow.testing import tone_seconds
from telcoflow.testing._engine import Answer, tone16
from telcoflow.testing.openai_realtime import OpenAIRealtimeStandIn, RealtimeSession

from ..helpers import WAIT
from .test_bridge_scripted import run_bridge, speech

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """The openai library runs only on asyncio."""
    return "asyncio"


SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)


def parsed(**event: Any) -> Any:
    return SERVER_EVENT.validate_python({"event_id": "e", **event})


# --- pure pieces ----------------------------------------------------------------------------------


def test_session_body_has_what_a_phone_bridge_needs() -> None:
    tool = ToolSpec("weather", "The weather in a city.", {"type": "object", "properties": {}})
    body = session_body(SessionConfig(instructions="Be brief.", tools=(tool,), voice="marin"))
    assert body == {
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": "Be brief.",
        "tools": [
            {
                "type": "function",
                "name": "weather",
                "description": "The weather in a city.",
                "parameters": {"type": "object", "properties": {}},
            }
        ],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "turn_detection": {
                    "type": "server_vad",
                    "create_response": True,
                    "interrupt_response": True,
                },
                "transcription": {"model": "gpt-transcribe"},
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "marin"},
        },
    }
    plain = session_body(SessionConfig(transcription=False))
    assert "transcription" not in plain["audio"]["input"]
    assert "instructions" not in plain
    assert "tools" not in plain
    mine = session_body(
        SessionConfig(voice="marin"),
        {
            "audio": {
                "input": {"turn_detection": {"silence_duration_ms": 500}},
                "output": {"voice": "cedar"},
            }
        },
    )
    assert mine["audio"]["input"]["turn_detection"] == {
        "type": "server_vad",
        "create_response": True,
        "interrupt_response": True,
        "silence_duration_ms": 500,
    }
    assert mine["audio"]["output"]["voice"] == "cedar"


def test_normaliser_batches_a_responses_calls_after_its_done() -> None:
    n = RealtimeNormaliser()
    assert n.feed(parsed(type="response.created", response={"id": "r1"})) == []
    assert n.active_response == "r1"
    for i, args in enumerate(('{"city": "Paris"}', "not json")):
        done = parsed(
            type="response.function_call_arguments.done",
            response_id="r1",
            item_id=f"fc{i}",
            output_index=i,
            call_id=f"c{i}",
            name="weather",
            arguments=args,
        )
        assert n.feed(done) == []
    out = n.feed(parsed(type="response.done", response={"id": "r1", "status": "completed"}))
    assert out == [
        TurnDone(),
        ToolCalls((ToolCall("c0", "weather", {"city": "Paris"}), ToolCall("c1", "weather", {}))),
    ]
    assert n.active_response is None


def test_normaliser_drops_calls_of_a_cancelled_response() -> None:
    n = RealtimeNormaliser()
    n.feed(parsed(type="response.created", response={"id": "r1"}))
    n.feed(
        parsed(
            type="response.function_call_arguments.done",
            response_id="r1",
            item_id="fc",
            output_index=0,
            call_id="c",
            name="f",
            arguments="{}",
        )
    )
    out = n.feed(parsed(type="response.done", response={"id": "r1", "status": "cancelled"}))
    assert out == [TurnDone()]


def test_normaliser_reports_generation_done_once_and_for_items_without_audio_done() -> None:
    n = RealtimeNormaliser()
    delta = dict(
        type="response.output_audio.delta", response_id="r1", output_index=0, content_index=0
    )
    assert n.feed(parsed(**delta, item_id="a", delta="AAA=")) == [AudioDelta(b"\0\0", 24000, "a")]
    n.feed(parsed(**delta, item_id="b", delta="AAA="))
    done = dict(
        type="response.output_audio.done", response_id="r1", output_index=0, content_index=0
    )
    assert n.feed(parsed(**done, item_id="a")) == [GenerationDone("a")]
    usage = {"input_tokens": 3, "output_tokens": 4}
    out = n.feed(
        parsed(type="response.done", response={"id": "r1", "status": "completed", "usage": usage})
    )
    assert out == [GenerationDone("b"), Usage(3, 4, usage), TurnDone()]


def test_normaliser_errors_text_and_unknown_events() -> None:
    n = RealtimeNormaliser()
    error = {"type": "invalid_request_error", "code": "x", "message": "bad"}
    assert n.feed(parsed(type="error", error=error)) == [ModelError("bad", code="x")]
    not_active = {**error, "code": "response_cancel_not_active", "message": "no"}
    assert n.feed(parsed(type="error", error=not_active)) == [
        ModelError("no", code="response_cancel_not_active")
    ]
    n.cancel_sent = True  # now it answers our own cancel: expected
    assert n.feed(parsed(type="error", error=not_active)) == []
    where = dict(response_id="r", item_id="t", output_index=0, content_index=0)
    assert n.feed(parsed(type="response.output_text.delta", delta="Hi", **where)) == [
        AgentTranscript("Hi", "t")
    ]
    assert n.feed(parsed(type="response.output_text.done", text="Hi!", **where)) == [
        AgentTranscript("Hi!", "t", final=True)
    ]
    assert n.feed(parsed(type="rate_limits.updated", rate_limits=[])) == []


# --- against the stand-in -------------------------------------------------------------------------


class Collected:
    """The adapter's events, read by a task of their own."""

    def __init__(self, hook: Callable[[ModelEvent], Awaitable[None]] | None = None) -> None:
        """``hook``: awaited for each event in the reading task, as a bridge reacts."""
        self.hook = hook
        self.seen: list[ModelEvent] = []
        self.ended = False
        self._changed = anyio.Event()

    async def run(self, adapter: OpenAIRealtimeAdapter) -> None:
        async for event in adapter.events():
            self.seen.append(event)
            if self.hook is not None:
                await self.hook(event)
            self._notify()
        self.ended = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate: Callable[[list[ModelEvent]], bool]) -> None:
        with anyio.fail_after(WAIT):
            while not predicate(self.seen):
                if self.ended:
                    raise AssertionError(f"events ended; seen: {self.seen}")
                await self._changed.wait()

    async def wait_ended(self) -> None:
        with anyio.fail_after(WAIT):
            while not self.ended:
                await self._changed.wait()

    async def count(self, kind: type[Any], n: int) -> list[Any]:
        await self.wait_for(lambda seen: sum(isinstance(e, kind) for e in seen) >= n)
        return [e for e in self.seen if isinstance(e, kind)]

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.seen if isinstance(e, kind)]

    def audio(self, item_id: str) -> bytes:
        return b"".join(e.pcm for e in self.of(AudioDelta) if e.item_id == item_id)


async def speak(adapter: OpenAIRealtimeAdapter, seconds: float = 0.3, hz: float = 440.0) -> None:
    """A caller turn: a tone, then enough quiet to end it (faster than real time)."""
    rate = adapter.input_rate
    pcm = tone16(hz, seconds, rate) + bytes(2 * int(0.4 * rate))
    step = 2 * rate // 50
    for i in range(0, len(pcm), step):
        await adapter.send_audio(pcm[i : i + step])


@pytest.fixture
async def stand_in() -> AsyncIterator[OpenAIRealtimeStandIn]:
    async with OpenAIRealtimeStandIn(pace=8.0) as s:
        yield s


@pytest.fixture
async def session_of(
    stand_in: OpenAIRealtimeStandIn,
) -> AsyncIterator[Callable[..., Any]]:
    """``adapter, events, session = await session_of(config, **adapter_options)``: an open
    adapter whose events are being collected, and the stand-in's record of it."""
    async with anyio.create_task_group() as tg:
        adapters: list[OpenAIRealtimeAdapter] = []

        async def open_one(
            config: SessionConfig | None = None, **options: Any
        ) -> tuple[OpenAIRealtimeAdapter, Collected, RealtimeSession]:
            options.setdefault("api_key", stand_in.api_key)
            options.setdefault("base_url", stand_in.base_url)
            adapter = OpenAIRealtimeAdapter(**options)
            adapters.append(adapter)
            await adapter.open(config or SessionConfig())
            events = Collected()
            tg.start_soon(events.run, adapter)
            return adapter, events, stand_in.sessions[-1]

        yield open_one
        for adapter in adapters:
            await adapter.aclose()


async def test_open_sends_what_the_real_client_sends(
    stand_in: OpenAIRealtimeStandIn, session_of: Callable[..., Any]
) -> None:
    tool = ToolSpec("weather", "The weather.", {"type": "object", "properties": {}})
    config = SessionConfig(instructions="Be brief.", tools=(tool,), voice="marin")
    adapter, _, session = await session_of(config, model="gpt-realtime-mini")
    assert session.model == "gpt-realtime-mini"
    assert session.headers["authorization"] == f"Bearer {stand_in.api_key}"
    assert session.headers["user-agent"].startswith("AsyncOpenAI/Python")
    assert session.updates == [session_body(config)]
    assert session.received == ["session.update"]
    assert adapter.session.instructions == "Be brief."
    assert adapter.session.audio.output.voice == "marin"
    assert (adapter.input_rate, adapter.can_truncate) == (24000, True)


async def test_open_with_an_own_client_and_session(
    stand_in: OpenAIRealtimeStandIn, session_of: Callable[..., Any]
) -> None:
    client = openai.AsyncOpenAI(
        api_key=stand_in.api_key, websocket_base_url=stand_in.websocket_base_url
    )
    mine = {"audio": {"input": {"turn_detection": {"silence_duration_ms": 700}}}}
    _, _, session = await session_of(client=client, session=mine, api_key=None, base_url=None)
    td = session.session["audio"]["input"]["turn_detection"]
    assert (td["silence_duration_ms"], td["interrupt_response"], td["create_response"]) == (
        700,
        True,
        True,
    )


async def test_the_plugin_fixture_serves_the_real_client(openai_standin: Any) -> None:
    client = openai.AsyncOpenAI(api_key=openai_standin.api_key, base_url=openai_standin.base_url)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.response.create()
        kinds = []
        async for event in conn:
            kinds.append(event.type)
            if event.type == "response.done":
                assert event.response.status == "completed"
                break
    assert "response.output_audio.delta" in kinds
    with anyio.fail_after(WAIT):
        await openai_standin.wait_for(lambda: openai_standin.sessions[0].closed)


async def test_a_bad_key_fails_open_at_once(stand_in: OpenAIRealtimeStandIn) -> None:
    adapter = OpenAIRealtimeAdapter(api_key="sk-wrong", base_url=stand_in.base_url)
    with pytest.raises(WSSConnectionError, match="HTTP 401: check the API key") as info:
        await adapter.open(SessionConfig())
    assert (info.value.status_code, info.value.fatal) == (401, True)
    assert stand_in.rejected == [(401, "/v1/realtime")]
    await adapter.aclose()  # idempotent after a failed open


async def test_a_refused_session_fails_open(stand_in: OpenAIRealtimeStandIn) -> None:
    wrong = {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}
    adapter = OpenAIRealtimeAdapter(
        api_key=stand_in.api_key, base_url=stand_in.base_url, session=wrong
    )
    with pytest.raises(WSSConnectionError, match="refused the session: Invalid value: 16000"):
        await adapter.open(SessionConfig())
    with anyio.fail_after(WAIT):
        await stand_in.wait_for(lambda: stand_in.sessions[0].closed)


async def test_open_waits_for_a_slow_server_within_its_bound() -> None:
    async with OpenAIRealtimeStandIn(session_created_delay=0.3) as s:
        adapter = OpenAIRealtimeAdapter(api_key=s.api_key, base_url=s.base_url)
        started = anyio.current_time()
        await adapter.open(SessionConfig())
        assert anyio.current_time() - started >= 0.3
        await adapter.aclose()
        impatient = OpenAIRealtimeAdapter(api_key=s.api_key, base_url=s.base_url, ready_timeout=0.1)
        with pytest.raises(WSSConnectionError, match=r"did not confirm the session within 0\.1 s"):
            await impatient.open(SessionConfig())


async def test_every_turn_is_normalised(session_of: Callable[..., Any]) -> None:
    adapter, events, session = await session_of(SessionConfig(transcription=True))
    items = []
    for turn in range(3):  # the per-turn receive trap: every answer arrives
        await speak(adapter)
        await events.count(TurnDone, turn + 1)
        items.append(events.of(GenerationDone)[-1].item_id)
    assert len(set(items)) == 3
    for item, hz in zip(items, (660.0, 770.0, 660.0), strict=True):
        assert events.audio(item) == tone16(hz, 1.0, 24000)
    assert {e.rate for e in events.of(AudioDelta)} == {24000}
    kinds = [type(e) for e in events.seen if not isinstance(e, (AudioDelta, AgentTranscript))]
    assert (
        kinds == [SpeechStarted, SpeechStopped, UserTranscript, GenerationDone, Usage, TurnDone] * 3
    )
    assert [e.text for e in events.of(UserTranscript)] == [f"Caller turn {n}." for n in (1, 2, 3)]
    assert all(e.final for e in events.of(UserTranscript))
    first = [e for e in events.of(AgentTranscript) if e.item_id == items[0]]
    assert first == [
        AgentTranscript("First ", items[0]),
        AgentTranscript("answer.", items[0]),
        AgentTranscript("First answer.", items[0], final=True),
    ]
    usage = events.of(Usage)[0]
    assert usage.raw == session.responses[0].usage
    assert (usage.input_tokens, usage.output_tokens) == (
        session.responses[0].usage["input_tokens"],
        session.responses[0].usage["output_tokens"],
    )
    sent = 3 * 2 * int(0.7 * 24000)
    assert len(session.engine.heard[24000]) == sent
    assert session.engine.heard[24000][: 2 * 7200] == tone16(440, 0.3, 24000)


async def test_no_transcription_asked_none_given(session_of: Callable[..., Any]) -> None:
    adapter, events, session = await session_of(SessionConfig(transcription=False))
    await speak(adapter)
    await events.count(TurnDone, 1)
    assert events.of(UserTranscript) == []
    assert "transcription" not in session.updates[0]["audio"]["input"]


async def test_respond_is_a_greeting(session_of: Callable[..., Any]) -> None:
    adapter, events, session = await session_of()
    await adapter.respond("Greet the caller.")
    await events.count(TurnDone, 1)
    await adapter.respond()
    await events.count(TurnDone, 2)
    assert session.response_creates == [{"instructions": "Greet the caller."}, {}]
    assert session.responses[0].instructions == "Greet the caller."
    assert events.of(SpeechStarted) == []
    item = events.of(GenerationDone)[0].item_id
    assert events.audio(item) == tone16(660.0, 1.0, 24000)


LONG = (Answer(550.0, 4.0, "A long answer that the caller cuts short."), Answer(660.0, 0.2, "Yes?"))


async def barge_in(adapter: OpenAIRealtimeAdapter, events: Collected) -> tuple[str, int]:
    """Ask, wait for the answer to start, talk over it: its item and the audio ms received."""
    await speak(adapter)
    await events.count(AudioDelta, 3)
    item = events.of(AudioDelta)[0].item_id
    await speak(adapter)
    await events.count(SpeechStarted, 2)
    received = len(events.audio(item)) * 1000 // (2 * 24000)
    return item, received


async def test_barge_in_cancels_then_truncates_to_what_was_heard() -> None:
    async with OpenAIRealtimeStandIn(LONG, pace=2.0) as s, anyio.create_task_group() as tg:
        adapter = OpenAIRealtimeAdapter(api_key=s.api_key, base_url=s.base_url)
        await adapter.open(SessionConfig())
        heard: list[int] = []

        async def react(event: ModelEvent) -> None:
            # As a bridge does: at the caller's speech over an answer, at once in the reader.
            deltas = events.of(AudioDelta)
            if isinstance(event, SpeechStarted) and deltas:
                heard.append(len(events.audio(deltas[0].item_id)) * 1000 // 48000)
                await adapter.interrupted(deltas[0].item_id, 80)

        events = Collected(react)
        tg.start_soon(events.run, adapter)
        await speak(adapter)
        await events.count(AudioDelta, 3)
        item = events.of(AudioDelta)[0].item_id
        await speak(adapter)
        session = s.sessions[0]
        with anyio.fail_after(WAIT):
            await s.wait_for(lambda: len(session.truncations) == 1)
        assert session.responses[0].status == "cancelled"
        truncation = session.truncations[0]
        assert (truncation.item_id, truncation.content_index, truncation.audio_end_ms) == (
            item,
            0,
            80,
        )
        assert truncation.generated_ms >= heard[0]
        # The server had cancelled on speech already: our cancel (by id) was too late, quietly.
        assert "response.cancel" in session.received
        assert [e["code"] for e in session.errors_sent] == ["response_cancel_not_active"]
        assert session.cancels == 0
        await events.count(TurnDone, 2)  # the caller's new turn is answered, not cancelled
        assert session.responses[1].status == "completed"
        assert events.of(ModelError) == []
        await adapter.aclose()


async def test_truncating_past_the_generated_audio_is_an_error_not_fatal() -> None:
    async with OpenAIRealtimeStandIn(LONG, pace=2.0) as s, anyio.create_task_group() as tg:
        adapter = OpenAIRealtimeAdapter(api_key=s.api_key, base_url=s.base_url)
        await adapter.open(SessionConfig())
        events = Collected()
        tg.start_soon(events.run, adapter)
        item, _ = await barge_in(adapter, events)
        await events.count(TurnDone, 1)  # the cancelled response is done
        await adapter.interrupted(item, 60_000)
        [error] = await events.count(ModelError, 1)
        generated = s.sessions[0].engine.current  # the next answer by now
        assert error.code == "invalid_value"
        assert error.fatal is False
        assert error.message.startswith("Audio content of ")
        assert error.message.endswith("ms is already shorter than 60000ms")
        assert s.sessions[0].truncations == []
        assert generated is not None
        await events.count(TurnDone, 2)  # the session goes on
        await adapter.aclose()


async def test_nothing_heard_deletes_the_item(session_of: Callable[..., Any]) -> None:
    adapter, events, session = await session_of()
    await adapter.respond()
    [done] = await events.count(GenerationDone, 1)
    await events.count(TurnDone, 1)
    await adapter.interrupted(done.item_id, 0)
    with anyio.fail_after(WAIT):
        await session._stand_in.wait_for(lambda: session.deletes == [done.item_id])
    assert "response.cancel" not in session.received  # no response was active
    assert session.truncations == []
    await adapter.interrupted(None, 0)  # no item: nothing to do
    assert session.errors_sent == []


async def test_late_deltas_come_through_for_the_bridge_to_drop() -> None:
    async with (
        OpenAIRealtimeStandIn(LONG, pace=2.0, late_deltas=3) as s,
        anyio.create_task_group() as tg,
    ):
        adapter = OpenAIRealtimeAdapter(api_key=s.api_key, base_url=s.base_url)
        await adapter.open(SessionConfig())
        events = Collected()
        tg.start_soon(events.run, adapter)
        item, _ = await barge_in(adapter, events)
        await events.count(TurnDone, 1)
        second = [i for i, e in enumerate(events.seen) if isinstance(e, SpeechStarted)][1]
        late = [e for e in events.seen[second:] if isinstance(e, AudioDelta) and e.item_id == item]
        assert len(late) == 3
        await adapter.aclose()


async def test_tool_round_trip_with_one_response_create() -> None:
    script = (Answer(500.0, 0.3, "It is sunny.", tool=("weather", {"city": "Paris"})),)
    async with OpenAIRealtimeStandIn(script, pace=8.0) as s, anyio.create_task_group() as tg:
        adapter = OpenAIRealtimeAdapter(api_key=s.api_key, base_url=s.base_url)
        tool = ToolSpec("weather", "The weather.", {"type": "object"})
        await adapter.open(SessionConfig(tools=(tool,)))
        events = Collected()
        tg.start_soon(events.run, adapter)
        await speak(adapter)
        [calls] = await events.count(ToolCalls, 1)
        assert isinstance(events.seen[-2], TurnDone)  # after that response's response.done
        [call] = calls.calls
        assert (call.name, dict(call.arguments)) == ("weather", {"city": "Paris"})
        assert events.of(AudioDelta) == []
        await adapter.send_tool_results([ToolResult(call.id, call.name, {"sky": "clear"})])
        [done] = await events.count(GenerationDone, 1)
        session = s.sessions[0]
        assert events.audio(done.item_id) == tone16(500.0, 0.3, 24000)
        assert session.tool_outputs == [
            {"call_id": call.id, "output": json.dumps({"sky": "clear"})}
        ]
        assert session.response_creates == [{}]
        tail = session.received[session.received.index("conversation.item.create") :]
        assert tail[:2] == ["conversation.item.create", "response.create"]
        await adapter.send_tool_results([])  # nothing to send
        assert session.received.count("response.create") == 1
        await adapter.aclose()


async def test_an_error_event_is_not_fatal(session_of: Callable[..., Any]) -> None:
    adapter, events, session = await session_of()
    await session.send_error("The server had an error", code="server_error")
    [error] = await events.count(ModelError, 1)
    assert error == ModelError("The server had an error", code="server_error", fatal=False)
    await speak(adapter)
    await events.count(TurnDone, 1)


async def test_a_server_close_ends_the_events(session_of: Callable[..., Any]) -> None:
    adapter, events, session = await session_of()
    await session.close(1011, "internal error")
    await events.wait_ended()
    assert events.seen == [
        ModelError(
            "OpenAI Realtime closed the connection (1011: internal error)", code="1011", fatal=True
        )
    ]
    await speak(adapter)  # after the close: dropped, no exception


async def test_aclose_closes_once_and_ends_the_events(
    stand_in: OpenAIRealtimeStandIn, session_of: Callable[..., Any]
) -> None:
    adapter, events, session = await session_of()
    await adapter.aclose()
    await adapter.aclose()
    with anyio.fail_after(WAIT):
        await stand_in.wait_for(lambda: session.closed)
    assert session.client_closed_at is not None
    assert session.close_code == 1000
    await events.wait_ended()
    assert events.seen == []
    await adapter.send_audio(b"\0\0")  # closed: dropped


async def test_a_g711_session_speaks_8khz(session_of: Callable[..., Any]) -> None:
    pcmu = {"type": "audio/pcmu"}
    mine = {"audio": {"input": {"format": pcmu}, "output": {"format": pcmu}}}
    adapter, events, session = await session_of(session=mine)
    assert adapter.input_rate == 8000
    await speak(adapter)
    [done] = await events.count(GenerationDone, 1)
    assert {e.rate for e in events.of(AudioDelta)} == {8000}
    assert len(events.audio(done.item_id)) == 2 * 8000
    assert len(session.engine.heard[8000]) == 2 * int(0.7 * 8000)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_refuses_trio_at_once() -> None:
    adapter = OpenAIRealtimeAdapter(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(
        RuntimeError, match="OpenAIRealtimeAdapter needs asyncio: openai runs only on asyncio"
    ):
        await adapter.open(SessionConfig())


# --- end to end: bridge() over the sandbox ---------------------------------------------------

CALLER_HZ = 440


async def test_bridge_barge_in_truncates_at_what_the_caller_heard(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    rate = 8000
    script = (Answer(660.0, 1.5, "A first answer."), Answer(770.0, 0.8, "Second answer."))
    caller = speech(rate, (True, 0.5), (False, 1.2), (True, 0.4), (False, 2.4))
    spec = CallSpec(caller=caller, caller_hangup_after_s=4.6)
    async with OpenAIRealtimeStandIn(script) as s:
        adapter = OpenAIRealtimeAdapter(api_key=s.api_key, base_url=s.base_url)
        sim, result, _ = await run_bridge(sandbox, make_config, spec, adapter, rate=rate)
        with anyio.fail_after(WAIT):
            await s.wait_for(lambda: s.sessions[0].closed)
    session = s.sessions[0]
    # The model heard the caller at 24 kHz, pitch kept.
    heard = bytes(session.engine.heard[24000])
    assert tone_level(heard[: 2 * 12000], 24000, CALLER_HZ) > 0.05
    # The first answer stopped at the barge-in, the second was heard whole.
    recording = sim.recording("caller")
    first_ms = 1000 * tone_seconds(recording, rate, 660.0)
    assert 200 <= first_ms < 1400
    assert tone_seconds(recording, rate, 770.0) >= 0.7
    assert [c["command"] for c in sim.commands].count("agent.interrupt") == 1
    # Truncated where the recording shows it stopped, never past what was generated.
    [truncation] = session.truncations
    assert (truncation.item_id, truncation.content_index) == ("item_1", 0)
    assert abs(truncation.audio_end_ms - first_ms) <= 250, (truncation, first_ms)
    assert truncation.audio_end_ms <= truncation.generated_ms
    assert session.errors_sent == []
    agent = [t for t in result.transcript if t.role == "agent"]
    assert [t.interrupted for t in agent] == [True, False]
    assert result.ended_by == "call"
    assert session.client_closed_at is not None  # closed when the caller hung up


async def test_bridge_greeting_tool_and_end_call(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    lookups: list[str] = []

    @tool
    async def weather(city: str) -> dict[str, str]:
        """The weather in a city."""
        lookups.append(city)
        return {"sky": "clear"}

    script = (
        Answer(660.0, 0.6, "Hello!"),
        Answer(550.0, 0.6, "It is sunny.", tool=("weather", {"city": "Paris"})),
        Answer(880.0, 0.8, "Goodbye!", tool=("end_call", {"reason": "done"})),
    )
    caller = speech(24000, (False, 1.4), (True, 0.4), (False, 2.0), (True, 0.4), (False, 6))
    spec = CallSpec(caller=caller, caller_hangup_after_s=10.0)
    async with OpenAIRealtimeStandIn(script) as s:
        adapter = OpenAIRealtimeAdapter(api_key=s.api_key, base_url=s.base_url)
        sim, result, _ = await run_bridge(
            sandbox,
            make_config,
            spec,
            adapter,
            rate=24000,
            greeting="Greet the caller.",
            tools=[weather, end_call],
            instructions="Be brief.",
        )
    session = s.sessions[0]
    assert session.updates[0]["instructions"] == "Be brief."
    assert [t["name"] for t in session.updates[0]["tools"]] == ["weather", "end_call"]
    assert session.response_creates[0] == {"instructions": "Greet the caller."}
    assert lookups == ["Paris"]
    calls = [r for r in session.responses if r.kind == "function_call"]
    assert len(calls) == 2
    assert len(session.tool_outputs) == 2
    # One response.create per tool result batch, plus the greeting's.
    assert session.received.count("response.create") == 3
    recording = sim.recording("caller")
    assert tone_seconds(recording, 24000, 660.0) >= 0.5
    assert tone_seconds(recording, 24000, 550.0) >= 0.5
    assert tone_seconds(recording, 24000, 880.0) >= 0.7  # the farewell, in full
    assert result.ended_by == "end_call"
    assert [c["command"] for c in sim.commands][-1] == "call.disconnect"
    assert session.errors_sent == []
