"""The protocol's shared vocabulary: error codes, reasons, channels and the numbers both sides
must agree on.

Everything here is a name or a number written once and imported by the client's facades, the
sandbox and the tests, so that the two roles cannot drift apart on a string literal. Values are
those of PROTOCOL.md (the hosted service's protocol, version 2); names marked *(ours)* there are
marked so here too.
"""

from __future__ import annotations

import enum

__all__ = [
    "CLAIM_TIMEOUT_S",
    "DEFAULT_RING_TIME_S",
    "MAX_RING_TIME_S",
    "MEDIA_TIMEOUT_S",
    "MIN_TOKEN_TTL_S",
    "PROTOCOL_SDK_VERSION",
    "REQUEST_TIMEOUT_S",
    "RESUME_AFTER_SETUP_S",
    "SETUP_DONE_TIMEOUT_S",
    "Activity",
    "Channel",
    "CloseReason",
    "Direction",
    "ErrorCode",
    "InboundCallFlow",
    "Initiator",
    "SessionState",
    "StrEnum",
    "TerminationReason",
]

#: ``x-sdk-version`` names the protocol version a client speaks: the official client's own
#: version, which the hosted service may gate on (HTTP 426 for versions it refuses).
PROTOCOL_SDK_VERSION = "1.0.0"

#: ``call.connect``'s ring time bounds (seconds) and the official client's default.
MAX_RING_TIME_S = 120
DEFAULT_RING_TIME_S = 60

#: A client waits this long for ``setup.done`` after sending ``setup``.
SETUP_DONE_TIMEOUT_S = 10.0
#: A client waits this long for the ``response`` to a request.
REQUEST_TIMEOUT_S = 30.0
#: (ours) A session claimed but not readied, or readied but without media, for this long is
#: unbound and notified again (``RESUME``).
CLAIM_TIMEOUT_S = 30.0
MEDIA_TIMEOUT_S = 30.0
#: (ours) A connection is notified of calls that were ringing before it joined no sooner than
#: this after its ``setup.done``: the official client loses a notification that comes sooner.
RESUME_AFTER_SETUP_S = 1.0
#: (ours) A media token is valid at least this long after its ``call.in``.
MIN_TOKEN_TTL_S = 60.0


class StrEnum(str, enum.Enum):
    """A string-valued enum that prints as its value (``enum.StrEnum`` is 3.11+)."""

    def __str__(self) -> str:
        return str(self.value)


class ErrorCode(StrEnum):
    """Error codes of both planes: ``command_response.error_code`` and ``response.errorCode``."""

    # Media plane: command responses.
    CALL_UNANSWERED = "CALL_UNANSWERED"
    CALL_REJECTED = "CALL_REJECTED"
    INVALID_STATE = "INVALID_STATE"
    INVALID_COMMAND = "INVALID_COMMAND"
    CALL_TERMINATED = "CALL_TERMINATED"
    TIMEOUT = "TIMEOUT"
    # Control plane: responses to requests.
    SESSION_BUSY = "SESSION_BUSY"
    SESSION_CLOSED = "SESSION_CLOSED"
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    SESSION_NOT_OPEN = "SESSION_NOT_OPEN"
    CHANNEL_NOT_CONFIGURED = "CHANNEL_NOT_CONFIGURED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    OUTBOUND_OVERFLOW = "OUTBOUND_OVERFLOW"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    INVALID_REQUEST = "INVALID_REQUEST"
    #: Messaging (``wa.msg.out``), which the sandbox does not serve.
    INVALID_CHANNEL = "INVALID_CHANNEL"
    #: Client side: ``session.create`` answered ``created: false``.
    SESSION_ALREADY_EXISTS = "SESSION_ALREADY_EXISTS"


class TerminationReason(StrEnum):
    """The ``reason`` of ``call.terminated``: why the call is over for the agent."""

    CALLER_HANGUP = "caller_hangup"
    CALLEE_HANGUP = "callee_hangup"
    AGENT_DISCONNECT = "agent_disconnect"
    AGENT_CLOSE = "agent_close"
    MEDIA_LOST = "media_lost"
    SERVER_SHUTDOWN = "server_shutdown"
    #: Local only: the agent called ``force_disconnect()``; the server was not asked.
    AGENT_FORCE_DISCONNECT = "agent_force_disconnect"
    #: Local only: the server sent ``call.terminated`` without a reason.
    UNKNOWN = "unknown"


class CloseReason(StrEnum):
    """The ``reason`` of ``session.closed``."""

    CALL_TERMINATED = "CALL_TERMINATED"
    FORCE_CLOSE = "FORCE_CLOSE"
    SDK_REQUEST = "SDK_REQUEST"


class Activity(StrEnum):
    """What a ``session.notify`` announces (unknown values are kept as strings)."""

    NEW_INCOMING_CALL = "NEW_INCOMING_CALL"
    NEW_INCOMING_MESSAGE = "NEW_INCOMING_MESSAGE"
    RESUME = "RESUME"


class Channel(StrEnum):
    """A session's channel: a phone call, or messaging (not served here)."""

    TELCO = "TELCO"
    WA = "WA"


class InboundCallFlow(StrEnum):
    """``call_flow.setup``'s ``inboundCall``: which inbound calls a connection is notified of."""

    ALL = "ALL"
    MISSED_ONLY = "MISSED_ONLY"
    NO = "NO"


class Initiator(StrEnum):
    """Who opened a session (REST records): the connector's number was called, or we dialled."""

    CONNECTOR = "CONNECTOR"
    SDK = "SDK"


class SessionState(StrEnum):
    """A session's state in REST records."""

    OPEN = "OPEN"
    CLOSED = "CLOSED"


class Direction(StrEnum):
    """A call's direction, from the connector's side: mobile-terminated or -originated."""

    INBOUND = "MT"
    OUTBOUND = "MO"
