"""The control connection's requests: each answered once, by its ``reqId``, in bounded time.

Invariants:

- a request has a waiter from the moment it is sent until its caller returns; the waiter gets
  one outcome: the server's response, or ``WSSConnectionError`` when the connection is lost
  (:meth:`Control.lost`: every request in flight fails then, not at its timeout); with neither
  within ``request_timeout`` the caller raises ``WSSConnectionError`` and a late response is
  ignored (the protocol object forgets the id);
- a message is encoded by the protocol object before it is sent, so a request the protocol
  does not allow in its state is refused here, never sent.
"""

from __future__ import annotations

import anyio

from .._core import (
    ControlProtocol,
    ControlRequest,
    ProtocolError,
    RequestCompleted,
    Response,
    SessionReady,
)
from .._net import ConnectionClosed, WebSocketConnection
from ..exceptions import WSSConnectionError, WSSError

__all__ = ["Control"]


class _Waiter:
    __slots__ = ("done", "error", "response")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.response: Response | None = None
        self.error: WSSError | None = None


class Control:
    """One control connection after a successful setup: its protocol state and the requests
    waiting for their responses."""

    __slots__ = ("_timeout", "_waiters", "conn", "opened_at", "proto", "sm_ws_id")

    def __init__(
        self, conn: WebSocketConnection, proto: ControlProtocol, sm_ws_id: str, timeout: float
    ) -> None:
        self.conn = conn
        self.proto = proto
        self.sm_ws_id = sm_ws_id
        self.opened_at = anyio.current_time()
        self._timeout = timeout
        self._waiters: dict[str, _Waiter] = {}

    async def send(self, msg: SessionReady) -> None:
        """Send a message that gets no response."""
        try:
            await self.conn.send(self.proto.send(msg))
        except (ConnectionClosed, ProtocolError) as exc:
            raise WSSConnectionError(f"control connection lost: {exc}") from None

    async def request(self, msg: ControlRequest) -> Response:
        """Send ``msg`` and wait (at most ``request_timeout``) for its one response."""
        kind = type(msg).__name__
        try:
            wire = self.proto.send(msg)
        except ProtocolError as exc:
            raise WSSConnectionError(f"cannot send {kind}: {exc}") from None
        waiter = self._waiters[msg.req_id] = _Waiter()
        try:
            with anyio.move_on_after(self._timeout):
                try:
                    await self.conn.send(wire)
                except ConnectionClosed as exc:
                    raise WSSConnectionError(f"control connection lost: {exc}") from None
                await waiter.done.wait()
        finally:
            del self._waiters[msg.req_id]
        if waiter.error is not None:
            raise waiter.error
        if waiter.response is None:
            self.proto.forget(msg.req_id)
            raise WSSConnectionError(f"no response to {kind} within {self._timeout:g} s")
        return waiter.response

    def completed(self, event: RequestCompleted) -> None:
        waiter = self._waiters.get(event.response.req_id)
        if waiter is not None:
            waiter.response = event.response
            waiter.done.set()

    def lost(self) -> None:
        """The connection is gone: every request in flight fails now, not at its timeout."""
        self.proto.connection_lost()
        for waiter in self._waiters.values():
            if not waiter.done.is_set():
                waiter.error = WSSConnectionError(
                    "control connection lost before the response arrived"
                )
                waiter.done.set()
