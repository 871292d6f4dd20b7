"""Errors of the connection layer. The facades translate them into the public ``WSS*`` errors."""

from __future__ import annotations

__all__ = ["ConnectFailed", "ConnectionClosed", "HandshakeRejected"]


class ConnectionClosed(Exception):
    """The WebSocket is closed (cleanly or not); ``code`` is the close code, 1006 if abnormal."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


class ConnectFailed(Exception):
    """The TCP/TLS connection or the WebSocket handshake could not be completed."""


class HandshakeRejected(ConnectFailed):
    """The server answered the upgrade with an HTTP error (401, 403, ...)."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"server refused the WebSocket upgrade with HTTP {status_code}: {body}")
        self.status_code = status_code
        self.body = body
