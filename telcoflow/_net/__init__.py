"""The connection layer: WebSockets over anyio streams and wsproto, TLS, heartbeat, backoff.

The only ring with I/O. Shared by the client facades and the sandbox server.
"""

from ._backoff import Backoff
from ._errors import ConnectFailed, ConnectionClosed, HandshakeRejected
from ._handshake import ServerHandshake, connect_websocket
from ._link import LOUD_BAD_FRAMES, Link, open_link
from ._pulse import Pulse
from ._reader import MAX_MESSAGE_BYTES
from ._streams import open_listener
from ._tls import client_ssl_context
from ._websocket import CLOSE_TIMEOUT, WebSocketConnection

__all__ = [
    "CLOSE_TIMEOUT",
    "LOUD_BAD_FRAMES",
    "MAX_MESSAGE_BYTES",
    "Backoff",
    "ConnectFailed",
    "ConnectionClosed",
    "HandshakeRejected",
    "Link",
    "Pulse",
    "ServerHandshake",
    "WebSocketConnection",
    "client_ssl_context",
    "connect_websocket",
    "open_link",
    "open_listener",
]
