"""A protocol object run over a WebSocket: one reader, one heartbeat, one bad-frame policy.

Every consumer of a connection (the client's control and media connections, the sandbox's) runs
the same loop: receive a whole message, hand it to its sans-IO protocol object, act on the typed
event. :func:`open_link` is that loop, written once::

    async with open_link(conn, proto.receive, name="control", logger=log) as link:
        async for event in link:
            match event: ...
    # link.closed says why the connection ended

Invariants:

- **one reader**: only the ``async for`` reads the connection; iteration ends when the
  connection closes, and :attr:`Link.closed` then holds why;
- **one heartbeat** per link, in the link's own task group, which nothing outlives: leaving the
  ``async with`` stops it;
- **the bad-frame policy** (a decision, not an accident): a frame the protocol object refuses
  (:class:`ProtocolError`) is counted and skipped, and the connection stays up, because a peer
  that sends one bad frame among good ones (a newer server, a bug) must not cost a live call.
  The first :data:`LOUD_BAD_FRAMES` of a link are logged at ``loud_level``, the rest at DEBUG,
  so a peer sending millions cannot flood the log;
- **bounded work per turn**: a peer whose frames all arrive at once (a flood of tiny frames)
  cannot keep this task from yielding: after :data:`MESSAGES_PER_TURN` messages read without a
  pause, the reader lets the event loop run the other tasks before it goes on.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

import anyio
import anyio.lowlevel

from .._core import ProtocolError
from ._errors import ConnectionClosed
from ._websocket import WebSocketConnection

__all__ = ["LOUD_BAD_FRAMES", "MESSAGES_PER_TURN", "Link", "open_link"]

#: Bad frames logged at ``loud_level`` per link; the rest at DEBUG (all are counted).
LOUD_BAD_FRAMES = 10

#: Messages a link reads before it yields to the event loop even if more are waiting: 32
#: audio frames are a few hundred microseconds of work.
MESSAGES_PER_TURN = 32

_E = TypeVar("_E")


class Link(Generic[_E]):
    """The events of one connection, decoded by its protocol object. Made by :func:`open_link`."""

    def __init__(
        self,
        conn: WebSocketConnection,
        decode: Callable[[str | bytes], _E],
        *,
        logger: logging.Logger,
        loud_level: int,
        on_bad_frame: Callable[[ProtocolError], None] | None,
    ) -> None:
        self.conn = conn
        self._decode = decode
        self._logger = logger
        self._loud_level = loud_level
        self._on_bad_frame = on_bad_frame
        self._unyielded = 0
        #: Frames the protocol object refused, so far.
        self.bad_frames = 0
        #: Why the connection ended, once iteration has stopped.
        self.closed: ConnectionClosed | None = None

    def __aiter__(self) -> Link[_E]:
        return self

    async def __anext__(self) -> _E:
        conn, decode = self.conn, self._decode
        while True:
            self._unyielded += 1
            if self._unyielded > MESSAGES_PER_TURN:
                self._unyielded = 0
                await anyio.lowlevel.checkpoint()
            try:
                raw = await conn.receive()
            except ConnectionClosed as closed:
                self.closed = closed
                raise StopAsyncIteration from None
            try:
                return decode(raw)
            except ProtocolError as exc:
                self._bad(exc)

    def _bad(self, exc: ProtocolError) -> None:
        self.bad_frames += 1
        if self._on_bad_frame is not None:
            self._on_bad_frame(exc)
        level = self._loud_level if self.bad_frames <= LOUD_BAD_FRAMES else logging.DEBUG
        self._logger.log(level, "%s: ignoring bad frame: %s", self.conn.name, exc)
        if self.bad_frames == LOUD_BAD_FRAMES:
            self._logger.log(
                level, "%s: further bad frames are logged at DEBUG only", self.conn.name
            )


async def _heartbeat(conn: WebSocketConnection, interval: float, timeout: float) -> None:
    try:
        await conn.heartbeat(interval, timeout)
    except ConnectionClosed:
        pass  # the reader sees the connection end


@asynccontextmanager
async def open_link(
    conn: WebSocketConnection,
    decode: Callable[[str | bytes], _E],
    *,
    logger: logging.Logger,
    ping_interval: float | None = None,
    ping_timeout: float = 10.0,
    loud_level: int = logging.WARNING,
    on_bad_frame: Callable[[ProtocolError], None] | None = None,
    task_name: str | None = None,
) -> AsyncIterator[Link[_E]]:
    """Run ``decode`` over ``conn``'s messages, heartbeating every ``ping_interval`` seconds (no
    heartbeat when None). The connection is not closed on exit: its owner decides how.
    ``task_name`` names the heartbeat's task (by default after its function)."""
    link = Link(conn, decode, logger=logger, loud_level=loud_level, on_bad_frame=on_bad_frame)
    async with anyio.create_task_group() as tg:
        if ping_interval is not None:
            tg.start_soon(_heartbeat, conn, ping_interval, ping_timeout, name=task_name)
        try:
            yield link
        finally:
            tg.cancel_scope.cancel()
