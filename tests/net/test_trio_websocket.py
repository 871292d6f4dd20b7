"""Interop with trio-websocket, an independent implementation (trio only).

Its client against our server and our client against its server: text, large binary, a batch
sent at once, a ping, the request's target and headers, and closes with their codes and reasons
in both directions.
"""

from __future__ import annotations

import anyio
import pytest

from telcoflow._net import CLOSE_TIMEOUT, ConnectionClosed

from ..helpers import WAIT
from .loopback import client_at, finishes_within, serve_loopback

pytestmark = pytest.mark.anyio


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
