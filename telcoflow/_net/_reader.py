"""Reading a WebSocket: two parsers over one byte stream, and how one hands it to the other.

Pure: bytes in (:meth:`FrameReader.feed`), events out (:meth:`FrameReader.next_event`); the
connection does the reading, writing and waiting.

Why two parsers. A media connection carries fifty small data frames a second each way, every one
a whole message. wsproto parses any frame, but through a general machine (buffers, a frame and a
message decoder, an event object, a generator per parse); :func:`._frames.next_frame` parses that
common frame in a few lines. wsproto stays in charge of everything else: control frames (it
answers for the close handshake's state), fragmented messages, and every malformed frame, so
that each error is reported as wsproto reports it (a close with 1002 or 1007).

The invariant that makes sharing one stream safe: **every byte is parsed by exactly one parser,
and wsproto is given bytes only at a frame's first byte.** wsproto's frame decoder keeps its
place in the stream; a byte it did not see, or a frame it is given from the middle, would put it
out of step for good. So:

- The reader starts in :attr:`Parser.FAST` only when the handshake gave wsproto its HTTP head
  alone (``leftover``: the bytes after the head, none of them wsproto's). Bytes read go to the
  reader's own buffer, which always starts at a frame boundary, because frames leave it whole.
- A whole, well-formed, unfragmented text or binary frame is parsed here and leaves the buffer.
- A control frame (ping, pong, close; at most :data:`CONTROL_FRAME_BYTES`) is given to wsproto
  whole, once all of it has arrived; wsproto emits its event and, for a close, moves its state.
  wsproto saw it from its first byte to its last, so it stays in step.
- Anything else (a fragment, a frame over ``FAST_PAYLOAD_BYTES``, reserved bits, a wrong mask,
  a text frame that is not UTF-8) is the **hand-over**: the buffer, from that frame's first byte,
  goes to wsproto and the reader is in :attr:`Parser.WSPROTO` for good. There is no way back: a
  fragmented message leaves wsproto inside a message, and a large frame inside a frame.
- A reader made without ``leftover`` (wsproto may hold frame bytes already) is wsproto's from
  the start. Closing hands over too (:meth:`FrameReader.hand_over`), so that the peer's close
  frame is found by the parser that tracks the close handshake.

The reader bounds what a peer can make it hold: a message of more than :data:`MAX_MESSAGE_BYTES`
or :data:`MAX_FRAGMENTS` fragments raises :class:`MessageTooBig` (the connection closes with
1009).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

from wsproto import WSConnection
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage

from ._frames import CONTROL, CONTROL_FRAME_BYTES, OP_TEXT, next_frame

__all__ = [
    "MAX_FRAGMENTS",
    "MAX_MESSAGE_BYTES",
    "NEED_DATA",
    "FrameReader",
    "MessageTooBig",
    "Parser",
    "ReaderEvent",
]

#: Largest message accepted from a peer. Protocol messages are tiny (PROTOCOL.md frames are at
#: most a few KiB); a peer sending more is broken or hostile, and buffering it costs memory.
MAX_MESSAGE_BYTES = 1024 * 1024

#: Fragments of one message at most. Peers fragment a message into a few frames if at all; a
#: message of a million 1-byte fragments would cost ~50 MB of list entries for 1 MB of payload.
MAX_FRAGMENTS = 1024


class Parser(enum.Enum):
    """Who parses the bytes read."""

    #: ``_frames`` parses data frames; wsproto is given whole control frames only.
    FAST = "fast"
    #: wsproto parses every byte, for good.
    WSPROTO = "wsproto"


class _Step(enum.Enum):
    #: The bytes read so far hold no whole message: feed more.
    NEED_DATA = "need data"
    #: The fast parser gave wsproto bytes: its events come next.
    WSPROTO_EVENTS = "wsproto events"


NEED_DATA = _Step.NEED_DATA

#: What :meth:`FrameReader.next_event` returns: a whole message, a control frame's event, or
#: :data:`NEED_DATA`.
ReaderEvent = str | bytes | Ping | Pong | CloseConnection | _Step


class MessageTooBig(Exception):
    """A peer's message went over :data:`MAX_MESSAGE_BYTES` or :data:`MAX_FRAGMENTS`."""


class FrameReader:
    """The messages and control frames in the bytes a connection reads (see the module)."""

    __slots__ = ("_events", "_fragment_bytes", "_fragments", "_inbuf", "_masked", "_ws", "parser")

    def __init__(self, ws: WSConnection, *, from_client: bool, leftover: bytes | None) -> None:
        """``leftover``: the bytes after the handshake's head, which wsproto has not seen
        (``None``: wsproto may hold some, and parses the whole stream)."""
        self._ws = ws
        #: Frames from a client are masked.
        self._masked = from_client
        self.parser = Parser.FAST if leftover is not None else Parser.WSPROTO
        self._inbuf = bytearray(leftover or b"")
        # Frames that arrived in the same read as the handshake are already in wsproto's buffer.
        self._events: Iterator[Event] = ws.events()
        self._fragments: list[str | bytes] = []
        self._fragment_bytes = 0

    def feed(self, data: bytes) -> None:
        """Bytes read from the stream (after :meth:`next_event` said :data:`NEED_DATA`)."""
        if self.parser is Parser.FAST:
            self._inbuf += data
        else:
            self._ws.receive_data(data)
            self._events = self._ws.events()

    def next_event(self) -> ReaderEvent:
        """The next whole message (``str`` or ``bytes``), ping, pong or close, or
        :data:`NEED_DATA`.

        Raises :class:`MessageTooBig`, and wsproto's ``RemoteProtocolError`` for framing it
        cannot report as a close.
        """
        while True:
            event = self.parsed_event()
            if event is not NEED_DATA or self.parser is Parser.WSPROTO:
                return event
            parsed = self._parse_fast()
            if parsed is not _Step.WSPROTO_EVENTS:
                return parsed

    def parsed_event(self) -> ReaderEvent:
        """Like :meth:`next_event`, from what wsproto has parsed already and nothing else:
        a closed connection still delivers those (a ``call.terminated`` that came with the last
        audio), but parses no more."""
        for event in self._events:
            if isinstance(event, (TextMessage, BytesMessage)):
                message = self._message(event)
                if message is not None:
                    return message
            elif isinstance(event, (Ping, Pong, CloseConnection)):
                return event
        return NEED_DATA

    def hand_over(self) -> None:
        """From here on wsproto parses the stream (the buffer starts at a frame's first byte)."""
        if self.parser is Parser.WSPROTO:
            return
        self.parser = Parser.WSPROTO
        if self._inbuf:
            self._ws.receive_data(bytes(self._inbuf))
            self._inbuf.clear()
        self._events = self._ws.events()

    def skip_to_close(self) -> bool:
        """Drop what wsproto has parsed up to the peer's close frame: True once it is seen.

        For a connection closing with nobody reading it: messages are not assembled (or
        bounded) then, only the close is looked for. Call :meth:`hand_over` first.
        """
        return any(isinstance(event, CloseConnection) for event in self._events)

    def _parse_fast(self) -> str | bytes | _Step:
        buf = self._inbuf
        frame = next_frame(buf, 0, self._masked)
        if frame is None:
            return NEED_DATA
        if frame.fast:
            payload = frame.payload
            assert payload is not None
            if frame.opcode == OP_TEXT:
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    self.hand_over()  # wsproto closes with 1007, as RFC 6455 asks
                    return _Step.WSPROTO_EVENTS
                del buf[: frame.end]
                return text
            del buf[: frame.end]
            return payload
        if frame.opcode in CONTROL and frame.end <= CONTROL_FRAME_BYTES:
            if len(buf) < frame.end:
                return NEED_DATA
            self._ws.receive_data(bytes(buf[: frame.end]))
            del buf[: frame.end]
            self._events = self._ws.events()
        else:
            self.hand_over()  # a fragment, a large or a malformed frame
        return _Step.WSPROTO_EVENTS

    def _message(self, event: TextMessage | BytesMessage) -> str | bytes | None:
        """The message ``event`` completes, or None while its fragments are still arriving."""
        data: str | bytes = bytes(event.data) if isinstance(event.data, bytearray) else event.data
        fragments = self._fragments
        if event.message_finished and not fragments:
            return data  # the common case: one frame, one message
        fragments.append(data)  # empty fragments too: they count toward MAX_FRAGMENTS
        self._fragment_bytes += len(data)
        if self._fragment_bytes > MAX_MESSAGE_BYTES or len(fragments) > MAX_FRAGMENTS:
            fragments.clear()
            self._fragment_bytes = 0
            raise MessageTooBig
        if not event.message_finished:
            return None
        self._fragments, self._fragment_bytes = [], 0
        if isinstance(event, TextMessage):
            return "".join(fragments)  # type: ignore[arg-type]
        return b"".join(fragments)  # type: ignore[arg-type]
