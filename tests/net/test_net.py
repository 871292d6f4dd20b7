"""The connection layer over real loopback sockets, under asyncio and trio.

A tiny server (tests/net/loopback.py) accepts TCP connections on 127.0.0.1 and runs
``ServerHandshake``; tests then drive both ends of the WebSocket. Raw handlers (a peer that never
reads, one that vanishes, one that sends broken frames) stand in for misbehaving peers. Every
wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import ssl
import threading
import time
from pathlib import Path

import anyio
import anyio.abc
import pytest
import trustme
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Ping, Pong, Request, TextMessage

import telcoflow._net._writer as writer_module
from telcoflow._net import (
    CLOSE_TIMEOUT,
    MAX_MESSAGE_BYTES,
    ConnectFailed,
    ConnectionClosed,
    HandshakeRejected,
    ServerHandshake,
    WebSocketConnection,
    client_ssl_context,
    connect_websocket,
    open_listener,
)
from telcoflow._net._frames import OP_BINARY, encode_data_frame

from ..helpers import WAIT
from .loopback import (
    GatedStream,
    SlowStream,
    client_at,
    close_code,
    closed_port,
    connect_fails,
    connected,
    finishes_within,
    handshake_only,
    open_pair,
    raw_accept,
    receive_all,
    record_close,
    send_until_closed,
    serve_loopback,
    start_handshake,
    vanish,
    wsproto_pair,
)

pytestmark = pytest.mark.anyio

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# --- handshake ---------------------------------------------------------------------------------


async def test_server_sees_the_target_and_the_extra_headers() -> None:
    headers = [("X-Test", "1"), ("Authorization", "Bearer k")]
    async with (
        serve_loopback() as server,
        server.connected("/v1/calls/abc?token=t%201", headers=headers),
    ):
        await server.next_connection()
        (handshake,) = server.handshakes
        assert handshake.request.target == "/v1/calls/abc?token=t%201"
        assert handshake.request.host == f"127.0.0.1:{server.port}"
        assert handshake.headers["x-test"] == "1"
        assert handshake.headers["authorization"] == "Bearer k"
        assert "X-Test" not in handshake.headers


async def test_an_empty_path_is_sent_as_slash() -> None:
    async with serve_loopback() as server, server.connected(path=""):  # ws://127.0.0.1:port
        await server.next_connection()
        assert server.handshakes[0].request.target == "/"


async def test_server_handshake_starts_with_no_bytes_read_yet() -> None:
    """``start(stream, b"")``: nothing read yet, so the handshake reads the whole request."""
    accepted: list[ServerHandshake] = []

    async def from_nothing(stream: anyio.abc.ByteStream) -> None:
        handshake = await ServerHandshake.start(stream, b"")
        accepted.append(handshake)
        conn = await handshake.accept("server")
        await conn.send(await conn.receive())
        await anyio.sleep_forever()

    async with connected(from_nothing, path="/empty-start") as client:
        with anyio.fail_after(WAIT):
            await client.send("echo me")
            assert await client.receive() == "echo me"
    assert accepted[0].request.target == "/empty-start"


async def test_reject_raises_handshake_rejected_with_status_and_body() -> None:
    async def reject(stream: anyio.abc.ByteStream) -> None:
        handshake = await start_handshake(stream)
        await handshake.reject(401, "bad key")

    error = await connect_fails(reject, headers=[("x-test", "1")])  # a ConnectFailed
    assert isinstance(error, HandshakeRejected)
    assert error.status_code == 401
    assert error.body == "bad key"


async def test_a_closed_port_raises_connect_failed() -> None:
    port = await closed_port()
    with anyio.fail_after(WAIT), pytest.raises(ConnectFailed) as info:
        await connect_websocket(f"ws://127.0.0.1:{port}/ws")
    assert isinstance(info.value.__cause__, OSError)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:1/ws", "https://example.com/", "127.0.0.1:80/ws", "ws:///no-host"]
)
async def test_a_bad_url_raises_connect_failed(url: str) -> None:
    with anyio.fail_after(WAIT), pytest.raises(ConnectFailed):
        await connect_websocket(url)


async def test_a_server_that_hangs_up_during_the_handshake_raises_connect_failed() -> None:
    async def hang_up(stream: anyio.abc.ByteStream) -> None:
        await stream.receive()

    await connect_fails(hang_up)


async def test_a_server_that_answers_garbage_raises_connect_failed() -> None:
    async def garbage(stream: anyio.abc.ByteStream) -> None:
        await stream.receive()
        await stream.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await anyio.sleep_forever()

    await connect_fails(garbage)


async def test_a_wrong_accept_key_raises_connect_failed() -> None:
    async def wrong_key(stream: anyio.abc.ByteStream) -> None:
        await stream.receive()
        await stream.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n"
        )
        await anyio.sleep_forever()

    await connect_fails(wrong_key)


async def test_a_message_sent_with_the_handshake_response_is_received() -> None:
    """A server may greet the client straight after the 101, and both can arrive in one read."""

    async def greet(stream: anyio.abc.ByteStream) -> None:
        ws = WSConnection(ConnectionType.SERVER)
        while not any(isinstance(event, Request) for event in ws.events()):
            ws.receive_data(await stream.receive())
        await stream.send(ws.send(AcceptConnection()) + ws.send(TextMessage("welcome")))
        await anyio.sleep_forever()

    async with connected(greet) as client:
        with anyio.fail_after(2.0):  # milliseconds when it works; it has no reason to wait
            assert await client.receive() == "welcome"


async def test_connect_is_cancellable_while_the_server_is_silent() -> None:
    async def silent(stream: anyio.abc.ByteStream) -> None:
        await anyio.sleep_forever()

    async with serve_loopback(silent) as server:
        with anyio.fail_after(WAIT), anyio.move_on_after(0.1) as scope:
            await connect_websocket(server.url())
        assert scope.cancelled_caught


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_tls(ca: trustme.CA, *, require_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


async def test_wss_round_trip_with_mutual_tls(ca: trustme.CA, tmp_path: Path) -> None:
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    client_cert = ca.issue_cert("agent@example.com")
    cert_path = tmp_path / "client.pem"
    client_cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
    context = client_ssl_context(ca_path=str(ca_path), cert_path=str(cert_path))
    tls = server_tls(ca, require_client_cert=True)
    async with serve_loopback(tls=tls) as server, server.connected(ssl_context=context) as client:
        with anyio.fail_after(WAIT):
            peer = await server.next_connection()
            await client.send("over tls")
            assert await peer.receive() == "over tls"
            await peer.send(b"\x00" * 100_000)
            assert await client.receive() == b"\x00" * 100_000


async def test_wss_with_an_untrusted_certificate_raises_connect_failed(ca: trustme.CA) -> None:
    await connect_fails(tls=server_tls(ca), ssl_context=ssl.create_default_context())


# --- messages ----------------------------------------------------------------------------------

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


# --- write coalescing --------------------------------------------------------------------------


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


# --- pings and heartbeat -----------------------------------------------------------------------


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


# --- closing -----------------------------------------------------------------------------------


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


# --- a vanishing peer --------------------------------------------------------------------------


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


# --- cancellation ------------------------------------------------------------------------------


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


# --- interop with trio-websocket (trio only) ---------------------------------------------------


def require_trio(anyio_backend: str) -> None:
    if anyio_backend != "trio":
        pytest.skip("trio-websocket runs on trio only")


async def test_trio_websocket_client_talks_to_our_server(anyio_backend: str) -> None:
    require_trio(anyio_backend)
    from trio_websocket import open_websocket_url

    async with serve_loopback() as server:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                server_closed: list[ConnectionClosed] = []

                async def echo() -> None:
                    conn = await server.next_connection()
                    while True:
                        try:
                            await conn.send(await conn.receive())
                        except ConnectionClosed as exc:
                            server_closed.append(exc)
                            return

                tg.start_soon(echo)
                async with open_websocket_url(
                    server.url("/interop"), extra_headers=[(b"x-test", b"1")]
                ) as ws:
                    await ws.send_message("hello from trio-websocket")
                    assert await ws.get_message() == "hello from trio-websocket"
                    await ws.send_message(b"\x00\x01" * 50_000)
                    assert await ws.get_message() == b"\x00\x01" * 50_000
                    await ws.ping(b"are you there")  # returns once our reader sent the pong
    assert server.handshakes[0].request.target == "/interop"
    assert server.handshakes[0].headers["x-test"] == "1"
    assert [c.code for c in server_closed] == [1000]


async def test_our_client_talks_to_a_trio_websocket_server(anyio_backend: str) -> None:
    require_trio(anyio_backend)
    import trio
    from trio_websocket import ConnectionClosed as TrioWsClosed
    from trio_websocket import WebSocketRequest, serve_websocket

    closes: list[tuple[int, str | None]] = []
    paths: list[str] = []

    async def handler(request: WebSocketRequest) -> None:
        paths.append(request.path)
        ws = await request.accept()
        while True:
            try:
                message = await ws.get_message()
            except TrioWsClosed as exc:
                reason = exc.reason
                closes.append((reason.code, reason.reason) if reason else (0, "no reason"))
                return
            if message == "close yourself":
                await ws.aclose(1001, "going away")
                return
            await ws.send_message(message)

    with anyio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            ws_server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            url = f"ws://127.0.0.1:{ws_server.port}/agent?x=1"

            async with client_at(url, headers=[("x-test", "1")]) as client:
                await client.send("text ✓")
                assert await client.receive() == "text ✓"
                await client.send(b"\x00\xff" * 100_000)
                assert await client.receive() == b"\x00\xff" * 100_000
                await client.send_many(["a", b"b", "c"])
                assert [await client.receive() for _ in range(3)] == ["a", b"b", "c"]
                with finishes_within(CLOSE_TIMEOUT / 2):
                    await client.aclose(1000, "done")

            async with client_at(url) as second:
                await second.send("close yourself")
                with pytest.raises(ConnectionClosed) as info:
                    await second.receive()
                assert (info.value.code, info.value.reason) == (1001, "going away")
            nursery.cancel_scope.cancel()
    assert paths == ["/agent?x=1", "/agent?x=1"]
    assert closes == [(1000, "done")]


# --- the streams under the WebSocket (telcoflow._net._streams) ------------------------------------


def _flooding_server(listener: socket.socket, stop: threading.Event) -> None:
    """Accept one WebSocket client and send it binary frames as fast as the socket takes them."""
    conn, _ = listener.accept()
    with conn:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        frames = (bytes([0x82, 126]) + (961).to_bytes(2, "big") + b"\x00" * 961) * 64
        with contextlib.suppress(OSError):
            while not stop.is_set():
                conn.sendall(frames)


async def test_a_reader_that_always_finds_data_still_lets_other_tasks_run() -> None:
    """A peer sending faster than we parse must not freeze the event loop: timeouts fire and
    other tasks run (the streams read without a scheduling round trip while data waits)."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    thread = threading.Thread(target=_flooding_server, args=(listener, stop), daemon=True)
    thread.start()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    try:
        async with client_at(f"ws://127.0.0.1:{listener.getsockname()[1]}/") as conn:
            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker)
                started = time.monotonic()
                with anyio.move_on_after(0.3) as scope:
                    while time.monotonic() - started < WAIT:
                        await conn.receive()
                        busy = time.perf_counter()  # the application's work on each frame
                        while time.perf_counter() - busy < 0.00005:
                            pass
                tg.cancel_scope.cancel()
            assert scope.cancelled_caught, "the timeout never fired: the reader never yielded"
            assert ticks > 0
    finally:
        stop.set()
        listener.close()
        thread.join(WAIT)


async def test_closing_a_stream_first_sends_what_was_sent_to_a_slow_reader() -> None:
    """A send returns once the bytes are handed over; closing must not drop those still
    waiting for a slow reader (an HTTP response, a close frame's reply)."""
    size = 512 * 1024
    got: list[int] = []

    def slow_reader(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            time.sleep(0.2)
            n = 0
            while data := sock.recv(1500):
                n += len(data)
                time.sleep(0.0002)
            got.append(n)

    listener = await open_listener("127.0.0.1", 0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    thread = threading.Thread(target=slow_reader, args=(port,), daemon=True)
    thread.start()
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:

            async def handler(stream: anyio.abc.ByteStream) -> None:
                raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                await stream.send(b"x" * size)
                await stream.aclose()
                tg.cancel_scope.cancel()

            tg.start_soon(listener.serve, handler)
        await listener.aclose()
        await anyio.to_thread.run_sync(thread.join)
    assert got == [size]
