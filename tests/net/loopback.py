"""Both ends of a WebSocket for the connection-layer tests: a loopback server and its peers.

What the tests of ``telcoflow._net`` share, in the spirit of h11's ``ConnectionPair``:

- :func:`serve_loopback`: a server on an ephemeral 127.0.0.1 port (TLS if asked) running a
  *handler* per connection; the default one completes ``ServerHandshake`` and hands each
  :class:`WebSocketConnection` to the test (:meth:`Loopback.next_connection`);
- :func:`connected`: that server and a client connected to it within ``WAIT``, always aborted
  when the block ends, so a test states only what it checks (:meth:`Loopback.connected` when
  the test needs the server too, :func:`client_at` for any other server); :func:`open_pair`:
  the client and the server's connection together; :func:`connect_fails`: a connection that
  must fail, and its error;
- handlers standing in for peers: :func:`start_handshake` (the server's first step),
  :func:`handshake_only` (a hung peer), :func:`vanish` (a peer that hangs up), and
  :func:`raw_accept` with ``connected(..., raw=True)`` for a bare wsproto peer that sends
  hand-made frames;
- what the tests do with a connection: :func:`receive_all`, :func:`record_close`,
  :func:`send_until_closed`, :func:`close_code`; :func:`finishes_within` times a close;
  :func:`closed_port` is a port nobody listens on;
- the streams alone: :func:`serve_one` serves one connection from a blocking client in a
  thread;
- without sockets: :func:`wsproto_pair` (two wsproto ends, handshake done in memory), and the
  byte streams :class:`SlowStream` and :class:`GatedStream` for a connection whose writes the
  test paces.

Every wait is bounded by ``WAIT``; a handler's socket is closed when the server stops.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import TypeVar

import anyio
import anyio.abc
import anyio.to_thread
import pytest
from anyio.streams.tls import TLSListener
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from telcoflow._net import (
    ConnectFailed,
    ConnectionClosed,
    ServerHandshake,
    WebSocketConnection,
    connect_websocket,
)

from ..helpers import WAIT

__all__ = [
    "GatedStream",
    "Handler",
    "Loopback",
    "SlowStream",
    "client_at",
    "close_code",
    "closed_port",
    "connect_fails",
    "connected",
    "finishes_within",
    "handshake_only",
    "open_pair",
    "raw_accept",
    "receive_all",
    "record_close",
    "send_until_closed",
    "serve_loopback",
    "serve_one",
    "start_handshake",
    "vanish",
    "wsproto_pair",
]

#: What the server runs for each accepted connection (the stream is closed when it returns).
Handler = Callable[[anyio.abc.ByteStream], Awaitable[None]]

_Stream = TypeVar("_Stream", bound=anyio.abc.ByteStream)


# --- the server -----------------------------------------------------------------------------------


class Loopback:
    """A WebSocket server on 127.0.0.1; the default handler hands accepted connections over."""

    def __init__(self, port: int, scheme: str = "ws") -> None:
        self.port = port
        self.scheme = scheme
        self.handshakes: list[ServerHandshake] = []
        self._send, self._receive = anyio.create_memory_object_stream[WebSocketConnection](10)

    def url(self, path: str = "/ws") -> str:
        host = "localhost" if self.scheme == "wss" else "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}{path}"

    async def accept(self, stream: anyio.abc.ByteStream) -> None:
        """Read the request, accept it, hand the connection to the test, keep the socket open."""
        handshake = await start_handshake(stream)
        self.handshakes.append(handshake)
        await self._send.send(await handshake.accept("server"))
        await anyio.sleep_forever()

    async def next_connection(self) -> WebSocketConnection:
        with anyio.fail_after(WAIT):
            return await self._receive.receive()

    def connected(
        self,
        path: str = "/ws",
        *,
        raw: bool = False,
        headers: Sequence[tuple[str, str]] = (),
        ssl_context: ssl.SSLContext | None = None,
    ) -> AbstractAsyncContextManager[WebSocketConnection]:
        """:func:`client_at` this server's ``path``."""
        return client_at(self.url(path), raw=raw, headers=headers, ssl_context=ssl_context)

    def close(self) -> None:
        self._send.close()
        self._receive.close()


@asynccontextmanager
async def client_at(
    url: str,
    *,
    raw: bool = False,
    headers: Sequence[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """A client connected to ``url`` within ``WAIT``, aborted when the block ends.

    ``raw``: the server runs :func:`raw_accept`, so the client first sends it the message it
    waits for."""
    with anyio.fail_after(WAIT):
        client = await connect_websocket(url, headers=headers, ssl_context=ssl_context)
    try:
        if raw:
            with anyio.fail_after(WAIT):
                await client.send("ready")
        yield client
    finally:
        await client.abort()


@asynccontextmanager
async def serve_loopback(
    handler: Handler | None = None, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Loopback]:
    """Serve on an ephemeral port until the block ends; every handler's socket is then closed."""
    listener: anyio.abc.Listener[anyio.abc.ByteStream]
    tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
    server = Loopback(tcp.extra(anyio.abc.SocketAttribute.local_port), "wss" if tls else "ws")
    listener = TLSListener(tcp, tls) if tls else tcp
    chosen = handler or server.accept

    async def run(stream: anyio.abc.ByteStream) -> None:
        try:
            await chosen(stream)
        finally:
            await anyio.aclose_forcefully(stream)

    try:
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, run)
            yield server
            tg.cancel_scope.cancel()
    finally:
        server.close()


@asynccontextmanager
async def connected(
    handler: Handler | None = None,
    *,
    raw: bool = False,
    path: str = "/ws",
) -> AsyncIterator[WebSocketConnection]:
    """A loopback server running ``handler`` and a client connected to it within ``WAIT``; the
    client is aborted and the server stopped when the block ends. ``raw``: see
    :func:`client_at`."""
    async with (
        serve_loopback(handler) as server,
        server.connected(path, raw=raw) as client,
    ):
        yield client


async def connect_fails(
    handler: Handler | None = None,
    *,
    tls: ssl.SSLContext | None = None,
    headers: Sequence[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
) -> ConnectFailed:
    """Check that connecting to a loopback server running ``handler`` raises
    :class:`ConnectFailed` within ``WAIT``, and return the error."""
    async with serve_loopback(handler, tls=tls) as server:
        with anyio.fail_after(WAIT), pytest.raises(ConnectFailed) as info:
            await connect_websocket(server.url(), headers=headers, ssl_context=ssl_context)
    return info.value


@asynccontextmanager
async def open_pair(
    path: str = "/ws",
) -> AsyncIterator[tuple[WebSocketConnection, WebSocketConnection]]:
    """A connected (client, server) pair over loopback; both are dropped when the block ends."""
    async with serve_loopback() as server, server.connected(path) as client:
        yield client, await server.next_connection()


# --- peers (handlers) -----------------------------------------------------------------------------


async def start_handshake(stream: anyio.abc.ByteStream) -> ServerHandshake:
    """Read the start of the request, as a server sniffing the protocol would; start() reads on."""
    return await ServerHandshake.start(stream, await stream.receive())


async def handshake_only(stream: anyio.abc.ByteStream) -> None:
    """Accept the upgrade, then never read or write again: a hung peer."""
    handshake = await start_handshake(stream)
    await handshake.accept("hung")
    await anyio.sleep_forever()


async def vanish(stream: anyio.abc.ByteStream) -> None:
    """Accept the upgrade, then hang up at once without a close frame."""
    handshake = await start_handshake(stream)
    await handshake.accept("vanishing")
    await anyio.aclose_forcefully(stream)


async def raw_accept(stream: anyio.abc.ByteStream) -> WSConnection:
    """Accept the upgrade with a bare wsproto server, for peers that send hand-made frames.

    Returns once the client sent its first message (``connected(..., raw=True)`` sends it), so
    whatever the caller sends next cannot share a read with the handshake response
    (test_handshake tests exactly that case)."""
    ws = WSConnection(ConnectionType.SERVER)
    accepted = False
    while True:
        ws.receive_data(await stream.receive())
        for event in ws.events():
            if isinstance(event, Request):
                await stream.send(ws.send(AcceptConnection()))
                accepted = True
            elif accepted and isinstance(event, TextMessage):
                return ws


# --- what the tests do with a connection ----------------------------------------------------------


async def receive_all(conn: WebSocketConnection) -> ConnectionClosed:
    """Answer pings and discard messages until the connection closes; return why it closed."""
    while True:
        try:
            await conn.receive()
        except ConnectionClosed as exc:
            return exc


async def record_close(conn: WebSocketConnection, closes: list[ConnectionClosed]) -> None:
    """:func:`receive_all`, appending why the connection closed to ``closes`` (for a task)."""
    closes.append(await receive_all(conn))


async def send_until_closed(conn: WebSocketConnection) -> None:
    while True:
        await conn.send(b"\x00" * 65536)


@contextmanager
def finishes_within(seconds: float) -> Iterator[None]:
    """Assert the block took less than ``seconds``. ``aclose`` is shielded, so ``fail_after``
    cannot cut it short (nor report it): a slow close must be measured instead."""
    start = anyio.current_time()
    yield
    elapsed = anyio.current_time() - start
    assert elapsed < seconds, f"took {elapsed:.2f} s, expected under {seconds} s"


def close_code(conn: WebSocketConnection) -> int | None:
    return None if conn.closed is None else conn.closed.code


async def closed_port() -> int:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    return port


async def serve_one(
    listener: anyio.abc.Listener[_Stream],
    handler: Callable[[_Stream], Awaitable[None]],
    client: Callable[[int], None],
) -> None:
    """Run ``client(port)`` in a thread, serve the connection it makes to ``listener`` with
    ``handler``, then close ``listener`` and wait for the thread to finish."""
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    thread = threading.Thread(target=client, args=(port,), daemon=True)
    thread.start()
    async with anyio.create_task_group() as tg:

        async def once(stream: _Stream) -> None:
            await handler(stream)
            tg.cancel_scope.cancel()

        tg.start_soon(listener.serve, once)
    await listener.aclose()
    await anyio.to_thread.run_sync(thread.join)


# --- without sockets ------------------------------------------------------------------------------


def wsproto_pair() -> tuple[WSConnection, WSConnection]:
    """A client and a server wsproto connection, handshake done in memory."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="example.test", target="/")))
    assert any(isinstance(e, Request) for e in server.events())
    client.receive_data(server.send(AcceptConnection()))
    assert any(isinstance(e, AcceptConnection) for e in client.events())
    return client, server


class SlowStream(anyio.abc.ByteStream):
    """A byte stream whose every write takes a while (a slow peer), recording each write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def send(self, item: bytes) -> None:
        await anyio.sleep(0.01)
        self.writes.append(item)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        await anyio.sleep_forever()
        raise AssertionError  # pragma: no cover

    async def send_eof(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class GatedStream(SlowStream):
    """A byte stream whose writes wait for ``gate``: a write under way, held for the test."""

    def __init__(self) -> None:
        super().__init__()
        self.started = anyio.Event()
        self.gate = anyio.Event()

    async def send(self, item: bytes) -> None:
        self.started.set()
        await self.gate.wait()
        self.writes.append(item)
