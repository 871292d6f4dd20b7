"""The connection layer: WebSockets over anyio streams and wsproto, TLS, heartbeat, backoff.

The only ring with I/O, shared by the client facades, the sandbox and the model stand-ins.
Imports point inward only: ``_net`` may import the core, never a facade or the sandbox
(``tests/core/test_purity.py`` checks it). The modules, from the socket up:

- :mod:`._streams`, :mod:`._tls`: the byte stream under a WebSocket (a lean one per backend) and
  the client's TLS context;
- :mod:`._frames`, :mod:`._reader`, :mod:`._writer`: the frames on the wire, parsed (the fast
  parser and wsproto, and the hand-over between them) and written (serialised, coalesced,
  never cut short);
- :mod:`._handshake`, :mod:`._websocket`: opening a WebSocket, either role, and the open
  connection composed of a reader and a writer;
- :mod:`._link`: a sans-IO protocol object run over a connection (one reader, one heartbeat,
  one bad-frame policy);
- :mod:`._pulse`, :mod:`._backoff`, :mod:`._serving`: a per-frame wake-up, the reconnect
  policy and its delays, the lifecycle every server here shares.
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
