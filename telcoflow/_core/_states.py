"""Call states, command names and the two tables both roles read: the call's and the agent's.

PROTOCOL.md, "Call states and what commands do". The server is the authority on a call's state.
Two views of one call follow from the same table:

- **the call's** state, which the server (the sandbox) keeps: ``call.close`` in CONNECTED takes
  the agent out and leaves caller and callee connected, so the call stays CONNECTED;
- **the agent's** participation, which the client keeps: once the agent has closed or
  disconnected it is out of the call, whose state it then sees as DISCONNECTED.

:func:`call_state_after` is the first, :func:`state_after` the second (``agent_leaves`` is the
difference). A (state, command) pair missing from the table is refused with ``INVALID_STATE``;
a failed command changes nothing. Both roles import this table, so the emulator cannot drift from
the client's idea of the protocol.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._errors import LocalProtocolError
from ._vocab import StrEnum

__all__ = [
    "AgentMode",
    "AudioMode",
    "CallState",
    "Command",
    "agent_leaves",
    "agent_mode_after",
    "allowed_commands",
    "call_state_after",
    "state_after",
]


class CallState(StrEnum):
    """A call's state: PENDING (ringing), ANSWERED, CONNECTED (3-way), DISCONNECTED (over)."""

    PENDING = "PENDING"
    ANSWERED = "ANSWERED"
    CONNECTED = "CONNECTED"
    DISCONNECTED = "DISCONNECTED"


class AgentMode(StrEnum):
    """Who hears the agent once the callee is connected."""

    BARGE = "barge"
    WHISPER = "whisper"
    SPY = "spy"


class AudioMode(StrEnum):
    """``mixed``: one stream of everything the agent hears; ``isolated``: the legs apart too."""

    MIXED = "mixed"
    ISOLATED = "isolated"


class Command(StrEnum):
    """Media-plane command names, as sent on the wire."""

    ANSWER = "call.answer"
    CONNECT = "call.connect"
    WHISPER = "agent.whisper"
    BARGE = "agent.barge"
    SPY = "agent.spy"
    INTERRUPT = "agent.interrupt"
    CLOSE = "call.close"
    DISCONNECT = "call.disconnect"


_P, _A, _C, _D = CallState.PENDING, CallState.ANSWERED, CallState.CONNECTED, CallState.DISCONNECTED

#: (state, command) -> the call's state after the command succeeded. ``call.connect`` reaches
#: CONNECTED only once the callee answers (until then the call stays as it was).
_CALL_TRANSITIONS: Mapping[tuple[CallState, Command], CallState] = {
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
    # The agent leaves; caller and callee stay connected.
    (_C, Command.CLOSE): _C,
    (_C, Command.DISCONNECT): _D,
}

_ALLOWED: Mapping[CallState, frozenset[Command]] = {
    state: frozenset(cmd for (s, cmd) in _CALL_TRANSITIONS if s is state) for state in CallState
}

#: The agent's mode after a successful command (``call.connect`` puts it in barge mode).
_MODE_AFTER: Mapping[Command, AgentMode] = {
    Command.CONNECT: AgentMode.BARGE,
    Command.WHISPER: AgentMode.WHISPER,
    Command.BARGE: AgentMode.BARGE,
    Command.SPY: AgentMode.SPY,
}


def allowed_commands(state: CallState) -> frozenset[Command]:
    """The commands the server accepts in ``state``."""
    return _ALLOWED[state]


def call_state_after(state: CallState, command: Command) -> CallState:
    """The call's state once ``command`` has succeeded in ``state`` (the server's view).

    Raises :class:`LocalProtocolError` for a pair the table does not allow.
    """
    try:
        return _CALL_TRANSITIONS[(state, command)]
    except KeyError:
        raise LocalProtocolError(
            f"command {command.value} is not allowed in state {state.value}"
        ) from None


def agent_leaves(command: Command) -> bool:
    """Whether the agent is out of the call once ``command`` has succeeded."""
    return command is Command.CLOSE or command is Command.DISCONNECT


def state_after(state: CallState, command: Command) -> CallState:
    """The call's state as the agent sees it once ``command`` has succeeded in ``state``:
    DISCONNECTED once it has left, else the call's own state."""
    after = call_state_after(state, command)
    return CallState.DISCONNECTED if agent_leaves(command) else after


def agent_mode_after(command: Command, mode: AgentMode | None) -> AgentMode | None:
    """The agent's mode once ``command`` has succeeded (unchanged by most commands)."""
    return _MODE_AFTER.get(command, mode)
