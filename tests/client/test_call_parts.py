"""The parts of a call (``telcoflow._call``) on their own, over a stand-in connection: the
invariants their docstrings state, where the sandbox cannot force the interleaving."""

from __future__ import annotations

from typing import cast

import anyio
import pytest

from telcoflow import ActiveCall, TelcoflowClientConfig
from telcoflow._call import MAX_FRAMES_PER_WRITE, AudioOut, CallDetails, CallStats
from telcoflow._call._audio_in import _AudioQueue
from telcoflow._core import MediaProtocol, Role
from telcoflow._net import WebSocketConnection

from ..helpers import WAIT

pytestmark = pytest.mark.anyio

FRAME = 960  # 20 ms at 24 kHz, the protocol object's frame when the server prefers none


class GatedConnection:
    """What the parts use of a ``WebSocketConnection``; a send waits for ``gate`` (when set)
    before its messages count as queued, as a connection that yields before queueing would."""

    def __init__(self) -> None:
        self.closed = None
        self.gate: anyio.Event | None = None
        #: Messages in the order they were queued.
        self.queued: list[str | bytes] = []

    async def send(self, message: str | bytes) -> None:
        await self.send_many([message])

    async def send_many(self, messages: list[str | bytes]) -> None:
        gate, self.gate = self.gate, None  # only the first send after arming waits
        if gate is not None:
            await gate.wait()
        self.queued.extend(messages)


def audio_of(messages: list[str | bytes]) -> bytes:
    """The PCM the binary messages carry, in order (each is a channel byte, then PCM)."""
    return b"".join(m[1:] for m in messages if isinstance(m, bytes))


def pcm(n_frames: int, fill: int) -> bytes:
    return bytes([fill]) * (n_frames * FRAME)


async def test_frames_keep_their_order_when_the_caller_s_write_is_slow_to_queue() -> None:
    """``send`` writes from the caller's task while the sender is parked; if the connection
    yields before it has queued the caller's frames, neither the sender (waking for the rest)
    nor another caller may cut later audio ahead of them."""
    conn = GatedConnection()
    proto = MediaProtocol(Role.CLIENT, sample_rate=24000)
    proto.credit = 10**9
    out = AudioOut("c", proto, cast(WebSocketConnection, conn), CallStats(), 10**9)
    first = pcm(
        MAX_FRAMES_PER_WRITE + 10, 1
    )  # one write's worth and more: the rest is the sender's
    second = pcm(3, 2)
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(out.send_loop)
            await anyio.wait_all_tasks_blocked()
            assert out.idle.waited_on  # the sender is parked
            conn.gate = gate = anyio.Event()
            tg.start_soon(out.send, first, False)
            await anyio.wait_all_tasks_blocked()
            await out.send(second, False)  # another task queues while the first write waits
            await anyio.wait_all_tasks_blocked()
            assert conn.queued == []  # nothing overtook the caller's frames
            gate.set()
            while len(audio_of(conn.queued)) < len(first) + len(second):
                await out.progress.wait()
            tg.cancel_scope.cancel()
    assert audio_of(conn.queued) == first + second


async def test_audio_queued_while_the_interruption_leaves_follows_it() -> None:
    """``clear_send_audio_buffer``: audio queued while the interrupt command's frame is on its
    way (the connection yielding before it queues it) is sent after it, never before."""
    conn = GatedConnection()
    config = TelcoflowClientConfig.sandbox(api_key="k", connector_uuid="u")
    details = CallDetails(call_id="c", session_id="s", from_number="+1", to_number="+2")
    call = ActiveCall(details, config, cast(WebSocketConnection, conn))
    call._proto.credit = 10**9
    speech = pcm(2, 3)
    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call._audio_out.send_loop)
                await anyio.wait_all_tasks_blocked()
                conn.gate = gate = anyio.Event()
                tg.start_soon(call.clear_send_audio_buffer)
                await anyio.wait_all_tasks_blocked()
                await call.send_audio(speech)  # the sender is parked: it would go at once
                await anyio.wait_all_tasks_blocked()
                assert conn.queued == []
                gate.set()
                while len(audio_of(conn.queued)) < len(speech):
                    await call._audio_out.progress.wait()
                tg.cancel_scope.cancel()
    finally:  # the call never ran: close its event channel as its _serve would
        call._events.close()
        call._events.abort()
    interrupt, *audio = conn.queued
    assert isinstance(interrupt, str)
    assert "interrupt" in interrupt
    assert audio_of(audio) == speech


def test_an_inbound_queue_drops_its_oldest_audio_past_either_bound() -> None:
    queue = _AudioQueue(max_chunks=3, max_bytes=10)
    assert [queue.put(b"a" * 4), queue.put(b"b" * 4)] == [0, 0]
    assert queue.put(b"c" * 4) == 4  # 12 bytes > 10: the oldest chunk goes
    assert queue.buffered_bytes == 8
    assert [queue.put(b"d"), queue.put(b"e")] == [0, 4]  # the fourth chunk: the oldest goes
    assert queue.buffered_bytes == 6
    assert queue.put(b"f" * 20) == 6  # one chunk beyond the byte bound is kept, alone
    assert queue.buffered_bytes == 20
    queue.close()
    assert queue.put(b"g" * 2) == 2  # once closed, the chunk itself is dropped
    assert queue.buffered_bytes == 20


async def test_a_closed_inbound_queue_delivers_what_it_holds_then_ends() -> None:
    queue = _AudioQueue(max_chunks=4, max_bytes=100)
    queue.put(b"xy")
    queue.put(b"zw")
    queue.close()
    assert [await queue.get(), await queue.get(), await queue.get()] == [b"xy", b"zw", None]
    assert queue.buffered_bytes == 0
