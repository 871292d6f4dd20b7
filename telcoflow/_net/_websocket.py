"""A WebSocket over any anyio byte stream, framed by wsproto; client and server roles.

One task reads (:meth:`WebSocketConnection.receive`); any number of tasks send. Pings are answered
by the reader as soon as they are parsed. Sends are serialised and coalesced: a task appends its
frame to the outgoing buffer and, unless another task is writing already, writes everything
buffered in one ``send``; a task that finds a write under way waits for the writer, which keeps
writing until the buffer is empty (its frame included). Several small frames ready at once cost
one socket write, and an uncontended send costs no lock.
"""

from __future__ import annotations

import functools
import logging
import re
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import NoReturn
from urllib.parse import urlsplit

import anyio
import anyio.abc
import anyio.lowlevel
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError as WsLocalProtocolError
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from ._errors import ConnectFailed, ConnectionClosed, HandshakeRejected
from ._frames import CONTROL, CONTROL_FRAME_BYTES, OP_BINARY, OP_TEXT, encode_data_frame, next_frame
from ._pulse import Pulse
from ._streams import NowaitStream, open_stream

__all__ = [
    "CLOSE_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "WRITE_TIMEOUT",
    "ServerHandshake",
    "WebSocketConnection",
    "connect_websocket",
]

logger = logging.getLogger("telcoflow_sdk.websocket")

#: Largest message accepted from a peer. Protocol messages are tiny (PROTOCOL.md frames are at
#: most a few KiB); a peer sending more is broken or hostile, and buffering it costs memory.
MAX_MESSAGE_BYTES = 1024 * 1024

#: Fragments of one message at most. Peers fragment a message into a few frames if at all; a
#: message of a million 1-byte fragments would cost ~50 MB of list entries for 1 MB of payload.
MAX_FRAGMENTS = 1024

#: How long a clean close waits for the peer's close frame before dropping the socket.
CLOSE_TIMEOUT = 2.0

#: A peer that does not take our bytes for this long (its receive window full) is dead.
WRITE_TIMEOUT = 10.0

#: Bytes asked of the stream per read: a few dozen audio frames.
RECEIVE_BYTES = 65536

#: Control frames (pings) a reader handles before it lets other tasks run.
CONTROL_FRAMES_PER_TURN = 64

#: The handshake's response must fit in this (a reject body included).
MAX_HANDSHAKE_BYTES = 64 * 1024

_STREAM_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


class _Fed:
    """What the fast parser returns when it gave wsproto frames: its events come next."""


_FED = _Fed()


class WebSocketConnection:
    """An open WebSocket. ``receive`` from one task; ``send`` from any.

    Whole text and binary frames, the traffic of a media connection, are encoded and parsed by
    ``_frames``; control frames, fragmented messages, the close handshake and every malformed
    frame are wsproto's (see ``_frames`` for how the two share the stream).
    """

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        ws: WSConnection,
        *,
        name: str,
        leftover: bytes | None = None,
    ) -> None:
        """``leftover``: bytes read after the handshake's last byte, which wsproto has not seen
        (None: wsproto may hold some, and parses the whole stream)."""
        self._stream = stream
        self._ws = ws
        self.name = name
        #: Frames from a client are masked; a client masks its own.
        self._from_client = not ws.client
        #: Parsing here (from _inbuf), not in wsproto; False for good once wsproto takes over.
        self._fast = leftover is not None
        self._inbuf = bytearray(leftover or b"")
        self._outgoing = bytearray()
        # Bytes queued and written since the start: a sender waits until its own are written.
        self._queued_total = 0
        self._written_total = 0
        self._writing = False
        self._write_failed = False
        #: Fired when a write ends, for senders waiting for theirs.
        self._write_done = Pulse()
        # Frames that arrived in the same read as the handshake are already in wsproto's buffer.
        self._events: Iterable[Event] = ws.events()
        self._fragments: list[str | bytes] = []
        self._fragment_bytes = 0
        self._fragment_count = 0
        self._pongs: deque[anyio.Event] = deque()
        #: Pongs are queued as their pings are read and written when the reader next waits
        #: for data or returns a message: a burst of pings costs one write, not one per ping.
        self._pongs_due = False
        #: Control frames handled since the reader last let other tasks run.
        self._unyielded = 0
        self._closed: ConnectionClosed | None = None
        self._close_received = anyio.Event()
        self._reading = False
        #: Set when the reader leaves receive() or sees the peer's close frame.
        self._reader_changed = anyio.Event()
        self._stream_closed = False
        #: Socket writes made and frames sent, to see coalescing at work.
        self.writes = 0
        self.frames_sent = 0

    @property
    def closed(self) -> ConnectionClosed | None:
        """Why the connection closed, or ``None`` while it is open."""
        return self._closed

    # --- sending ---------------------------------------------------------------------------------

    def _queue(self, event: Event) -> None:
        try:
            data = self._ws.send(event)
        except WsLocalProtocolError as exc:
            raise self._closed or ConnectionClosed(1006, f"cannot send: {exc}") from None
        self._outgoing += data
        self._queued_total += len(data)

    def _queue_message(self, message: str | bytes) -> None:
        if self._ws.state is not ConnectionState.OPEN:
            # wsproto says what may be sent while closing (and raises for what may not).
            self._queue(TextMessage(message) if isinstance(message, str) else BytesMessage(message))
            return
        if isinstance(message, str):
            data = encode_data_frame(OP_TEXT, message.encode(), not self._from_client)
        else:
            data = encode_data_frame(OP_BINARY, message, not self._from_client)
        self._outgoing += data
        self._queued_total += len(data)

    async def send(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary (``bytes``) message."""
        if self._closed is not None:
            raise self._closed
        self._queue_message(message)
        self.frames_sent += 1
        await self._flush()

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Send several messages in one socket write."""
        if self._closed is not None:
            raise self._closed
        for message in messages:
            self._queue_message(message)
        self.frames_sent += len(messages)
        await self._flush()

    async def _flush(self) -> None:
        mine = self._queued_total  # written once _written_total reaches this
        while self._writing:
            await self._write_done.wait()
            if self._written_total >= mine:
                return  # the writer wrote our frames along with its own
            if self._write_failed:
                raise self._closed  # type: ignore[misc]
        if not self._outgoing:
            return
        self._writing = True
        try:
            while self._outgoing:
                data = bytes(self._outgoing)
                self._outgoing.clear()
                await self._write(data)
                self._written_total += len(data)
                self._write_done.fire()
        finally:
            self._writing = False
            self._write_done.fire()

    async def _write(self, data: bytes) -> None:
        stream = self._stream
        finish: Callable[[], Awaitable[None]]
        if isinstance(stream, NowaitStream):
            # The bytes are taken at once (by the transport, or by the socket as far as it
            # can): nothing can cut the write short, and unless the peer lags behind there is
            # nothing to wait for.
            try:
                if stream.send_nowait(data):
                    self.writes += 1
                    return
            except _STREAM_ERRORS as exc:
                self._write_failed_with(exc)
            finish = stream.drain  # handed over: wait only for room
        else:
            finish = functools.partial(stream.send, data)
        # A write cut short would leave half a frame on the wire and the connection useless, so
        # a cancellation waits for the write to finish; a peer that does not take the bytes
        # within WRITE_TIMEOUT is dead.
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + WRITE_TIMEOUT
            try:
                await finish()
            except _STREAM_ERRORS as exc:
                self._write_failed_with(exc)
        if scope.cancelled_caught:
            self._outgoing.clear()
            self._write_failed = True
            self._set_closed(ConnectionClosed(1006, f"write stalled {WRITE_TIMEOUT:g} s"))
            await self._abort()
            raise self._closed  # type: ignore[misc]
        self.writes += 1

    def _write_failed_with(self, exc: BaseException) -> NoReturn:
        self._outgoing.clear()
        self._write_failed = True
        self._set_closed(ConnectionClosed(1006, f"write failed: {type(exc).__name__}"))
        raise self._closed from exc  # type: ignore[misc]

    async def ping(self, payload: bytes) -> anyio.Event:
        """Send a ping; the returned event is set when its pong (or any later one) arrives."""
        done = anyio.Event()
        self._pongs.append(done)
        self._queue(Ping(payload))
        await self._flush()
        return done

    async def heartbeat(self, interval: float, timeout: float) -> None:
        """Ping every ``interval`` seconds; no pong within ``timeout`` aborts the connection.

        Returns when the connection is closed; raises :class:`ConnectionClosed` (code 1011) when
        the peer is dead.
        """
        n = 0
        while self._closed is None:
            await anyio.sleep(interval)
            n += 1
            try:
                pong = await self.ping(n.to_bytes(4, "big"))
            except ConnectionClosed:
                return
            with anyio.move_on_after(timeout):
                await pong.wait()
            if not pong.is_set() and self._closed is None:
                logger.warning("%s: no pong within %.1f s; peer is dead", self.name, timeout)
                self._set_closed(ConnectionClosed(1011, "peer did not answer ping"))
                await self._abort()
                raise self._closed  # type: ignore[misc]

    # --- receiving -------------------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The next whole message. Raises :class:`ConnectionClosed` once the connection closes."""
        self._reading = True
        try:
            while True:
                for event in self._events:
                    message = await self._handle(event)
                    if message is not None:
                        await self._send_pongs()
                        return message
                if self._closed is not None:
                    raise self._closed
                if self._fast:
                    parsed = self._parse_fast()
                    if parsed is _FED:
                        continue
                    if parsed is not None:
                        await self._send_pongs()
                        return parsed  # type: ignore[return-value]
                await self._send_pongs()
                try:
                    data = await self._stream.receive(RECEIVE_BYTES)
                except _STREAM_ERRORS as exc:
                    self._set_closed(ConnectionClosed(1006, f"read failed: {type(exc).__name__}"))
                    raise self._closed from exc  # type: ignore[misc]
                if self._fast:
                    self._inbuf += data
                else:
                    self._ws.receive_data(data)
                    self._events = self._ws.events()
        except WsRemoteProtocolError as exc:
            self._set_closed(ConnectionClosed(1002, f"bad WebSocket framing: {exc}"))
            await self._abort()
            raise self._closed from exc  # type: ignore[misc]
        finally:
            self._reading = False
            self._reader_changed.set()

    def _parse_fast(self) -> str | bytes | _Fed | None:
        """The next message from the bytes read (None: more are needed), or ``_FED`` when a
        control frame went to wsproto, or wsproto took over the stream, and its events follow."""
        buf = self._inbuf
        frame = next_frame(buf, 0, self._from_client)
        if frame is None:
            return None
        if frame.fast:
            payload = frame.payload
            assert payload is not None
            if frame.opcode == OP_TEXT:
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    self._hand_over()  # wsproto closes with 1007, as RFC 6455 asks
                    return _FED
                del buf[: frame.end]
                return text
            del buf[: frame.end]
            return payload
        if frame.opcode in CONTROL and frame.end <= CONTROL_FRAME_BYTES:
            if len(buf) < frame.end:
                return None
            self._ws.receive_data(bytes(buf[: frame.end]))
            del buf[: frame.end]
        else:
            self._hand_over()  # a fragment, a large or a malformed frame
            return _FED
        self._events = self._ws.events()
        return _FED

    def _hand_over(self) -> None:
        """From here on wsproto parses the stream (the buffer starts at a frame's first byte)."""
        self._fast = False
        if self._inbuf:
            self._ws.receive_data(bytes(self._inbuf))
            self._inbuf.clear()
        self._events = self._ws.events()

    async def _handle(self, event: Event) -> str | bytes | None:
        if isinstance(event, (TextMessage, BytesMessage)):
            data: str | bytes = (
                bytes(event.data) if isinstance(event.data, bytearray) else event.data
            )
            if event.message_finished and not self._fragment_count:
                return data  # the common case: one frame, one message
            if data:  # empty fragments cost nothing kept, but still count toward MAX_FRAGMENTS
                self._fragments.append(data)
            self._fragment_bytes += len(data)
            self._fragment_count += 1
            if self._fragment_bytes > MAX_MESSAGE_BYTES or self._fragment_count > MAX_FRAGMENTS:
                self._fragments.clear()
                self._reading = False  # this task collects the peer's close reply itself
                await self.aclose(1009, "message too big")
                raise self._closed  # type: ignore[misc]
            if not event.message_finished:
                return None
            parts, self._fragments, self._fragment_bytes = self._fragments, [], 0
            self._fragment_count = 0
            if isinstance(event, TextMessage):
                return "".join(parts)  # type: ignore[arg-type]
            return b"".join(parts)  # type: ignore[arg-type]
        if isinstance(event, Ping):
            self._queue(event.response())
            self._pongs_due = True
            self._unyielded += 1
            if self._unyielded >= CONTROL_FRAMES_PER_TURN:
                # A peer sending nothing but control frames, all at once, must not keep this
                # task from letting the others run.
                self._unyielded = 0
                await self._send_pongs()
                await anyio.lowlevel.checkpoint()
            return None
        if isinstance(event, Pong):
            while self._pongs:
                self._pongs.popleft().set()
            return None
        if isinstance(event, CloseConnection):
            await self._send_pongs()  # a ping before the close is still answered
            self._close_received.set()
            self._reader_changed.set()
            state = self._ws.state
            if state is ConnectionState.REMOTE_CLOSING or state is ConnectionState.OPEN:
                # OPEN: wsproto found a protocol error in the peer's frames (1002/1007) and
                # reports it as a close; tell the peer why, as RFC 6455 section 7.1.7 asks.
                reply = event.response() if state is ConnectionState.REMOTE_CLOSING else event
                self._queue(reply)
                try:
                    await self._flush()
                except ConnectionClosed:
                    pass
            self._set_closed(ConnectionClosed(event.code, event.reason or ""))
            await self._close_stream()
            raise self._closed  # type: ignore[misc]
        return None  # pragma: no cover - no other events once open

    async def _send_pongs(self) -> None:
        if not self._pongs_due:
            return
        self._pongs_due = False
        try:
            await self._flush()
        except ConnectionClosed:
            pass

    # --- closing ---------------------------------------------------------------------------------

    def _set_closed(self, closed: ConnectionClosed) -> None:
        if self._closed is None:
            self._closed = closed
        while self._pongs:
            self._pongs.popleft().set()

    async def _close_stream(self) -> None:
        if not self._stream_closed:
            self._stream_closed = True
            with anyio.CancelScope(shield=True):
                await self._stream.aclose()

    async def _abort(self) -> None:
        self._stream_closed = True
        await anyio.aclose_forcefully(self._stream)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close cleanly: send a close frame and wait (bounded) for the peer's. Idempotent."""
        with anyio.CancelScope(shield=True):
            if self._closed is None and self._ws.state is ConnectionState.OPEN:
                self._set_closed(ConnectionClosed(code, reason))
                try:
                    self._queue(CloseConnection(code, reason))
                    await self._flush()
                except ConnectionClosed:
                    pass
                else:
                    with anyio.move_on_after(CLOSE_TIMEOUT):
                        await self._await_close_reply()
            self._set_closed(ConnectionClosed(code, reason))
            await self._close_stream()

    async def _await_close_reply(self) -> None:
        """Wait for the peer's close frame: read by the reader task while there is one, else
        (no reader, or it left, e.g. cancelled) read here."""
        while not self._close_received.is_set():
            if not self._reading:
                await self._drain_until_close()
                return
            changed = self._reader_changed = anyio.Event()
            await changed.wait()

    async def _drain_until_close(self) -> None:
        if self._fast:
            self._hand_over()  # closing: wsproto finds the peer's close frame
        while True:
            # Frames already read (the peer's close may have come with the last message) first.
            for event in self._events:
                if isinstance(event, CloseConnection):
                    self._close_received.set()
                    return
            try:
                data = await self._stream.receive(RECEIVE_BYTES)
            except _STREAM_ERRORS:
                return
            self._ws.receive_data(data)
            self._events = self._ws.events()

    async def abort(self) -> None:
        """Drop the connection without a close handshake (dead peer, local teardown)."""
        self._set_closed(ConnectionClosed(1006, "aborted locally"))
        await self._abort()


# --- client role ---------------------------------------------------------------------------------


def _split_url(url: str) -> tuple[bool, str, int, str, str]:
    try:
        parts = urlsplit(url)
        port_given = parts.port
    except ValueError as exc:  # a bad IPv6 literal, a port out of range, ...
        raise ConnectFailed(f"URL {url!r} cannot be parsed: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ConnectFailed(f"URL scheme must be ws:// or wss://, not {parts.scheme!r}")
    if not parts.hostname:
        raise ConnectFailed(f"URL {url!r} has no host")
    tls = parts.scheme == "wss"
    port = port_given or (443 if tls else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return tls, parts.hostname, port, host_header, target


async def connect_websocket(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
    name: str = "websocket",
) -> WebSocketConnection:
    """Open a TCP (and TLS, for ``wss://``) connection and complete the WebSocket handshake.

    Raises :class:`HandshakeRejected` when the server answers with an HTTP error and
    :class:`ConnectFailed` for everything else that stops the connection.
    """
    tls, host, port, host_header, target = _split_url(url)
    ws = WSConnection(ConnectionType.CLIENT)
    try:
        request = Request(
            host=host_header,
            target=target,
            extra_headers=[(k.encode(), v.encode()) for k, v in headers],
        )
        handshake = ws.send(request)
    except Exception:
        # h11's message quotes the offending value, which may be a credential: name only which.
        names = ", ".join(k for k, _ in headers)
        raise ConnectFailed(
            f"cannot build the upgrade request for {url}: a header ({names}) or the URL has "
            f"characters HTTP does not allow"
        ) from None
    try:
        stream = await open_stream(
            host, port, (ssl_context or ssl.create_default_context()) if tls else None
        )
    except (*_STREAM_ERRORS, ssl.SSLError) as exc:  # EndOfStream: hung up during TLS handshake
        raise ConnectFailed(f"cannot connect to {host}:{port}: {exc!r}") from exc
    try:
        await stream.send(handshake)
        leftover = await _await_accept(stream, ws)
    except BaseException as exc:
        await anyio.aclose_forcefully(stream)
        if isinstance(exc, (ConnectFailed, anyio.get_cancelled_exc_class())) or not isinstance(
            exc, Exception
        ):
            raise
        if isinstance(exc, (*_STREAM_ERRORS, WsRemoteProtocolError)):
            raise ConnectFailed(f"WebSocket handshake with {host}:{port} failed: {exc!r}") from exc
        raise
    return WebSocketConnection(stream, ws, name=name, leftover=leftover)


_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def _head_end(data: bytes | bytearray) -> int:
    """Where an HTTP head (request or response line and headers) ends in ``data``, or -1: at
    the first empty line, with or without carriage returns (as h11 reads it)."""
    match = _BLANK_LINE.search(data)
    return -1 if match is None else match.end()


async def _read_head(stream: anyio.abc.ByteStream, data: bytes, what: str) -> tuple[bytes, bytes]:
    """Read until ``data`` holds a whole HTTP head: ``(head, what came after it)``."""
    buf = bytearray(data)
    while (end := _head_end(buf)) < 0:
        if len(buf) > MAX_HANDSHAKE_BYTES:
            raise ConnectFailed(f"{what} is too large")
        buf += await stream.receive(RECEIVE_BYTES)
    if end > MAX_HANDSHAKE_BYTES:
        raise ConnectFailed(f"{what} is too large")
    return bytes(buf[:end]), bytes(buf[end:])


async def _await_accept(stream: anyio.abc.ByteStream, ws: WSConnection) -> bytes:
    """Read the handshake's response; returns the bytes after it (frames wsproto has not seen)."""
    # wsproto is given the response's head only, so that what follows (the server may speak
    # at once) is parsed by the connection from its first frame on.
    head, rest = await _read_head(stream, b"", "handshake response")
    ws.receive_data(head)
    received = len(head)
    status: int | None = None
    body = bytearray()
    while True:
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return rest
            if isinstance(event, RejectConnection):
                status = event.status_code
                if not event.has_body:
                    raise HandshakeRejected(status, "")
            elif isinstance(event, RejectData):
                body += event.data
                if event.body_finished:
                    raise HandshakeRejected(status or 400, body.decode("utf-8", "replace")[:200])
        data, rest = rest or await stream.receive(RECEIVE_BYTES), b""
        received += len(data)
        if received > MAX_HANDSHAKE_BYTES:
            raise ConnectFailed("handshake response is too large")
        ws.receive_data(data)


# --- server role ---------------------------------------------------------------------------------


class ServerHandshake:
    """An upgrade request a server has read, waiting for :meth:`accept` or :meth:`reject`."""

    def __init__(
        self, stream: anyio.abc.ByteStream, ws: WSConnection, request: Request, leftover: bytes
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._leftover = leftover
        self.request = request
        self.headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.extra_headers
        }

    @classmethod
    async def start(cls, stream: anyio.abc.ByteStream, initial: bytes) -> ServerHandshake:
        """Parse the upgrade request from ``initial`` (all bytes read so far) and the stream."""
        ws = WSConnection(ConnectionType.SERVER)
        try:
            # wsproto is given the request's head only; what follows is the connection's.
            head, rest = await _read_head(stream, initial, "upgrade request")
            ws.receive_data(head)
            for event in ws.events():
                if isinstance(event, Request):
                    return cls(stream, ws, event, rest)
            raise ConnectFailed("the request is not a WebSocket upgrade")
        except (*_STREAM_ERRORS, WsRemoteProtocolError) as exc:
            raise ConnectFailed(f"bad or incomplete upgrade request: {exc!r}") from exc

    async def accept(self, name: str) -> WebSocketConnection:
        """Complete the upgrade and return the open connection."""
        await self._stream.send(self._ws.send(AcceptConnection()))
        return WebSocketConnection(self._stream, self._ws, name=name, leftover=self._leftover)

    async def reject(self, status_code: int, body: str) -> None:
        """Refuse the upgrade with an HTTP status and a short plain-text body, then close."""
        data = body.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        out = self._ws.send(
            RejectConnection(status_code=status_code, headers=headers, has_body=True)
        )
        out += self._ws.send(RejectData(data=data, body_finished=True))
        try:
            await self._stream.send(out)
        except _STREAM_ERRORS:
            pass
        await anyio.aclose_forcefully(self._stream)
