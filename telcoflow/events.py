"""Event names (string constants and the equal ``ClientEvent``/``CallEvent`` enums) and the enums
that describe a call."""

from __future__ import annotations

import enum

from ._core import AgentMode, AudioMode, CallState

__all__ = [
    "CALL_ANSWERED",
    "CALL_ANSWER_FAILED",
    "CALL_CONNECTED",
    "CALL_CONNECT_FAILED",
    "CALL_TERMINATED",
    "INCOMING_CALL",
    "AgentMode",
    "AudioMode",
    "CallEvent",
    "CallState",
    "ClientEvent",
    "TerminationReason",
]

INCOMING_CALL = "call.incoming"
CALL_TERMINATED = "call.terminated"
CALL_ANSWERED = "call.answered"
CALL_CONNECTED = "call.connected"
CALL_CONNECT_FAILED = "call.connect_failed"
CALL_ANSWER_FAILED = "call.answer_failed"


class ClientEvent(str, enum.Enum):
    """Events a :class:`~telcoflow.TelcoflowClient` fires."""

    INCOMING_CALL = INCOMING_CALL

    def __str__(self) -> str:
        return self.value


class CallEvent(str, enum.Enum):
    """Events an :class:`~telcoflow.ActiveCall` fires."""

    CALL_TERMINATED = CALL_TERMINATED
    CALL_ANSWERED = CALL_ANSWERED
    CALL_CONNECTED = CALL_CONNECTED
    CALL_CONNECT_FAILED = CALL_CONNECT_FAILED
    CALL_ANSWER_FAILED = CALL_ANSWER_FAILED

    def __str__(self) -> str:
        return self.value


class TerminationReason(str, enum.Enum):
    """The payload of ``CALL_TERMINATED``: why the call ended for the agent."""

    CALLER_HANGUP = "caller_hangup"
    CALLEE_HANGUP = "callee_hangup"
    AGENT_DISCONNECT = "agent_disconnect"
    AGENT_CLOSE = "agent_close"
    MEDIA_LOST = "media_lost"
    SERVER_SHUTDOWN = "server_shutdown"
    #: Local only: the agent called ``force_disconnect()``; the server was not asked.
    AGENT_FORCE_DISCONNECT = "agent_force_disconnect"

    def __str__(self) -> str:
        return self.value
