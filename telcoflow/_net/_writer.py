"""Writing a WebSocket: whole frames, serialised and coalesced, never cut short.

Any number of tasks send on one connection; there is no lock. A sender appends its encoded
frames to the outgoing buffer (:meth:`Writer.queue`) and calls :meth:`Writer.flush`:

- if no task is writing, it becomes the writer and writes everything buffered in one stream
  ``send``, again and again until the buffer is empty (frames queued meanwhile included);
- if a task is writing already, it waits (on a :class:`Pulse` fired after each write) until the
  bytes written since the start reach what had been queued when it flushed: its frames went out
  with the writer's. Several frames ready at once cost one write, an uncontended send no lock.

Invariants:

- **Only whole frames enter the buffer, and only through** :meth:`Writer.queue`, which counts
  them (``queued``); the writer counts what it wrote (``written``). A flush is done when
  ``written`` reaches the ``queued`` it saw, so bytes put anywhere else would break that
  accounting: :meth:`Writer.queue` is also the one sanctioned way to put hand-made bytes on the
  wire (tests' hostile servers do), between two whole frames.
- **A write is never cut short**: half a frame on the wire would leave the connection useless,
  so a cancelled sender's write finishes under a shield, bounded by :data:`WRITE_TIMEOUT`; a
  peer that takes nothing for that long is dead.
- **A failed write fails every sender**, now and later, with the connection's one close reason
  (the ``fail`` callback records it; the first reason wins).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc

from ._errors import ConnectionClosed
from ._pulse import Pulse
from ._streams import NowaitStream

__all__ = ["STREAM_ERRORS", "WRITE_TIMEOUT", "Writer"]

#: A peer that does not take our bytes for this long (its receive window full) is dead.
WRITE_TIMEOUT = 10.0

#: What a byte stream raises when the connection under it is gone.
STREAM_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


class Writer:
    """The sending half of a connection (see the module for its invariants)."""

    __slots__ = (
        "_abort",
        "_done",
        "_fail",
        "_failed",
        "_outgoing",
        "_queued",
        "_stream",
        "_writing",
        "_written",
        "writes",
    )

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        *,
        fail: Callable[[ConnectionClosed], ConnectionClosed],
        abort: Callable[[], Awaitable[None]],
    ) -> None:
        """``fail`` records why the connection ended and returns the reason to raise (the
        first one recorded); ``abort`` drops the stream."""
        self._stream = stream
        self._fail = fail
        self._abort = abort
        self._outgoing = bytearray()
        # Bytes queued and written since the start: a sender waits until its own are written.
        self._queued = 0
        self._written = 0
        self._writing = False
        self._failed = False
        #: Fired when a write ends, for senders waiting for theirs.
        self._done = Pulse()
        #: Socket writes made, to see coalescing at work.
        self.writes = 0

    def queue(self, data: bytes) -> None:
        """Append whole frames to the outgoing buffer; :meth:`flush` writes them."""
        self._outgoing += data
        self._queued += len(data)

    async def flush(self) -> None:
        """Return once everything queued so far is written (by this task or the writer)."""
        mine = self._queued  # written once _written reaches this
        while self._writing:
            await self._done.wait()
            if self._written >= mine:
                return  # the writer wrote our frames along with its own
            if self._failed:
                raise self._fail(ConnectionClosed(1006, "write failed"))
        if not self._outgoing:
            return
        self._writing = True
        try:
            while self._outgoing:
                data = bytes(self._outgoing)
                self._outgoing.clear()
                await self._write(data)
                self._written += len(data)
                self._done.fire()
        finally:
            self._writing = False
            self._done.fire()

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
            except STREAM_ERRORS as exc:
                raise self._failed_with(f"write failed: {type(exc).__name__}") from exc
            finish = stream.drain  # handed over: wait only for room
        else:
            finish = functools.partial(stream.send, data)
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + WRITE_TIMEOUT
            try:
                await finish()
            except STREAM_ERRORS as exc:
                raise self._failed_with(f"write failed: {type(exc).__name__}") from exc
        if scope.cancelled_caught:
            closed = self._failed_with(f"write stalled {WRITE_TIMEOUT:g} s")
            await self._abort()
            raise closed
        self.writes += 1

    def _failed_with(self, reason: str) -> ConnectionClosed:
        self._outgoing.clear()
        self._failed = True
        return self._fail(ConnectionClosed(1006, reason))
