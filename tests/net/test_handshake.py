"""The opening handshake over loopback (telcoflow._net._handshake), under asyncio and trio.

The server sees the client's target and extra headers; a server may start it with no bytes read
yet; every way a connection fails to open (an HTTP reject with its status and body, a closed
port, a bad URL, a server that hangs up, answers garbage or a wrong accept key) is a
``ConnectFailed``; a message sent in the same read as the 101 is not lost (wsproto is given the
head alone); connecting is cancellable while the server is silent.
"""

from __future__ import annotations

import anyio
import anyio.abc
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from telcoflow._net import ConnectFailed, HandshakeRejected, ServerHandshake, connect_websocket

from ..helpers import WAIT
from .loopback import closed_port, connect_fails, connected, serve_loopback, start_handshake

pytestmark = pytest.mark.anyio


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
