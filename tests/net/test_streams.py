"""The byte streams under the WebSocket (telcoflow._net._streams), under asyncio and trio.

A reader that always finds data waiting still lets other tasks and timeouts run, and closing a
stream first sends what a slow reader has not taken yet. The same streams over uvloop's
transports are checked in test_uvloop.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import threading
import time

import anyio
import anyio.abc
import pytest

from telcoflow._net import open_listener

from ..helpers import WAIT
from .loopback import client_at, serve_one

pytestmark = pytest.mark.anyio

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


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

    async def handler(stream: anyio.abc.ByteStream) -> None:
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await stream.send(b"x" * size)
        await stream.aclose()

    listener = await open_listener("127.0.0.1", 0)
    with anyio.fail_after(WAIT):
        await serve_one(listener, handler, client=slow_reader)
    assert got == [size]
