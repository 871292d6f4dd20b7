"""The bridge end to end over the sandbox with the in-process ScriptedModel, on asyncio and trio.

The caller speaks tones (440 Hz), the model answers with tones of its own per answer, so the
caller's recording shows which answer was heard and when it stopped; the sandbox's command log
shows what the agent sent; the model's own record shows what the bridge told it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from telcoflow import CallState, TelcoflowClient, TelcoflowClientConfig
from telcoflow.audio import silence, tone, tone_level, write_wav
from telcoflow.bridge import (
    BridgeResult,
    ModelAdapter,
    ScriptedModel,
    bridge,
    end_call,
    tool,
    transfer,
)
from telcoflow.call import ActiveCall
from telcoflow.sandbox import CallSpec, Sandbox, SimCall, Voice
from telcoflow.testing import CallInbox, tone_seconds
from telcoflow.testing._engine import Answer

from ..helpers import WAIT, live_task_names

pytestmark = pytest.mark.anyio

CALLER_HZ, FIRST_HZ, SECOND_HZ, FAREWELL_HZ = 440, 660, 770, 880


def speech(rate: int, *parts: tuple[bool, float]) -> Voice:
    """A caller who talks (440 Hz) and pauses as given, then is quiet."""
    pcm = b"".join(tone(CALLER_HZ, s, rate) if talk else silence(s, rate) for talk, s in parts)
    return Voice.from_wav(write_wav(None, pcm, rate), loop=False)


def spans(sim: SimCall, party: str, hz: float) -> list[tuple[float, float]]:
    """When ``party`` heard ``hz``: (start, end) in seconds, in 100 ms windows."""
    pcm, rate = sim.recording(party), sim.sample_rate or 24000
    step = int(rate * 0.1) * 2
    out: list[tuple[float, float]] = []
    for i in range(0, len(pcm) - step + 1, step):
        if tone_level(pcm[i : i + step], rate, hz) >= 0.02:
            a, b = i / (2 * rate), (i + step) / (2 * rate)
            out = [*out[:-1], (out[-1][0], b)] if out and out[-1][1] == a else [*out, (a, b)]
    return out


async def run_bridge(
    sandbox: Sandbox,
    make_config: Callable[..., TelcoflowClientConfig],
    spec: CallSpec,
    model: ModelAdapter,
    *,
    rate: int = 24000,
    client_options: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[SimCall, BridgeResult, ActiveCall]:
    config = make_config(sample_rate=rate, **(client_options or {}))
    async with TelcoflowClient(config) as client:
        with CallInbox(client) as inbox:
            sim = await sandbox.create_call(spec)
            call = await inbox.next()
            with anyio.fail_after(WAIT + 10):
                result = await bridge(call, model, **options)
            with anyio.fail_after(WAIT):  # ended, or left by the agent (a transfer)
                await sim.wait_for(
                    lambda c: (
                        c.ended_reason is not None
                        or (c.agent is None and c.state is CallState.CONNECTED)
                    )
                )
    return sim, result, call


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_barge_in_stops_the_answer_and_the_next_is_heard_whole(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig], rate: int
) -> None:
    caller = speech(rate, (True, 0.5), (False, 0.8), (True, 0.4), (False, 2.2))
    model = ScriptedModel()
    spec = CallSpec(caller=caller, caller_hangup_after_s=3.8)
    sim, result, _ = await run_bridge(sandbox, make_config, spec, model, rate=rate)

    # The model heard the caller at its own rate (16 kHz), pitch kept.
    heard16 = bytes(model.conversation.heard[16000])
    assert tone_level(heard16[:16000], 16000, CALLER_HZ) > 0.05
    assert model.conversation.turns == 2
    # The first answer stopped at the barge-in; nothing of it after; the second whole.
    barge_in = spans(sim, "agent", CALLER_HZ)[1][0]
    first = spans(sim, "caller", FIRST_HZ)
    assert first
    assert first[-1][1] <= barge_in + 0.35, (first, barge_in)
    assert 0.2 <= tone_seconds(sim.recording("caller"), rate, FIRST_HZ) < 0.95
    assert tone_seconds(sim.recording("caller"), rate, SECOND_HZ) >= 0.8
    # One interrupt, sent once; the model was told what was heard, never more than generated.
    sent = [c["command"] for c in sim.commands]
    assert sent.count("agent.interrupt") == 1, sent
    interrupt_at = next(c["at_s"] for c in sim.commands if c["command"] == "agent.interrupt")
    assert barge_in <= interrupt_at <= barge_in + 0.35, (interrupt_at, barge_in)
    assert [item for item, _ in model.truncations] == ["item_1"]
    heard_ms = model.truncations[0][1]
    recorded_ms = 1000 * tone_seconds(sim.recording("caller"), rate, FIRST_HZ)
    assert abs(heard_ms - recorded_ms) <= 200, (heard_ms, recorded_ms)
    assert model.errors == []
    assert result.ended_by == "call"
    assert result.reason == "caller_hangup"
    assert [i.item_id for i in result.stats.interruptions] == ["item_1"]
    # The transcript: two caller turns, the first answer cut to what was heard.
    agent = [t for t in result.transcript if t.role == "agent"]
    assert [t.interrupted for t in agent] == [True, False]
    assert 0 < agent[0].heard_fraction < 1
    assert agent[1].text == "Second answer."
    assert model.closed.is_set()


async def test_greeting_spoken_first_and_time_to_first_audio(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    quiet = speech(24000, (False, 3.0))
    model = ScriptedModel([Answer(FIRST_HZ, 1.0, "Hello, how can I help?")], connect_delay_s=0.3)
    spec = CallSpec(caller=quiet, caller_hangup_after_s=2.5)
    sim, result, _ = await run_bridge(sandbox, make_config, spec, model, greeting="Greet them")
    assert model.greetings == ["Greet them"]
    assert tone_seconds(sim.recording("caller"), 24000, FIRST_HZ) >= 0.9
    stats = result.stats
    assert stats.model_connect_s is not None
    assert stats.model_connect_s >= 0.3
    assert stats.ttfa_s is not None
    assert 0.3 <= stats.ttfa_s < 1.5, stats.ttfa_s
    # Heard by the caller no earlier than the TTFA says (the recording's first window).
    first_heard = spans(sim, "caller", FIRST_HZ)[0][0]
    assert first_heard >= stats.ttfa_s - 0.3
    assert [c["command"] for c in sim.commands] == ["call.answer"]


async def test_caller_audio_before_the_model_is_ready_is_kept(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    caller = speech(24000, (True, 0.5), (False, 2.0))
    model = ScriptedModel(connect_delay_s=0.8)
    spec = CallSpec(caller=caller, caller_hangup_after_s=2.8)
    sim, _result, _ = await run_bridge(sandbox, make_config, spec, model)
    # The caller spoke while the model was connecting: the turn was still heard and answered.
    assert model.conversation.turns == 1
    assert tone_seconds(sim.recording("caller"), 24000, FIRST_HZ) >= 0.5


async def test_tools_run_and_end_call_hangs_up_after_the_farewell(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    looked_up: list[str] = []

    @tool
    async def lookup(name: str, party_size: int = 2) -> dict[str, object]:
        """Find a booking."""
        looked_up.append(name)
        await anyio.sleep(0.2)  # a slow back end: audio and events go on meanwhile
        return {"booking": f"{name} x{party_size}"}

    script = [
        Answer(FIRST_HZ, 0.6, "Found it.", tool=("lookup", {"name": "Ada"})),
        Answer(FAREWELL_HZ, 1.0, "Goodbye!", tool=("end_call", {"reason": "done"})),
    ]
    caller = speech(24000, (True, 0.4), (False, 1.6), (True, 0.4), (False, 6.0))
    model = ScriptedModel(script)
    spec = CallSpec(caller=caller)
    sim, result, _ = await run_bridge(sandbox, make_config, spec, model, tools=[lookup, end_call])
    assert looked_up == ["Ada"]
    outputs = {r.id: r.output for r in model.tool_results}
    assert outputs["call_1"] == {"booking": "Ada x2"}
    assert outputs["call_2"]["status"] == "ending"
    # The farewell was heard in full, and only then the call was hung up.
    assert tone_seconds(sim.recording("caller"), 24000, FAREWELL_HZ) >= 0.9
    assert [c["command"] for c in sim.commands][-1] == "call.disconnect"
    assert result.ended_by == "end_call"
    assert result.reason == "done"
    assert sim.ended_reason is not None
    farewell_end = spans(sim, "caller", FAREWELL_HZ)[-1][1]
    caller_len = len(sim.recording("caller")) / 48000
    assert caller_len >= farewell_end
    assert [t.name for t in result.stats.tools] == ["lookup", "end_call"]
    assert all(t.outcome == "ok" for t in result.stats.tools)


async def test_a_raising_unknown_or_slow_tool_gives_the_model_an_error_and_the_call_goes_on(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    @tool
    def broken(x: int) -> int:
        """Always fails."""
        raise RuntimeError("the back end is down")

    @tool(timeout=0.2)
    async def slow() -> str:
        """Never answers in time."""
        await anyio.sleep(5)
        return "late"

    script = [
        Answer(FIRST_HZ, 0.4, "a", tool=("broken", {"x": 1})),
        Answer(FIRST_HZ, 0.4, "b", tool=("nope", {})),
        Answer(SECOND_HZ, 0.4, "c", tool=("slow", {})),
    ]
    caller = speech(
        24000, (True, 0.3), (False, 1.2), (True, 0.3), (False, 1.2), (True, 0.3), (False, 1.5)
    )
    model = ScriptedModel(script)
    spec = CallSpec(caller=caller, caller_hangup_after_s=5.0)
    sim, result, _ = await run_bridge(sandbox, make_config, spec, model, tools=[broken, slow])
    errors = [r.output["error"] for r in model.tool_results]
    assert errors[0] == "RuntimeError: the back end is down"
    assert errors[1] == "unknown tool 'nope'"
    assert "timed out" in errors[2]
    assert tone_seconds(sim.recording("caller"), 24000, SECOND_HZ) >= 0.3  # the call went on
    assert result.ended_by == "call"


async def test_caller_hangs_up_mid_answer_closes_the_model_and_leaves_no_task(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    caller = speech(24000, (True, 0.4), (False, 5.0))
    model = ScriptedModel([Answer(FIRST_HZ, 6.0, "A very long answer.")])
    spec = CallSpec(caller=caller, caller_hangup_after_s=1.5)
    _sim, result, _call = await run_bridge(sandbox, make_config, spec, model)
    assert result.ended_by == "call"
    assert result.reason == "caller_hangup"
    assert model.closed.is_set()
    assert not [n for n in live_task_names() if "bridge" in n], live_task_names()


async def test_late_deltas_of_an_interrupted_answer_are_dropped(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    caller = speech(24000, (True, 0.5), (False, 0.8), (True, 0.4), (False, 1.6))
    model = ScriptedModel(late_deltas=3)
    spec = CallSpec(caller=caller, caller_hangup_after_s=3.2)
    sim, result, _ = await run_bridge(sandbox, make_config, spec, model)
    assert result.stats.late_deltas_dropped == 3
    barge_in = spans(sim, "agent", CALLER_HZ)[1][0]
    assert spans(sim, "caller", FIRST_HZ)[-1][1] <= barge_in + 0.35


async def test_barge_in_takes_effect_while_an_answer_longer_than_the_send_buffer_is_queued(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    # A 6 s answer generated at 4x against a send buffer of 0.5 s: the player waits on the
    # call for room, the reader must still act on the caller's speech at once.
    caller = speech(24000, (True, 0.4), (False, 1.9), (True, 0.4), (False, 1.0))
    model = ScriptedModel([Answer(FIRST_HZ, 6.0, "long"), Answer(SECOND_HZ, 0.5, "b")], pace=4.0)
    spec = CallSpec(caller=caller, caller_hangup_after_s=3.5)
    sim, _result, _ = await run_bridge(
        sandbox, make_config, spec, model, client_options={"send_buffer_bytes": 24000}
    )
    barge_in = spans(sim, "agent", CALLER_HZ)[1][0]
    heard = spans(sim, "caller", FIRST_HZ)
    assert heard[-1][1] <= barge_in + 0.35, (heard, barge_in)
    assert [c["command"] for c in sim.commands].count("agent.interrupt") == 1
    assert model.errors == []


async def test_transfer_connects_only_after_the_farewell(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    script = [Answer(FAREWELL_HZ, 0.8, "Putting you through.", tool=("transfer", {}))]
    caller = speech(24000, (True, 0.4), (False, 6.0))
    model = ScriptedModel(script)
    spec = CallSpec(caller=caller)
    sim, result, _ = await run_bridge(sandbox, make_config, spec, model, tools=[transfer])
    assert result.ended_by == "transfer"
    assert tone_seconds(sim.recording("caller"), 24000, FAREWELL_HZ) >= 0.7
    sent = [c["command"] for c in sim.commands]
    assert sent[-2:] == ["call.connect", "call.close"], sent
    await sim.hangup_caller()


async def test_the_model_failing_to_open_raises_a_clear_error_and_leaves_the_call(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    class Broken(ScriptedModel):
        async def open(self, config: Any) -> None:
            raise OSError("connection refused")

    from telcoflow.bridge import ModelConnectError

    await sandbox.create_call()
    call = await inbox.next()
    with anyio.fail_after(WAIT), pytest.raises(ModelConnectError, match="connection refused"):
        await bridge(call, Broken())
    assert call.is_active  # the application decides: play a message, transfer, hang up
    await call.disconnect()


@pytest.mark.parametrize("local", [True, False], ids=["local-barge-in", "model-only"])
async def test_local_barge_in_stops_playout_the_model_does_not_report(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig], local: bool
) -> None:
    # A 4 s answer generated at 8x, so it sits in our queue; the model stops generating when
    # the caller talks but says nothing (Gemini's playout estimate ended before ours).
    caller = speech(24000, (True, 0.4), (False, 1.6), (True, 0.4), (False, 3.0))
    model = ScriptedModel(
        [Answer(FIRST_HZ, 4.0, "long"), Answer(SECOND_HZ, 0.5, "b")],
        pace=8.0,
        report_speech=False,
    )
    spec = CallSpec(caller=caller, caller_hangup_after_s=4.5)
    sim, result, _ = await run_bridge(sandbox, make_config, spec, model, local_barge_in=local)
    barge_in = spans(sim, "agent", CALLER_HZ)[1][0]
    heard_after = sum(
        max(0.0, b - max(a, barge_in + 0.3)) for a, b in spans(sim, "caller", FIRST_HZ)
    )
    sent = [c["command"] for c in sim.commands]
    if local:
        assert heard_after == 0, spans(sim, "caller", FIRST_HZ)
        assert sent.count("agent.interrupt") == 1
        assert len(result.stats.interruptions) == 1
    else:  # the control: without it the stale answer plays on
        assert heard_after >= 1.0
        assert "agent.interrupt" not in sent


async def test_per_turn_latency_and_the_caller_talking_over_the_farewell(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    # barge_in_farewell=True: talking over the goodbye stops it and keeps the call up.
    script = [
        Answer(FIRST_HZ, 0.5, "Hello."),
        Answer(FAREWELL_HZ, 2.0, "Goodbye then!", tool=("end_call", {})),
        Answer(SECOND_HZ, 0.5, "Oh, one more thing?"),
    ]
    caller = speech(24000, (True, 0.4), (False, 1.2), (True, 0.4), (False, 1.0), (True, 0.4))
    model = ScriptedModel(script)
    spec = CallSpec(caller=caller, caller_hangup_after_s=6.5)
    sim, result, _ = await run_bridge(
        sandbox, make_config, spec, model, tools=[end_call], barge_in_farewell=True
    )
    assert result.ended_by == "call"  # not end_call: the caller talked over the goodbye
    assert "call.disconnect" not in [c["command"] for c in sim.commands]
    assert tone_seconds(sim.recording("caller"), 24000, FAREWELL_HZ) < 1.8
    first = result.stats.turns[0]
    assert first.received_s is not None
    assert first.played_s is not None
    assert 0 <= first.received_s <= first.played_s < 1.0, first
