"""How a loopback WebSocket ends: closing, a vanishing peer, cancellation; asyncio and trio.

``aclose`` delivers its code and reason either way, at once when the peer answers and within
``CLOSE_TIMEOUT`` when it does not; it is idempotent, runs its handshake even when cancelled,
and every operation after it raises. ``abort`` is felt as 1006 by both ends and wakes a blocked
reader. A peer that vanishes (even mid-frame) is a 1006 to a reader and to a sender. A cancelled
send still finishes its frame; a send to a peer that takes nothing gives up after the write
timeout; a cancelled receive leaves the connection usable, and a close right after it is prompt.
"""

from __future__ import annotations

import anyio
import anyio.abc
import pytest
from wsproto.events import BytesMessage, TextMessage

import telcoflow._net._writer as writer_module
from telcoflow._net import CLOSE_TIMEOUT, ConnectionClosed, WebSocketConnection

from ..helpers import WAIT
from .loopback import (
    close_code,
    connected,
    finishes_within,
    handshake_only,
    open_pair,
    raw_accept,
    receive_all,
    record_close,
    send_until_closed,
    vanish,
    wsproto_pair,
)

pytestmark = pytest.mark.anyio


# --- closing --------------------------------------------------------------------------------------


@pytest.mark.parametrize("closer", ["client", "server"])
@pytest.mark.parametrize("reading", [False, True], ids=["idle", "reading"])
async def test_aclose_delivers_code_and_reason_to_the_peer(closer: str, reading: bool) -> None:
    async with open_pair() as (client, server):
        me, peer = (client, server) if closer == "client" else (server, client)
        with anyio.fail_after(WAIT):
            peer_closed: list[ConnectionClosed] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(record_close, peer, peer_closed)
                if reading:
                    tg.start_soon(receive_all, me)
                    await anyio.wait_all_tasks_blocked()
                # The peer answers at once, so this is far quicker than CLOSE_TIMEOUT.
                with finishes_within(CLOSE_TIMEOUT / 2):
                    await me.aclose(1000, "bye")
    (closed,) = peer_closed
    assert (closed.code, closed.reason) == (1000, "bye")
    assert me.closed is not None
    assert (me.closed.code, me.closed.reason) == (1000, "bye")


async def test_aclose_is_idempotent_and_sending_after_it_raises() -> None:
    async with open_pair() as (client, server):
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receive_all, server)
                await client.aclose(1001, "going away")
                await client.aclose()
                await client.aclose(1011, "other")
            assert client.closed is not None
            assert (client.closed.code, client.closed.reason) == (1001, "going away")
            with pytest.raises(ConnectionClosed) as info:
                await client.send("late")
            assert info.value.code == 1001
            with pytest.raises(ConnectionClosed):
                await client.send_many(["late", b"later"])
            with pytest.raises(ConnectionClosed):
                await client.ping(b"late")
            with pytest.raises(ConnectionClosed):
                await client.receive()


async def test_aclose_is_bounded_when_the_peer_never_answers() -> None:
    async with connected(handshake_only) as client:
        start = anyio.current_time()
        with finishes_within(CLOSE_TIMEOUT + 1.0):
            await client.aclose(1000, "bye")
        assert anyio.current_time() - start >= CLOSE_TIMEOUT * 0.9  # it did wait for an answer
        assert client.closed is not None
        assert client.closed.code == 1000


async def test_aclose_runs_the_handshake_even_when_cancelled() -> None:
    async with open_pair() as (client, server):
        with anyio.fail_after(WAIT):
            peer_closed: list[ConnectionClosed] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(record_close, server, peer_closed)
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await client.aclose(1000, "cancelled but polite")
    assert [(c.code, c.reason) for c in peer_closed] == [(1000, "cancelled but polite")]


async def test_abort_makes_the_peers_receive_raise_1006() -> None:
    async with open_pair() as (client, server):
        with anyio.fail_after(WAIT):
            await client.abort()
            with pytest.raises(ConnectionClosed) as info:
                await server.receive()
            assert info.value.code == 1006
            assert client.closed is not None
            assert client.closed.code == 1006
            with pytest.raises(ConnectionClosed):
                await client.receive()
            await client.aclose()  # still fine after an abort


async def test_abort_wakes_a_task_blocked_in_receive() -> None:
    async with open_pair() as (client, _server):
        with anyio.fail_after(WAIT):
            closed: list[ConnectionClosed] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(record_close, client, closed)
                await anyio.wait_all_tasks_blocked()
                await client.abort()
    assert [c.code for c in closed] == [1006]


async def test_a_cancelled_send_finishes_its_frame_and_the_connection_stays_usable() -> None:
    """Half a frame on the wire would ruin the stream, so a cancelled send completes first."""
    async with open_pair() as (client, server):
        with anyio.fail_after(WAIT):
            # 4 MiB in 8 messages (each under MAX_MESSAGE_BYTES): more than socket buffers hold
            frames: list[str | bytes] = [bytes([i]) * 524_288 for i in range(8)]
            received: list[str | bytes] = []
            peer_reads = anyio.Event()

            async def read_when_told() -> None:
                await peer_reads.wait()
                for _ in frames:
                    received.append(await server.receive())

            async with anyio.create_task_group() as outer:
                outer.start_soon(read_when_told)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.send_many, frames)
                    await anyio.wait_all_tasks_blocked()
                    tg.cancel_scope.cancel()
                    peer_reads.set()  # only now does the peer read: the write must still finish
            assert received == frames
            assert client.closed is None
            await client.send("next")
            assert await server.receive() == "next"


async def test_a_send_to_a_peer_that_never_reads_gives_up_after_the_write_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(writer_module, "WRITE_TIMEOUT", 0.3)
    async with connected(handshake_only) as client:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.send, b"\x00" * 32_000_000)  # more than socket buffers
                await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()  # deferred until the write gives up
            assert client.closed is not None
            assert client.closed.code == 1006
            assert "stalled" in client.closed.reason
            with pytest.raises(ConnectionClosed):
                await client.send("next")
            with finishes_within(CLOSE_TIMEOUT / 2):
                await client.aclose()


# --- a vanishing peer -----------------------------------------------------------------------------


async def test_a_vanished_peer_raises_connection_closed_1006() -> None:
    async with connected(vanish) as client:
        with anyio.fail_after(WAIT):
            with pytest.raises(ConnectionClosed) as info:
                await client.receive()
            assert info.value.code == 1006
            with pytest.raises(ConnectionClosed):
                await client.send("anyone there?")
            await client.aclose()


async def test_a_peer_that_vanishes_mid_frame_raises_connection_closed_1006() -> None:
    async def half_frame(stream: anyio.abc.ByteStream) -> None:
        ws = await raw_accept(stream)
        frame = ws.send(BytesMessage(b"q" * 1000))
        await stream.send(frame[:100])
        await anyio.aclose_forcefully(stream)

    async with connected(half_frame, raw=True) as client:
        with anyio.fail_after(WAIT):
            with pytest.raises(ConnectionClosed) as info:
                await client.receive()
            assert info.value.code == 1006


async def test_sending_to_a_vanished_peer_raises_connection_closed() -> None:
    async with connected(vanish) as client:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receive_all, client)  # notices the hang-up
                with pytest.raises(ConnectionClosed):
                    await send_until_closed(client)


# --- cancellation ---------------------------------------------------------------------------------


async def test_cancelling_a_blocked_receive_leaves_the_connection_usable() -> None:
    async with open_pair() as (client, server):
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.receive)
                await anyio.wait_all_tasks_blocked()
                tg.cancel_scope.cancel()
            assert client.closed is None
            await server.send("after the cancel")
            assert await client.receive() == "after the cancel"

            with anyio.CancelScope() as scope:
                scope.cancel()
                await client.receive()  # cancelled before it reads anything
            assert client.closed is None

            peer_closed: list[ConnectionClosed] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(record_close, server, peer_closed)
                with finishes_within(CLOSE_TIMEOUT / 2):
                    await client.aclose(1000, "done")
    assert [(c.code, c.reason) for c in peer_closed] == [(1000, "done")]
    assert close_code(client) == 1000


async def test_aclose_right_after_cancelling_the_reader_is_prompt() -> None:
    """A force-disconnect: cancel the read loop's scope and close at once, before the reader
    has unwound. The peer answers the close immediately, so this must not take CLOSE_TIMEOUT."""
    async with open_pair() as (client, server):
        with anyio.fail_after(WAIT):
            peer_closed: list[ConnectionClosed] = []
            reader_scope = anyio.CancelScope()

            async def reader() -> None:
                with reader_scope:
                    await receive_all(client)

            async with anyio.create_task_group() as tg:
                tg.start_soon(record_close, server, peer_closed)
                tg.start_soon(reader)
                await anyio.wait_all_tasks_blocked()
                reader_scope.cancel()
                with finishes_within(CLOSE_TIMEOUT / 2):
                    await client.aclose(1000, "done")
    assert [(c.code, c.reason) for c in peer_closed] == [(1000, "done")]


class OneReadStream(anyio.abc.ByteStream):
    """A stream whose first read returns ``wire`` and then waits; every write fails."""

    def __init__(self, wire: bytes) -> None:
        self._wire: bytes | None = wire

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._wire is None:
            await anyio.sleep_forever()
        wire, self._wire = self._wire, None
        assert wire is not None
        return wire

    async def send(self, item: bytes) -> None:
        raise anyio.BrokenResourceError

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def test_messages_read_before_a_failed_write_are_still_delivered() -> None:
    """A write that fails ends the connection, but what was already read (parsed by wsproto
    after a fragmented message handed the stream over) still comes out, then the close: a
    server's last words (``call.terminated``) are not lost to a write that failed meanwhile."""
    client_ws, server_ws = wsproto_pair()
    wire = (
        server_ws.send(TextMessage("frag", message_finished=False))
        + server_ws.send(TextMessage("mented", message_finished=True))
        + server_ws.send(TextMessage("A"))
        + server_ws.send(TextMessage("last words"))
    )
    conn = WebSocketConnection(OneReadStream(wire), client_ws, name="one-read", leftover=b"")
    with anyio.fail_after(WAIT):
        assert await conn.receive() == "fragmented"
        assert await conn.receive() == "A"
        with pytest.raises(ConnectionClosed) as info:
            await conn.send("into a broken stream")
        assert info.value.code == 1006
        assert await conn.receive() == "last words"
        with pytest.raises(ConnectionClosed) as info:
            await conn.receive()
        assert info.value.code == 1006
