"""The WebSocket opening handshake (RFC 6455 section 4), client and server roles.

wsproto builds and checks the HTTP upgrade on both sides. The one rule this module adds is about
the bytes that follow the handshake's head in the same read: **wsproto is given the head alone**
(:func:`_read_head` splits it off at the first blank line, as h11 reads it), and what came after
it is handed to the :class:`~._websocket.WebSocketConnection` as ``leftover``, so that its frame
reader starts with every frame byte in its own buffer (``_reader`` explains why that matters).
Both sides bound the head at :data:`MAX_HANDSHAKE_BYTES`; every failure is a
:class:`ConnectFailed` (or :class:`HandshakeRejected` for an HTTP error answer) naming the cause,
never a credential: a header value h11 refuses is reported by its name only.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from urllib.parse import urlsplit

import anyio
import anyio.abc
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, RejectData, Request
from wsproto.utilities import RemoteProtocolError as WsRemoteProtocolError

from ._errors import ConnectFailed, HandshakeRejected
from ._streams import open_stream
from ._websocket import RECEIVE_BYTES, WebSocketConnection
from ._writer import STREAM_ERRORS

__all__ = ["MAX_HANDSHAKE_BYTES", "ServerHandshake", "connect_websocket"]

#: The handshake's response must fit in this (a reject body included).
MAX_HANDSHAKE_BYTES = 64 * 1024


# --- client role ---------------------------------------------------------------------------------


def _split_url(url: str) -> tuple[bool, str, int, str, str]:
    try:
        parts = urlsplit(url)
        port_given = parts.port
    except ValueError as exc:  # a bad IPv6 literal, a port out of range, ...
        raise ConnectFailed(f"URL {url!r} cannot be parsed: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ConnectFailed(f"URL scheme must be ws:// or wss://, not {parts.scheme!r}")
    if not parts.hostname:
        raise ConnectFailed(f"URL {url!r} has no host")
    tls = parts.scheme == "wss"
    port = port_given or (443 if tls else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return tls, parts.hostname, port, host_header, target


async def connect_websocket(
    url: str,
    *,
    headers: Sequence[tuple[str, str]] = (),
    ssl_context: ssl.SSLContext | None = None,
    name: str = "websocket",
) -> WebSocketConnection:
    """Open a TCP (and TLS, for ``wss://``) connection and complete the WebSocket handshake.

    Raises :class:`HandshakeRejected` when the server answers with an HTTP error and
    :class:`ConnectFailed` for everything else that stops the connection.
    """
    tls, host, port, host_header, target = _split_url(url)
    ws = WSConnection(ConnectionType.CLIENT)
    try:
        request = Request(
            host=host_header,
            target=target,
            extra_headers=[(k.encode(), v.encode()) for k, v in headers],
        )
        handshake = ws.send(request)
    except Exception:
        # h11's message quotes the offending value, which may be a credential: name only which.
        names = ", ".join(k for k, _ in headers)
        raise ConnectFailed(
            f"cannot build the upgrade request for {url}: a header ({names}) or the URL has "
            f"characters HTTP does not allow"
        ) from None
    try:
        stream = await open_stream(
            host, port, (ssl_context or ssl.create_default_context()) if tls else None
        )
    except (*STREAM_ERRORS, ssl.SSLError) as exc:  # EndOfStream: hung up during TLS handshake
        raise ConnectFailed(f"cannot connect to {host}:{port}: {exc!r}") from exc
    try:
        await stream.send(handshake)
        leftover = await _await_accept(stream, ws)
    except BaseException as exc:
        await anyio.aclose_forcefully(stream)
        if isinstance(exc, (ConnectFailed, anyio.get_cancelled_exc_class())) or not isinstance(
            exc, Exception
        ):
            raise
        if isinstance(exc, (*STREAM_ERRORS, WsRemoteProtocolError)):
            raise ConnectFailed(f"WebSocket handshake with {host}:{port} failed: {exc!r}") from exc
        raise
    return WebSocketConnection(stream, ws, name=name, leftover=leftover)


_BLANK_LINE = re.compile(rb"\r?\n\r?\n")


def _head_end(data: bytes | bytearray) -> int:
    """Where an HTTP head (request or response line and headers) ends in ``data``, or -1: at
    the first empty line, with or without carriage returns (as h11 reads it)."""
    match = _BLANK_LINE.search(data)
    return -1 if match is None else match.end()


async def _read_head(stream: anyio.abc.ByteStream, data: bytes, what: str) -> tuple[bytes, bytes]:
    """Read until ``data`` holds a whole HTTP head: ``(head, what came after it)``."""
    buf = bytearray(data)
    while (end := _head_end(buf)) < 0:
        if len(buf) > MAX_HANDSHAKE_BYTES:
            raise ConnectFailed(f"{what} is too large")
        buf += await stream.receive(RECEIVE_BYTES)
    if end > MAX_HANDSHAKE_BYTES:
        raise ConnectFailed(f"{what} is too large")
    return bytes(buf[:end]), bytes(buf[end:])


async def _await_accept(stream: anyio.abc.ByteStream, ws: WSConnection) -> bytes:
    """Read the handshake's response; returns the bytes after it (frames wsproto has not seen)."""
    # wsproto is given the response's head only, so that what follows (the server may speak
    # at once) is parsed by the connection from its first frame on.
    head, rest = await _read_head(stream, b"", "handshake response")
    ws.receive_data(head)
    received = len(head)
    status: int | None = None
    body = bytearray()
    while True:
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return rest
            if isinstance(event, RejectConnection):
                status = event.status_code
                if not event.has_body:
                    raise HandshakeRejected(status, "")
            elif isinstance(event, RejectData):
                body += event.data
                if event.body_finished:
                    raise HandshakeRejected(status or 400, body.decode("utf-8", "replace")[:200])
        data, rest = rest or await stream.receive(RECEIVE_BYTES), b""
        received += len(data)
        if received > MAX_HANDSHAKE_BYTES:
            raise ConnectFailed("handshake response is too large")
        ws.receive_data(data)


# --- server role ---------------------------------------------------------------------------------


class ServerHandshake:
    """An upgrade request a server has read, waiting for :meth:`accept` or :meth:`reject`."""

    def __init__(
        self, stream: anyio.abc.ByteStream, ws: WSConnection, request: Request, leftover: bytes
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._leftover = leftover
        self.request = request
        self.headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.extra_headers
        }

    @classmethod
    async def start(cls, stream: anyio.abc.ByteStream, initial: bytes) -> ServerHandshake:
        """Parse the upgrade request from ``initial`` (all bytes read so far) and the stream."""
        ws = WSConnection(ConnectionType.SERVER)
        try:
            # wsproto is given the request's head only; what follows is the connection's.
            head, rest = await _read_head(stream, initial, "upgrade request")
            ws.receive_data(head)
            for event in ws.events():
                if isinstance(event, Request):
                    return cls(stream, ws, event, rest)
            raise ConnectFailed("the request is not a WebSocket upgrade")
        except (*STREAM_ERRORS, WsRemoteProtocolError) as exc:
            raise ConnectFailed(f"bad or incomplete upgrade request: {exc!r}") from exc

    async def accept(self, name: str) -> WebSocketConnection:
        """Complete the upgrade and return the open connection."""
        await self._stream.send(self._ws.send(AcceptConnection()))
        return WebSocketConnection(self._stream, self._ws, name=name, leftover=self._leftover)

    async def reject(self, status_code: int, body: str) -> None:
        """Refuse the upgrade with an HTTP status and a short plain-text body, then close."""
        data = body.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        out = self._ws.send(
            RejectConnection(status_code=status_code, headers=headers, has_body=True)
        )
        out += self._ws.send(RejectData(data=data, body_finished=True))
        try:
            await self._stream.send(out)
        except STREAM_ERRORS:
            pass
        await anyio.aclose_forcefully(self._stream)
