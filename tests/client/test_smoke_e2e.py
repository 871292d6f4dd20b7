"""The foundation end to end: a call offered, answered, echoed, connected and left."""

from __future__ import annotations

import anyio
import pytest

from telcoflow import CallState, events
from telcoflow.audio import tone_level
from telcoflow.sandbox import Sandbox

from ..helpers import WAIT, CallInbox, echo_audio, state_of

pytestmark = pytest.mark.anyio


async def test_answer_echo_connect_close(sandbox: Sandbox, inbox: CallInbox) -> None:
    sim = await sandbox.create_call()
    call = await inbox.next()
    assert call.call_id == sim.call_id
    assert call.caller_number == sim.spec.from_number
    fired: list[tuple[str, object]] = []
    for name in (events.CALL_ANSWERED, events.CALL_CONNECTED, events.CALL_TERMINATED):
        call.on(name, lambda payload, name=name: fired.append((name, payload)))
    delivered = anyio.Event()
    call.on(events.CALL_TERMINATED, delivered.set)
    await call.answer()
    assert call.state is CallState.ANSWERED
    await echo_audio(call)
    await call.connect(ring_time_seconds=5)
    assert state_of(call) is CallState.CONNECTED
    await call.close()
    with anyio.fail_after(WAIT):
        assert await call.wait_terminated() == "agent_close"
        await delivered.wait()
        await sim.wait_for(lambda c: c.agent is None)
    assert sim.state is CallState.CONNECTED  # caller and callee stay together
    await sim.hangup_caller()
    caller_heard = sim.recording("caller")
    assert tone_level(caller_heard, 24000, 440) > 0.02  # its own voice, echoed
    assert [name for name, _ in fired] == [
        events.CALL_ANSWERED,
        events.CALL_CONNECTED,
        events.CALL_TERMINATED,
    ]
