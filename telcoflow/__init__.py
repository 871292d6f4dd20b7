"""Telcoflow: take phone calls with an AI voice agent, on asyncio or trio (via anyio).

The public surface is the documented ``telcoflow_sdk`` API: :class:`TelcoflowClientConfig`,
:class:`TelcoflowClient`, :class:`ActiveCall`, :mod:`telcoflow.events` and
:mod:`telcoflow.exceptions`. ``telcoflow.sandbox`` is a local Telcoflow server to develop against.
"""

import logging as _logging

from . import events, exceptions
from ._version import __version__
from .call import ActiveCall, CallStats
from .client import ClientStats, IncomingCalls, SessionRecord, TelcoflowClient
from .config import ReconnectPolicy, TelcoflowClientConfig
from .events import AgentMode, AudioMode, CallEvent, CallState, ClientEvent, TerminationReason
from .exceptions import (
    BufferClosedError,
    BufferFullError,
    WSSAuthenticationError,
    WSSCallClosedError,
    WSSCallCommandError,
    WSSCallCommandTimeoutError,
    WSSCallError,
    WSSConnectionError,
    WSSError,
    WSSMediaError,
    WSSRequestError,
)

# The SDK logs under ``telcoflow_sdk`` (the names the hosted service's documentation tells users
# to configure); the sandbox under ``telcoflow.sandbox``. Libraries install no handler of their own.
_logging.getLogger("telcoflow_sdk").addHandler(_logging.NullHandler())
_logging.getLogger("telcoflow").addHandler(_logging.NullHandler())

__all__ = [
    "ActiveCall",
    "AgentMode",
    "AudioMode",
    "BufferClosedError",
    "BufferFullError",
    "CallEvent",
    "CallState",
    "CallStats",
    "ClientEvent",
    "ClientStats",
    "IncomingCalls",
    "ReconnectPolicy",
    "SessionRecord",
    "TelcoflowClient",
    "TelcoflowClientConfig",
    "TerminationReason",
    "WSSAuthenticationError",
    "WSSCallClosedError",
    "WSSCallCommandError",
    "WSSCallCommandTimeoutError",
    "WSSCallError",
    "WSSConnectionError",
    "WSSError",
    "WSSMediaError",
    "WSSRequestError",
    "__version__",
    "events",
    "exceptions",
]
