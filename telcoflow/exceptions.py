"""The SDK's errors. Every error names what failed and why; none ever carries a secret."""

from __future__ import annotations

__all__ = [
    "BufferClosedError",
    "BufferFullError",
    "WSSAuthenticationError",
    "WSSCallClosedError",
    "WSSCallCommandError",
    "WSSCallCommandTimeoutError",
    "WSSCallError",
    "WSSConnectionError",
    "WSSError",
    "WSSMediaError",
    "WSSRequestError",
]


class WSSError(Exception):
    """Base class of every error the SDK raises."""


class WSSConnectionError(WSSError):
    """The control connection could not be opened, was lost for good, or the server refused it
    for good: our protocol version (HTTP 426) or our setup (``fatal``: never retried, as
    retrying the same cannot succeed)."""

    def __init__(
        self, message: str, status_code: int | None = None, *, fatal: bool = False
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.fatal = fatal


class WSSRequestError(WSSError):
    """The server refused a control-plane or REST request; ``error_code`` is the protocol's
    (``SESSION_BUSY``, ``CHANNEL_NOT_CONFIGURED``, ``SESSION_NOT_FOUND``, ...)."""

    def __init__(
        self, message: str, *, error_code: str | None = None, error_content: object = None
    ) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.error_content = error_content


class WSSAuthenticationError(WSSError):
    """The server refused our credentials (HTTP 401) or the connector is disabled (403).

    Never retried: retrying with the same credentials cannot succeed.
    """

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class WSSMediaError(WSSError):
    """A call's media connection could not be opened or failed."""


class BufferFullError(WSSError):
    """``send_audio`` would exceed the outgoing buffer's capacity; nothing was queued."""


class BufferClosedError(WSSError):
    """``send_audio`` after the call ended; nothing was queued."""


class WSSCallError(WSSError):
    """A call-level error; ``call_id`` says which call."""

    def __init__(self, message: str, call_id: str | None = None) -> None:
        super().__init__(message)
        self.call_id = call_id


class WSSCallClosedError(WSSCallError):
    """The call has ended (for the agent): no command can be sent on it any more."""


class WSSCallCommandError(WSSCallError):
    """The server refused a command; ``error_code`` is the protocol's (``INVALID_STATE``, ...)."""

    def __init__(
        self,
        message: str,
        call_id: str | None = None,
        *,
        command: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        super().__init__(message, call_id)
        self.command = command
        self.error_code = error_code
        self.error_message = error_message


class WSSCallCommandTimeoutError(WSSCallError):
    """No response to a command within its timeout. The call stays usable."""

    def __init__(
        self,
        message: str,
        call_id: str | None = None,
        *,
        command: str | None = None,
        timeout: float | None = None,
    ) -> None:
        super().__init__(message, call_id)
        self.command = command
        self.timeout = timeout
