"""Three-way calls through the official client: ``connect`` and the agent's modes, checked on
what each party heard; unanswered and declined connects; isolated audio."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from interop_kit import (
    Audio,
    OfficialAgent,
    Recording,
    SandboxApi,
    SandboxInfo,
    async_test,
    collect_audio,
    poll_until,
    seconds_of,
    tone_pcm,
    within,
)

from telcoflow import AudioMode, CloseReason

CALLER = "+6590000001"
CALLER_HZ = 440
CALLEE_HZ = 880
AGENT_HZ = 1000
#: How long the agent speaks in each mode.
SEGMENT_S = 1.5


@async_test
async def test_connect_barge_whisper_spy_close(sandbox: SandboxInfo) -> None:
    """``connect`` rings the callee (who answers after 0.5 s); the agent speaks a 1000 Hz tone in
    barge (caller and callee hear it), whisper (only the callee) and spy (nobody); after
    ``close()`` the caller and the callee stay connected without the agent."""
    rate = 24000
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox, sample_rate=rate) as agent:
        call_id = await api.place_call(
            {
                "from": CALLER,
                "caller": {"tone_hz": CALLER_HZ},
                "callee": {"answer_after_s": 0.5, "tone_hz": CALLEE_HZ},
            }
        )
        handled = await agent.next_call()
        call = handled.call
        assert await call.answer()
        ringing = time.monotonic()
        result = await call.connect(ring_time_seconds=10)
        assert result, result
        assert time.monotonic() - ringing >= 0.4, "connect returned before the callee answered"
        state = await api.call(call_id)
        assert (state["state"], state["agent_mode"]) == ("CONNECTED", "barge")

        segment = tone_pcm(AGENT_HZ, rate, SEGMENT_S)
        sent = 0
        windows: dict[str, tuple[float, float]] = {}
        for mode in ("barge", "whisper", "spy"):
            result = await getattr(call, mode)()
            assert result, (mode, result)
            began = time.time()
            assert (await api.call(call_id))["agent_mode"] == mode
            await call.send_audio(segment)
            sent += len(segment)
            await api.wait_call(
                call_id,
                lambda c, sent=sent: c["stats"]["agent_bytes_received"] >= sent,
                f"the agent's {mode} tone at the sandbox",
            )
            # Until now the tone played without a gap (the sandbox grants 200 ms ahead).
            windows[mode] = (began, time.time())

        closing = time.time()
        assert await call.close()
        await handled.wait_terminated()
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED
        state = await api.call(call_id)
        assert (state["state"], state["agent_mode"]) == ("CONNECTED", None), state
        assert state["ended_reason"] is None
        assert state["stats"]["excess_bytes"] == 0
        assert [(c["command"], c["success"]) for c in state["commands"]] == [
            ("call.answer", True),
            ("call.connect", True),
            ("agent.barge", True),
            ("agent.whisper", True),
            ("agent.spy", True),
            ("call.close", True),
        ]

        after = closing + 1.0
        caller = await api.recording_until(call_id, "caller", after)
        callee = await api.recording_until(call_id, "callee", after)
        heard_by_agent = await api.recording(call_id, "agent")
        (b0, b1), (w0, w1), (s0, s1) = windows["barge"], windows["whisper"], windows["spy"]

        def on(rec: Recording, t0: float, t1: float) -> tuple[float, float]:
            return rec.at(t0), rec.at(t1)

        # Barge: both hear the agent.
        caller.assert_heard(AGENT_HZ, *on(caller, b0 + 0.2, b1), "the caller (barge)")
        callee.assert_heard(AGENT_HZ, *on(callee, b0 + 0.2, b1), "the callee (barge)")
        # Whisper: only the callee; from then on the caller never hears the agent again.
        callee.assert_heard(AGENT_HZ, *on(callee, w0 + 0.2, w1), "the callee (whisper)")
        caller.assert_not_heard(AGENT_HZ, *on(caller, w0 + 0.15, after), "the caller (whisper on)")
        # Spy: nobody, and nobody after the agent left.
        callee.assert_not_heard(AGENT_HZ, *on(callee, s0 + 0.15, after), "the callee (spy on)")
        # Caller and callee hear each other all along, and still after close().
        caller.assert_heard(CALLEE_HZ, *on(caller, b0, after), "the caller (the callee)")
        callee.assert_heard(CALLER_HZ, *on(callee, b0, after), "the callee (the caller)")
        # The agent heard both, whatever its mode.
        for hz in (CALLER_HZ, CALLEE_HZ):
            heard_by_agent.assert_heard(hz, *on(heard_by_agent, b0, s1), "the agent")

        await api.hangup(call_id)
        final = await api.call(call_id)
        assert (final["state"], final["ended_reason"]) == ("DISCONNECTED", "caller_hangup")


@pytest.mark.parametrize(
    ("callee", "code"),
    [({"answer": False}, "CALL_UNANSWERED"), ({"decline": True}, "CALL_REJECTED")],
    ids=["unanswered", "declined"],
)
@async_test
async def test_failed_connect_keeps_the_call(
    sandbox: SandboxInfo, callee: dict[str, Any], code: str
) -> None:
    """A callee who does not answer (or declines): ``connect`` returns a falsy ``CommandResult``
    with the code; the call stays ANSWERED and the agent can go on (here: disconnect)."""
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox) as agent:
        call_id = await api.place_call({"from": CALLER, "callee": callee})
        handled = await agent.next_call()
        call = handled.call
        assert await call.answer()
        result = await call.connect(ring_time_seconds=2)
        assert not result
        assert result.success is False
        assert result.error_code == code, result
        state = await api.call(call_id)
        assert (state["state"], state["agent_mode"]) == ("ANSWERED", None), state
        last = dict(state["commands"][-1])
        assert isinstance(last.pop("at_s"), float)  # where it arrived on the timeline
        assert last == {
            "command": "call.connect",
            "success": False,
            "error_code": code,
        }
        assert not handled.terminated.is_set()

        assert await call.disconnect()
        await handled.wait_terminated()
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED
        final = await api.call(call_id)
        assert (final["state"], final["ended_reason"]) == ("DISCONNECTED", "agent_disconnect")


@async_test
async def test_isolated_audio_channels(sandbox: SandboxInfo) -> None:
    """``AudioMode.ISOLATED``: ``audio_stream()`` (channel 0) is the mix, channel 1 the caller's
    leg, channel 2 the callee's, once connected."""
    rate = 16000
    agent_ = OfficialAgent(sandbox, sample_rate=rate, audio_mode=AudioMode.ISOLATED)
    async with SandboxApi(sandbox) as api, agent_ as agent:
        call_id = await api.place_call(
            {
                "from": CALLER,
                "caller": {"tone_hz": CALLER_HZ},
                "callee": {"answer_after_s": 0.2, "tone_hz": CALLEE_HZ},
            }
        )
        handled = await agent.next_call()
        call = handled.call
        assert await call.answer()
        assert await call.connect(ring_time_seconds=5)
        legs: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}

        async def read(channel: int) -> None:
            async for chunk in call.audio_stream(channel):
                legs[channel] += chunk

        readers = [agent.spawn(collect_audio(handled))] + [agent.spawn(read(ch)) for ch in legs]
        want = seconds_of(rate, 1.0)

        async def lengths() -> list[int]:
            return [len(handled.received), len(legs[1]), len(legs[2])]

        await poll_until(lengths, lambda n: min(n) >= want, "a second of every channel")
        assert (await api.call(call_id))["state"] == "CONNECTED"
        mixed = Audio.from_pcm(bytes(handled.received), rate)
        caller_leg = Audio.from_pcm(bytes(legs[1]), rate)
        callee_leg = Audio.from_pcm(bytes(legs[2]), rate)
        # The mix started before the callee answered: look at its last second.
        end = mixed.duration
        mixed.assert_heard(CALLER_HZ, end - 1.0, end, "channel 0 (the caller)")
        mixed.assert_heard(CALLEE_HZ, end - 1.0, end, "channel 0 (the callee)")
        caller_leg.assert_heard(CALLER_HZ, 0.0, caller_leg.duration, "channel 1")
        caller_leg.assert_not_heard(CALLEE_HZ, 0.0, caller_leg.duration, "channel 1")
        callee_leg.assert_heard(CALLEE_HZ, 0.0, callee_leg.duration, "channel 2")
        callee_leg.assert_not_heard(CALLER_HZ, 0.0, callee_leg.duration, "channel 2")

        assert await call.disconnect()
        await handled.wait_terminated()
        for reader in readers:
            await within(reader, 5, "every audio_stream() to end with the call")


@async_test
async def test_caller_hangs_up_while_the_callee_rings(sandbox: SandboxInfo) -> None:
    """The caller hangs up during ``connect``: the command is answered at once with
    ``CALL_TERMINATED`` (not after the ring time), and the call ends for the agent."""
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox) as agent:
        call_id = await api.place_call({"from": CALLER, "callee": {"answer_after_s": 30}})
        handled = await agent.next_call()
        assert await handled.call.answer()
        connecting = asyncio.ensure_future(handled.call.connect(ring_time_seconds=60))
        await api.wait_call(
            call_id,
            lambda c: any(x["command"] == "call.connect" for x in c["commands"]),
            "the connect command at the sandbox",
        )
        await api.hangup(call_id)
        result = await within(connecting, 5, "connect to return after the caller hung up")
        assert not result
        assert result.error_code == "CALL_TERMINATED", result
        await handled.wait_terminated()
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED


@async_test
async def test_connect_without_answering(sandbox: SandboxInfo) -> None:
    """``connect`` straight from ringing (PENDING): on the callee's answer the call is CONNECTED
    with the agent in barge; modes need a connected call (``whisper`` before it is refused with
    ``INVALID_STATE``, as a falsy result)."""
    rate = 16000
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox, sample_rate=rate) as agent:
        call_id = await api.place_call(
            {
                "from": CALLER,
                "caller": {"tone_hz": CALLER_HZ},
                "callee": {"answer_after_s": 0.3, "tone_hz": CALLEE_HZ},
            }
        )
        handled = await agent.next_call()
        call = handled.call
        assert await call.clear_send_audio_buffer() == 0  # agent.interrupt: allowed while ringing
        early = await call.whisper()  # refused while ringing
        assert not early
        assert early.error_code == "INVALID_STATE", early
        assert await call.connect(ring_time_seconds=5)
        connected = time.time()
        state = await api.call(call_id)
        assert (state["state"], state["agent_mode"]) == ("CONNECTED", "barge")
        caller = await api.recording_until(call_id, "caller", connected + 1.0)
        caller.assert_heard(
            CALLEE_HZ, caller.at(connected) + 0.1, caller.at(connected + 1.0), "the caller"
        )
        await api.hangup_callee(call_id)
        await handled.wait_terminated()
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED
        final = await api.call(call_id)
        assert (final["state"], final["ended_reason"]) == ("DISCONNECTED", "callee_hangup")
