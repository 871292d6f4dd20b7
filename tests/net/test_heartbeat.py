"""Pings and the heartbeat of a loopback WebSocket, under asyncio and trio.

A ping is answered by the peer's reader, whichever end sends it; a pending pong wakes when the
connection closes; the heartbeat keeps a live connection, returns when it closes, and closes one
whose peer never reads with 1011, which every later operation raises.
"""

from __future__ import annotations

import anyio
import pytest

from telcoflow._net import ConnectionClosed

from ..helpers import WAIT
from .loopback import connected, handshake_only, open_pair, receive_all

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("pinger", ["client", "server"])
async def test_a_ping_is_answered_by_the_peers_reader(pinger: str) -> None:
    async with open_pair() as (client, server):
        me, peer = (client, server) if pinger == "client" else (server, client)
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receive_all, peer)
                tg.start_soon(receive_all, me)  # our reader routes the pong
                pong = await me.ping(b"x")
                await pong.wait()
                await me.aclose()
    assert me.closed is not None
    assert me.closed.code == 1000


async def test_heartbeat_against_a_peer_that_never_reads_raises_1011() -> None:
    async with connected(handshake_only) as client:
        with anyio.fail_after(WAIT):
            with pytest.raises(ConnectionClosed) as info:
                await client.heartbeat(interval=0.05, timeout=0.2)
            assert info.value.code == 1011
            assert client.closed is info.value
            with pytest.raises(ConnectionClosed) as after:
                await client.receive()
            assert after.value.code == 1011


async def test_a_pending_pong_wakes_up_when_the_connection_closes() -> None:
    async with connected(handshake_only) as client:
        with anyio.fail_after(WAIT):
            pong = await client.ping(b"unanswered")
            assert not pong.is_set()
            await client.abort()
            await pong.wait()


async def test_heartbeat_keeps_a_live_connection_and_returns_on_close() -> None:
    async with open_pair() as (client, server):
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receive_all, server)
                tg.start_soon(receive_all, client)
                writes = client.writes
                with anyio.move_on_after(0.3):  # an observation window, not a wait
                    await client.heartbeat(interval=0.02, timeout=1.0)
                assert client.closed is None
                assert client.writes - writes >= 3  # pings went out and pongs came back

                done = anyio.Event()

                async def beat() -> None:
                    await client.heartbeat(interval=0.02, timeout=1.0)  # must return, not raise
                    done.set()

                tg.start_soon(beat)
                await client.aclose()
                await done.wait()
