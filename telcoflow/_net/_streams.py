"""Opening the TCP (and TLS) byte stream under a WebSocket, and lean streams for each backend.

Under trio, :class:`TrioStream` wraps anyio's socket stream and tries each read and write on the
raw socket first: trio's socket methods add a cancellation check and a scheduling round trip to
every system call, and only a call that has to wait goes through trio. Under asyncio, anyio's
stream pauses the transport's reading whenever no ``receive`` is waiting and resumes it for the
next one (two ``epoll_ctl`` system calls per read), and its writes wait for the kernel to take
every byte, which costs a round trip through the event loop per send. A media connection reads
and writes 50 small frames a second each way, so that is paid per frame. :class:`AsyncioStream`
is the same anyio ``ByteStream`` over an asyncio protocol that keeps reading (up to
``READ_HIGH_WATER`` bytes buffered) and hands writes to the transport's buffer, waiting only while
that buffer is over ``WRITE_HIGH_WATER``. TLS is anyio's ``TLSStream`` over either.

Under uvloop the same asyncio classes run over uvloop's transports, which have the methods of
``asyncio.Transport`` (reading paused and resumed, write buffer limits, a ``close`` that flushes
first) without being instances of it; the invariants above hold there too
(tests/net/test_uvloop.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
from abc import abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast

import anyio
import anyio.abc
import anyio.lowlevel
import sniffio
from anyio.streams.tls import TLSStream

from ._pulse import Pulse

__all__ = [
    "READ_HIGH_WATER",
    "WRITE_HIGH_WATER",
    "AsyncioListener",
    "AsyncioStream",
    "NowaitStream",
    "TrioStream",
    "open_listener",
    "open_stream",
]

#: Bytes read ahead of the application before the transport stops reading (TCP backpressure).
READ_HIGH_WATER = 256 * 1024

#: Bytes the transport may hold unsent before a ``send`` waits for the peer to take some.
WRITE_HIGH_WATER = 64 * 1024

#: How long closing a stream waits for bytes already sent to leave.
CLOSE_FLUSH_TIMEOUT = 2.0

#: A reader that finds data at once this many bytes in a row yields to other tasks anyway.
READ_YIELD_BYTES = 256 * 1024

#: The buffer the transport reads into. A plain ``Protocol`` gets a fresh 256 KiB ``bytes`` per
#: read, which malloc serves with mmap/munmap (over its 128 KiB threshold) and then shrinks with
#: mremap: three system calls per read, 9 % of a busy client's samples. Reading into one
#: reusable buffer (``BufferedProtocol``) copies out only what arrived.
READ_BUFFER_BYTES = 64 * 1024


class _Protocol(asyncio.Protocol):
    """Collects what the transport reads and tells the stream when it can read or write."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_connected: Callable[[asyncio.Transport, _Protocol], None] | None = None,
    ) -> None:
        self.loop = loop
        self.on_connected = on_connected
        self.transport: asyncio.Transport | None = None
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.reading_paused = False
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        self.writing_paused = False
        self.read_waiter: asyncio.Future[None] | None = None
        #: Tasks waiting for the write buffer to drain (the writer; TLS may write from the reader).
        self.write_waiters: list[asyncio.Future[None]] = []
        self.lost_waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No isinstance check: uvloop's transports have asyncio.Transport's methods without
        # subclassing it, and an exception here is only logged by the loop, which then never
        # starts reading (nor, on the server side, hands the connection to the listener).
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # (A connection reset already may refuse it; the transport then reports the reset.)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.on_connected is not None:
            self.on_connected(transport, self)

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > READ_HIGH_WATER and not self.reading_paused:
            assert self.transport is not None
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return True  # keep the transport: we may still write (half-close), aclose() closes it

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        self._wake_reader()
        self._wake_writer()
        if self.lost_waiter is not None and not self.lost_waiter.done():
            self.lost_waiter.set_result(None)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake_writer()

    def _wake_reader(self) -> None:
        waiter = self.read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        waiters, self.write_waiters = self.write_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


class _BufferedProtocol(_Protocol, asyncio.BufferedProtocol):
    """:class:`_Protocol` reading into one reusable buffer (see ``READ_BUFFER_BYTES``), for
    asyncio's own loop. Not under uvloop, which reads into one buffer of its own for the whole
    loop and hands the protocol a ``bytes`` copied from it: one copy per read either way, so a
    buffer of ours would gain nothing there."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_connected: Callable[[asyncio.Transport, _Protocol], None] | None = None,
    ) -> None:
        super().__init__(loop, on_connected)
        self._view = memoryview(bytearray(READ_BUFFER_BYTES))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._view

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(self._view[:nbytes]))


def _protocol(
    loop: asyncio.AbstractEventLoop,
    on_connected: Callable[[asyncio.Transport, _Protocol], None] | None = None,
) -> _Protocol:
    """The protocol for ``loop``: buffered on asyncio's own loops, plain under uvloop."""
    if type(loop).__module__.startswith("uvloop"):
        return _Protocol(loop, on_connected)
    return _BufferedProtocol(loop, on_connected)


class NowaitStream(anyio.abc.ByteStream):
    """A byte stream that can take bytes without waiting (:meth:`send_nowait`) and says when
    the sender must wait for room (:meth:`drain`); ``send`` is the two together."""

    @abstractmethod
    def send_nowait(self, item: bytes) -> bool:
        """Take ``item`` for sending now; False if the sender must :meth:`drain` before more."""

    @abstractmethod
    async def drain(self) -> None:
        """Wait until there is room to send again."""

    async def send(self, item: bytes) -> None:
        if not self.send_nowait(item):
            await self.drain()


class AsyncioStream(NowaitStream):
    """A TCP connection as an anyio ``ByteStream`` over an asyncio transport (see the module)."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closed = False
        self._receiving = False

    @classmethod
    async def connect(cls, host: str, port: int) -> AsyncioStream:
        """Open a TCP connection.

        anyio connects (every address a name resolves to, raced as RFC 8305 has it, cleaned up
        when cancelled; asyncio's own racing leaks a socket when cancelled on Python 3.11); then
        the connected socket moves to a transport of ours. The peer has said nothing yet (the
        client speaks first in HTTP and TLS), so nothing read is left behind.
        """
        anyio_stream = await anyio.connect_tcp(host, port)
        try:
            sock = anyio_stream.extra(anyio.abc.SocketAttribute.raw_socket).dup()
        except BaseException:
            await anyio.aclose_forcefully(anyio_stream)
            raise
        loop = asyncio.get_running_loop()
        try:
            await anyio.aclose_forcefully(anyio_stream)  # the duplicate keeps the connection
            transport, protocol = await loop.connect_accepted_socket(lambda: _protocol(loop), sock)
        except BaseException:
            sock.close()
            raise
        return cls(transport, protocol)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if self._receiving:
            raise anyio.BusyResourceError("reading from")
        if self._closed:
            raise anyio.ClosedResourceError
        protocol = self._protocol
        if not protocol.chunks:
            self._raise_if_unreadable()
            waiter = protocol.read_waiter = protocol.loop.create_future()
            self._receiving = True
            try:
                await waiter
            finally:
                self._receiving = False
                protocol.read_waiter = None
            if not protocol.chunks:
                self._raise_if_unreadable()
        # Data already read is returned without a trip through the event loop: the reader then
        # waits (and yields) as soon as it has taken the at most READ_HIGH_WATER bytes buffered.
        chunk = protocol.chunks.popleft()
        if len(chunk) > max_bytes:
            protocol.chunks.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        protocol.buffered -= len(chunk)
        if protocol.reading_paused and protocol.buffered <= READ_HIGH_WATER // 2:
            protocol.reading_paused = False
            self._transport.resume_reading()
        return chunk

    def _raise_if_unreadable(self) -> None:
        protocol = self._protocol
        if self._closed:
            raise anyio.ClosedResourceError
        if protocol.eof:
            raise anyio.EndOfStream
        if protocol.lost:
            if protocol.error is not None:
                raise anyio.BrokenResourceError from protocol.error
            raise anyio.EndOfStream

    def send_nowait(self, item: bytes) -> bool:
        """Hand ``item`` to the transport (it is sent now or as soon as the socket takes it);
        False if the transport now holds more than ``WRITE_HIGH_WATER`` bytes unsent, and the
        sender should :meth:`drain` before sending more."""
        if self._closed:
            raise anyio.ClosedResourceError
        protocol = self._protocol
        if protocol.lost or self._transport.is_closing():
            raise anyio.BrokenResourceError from protocol.error
        self._transport.write(item)
        return not protocol.writing_paused

    async def drain(self) -> None:
        """Wait until the transport holds no more than ``WRITE_HIGH_WATER`` bytes unsent."""
        protocol = self._protocol
        while protocol.writing_paused and not protocol.lost and not self._closed:
            waiter = protocol.loop.create_future()
            protocol.write_waiters.append(waiter)
            await waiter
        if self._closed:
            raise anyio.ClosedResourceError
        if protocol.lost:
            raise anyio.BrokenResourceError from protocol.error

    async def send_eof(self) -> None:
        if self._transport.can_write_eof() and not self._transport.is_closing():
            self._transport.write_eof()

    async def aclose(self) -> None:
        """Close the connection. Bytes sent and not yet taken by the kernel go first, for at
        most ``CLOSE_FLUSH_TIMEOUT`` (a send returns once they are handed over, so a close
        must not drop them: a close frame's reply, an HTTP response); a cancelled close
        (``aclose_forcefully``) drops them."""
        if self._closed:
            await anyio.lowlevel.checkpoint()
            return
        self._closed = True
        protocol, transport = self._protocol, self._transport
        protocol._wake_reader()
        protocol._wake_writer()
        try:
            if transport.get_write_buffer_size() and not protocol.lost:
                protocol.lost_waiter = protocol.loop.create_future()
                transport.close()  # flushes the buffer, then closes
                with anyio.move_on_after(CLOSE_FLUSH_TIMEOUT):
                    await protocol.lost_waiter
            else:
                await anyio.lowlevel.checkpoint()
        finally:
            if not protocol.lost:  # (abort() after connection_lost fails on Python 3.11)
                transport.abort()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        # (Under uvloop a socket-like object with the usual methods: uvloop owns the socket.)
        sock: socket.socket = self._transport.get_extra_info("socket")
        return {
            anyio.abc.SocketAttribute.family: lambda: sock.family,
            anyio.abc.SocketAttribute.local_address: lambda: sock.getsockname(),
            anyio.abc.SocketAttribute.local_port: lambda: sock.getsockname()[1],
            anyio.abc.SocketAttribute.remote_address: lambda: sock.getpeername(),
            anyio.abc.SocketAttribute.remote_port: lambda: sock.getpeername()[1],
            anyio.abc.SocketAttribute.raw_socket: lambda: sock,
        }


class TrioStream(NowaitStream):
    """anyio's trio socket stream, with reads and writes tried on the socket first.

    trio's socket methods wrap each system call in a cancellation check before and a scheduling
    round trip after; a read or write the kernel can do at once is done here directly, and only
    one that has to wait goes through trio (``wait_readable``; the wrapped stream's ``send``).
    After a read that emptied the socket the next one waits for readiness first, so a media
    connection's steady 50 frames a second cost one ``recv`` each, not a failed one as well.
    """

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self._stream = stream
        self._sock: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        self._unsent = b""
        self._draining = False
        self._drained = Pulse()
        self._read_without_yield = 0
        #: The last read took less than it asked: the socket is empty, most likely, so the next
        #: read waits for it first instead of paying a failed ``recv`` (and its exception) per
        #: frame. Readiness is level-triggered, so bytes that came meanwhile wake it at once.
        self._empty = False
        self._closed = False

    async def receive(self, max_bytes: int = 65536) -> bytes:
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._empty:
                self._empty = False
                self._read_without_yield = 0
                await anyio.wait_readable(self._sock)
                continue
            try:
                data = self._sock.recv(max_bytes)
            except BlockingIOError:
                self._empty = True
                continue
            if not data:
                raise anyio.EndOfStream
            self._empty = len(data) < max_bytes
            # A peer sending as fast as we parse would otherwise never let this task yield.
            self._read_without_yield += len(data)
            if self._read_without_yield > READ_YIELD_BYTES:
                self._read_without_yield = 0
                await anyio.lowlevel.checkpoint()
            return data

    def send_nowait(self, item: bytes) -> bool:
        """Write what the socket takes now; False if some is left for :meth:`drain`."""
        if self._closed:
            raise anyio.ClosedResourceError
        if self._unsent:
            self._unsent += item
            return False
        try:
            sent = self._sock.send(item)
        except BlockingIOError:
            sent = 0
        if sent < len(item):
            self._unsent = item[sent:]
            return False
        return True

    async def drain(self) -> None:
        """Write what :meth:`send_nowait` left, waiting for the socket to take it. Bytes sent
        meanwhile (by another task: TLS may write from its reader) queue behind it."""
        while self._unsent:
            if self._draining:
                await self._drained.wait()
                continue
            unsent = self._unsent
            self._draining = True
            try:
                await self._stream.send(unsent)
            finally:
                self._draining = False
                self._drained.fire()
            self._unsent = self._unsent[len(unsent) :]

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        self._closed = True
        await self._stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes


async def open_stream(
    host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> anyio.abc.ByteStream:
    """A TCP connection to ``host:port``, with TLS over it when ``ssl_context`` is given."""
    stream: anyio.abc.ByteStream
    if sniffio.current_async_library() == "asyncio":
        stream = await AsyncioStream.connect(host, port)
    else:
        stream = TrioStream(await anyio.connect_tcp(host, port))
    if ssl_context is None:
        return stream
    try:
        return await TLSStream.wrap(
            stream, hostname=host, ssl_context=ssl_context, standard_compatible=False
        )
    except BaseException:
        await anyio.aclose_forcefully(stream)
        raise


#: Connections the kernel queues for a listener before refusing more.
LISTEN_BACKLOG = 1024
#: Connections asyncio accepts per readiness event (between two looks at the timers).
ACCEPT_BATCH = 32


class AsyncioListener(anyio.abc.Listener[AsyncioStream]):
    """A TCP listener whose connections are :class:`AsyncioStream` (the server side's)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._server: asyncio.Server | None = None
        self._accepted: deque[AsyncioStream] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    @classmethod
    async def create(cls, host: str, port: int) -> AsyncioListener:
        """Listen on ``host`` (one address) and ``port`` (0: any free port)."""
        loop = asyncio.get_running_loop()
        listener = cls(loop)
        # asyncio accepts up to ``backlog`` connections in one go when the socket is readable,
        # each a task run before the loop looks at its timers again: a burst of a thousand
        # connections would hold every call's media tick for tens of milliseconds. So asyncio
        # is given a small batch, and the kernel's queue is then made long again. (uvloop's
        # libuv accepts until the queue is empty whatever the backlog, but does it in C and only
        # queues each connection here: the handlers run as tasks afterwards.)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
        try:
            listener._server = await loop.create_server(
                lambda: _protocol(loop, listener._connected), sock=sock, backlog=ACCEPT_BATCH
            )
            sock.listen(LISTEN_BACKLOG)  # asyncio set the batch as the kernel's queue too
        except BaseException:
            sock.close()
            raise
        return listener

    def _connected(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        if self._closed:
            transport.abort()
            return
        self._accepted.append(AsyncioStream(transport, protocol))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def serve(
        self,
        handler: Callable[[AsyncioStream], Any],
        task_group: anyio.abc.TaskGroup | None = None,
    ) -> None:
        if task_group is None:
            async with anyio.create_task_group() as tg:
                await self.serve(handler, tg)
            return
        while True:
            while not self._accepted:
                if self._closed:
                    raise anyio.ClosedResourceError
                self._waiter = self._loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
            task_group.start_soon(handler, self._accepted.popleft())

    async def aclose(self) -> None:
        self._closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        while self._accepted:
            await self._accepted.popleft().aclose()
        if self._server is not None:
            self._server.close()
        await anyio.lowlevel.checkpoint()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        assert self._server is not None
        sock = self._server.sockets[0]
        return {
            anyio.abc.SocketAttribute.family: lambda: sock.family,
            anyio.abc.SocketAttribute.local_address: lambda: sock.getsockname(),
            anyio.abc.SocketAttribute.local_port: lambda: sock.getsockname()[1],
            anyio.abc.SocketAttribute.raw_socket: lambda: sock,
        }


async def open_listener(host: str, port: int) -> anyio.abc.Listener[Any]:
    """A TCP listener: :class:`AsyncioListener` under asyncio when ``host`` is one IP address,
    else anyio's (which also binds every address a name such as ``localhost`` resolves to)."""
    if sniffio.current_async_library() == "asyncio":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return await AsyncioListener.create(host, port)
    return await anyio.create_tcp_listener(local_host=host, local_port=port)
