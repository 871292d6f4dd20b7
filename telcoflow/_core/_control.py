"""The control plane as a pure state machine, for either role.

Feed it each text message received (:meth:`ControlProtocol.receive`) and it returns the typed
message, having checked it against the state table; ask it for what to send
(:meth:`ControlProtocol.send`) and it returns the wire text. No I/O, no clock.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from ._codec import Role, decode_control, encode
from ._errors import LocalProtocolError, RemoteProtocolError
from ._messages import (
    CallEnded,
    CallIncoming,
    ControlMessage,
    ErrorMessage,
    Setup,
    SetupDone,
    UnknownMessage,
)

__all__ = ["ControlProtocol", "ControlState"]


class ControlState(enum.Enum):
    """IDLE → SETUP (setup sent/received) → READY (offers flow) → CLOSED."""

    IDLE = "IDLE"
    SETUP = "SETUP"
    READY = "READY"
    CLOSED = "CLOSED"


_C, _S = Role.CLIENT, Role.SERVER
_I, _SU, _R, _X = ControlState.IDLE, ControlState.SETUP, ControlState.READY, ControlState.CLOSED

#: (sender, state, message type) -> next state. Both roles read the same table: a client sends
#: what a server receives. Anything not in it is a protocol error naming role, state and frame.
_TRANSITIONS: Mapping[tuple[Role, ControlState, type[ControlMessage]], ControlState] = {
    (_C, _I, Setup): _SU,
    (_S, _SU, SetupDone): _R,
    (_S, _SU, ErrorMessage): _X,
    # The server refuses a connection whose first frame was not a valid setup.
    (_S, _I, ErrorMessage): _X,
    (_S, _R, CallIncoming): _R,
    (_S, _R, CallEnded): _R,
    (_S, _R, ErrorMessage): _R,
}


def _peer(role: Role) -> Role:
    return Role.SERVER if role is Role.CLIENT else Role.CLIENT


class ControlProtocol:
    """One control connection's protocol state, as seen by ``role``."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self.state = ControlState.IDLE

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
        self._advance(self.role, msg)
        wire = encode(msg)
        assert isinstance(wire, str)
        return wire

    def receive(self, raw: str | bytes) -> ControlMessage:
        """Decode and check one message from the peer; unknown types pass through, unchecked."""
        msg = decode_control(raw, self.role)
        if not isinstance(msg, UnknownMessage):
            self._advance(_peer(self.role), msg)
        return msg

    def close(self) -> None:
        """The connection is gone; nothing more may be sent or received."""
        self.state = ControlState.CLOSED
