"""The sandbox's front door: one TCP listener (optionally TLS, asking for client certificates)
for everything, and the routing of each connection to what serves it.

The first request on a connection is either a WebSocket upgrade (the control plane at
``/v1/agent/session-manager``, a call's media at ``/v1/agent/media/{callId}``) or the start of
plain HTTP/1.1 keep-alive traffic: the sandbox's own API (``/sandbox/...``) and the hosted
service's REST plane (``/public/...``, which needs the control plane's credentials).

Authentication is here and nowhere else: an API key with its connector uuid
(``x-api-key``, ``x-connector-uuid``), or a client certificate issued by the sandbox's CA whose
common name is a connector uuid.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import secrets
import ssl
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
import h11
from anyio.streams.tls import TLSAttribute, TLSListener

from .._net import (
    ConnectFailed,
    ConnectionClosed,
    ServerHandshake,
    WebSocketConnection,
    open_listener,
)
from ._faults import FaultInjector
from ._http import Response, Streamed, error
from ._rest import rest_error
from ._switchboard import Connector, Switchboard

__all__ = ["FrontDoor", "Limits", "TlsFiles", "Upgrade"]

logger = logging.getLogger("telcoflow.sandbox")

CONTROL_PATH = "/v1/agent/session-manager"
MEDIA_PREFIX = "/v1/agent/media/"

#: Request bodies carry at most a WAV for a caller's voice; 32 MiB is minutes of 24 kHz audio.
MAX_BODY_BYTES = 32 * 1024 * 1024


@attrs.frozen(kw_only=True)
class Limits:
    """What one client may take of the sandbox (defaults suit a shared development box).

    ``head_timeout``: a request's head must be complete this soon after its connection opens,
    and ``body_timeout`` its body this soon after its head: a client sending a byte a minute
    (slowloris) holds a connection this long at most. ``idle_timeout``: a keep-alive connection
    with no new request for this long is closed. ``max_body_bytes``: larger bodies get 413.
    ``max_connections``: connections served at once (None: the file descriptor limit less a
    reserve); half of them at most are connections that have not identified themselves yet.
    """

    head_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 30.0
    max_body_bytes: int = MAX_BODY_BYTES
    max_connections: int | None = None


#: A refusal is sent within this, or not at all (the client may not be reading).
REFUSAL_SEND_TIMEOUT_S = 5.0

#: File descriptors kept free of connections (listener, log files, worker threads, ...).
FD_RESERVE = 64

#: Bytes of a recording sent per write, so that a reader that does not read holds at most one
#: chunk of the sandbox's memory, not a whole WAV.
STREAM_CHUNK_BYTES = 64 * 1024

#: Upgrade requests remembered for observation (the most recent ones).
MAX_UPGRADES_KEPT = 1000


@attrs.frozen
class Upgrade:
    """One WebSocket upgrade the sandbox decided: where, for whom, how it was answered, and
    what the client said it is (never its credentials)."""

    path: str
    status: int
    connector_uuid: str | None
    sdk_version: str | None
    user_agent: str | None


_STREAM_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


class _QuietTLSListener(TLSListener):
    """A refused TLS client (untrusted certificate, plain TCP) is routine for a test server:
    log it in one line, not with a traceback at ERROR as anyio's default does."""

    @staticmethod
    async def handle_handshake_error(exc: BaseException, stream: anyio.abc.AnyByteStream) -> None:
        await anyio.aclose_forcefully(stream)
        if isinstance(exc, anyio.get_cancelled_exc_class()) or not isinstance(exc, Exception):
            raise exc
        logger.info("sandbox: TLS handshake failed: %s", exc)


class TlsFiles:
    """A CA made for this sandbox, its server certificate, and a client certificate per
    connector (for production-mode, mutual-TLS clients), in a temporary directory. A connector
    with a ``client_cert`` of its own is issued none: that certificate is trusted as it is
    (a partial chain: the leaf itself is the anchor), so an application's real certificate
    works unchanged."""

    def __init__(self, connectors: list[Connector]) -> None:
        import trustme

        ca = trustme.CA(organization_name="telcoflow sandbox")
        self._server = ca.issue_cert("127.0.0.1", "localhost", "::1")
        self._ca = ca
        self._tmp = tempfile.TemporaryDirectory(prefix="telcoflow-sandbox-")
        self.ca_path = os.path.join(self._tmp.name, "ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        #: connector uuid -> (certificate path, key path), for the certificates issued here.
        self.client_certs: dict[str, tuple[str, str]] = {}
        #: SHA-256 of the DER of an application's own certificate -> its connector uuid.
        self.pinned: dict[bytes, str] = {}
        self._pinned_pems: list[str] = []
        for i, connector in enumerate(connectors):
            uuid = connector.connector_uuid
            if connector.client_cert is not None:
                pem = _first_certificate(connector.client_cert)
                self.pinned[hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).digest()] = uuid
                self._pinned_pems.append(pem)
                continue
            cert = ca.issue_cert(f"connector-{i}.connectors.sandbox.invalid", common_name=uuid)
            suffix = "" if i == 0 else f"-{i}"
            cert_path = os.path.join(self._tmp.name, f"client-cert{suffix}.pem")
            key_path = os.path.join(self._tmp.name, f"client-key{suffix}.pem")
            cert.cert_chain_pems[0].write_to_path(cert_path)
            cert.private_key_pem.write_to_path(key_path)
            self.client_certs[uuid] = (cert_path, key_path)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server.configure_cert(context)
        self._ca.configure_trust(context)
        if self._pinned_pems:
            context.load_verify_locations(cadata="\n".join(self._pinned_pems))
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        context.verify_mode = ssl.CERT_OPTIONAL  # API-key clients need no certificate
        return context

    def cleanup(self) -> None:
        self._tmp.cleanup()


def _first_certificate(path: str) -> str:
    """The first PEM certificate in ``path``; ``ValueError`` naming the file if there is none."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        raise ValueError(f"client certificate {path!r} cannot be read: {exc.strerror}") from None
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise ValueError(f"client certificate {path!r} holds no PEM certificate")
    return text[start : stop + len(end)] + "\n"


def default_connection_limit() -> int:
    """Connections served at once: the process's file descriptor limit less a reserve."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not Unix
        return 1024
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 65536
    return max(16, soft - FD_RESERVE)


class _Slots:
    """Who holds the sandbox's connection slots. Half are for connections that have not
    identified themselves yet (before their first request's head, and plain HTTP): when those
    are all taken, the oldest is let go for a newcomer, so idle or slow clients can never lock
    the others out. WebSocket connections past their upgrade take the rest; past the whole
    limit a newcomer is closed at once (an agent retries; an idle one would never leave)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.anonymous_limit = max(1, limit // 2)
        self._anonymous: dict[int, anyio.CancelScope] = {}
        self.upgraded = 0
        self.evicted = 0
        self.refused = 0

    @property
    def total(self) -> int:
        return len(self._anonymous) + self.upgraded

    def enter(self, key: int, scope: anyio.CancelScope) -> bool:
        """A new connection; False if it must be closed at once."""
        if self.total >= self.limit and not self._anonymous:
            self.refused += 1
            return False
        while self._anonymous and (
            len(self._anonymous) >= self.anonymous_limit or self.total >= self.limit
        ):
            oldest = next(iter(self._anonymous))
            self._anonymous.pop(oldest).cancel()
            self.evicted += 1
        self._anonymous[key] = scope
        return True

    def upgrade(self, key: int) -> None:
        """The connection is an authenticated WebSocket now: it is no longer evictable."""
        if self._anonymous.pop(key, None) is not None:
            self.upgraded += 1

    def leave(self, key: int, upgraded: bool) -> None:
        if self._anonymous.pop(key, None) is None and upgraded:
            self.upgraded -= 1


SandboxHandler = Callable[[str, str, bytes], Awaitable[Response]]
RestHandler = Callable[[str, str, str], Awaitable[Response]]


class FrontDoor:
    """Serves every connection of one listener."""

    def __init__(
        self,
        *,
        connectors: list[Connector],
        switchboard: Switchboard,
        sandbox_api: SandboxHandler,
        rest_api: RestHandler,
        faults: FaultInjector,
        changed: Callable[[], None],
        authority: Callable[[], str],
        tls: bool,
        admin_token: str | None = None,
        limits: Limits | None = None,
        media_base_url: str | None = None,
    ) -> None:
        self._connectors = connectors
        self._switchboard = switchboard
        self._sandbox_api = sandbox_api
        self._rest_api = rest_api
        self._faults = faults
        self._changed = changed
        self._authority = authority
        self._tls = tls
        self._admin_token = admin_token
        self._media_base_url = media_base_url
        self.limits = limits or Limits()
        self.slots = _Slots(self.limits.max_connections or default_connection_limit())
        #: The upgrades decided so far (the last :data:`MAX_UPGRADES_KEPT`).
        self.upgrades: deque[Upgrade] = deque(maxlen=MAX_UPGRADES_KEPT)
        #: An application's own client certificates (SHA-256 of the DER) -> connector uuid.
        self._pinned: dict[bytes, str] = {}

    async def listen(
        self, host: str, port: int, tls_files: TlsFiles | None
    ) -> tuple[anyio.abc.Listener[Any], int]:
        """The listener (and the port it got, for port 0)."""
        listener: anyio.abc.Listener[Any] = await open_listener(host, port)
        sockname = listener.extra(anyio.abc.SocketAttribute.local_address)
        bound = int(sockname[1])
        if tls_files is not None:
            self._pinned = dict(tls_files.pinned)
            listener = _QuietTLSListener(
                listener, tls_files.server_context(), standard_compatible=False
            )
        return listener, bound

    async def serve(self, listener: anyio.abc.Listener[Any]) -> None:
        async with anyio.create_task_group() as tg:
            await listener.serve(self._handle_connection, tg)

    # --- one connection --------------------------------------------------------------------------

    async def _handle_connection(self, stream: anyio.abc.ByteStream) -> None:
        key = id(stream)
        scope = anyio.CancelScope()
        upgraded: list[bool] = []
        if not self.slots.enter(key, scope):
            logger.warning("sandbox: %d connections open; refusing one", self.slots.total)
            await anyio.aclose_forcefully(stream)
            return
        try:
            with scope:
                await self._dispatch(stream, key, upgraded)
        except _STREAM_ERRORS:
            pass
        except (ConnectFailed, h11.RemoteProtocolError) as exc:
            logger.debug("sandbox: bad request: %s", exc)
        except Exception:
            logger.exception("sandbox: connection handler failed")
        finally:
            self.slots.leave(key, bool(upgraded))
            # Not forcefully: a response just sent may still be on its way out (the close waits
            # for it, bounded), and a client reading slowly must get all of it.
            with anyio.CancelScope(shield=True):
                await stream.aclose()

    async def _dispatch(self, stream: anyio.abc.ByteStream, key: int, upgraded: list[bool]) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        limits = self.limits
        raw = bytearray()
        first = True
        while True:
            # The head of the next request, within its timeout (a first one sooner).
            wait = limits.head_timeout if first else limits.idle_timeout
            with anyio.move_on_after(wait) as timer:
                try:
                    event = await _next_head(conn, stream, raw if first else None)
                except h11.RemoteProtocolError as exc:
                    await _refuse(conn, stream, exc.error_status_hint, f"bad request: {exc}")
                    return
            if timer.cancelled_caught or event is None:
                return
            headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
            if first and headers.get("upgrade", "").lower() == "websocket":
                problem = _upgrade_problem(event, headers)
                if problem is not None:
                    await _refuse(conn, stream, 400, problem)
                    return
                handshake = await ServerHandshake.start(stream, bytes(raw))
                await self._websocket(stream, handshake, lambda: _upgraded(self, key, upgraded))
                return
            first = False
            size = headers.get("content-length", "0")
            too_big = f"body larger than {limits.max_body_bytes} bytes"
            if size.isdigit() and int(size) > limits.max_body_bytes:
                await _refuse(conn, stream, 413, too_big)
                return
            with anyio.move_on_after(limits.body_timeout) as timer:
                try:
                    body = await _read_body(conn, stream, limits.max_body_bytes)
                except h11.RemoteProtocolError as exc:
                    await _refuse(conn, stream, exc.error_status_hint, f"bad request: {exc}")
                    return
            if timer.cancelled_caught:
                await _refuse(conn, stream, 408, "the body did not arrive in time")
                return
            if body is None:
                await _refuse(conn, stream, 413, too_big)
                return
            method, target = event.method.decode(), event.target.decode("latin-1")
            response = await self._respond(stream, method, target, headers, body)
            await _send_response(conn, stream, response)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            # A client pipelining requests gets one answered per turn of the event loop.
            await anyio.lowlevel.checkpoint()

    async def _respond(
        self,
        stream: anyio.abc.ByteStream,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
    ) -> Response:
        if target.startswith("/public/"):
            connector = self.authenticate(stream, headers)
            if connector is None:
                return rest_error(401, "UNAUTHORIZED", "invalid or missing credentials")
            return await self._rest_api(method, target, connector.connector_uuid)
        if self._admin_token is not None and not _bearer_is(headers, self._admin_token):
            if target.split("?", 1)[0] == "/sandbox/health":
                return 200, "application/json", b'{"status": "ok"}'  # liveness, no secrets
            return error(
                401, "this sandbox's HTTP API needs its admin token (Authorization: Bearer ...)"
            )
        return await self._sandbox_api(method, target, body)

    def _record(
        self, handshake: ServerHandshake, path: str, status: int, connector: Connector | None
    ) -> None:
        headers = handshake.headers
        self.upgrades.append(
            Upgrade(
                path,
                status,
                connector.connector_uuid if connector else None,
                headers.get("x-sdk-version"),
                headers.get("user-agent"),
            )
        )

    async def _websocket(
        self,
        stream: anyio.abc.ByteStream,
        handshake: ServerHandshake,
        upgraded: Callable[[], None],
    ) -> None:
        target = handshake.request.target.split("?", 1)[0]
        now = anyio.current_time()
        status = self._faults.refusing(now)
        if status is not None:
            self._record(handshake, target, status, None)
            await handshake.reject(status, "connections refused (injected fault)")
            return
        if target == CONTROL_PATH:
            connector = self.authenticate(stream, handshake.headers)
            if connector is None:
                self._record(handshake, target, 401, None)
                await handshake.reject(401, "invalid or missing credentials")
                return
            self._record(handshake, target, 101, connector)
            upgraded()
            conn = await handshake.accept("sandbox control")
            if self._faults.hanging("setup", now):
                await self._hold("setup", conn if self._faults.hang_reads else None)
                return
            scheme = "wss" if self._tls else "ws"
            host = handshake.headers.get("host") or self._authority()
            media_base = self._media_base_url or f"{scheme}://{host}"
            await self._switchboard.serve_control(conn, connector, media_base)
        elif target.startswith(MEDIA_PREFIX) and self._faults.hanging("media", now):
            await self._hold("media", None, stream)
        elif target.startswith(MEDIA_PREFIX):

            def decided(status: int) -> None:
                self._record(handshake, target, status, None)
                if status == 101:
                    upgraded()

            await self._switchboard.serve_media(
                handshake, target.removeprefix(MEDIA_PREFIX), decided
            )
        else:
            self._record(handshake, target, 404, None)
            await handshake.reject(404, f"no WebSocket endpoint at {target}")

    async def _hold(
        self,
        what: str,
        conn: WebSocketConnection | None,
        stream: anyio.abc.ByteStream | None = None,
    ) -> None:
        """A hang fault: never answer (setup.done, or the media upgrade). Frames are read until
        the client leaves when there is something to read them from; a dead server (``conn``
        and ``stream`` None) reads nothing and holds the connection until the sandbox stops."""
        faults = self._faults
        faults.held[what] += 1
        self._changed()
        try:
            if conn is not None:
                while True:
                    await conn.receive()
            elif stream is not None:
                while True:
                    await stream.receive()
            else:
                await anyio.sleep_forever()
        except (ConnectionClosed, *_STREAM_ERRORS):
            faults.released[what] += 1
            self._changed()

    def authenticate(
        self, stream: anyio.abc.ByteStream, headers: dict[str, str]
    ) -> Connector | None:
        """The connector a request belongs to, or None (refused)."""
        key, uuid = headers.get("x-api-key"), headers.get("x-connector-uuid")
        if key is not None or uuid is not None:
            for c in self._connectors:
                if secrets.compare_digest(c.api_key, key or "") and c.connector_uuid == uuid:
                    return c
            return None
        der: bytes | None = stream.extra(TLSAttribute.peer_certificate_binary, None)
        if der and self._pinned:
            pinned = self._pinned.get(hashlib.sha256(der).digest())
            if pinned is not None:
                return next(c for c in self._connectors if c.connector_uuid == pinned)
        cert: dict[str, Any] | None = stream.extra(TLSAttribute.peer_certificate, None)
        if cert:
            rdns: tuple[tuple[tuple[str, str], ...], ...] = cert.get("subject", ())
            for rdn in rdns:
                for name, value in rdn:
                    if name == "commonName":
                        for c in self._connectors:
                            if c.connector_uuid == value:
                                return c
        return None


def _upgraded(door: FrontDoor, key: int, upgraded: list[bool]) -> None:
    door.slots.upgrade(key)
    upgraded.append(True)


def _bearer_is(headers: dict[str, str], token: str) -> bool:
    given = headers.get("authorization", "").removeprefix("Bearer ").strip()
    return secrets.compare_digest(given.encode(), token.encode())


def _upgrade_problem(event: h11.Request, headers: dict[str, str]) -> str | None:
    """Why an upgrade request breaks RFC 6455 section 4.2.1, or None."""
    if event.http_version != b"1.1":
        return "a WebSocket upgrade needs HTTP/1.1"
    key = headers.get("sec-websocket-key", "")
    try:
        decoded = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != 16:
        return "Sec-WebSocket-Key must be 16 bytes in base64"
    return None


async def _next_head(
    conn: h11.Connection, stream: anyio.abc.ByteStream, raw: bytearray | None
) -> h11.Request | None:
    """The next request's head (None: the client is gone or did not send one); ``raw``
    collects the bytes read, for a WebSocket handshake to start from."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive(65536)
            except anyio.EndOfStream:
                return None
            if raw is not None:
                raw += data
            conn.receive_data(data)
            continue
        return event if isinstance(event, h11.Request) else None


async def _refuse(
    conn: h11.Connection, stream: anyio.abc.ByteStream, status: int, why: str
) -> None:
    """Answer a request the sandbox will not serve (400, 408, 413, ...), then the connection
    closes: its state is unknown."""
    logger.debug("sandbox: refusing a request: %s %s", status, why)
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    body = json.dumps({"error": why}).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        ("connection", "close"),
    ]
    try:
        out = conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
        out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
        out += conn.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        return
    with anyio.move_on_after(REFUSAL_SEND_TIMEOUT_S):
        try:
            await stream.send(out)
        except _STREAM_ERRORS:
            pass


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


async def _read_body(
    conn: h11.Connection, stream: anyio.abc.ByteStream, limit: int
) -> bytes | None:
    """The request's body, or None when it is larger than ``limit`` or the peer went away."""
    body = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                conn.receive_data(await stream.receive(65536))
            except _STREAM_ERRORS:
                return None
            continue
        if isinstance(event, h11.Data):
            body += event.data
            if len(body) > limit:
                return None
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:
            return None


async def _send_response(
    conn: h11.Connection, stream: anyio.abc.ByteStream, response: Response
) -> None:
    status, content_type, payload = response
    length = payload.length if isinstance(payload, Streamed) else len(payload)
    headers = [
        ("content-type", content_type),
        ("content-length", str(length)),
        ("server", "telcoflow-sandbox"),
    ]
    head = conn.send(h11.Response(status_code=status, headers=headers, reason=_reason(status)))
    if not isinstance(payload, Streamed):
        parts = [head, conn.send(h11.Data(data=payload)), conn.send(h11.EndOfMessage())]
        await stream.send(b"".join(p for p in parts if p))
        return
    await stream.send(head or b"")
    for chunk in payload.chunks(STREAM_CHUNK_BYTES):
        data = conn.send(h11.Data(data=chunk))
        if data:
            await stream.send(data)
        # A send the transport takes at once does not yield; a hundred downloads started
        # together would then copy their recordings in one turn of the loop, ahead of every
        # call's media tick. One chunk per download per turn.
        await anyio.lowlevel.checkpoint()
    await stream.send(conn.send(h11.EndOfMessage()) or b"")
