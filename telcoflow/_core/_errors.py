"""Errors raised by the protocol core."""

from __future__ import annotations

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """A message broke PROTOCOL.md; the text says which message and why."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that breaks the protocol (bad JSON, wrong field type, ...)."""


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol does not allow in the current state."""
