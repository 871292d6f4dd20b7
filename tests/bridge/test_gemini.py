"""GeminiLiveAdapter on the real google-genai client against the Gemini Live stand-in, over TLS.

What the adapter sends (setup, rates, tool responses, no re-seed on resume) is read from the
stand-in's records; what it makes of every server message is read from its events. The
library runs only on asyncio, so these tests do too, except the one proving trio is refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import pytest
from google.genai import types

from telcoflow import TelcoflowClientConfig
from telcoflow.audio import tone_level
from telcoflow.bridge import (
    AgentTranscript,
    AudioDelta,
    GenerationDone,
    ModelError,
    ModelEvent,
    SessionConfig,
    SessionEnding,
    SessionResumed,
    SpeechStarted,
    ToolCalls,
    ToolCallsCancelled,
    ToolResult,
    ToolSpec,
    TurnDone,
    Usage,
    UserTranscript,
    end_call,
    tool,
)
from telcoflow.bridge.gemini import DEFAULT_MODEL, GeminiLiveAdapter
from telcoflow.sandbox import CallSpec, Sandbox
from telcoflow.testing import tone_seconds
from telcoflow.testing._engine import Answer, tone16
from telcoflow.testing.gemini_live import GeminiLiveStandIn

from ..helpers import WAIT
from .test_bridge_scripted import run_bridge, speech

pytestmark = pytest.mark.anyio

E = TypeVar("E")

THREE = (
    Answer(660.0, 0.4, "First answer."),
    Answer(770.0, 0.4, "Second answer."),
    Answer(880.0, 0.4, "Third answer."),
)


@pytest.fixture
def anyio_backend() -> str:
    """google-genai runs only on asyncio (websockets.asyncio)."""
    return "asyncio"


class Events:
    """Everything the adapter's events() yields, waited on without sleeps."""

    def __init__(self, adapter: GeminiLiveAdapter) -> None:
        self.adapter = adapter
        self.items: list[ModelEvent] = []
        self.ended = anyio.Event()
        self._changed = anyio.Event()

    async def run(self) -> None:
        try:
            async for event in self.adapter.events():
                self.items.append(event)
                self._changed.set()
                self._changed = anyio.Event()
        finally:
            self.ended.set()

    async def wait(self, predicate: Callable[[list[ModelEvent]], bool]) -> None:
        with anyio.fail_after(WAIT):
            while not predicate(self.items):
                await self._changed.wait()

    async def wait_count(self, kind: type[Any], n: int) -> None:
        await self.wait(lambda items: len(self.of(kind)) >= n)

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.items if isinstance(e, kind)]

    def index(self, kind: type[Any], n: int = 0) -> int:
        return [i for i, e in enumerate(self.items) if isinstance(e, kind)][n]

    def audio(self, item_id: str) -> bytes:
        return b"".join(e.pcm for e in self.of(AudioDelta) if e.item_id == item_id)


@asynccontextmanager
async def adapter_session(
    standin: GeminiLiveStandIn,
    session: SessionConfig | None = None,
    **options: Any,
) -> AsyncIterator[tuple[GeminiLiveAdapter, Events]]:
    """An opened adapter on the stand-in with its events collected; closed on exit, and
    its events must then end."""
    options.setdefault("client", standin.client())
    adapter = GeminiLiveAdapter(**options)
    await adapter.open(session or SessionConfig())
    events = Events(adapter)
    async with anyio.create_task_group() as tg:
        tg.start_soon(events.run)
        try:
            yield adapter, events
        finally:
            with anyio.fail_after(WAIT):
                await adapter.aclose()
                await events.ended.wait()


async def speak(
    adapter: GeminiLiveAdapter, hz: float = 440.0, seconds: float = 0.3, quiet_s: float = 0.4
) -> None:
    """A caller utterance (a tone, then enough quiet to end the turn) in 20 ms chunks."""
    rate = adapter.input_rate
    pcm = tone16(hz, seconds, rate) + bytes(2 * int(quiet_s * rate))
    step = 2 * rate // 50
    for i in range(0, len(pcm), step):
        await adapter.send_audio(pcm[i : i + step])


async def talk_over(adapter: GeminiLiveAdapter, hz: float = 440.0) -> None:
    """The start of caller speech only (enough for the stand-in's VAD to hear it)."""
    rate = adapter.input_rate
    await adapter.send_audio(tone16(hz, 0.04, rate))


# --- setup ---------------------------------------------------------------------------------------


async def test_setup_carries_the_session_config() -> None:
    lookup = ToolSpec(
        "lookup_order",
        "Find an order.",
        {"type": "object", "properties": {"order_id": {"type": "string"}}},
    )
    base = types.LiveConnectConfig(
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(silence_duration_ms=400)
        )
    )
    config = SessionConfig(instructions="Be brief.", tools=(lookup,), voice="Puck")
    async with GeminiLiveStandIn() as standin:
        async with adapter_session(standin, config, config=base) as (adapter, _):
            assert adapter.session.session_id == standin.connections[0].session_id
        [conn] = standin.connections
    setup = conn.setup
    assert setup is not None
    assert conn.api_version in ("v1", "v1beta", "v1alpha")
    assert conn.method == "BidiGenerateContent"
    assert conn.key_source == "header"
    assert conn.headers["x-goog-api-client"].startswith("google-genai-sdk/")
    assert setup.model == f"models/{DEFAULT_MODEL}"
    assert setup.modalities == ("AUDIO",)
    assert setup.voice == "Puck"
    assert setup.system_instruction == "Be brief."
    assert setup.tools == ("lookup_order",)
    schema = setup.function_declarations[0]["parametersJsonSchema"]
    assert schema["properties"] == {"order_id": {"type": "string"}}  # the user's names kept
    assert setup.input_transcription
    assert setup.output_transcription
    assert setup.realtime_input_config == {"automaticActivityDetection": {"silenceDurationMs": 400}}
    assert setup.resumption
    assert setup.resumption_handle is None
    assert conn.close_code == 1000  # our aclose, a normal close


async def test_transcription_off_and_provider_config_kept() -> None:
    base = types.LiveConnectConfig(
        system_instruction="From the config.",
        speech_config=types.SpeechConfig(
            voice_config=types.VoiceConfig(
                prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name="Kore")
            )
        ),
    )
    async with (
        GeminiLiveStandIn() as standin,
        adapter_session(standin, SessionConfig(voice="Puck", transcription=False), config=base),
    ):
        pass
    setup = standin.setups[0]
    assert setup.system_instruction == "From the config."  # no instructions given: kept
    assert setup.voice == "Kore"  # the provider's own speech config wins over the voice
    assert not setup.input_transcription
    assert not setup.output_transcription


@pytest.mark.parametrize("input_rate", [16000, 8000])
async def test_caller_audio_is_declared_at_the_input_rate(input_rate: int) -> None:
    async with (
        GeminiLiveStandIn(script=THREE) as standin,
        adapter_session(standin, input_rate=input_rate) as (adapter, events),
    ):
        await speak(adapter, seconds=0.3, quiet_s=0.4)
        await events.wait_count(TurnDone, 1)
        conn = standin.connections[0]
        assert set(conn.audio_rates) == {input_rate}
        heard = standin.conversation(conn).heard[input_rate]
        assert len(heard) == 2 * int(0.7 * input_rate)
        assert bytes(heard[: 2 * int(0.3 * input_rate)]) == tone16(440.0, 0.3, input_rate)


# --- turns ---------------------------------------------------------------------------------------


async def test_three_answers_in_a_row() -> None:
    """The per-turn receive() trap: every answer after the first must still arrive."""
    async with (
        GeminiLiveStandIn(script=THREE) as standin,
        adapter_session(standin) as (adapter, events),
    ):
        for n in (1, 2, 3):
            await speak(adapter)
            await events.wait_count(TurnDone, n)
    for n, answer in enumerate(THREE, start=1):
        item = f"turn_{n}"
        assert events.audio(item) == tone16(answer.hz, answer.seconds, 24000)
        assert GenerationDone(item) in events.items
        assert AgentTranscript(answer.text, item) in events.items
    assert {e.rate for e in events.of(AudioDelta)} == {24000}
    # Each turn: transcript of the caller, audio, generation done, then turn done.
    for n in range(3):
        first_audio = next(
            i
            for i, e in enumerate(events.items)
            if isinstance(e, AudioDelta) and e.item_id == f"turn_{n + 1}"
        )
        assert events.index(UserTranscript, n) < first_audio
        assert first_audio < events.index(GenerationDone, n) < events.index(TurnDone, n)
    assert [u.text for u in events.of(UserTranscript)] == [
        "Caller turn 1.",
        "Caller turn 2.",
        "Caller turn 3.",
    ]
    usage = events.of(Usage)
    assert len(usage) == 3
    assert all(u.output_tokens > 0 and u.input_tokens > 0 for u in usage)
    assert "totalTokenCount" not in usage[0].raw
    assert "total_token_count" in usage[0].raw
    assert not events.of(ModelError)


async def test_greeting_by_client_content_then_realtime_text() -> None:
    async with GeminiLiveStandIn(script=THREE) as standin:
        async with adapter_session(standin) as (adapter, events):
            await adapter.respond("Say hello.")
            await events.wait_count(TurnDone, 1)
            await adapter.respond()  # after a model turn: never client_content again
            await events.wait_count(TurnDone, 2)
        conn = standin.connections[0]
    [content] = conn.client_contents
    assert content["turns"] == [{"parts": [{"text": "Say hello."}], "role": "user"}]
    assert content["turnComplete"] is True
    assert conn.texts == [" "]
    assert events.audio("turn_1") == tone16(660.0, 0.4, 24000)
    assert events.audio("turn_2") == tone16(770.0, 0.4, 24000)


async def test_greeting_by_realtime_text() -> None:
    async with (
        GeminiLiveStandIn() as standin,
        adapter_session(standin, greeting="realtime_text") as (adapter, events),
    ):
        await adapter.respond()
        await events.wait_count(TurnDone, 1)
    assert standin.connections[0].texts == [" "]
    assert not standin.connections[0].client_contents


async def test_barge_in_during_generation() -> None:
    script = (Answer(660.0, 2.0, "Long answer."), Answer(770.0, 0.4, "Short answer."))
    async with (
        GeminiLiveStandIn(script=script) as standin,
        adapter_session(standin) as (adapter, events),
    ):
        await speak(adapter)
        await events.wait(lambda items: any(isinstance(e, AudioDelta) for e in items))
        await talk_over(adapter)
        await events.wait_count(SpeechStarted, 1)
        await events.wait_count(TurnDone, 1)
        await speak(adapter)
        await events.wait_count(TurnDone, 2)
    assert standin.sent_count("interrupted") == 1
    assert events.index(SpeechStarted) < events.index(TurnDone)
    assert not any(isinstance(e, GenerationDone) and e.item_id == "turn_1" for e in events.items)
    assert 0 < len(events.audio("turn_1")) < 2 * 24000 * 2
    assert events.audio("turn_2") == tone16(770.0, 0.4, 24000)  # a fresh item, whole


async def test_barge_in_within_the_playback_estimate() -> None:
    """Generation is done but playback (by Gemini's estimate) is not: still an interruption,
    and turnComplete comes after it."""
    script = (Answer(660.0, 2.0, "Long answer."),)
    async with (
        GeminiLiveStandIn(script=script, pace=8.0) as standin,
        adapter_session(standin) as (adapter, events),
    ):
        await speak(adapter)
        await events.wait_count(GenerationDone, 1)
        assert not events.of(TurnDone)  # held back until the estimated playback end
        await talk_over(adapter)
        await events.wait_count(TurnDone, 1)
    assert events.index(GenerationDone) < events.index(SpeechStarted) < events.index(TurnDone)


async def test_interrupted_after_turn_complete_is_speech_started() -> None:
    """Gemini may finish the turn while playback (by its estimate) is still going on."""
    script = (Answer(660.0, 2.0, "Long answer."),)
    async with (
        GeminiLiveStandIn(script=script, turn_complete="generation", pace=8.0) as standin,
        adapter_session(standin) as (adapter, events),
    ):
        await speak(adapter)
        await events.wait_count(TurnDone, 1)
        await talk_over(adapter)
        await events.wait_count(SpeechStarted, 1)
    assert events.index(TurnDone) < events.index(SpeechStarted)
    assert standin.connections[0].sent[-1] == "interrupted"


async def test_interrupted_outside_a_turn() -> None:
    async with GeminiLiveStandIn() as standin, adapter_session(standin) as (_, events):
        await standin.send_interrupted()
        await events.wait_count(SpeechStarted, 1)


# --- tools ---------------------------------------------------------------------------------------


async def test_tool_round_trip() -> None:
    script = (
        Answer(660.0, 0.4, "Your order shipped.", tool=("lookup_order", {"order_id": "A1"})),
        Answer(770.0, 0.4, "Anything else?", tool=("get_time", {})),
    )
    async with GeminiLiveStandIn(script=script) as standin:
        async with adapter_session(standin) as (adapter, events):
            await speak(adapter)
            await events.wait_count(ToolCalls, 1)
            [call] = events.of(ToolCalls)[0].calls
            assert (call.name, dict(call.arguments)) == ("lookup_order", {"order_id": "A1"})
            assert not events.of(AudioDelta)  # blocking: the model waits for the result
            await adapter.send_tool_results([ToolResult(call.id, call.name, {"status": "sent"})])
            await events.wait_count(TurnDone, 1)
            await speak(adapter)  # a tool call in a later turn too
            await events.wait_count(ToolCalls, 2)
            [call2] = events.of(ToolCalls)[1].calls
            await adapter.send_tool_results([ToolResult(call2.id, call2.name, "12:00")])
            await events.wait_count(TurnDone, 2)
        conn = standin.connections[0]
    assert events.audio("turn_1") == tone16(660.0, 0.4, 24000)
    assert events.audio("turn_2") == tone16(770.0, 0.4, 24000)
    assert conn.unmatched_tool_ids == []
    first, second = (r["functionResponses"] for r in conn.tool_responses)
    assert first == [{"id": call.id, "name": "lookup_order", "response": {"status": "sent"}}]
    assert second == [{"id": call2.id, "name": "get_time", "response": {"output": "12:00"}}]


async def test_tool_call_cancelled_by_barge_in() -> None:
    script = (Answer(660.0, 0.4, "Found it.", tool=("slow_lookup", {"q": "x"})),)
    async with GeminiLiveStandIn(script=script) as standin:
        async with adapter_session(standin) as (adapter, events):
            await speak(adapter)
            await events.wait_count(ToolCalls, 1)
            [call] = events.of(ToolCalls)[0].calls
            await talk_over(adapter)
            await events.wait_count(ToolCallsCancelled, 1)
        conn = standin.connections[0]
    assert events.of(ToolCallsCancelled) == [ToolCallsCancelled((call.id,))]
    assert conn.cancelled_tool_ids == [call.id]
    assert not events.of(AudioDelta)


# --- resumption ----------------------------------------------------------------------------------


async def test_go_away_resumes_with_the_latest_handle() -> None:
    async with GeminiLiveStandIn(script=THREE) as standin:
        async with adapter_session(standin) as (adapter, events):
            await adapter.respond("Greet.")
            await events.wait_count(TurnDone, 1)
            await speak(adapter)
            await events.wait_count(TurnDone, 2)
            first = standin.connections[0]
            assert adapter.resumption_handle == first.handles_issued[-1]
            await standin.go_away(time_left_s=5.0)
            await events.wait_count(SessionResumed, 1)
            await speak(adapter)
            await events.wait_count(TurnDone, 3)
        old, new = standin.connections
    assert events.of(SessionEnding) == [SessionEnding(5.0)]
    assert events.of(SessionResumed) == [SessionResumed(resumed=True)]
    assert events.index(SessionEnding) < events.index(SessionResumed)
    assert old.close_code == 1000  # we closed the old socket before resuming
    assert new.setup is not None
    assert new.setup.resumption_handle == old.handles_issued[-1]
    assert new.handle_was_latest
    assert not new.reseeded
    assert not new.client_contents
    assert new.conversation_id == old.conversation_id
    # The conversation continues: the third scripted answer, as a new item.
    assert events.audio("turn_3") == tone16(880.0, 0.4, 24000)
    assert adapter.resumptions == 1


async def test_lifetime_go_away_without_a_handle_starts_afresh() -> None:
    async with (
        GeminiLiveStandIn(lifetime_s=0.2, go_away_time_left_s=2.0) as standin,
        adapter_session(standin) as (_, events),
    ):
        await events.wait_count(SessionResumed, 1)
        await standin.wait_for(lambda: len(standin.connections) == 2)
    assert events.of(SessionEnding)[0] == SessionEnding(2.0)
    assert events.of(SessionResumed)[0] == SessionResumed(resumed=False)
    first, second = standin.connections[:2]
    assert second.setup is not None
    assert second.setup.resumption_handle is None
    assert second.conversation_id != first.conversation_id


async def test_close_1011_mid_turn_resumes() -> None:
    async with GeminiLiveStandIn(script=THREE) as standin:
        async with adapter_session(standin) as (adapter, events):
            await speak(adapter)
            await events.wait_count(TurnDone, 1)
            standin.close_mid_turn(after_chunks=3, code=1011)
            await speak(adapter)
            await events.wait_count(SessionResumed, 1)
            await speak(adapter)
            await events.wait_count(TurnDone, 3)
        old, new = standin.connections
    assert old.close_code == 1011
    assert new.setup is not None
    assert new.setup.resumption_handle == old.handles_issued[-1]
    assert not new.reseeded
    assert len(events.audio("turn_2")) == 3 * 2 * 24000 * 40 // 1000  # cut after 3 chunks
    # The cut answer is finished for the bridge before the session is back.
    cut = events.items.index(GenerationDone("turn_2"))
    assert cut < events.index(TurnDone, 1) < events.index(SessionResumed)
    assert events.audio("turn_3") == tone16(880.0, 0.4, 24000)  # the script went on
    assert not events.of(SessionEnding)
    assert not any(e.fatal for e in events.of(ModelError))


async def test_caller_audio_during_a_switch_is_buffered_and_bounded() -> None:
    async with GeminiLiveStandIn() as standin:
        adapter = GeminiLiveAdapter(standin.client())
        await adapter.open(SessionConfig())
        try:
            adapter._switching = True  # as during _resume()
            second = bytes(2 * 16000)
            for _ in range(3):
                await adapter.send_audio(second)
            assert adapter._buffered == 2 * 2 * 16000  # SWITCH_BUFFER_S of the newest
            assert adapter.dropped_audio_bytes == 2 * 16000
        finally:
            await adapter.aclose()
            await adapter.aclose()  # idempotent


# --- rates, faults, lifecycle --------------------------------------------------------------------


async def test_output_rate_taken_from_the_mime_type() -> None:
    async with (
        GeminiLiveStandIn(script=THREE, out_rate=16000) as standin,
        adapter_session(standin) as (adapter, events),
    ):
        await speak(adapter)
        await events.wait_count(TurnDone, 1)
    assert {e.rate for e in events.of(AudioDelta)} == {16000}
    assert events.audio("turn_1") == tone16(660.0, 0.4, 16000)


async def test_unreadable_messages_are_reported_and_the_session_goes_on() -> None:
    async with (
        GeminiLiveStandIn(script=THREE) as standin,
        adapter_session(standin) as (adapter, events),
    ):
        await standin.send_raw("this is not json")
        await events.wait_count(ModelError, 1)
        await standin.send_raw('{"someFutureMessage": {"x": 1}}')
        await events.wait_count(ModelError, 2)
        await speak(adapter)
        await events.wait_count(TurnDone, 1)
    errors = events.of(ModelError)
    assert [e.fatal for e in errors] == [False, False]
    assert events.audio("turn_1") == tone16(660.0, 0.4, 24000)
    assert len(standin.connections) == 1


async def test_bad_api_key_fails_open() -> None:
    async with GeminiLiveStandIn() as standin:
        adapter = GeminiLiveAdapter(standin.client(api_key="wrong-key"))
        with pytest.raises(ConnectionError, match="1008"):
            await adapter.open(SessionConfig())
        await adapter.aclose()
    assert standin.connections[0].close_code == 1008


async def test_silent_setup_times_out() -> None:
    async with GeminiLiveStandIn(drop_setup_complete=True) as standin:
        adapter = GeminiLiveAdapter(standin.client(), connect_timeout=0.3)
        with pytest.raises(TimeoutError, match="setup"):
            await adapter.open(SessionConfig())
        await adapter.aclose()
        await standin.wait_for(lambda: standin.connections[0].closed)


async def test_slow_setup_is_waited_for() -> None:
    async with GeminiLiveStandIn(setup_delay_s=0.2) as standin:
        start = anyio.current_time()
        async with adapter_session(standin):
            assert anyio.current_time() - start >= 0.2


async def test_server_close_with_a_fatal_code_ends_events() -> None:
    async with GeminiLiveStandIn() as standin, adapter_session(standin) as (_, events):
        await standin.drop(code=1007, reason="Request contains an invalid argument.")
        await events.ended.wait()
    [error] = events.of(ModelError)
    assert error.fatal
    assert error.code == "1007"
    assert len(standin.connections) == 1  # not resumed


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_is_refused_at_once(anyio_backend: str) -> None:
    adapter = GeminiLiveAdapter(client=None)
    with pytest.raises(RuntimeError, match="asyncio"):
        await adapter.open(SessionConfig())


# --- end to end: bridge() over the sandbox -------------------------------------------------------

CALLER_HZ = 440


async def test_bridge_three_turns_at_8khz(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    rate = 8000
    caller = speech(
        rate, (True, 0.4), (False, 1.4), (True, 0.4), (False, 1.4), (True, 0.4), (False, 1.6)
    )
    spec = CallSpec(caller=caller, caller_hangup_after_s=5.8)
    async with GeminiLiveStandIn(script=THREE) as standin:
        adapter = GeminiLiveAdapter(standin.client())
        sim, result, _ = await run_bridge(sandbox, make_config, spec, adapter, rate=rate)
        await standin.wait_for(lambda: standin.connections[0].closed)
    conn = standin.connections[0]
    # The model heard the caller at 16 kHz, declared so, pitch kept.
    assert set(conn.audio_rates) == {16000}
    heard = bytes(standin.conversation(conn).heard[16000])
    assert tone_level(heard[:8000], 16000, CALLER_HZ) > 0.05
    # All three answers were heard by the caller, resampled from 24 kHz to 8 kHz.
    recording = sim.recording("caller")
    for answer in THREE:
        assert tone_seconds(recording, rate, answer.hz) >= 0.3, answer
    agent = [t.text for t in result.transcript if t.role == "agent"]
    assert agent == [a.text for a in THREE]
    assert result.ended_by == "call"
    assert conn.close_code == 1000  # the session was closed when the caller hung up


async def test_bridge_greeting_resumption_and_end_call(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig], gemini_standin: Any
) -> None:
    standin: GeminiLiveStandIn = gemini_standin
    standin.script = (
        Answer(660.0, 0.6, "Hello!"),
        Answer(880.0, 0.8, "Goodbye!", tool=("end_call", {"reason": "done"})),
    )
    caller = speech(24000, (False, 2.2), (True, 0.4), (False, 6.0))
    spec = CallSpec(caller=caller, caller_hangup_after_s=9.0)
    adapter = GeminiLiveAdapter(standin.client())

    async def go_away_after_the_greeting() -> None:
        await standin.wait_for(lambda: standin.sent_count("sessionResumptionUpdate") >= 1)
        await standin.go_away(time_left_s=3.0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(go_away_after_the_greeting)
        sim, result, _ = await run_bridge(
            sandbox, make_config, spec, adapter, rate=24000, greeting=True, tools=[end_call]
        )
    first, second = standin.connections
    assert first.client_contents  # the greeting, on the first session only
    assert second.setup is not None
    assert second.setup.resumption_handle == first.handles_issued[-1]
    assert not second.reseeded
    recording = sim.recording("caller")
    assert tone_seconds(recording, 24000, 660.0) >= 0.5
    assert tone_seconds(recording, 24000, 880.0) >= 0.7  # the farewell, in full
    assert second.tool_responses[0]["functionResponses"][0]["name"] == "end_call"
    assert result.ended_by == "end_call"
    assert [c["command"] for c in sim.commands][-1] == "call.disconnect"


async def test_bridge_cancels_the_tool_gemini_cancels_and_sends_it_no_result(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    started, cancelled = anyio.Event(), anyio.Event()

    @tool
    async def slow_lookup(q: str) -> dict[str, str]:
        """Takes its time."""
        started.set()
        try:
            await anyio.sleep(30)
        finally:
            cancelled.set()
        return {"never": q}

    script = (
        Answer(660.0, 0.4, "Found it.", tool=("slow_lookup", {"q": "x"})),
        Answer(770.0, 0.4, "Anything else?"),
    )
    caller = speech(24000, (True, 0.4), (False, 0.8), (True, 0.4), (False, 2.0))
    spec = CallSpec(caller=caller, caller_hangup_after_s=4.0)
    async with GeminiLiveStandIn(script=script) as standin:
        adapter = GeminiLiveAdapter(standin.client())
        sim, result, _ = await run_bridge(
            sandbox, make_config, spec, adapter, rate=24000, tools=[slow_lookup]
        )
        conn = standin.connections[0]
    assert started.is_set()
    assert cancelled.is_set()  # the tool's task was cancelled, not left running
    assert [(t.name, t.outcome) for t in result.stats.tools] == [("slow_lookup", "cancelled")]
    assert len(conn.cancelled_tool_ids) == 1
    assert conn.tool_responses == []  # nothing sent for a cancelled call
    assert tone_seconds(sim.recording("caller"), 24000, 770.0) >= 0.3  # the talk went on
