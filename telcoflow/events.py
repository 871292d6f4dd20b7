"""Event names (string constants and the equal ``ClientEvent``/``CallEvent`` enums) and the enums
that describe a call."""

from __future__ import annotations

from ._core import AgentMode, AudioMode, CallState, StrEnum, TerminationReason

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


class ClientEvent(StrEnum):
    """Events a :class:`~telcoflow.TelcoflowClient` fires."""

    INCOMING_CALL = INCOMING_CALL


class CallEvent(StrEnum):
    """Events an :class:`~telcoflow.ActiveCall` fires."""

    CALL_TERMINATED = CALL_TERMINATED
    CALL_ANSWERED = CALL_ANSWERED
    CALL_CONNECTED = CALL_CONNECTED
    CALL_CONNECT_FAILED = CALL_CONNECT_FAILED
    CALL_ANSWER_FAILED = CALL_ANSWER_FAILED
