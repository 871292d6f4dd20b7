"""Faults injected by the sandbox, and what the SDK does under each."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio
import httpx
import pytest

from telcoflow import (
    CallState,
    TelcoflowClient,
    TelcoflowClientConfig,
    WSSCallClosedError,
    WSSCallCommandError,
    WSSCallCommandTimeoutError,
    WSSConnectionError,
    events,
)
from telcoflow.sandbox import CalleeSpec, Sandbox

from ..helpers import WAIT, CallInbox, state_of

pytestmark = pytest.mark.anyio

FAST_RECONNECT = {"initial_delay": 0.05, "max_delay": 0.2}


async def test_control_drop_keeps_calls_and_delivers_calls_rung_meanwhile(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    async with TelcoflowClient(make_config(reconnect=FAST_RECONNECT)) as client:
        inbox = CallInbox(client)
        first = await sandbox.create_call()
        call = await inbox.next()
        await call.answer()
        # Refuse reconnects for a moment so the second call surely rings while we are away.
        await sandbox.inject_fault({"kind": "refuse_connections", "seconds": 0.3})
        await sandbox.inject_fault({"kind": "drop_control"})
        second = await sandbox.create_call()
        assert second.offers == 0  # nobody to offer it to
        again = await inbox.next()  # delivered after the reconnect
        assert again.call_id == second.call_id
        assert client.reconnects == 1
        assert call.state is CallState.ANSWERED
        assert call.is_active
        await call.clear_send_audio_buffer()  # the old call still takes commands
        assert first.state is CallState.ANSWERED
        with anyio.move_on_after(0.3):  # nothing else may arrive: no duplicate offers
            duplicate = await inbox.next()
            pytest.fail(f"call {duplicate.call_id} delivered twice")
        inbox.close()


async def test_media_drop_terminates_once_and_fails_commands_in_flight(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim = await sandbox.create_call(callee=CalleeSpec(answer_after_s=30))
    call = await inbox.next()
    reasons: list[str] = []
    done = anyio.Event()
    call.on(events.CALL_TERMINATED, reasons.append)
    call.on(events.CALL_TERMINATED, done.set)
    await call.answer()
    chunks: list[bytes] = []

    async def consume() -> None:
        async for chunk in call.audio_stream():
            chunks.append(chunk)

    async def ring() -> None:
        with pytest.raises(WSSCallClosedError):
            await call.connect(ring_time_seconds=60)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            tg.start_soon(ring)
            await sim.wait_for(lambda c: len(c.commands) == 2)
            await sandbox.inject_fault({"kind": "drop_media", "call_id": sim.call_id})
        await done.wait()
    assert reasons == ["media_lost"]
    assert call.state is CallState.DISCONNECTED
    with pytest.raises(WSSCallClosedError):
        await call.answer()
    assert sim.ended_reason == "media_lost"


async def test_delayed_response_times_out_and_call_stays_usable(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    async with TelcoflowClient(make_config(command_timeout=0.3)) as client:
        inbox = CallInbox(client)
        sim = await sandbox.create_call()
        call = await inbox.next()
        await sandbox.inject_fault(
            {"kind": "delay_command", "seconds": 0.8, "command": "call.answer"}
        )
        with pytest.raises(WSSCallCommandTimeoutError) as info:
            await call.answer()
        assert info.value.command == "call.answer"
        assert info.value.call_id == call.call_id
        # The server did answer the call; the late response must be ignored, not misrouted.
        with anyio.fail_after(WAIT):
            await sim.wait_state(CallState.ANSWERED)
            await sim.wait_for(lambda c: c.commands[0]["success"] is True)
        await call.connect(ring_time_seconds=5)
        assert call.state is CallState.CONNECTED
        inbox.close()


async def test_failed_response_leaves_state(sandbox: Sandbox, inbox: CallInbox) -> None:
    sim = await sandbox.create_call()
    call = await inbox.next()
    await sandbox.inject_fault({"kind": "fail_command", "error_code": "INTERNAL_ERROR"})
    failed = anyio.Event()
    payloads: list[object] = []
    call.on(events.CALL_ANSWER_FAILED, payloads.append)
    call.on(events.CALL_ANSWER_FAILED, failed.set)
    with pytest.raises(WSSCallCommandError) as info:
        await call.answer()
    assert info.value.error_code == "INTERNAL_ERROR"
    assert call.state is CallState.PENDING
    assert sim.state is CallState.PENDING
    await call.answer()
    assert state_of(call) is CallState.ANSWERED
    with anyio.fail_after(WAIT):
        await failed.wait()
    assert payloads == [info.value]


async def test_malformed_frames_are_logged_and_ignored(
    sandbox: Sandbox, inbox: CallInbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="telcoflow")
    sim = await sandbox.create_call()
    call = await inbox.next()
    await call.answer()
    await sandbox.inject_fault({"kind": "malformed_frame"})
    await sandbox.inject_fault(
        {"kind": "malformed_frame", "target": "media", "call_id": sim.call_id}
    )
    await sandbox.inject_fault(
        {
            "kind": "malformed_frame",
            "target": "media",
            "call_id": sim.call_id,
            "payload": {"hex": "07"},
        }
    )
    await sandbox.inject_fault({"kind": "malformed_frame", "payload": '{"type": "surprise"}'})
    # Both connections survive: the call takes commands, and a new call is still offered.
    await call.clear_send_audio_buffer()
    await sandbox.create_call()
    other = await inbox.next()
    assert other.call_id != call.call_id
    bad = [r for r in caplog.records if "bad" in r.getMessage()]
    assert (
        len(bad) == 3
    )  # two malformed JSON frames and one short audio frame; "surprise" is unknown
    assert call.stats.protocol_errors == 2


async def test_refused_connections_retry_with_backoff_not_a_hot_loop(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    config = make_config(reconnect={"initial_delay": 0.1, "max_delay": 0.2})
    async with TelcoflowClient(config) as client:
        inbox = CallInbox(client)
        await sandbox.inject_fault({"kind": "refuse_connections", "seconds": 1.0})
        await sandbox.inject_fault({"kind": "drop_control"})
        sim = await sandbox.create_call()
        assert (await inbox.next()).call_id == sim.call_id  # delivered after the reconnect
        assert client.reconnects == 1
        inbox.close()
    # 1 s of refusals at 0.1 → 0.15 → 0.2 s (+ up to 20 % jitter): a handful of tries, not hundreds.
    refused = [u for u in sandbox.control_upgrades() if u.status == 503]
    assert 3 <= len(refused) <= 12


async def test_gives_up_only_if_configured(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    config = make_config(reconnect={"initial_delay": 0.05, "max_delay": 0.05, "max_attempts": 2})
    async with TelcoflowClient(config) as client:
        await sandbox.inject_fault({"kind": "refuse_connections", "seconds": 30})
        await sandbox.inject_fault({"kind": "drop_control"})
        with anyio.fail_after(WAIT), pytest.raises(WSSConnectionError, match="gave up after 2"):
            await client.run_forever()


async def test_fault_api_validates(sandbox: Sandbox) -> None:
    async with httpx.AsyncClient(base_url=sandbox.http_url) as http:
        for body, field in [
            ({"kind": "explode"}, "kind"),
            ({"kind": "drop_media"}, "call_id"),
            ({"kind": "delay_command"}, "seconds"),
            ({"kind": "refuse_connections", "seconds": -1}, "seconds"),
            ({"kind": "malformed_frame", "target": "elsewhere"}, "target"),
        ]:
            response = await http.post("/sandbox/faults", json=body)
            assert response.status_code == 400, body
            assert field in response.json()["error"]
        response = await http.post("/sandbox/faults", json={"kind": "fail_command"})
        assert response.status_code == 200
        assert response.json() == {"kind": "fail_command", "armed": "fail"}
