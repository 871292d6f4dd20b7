"""The control plane (the session manager) as a pure state machine, for either role.

Feed it each text message received (:meth:`ControlProtocol.receive`) and it returns the typed
message, checked against the connection's state table; ask it for what to send
(:meth:`ControlProtocol.send`) and it returns the wire text. No I/O, no clock: how long to wait
for an answer is the connection layer's decision (PROTOCOL.md: 30 s for a ``response``).

Request/response correlation is part of the state:

- client: every request sent (``session.open``, ``session.create``, ``call_flow.setup``,
  ``wa.msg.out``) is pending until the ``response`` with its ``reqId`` arrives, which
  :meth:`receive` returns as :class:`RequestCompleted` together with the request; a response to
  no pending request (late, duplicated, invented) is :class:`MessageIgnored`. A request the
  caller stops waiting for is :meth:`forget`-ten; a lost connection fails them all
  (:meth:`connection_lost` returns them);
- server: every request received is unanswered until exactly one ``response`` is sent for it;
  a second response, or one to a request never received, is a :class:`LocalProtocolError`.

Connection states: IDLE → SETUP (``setup`` sent/received) → READY (sessions flow) → CLOSED.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping

from ._control_codec import BadRequest, decode_control, encode_control
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import MessageIgnored, RequestCompleted
from ._messages import (
    CallFlowSetup,
    CallIn,
    ControlMessage,
    ControlRequest,
    ErrorMessage,
    Response,
    SessionClosed,
    SessionCreate,
    SessionNotify,
    SessionOpen,
    SessionReady,
    Setup,
    SetupDone,
    UnknownMessage,
    WaMessageOut,
)
from ._wire import Role, peer_of

__all__ = ["ControlEvent", "ControlProtocol", "ControlState"]


class ControlState(enum.Enum):
    """IDLE → SETUP (setup sent/received) → READY (sessions flow) → CLOSED."""

    IDLE = "IDLE"
    SETUP = "SETUP"
    READY = "READY"
    CLOSED = "CLOSED"


_C, _S = Role.CLIENT, Role.SERVER
_I, _SU, _R, _X = ControlState.IDLE, ControlState.SETUP, ControlState.READY, ControlState.CLOSED

_REQUESTS = (SessionOpen, SessionCreate, CallFlowSetup, WaMessageOut)

#: (sender, state, message type) -> next state. Both roles read the same table: a client sends
#: what a server receives. Anything not in it is a protocol error naming role, state and frame.
_TRANSITIONS: Mapping[tuple[Role, ControlState, type[ControlMessage]], ControlState] = {
    (_C, _I, Setup): _SU,
    (_S, _SU, SetupDone): _R,
    (_S, _SU, ErrorMessage): _X,
    # The server refuses a connection whose first frame was not a valid setup.
    (_S, _I, ErrorMessage): _X,
    **{(_C, _R, kind): _R for kind in (*_REQUESTS, SessionReady)},
    **{
        (_S, _R, kind): _R
        for kind in (Response, SessionNotify, CallIn, SessionClosed, ErrorMessage)
    },
}

#: What :meth:`ControlProtocol.receive` returns: a server push or request, or an event.
ControlEvent = ControlMessage | RequestCompleted | MessageIgnored


def _uuid4() -> str:
    return str(uuid.uuid4())


class ControlProtocol:
    """One control connection's protocol state, as seen by ``role``.

    ``new_id`` makes request ids (uuid4 strings, as the official client's; injectable so that
    tests are deterministic).
    """

    def __init__(self, role: Role, *, new_id: Callable[[], str] = _uuid4) -> None:
        self.role = role
        self.state = ControlState.IDLE
        self._new_id = new_id
        #: Client: requests sent and not answered. Server: requests received, not answered
        #: (None: one that could not be read, which is still answered, with an error).
        self._pending: dict[str, ControlRequest | None] = {}

    def new_request_id(self) -> str:
        """A fresh ``reqId`` for a request to send."""
        return self._new_id()

    def _advance(self, sender: Role, msg: ControlMessage) -> None:
        key = (sender, self.state, type(msg))
        try:
            self.state = _TRANSITIONS[key]
        except KeyError:
            error = LocalProtocolError if sender is self.role else RemoteProtocolError
            raise error(
                f"{sender.value} may not send {type(msg).__name__} on a control connection in "
                f"state {self.state.value} (we are the {self.role.value})"
            ) from None

    def send(self, msg: ControlMessage) -> str:
        """Check that we may send ``msg`` now, advance, and return its wire text."""
        if (
            isinstance(msg, Response)
            and self.role is Role.SERVER
            and msg.req_id not in self._pending
        ):
            raise LocalProtocolError(
                f"request {msg.req_id!r} is not awaiting a response: one response each"
            )
        if isinstance(msg, _REQUESTS) and self.role is Role.CLIENT and msg.req_id in self._pending:
            raise LocalProtocolError(f"request id {msg.req_id!r} is already pending")
        self._advance(self.role, msg)
        if isinstance(msg, Response):
            del self._pending[msg.req_id]
        elif isinstance(msg, _REQUESTS):
            self._pending[msg.req_id] = msg
        return encode_control(msg)

    def receive(self, raw: str | bytes) -> ControlEvent:
        """Decode and check one message from the peer; unknown types pass through, unchecked.

        Server: a request that cannot be read but has a ``reqId`` raises :class:`BadRequest`
        and awaits its (error) response like any request.
        """
        try:
            msg = decode_control(raw, self.role)
        except BadRequest as bad:
            if self.role is not Role.SERVER or self.state is not ControlState.READY:
                # Not a request this side could answer now: refused like a well-formed one.
                raise RemoteProtocolError(
                    f"{bad} (and no request is allowed in state {self.state.value})"
                ) from None
            if bad.req_id in self._pending:
                raise RemoteProtocolError(f"request id {bad.req_id!r} reused") from None
            self._pending[bad.req_id] = None
            raise
        if isinstance(msg, UnknownMessage):
            return msg
        self._advance(peer_of(self.role), msg)
        if isinstance(msg, Response):
            if msg.req_id not in self._pending:
                return MessageIgnored(f"response to unknown or timed-out request {msg.req_id!r}")
            request = self._pending.pop(msg.req_id)
            assert request is not None
            return RequestCompleted(request, msg)
        if isinstance(msg, _REQUESTS):
            if msg.req_id in self._pending:
                raise RemoteProtocolError(f"request id {msg.req_id!r} reused while unanswered")
            self._pending[msg.req_id] = msg
        return msg

    def forget(self, req_id: str) -> None:
        """Client: stop waiting for ``req_id`` (timed out); a late response is then ignored."""
        self._pending.pop(req_id, None)

    def pending(self) -> list[str]:
        """Ids of the requests sent and not answered (client), or received and not answered
        (server)."""
        return list(self._pending)

    def connection_lost(self) -> list[ControlRequest]:
        """The connection is gone: nothing more may be sent or received. Returns the requests
        that will never be answered."""
        self.state = ControlState.CLOSED
        lost = [r for r in self._pending.values() if r is not None]
        self._pending = {}
        return lost
