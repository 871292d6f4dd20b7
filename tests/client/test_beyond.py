"""What the SDK does beyond the official one: playback position, atomic interruption,
awaitable backpressure, command latencies, graceful drain, an async iterator of calls."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest

from telcoflow import (
    ActiveCall,
    BufferClosedError,
    BufferFullError,
    CallState,
    TelcoflowClient,
    TelcoflowClientConfig,
    events,
)
from telcoflow.audio import tone
from telcoflow.sandbox import Sandbox, SimCall, Voice
from telcoflow.testing import tone_seconds

from ..helpers import WAIT, CallInbox

pytestmark = pytest.mark.anyio

RATE = 24000
BPS = 2 * RATE


async def _answered(sandbox: Sandbox, inbox: CallInbox) -> tuple[SimCall, ActiveCall]:
    sim = await sandbox.create_call(caller=Voice.silence())
    call = await inbox.next()
    await call.answer()
    return sim, call


async def test_wait_played_returns_once_the_caller_heard_everything(
    sandbox: Sandbox, inbox: CallInbox
) -> None:
    sim, call = await _answered(sandbox, inbox)
    assert call.played_bytes == 0
    await call.send_audio(tone(660, 0.6, RATE))
    with anyio.fail_after(WAIT):
        await call.wait_played()
    assert call.get_send_audio_buffer_size() == 0
    assert call.playout_pending_bytes == 0
    assert call.played_bytes == int(0.6 * RATE) * 2  # to the byte: the sandbox grants it all back
    assert call.played_seconds == pytest.approx(0.6)
    # Hanging up now cuts nothing off: the caller heard the whole sentence.
    await call.disconnect()
    assert tone_seconds(sim.recording("caller"), RATE, 660) >= 0.5


async def test_interruption_drops_old_audio_atomically(sandbox: Sandbox, inbox: CallInbox) -> None:
    sim, call = await _answered(sandbox, inbox)
    await call.send_audio(tone(660, 2.0, RATE))  # a long sentence, 200 ms of it on the server
    with anyio.fail_after(WAIT):
        await sim.wait_for(lambda c: c.stats.agent_bytes_received >= int(0.3 * BPS))
        await call.clear_send_audio_buffer()
        await call.send_audio(tone(880, 0.5, RATE))  # the answer to the interruption
        await call.wait_played()
    assert call.played_seconds < 1.5  # interrupted audio does not count as played
    caller = sim.recording("caller")
    window = int(0.1 * RATE) * 2
    levels = [
        (
            tone_seconds(caller[i : i + window], RATE, 660),
            tone_seconds(caller[i : i + window], RATE, 880),
        )
        for i in range(0, len(caller) - window + 1, window)
    ]
    first_new = next(i for i, (_, new) in enumerate(levels) if new)
    # (the window where the new audio starts may hold the end of the old: skip it)
    after = levels[first_new + 1 :]
    assert not any(old for old, _ in after), "old audio played after the interruption"
    assert sum(new for _, new in levels) >= 0.4


async def test_send_audio_can_wait_for_room_instead_of_raising(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    async with TelcoflowClient(make_config(send_buffer_bytes=int(0.2 * BPS))) as client:
        inbox = CallInbox(client)
        sim, call = await _answered(sandbox, inbox)
        speech = tone(660, 1.5, RATE)
        with pytest.raises(BufferFullError):
            await call.send_audio(speech)
        assert call.get_send_audio_buffer_size() == 0  # nothing queued by the refusal
        with anyio.fail_after(WAIT):
            await call.send_audio(speech, wait=True)
            await call.wait_played()
        assert sim.stats.agent_bytes_received == len(speech)
        assert sim.stats.excess_bytes == 0
        inbox.close()


async def test_waiting_sender_learns_when_the_call_ends(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    async with TelcoflowClient(make_config(send_buffer_bytes=int(0.1 * BPS))) as client:
        inbox = CallInbox(client)
        sim, call = await _answered(sandbox, inbox)

        async def hang_up_while_it_waits() -> None:
            await sim.wait_for(lambda c: c.stats.agent_bytes_received > 0)
            await sim.hangup_caller()

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(hang_up_while_it_waits)
                speech = tone(660, 5.0, RATE)
                with pytest.raises(BufferClosedError, match="not queued"):
                    await call.send_audio(speech, wait=True)
        inbox.close()


async def test_stats_count_audio_and_command_latencies(sandbox: Sandbox, inbox: CallInbox) -> None:
    sim, call = await _answered(sandbox, inbox)
    await call.send_audio(tone(660, 0.2, RATE))
    with anyio.fail_after(WAIT):
        await call.wait_played()
        await sim.wait_for(lambda c: len(c.recordings["agent"]) >= BPS // 2)
    answer = call.stats.latency("call.answer")
    assert answer is not None
    assert answer["count"] == 1
    assert 0 < answer["p50"] < 1000
    assert call.stats.latency("call.connect") is None
    assert call.stats.bytes_sent == sim.stats.agent_bytes_received == int(0.2 * RATE) * 2
    assert call.stats.bytes_received > 0
    assert call.stats.dropped_inbound_chunks == 0


async def test_drain_takes_no_new_calls_and_waits_for_active_ones(
    sandbox: Sandbox, make_config: Callable[..., TelcoflowClientConfig]
) -> None:
    async with TelcoflowClient(make_config()) as draining:
        first = CallInbox(draining)
        sim = await sandbox.create_call()
        call = await first.next()
        assert call.call_id == sim.call_id
        await call.answer()
        async with TelcoflowClient(make_config()) as other:
            second = CallInbox(other)
            with anyio.fail_after(WAIT):
                await sandbox.wait_for(lambda: len(sandbox.control_sessions()) == 2)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(draining.drain, WAIT)
                    while not draining.draining:  # the drain task has not run yet
                        await anyio.lowlevel.checkpoint()
                    assert draining.connected  # still told of calls, claiming none
                    for _ in range(3):
                        newcomer = await sandbox.create_call()
                        assert (await second.next()).call_id == newcomer.call_id
                    assert call.state is CallState.ANSWERED  # the active call goes on
                    await sim.hangup_caller()  # ... until it ends: then drain returns
            assert not draining.connected
            assert draining.calls == []
            with pytest.raises(anyio.WouldBlock):
                first.next_nowait()
            first.close()
            second.close()


async def test_drain_deadline_closes_what_is_left(
    sandbox: Sandbox, client: TelcoflowClient, inbox: CallInbox
) -> None:
    sim, call = await _answered(sandbox, inbox)
    with anyio.fail_after(WAIT):
        await client.drain(0.2)
        await sim.wait_ended()
    assert sim.ended_reason == "agent_close"
    assert not call.is_active


async def test_incoming_calls_iterator(sandbox: Sandbox, client: TelcoflowClient) -> None:
    calls = client.incoming_calls()
    placed = [await sandbox.create_call(), await sandbox.create_call()]
    taken: list[str] = []
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:

            async def take() -> None:
                async for call in calls:
                    taken.append(call.call_id)
                    await call.answer()
                    if len(taken) == 2:
                        tg.start_soon(client.disconnect)

            tg.start_soon(take)
    assert taken == [p.call_id for p in placed]  # in order; the loop ended at disconnect


async def test_calls_reach_the_application_in_the_order_offered(
    sandbox: Sandbox, client: TelcoflowClient
) -> None:
    """Media connections open concurrently and may finish in any order; the handler still sees
    the calls in the order they were offered."""
    seen: list[str] = []
    all_seen = anyio.Event()

    def take(call: ActiveCall) -> None:
        seen.append(call.call_id)
        if len(seen) == 8:
            all_seen.set()

    client.on(events.INCOMING_CALL, take)
    placed = [(await sandbox.create_call()).call_id for _ in range(8)]
    with anyio.fail_after(WAIT):
        await all_seen.wait()
    assert seen == placed
