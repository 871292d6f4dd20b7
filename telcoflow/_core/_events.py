"""What the protocol objects report, beside the wire messages they pass through.

A protocol object's ``receive`` returns either the decoded message itself (a push the consumer
acts on) or one of these, when the message had an effect only the protocol object can see:
an answer correlated with what it answers, audio cut to credit, or nothing at all.
"""

from __future__ import annotations

import attrs

from ._messages import CommandResponse, ControlRequest, Response
from ._states import CallState, Command

__all__ = ["AgentAudioReceived", "CommandCompleted", "MessageIgnored", "RequestCompleted"]


@attrs.frozen
class MessageIgnored:
    """A well-formed message that has no effect here (a late response, foreign credit, ...)."""

    reason: str


@attrs.frozen
class RequestCompleted:
    """Client: the ``response`` to a control-plane request we sent, with the request."""

    request: ControlRequest
    response: Response


@attrs.frozen
class CommandCompleted:
    """Client: the response to a command we sent; ``state`` is the call's state after it, as
    the agent sees it."""

    command: Command
    response: CommandResponse
    state: CallState


@attrs.frozen
class AgentAudioReceived:
    """Server: audio from the agent, cut to the credit it had; ``excess_bytes`` were beyond it."""

    pcm: bytes = attrs.field(repr=lambda pcm: f"<{len(pcm)} bytes>")
    excess_bytes: int
