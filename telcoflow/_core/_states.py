"""Call states, command names and the state table shared by the client and the sandbox.

The server is the authority on a call's state; the client keeps the same table so that its idea of
the state follows from the server's answers without a round trip, and so the sandbox cannot drift
from the client's view of the protocol.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from ._errors import LocalProtocolError

__all__ = [
    "SAMPLE_RATES",
    "AgentMode",
    "AudioMode",
    "CallState",
    "Command",
    "allowed_commands",
    "frame_bytes_for",
    "state_after",
]

#: Sample rates the protocol allows (PROTOCOL.md, "Audio format").
SAMPLE_RATES: frozenset[int] = frozenset({8000, 16000, 24000})

#: Both sides frame audio in 20 ms packets.
FRAME_MS = 20


def frame_bytes_for(sample_rate: int) -> int:
    """Bytes of PCM16 mono in one 20 ms frame at ``sample_rate`` (960 at 24 kHz)."""
    return sample_rate * FRAME_MS // 1000 * 2


class CallState(str, enum.Enum):
    """A call's state as the agent sees it."""

    PENDING = "PENDING"
    ANSWERED = "ANSWERED"
    CONNECTED = "CONNECTED"
    DISCONNECTED = "DISCONNECTED"

    def __str__(self) -> str:
        return self.value


class AgentMode(str, enum.Enum):
    """Who hears the agent once the callee is connected."""

    BARGE = "barge"
    WHISPER = "whisper"
    SPY = "spy"

    def __str__(self) -> str:
        return self.value


class AudioMode(str, enum.Enum):
    """``mixed``: one stream of everything the agent hears; ``isolated``: one stream per leg."""

    MIXED = "mixed"
    ISOLATED = "isolated"

    def __str__(self) -> str:
        return self.value


class Command(str, enum.Enum):
    """Media-plane command names, as sent on the wire."""

    ANSWER = "call.answer"
    CONNECT = "call.connect"
    WHISPER = "agent.whisper"
    BARGE = "agent.barge"
    SPY = "agent.spy"
    INTERRUPT = "agent.interrupt"
    CLOSE = "call.close"
    DISCONNECT = "call.disconnect"

    def __str__(self) -> str:
        return self.value


_P, _A, _C, _D = CallState.PENDING, CallState.ANSWERED, CallState.CONNECTED, CallState.DISCONNECTED

#: (state, command) -> state after the command succeeded. A pair missing here is refused with
#: INVALID_STATE. ``call.connect`` reaches CONNECTED only once the callee answers.
_TRANSITIONS: Mapping[tuple[CallState, Command], CallState] = {
    (_P, Command.ANSWER): _A,
    (_P, Command.CONNECT): _C,
    (_P, Command.DISCONNECT): _D,
    (_P, Command.INTERRUPT): _P,
    (_A, Command.CONNECT): _C,
    (_A, Command.CLOSE): _D,
    (_A, Command.DISCONNECT): _D,
    (_A, Command.INTERRUPT): _A,
    (_C, Command.WHISPER): _C,
    (_C, Command.BARGE): _C,
    (_C, Command.SPY): _C,
    (_C, Command.INTERRUPT): _C,
    (_C, Command.CLOSE): _D,
    (_C, Command.DISCONNECT): _D,
}

_ALLOWED: Mapping[CallState, frozenset[Command]] = {
    state: frozenset(cmd for (s, cmd) in _TRANSITIONS if s is state) for state in CallState
}


def allowed_commands(state: CallState) -> frozenset[Command]:
    """The commands the server accepts in ``state``."""
    return _ALLOWED[state]


def state_after(state: CallState, command: Command) -> CallState:
    """The state once ``command`` has succeeded in ``state``.

    Raises :class:`LocalProtocolError` for a pair the table does not allow.
    """
    try:
        return _TRANSITIONS[(state, command)]
    except KeyError:
        raise LocalProtocolError(
            f"command {command.value} is not allowed in state {state.value}"
        ) from None
