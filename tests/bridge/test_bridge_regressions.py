"""Defects a review of the bridge found, each shown by a test that failed before its fix.

The model here is a small hand-written adapter that does what real models do and the scripted
ones did not: audio, a tool call inside the same turn, then the farewell under the same item
id (as Gemini names answers by turn); an odd-length delta; nothing else.
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import AsyncIterator, Callable, Sequence

import anyio
import pytest

from telcoflow import TelcoflowClientConfig
from telcoflow.audio import tone, tone_level
from telcoflow.bridge import (
    AudioDelta,
    GenerationDone,
    ModelEvent,
    ScriptedModel,
    SessionConfig,
    ToolCall,
    ToolCalls,
    ToolResult,
    Turn,
    TurnDone,
    end_call,
)
from telcoflow.sandbox import CallSpec, Sandbox
from telcoflow.testing import tone_seconds

from .test_bridge_scripted import CALLER_HZ, FIRST_HZ, run_bridge, spans, speech

pytestmark = pytest.mark.anyio

FAREWELL_HZ = 880


class MidTurnTool:
    """Speaks, calls ``end_call`` within the same turn, then says a long goodbye at real time
    (under the same item id, or a new one)."""

    input_rate = 16000
    can_truncate = False

    def __init__(self, *, same_item: bool, odd_first: bool = False) -> None:
        self.same_item, self.odd_first = same_item, odd_first
        self._send, self._receive = anyio.create_memory_object_stream[str](10)
        self.results: list[ToolResult] = []
        self.events_closed = False

    async def open(self, config: SessionConfig) -> None:
        pass

    async def send_audio(self, pcm: bytes) -> None:
        pass

    async def respond(self, instructions: str | None = None) -> None:
        await self._send.send("go")

    async def interrupted(self, item_id: str | None, heard_ms: int) -> None:
        pass

    async def send_tool_results(self, results: Sequence[ToolResult]) -> None:
        self.results.extend(results)
        await self._send.send("results")

    async def aclose(self) -> None:
        self._send.close()
        self._receive.close()

    async def _speak(self, hz: int, seconds: float, item: str) -> AsyncIterator[AudioDelta]:
        pcm = tone(hz, seconds, 24000)
        bounds = [*range(0, len(pcm), 1920), len(pcm)]  # 40 ms deltas
        if self.odd_first:
            bounds[1] = 1921  # the first two deltas end mid-sample
        for a, b in itertools.pairwise(bounds):
            yield AudioDelta(pcm[a:b], 24000, item)
            await anyio.sleep(0.04)

    async def events(self) -> AsyncIterator[ModelEvent]:
        try:
            await self._receive.receive()
            async for e in self._speak(FIRST_HZ, 0.5, "turn_1"):
                yield e
            yield ToolCalls((ToolCall("c1", "end_call", {"reason": "bye"}),))
            await self._receive.receive()
            item = "turn_1" if self.same_item else "turn_2"
            async for e in self._speak(FAREWELL_HZ, 5.0, item):
                yield e
            yield GenerationDone(item)
            yield TurnDone()
            await anyio.sleep_forever()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return
        finally:
            self.events_closed = True


@pytest.mark.parametrize("same_item", [True, False], ids=["same-item", "new-item"])
async def test_the_farewell_after_a_mid_turn_end_call_is_heard_whole(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig], same_item: bool
) -> None:
    # Before: the farewell was tracked only as a *new* item, registered by a task that might
    # not have run yet; the hang-up came 3 s into a 5 s goodbye (when FAREWELL_START_S ran out).
    model = MidTurnTool(same_item=same_item)
    spec = CallSpec(caller=speech(24000, (False, 12.0)))
    sim, result, _ = await run_bridge(
        sandbox, make_config, spec, model, greeting=True, tools=[end_call]
    )
    assert result.ended_by == "end_call"
    assert tone_seconds(sim.recording("caller"), 24000, FAREWELL_HZ) >= 4.8
    assert [c["command"] for c in sim.commands] == ["call.answer", "call.disconnect"]


@pytest.mark.parametrize("rate", [16000, 24000])
async def test_an_odd_length_delta_is_carried_not_fatal(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig], rate: int
) -> None:
    # Before: at the model's rate bridge() raised ValueError out of the player; resampled,
    # soxr raised in the reader and the conversation ended with the caller left in silence.
    model = MidTurnTool(same_item=False, odd_first=True)
    spec = CallSpec(caller=speech(rate, (False, 10.0)))
    sim, result, _ = await run_bridge(
        sandbox, make_config, spec, model, rate=rate, greeting=True, tools=[end_call]
    )
    assert result.ended_by == "end_call"
    assert tone_seconds(sim.recording("caller"), rate, FIRST_HZ) >= 0.4


async def test_a_slow_transcript_hook_does_not_delay_the_answer(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    # Before: the hook ran in the reader task: a 1 s hook delayed the answer by 1 s.
    seen: list[Turn] = []

    async def hook(turn: Turn) -> None:
        if turn.role == "user":
            await anyio.sleep(1.0)
        seen.append(turn)

    spec = CallSpec(caller=speech(24000, (True, 0.4), (False, 3.0)), caller_hangup_after_s=3.0)
    sim, _result, _ = await run_bridge(
        sandbox, make_config, spec, ScriptedModel(), on_transcript=hook
    )
    said = spans(sim, "agent", CALLER_HZ)[0][1]
    first = spans(sim, "caller", FIRST_HZ)[0][0]
    assert first - said < 0.8, (said, first)  # 0.3 s end of turn + the bridge; not + 1 s
    assert [t.role for t in seen] == ["user", "agent"]  # in order, each once


async def test_the_model_events_are_closed_when_the_call_ends(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    # Before: the events generator was left to the garbage collector (a ResourceWarning on
    # trio, an error with warnings as errors) when the bridge was cancelled mid-iteration.
    model = MidTurnTool(same_item=False)
    spec = CallSpec(caller=speech(24000, (False, 3.0)), caller_hangup_after_s=0.8)
    await run_bridge(sandbox, make_config, spec, model, greeting=True)
    assert model.events_closed
    gc.collect()


class TwoAnswers(MidTurnTool):
    """A first answer ending on a stray byte, then a second answer (no tools)."""

    async def events(self) -> AsyncIterator[ModelEvent]:
        try:
            await self._receive.receive()
            pcm = tone(FIRST_HZ, 0.5, 24000) + b"\x00"  # ends with half a sample
            yield AudioDelta(pcm, 24000, "turn_1")
            yield GenerationDone("turn_1")
            async for e in self._speak(FAREWELL_HZ, 1.0, "turn_2"):
                yield e
            yield GenerationDone("turn_2")
            await anyio.sleep_forever()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return


async def test_a_stray_byte_at_the_end_of_an_answer_never_shifts_the_next(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    # Before: the odd byte was put in front of the next answer, which then played as noise
    # (tone level 0.25 -> 0.03 at full-scale RMS); a tone detector at 0.02 still "heard" it.
    spec = CallSpec(caller=speech(24000, (False, 4.0)), caller_hangup_after_s=2.5)
    sim, _, _ = await run_bridge(
        sandbox, make_config, spec, TwoAnswers(same_item=False), greeting=True
    )
    second = [
        w
        for a, b in spans(sim, "caller", FAREWELL_HZ)
        for w in [sim.recording("caller")[int(a * 48000) : int(b * 48000)]]
    ]
    assert second
    assert max(tone_level(w, 24000, FAREWELL_HZ) for w in second) > 0.2  # a clean tone


async def test_every_turn_of_the_result_reaches_a_slow_hook(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    # Before: turns still queued for the hook when the call ended were thrown away.
    seen: list[str] = []

    async def hook(turn: Turn) -> None:
        await anyio.sleep(0.8)
        seen.append(turn.role)

    spec = CallSpec(caller=speech(24000, (True, 0.4), (False, 3.0)), caller_hangup_after_s=2.0)
    _, result, _ = await run_bridge(
        sandbox, make_config, spec, ScriptedModel(), on_transcript=hook, close_timeout=3.0
    )
    assert [t.role for t in result.transcript] == ["user", "agent"]
    assert seen[-1:] == ["agent"]  # the last turn was reported after the call ended
