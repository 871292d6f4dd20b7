"""Inbound calls through the official client: answer and echo, hang-ups, interruption.

Each scenario drives the unchanged official ``telcoflow`` 1.0.0 client through its documented
API against a fresh sandbox subprocess, places the call through the sandbox's HTTP API and
checks, on the sandbox's recordings, who heard whom.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from interop_kit import (
    Audio,
    Handled,
    OfficialAgent,
    SandboxApi,
    SandboxInfo,
    async_test,
    collect_audio,
    poll_until,
    seconds_of,
    tone_pcm,
    within,
)

from telcoflow import (
    Call,
    CallAudioConfig,
    CallErrorCode,
    CallEvent,
    CloseReason,
    SessionActivityType,
)

CALLER = "+6590000001"
CALLER_HZ = 440
AGENT_HZ = 1000


@async_test
async def test_answer_and_echo(sandbox: SandboxInfo) -> None:
    """The README's quick start: answer, echo ``audio_stream()`` back with ``send_audio``; the
    caller hangs up; ``on_terminated`` and ``on_closed(CALL_TERMINATED)`` fire, and the caller
    heard its own tone echoed back, within credit."""
    rate = 16000
    seen: dict[str, Any] = {}
    echo_done = asyncio.Event()

    async def echo(handled: Handled) -> None:
        call = handled.call
        seen["answer_sent"] = time.time()
        seen["answer"] = await call.answer()
        seen["answered"] = time.time()
        async for chunk in call.audio_stream():
            await call.send_audio(chunk)
        seen["close"] = await call.close()  # as the README does; the call is over already
        echo_done.set()

    async with (
        SandboxApi(sandbox) as api,
        OfficialAgent(sandbox, sample_rate=rate, on_call=echo) as agent,
    ):
        call_id = await api.place_call({"from": CALLER, "caller": {"tone_hz": CALLER_HZ}})
        handled = await agent.next_call()
        noti = handled.notification
        assert noti is not None
        assert noti.activity == SessionActivityType.NEW_INCOMING_CALL
        assert noti.channel == "TELCO"
        assert (noti.remote_address, noti.local_address) == (CALLER, sandbox.number)
        assert isinstance(noti.created_at, int)
        assert noti.created_at > 0
        assert handled.call.id == call_id
        assert (handled.call.caller_number, handled.call.callee_number) == (CALLER, sandbox.number)
        assert handled.session.id == noti.session_id

        echoed = seconds_of(rate, 1.5)
        state = await api.wait_call(
            call_id,
            lambda c: c["stats"]["agent_bytes_received"] >= echoed,
            "1.5 s of echoed audio at the sandbox",
        )
        assert seen["answer"], seen["answer"]
        assert state["state"] == "ANSWERED"
        assert state["bound_to"] == agent.id
        assert state["sample_rate"] == rate
        hung_up = time.time()
        await api.hangup(call_id)

        await handled.wait_terminated()
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED
        await within(echo_done.wait(), 10, "the echo loop's audio_stream() to end")
        assert seen["close"], seen["close"]

        final = await api.call(call_id)
        assert final["state"] == "DISCONNECTED"
        assert final["ended_reason"] == "caller_hangup"
        stats = final["stats"]
        assert stats["agent_bytes_received"] >= echoed
        assert stats["excess_bytes"] == 0
        assert stats["echo_latency_ms"] is not None
        assert [(c["command"], c["success"]) for c in final["commands"]] == [("call.answer", True)]

        heard = await api.recording(call_id, "caller")
        assert heard.rate == rate
        # Once answered, the caller heard its own tone come back.
        heard.assert_heard(
            CALLER_HZ, heard.at(seen["answered"]) + 0.3, heard.at(hung_up) - 0.1, "the caller"
        )


@async_test
async def test_interrupt_stops_the_agent_soon(sandbox: SandboxInfo) -> None:
    """Barge-in: with seconds of agent audio queued, ``clear_send_audio_buffer()`` returns what
    it dropped, and the caller stops hearing the agent at once; audio sent afterwards plays."""
    rate = 16000
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox, sample_rate=rate) as agent:
        call_id = await api.place_call({"from": CALLER, "caller": {"silence": True}})
        handled = await agent.next_call()
        call = handled.call
        assert await call.answer()
        answered = time.time()
        await call.send_audio(tone_pcm(AGENT_HZ, rate, 5.0))
        await api.wait_call(
            call_id,
            lambda c: c["stats"]["agent_bytes_received"] >= seconds_of(rate, 1.0),
            "the agent's first second at the sandbox",
        )
        interrupting = time.time()
        cleared = await call.clear_send_audio_buffer()
        interrupted = time.time()
        assert cleared >= seconds_of(rate, 3.0), f"only {cleared} bytes were still queued"
        assert await call.get_send_audio_buffer_size() == 0

        heard = await api.recording_until(call_id, "caller", interrupted + 1.0)
        heard.assert_heard(
            AGENT_HZ, heard.at(answered) + 0.3, heard.at(interrupting) - 0.1, "the caller"
        )
        heard.assert_not_heard(
            AGENT_HZ, heard.at(interrupted) + 0.1, heard.at(interrupted) + 1.0, "the caller"
        )
        state = await api.call(call_id)
        assert state["stats"]["agent_bytes_received"] < seconds_of(rate, 2.0)
        assert [(c["command"], c["success"]) for c in state["commands"]] == [
            ("call.answer", True),
            ("agent.interrupt", True),
        ]

        # After the interruption the agent speaks again, within the credit the sandbox grants.
        received = state["stats"]["agent_bytes_received"]
        resumed = time.time()
        await call.send_audio(tone_pcm(AGENT_HZ, rate, 1.0))
        await api.wait_call(
            call_id,
            lambda c: c["stats"]["agent_bytes_received"] >= received + seconds_of(rate, 1.0),
            "the agent's audio after the interruption",
        )
        finished = time.time()
        heard = await api.recording(call_id, "caller")
        heard.assert_heard(AGENT_HZ, heard.at(resumed) + 0.2, heard.at(finished), "the caller")
        assert (await api.call(call_id))["stats"]["excess_bytes"] == 0

        assert await call.disconnect()
        await handled.wait_terminated()
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED
        final = await api.call(call_id)
        assert (final["state"], final["ended_reason"]) == ("DISCONNECTED", "agent_disconnect")


@async_test
async def test_caller_hangup_ends_the_stream(sandbox: SandboxInfo) -> None:
    """The caller hangs up on its own (``caller_hangup_after_s``): ``on_terminated`` fires,
    ``audio_stream()`` ends, ``on_closed(CALL_TERMINATED)``; the agent had heard the caller."""
    rate = 8000
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox, sample_rate=rate) as agent:
        call_id = await api.place_call(
            {"from": CALLER, "caller": {"tone_hz": CALLER_HZ}, "caller_hangup_after_s": 1.5}
        )
        handled = await agent.next_call()
        assert await handled.call.answer()
        reader = agent.spawn(collect_audio(handled))
        await handled.wait_terminated()
        await within(reader, 5, "audio_stream() to end after the hang-up")
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED

        final = await api.call(call_id)
        assert (final["state"], final["ended_reason"]) == ("DISCONNECTED", "caller_hangup")
        heard = Audio.from_pcm(bytes(handled.received), rate)
        assert heard.duration >= 1.0, f"the agent got only {heard.duration:.2f} s of audio"
        heard.assert_heard(CALLER_HZ, 0.1, heard.duration - 0.1, "the agent")
        assert handled.session.is_closed


@async_test
async def test_call_error_event(sandbox: SandboxInfo) -> None:
    """A server-side ``call.error`` (the ``call_error`` fault) reaches the handler registered
    with ``on_call_event(CallEvent.CALL_ERROR)`` with ``error_code`` and ``error_message``; the
    call goes on."""
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox) as agent:
        call_id = await api.place_call({"from": CALLER})
        handled = await agent.next_call()
        call = handled.call
        errors: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        call.on_call_event(CallEvent.CALL_ERROR)(errors.put_nowait)
        assert await call.answer()
        await api.fault(
            {
                "kind": "call_error",
                "call_id": call_id,
                "error_code": CallErrorCode.TTS_SESSION_ERROR.value,
                "error_message": "voice cloning failed",
            }
        )
        data = await within(errors.get(), 10, "the call.error event")
        assert data["error_code"] == CallErrorCode.TTS_SESSION_ERROR
        assert data.get("error_message") == "voice cloning failed"
        assert not handled.terminated.is_set()
        assert (await api.call(call_id))["state"] == "ANSWERED"
        assert await call.close()
        await handled.wait_terminated()
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED
        final = await api.call(call_id)
        assert (final["state"], final["ended_reason"]) == ("DISCONNECTED", "agent_close")


@async_test
async def test_hand_off_with_to_json(sandbox: SandboxInfo) -> None:
    """Distributed handling: the call is serialised with ``to_json()`` and rebuilt with
    ``Call.from_json()`` (as on another node, without a session); the rebuilt call answers with
    the token of ``call.in`` and echoes; the original session still learns of the end."""
    rate = 16000
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox, sample_rate=rate) as agent:
        call_id = await api.place_call({"from": CALLER, "caller": {"tone_hz": CALLER_HZ}})
        handled = await agent.next_call()
        moved = Call.from_json(
            handled.call.to_json(), audio_config=CallAudioConfig(sample_rate=rate)
        )
        assert (moved.id, moved.caller_number) == (call_id, CALLER)
        ended = asyncio.Event()
        moved.on_terminated(ended.set)
        assert await moved.answer()
        answered = time.time()

        async def echo() -> None:
            async for chunk in moved.audio_stream():
                await moved.send_audio(chunk)

        echoing = agent.spawn(echo())
        await api.wait_call(
            call_id,
            lambda c: c["stats"]["agent_bytes_received"] >= seconds_of(rate, 1.0),
            "a second of echo from the rebuilt call",
        )
        hung_up = time.time()
        await api.hangup(call_id)
        await within(ended.wait(), 10, "on_terminated of the rebuilt call")
        await within(echoing, 5, "the rebuilt call's audio_stream() to end")
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED
        heard = await api.recording(call_id, "caller")
        heard.assert_heard(
            CALLER_HZ, heard.at(answered) + 0.3, heard.at(hung_up) - 0.1, "the caller"
        )


@async_test
async def test_media_connection_lost(sandbox: SandboxInfo) -> None:
    """The sandbox drops the media connection (``drop_media``): ``audio_stream()`` ends and the
    session closes with ``CALL_TERMINATED`` (the call is lost: ``media_lost``)."""
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox) as agent:
        call_id = await api.place_call({"from": CALLER})
        handled = await agent.next_call()
        assert await handled.call.answer()
        reader = agent.spawn(collect_audio(handled))
        await poll_until(_received(handled), lambda n: n > 0, "audio at the agent")
        await api.fault({"kind": "drop_media", "call_id": call_id})
        await within(reader, 10, "audio_stream() to end when the media connection is lost")
        assert await handled.wait_closed() == CloseReason.CALL_TERMINATED
        final = await api.wait_call(call_id, lambda c: c["state"] == "DISCONNECTED", "the end")
        assert final["ended_reason"] == "media_lost"


def _received(handled: Handled) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return len(handled.received)

    return count


@async_test
async def test_failed_command_can_be_retried(sandbox: SandboxInfo) -> None:
    """A refused command (the ``fail_command`` fault) is a falsy ``CommandResult`` carrying the
    server's code, not an exception; the call is unchanged and the command can be retried."""
    async with SandboxApi(sandbox) as api, OfficialAgent(sandbox) as agent:
        call_id = await api.place_call({"from": CALLER})
        handled = await agent.next_call()
        await api.fault(
            {"kind": "fail_command", "command": "call.answer", "error_code": "INTERNAL_ERROR"}
        )
        result = await handled.call.answer()
        assert not result
        assert result.error_code == "INTERNAL_ERROR", result
        assert result.error_message
        assert (await api.call(call_id))["state"] == "PENDING"
        assert await handled.call.answer()
        assert (await api.call(call_id))["state"] == "ANSWERED"
        assert await handled.call.disconnect()
        await handled.wait_terminated()


@async_test
async def test_concurrent_calls_stay_apart(sandbox: SandboxInfo) -> None:
    """Five echo calls at once on one session manager, each caller with a tone of its own: each
    caller hears its own tone and nobody else's."""
    rate = 16000
    tones = {f"+659000010{i}": 500.0 + 150 * i for i in range(5)}

    async def echo(handled: Handled) -> None:
        assert await handled.call.answer()
        async for chunk in handled.call.audio_stream():
            await handled.call.send_audio(chunk)

    async with (
        SandboxApi(sandbox) as api,
        OfficialAgent(sandbox, sample_rate=rate, on_call=echo) as agent,
    ):
        call_ids = await asyncio.gather(
            *(api.place_call({"from": n, "caller": {"tone_hz": hz}}) for n, hz in tones.items())
        )
        for call_id in call_ids:
            await api.wait_call(
                call_id,
                lambda c: c["stats"]["agent_bytes_received"] >= seconds_of(rate, 1.5),
                f"1.5 s of echo on {call_id}",
            )
        for call_id in call_ids:
            state = await api.call(call_id)
            heard = await api.recording(call_id, "caller")
            own = tones[state["from"]]
            heard.assert_heard(own, heard.duration - 1.0, heard.duration, f"caller {state['from']}")
            for other in set(tones.values()) - {own}:
                heard.assert_not_heard(other, 0.0, heard.duration, f"caller {state['from']}")
            assert state["stats"]["excess_bytes"] == 0
        assert sorted(h.call.id for h in agent.handled) == sorted(call_ids)
        for call_id in call_ids:
            await api.hangup(call_id)
        for handled in agent.handled:
            await handled.wait_terminated()
            assert await handled.wait_closed() == CloseReason.CALL_TERMINATED


@async_test
async def test_call_ringing_before_the_client_connects(sandbox: SandboxInfo) -> None:
    """A call placed while no client is connected keeps ringing; a client that connects then is
    notified of it (``RESUME``, no sooner than a second after its setup, so the official client
    does not lose it) and takes it."""
    async with SandboxApi(sandbox) as api:
        call_id = await api.place_call({"from": CALLER})
        async with OfficialAgent(sandbox) as agent:
            connected = time.monotonic()
            handled = await agent.next_call()
            assert time.monotonic() - connected >= 0.9
            assert handled.call.id == call_id
            assert handled.notification is not None
            assert handled.notification.activity == SessionActivityType.RESUME
            assert await handled.call.answer()
            assert (await api.call(call_id))["state"] == "ANSWERED"
            await api.hangup(call_id)
            await handled.wait_terminated()
