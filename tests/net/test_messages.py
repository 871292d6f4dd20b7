"""Messages over a loopback WebSocket, and the writer under them, under asyncio and trio.

Reading (telcoflow._net._reader): text and binary messages of every size arrive whole, in order
and of their own type, both ways; a fragmented message is reassembled and a ping between its
fragments answered; a message over ``MAX_MESSAGE_BYTES`` closes with 1009 as soon as the peer
answers, one of exactly the limit is accepted; a broken frame closes with wsproto's code.
Writing (telcoflow._net._writer), over real sockets and over streams whose writes the test
paces: frames ready together cost one write, concurrent sends lose nothing and keep each task's
order, and raw bytes go out between whole frames with the accounting intact.
"""

from __future__ import annotations

import anyio
import anyio.abc
import pytest
from wsproto.events import BytesMessage, Ping, Pong, TextMessage

from telcoflow._net import CLOSE_TIMEOUT, MAX_MESSAGE_BYTES, ConnectionClosed, WebSocketConnection
from telcoflow._net._frames import OP_BINARY, encode_data_frame

from ..helpers import WAIT
from .loopback import (
    GatedStream,
    SlowStream,
    connected,
    finishes_within,
    open_pair,
    raw_accept,
    receive_all,
    record_close,
    wsproto_pair,
)

pytestmark = pytest.mark.anyio


# --- messages -------------------------------------------------------------------------------------

MESSAGES: list[str | bytes] = [
    "hello",
    b"\x00\x01\x02",
    "",
    b"",
    "a",
    b"\xff",
    "ünïcödé € 😀 " * 500,
    b"\x00\xff" * 100_000,  # 200 KB: several reads and wsproto fragments
    "x" * 200_000,
    '{"event": "last"}',
]


async def test_text_and_binary_messages_round_trip_in_order() -> None:
    async def echo(conn: WebSocketConnection) -> None:
        for _ in MESSAGES:
            await conn.send(await conn.receive())

    async with open_pair() as (client, server):
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(echo, server)
                tg.start_soon(client.send_many, MESSAGES)
                received = [await client.receive() for _ in MESSAGES]
    assert received == MESSAGES
    assert [type(m) for m in received] == [type(m) for m in MESSAGES]


async def test_server_to_client_messages_arrive_in_order() -> None:
    async with open_pair() as (client, server):
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:

                async def send_all() -> None:
                    for message in MESSAGES:
                        await server.send(message)

                tg.start_soon(send_all)
                received = [await client.receive() for _ in MESSAGES]
    assert received == MESSAGES


async def test_a_fragmented_message_is_reassembled_and_pings_between_fragments_answered() -> None:
    pong = anyio.Event()

    async def fragments(stream: anyio.abc.ByteStream) -> None:
        ws = await raw_accept(stream)
        out = ws.send(TextMessage("hel", message_finished=False))
        out += ws.send(Ping(b"between"))  # control frames may interleave with fragments
        out += ws.send(TextMessage("lo ", message_finished=False))
        out += ws.send(TextMessage("wörld", message_finished=True))
        out += ws.send(BytesMessage(b"\x01", message_finished=False))
        out += ws.send(BytesMessage(b"\x02", message_finished=True))
        await stream.send(out)
        while not pong.is_set():
            ws.receive_data(await stream.receive())
            if any(isinstance(event, Pong) for event in ws.events()):
                pong.set()
        await anyio.sleep_forever()

    async with connected(fragments, raw=True) as client:
        with anyio.fail_after(WAIT):
            assert await client.receive() == "hello wörld"
            assert await client.receive() == b"\x01\x02"
            await pong.wait()


async def test_a_message_over_the_limit_closes_with_1009() -> None:
    async with open_pair() as (client, server):
        with anyio.fail_after(WAIT):
            client_closed: list[ConnectionClosed] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(record_close, client, client_closed)
                tg.start_soon(client.send, b"x" * (MAX_MESSAGE_BYTES + 1))
                with pytest.raises(ConnectionClosed) as info:
                    await server.receive()
    assert info.value.code == 1009
    assert server.closed is not None
    assert server.closed.code == 1009
    assert [c.code for c in client_closed] == [1009]


async def test_a_message_over_the_limit_closes_as_soon_as_the_peer_answers() -> None:
    """The peer answers the 1009 close at once; the receiver must not sit out CLOSE_TIMEOUT."""
    async with open_pair() as (client, server):
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receive_all, client)
                tg.start_soon(client.send, b"x" * (MAX_MESSAGE_BYTES + 1))
                with finishes_within(CLOSE_TIMEOUT / 2), pytest.raises(ConnectionClosed):
                    await server.receive()


async def test_a_message_of_exactly_the_limit_is_accepted() -> None:
    async with open_pair() as (client, server):
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(client.send, b"y" * MAX_MESSAGE_BYTES)
                assert await server.receive() == b"y" * MAX_MESSAGE_BYTES
            await server.send("still open")
            assert await client.receive() == "still open"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x83\x00", 1002),  # reserved opcode 3
        (b"\x81\x02\xc3\x28", 1007),  # text frame with invalid UTF-8
    ],
)
async def test_a_broken_frame_from_the_peer_raises_connection_closed(
    frame: bytes, code: int
) -> None:
    async def broken(stream: anyio.abc.ByteStream) -> None:
        await raw_accept(stream)
        await stream.send(frame)
        await anyio.sleep_forever()

    async with connected(broken, raw=True) as client:
        with anyio.fail_after(WAIT):
            with pytest.raises(ConnectionClosed) as info:
                await client.receive()
            assert info.value.code == code
            with pytest.raises(ConnectionClosed):
                await client.send("after")


# --- write coalescing -----------------------------------------------------------------------------


async def test_send_many_costs_one_socket_write() -> None:
    frames = [f"frame {i}" for i in range(10)]
    async with open_pair() as (client, server):
        writes, sent = client.writes, client.frames_sent
        with anyio.fail_after(WAIT):
            await client.send_many(frames)
            assert client.writes == writes + 1
            assert client.frames_sent == sent + 10
            assert [await server.receive() for _ in frames] == frames


async def test_concurrent_sends_are_none_lost() -> None:
    """Over real sockets each send is usually taken at once (telcoflow._net._streams); whatever
    the interleaving, every message arrives whole."""
    messages: list[str | bytes] = [
        f"task {i} " + "z" * (i * 100) if i % 2 else bytes([i]) * (i * 100 + 1) for i in range(20)
    ]
    async with open_pair() as (client, server):
        sent = client.frames_sent
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                for message in messages:
                    tg.start_soon(client.send, message)
            assert client.frames_sent == sent + 20
            received = [await server.receive() for _ in messages]
    assert sorted(received, key=repr) == sorted(messages, key=repr)


async def test_sends_made_while_a_write_is_under_way_go_out_together() -> None:
    client_ws, server_ws = wsproto_pair()
    stream = SlowStream()
    conn = WebSocketConnection(stream, client_ws, name="slow", leftover=b"")
    messages = [bytes([i]) * (i + 1) for i in range(20)]
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            for message in messages:
                tg.start_soon(conn.send, message)
    # The first write carries one frame; the 19 queued meanwhile go in the next one.
    assert len(stream.writes) == conn.writes == 2
    server_ws.receive_data(b"".join(stream.writes))
    got = [e.data for e in server_ws.events() if isinstance(e, BytesMessage)]
    assert sorted(got) == sorted(messages)


async def test_raw_bytes_go_out_between_whole_frames_and_keep_the_accounting() -> None:
    """``send_raw`` (hostile test peers' door) queues through the writer like any frame: bytes
    sent while a write is under way go out whole with the next write, and every sender returns
    once its own bytes are written."""
    client_ws, server_ws = wsproto_pair()
    stream = GatedStream()
    conn = WebSocketConnection(stream, client_ws, name="gated", leftover=b"")
    raw = encode_data_frame(OP_BINARY, b"hand-made", masked=True)
    done: list[str] = []

    async def send(what: str) -> None:
        if what == "raw":
            await conn.send_raw(raw)
        else:
            await conn.send(what.encode())
        done.append(what)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(send, "first")
            await stream.started.wait()  # the first write is under way ...
            # Queued one at a time: trio runs tasks started together in either order.
            tg.start_soon(send, "raw")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(send, "last")
            await anyio.wait_all_tasks_blocked()  # ... and both wait for it
            assert done == []
            stream.gate.set()
    assert sorted(done) == ["first", "last", "raw"]
    assert len(stream.writes) == conn.writes == 2  # raw and last went out together
    server_ws.receive_data(b"".join(stream.writes))
    got = [e.data for e in server_ws.events() if isinstance(e, BytesMessage)]
    assert got == [b"first", b"hand-made", b"last"]


async def test_each_task_sees_its_messages_in_order() -> None:
    async with open_pair() as (client, server):
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:

                async def sender(task: int) -> None:
                    for n in range(20):
                        await client.send(f"{task}:{n}")

                for task in range(5):
                    tg.start_soon(sender, task)
            received = [await server.receive() for _ in range(100)]
    for task in range(5):
        mine = [m for m in received if isinstance(m, str) and m.startswith(f"{task}:")]
        assert mine == [f"{task}:{n}" for n in range(20)]
