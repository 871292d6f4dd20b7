"""An open WebSocket over any anyio byte stream, client or server role.

:class:`WebSocketConnection` composes three units, each keeping one invariant:

- a :class:`~._reader.FrameReader` (pure): the two parsers over the read bytes and the hand-over
  between them; ``_reader`` explains it;
- a :class:`~._writer.Writer`: whole frames, serialised and coalesced, never cut short;
- the connection itself: one task reads (:meth:`WebSocketConnection.receive`) and answers pings
  and the close handshake as they are parsed; any number of tasks send.

Invariants of the connection:

- **one close reason**: the first of a failed read, a failed or stalled write, a close frame
  either way, a dead heartbeat or an abort is kept (:meth:`WebSocketConnection._fail`) and every
  later operation raises it;
- **pongs are batched**: a ping's pong is queued when the ping is parsed and written when the
  reader next waits for data or returns a message, so a burst of pings costs one write; a reader
  handling nothing but control frames lets other tasks run every
  :data:`CONTROL_FRAMES_PER_TURN`;
- **the peer's close reply is read by exactly one task**: the reader while there is one;
  :meth:`WebSocketConnection.aclose` reads it itself only when no task is in ``receive``
  (``_reading``), waiting for the reader to leave otherwise.

The handshakes that open a connection are in ``_handshake``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence

import anyio
import anyio.abc
import anyio.lowlevel
from wsproto import WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError as WsLocalProtocolError
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from ._errors import ConnectionClosed
from ._frames import OP_BINARY, OP_TEXT, encode_data_frame
from ._reader import NEED_DATA, FrameReader, MessageTooBig
from ._writer import STREAM_ERRORS, Writer

__all__ = ["CLOSE_TIMEOUT", "RECEIVE_BYTES", "WebSocketConnection"]

logger = logging.getLogger("telcoflow_sdk.websocket")

#: How long a clean close waits for the peer's close frame before dropping the socket.
CLOSE_TIMEOUT = 2.0

#: Bytes asked of the stream per read: a few dozen audio frames.
RECEIVE_BYTES = 65536

#: Control frames (pings) a reader handles before it lets other tasks run.
CONTROL_FRAMES_PER_TURN = 64


class WebSocketConnection:
    """An open WebSocket. ``receive`` from one task; ``send`` from any.

    Made by ``connect_websocket`` (client) or ``ServerHandshake.accept`` (server).
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
        self._reader = FrameReader(ws, from_client=self._from_client, leftover=leftover)
        self._writer = Writer(stream, fail=self._fail, abort=self._abort)
        self._pongs: deque[anyio.Event] = deque()
        #: Pongs queued and not yet flushed (see the module: pongs are batched).
        self._pongs_due = False
        #: Control frames handled since the reader last let other tasks run.
        self._unyielded = 0
        self._closed: ConnectionClosed | None = None
        self._close_received = anyio.Event()
        self._reading = False
        #: Set when the reader leaves receive() or sees the peer's close frame.
        self._reader_changed = anyio.Event()
        self._stream_closed = False
        #: Messages sent, to see coalescing at work (against :attr:`writes`).
        self.frames_sent = 0

    @property
    def closed(self) -> ConnectionClosed | None:
        """Why the connection closed, or ``None`` while it is open."""
        return self._closed

    @property
    def writes(self) -> int:
        """Socket writes made so far."""
        return self._writer.writes

    def _fail(self, closed: ConnectionClosed) -> ConnectionClosed:
        """The connection is over: keep ``closed`` as the reason unless one is kept already,
        release ping waiters, and return the reason to raise."""
        if self._closed is None:
            self._closed = closed
        while self._pongs:
            self._pongs.popleft().set()
        return self._closed

    # --- sending ---------------------------------------------------------------------------------

    def _queue(self, event: Event) -> None:
        try:
            data = self._ws.send(event)
        except WsLocalProtocolError as exc:
            raise self._closed or ConnectionClosed(1006, f"cannot send: {exc}") from None
        self._writer.queue(data)

    def _queue_message(self, message: str | bytes) -> None:
        if self._ws.state is not ConnectionState.OPEN:
            # wsproto says what may be sent while closing (and raises for what may not).
            self._queue(TextMessage(message) if isinstance(message, str) else BytesMessage(message))
            return
        if isinstance(message, str):
            data = encode_data_frame(OP_TEXT, message.encode(), not self._from_client)
        else:
            data = encode_data_frame(OP_BINARY, message, not self._from_client)
        self._writer.queue(data)

    async def send(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary (``bytes``) message."""
        if self._closed is not None:
            raise self._closed
        self._queue_message(message)
        self.frames_sent += 1
        await self._writer.flush()

    async def send_many(self, messages: Sequence[str | bytes]) -> None:
        """Send several messages in one socket write."""
        if self._closed is not None:
            raise self._closed
        for message in messages:
            self._queue_message(message)
        self.frames_sent += len(messages)
        await self._writer.flush()

    async def send_raw(self, data: bytes) -> None:
        """Write ``data`` as it is, between two whole frames: for test peers that must send
        what no WebSocket library would (a malformed frame, a frame split oddly).

        The bytes go through the writer's one queue, so its accounting stays exact."""
        if self._closed is not None:
            raise self._closed
        self._writer.queue(data)
        await self._writer.flush()

    async def ping(self, payload: bytes) -> anyio.Event:
        """Send a ping; the returned event is set when its pong (or any later one) arrives."""
        done = anyio.Event()
        self._pongs.append(done)
        self._queue(Ping(payload))
        await self._writer.flush()
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
                closed = self._fail(ConnectionClosed(1011, "peer did not answer ping"))
                await self._abort()
                raise closed

    # --- receiving -------------------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The next whole message. Raises :class:`ConnectionClosed` once the connection closes."""
        reader = self._reader
        self._reading = True
        try:
            while True:
                if self._closed is None:
                    event = reader.next_event()
                else:  # what was read before the close is still delivered, no more
                    event = reader.parsed_event()
                    if event is NEED_DATA:
                        raise self._closed
                if isinstance(event, (str, bytes)):
                    if self._pongs_due:
                        await self._send_pongs()
                    return event
                if event is NEED_DATA:
                    if self._pongs_due:
                        await self._send_pongs()
                    try:
                        data = await self._stream.receive(RECEIVE_BYTES)
                    except STREAM_ERRORS as exc:
                        closed = self._fail(
                            ConnectionClosed(1006, f"read failed: {type(exc).__name__}")
                        )
                        raise closed from exc
                    reader.feed(data)
                elif isinstance(event, Ping):
                    await self._pinged(event)
                elif isinstance(event, Pong):
                    while self._pongs:
                        self._pongs.popleft().set()
                elif isinstance(event, CloseConnection):
                    raise await self._close_frame(event)
        except MessageTooBig:
            self._reading = False  # this task collects the peer's close reply itself
            await self.aclose(1009, "message too big")
            raise self._fail(ConnectionClosed(1009, "message too big")) from None
        except WsRemoteProtocolError as exc:
            closed = self._fail(ConnectionClosed(1002, f"bad WebSocket framing: {exc}"))
            await self._abort()
            raise closed from exc
        finally:
            self._reading = False
            self._reader_changed.set()

    async def _pinged(self, ping: Ping) -> None:
        self._queue(ping.response())
        self._pongs_due = True
        self._unyielded += 1
        if self._unyielded >= CONTROL_FRAMES_PER_TURN:
            # A peer sending nothing but control frames, all at once, must not keep this task
            # from letting the others run.
            self._unyielded = 0
            await self._send_pongs()
            await anyio.lowlevel.checkpoint()

    async def _close_frame(self, event: CloseConnection) -> ConnectionClosed:
        """The peer's close frame (or wsproto's report of its bad framing): answer, then end."""
        await self._send_pongs()  # a ping before the close is still answered
        self._close_received.set()
        self._reader_changed.set()
        state = self._ws.state
        if state is ConnectionState.REMOTE_CLOSING or state is ConnectionState.OPEN:
            # OPEN: wsproto found a protocol error in the peer's frames (1002/1007) and reports
            # it as a close; tell the peer why, as RFC 6455 section 7.1.7 asks.
            reply = event.response() if state is ConnectionState.REMOTE_CLOSING else event
            self._queue(reply)
            try:
                await self._writer.flush()
            except ConnectionClosed:
                pass
        closed = self._fail(ConnectionClosed(event.code, event.reason or ""))
        await self._close_stream()
        return closed

    async def _send_pongs(self) -> None:
        if not self._pongs_due:
            return
        self._pongs_due = False
        try:
            await self._writer.flush()
        except ConnectionClosed:
            pass

    # --- closing ---------------------------------------------------------------------------------

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
                self._fail(ConnectionClosed(code, reason))
                try:
                    self._queue(CloseConnection(code, reason))
                    await self._writer.flush()
                except ConnectionClosed:
                    pass
                else:
                    with anyio.move_on_after(CLOSE_TIMEOUT):
                        await self._await_close_reply()
            self._fail(ConnectionClosed(code, reason))
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
        reader = self._reader
        reader.hand_over()  # closing: wsproto finds the peer's close frame
        # Frames already read (the peer's close may have come with the last message) first.
        while not reader.skip_to_close():
            try:
                data = await self._stream.receive(RECEIVE_BYTES)
            except STREAM_ERRORS:
                return
            reader.feed(data)
        self._close_received.set()

    async def abort(self) -> None:
        """Drop the connection without a close handshake (dead peer, local teardown)."""
        self._fail(ConnectionClosed(1006, "aborted locally"))
        await self._abort()
